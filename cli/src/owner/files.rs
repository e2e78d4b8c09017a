//! The control protocol's file methods (issue 21): `file.send`,
//! `file.save` and `file.info`, with `file.progress` notifications while
//! bytes move (docs/CLIENT_API.md).
//!
//! Paths are the owner's: a client in another directory sends absolute
//! ones. A transfer runs inside the owner's task like any request, so
//! other requests wait until it ends (the [`App`] has one holder).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sotto_core::{App, FileTarget, sanitize_name};

use crate::files::LocalFile;

use super::methods::{Effects, Publish, failed, invalid, optional_text, status_of, text};
use super::{Notification, RpcError};

/// Tells subscribers how far transfer `transfer` got.
fn progress(publish: &Publish, transfer: &str, direction: &str, name: &str, done: u64, total: u64) {
    // No subscriber is not an error.
    let _ = publish.send(Notification {
        method: "file.progress".into(),
        params: json!({
            "transfer": transfer,
            "direction": direction,
            "name": name,
            "done": done,
            "total": total,
        }),
    });
}

/// The `transfer` param, or one the owner makes up.
fn transfer_id(params: &Value, what: &str) -> Result<String, RpcError> {
    Ok(optional_text(params, "transfer")?.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("{what}-{nanos:08x}")
    }))
}

/// `file.send`: `path`, `to` or `group`, optional `caption`, `name` and
/// `transfer`.
pub(super) async fn send(
    app: &mut App,
    params: &Value,
    effects: &mut Effects,
    publish: &Publish,
) -> Result<Value, RpcError> {
    let path = PathBuf::from(text(params, "path")?);
    let target = match (
        optional_text(params, "to")?,
        optional_text(params, "group")?,
    ) {
        (Some(to), None) => FileTarget::Member(to),
        (None, Some(group)) => FileTarget::Group(group),
        _ => return Err(invalid("give exactly one of \"to\" and \"group\"")),
    };
    let caption = match params.get("caption") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(caption)) => caption.clone(),
        Some(_) => return Err(invalid("\"caption\" must be a string")),
    };
    let transfer = transfer_id(params, "up")?;
    let name = match optional_text(params, "name")? {
        Some(name) => name,
        None => path
            .file_name()
            .map_or_else(|| "file".to_owned(), |n| n.to_string_lossy().into_owned()),
    };
    let mut local = LocalFile::open(&path, &name).map_err(failed)?;
    let size = local.size;
    let shown = sanitize_name(&name);
    progress(publish, &transfer, "up", &shown, 0, size);
    let mut on_progress = {
        let (publish, transfer, shown) = (publish.clone(), transfer.clone(), shown.clone());
        move |done: u64| progress(&publish, &transfer, "up", &shown, done, size)
    };
    let sent = app
        .send_file(
            &target,
            local.outgoing(&path, name, caption),
            &mut on_progress,
        )
        .await
        .map_err(failed)?;
    let id = hex::encode(sent.id);
    let status = if sent.delivered { "sent" } else { "queued" };
    let mut result = json!({
        "id": id,
        "status": status,
        "size": size,
        "name": shown,
        "transfer": transfer,
    });
    match target {
        FileTarget::Member(to) => {
            effects
                .sent
                .push((id.clone(), to.clone(), status_of(sent.delivered)));
            result["to"] = json!(to);
        }
        FileTarget::Group(group) => result["group"] = json!(group),
    }
    Ok(result)
}

/// The user's download directory (the current one if there is none).
fn download_dir() -> PathBuf {
    directories::UserDirs::new()
        .and_then(|dirs| dirs.download_dir().map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `name` in `dir`, or `name (1).ext`, `name (2).ext`… : the first that
/// does not exist.
pub(crate) fn free_path(dir: &Path, name: &str) -> PathBuf {
    let name = sanitize_name(name);
    let first = dir.join(&name);
    if !first.exists() {
        return first;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem.to_owned(), format!(".{ext}")),
        _ => (name.clone(), String::new()),
    };
    (1..10_000)
        .map(|n| dir.join(format!("{stem} ({n}){ext}")))
        .find(|path| !path.exists())
        // Ten thousand copies: the save refuses the name as existing.
        .unwrap_or(first)
}

/// `file.save`: `id`, optional `path` (a file to create, or a directory)
/// and `transfer`.
pub(super) async fn save(
    app: &mut App,
    params: &Value,
    publish: &Publish,
) -> Result<Value, RpcError> {
    let id = app
        .resolve_message_id(&text(params, "id")?)
        .map_err(failed)?;
    let transfer = transfer_id(params, "down")?;
    let info = app.file_info(&id).map_err(failed)?;
    let dest = match optional_text(params, "path")?.map(PathBuf::from) {
        Some(dir) if dir.is_dir() => free_path(&dir, &info.name),
        Some(path) => path,
        None => free_path(&download_dir(), &info.name),
    };
    let shown = sanitize_name(&info.name);
    let size = info.size;
    progress(publish, &transfer, "down", &shown, 0, size);
    let mut on_progress = {
        let (publish, transfer, shown) = (publish.clone(), transfer.clone(), shown.clone());
        move |done: u64| progress(&publish, &transfer, "down", &shown, done, size)
    };
    let saved = app
        .save_file(&id, Some(&dest), &mut on_progress)
        .await
        .map_err(failed)?;
    progress(publish, &transfer, "down", &shown, size, size);
    Ok(json!({
        "id": hex::encode(id),
        "path": saved.display().to_string(),
        "size": size,
        "name": shown,
        "transfer": transfer,
    }))
}

/// `file.info`: `id`.
pub(super) fn info(app: &App, params: &Value) -> Result<Value, RpcError> {
    let id = app
        .resolve_message_id(&text(params, "id")?)
        .map_err(failed)?;
    let info = app.file_info(&id).map_err(failed)?;
    let downloaded = app
        .file_cache()
        .state(&hex::encode(id))
        .map_err(failed)?
        .complete;
    let thumbnail = (!info.thumbnail.is_empty()).then(|| hex::encode(&info.thumbnail));
    Ok(json!({
        "id": hex::encode(id),
        "name": sanitize_name(&info.name),
        "size": info.size,
        "media_type": info.media_type,
        "caption": info.caption,
        "sha256": hex::encode(info.sha256),
        "downloaded": downloaded,
        "thumbnail": thumbnail,
    }))
}
