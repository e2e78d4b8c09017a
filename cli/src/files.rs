//! `sotto send --file`, `sotto group send --file`, `sotto file save`,
//! `sotto files`, and fetching small files as they arrive (issue 21).
//! Progress goes to stderr (indicatif), hidden with `--json`, when stderr
//! is not a terminal, and when the owner runs the command for another
//! process.

use std::path::{Path, PathBuf};

use serde_json::json;
use sotto_core::{App, FileTarget, Message, OutgoingFile, sanitize_name};

use crate::commands::Ctx;
use crate::output::Output;

/// A progress bar of `total` bytes on stderr, or a hidden one.
fn bar(out: &Output, total: u64, what: &str) -> indicatif::ProgressBar {
    if out.json || !out.is_std() {
        return indicatif::ProgressBar::hidden();
    }
    // Hidden by indicatif itself when stderr is not a terminal.
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

/// A progress callback that moves `bar`; in debug builds, with
/// `SOTTO_TEST_STALL_AFTER_BYTES=N` in the environment, it also stops the
/// whole process for good once N bytes moved, after saying
/// `sotto: test stall` on stderr: the end-to-end tests kill it there
/// (SIGKILL) to check that the transfer resumes. Release builds have no
/// such hook.
fn on_progress(bar: indicatif::ProgressBar) -> impl FnMut(u64) + Send {
    #[cfg(debug_assertions)]
    let stall_at = std::env::var("SOTTO_TEST_STALL_AFTER_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    move |done: u64| {
        bar.set_position(done);
        #[cfg(debug_assertions)]
        if stall_at.is_some_and(|at| done >= at) {
            eprintln!("sotto: test stall");
            loop {
                std::thread::park();
            }
        }
    }
}

/// A file on disk opened to be sent, with what receivers are told of it:
/// `sotto send --file` and the owner's `file.send` both start here.
pub(crate) struct LocalFile {
    file: std::fs::File,
    /// Its length in bytes.
    pub(crate) size: u64,
    media_type: &'static str,
    thumbnail: Vec<u8>,
}

impl LocalFile {
    /// Opens `path`; `name` (what receivers see) gives the media type.
    /// PNG and JPEG images get a small JPEG inline; anything else (or an
    /// image that does not decode) goes without.
    pub(crate) fn open(path: &Path, name: &str) -> anyhow::Result<Self> {
        let cannot = |e: std::io::Error| anyhow::anyhow!("cannot read {}: {e}", path.display());
        let mut file = std::fs::File::open(path).map_err(cannot)?;
        let size = file.metadata().map_err(cannot)?.len();
        let media_type = media_type(name);
        let thumbnail = if matches!(media_type, "image/png" | "image/jpeg") {
            let thumbnail = sotto_core::file_thumbnail(std::io::BufReader::new(&mut file));
            std::io::Seek::rewind(&mut file).map_err(cannot)?;
            thumbnail.unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(Self {
            file,
            size,
            media_type,
            thumbnail,
        })
    }

    /// What the core sends: the bytes, read from `path` (so an interrupted
    /// upload resumes), under `name` with `caption`.
    pub(crate) fn outgoing(
        &mut self,
        path: &Path,
        name: String,
        caption: String,
    ) -> OutgoingFile<'_> {
        OutgoingFile {
            reader: &mut self.file,
            size: self.size,
            media_type: self.media_type.to_owned(),
            name,
            caption,
            thumbnail: std::mem::take(&mut self.thumbnail),
            source: Some(path.to_owned()),
        }
    }
}

/// A media type from the name's extension (empty when unknown).
fn media_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("svg") => "image/svg+xml",
        Some("pdf") => "application/pdf",
        Some("txt" | "log" | "md") => "text/plain",
        Some("json") => "application/json",
        Some("zip") => "application/zip",
        Some("gz" | "tgz") => "application/gzip",
        _ => "",
    }
}

/// Sizes as people read them ("1.5 MiB").
#[must_use]
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Sends the file at `path` to `to`, `caption` with it.
pub(crate) async fn send(
    app: &mut App,
    ctx: &mut Ctx,
    to: FileTarget,
    path: &Path,
    caption: String,
) -> anyhow::Result<()> {
    let out = ctx.out.clone();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let mut local = LocalFile::open(path, &name)?;
    let size = local.size;
    let shown = bar(&out, size, &format!("sending {}", sanitize_name(&name)));
    let mut progress = on_progress(shown.clone());
    let sent = app
        .send_file(&to, local.outgoing(path, name, caption), &mut progress)
        .await;
    shown.finish_and_clear();
    let sent = sent?;
    let (who, key) = match &to {
        FileTarget::Member(handle) => (handle.clone(), "to"),
        FileTarget::Group(group) => (group.clone(), "group"),
    };
    if let FileTarget::Member(handle) = &to {
        ctx.record_sent(&sent, handle);
    }
    let status = if sent.delivered { "sent" } else { "queued" };
    out.result(
        if sent.delivered {
            format!("file sent to {who} ({})", human_size(size))
        } else {
            format!("file uploaded; its message is queued for {who}: `sotto sync` sends it later")
        },
        json!({"id": hex::encode(sent.id), key: who, "status": status, "size": size}),
    );
    Ok(())
}

/// `sotto file save ID [PATH]`.
pub(crate) async fn save(
    app: &mut App,
    ctx: &mut Ctx,
    id: &str,
    path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let out = ctx.out.clone();
    let id = app.resolve_message_id(id)?;
    let info = app.file_info(&id)?;
    let shown = bar(
        &out,
        info.size,
        &format!("fetching {}", sanitize_name(&info.name)),
    );
    let mut progress = on_progress(shown.clone());
    let saved = app.save_file(&id, path.as_deref(), &mut progress).await;
    shown.finish_and_clear();
    let saved = saved?;
    out.result(
        format!("saved {} ({})", saved.display(), human_size(info.size)),
        json!({"id": hex::encode(id), "path": saved.display().to_string(), "size": info.size, "sha256": hex::encode(info.sha256)}),
    );
    Ok(())
}

/// `sotto file thumbnail ID PATH`.
pub(crate) fn thumbnail(app: &App, ctx: &Ctx, id: &str, path: &Path) -> anyhow::Result<()> {
    let id = app.resolve_message_id(id)?;
    let Some(jpeg) = app.file_thumbnail(&id)? else {
        return Err(sotto_core::AppError::File(sotto_core::FileError::NoThumbnail).into());
    };
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => sotto_core::AppError::File(
                sotto_core::FileError::Exists(path.display().to_string()),
            )
            .into(),
            _ => anyhow::anyhow!("cannot write {}: {e}", path.display()),
        })?;
    std::io::Write::write_all(&mut out, &jpeg)?;
    ctx.out.result(
        format!(
            "wrote the thumbnail to {} ({})",
            path.display(),
            human_size(jpeg.len() as u64)
        ),
        json!({"id": hex::encode(id), "path": path.display().to_string(), "size": jpeg.len()}),
    );
    Ok(())
}

/// `sotto files [HANDLE | --group NAME]`.
pub(crate) fn list(
    app: &App,
    ctx: &Ctx,
    handle: Option<&str>,
    group: Option<&str>,
) -> anyhow::Result<()> {
    let cache = app.file_cache();
    // Uploads an earlier run left unfinished (`sotto sync` resumes them).
    for upload in app.pending_uploads()? {
        let (to, in_group) = match &upload.target {
            sotto_core::UploadTarget::Member(handle) => (handle.as_str(), false),
            sotto_core::UploadTarget::Group(group) => (group.as_str(), true),
        };
        let wanted = match (handle, group) {
            (Some(handle), _) => !in_group && to == handle,
            (None, Some(group)) => in_group && to == group,
            (None, None) => true,
        };
        if !wanted {
            continue;
        }
        let stored =
            (upload.stored.chunks * sotto_core::FILE_CHUNK_DATA as u64).min(upload.info.size);
        if ctx.out.json {
            ctx.out.line(json!({
                "uploading": true,
                "to": if in_group { None } else { Some(to) },
                "group": if in_group { Some(to) } else { None },
                "stored_bytes": stored,
                "file": {
                    "name": upload.info.name,
                    "size": upload.info.size,
                    "media_type": upload.info.media_type,
                },
            }));
        } else {
            ctx.out.line(format!(
                "uploading to {}{to}: {} ({} of {} stored; `sotto sync` goes on)",
                if in_group { "#" } else { "" },
                sanitize_name(&upload.info.name),
                human_size(stored),
                human_size(upload.info.size),
            ));
        }
    }
    for message in app.files(handle, group)? {
        let Some(file) = &message.file else { continue };
        let fetched = cache.state(&message.id)?.complete;
        if ctx.out.json {
            ctx.out.line(json!({
                "id": message.id,
                "from": message.from,
                "group": message.group,
                "sent_at": message.sent_at,
                "fetched": fetched,
                "file": {
                    "id": message.id,
                    "name": file.name,
                    "size": file.size,
                    "sha256": file.sha256,
                    "media_type": file.media_type,
                    "has_thumbnail": file.has_thumbnail,
                },
            }));
        } else {
            let from = match (&message.group, message.from_me) {
                (Some(group), _) => format!("#{group} {}", message.from),
                (None, true) => format!("me -> {}", message.peer),
                (None, false) => message.from.clone(),
            };
            ctx.out.line(format!(
                "{} {from}: {} ({}){}",
                message.id.get(..8).unwrap_or_default(),
                sanitize_name(&file.name),
                human_size(file.size),
                if fetched { " fetched" } else { "" }
            ));
        }
    }
    Ok(())
}

/// Fetches the files among `messages` that are under the profile's
/// auto-fetch size; a failure is reported, never fatal (`sotto file save`
/// retries from where it stopped).
pub(crate) async fn auto_fetch(
    app: &mut App,
    out: &Output,
    messages: &[Message],
) -> anyhow::Result<()> {
    let limit = app.auto_fetch_bytes()?;
    if limit == 0 {
        return Ok(());
    }
    for message in messages {
        let Some(file) = &message.file else { continue };
        if message.from_me || file.size > limit {
            continue;
        }
        let Ok(id) = sotto_core::parse_message_id(&message.id) else {
            continue;
        };
        let mut quiet = |_| {};
        if let Err(error) = app.fetch_file(&id, &mut quiet).await {
            out.err(format_args!(
                "sotto: could not fetch file {}: {error}; `sotto file save {}` retries",
                message.id.get(..8).unwrap_or_default(),
                message.id.get(..8).unwrap_or_default()
            ));
        }
    }
    Ok(())
}

/// The command line the owner runs for another process, with relative
/// file paths made absolute (the owner's working directory is not the
/// caller's).
pub(crate) fn absolute_argv(mut argv: Vec<String>) -> Vec<String> {
    let absolute = |path: &str| {
        std::path::absolute(path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.to_owned())
    };
    // `file save ID [PATH]` and `file thumbnail ID PATH` name a path.
    let verb = argv
        .windows(2)
        .find(|w| w[0] == "file" && (w[1] == "save" || w[1] == "thumbnail"))
        .map(|w| w[1].clone());
    let mut i = 0;
    while i < argv.len() {
        if argv[i] == "--file" && i + 1 < argv.len() {
            argv[i + 1] = absolute(&argv[i + 1]);
            i += 2;
            continue;
        }
        if let Some(path) = argv[i].strip_prefix("--file=") {
            argv[i] = format!("--file={}", absolute(path));
        }
        i += 1;
    }
    if let Some(verb) = verb
        && let Some(at) = argv.iter().position(|a| *a == verb)
    {
        // The second positional after the verb.
        let positional: Vec<usize> = (at + 1..argv.len())
            .filter(|&j| !argv[j].starts_with('-'))
            .collect();
        if let Some(&j) = positional.get(1) {
            argv[j] = absolute(&argv[j]);
        }
    }
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_made_absolute_for_the_owner() {
        let cwd = std::env::current_dir().unwrap_or_default();
        let argv = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let got = absolute_argv(argv(&["send", "bob", "--file", "a.txt"]));
        assert_eq!(got[3], cwd.join("a.txt").display().to_string());
        let got = absolute_argv(argv(&["file", "save", "0123abcd", "out"]));
        assert_eq!(got[3], cwd.join("out").display().to_string());
        assert_eq!(got[2], "0123abcd");
        let got = absolute_argv(argv(&["file", "thumbnail", "0123abcd", "t.jpg"]));
        assert_eq!(got[3], cwd.join("t.jpg").display().to_string());
        let got = absolute_argv(argv(&["--json", "file", "save", "0123abcd"]));
        assert_eq!(got, argv(&["--json", "file", "save", "0123abcd"]));
        let got = absolute_argv(argv(&["send", "bob", "hi"]));
        assert_eq!(got, argv(&["send", "bob", "hi"]));
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(10 * 1024 * 1024), "10.0 MiB");
    }
}
