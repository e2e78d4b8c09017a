//! The control protocol's methods, run by the owner's task against its App
//! (docs/CLIENT_API.md lists them with their params and results).

use serde_json::{Value, json};
use sotto_core::App;

use super::{Notification, RpcError};
use crate::output::message_json;

/// Where a call's progress notifications go (`file.progress`).
pub(super) type Publish = tokio::sync::broadcast::Sender<Notification>;

/// What a call left for the owner to pass on.
#[derive(Default)]
pub(super) struct Effects {
    /// 1:1 messages sent: (hex ID, recipient, status), to follow their
    /// status.
    pub(super) sent: Vec<(String, String, sotto_core::Status)>,
    /// Whether receipts may have come in (a sync ran).
    pub(super) synced: bool,
    /// New messages a sync brought in, for subscribers.
    pub(super) received: Vec<sotto_core::Message>,
    /// Members whose messages were shown: the owner marks them read, and
    /// the receipts go out with its next answer.
    pub(super) read: Vec<String>,
}

pub(super) fn invalid(message: impl Into<String>) -> RpcError {
    RpcError::new(RpcError::INVALID_PARAMS, message)
}

/// A required string param.
pub(super) fn text(params: &Value, name: &str) -> Result<String, RpcError> {
    match params.get(name) {
        Some(Value::String(value)) if !value.is_empty() => Ok(value.clone()),
        Some(Value::String(_)) => Err(invalid(format!("\"{name}\" must not be empty"))),
        Some(_) => Err(invalid(format!("\"{name}\" must be a string"))),
        None => Err(invalid(format!("missing param \"{name}\""))),
    }
}

/// An optional string param.
pub(super) fn optional_text(params: &Value, name: &str) -> Result<Option<String>, RpcError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => text(params, name).map(Some),
    }
}

pub(super) fn status_of(delivered: bool) -> sotto_core::Status {
    if delivered {
        sotto_core::Status::Sent
    } else {
        sotto_core::Status::Queued
    }
}

pub(super) fn failed(error: impl Into<anyhow::Error>) -> RpcError {
    RpcError::from_error(&error.into())
}

/// The methods a socket client may call (besides `subscribe`, which the
/// socket server answers itself).
pub(crate) const METHODS: &[&str] = &[
    "send",
    "group.send",
    "sync",
    "history",
    "read",
    "conversations",
    "members",
    "groups",
    "whoami",
    "subscribe",
    "cli.run",
    "verify.sas.start",
    "verify.sas.code",
    "verify.sas.confirm",
    "verify.sas.result",
    "react",
    "edit",
    "delete",
    "search",
    "disappear",
    "file.send",
    "file.save",
    "file.info",
];

/// Interactive verifications in progress, by handle (at most one each; a
/// new start replaces the old one).
pub(super) type SasSessions = std::collections::BTreeMap<String, sotto_core::SasSession>;

/// The verification with `with` that `verify.sas.start` began.
fn sas_session<'a>(
    sessions: &'a mut SasSessions,
    with: &str,
) -> Result<&'a mut sotto_core::SasSession, RpcError> {
    sessions.get_mut(with).ok_or_else(|| {
        invalid(format!(
            "no verification with {with} in progress; call verify.sas.start first"
        ))
    })
}

/// The messages of a history page.
/// A page of history and, when it is full, the cursor of the page
/// before it (the `earlier` of the answer, given back as `before`).
fn page(
    page: Result<Vec<(u64, sotto_core::Message)>, sotto_core::AppError>,
    limit: usize,
) -> Result<(Vec<sotto_core::Message>, Option<u64>), RpcError> {
    let page = page.map_err(failed)?;
    let earlier = match page.first() {
        Some((position, _)) if page.len() >= limit && limit > 0 => Some(*position),
        _ => None,
    };
    Ok((page.into_iter().map(|(_, m)| m).collect(), earlier))
}

/// The optional `reply_to` param: a message ID (or its first 8+ hex
/// digits).
fn reply_to(app: &App, params: &Value) -> Result<Option<sotto_core::MessageId>, RpcError> {
    optional_text(params, "reply_to")?
        .map(|id| app.resolve_message_id(&id).map_err(failed))
        .transpose()
}

/// Runs `method`.
pub(super) async fn call(
    app: &mut App,
    sas: &mut SasSessions,
    method: &str,
    params: Value,
    effects: &mut Effects,
    publish: &Publish,
) -> Result<Value, RpcError> {
    let params = match params {
        Value::Null => json!({}),
        Value::Object(_) => params,
        _ => return Err(invalid("params must be an object")),
    };
    match method {
        "send" => {
            let to = text(&params, "to")?;
            let body = text(&params, "text")?;
            let reply_to = reply_to(app, &params)?;
            let sent = app
                .send_reply(&to, &body, reply_to.as_ref())
                .await
                .map_err(failed)?;
            let id = hex::encode(sent.id);
            effects
                .sent
                .push((id.clone(), to.clone(), status_of(sent.delivered)));
            Ok(json!({
                "id": id,
                "to": to,
                "status": if sent.delivered { "sent" } else { "queued" },
            }))
        }
        "group.send" => {
            let group = text(&params, "group")?;
            let body = text(&params, "text")?;
            let reply_to = reply_to(app, &params)?;
            let sent = app
                .group_send_reply(&group, &body, reply_to.as_ref())
                .await
                .map_err(failed)?;
            Ok(json!({
                "id": hex::encode(sent.id),
                "group": group,
                "status": if sent.delivered { "sent" } else { "queued" },
            }))
        }
        "react" | "edit" | "delete" => {
            let id = text(&params, "id")?;
            let change = match method {
                "react" => sotto_core::Change::React(text(&params, "emoji")?),
                "edit" => sotto_core::Change::Edit(text(&params, "text")?),
                _ => sotto_core::Change::Delete,
            };
            let (message, delivered) = app.change_message(&id, change).await.map_err(failed)?;
            Ok(json!({
                "message": message_json(&message),
                "status": if delivered { "sent" } else { "queued" },
            }))
        }
        "disappear" => {
            let with = optional_text(&params, "with")?;
            let group = optional_text(&params, "group")?;
            let secs = params
                .get("secs")
                .and_then(Value::as_u64)
                .ok_or_else(|| invalid("\"secs\" must be a non-negative integer (0: off)"))?;
            if with.is_some() == group.is_some() {
                return Err(invalid("give exactly one of \"with\" and \"group\""));
            }
            let delivered = app
                .set_timer(with.as_deref(), group.as_deref(), secs)
                .await
                .map_err(failed)?;
            Ok(json!({
                "secs": secs,
                "status": if delivered { "sent" } else { "queued" },
            }))
        }
        "search" => {
            app.purge_expired().map_err(failed)?;
            let query = text(&params, "query")?;
            let with = optional_text(&params, "with")?;
            let group = optional_text(&params, "group")?;
            if with.is_some() && group.is_some() {
                return Err(invalid("give at most one of \"with\" and \"group\""));
            }
            let limit = match params.get("limit") {
                None | Some(Value::Null) => 50,
                Some(value) => value
                    .as_u64()
                    .and_then(|l| usize::try_from(l).ok())
                    .ok_or_else(|| invalid("\"limit\" must be a non-negative integer"))?,
            };
            let found = app
                .search(&query, with.as_deref(), group.as_deref(), limit)
                .map_err(failed)?;
            let messages: Vec<Value> = found.iter().map(message_json).collect();
            Ok(json!({ "messages": messages }))
        }
        "sync" => {
            effects.synced = true;
            let report = app.sync().await.map_err(failed)?;
            let notices = app.take_notices().map_err(failed)?;
            let messages: Vec<Value> = report.messages.iter().map(message_json).collect();
            let updated: Vec<Value> = report.updated.iter().map(message_json).collect();
            effects.received.extend(report.messages);
            Ok(json!({
                "messages": messages,
                "updated": updated,
                "notices": notices,
                "link_requests": report.link_requests,
                "awaiting_approval": app.awaiting_approval(),
            }))
        }
        "history" => {
            let limit = match params.get("limit") {
                None | Some(Value::Null) => None,
                Some(value) => Some(
                    value
                        .as_u64()
                        .ok_or_else(|| invalid("\"limit\" must be a non-negative integer"))?,
                ),
            };
            let before = match params.get("before") {
                None | Some(Value::Null) => None,
                Some(value) => Some(
                    value
                        .as_u64()
                        .ok_or_else(|| invalid("\"before\" must be the \"earlier\" of a page"))?,
                ),
            };
            let with = optional_text(&params, "with")?;
            let group = optional_text(&params, "group")?;
            app.purge_expired().map_err(failed)?;
            // With a limit, only one page is read from the store: the last,
            // or the one before `before`.
            let limit = limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
            if before.is_some() && limit.is_none() {
                return Err(invalid("\"before\" needs a \"limit\""));
            }
            let (messages, earlier) = match (with, group, limit) {
                (Some(handle), None, None) => (app.history(&handle).map_err(failed)?, None),
                (None, Some(group), None) => (app.group_history(&group).map_err(failed)?, None),
                (Some(handle), None, Some(limit)) => {
                    page(app.history_page(&handle, before, limit), limit)?
                }
                (None, Some(group), Some(limit)) => {
                    page(app.group_history_page(&group, before, limit), limit)?
                }
                _ => return Err(invalid("give exactly one of \"with\" and \"group\"")),
            };
            let messages: Vec<Value> = messages.iter().map(message_json).collect();
            Ok(match limit {
                Some(_) => json!({ "messages": messages, "earlier": earlier }),
                None => json!({ "messages": messages }),
            })
        }
        "read" => match (
            optional_text(&params, "with")?,
            optional_text(&params, "group")?,
        ) {
            (Some(with), None) => {
                if with == app.handle() {
                    return Err(invalid(
                        "\"with\" names you; read marks are for what others sent",
                    ));
                }
                effects.read.push(with.clone());
                Ok(json!({ "with": with }))
            }
            (None, Some(group)) => {
                let marked = app.mark_group_read(&group).map_err(failed)?;
                Ok(json!({ "group": group, "marked": marked }))
            }
            _ => Err(invalid("give exactly one of \"with\" and \"group\"")),
        },
        "conversations" => {
            let list: Vec<Value> = app
                .conversations()
                .map_err(failed)?
                .iter()
                .map(|c| {
                    let mut entry = match &c.group {
                        Some(id) => json!({"group": c.name, "group_id": id}),
                        None => json!({"with": c.name}),
                    };
                    entry["unread"] = json!(c.unread);
                    entry["last"] = c.last.as_ref().map_or(Value::Null, message_json);
                    entry
                })
                .collect();
            Ok(json!({ "conversations": list }))
        }
        "members" => {
            let handles = app.members().await.map_err(failed)?;
            let me = app.handle().to_owned();
            let members: Vec<Value> = handles
                .iter()
                .map(|handle| {
                    let me = *handle == me;
                    json!({
                        "handle": handle,
                        "me": me,
                        "verified": !me && app.is_verified(handle).unwrap_or(false),
                    })
                })
                .collect();
            Ok(json!({ "members": members }))
        }
        "groups" => {
            let groups: Vec<Value> = app
                .groups()
                .iter()
                .map(|info| {
                    json!({
                        "name": info.name,
                        "id": info.id,
                        "members": info.members,
                        "admins": info.admins,
                        "generation": info.generation,
                        "active": info.active,
                    })
                })
                .collect();
            Ok(json!({ "groups": groups }))
        }
        "whoami" => {
            let device = app
                .devices(false)
                .ok()
                .and_then(|devices| devices.into_iter().find(|d| d.this))
                .map(|d| d.id);
            Ok(json!({
                "handle": app.handle(),
                "team": app.team_name(),
                "admin": app.is_admin(),
                "device": device,
            }))
        }
        "subscribe" => Ok(json!({})),
        "file.send" => super::files::send(app, &params, effects, publish).await,
        "file.save" => super::files::save(app, &params, publish).await,
        "file.info" => super::files::info(app, &params),
        "verify.sas.start" => {
            let with = text(&params, "with")?;
            let session = app.sas_start(&with).await.map_err(failed)?;
            sas.insert(with.clone(), session);
            Ok(json!({ "with": with }))
        }
        "verify.sas.code" => {
            let with = text(&params, "with")?;
            let session = sas_session(sas, &with)?;
            match app.sas_code(session).map_err(failed)? {
                None => Ok(json!({ "code": null })),
                Some(code) => Ok(json!({ "code": {
                    "emoji": code.emoji.iter().map(|(_, name)| *name).collect::<Vec<_>>(),
                    "decimals": [code.decimals.0, code.decimals.1, code.decimals.2],
                    "text": code.to_string(),
                }})),
            }
        }
        "verify.sas.confirm" => {
            let with = text(&params, "with")?;
            let matches = match params.get("matches") {
                Some(Value::Bool(matches)) => *matches,
                _ => return Err(invalid("\"matches\" must be true or false")),
            };
            if !matches {
                sas.remove(&with);
                return Ok(json!({ "with": with, "verified": false }));
            }
            let session = sas_session(sas, &with)?;
            app.sas_confirm(session).await.map_err(failed)?;
            Ok(json!({ "with": with }))
        }
        "verify.sas.result" => {
            let with = text(&params, "with")?;
            let session = sas_session(sas, &with)?;
            let verified = app.sas_verified(session).map_err(failed)?;
            if verified {
                sas.remove(&with);
            }
            Ok(json!({ "with": with, "verified": verified }))
        }
        "cli.run" => {
            let argv = match params.get("argv") {
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| invalid("\"argv\" must be an array of strings"))?,
                Some(_) => return Err(invalid("\"argv\" must be an array of strings")),
                None => return Err(invalid("missing param \"argv\"")),
            };
            let stdin = match params.get("stdin") {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(text.clone()),
                Some(_) => return Err(invalid("\"stdin\" must be a string")),
            };
            let (stdout, stderr, code, ctx) =
                crate::commands::run_captured(app, &argv, stdin).await;
            effects.synced = ctx.synced;
            effects.sent.extend(ctx.sent);
            effects.received.extend(ctx.received);
            effects.read.extend(ctx.read);
            Ok(json!({
                "stdout": String::from_utf8_lossy(&stdout),
                "stderr": String::from_utf8_lossy(&stderr),
                "exit_code": code,
            }))
        }
        other => Err(RpcError::new(
            RpcError::NO_METHOD,
            format!(
                "no method \"{other}\"; the methods are {}",
                METHODS.join(", ")
            ),
        )),
    }
}
