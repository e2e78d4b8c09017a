//! One owner per profile (docs/CLIENT_API.md).
//!
//! The first process that needs a profile for long — `sotto daemon`,
//! `sotto listen`, `sotto chat` — owns it: it holds the profile's lock
//! (`<home>/owner.lock`), keeps the relay connection for pushes, and serves
//! `<home>/control.sock` (0600, in the 0700 home). Every other `sotto`
//! command on that home runs through it (`cli.run`), and bots speak
//! JSON-RPC 2.0 to it, one object per line.
//!
//! Inside the owner one task holds the [`App`]: it listens to the relay,
//! and between pushes runs requests from a channel, one at a time, so the
//! App is never shared. Socket clients and in-process callers
//! ([`OwnerHandle`]) send requests into that channel; notifications go out
//! on a broadcast channel of bounded size, which drops a slow subscriber's
//! oldest notifications (it then gets a `lagged` notification) instead of
//! stalling the owner or growing.

mod files;
mod lock;
mod methods;
pub(crate) mod remote;
mod server;
mod task;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde_json::Value;
use sotto_core::App;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub(crate) use lock::{Claim, ProfileLock, acquire_for_owner, claim, lock_for_setup};

use crate::errors::OwnedError;
use crate::output::Output;

/// The control socket's name in the home directory.
pub(crate) const SOCKET_FILE: &str = "control.sock";

/// The longest request line the socket reads (1 MiB); a longer one gets an
/// error and is skipped up to its newline.
pub(crate) const MAX_LINE: usize = 1 << 20;

/// Notifications kept for subscribers that have not read them yet; beyond
/// this a slow subscriber loses the oldest and gets `lagged`.
/// `SOTTO_NOTIFY_QUEUE` sets another size (4 to 65536).
pub(crate) const NOTIFY_QUEUE: usize = 1024;

fn notify_queue() -> usize {
    std::env::var("SOTTO_NOTIFY_QUEUE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(NOTIFY_QUEUE, |n| n.clamp(4, 65_536))
}

/// Requests waiting for the owner's task.
const REQUEST_QUEUE: usize = 64;

/// A cheap, cloneable handle to the process that owns a profile.
#[derive(Clone)]
pub(crate) struct OwnerHandle {
    requests: mpsc::Sender<Request>,
    notify: broadcast::Sender<Notification>,
}

/// A notification a `subscribe`d client receives.
#[derive(Clone, Debug)]
pub(crate) struct Notification {
    pub(crate) method: String,
    pub(crate) params: Value,
}

/// A failed call: `code` is the CLI's exit code for the failure (1-5), or
/// a JSON-RPC code (-32700 .. -32600) for a malformed request.
#[derive(Debug)]
pub(crate) struct RpcError {
    pub(crate) code: i64,
    pub(crate) message: String,
}

impl RpcError {
    /// JSON-RPC: the line is not JSON.
    pub(crate) const PARSE: i64 = -32700;
    /// JSON-RPC: not a request object.
    pub(crate) const INVALID_REQUEST: i64 = -32600;
    /// JSON-RPC: no such method.
    pub(crate) const NO_METHOD: i64 = -32601;
    /// JSON-RPC: missing or invalid params.
    pub(crate) const INVALID_PARAMS: i64 = -32602;

    pub(crate) fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A failed command, with the CLI's exit code and message.
    pub(crate) fn from_error(error: &anyhow::Error) -> Self {
        Self::new(
            i64::from(crate::errors::exit_code(error)),
            crate::errors::describe(error),
        )
    }
}

/// One call for the owner's task.
struct Request {
    method: String,
    params: Value,
    reply: oneshot::Sender<Result<Value, RpcError>>,
}

impl OwnerHandle {
    /// Runs one control-protocol method exactly as a socket client's
    /// request would, same params and result JSON (see docs/CLIENT_API.md).
    pub(crate) async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        if method == "subscribe" {
            // In process, `subscribe()` hands out the receiver.
            return Ok(serde_json::json!({}));
        }
        let (reply, answer) = oneshot::channel();
        let request = Request {
            method: method.to_owned(),
            params,
            reply,
        };
        let gone = || RpcError::new(1, "the profile's owner stopped");
        self.requests.send(request).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// The notifications a `subscribe`d socket client receives, as they
    /// happen.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.notify.subscribe()
    }
}

/// The running owner: its task, its socket server and its lock.
pub(crate) struct Owner {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    server: tokio::task::JoinHandle<()>,
    socket: PathBuf,
    lock: Option<ProfileLock>,
}

/// Takes ownership of the profile at `home`: binds <home>/control.sock,
/// keeps the relay connection (listen) running, serves the socket until
/// shutdown. Takes the profile's lock first (waiting for a one-shot
/// command to finish; refusing if another owner serves it).
#[allow(dead_code, reason = "the entry point of `sotto chat`, on its branch")]
pub(crate) async fn start(home: &Path, app: App) -> anyhow::Result<(OwnerHandle, Owner)> {
    let lock = acquire_for_owner(home, "chat").await?;
    let (handle, owner, _) = start_locked(home, app, lock).await?;
    Ok((handle, owner))
}

/// How a long-running client got at a profile.
#[allow(dead_code, reason = "the entry point of `sotto chat`, on its branch")]
pub(crate) enum Attached {
    /// This process owns it now; shut the owner down when done.
    Owned(OwnerHandle, Owner),
    /// Another process (`sotto daemon`) owns it; the handle's calls and
    /// notifications go through its control socket.
    Remote(OwnerHandle),
}

/// For a long-running client (`sotto chat`): a handle to the profile's
/// owner — the running one if there is one, else this process, which
/// takes the lock, opens the profile and starts owning it. Either way the
/// handle's calls and notifications are the same.
#[allow(dead_code, reason = "the entry point of `sotto chat`, on its branch")]
pub(crate) async fn attach(home: &Path, what: &str) -> anyhow::Result<Attached> {
    attach_with(home, what, None).await
}

/// [`attach`] with a passphrase a window asked for (used when this
/// process becomes the owner).
pub(crate) async fn attach_with(
    home: &Path,
    what: &str,
    passphrase: Option<&str>,
) -> anyhow::Result<Attached> {
    loop {
        if let Ok(remote) = remote::connect(home).await {
            let (requests, inbox) = mpsc::channel(REQUEST_QUEUE);
            let (notify, _) = broadcast::channel(notify_queue());
            tokio::spawn(remote::bridge(remote, inbox, notify.clone()));
            return Ok(Attached::Remote(OwnerHandle { requests, notify }));
        }
        match own(home, what, passphrase).await {
            Ok((handle, owner, _)) => return Ok(Attached::Owned(handle, owner)),
            // Another owner won the race: attach to it.
            Err(error)
                if matches!(
                    error.downcast_ref::<OwnedError>(),
                    Some(OwnedError::AlreadyOwned { .. })
                ) => {}
            Err(error) => return Err(error),
        }
    }
}

/// [`start`] with the lock already held (taken before the App was opened).
/// Also returns a subscription made before the task's first sync, so that
/// nothing it brings in is missed.
pub(crate) async fn start_locked(
    home: &Path,
    app: App,
    lock: ProfileLock,
) -> anyhow::Result<(OwnerHandle, Owner, broadcast::Receiver<Notification>)> {
    lock::check_private(home)?;
    let socket = home.join(SOCKET_FILE);
    // Holding the lock, any socket here is a dead owner's.
    match std::fs::remove_file(&socket) {
        Ok(()) => tracing::info!("replaced the control socket of an owner that stopped uncleanly"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(anyhow::anyhow!(
                "cannot remove the stale control socket {}: {error}",
                socket.display()
            ));
        }
    }
    let listener = tokio::net::UnixListener::bind(&socket).map_err(|e| {
        anyhow::anyhow!("cannot create the control socket {}: {e}", socket.display())
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
        let mode = std::fs::metadata(&socket)?.permissions().mode() & 0o777;
        if mode != 0o600 {
            let _ = std::fs::remove_file(&socket);
            return Err(OwnedError::Permissions {
                path: socket.display().to_string(),
                mode,
                want: 0o600,
            }
            .into());
        }
    }
    let (requests, inbox) = mpsc::channel(REQUEST_QUEUE);
    let (notify, first) = broadcast::channel(notify_queue());
    let (stop, stopped) = watch::channel(false);
    let handle = OwnerHandle { requests, notify };
    let task = tokio::spawn(task::run(
        app,
        inbox,
        handle.notify.clone(),
        stopped.clone(),
    ));
    let server = tokio::spawn(server::serve(listener, handle.clone(), stopped));
    Ok((
        handle,
        Owner {
            stop,
            task: Some(task),
            server,
            socket,
            lock: Some(lock),
        },
        first,
    ))
}

impl Owner {
    /// Waits until the owner's task ends by itself: a failure that is not
    /// the network's (this device was removed, the store broke).
    pub(crate) async fn failed(&mut self) -> anyhow::Result<()> {
        match self.task.as_mut() {
            Some(task) => {
                let result = task.await;
                self.task = None;
                result?
            }
            None => std::future::pending().await,
        }
    }

    /// Stops: the task finishes what it does (unsent messages stay in the
    /// outbox), the store closes, the socket and the lock go.
    pub(crate) async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let result = match self.task.take() {
            Some(task) => task.await.map_err(anyhow::Error::from).and_then(|r| r),
            None => Ok(()),
        };
        let _ = (&mut self.server).await;
        let _ = std::fs::remove_file(&self.socket);
        if let Some(lock) = self.lock.take() {
            lock.remove();
        }
        result
    }
}

/// Takes the profile for a long-running command: the lock, then the App,
/// then the socket.
async fn own(
    home: &Path,
    what: &str,
    passphrase: Option<&str>,
) -> anyhow::Result<(OwnerHandle, Owner, broadcast::Receiver<Notification>)> {
    let lock = acquire_for_owner(home, what).await?;
    let app = crate::commands::open_with(home, passphrase).await?;
    start_locked(home, app, lock).await
}

/// SIGTERM, or Ctrl-C.
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `sotto daemon`.
pub(crate) async fn daemon(home: &Path, out: &Output) -> anyhow::Result<()> {
    let (_handle, mut owner, _) = own(home, "daemon", None).await?;
    out.err(format_args!(
        "sotto: serving {} (stop with Ctrl-C or SIGTERM)",
        home.join(SOCKET_FILE).display()
    ));
    tokio::select! {
        _ = terminated() => owner.shutdown().await,
        failed = owner.failed() => {
            let _ = owner.shutdown().await;
            failed
        }
    }
}

/// `sotto listen`: prints messages as they arrive. Owns the profile if
/// nobody does; else follows the owner's notifications, and takes over if
/// that owner goes away.
pub(crate) async fn listen(home: &Path, out: &Output) -> anyhow::Result<()> {
    loop {
        if let Ok(remote) = remote::connect(home).await {
            if remote::listen(remote, out).await? {
                return Ok(());
            }
            // The owner stopped: own the profile from here (once it has
            // let go of it; a stopping owner may still answer briefly).
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        let (_handle, mut owner, mut notes) = match own(home, "listen", None).await {
            Ok(owned) => owned,
            // Another owner won the race: follow it.
            Err(error)
                if matches!(
                    error.downcast_ref::<OwnedError>(),
                    Some(OwnedError::AlreadyOwned { .. })
                ) =>
            {
                continue;
            }
            Err(error) => return Err(error),
        };
        let printing = async {
            loop {
                match notes.recv().await {
                    Ok(note) => print_notification(out, &note),
                    Err(broadcast::error::RecvError::Lagged(missed)) => print_notification(
                        out,
                        &Notification {
                            method: "lagged".into(),
                            params: serde_json::json!({"missed": missed}),
                        },
                    ),
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        return tokio::select! {
            _ = terminated() => owner.shutdown().await,
            failed = owner.failed() => {
                let _ = owner.shutdown().await;
                failed
            }
            () = printing => Ok(()),
        };
    }
}

fn print_notification(out: &Output, note: &Notification) {
    match note.method.as_str() {
        "message" | "message.updated" => {
            if let Some(message) = crate::output::message_from_json(&note.params) {
                out.message(&message);
            }
        }
        "connection" => {
            if let Some(error) = note.params.get("error").and_then(Value::as_str) {
                out.err(format_args!("sotto: {error}; reconnecting"));
            }
        }
        "lagged" => out.err(format_args!(
            "sotto: {} notifications were dropped because this terminal read too slowly; `sotto history` has every message",
            note.params.get("missed").and_then(Value::as_u64).unwrap_or(0)
        )),
        _ => {}
    }
}
