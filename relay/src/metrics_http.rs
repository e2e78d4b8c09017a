//! The metrics listener: a deliberately small HTTP/1.x responder for
//! `GET /metrics` and `GET /healthz` (and `HEAD` of both), off unless
//! `metrics_listen` is set.
//!
//! Every byte from the socket is treated as hostile: the request head may
//! be at most [`MAX_HEAD`] bytes and must arrive within [`READ_TIMEOUT`],
//! at most [`MAX_CLIENTS`] scrapers are served at a time (more are closed
//! at once), the body is never read, and every response closes the
//! connection. Nothing a request says is logged or echoed. See
//! docs/DECISIONS.md for why this is not a general HTTP server crate.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::metrics;
use crate::relay::Relay;
use crate::storage::Storage;

/// Largest request head (request line and headers) read.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a response may take to be written.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapers served at a time.
pub(crate) const MAX_CLIENTS: usize = 16;

/// A parsed request: only what the responder looks at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// `GET` or `HEAD` of a path; whether OpenMetrics is accepted.
    Request {
        head_only: bool,
        path: String,
        openmetrics: bool,
    },
    /// The head is not complete yet.
    Incomplete,
    /// An answer without looking further: status line and reason.
    Reject(&'static str),
}

/// Parses a request head from `buf`.
pub(crate) fn parse(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= MAX_HEAD {
            return Parsed::Reject("431 Request Header Fields Too Large");
        }
        return Parsed::Incomplete;
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Reject("400 Bad Request");
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Reject("400 Bad Request");
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Parsed::Reject("505 HTTP Version Not Supported");
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Parsed::Reject("405 Method Not Allowed"),
    };
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let openmetrics = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("accept")
                && value.contains("application/openmetrics-text")
        })
    });
    Parsed::Request {
        head_only,
        path,
        openmetrics,
    }
}

/// Serves the listener until shutdown.
pub(crate) async fn serve<S: Storage>(
    listener: TcpListener,
    relay: Arc<Relay<S>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    let mut clients = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors, say: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    drop(stream);
                    continue;
                };
                let relay = relay.clone();
                let shutting_down = shutdown.clone();
                clients.spawn(async move {
                    respond(stream, &relay, &shutting_down).await;
                    drop(permit);
                });
            }
        }
    }
    clients.shutdown().await;
}

async fn respond<S: Storage>(
    mut stream: TcpStream,
    relay: &Relay<S>,
    shutdown: &watch::Receiver<bool>,
) {
    let mut buf = Vec::with_capacity(1024);
    let parsed = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            match parse(&buf) {
                Parsed::Incomplete => {}
                parsed => return Some(parsed),
            }
            let room = MAX_HEAD - buf.len();
            match stream.read(&mut chunk[..room.min(1024)]).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let (status, content_type, body, head_only) = match parsed {
        Ok(Some(Parsed::Request {
            head_only,
            path,
            openmetrics,
        })) => match path.as_str() {
            "/metrics" => {
                let (body, content_type) = if openmetrics {
                    (
                        metrics::render_openmetrics(relay),
                        metrics::OPENMETRICS_CONTENT_TYPE,
                    )
                } else {
                    (
                        metrics::render_prometheus(relay),
                        metrics::PROMETHEUS_CONTENT_TYPE,
                    )
                };
                ("200 OK", content_type, body, head_only)
            }
            "/healthz" => {
                let (status, body) = health(relay, *shutdown.borrow());
                (status, "text/plain; charset=utf-8", body, head_only)
            }
            _ => (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "not found: this listener serves /metrics and /healthz\n".to_owned(),
                head_only,
            ),
        },
        Ok(Some(Parsed::Reject(status))) => (
            status,
            "text/plain; charset=utf-8",
            format!("{status}\n"),
            false,
        ),
        Ok(Some(Parsed::Incomplete)) | Ok(None) => return,
        Err(_) => (
            "408 Request Timeout",
            "text/plain; charset=utf-8",
            "408 Request Timeout\n".to_owned(),
            false,
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(head.as_bytes()).await?;
        if !head_only {
            stream.write_all(body.as_bytes()).await?;
        }
        stream.shutdown().await
    })
    .await;
}

/// `/healthz`: 200 while the relay serves and its storage flushes, 503
/// otherwise, with a one-line reason.
fn health<S: Storage>(relay: &Relay<S>, shutting_down: bool) -> (&'static str, String) {
    if shutting_down {
        ("503 Service Unavailable", "shutting down\n".to_owned())
    } else if !relay.storage_healthy() {
        (
            "503 Service Unavailable",
            "the last storage flush failed; see the relay log\n".to_owned(),
        )
    } else {
        ("200 OK", "ok\n".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed_strictly() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n"),
            Parsed::Request {
                head_only: false,
                path: "/metrics".into(),
                openmetrics: true
            }
        );
        assert_eq!(
            parse(b"HEAD /healthz?x=1 HTTP/1.0\r\n\r\n"),
            Parsed::Request {
                head_only: true,
                path: "/healthz".into(),
                openmetrics: false
            }
        );
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost"), Parsed::Incomplete);
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Parsed::Reject("405 Method Not Allowed")
        );
        assert_eq!(
            parse(b"GET /metrics HTTP/2\r\n\r\n"),
            Parsed::Reject("505 HTTP Version Not Supported")
        );
        assert_eq!(
            parse(b"GET  /metrics HTTP/1.1\r\n\r\n"),
            Parsed::Reject("400 Bad Request")
        );
        assert_eq!(
            parse(b"GET /\xff HTTP/1.1\r\n\r\n"),
            Parsed::Reject("400 Bad Request")
        );
        assert_eq!(
            parse(&vec![b'a'; MAX_HEAD]),
            Parsed::Reject("431 Request Header Fields Too Large")
        );
    }
}
