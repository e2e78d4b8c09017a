//! The admin socket: how `sotto-relay backup` and `sotto-relay audit` reach
//! a running relay (issue 24 items 4 and 5). sled locks its directory, so
//! no second process can open a running relay's database; the relay does
//! the reading itself and streams the result.
//!
//! `admin.sock` in the data directory, a Unix socket that only the relay's
//! own user (and root) may use: it is bound under a temporary name, made
//! 0600 and then renamed into place, and every connection's peer
//! credentials are checked against the socket's owner. One request line
//! (`backup`, `audit` or `audit verbose`), then one status line (`ok` or
//! `error: …`), then the body: the backup file's bytes, or the audit report
//! as JSON. It serves one request at a time.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::sync::{Semaphore, watch};

use crate::audit::{AuditReport, audit_open, list_data_dir};
use crate::backup::{BackupError, write_backup};
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::storage::SledStorage;

/// The socket's name in the data directory.
pub const SOCKET: &str = "admin.sock";
/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write to a client that does not read may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// The admin socket's path for `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Binds the admin socket in `data_dir` (the caller holds the database
/// lock, so a socket file left there is a dead relay's and is replaced).
pub(crate) fn bind(data_dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let path = socket_path(data_dir);
    let temp = data_dir.join(format!("{SOCKET}.tmp"));
    for stale in [&path, &temp] {
        match std::fs::remove_file(stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let listener = std::os::unix::net::UnixListener::bind(&temp)?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&temp, &path)?;
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

/// Serves the admin socket until shutdown.
pub(crate) async fn serve(
    listener: tokio::net::UnixListener,
    relay: Arc<Relay<SledStorage>>,
    data_dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let owner = std::fs::metadata(socket_path(&data_dir))
        .map(|m| m.uid())
        .ok();
    let busy = Arc::new(Semaphore::new(1));
    loop {
        let stream = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "admin socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let allowed = stream
            .peer_cred()
            .map(|cred| cred.uid() == 0 || Some(cred.uid()) == owner)
            .unwrap_or(false);
        if !allowed {
            tracing::warn!("admin socket: refused a connection from another user");
            continue;
        }
        let relay = relay.clone();
        let data_dir = data_dir.clone();
        let busy = busy.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stream);
            let mut line = String::new();
            let read = tokio::time::timeout(
                REQUEST_TIMEOUT,
                tokio::io::AsyncReadExt::take(&mut reader, 64).read_line(&mut line),
            )
            .await;
            if !matches!(read, Ok(Ok(n)) if n > 0) {
                return;
            }
            let Ok(stream) = reader.into_inner().into_std() else {
                return;
            };
            let permit = busy.try_acquire_owned();
            tokio::task::spawn_blocking(move || {
                // A reader that stops reading for a minute ends its backup,
                // so it cannot hold a thread (and the shutdown) forever.
                if stream.set_nonblocking(false).is_err()
                    || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
                {
                    return;
                }
                let mut stream = stream;
                if permit.is_err() {
                    let _ = stream.write_all(b"error: another admin request is running\n");
                    return;
                }
                handle(line.trim(), stream, &relay, &data_dir);
            });
        });
    }
    // A stopped relay leaves no socket behind (a killed one does; the
    // next start replaces it, and clients get "not running" meanwhile).
    let _ = std::fs::remove_file(socket_path(&data_dir));
}

fn handle(request: &str, mut stream: UnixStream, relay: &Relay<SledStorage>, data_dir: &Path) {
    match request {
        "backup" => {
            tracing::info!("admin socket: backup started");
            if stream.write_all(b"ok\n").is_err() {
                return;
            }
            let now = relay.clock.now_secs();
            match write_backup(
                &mut stream,
                data_dir,
                relay.storage(),
                Some(&relay.tokens),
                now,
            ) {
                Ok(summary) => {
                    Metrics::bump(&relay.metrics.backups, 1);
                    relay.metrics.last_backup.store(now, Ordering::Relaxed);
                    tracing::info!(
                        blobs = summary.blobs,
                        records = summary.records,
                        "admin socket: backup sent"
                    );
                }
                Err(BackupError::Write(error)) => {
                    Metrics::bump(&relay.metrics.backup_failures, 1);
                    tracing::warn!(%error, "admin socket: the backup's reader went away; backup abandoned")
                }
                Err(error) => {
                    Metrics::bump(&relay.metrics.backup_failures, 1);
                    tracing::error!(%error, "admin socket: backup failed")
                }
            }
        }
        "audit" | "audit verbose" => {
            let report = list_data_dir(data_dir).and_then(|files| {
                audit_open(relay.storage(), data_dir, files, request == "audit verbose")
            });
            let reply = match report.map(|r| serde_json::to_vec(&r)) {
                Ok(Ok(json)) => [b"ok\n".as_slice(), &json].concat(),
                Ok(Err(error)) => format!("error: {error}\n").into_bytes(),
                Err(error) => format!("error: {error}\n").into_bytes(),
            };
            let _ = stream.write_all(&reply);
        }
        other => {
            let _ = writeln!(
                stream,
                "error: unknown request {:?}",
                other.chars().take(20).collect::<String>()
            );
        }
    }
}

/// Reaching a running relay's admin socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No relay answers on the socket (none runs on this data directory).
    #[error("no running relay answers on {0}")]
    NotRunning(PathBuf),
    /// The socket exists but may not be used (another user's relay).
    #[error("cannot use the admin socket {path}: {source} (run as the relay's user or as root)")]
    Denied {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The relay refused or failed the request.
    #[error("the running relay says: {0}")]
    Refused(String),
    /// The exchange broke off.
    #[error("the admin socket connection failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Sends `request` to the relay running on `data_dir`; returns the
/// connection positioned at the start of the body.
pub fn request(data_dir: &Path, request: &str) -> Result<BufReader<UnixStream>, ControlError> {
    let path = socket_path(data_dir);
    let mut stream = UnixStream::connect(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning(path.clone())
        }
        _ => ControlError::Denied {
            path: path.clone(),
            source,
        },
    })?;
    let closed = || {
        ControlError::Refused(
            "nothing: it closed the connection (the admin socket serves only the relay's own user and root)"
                .into(),
        )
    };
    let hung_up = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
    };
    match stream.write_all(format!("{request}\n").as_bytes()) {
        Err(e) if hung_up(&e) => return Err(closed()),
        other => other?,
    }
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    match reader.read_line(&mut status) {
        Err(e) if hung_up(&e) => return Err(closed()),
        other => other?,
    };
    match status.trim_end() {
        "ok" => Ok(reader),
        "" => Err(closed()),
        other => Err(ControlError::Refused(
            other.strip_prefix("error: ").unwrap_or(other).to_owned(),
        )),
    }
}

/// The audit of the relay running on `data_dir`, through its socket.
pub fn audit_running(data_dir: &Path, verbose: bool) -> Result<AuditReport, ControlError> {
    let mut reader = request(data_dir, if verbose { "audit verbose" } else { "audit" })?;
    let mut json = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut json)?;
    serde_json::from_slice(&json)
        .map_err(|e| ControlError::Refused(format!("an unreadable audit report: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Server};

    /// A backup through the socket of a running relay is a whole backup,
    /// and the relay counts it; the socket is owner-only and goes away
    /// with the relay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_through_the_socket_is_whole_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let server = Server::start(config).await.unwrap();
        let socket = socket_path(dir.path());
        assert_eq!(
            std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let data_dir = dir.path().to_owned();
        let file = dir.path().join("b");
        let (data, target) = (data_dir.clone(), file.clone());
        let bytes = tokio::task::spawn_blocking(move || {
            let mut reader = request(&data, "backup").unwrap();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut bytes).unwrap();
            std::fs::write(&target, &bytes).unwrap();
            bytes
        })
        .await
        .unwrap();
        assert!(bytes.starts_with(b"sottoBK1"));
        let summary = crate::backup::verify_backup(&file).unwrap();
        assert_eq!(
            summary.files, 4,
            "certificate, its key, the issuer key, the unused bootstrap code"
        );
        let metrics = &server.relay().metrics;
        assert_eq!(metrics.backups.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.backup_failures.load(Ordering::Relaxed), 0);
        assert!(metrics.last_backup.load(Ordering::Relaxed) > 0);
        let text = crate::metrics::render_openmetrics(server.relay());
        assert!(text.contains("sotto_backups_total 1"), "{text}");

        let unknown = tokio::task::spawn_blocking(move || request(&data_dir, "drop tables"))
            .await
            .unwrap();
        assert!(matches!(unknown, Err(ControlError::Refused(m)) if m.contains("unknown request")));
        server.shutdown().await;
        assert!(!socket.exists(), "removed at shutdown");
    }
}
