//! The control socket: JSON-RPC 2.0, one object per line, many clients at
//! once. Each connection has a reader (requests, answered in order) and a
//! writer (answers, then notifications once subscribed). Nothing here can
//! stall the owner: requests wait in the owner's bounded queue, and
//! notifications come from a bounded broadcast ring that drops a slow
//! subscriber's oldest ones (it gets a `lagged` notification).

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, watch};

use super::{MAX_LINE, Notification, OwnerHandle, RpcError};

/// Resolves once the owner stops.
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Answers waiting for a connection's writer.
const ANSWER_QUEUE: usize = 16;

/// Accepts clients until `stop`.
pub(super) async fn serve(listener: UnixListener, owner: OwnerHandle, stop: watch::Receiver<bool>) {
    let mut stopping = stop.clone();
    loop {
        tokio::select! {
            () = stopped(&mut stopping) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, owner.clone(), stop.clone()));
                }
                Err(error) => {
                    tracing::warn!("control socket: accept failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// What a connection's writer sends.
enum Out {
    /// A line (an answer).
    Line(String),
    /// From now on, notifications too.
    Subscribe(broadcast::Receiver<Notification>),
}

/// One line read, or why not.
enum Line {
    Text(Vec<u8>),
    /// Longer than [`MAX_LINE`]; skipped up to its newline.
    TooLong,
    Eof,
}

/// Reads one line of at most [`MAX_LINE`] bytes, without holding more.
async fn read_line(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(if too_long {
                Line::TooLong
            } else if line.is_empty() {
                Line::Eof
            } else {
                Line::Text(line)
            });
        }
        let (chunk, found) = match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => (&buffer[..end], Some(end + 1)),
            None => (buffer, None),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = found.unwrap_or(buffer.len());
        reader.consume(used);
        if found.is_some() {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Text(line)
            });
        }
    }
}

fn answer(id: &Value, result: Result<Value, RpcError>) -> String {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(error) => json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": error.code, "message": error.message},
        }),
    }
    .to_string()
}

async fn connection(stream: UnixStream, owner: OwnerHandle, stop: watch::Receiver<bool>) {
    let (read, write) = stream.into_split();
    let (out, outgoing) = mpsc::channel(ANSWER_QUEUE);
    let writer = tokio::spawn(writer(write, outgoing, stop.clone()));
    let mut reader = BufReader::new(read);
    let mut stopping = stop;
    loop {
        let line = tokio::select! {
            () = stopped(&mut stopping) => break,
            line = read_line(&mut reader) => line,
        };
        let reply = match line {
            Err(_) | Ok(Line::Eof) => break,
            Ok(Line::TooLong) => Some(answer(
                &Value::Null,
                Err(RpcError::new(
                    RpcError::INVALID_REQUEST,
                    format!("the line is longer than {MAX_LINE} bytes; it was skipped"),
                )),
            )),
            Ok(Line::Text(line)) => request(&line, &owner, &out).await,
        };
        if let Some(reply) = reply
            && out.send(Out::Line(reply)).await.is_err()
        {
            break;
        }
    }
    drop(out);
    let _ = writer.await;
}

/// Answers one request line; `None` for a notification (no `id`), which
/// JSON-RPC leaves unanswered.
async fn request(line: &[u8], owner: &OwnerHandle, out: &mpsc::Sender<Out>) -> Option<String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(error) => {
            return Some(answer(
                &Value::Null,
                Err(RpcError::new(RpcError::PARSE, format!("not JSON: {error}"))),
            ));
        }
    };
    let id = value.get("id").cloned();
    let invalid = |message: &str| {
        Some(answer(
            id.as_ref().unwrap_or(&Value::Null),
            Err(RpcError::new(RpcError::INVALID_REQUEST, message)),
        ))
    };
    if !value.is_object() {
        return invalid("a request is a JSON object");
    }
    if value.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("\"jsonrpc\" must be \"2.0\"");
    }
    if let Some(id) = &id
        && !(id.is_string() || id.is_number() || id.is_null())
    {
        return invalid("\"id\" must be a string or a number");
    }
    let Some(method) = value.get("method").and_then(Value::as_str) else {
        return invalid("\"method\" must be a string");
    };
    let params = value.get("params").cloned().unwrap_or(Value::Null);
    if method == "subscribe" {
        // The receiver is made before the answer is queued, so nothing
        // after the answer is missed; the writer sends the answer first.
        let receiver = owner.subscribe();
        if let Some(id) = &id
            && out
                .send(Out::Line(answer(id, Ok(json!({})))))
                .await
                .is_err()
        {
            return None;
        }
        let _ = out.send(Out::Subscribe(receiver)).await;
        return None;
    }
    let result = owner.call(method, params).await;
    id.map(|id| answer(&id, result))
}

async fn writer(
    mut write: tokio::net::unix::OwnedWriteHalf,
    mut outgoing: mpsc::Receiver<Out>,
    mut stop: watch::Receiver<bool>,
) {
    let mut notes: Option<broadcast::Receiver<Notification>> = None;
    loop {
        let line = tokio::select! {
            () = stopped(&mut stop) => break,
            out = outgoing.recv() => match out {
                Some(Out::Line(line)) => line,
                Some(Out::Subscribe(receiver)) => {
                    notes = Some(receiver);
                    continue;
                }
                None => break,
            },
            note = async { match notes.as_mut() {
                Some(notes) => notes.recv().await,
                None => std::future::pending().await,
            } } => match note {
                Ok(note) => json!({"jsonrpc": "2.0", "method": note.method, "params": note.params}).to_string(),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    json!({"jsonrpc": "2.0", "method": "lagged", "params": {"missed": missed}}).to_string()
                }
                Err(broadcast::error::RecvError::Closed) => {
                    notes = None;
                    continue;
                }
            },
        };
        let mut line = line.into_bytes();
        line.push(b'\n');
        // A client that does not read blocks only this writer.
        let written = tokio::select! {
            () = stopped(&mut stop) => break,
            written = write.write_all(&line) => written,
        };
        if written.is_err() {
            break;
        }
    }
    let _ = write.shutdown().await;
}
