//! The other side of the control socket: a `sotto` command that finds an
//! owner runs through it.

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::{RpcError, SOCKET_FILE};
use crate::Command;
use crate::commands::{MAX_STDIN, reads_stdin};
use crate::errors::{Exited, OwnedError};
use crate::output::{Output, message_from_json};

/// A connection to the profile's owner.
pub(crate) struct Remote {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    next_id: u64,
    holder: String,
}

/// Connects to the owner's socket in `home`.
pub(crate) async fn connect(home: &Path) -> std::io::Result<Remote> {
    let stream = UnixStream::connect(home.join(SOCKET_FILE)).await?;
    let (read, write) = stream.into_split();
    Ok(Remote {
        lines: BufReader::new(read).lines(),
        write,
        next_id: 1,
        holder: super::lock::holder(home),
    })
}

impl Remote {
    fn broken(&self, reason: impl std::fmt::Display) -> OwnedError {
        OwnedError::Socket {
            holder: self.holder.clone(),
            reason: reason.to_string(),
        }
    }

    async fn send(&mut self, value: &Value) -> Result<(), OwnedError> {
        let mut line = value.to_string();
        line.push('\n');
        self.write
            .write_all(line.as_bytes())
            .await
            .map_err(|e| self.broken(e))
    }

    /// The next JSON object from the owner; `None` when it went away.
    async fn next(&mut self) -> Result<Option<Value>, OwnedError> {
        loop {
            let line = match self.lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(None),
                // An owner that exits with our last request unread resets
                // the connection instead of closing it: it went away all
                // the same.
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return Ok(None);
                }
                Err(error) => return Err(self.broken(error)),
            };
            if line.trim().is_empty() {
                continue;
            }
            return serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| self.broken(format!("not JSON: {e}")));
        }
    }

    /// Calls `method` and waits for its answer (notifications meanwhile
    /// are skipped).
    pub(crate) async fn call(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<Result<Value, RpcError>, OwnedError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        loop {
            let Some(reply) = self.next().await? else {
                return Err(self.broken("it closed the connection"));
            };
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(result) = reply.get("result") {
                return Ok(Ok(result.clone()));
            }
            let error = reply.get("error").cloned().unwrap_or(Value::Null);
            return Ok(Err(RpcError {
                code: error.get("code").and_then(Value::as_i64).unwrap_or(1),
                message: error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned(),
            }));
        }
    }
}

/// Reads the message for a command that takes it from stdin.
fn read_stdin() -> anyhow::Result<String> {
    use std::io::{IsTerminal, Read};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Type the message; end it with Ctrl-D on a line of its own.");
    }
    let mut text = String::new();
    stdin
        .lock()
        .take(MAX_STDIN + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            crate::errors::UsageError(format!("cannot read the message from stdin: {e}"))
        })?;
    Ok(text)
}

/// Runs this process's command line in the owner (`cli.run`) and prints
/// what it printed; its exit code becomes this process's.
pub(crate) async fn forward(
    mut remote: Remote,
    command: &Command,
    out: &Output,
) -> anyhow::Result<()> {
    if let Command::Verify {
        handle,
        sas: true,
        timeout,
    } = command
    {
        return verify_sas(remote, handle, *timeout, out).await;
    }
    let stdin = if reads_stdin(command) {
        Some(read_stdin()?)
    } else {
        None
    };
    let argv: Vec<String> = crate::files::absolute_argv(
        std::env::args_os()
            .skip(1)
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect(),
    );
    let reply = remote
        .call("cli.run", json!({"argv": argv, "stdin": stdin}))
        .await?;
    let result = match reply {
        Ok(result) => result,
        Err(error) => {
            return Err(remote
                .broken(format!("{} (code {})", error.message, error.code))
                .into());
        }
    };
    let text = |key: &str| {
        result
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (stdout, stderr) = (text("stdout"), text("stderr"));
    if !stderr.is_empty() {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(stderr.as_bytes());
        let _ = err.flush();
    }
    if !stdout.is_empty() {
        // `out.line` ends quietly on a closed stdout, as a command run
        // here would.
        out.line(stdout.strip_suffix('\n').unwrap_or(&stdout));
    }
    let code = result
        .get("exit_code")
        .and_then(Value::as_u64)
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(1);
    if code != 0 {
        return Err(Exited(code).into());
    }
    Ok(())
}

/// One call whose error ends the command as the owner's failure would:
/// its message on stderr, its code (the CLI's exit codes) as exit code.
async fn step(
    remote: &mut Remote,
    out: &Output,
    method: &str,
    params: Value,
) -> anyhow::Result<Value> {
    match remote.call(method, params).await? {
        Ok(result) => Ok(result),
        Err(error) => {
            out.err(format_args!("sotto: {}", error.message));
            let code = u8::try_from(error.code).unwrap_or(1);
            Err(Exited(code).into())
        }
    }
}

/// `sotto verify HANDLE --sas` while another process owns the profile:
/// the same conversation with the person as without an owner, the steps
/// run by the owner (`verify.sas.*`), which receives the other side's key
/// and confirmation as pushes.
async fn verify_sas(
    mut remote: Remote,
    handle: &str,
    timeout: u64,
    out: &Output,
) -> anyhow::Result<()> {
    use crate::commands::{sas_ask, sas_outcome, sas_waiting};
    const POLL: std::time::Duration = std::time::Duration::from_millis(300);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
    let me = step(&mut remote, out, "whoami", json!({})).await?;
    sas_waiting(
        out,
        handle,
        me.get("handle").and_then(Value::as_str).unwrap_or("me"),
    );
    let with = json!({ "with": handle });
    step(&mut remote, out, "verify.sas.start", with.clone()).await?;
    let code = loop {
        let result = step(&mut remote, out, "verify.sas.code", with.clone()).await?;
        if let Some(code) = result.get("code").filter(|c| !c.is_null()) {
            break code.clone();
        }
        if tokio::time::Instant::now() > deadline {
            return Err(sotto_core::AppError::VerificationTimedOut(handle.to_owned()).into());
        }
        tokio::time::sleep(POLL).await;
    };
    let emoji: Vec<&str> = code
        .get("emoji")
        .and_then(Value::as_array)
        .map(|e| e.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut decimals = [0u16; 3];
    for (slot, value) in decimals.iter_mut().zip(
        code.get("decimals")
            .and_then(Value::as_array)
            .into_iter()
            .flatten(),
    ) {
        *slot = value
            .as_u64()
            .and_then(|d| u16::try_from(d).ok())
            .unwrap_or_default();
    }
    let text = code.get("text").and_then(Value::as_str).unwrap_or_default();
    let matches = sas_ask(out, handle, &emoji, decimals, text);
    step(
        &mut remote,
        out,
        "verify.sas.confirm",
        json!({ "with": handle, "matches": matches }),
    )
    .await?;
    if !matches {
        sas_outcome(out, handle, sotto_core::SasOutcome::Rejected);
        return Ok(());
    }
    loop {
        let result = step(&mut remote, out, "verify.sas.result", with.clone()).await?;
        if result.get("verified").and_then(Value::as_bool) == Some(true) {
            sas_outcome(out, handle, sotto_core::SasOutcome::Verified);
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            sas_outcome(out, handle, sotto_core::SasOutcome::Mismatch);
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `sotto listen` while another process owns the profile: prints the
/// owner's `message` notifications as they arrive. Returns when the owner
/// goes away (`Ok(false)`) or on Ctrl-C (`Ok(true)`).
pub(crate) async fn listen(mut remote: Remote, out: &Output) -> anyhow::Result<bool> {
    match remote.call("subscribe", json!({})).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => return Err(remote.broken(error.message).into()),
        // The owner went away before it answered (it was stopping): the
        // caller follows or becomes the next owner.
        Err(_) => return Ok(false),
    }
    loop {
        let next = tokio::select! {
            next = remote.next() => next?,
            _ = tokio::signal::ctrl_c() => return Ok(true),
        };
        let Some(notification) = next else {
            return Ok(false);
        };
        let params = notification.get("params").cloned().unwrap_or(Value::Null);
        match notification.get("method").and_then(Value::as_str) {
            Some("message" | "message.updated") => {
                if let Some(message) = message_from_json(&params) {
                    out.message(&message);
                }
            }
            Some("connection") => {
                if params.get("online").and_then(Value::as_bool) == Some(false)
                    && let Some(error) = params.get("error").and_then(Value::as_str)
                {
                    out.err(format_args!("sotto: {error}; reconnecting"));
                }
            }
            Some("lagged") => out.err(format_args!(
                "sotto: {} notifications were dropped because this terminal read too slowly; `sotto history` has every message",
                params.get("missed").and_then(Value::as_u64).unwrap_or(0)
            )),
            _ => {}
        }
    }
}

/// An [`OwnerHandle`](super::OwnerHandle) whose calls go over the socket
/// of another process that owns the profile: requests from the handle's
/// channel become JSON-RPC requests, answers are matched by `id`, and the
/// owner's notifications are re-broadcast. Ends when the owner goes away
/// (calls then fail with "the profile's owner stopped").
pub(super) async fn bridge(
    remote: Remote,
    mut requests: tokio::sync::mpsc::Receiver<super::Request>,
    notify: tokio::sync::broadcast::Sender<super::Notification>,
) {
    let Remote {
        mut lines,
        mut write,
        ..
    } = remote;
    let mut waiting: std::collections::HashMap<u64, super::Request> = Default::default();
    let mut next_id = 1u64;
    let subscribe = json!({"jsonrpc": "2.0", "id": 0, "method": "subscribe"}).to_string() + "\n";
    if write.write_all(subscribe.as_bytes()).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            request = requests.recv() => {
                let Some(request) = request else { return };
                if request.method == "subscribe" {
                    let _ = request.reply.send(Ok(json!({})));
                    continue;
                }
                let id = next_id;
                next_id += 1;
                let line = json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "method": request.method,
                    "params": request.params,
                })
                .to_string()
                    + "\n";
                if write.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                waiting.insert(id, request);
            }
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { return };
                let Ok(value) = serde_json::from_str::<Value>(&line) else { continue };
                if let Some(method) = value.get("method").and_then(Value::as_str) {
                    let _ = notify.send(super::Notification {
                        method: method.to_owned(),
                        params: value.get("params").cloned().unwrap_or(Value::Null),
                    });
                    continue;
                }
                let Some(request) = value
                    .get("id")
                    .and_then(Value::as_u64)
                    .and_then(|id| waiting.remove(&id))
                else {
                    continue;
                };
                let answer = match (value.get("result"), value.get("error")) {
                    (Some(result), _) => Ok(result.clone()),
                    (None, error) => Err(RpcError {
                        code: error
                            .and_then(|e| e.get("code"))
                            .and_then(Value::as_i64)
                            .unwrap_or(1),
                        message: error
                            .and_then(|e| e.get("message"))
                            .and_then(Value::as_str)
                            .unwrap_or("unknown error")
                            .to_owned(),
                    }),
                };
                let _ = request.reply.send(answer);
            }
        }
    }
}
