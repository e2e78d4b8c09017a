//! Files on the [`App`] (issue 21): send one to a member or a group
//! (upload once, then the file message like a text), fetch and save a
//! received one, list them.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{App, AppError, Sent};
use crate::MessageId;
use crate::engine::Message;
use crate::files::{self, FileCache, FileError, FileInfo, Progress, sanitize_name};

/// Where a file goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileTarget {
    /// Every device of a member (and my other devices).
    Member(String),
    /// A group: one upload, one message, whatever its size.
    Group(String),
}

/// A file to send: its bytes come from `reader`, `size` long.
pub struct OutgoingFile<'a> {
    /// The bytes.
    pub reader: &'a mut (dyn Read + Send),
    /// How many.
    pub size: u64,
    /// The name receivers see.
    pub name: String,
    /// The media type (empty: unknown).
    pub media_type: String,
    /// Text sent with it.
    pub caption: String,
    /// A small image shown inline (empty: none).
    pub thumbnail: Vec<u8>,
}

impl std::fmt::Debug for OutgoingFile<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingFile")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl App {
    /// The cache of downloaded file chunks (`<home>/files`).
    pub fn file_cache(&self) -> FileCache {
        FileCache::new(self.home.join("files"))
    }

    /// Uploads `file` once to a fresh file mailbox, then sends the file
    /// message to `to` as a text would go (1:1: to every device of the
    /// member, checked against the roster and their signed device list
    /// first; group: one put). A file over the relay's limit is refused
    /// before anything is uploaded.
    pub async fn send_file(
        &mut self,
        to: &FileTarget,
        file: OutgoingFile<'_>,
        progress: Progress<'_>,
    ) -> Result<Sent, AppError> {
        self.require_approved()?;
        if file.name.len() > files::MAX_NAME
            || file.media_type.len() > files::MAX_MEDIA_TYPE
            || file.caption.len() > files::MAX_CAPTION
            || file.thumbnail.len() > files::MAX_THUMBNAIL
        {
            return Err(
                FileError::BadMessage("a name, type, caption or thumbnail is too long").into(),
            );
        }
        match to {
            FileTarget::Member(handle) => {
                if *handle == self.membership.handle {
                    return Err(AppError::Myself);
                }
                self.ensure_contact(handle).await?;
            }
            FileTarget::Group(group) => self.resolve_group_members(group).await?,
        }
        let conn = self.client.connect().await?;
        let uploaded = async {
            if let FileTarget::Member(handle) = to {
                self.roster_check(&conn, handle, true).await?;
            }
            let now = Self::now_secs(&self.clock);
            Ok::<_, AppError>(files::upload(&conn, file.reader, file.size, 0, now, progress).await?)
        }
        .await;
        conn.close().await;
        let mut info = uploaded?;
        info.name = file.name;
        info.media_type = file.media_type;
        info.caption = file.caption;
        info.thumbnail = file.thumbnail;
        let now = (self.clock)();
        let engine = self.client.engine_mut();
        let id = match to {
            FileTarget::Member(handle) => engine.queue_file(handle, &info, now)?,
            FileTarget::Group(group) => engine.queue_group_file(group, &info, now)?,
        };
        let delivered = self.deliver_or_queue().await?;
        Ok(Sent { id, delivered })
    }

    /// The file message `id` carried.
    pub fn file_info(&self, id: &MessageId) -> Result<FileInfo, AppError> {
        self.client.engine().file_info(id)?.ok_or_else(|| {
            crate::EngineError::from(crate::ActionError::UnknownMessage(hex::encode(id))).into()
        })
    }

    /// Fetches the chunks of file `id` into the cache (resuming where an
    /// earlier fetch stopped) and checks its hash.
    pub async fn fetch_file(
        &mut self,
        id: &MessageId,
        progress: Progress<'_>,
    ) -> Result<(), AppError> {
        let info = self.file_info(id)?;
        let cache = self.file_cache();
        if cache.state(&hex::encode(id))?.complete {
            return Ok(());
        }
        let conn = self.client.connect().await?;
        let fetched = files::download(&conn, &cache, &hex::encode(id), &info, progress).await;
        conn.close().await;
        Ok(fetched?)
    }

    /// Fetches file `id` if needed and writes it to `dest`: into `dest`
    /// under the file's sanitized name if `dest` is a directory (the
    /// current one if `None`), else to `dest` itself. Never overwrites;
    /// nothing is written there unless the hash matches. Returns the path.
    pub async fn save_file(
        &mut self,
        id: &MessageId,
        dest: Option<&Path>,
        progress: Progress<'_>,
    ) -> Result<PathBuf, AppError> {
        self.fetch_file(id, progress).await?;
        let info = self.file_info(id)?;
        let dest = save_path(dest, &info.name);
        files::save(&self.file_cache(), &hex::encode(id), &info, &dest)?;
        Ok(dest)
    }

    /// Deletes the chunks of file `id`, one I sent, from the relay before
    /// their TTL: members who have not fetched it can no longer. Returns
    /// how many blobs the relay deleted.
    pub async fn delete_file(&mut self, id: &MessageId) -> Result<u32, AppError> {
        let info = self.file_info(id)?;
        let mine = self
            .client
            .engine()
            .find_message(id)?
            .is_some_and(|target| target.message.from_me);
        if !mine {
            return Err(crate::EngineError::from(crate::ActionError::NotAuthor).into());
        }
        let conn = self.client.connect().await?;
        let deleted = files::delete(&conn, &info).await;
        conn.close().await;
        Ok(deleted?)
    }

    /// Messages that carry files: with `handle`, a group (`group`), or
    /// everywhere when both are `None`; oldest first.
    pub fn files(
        &self,
        handle: Option<&str>,
        group: Option<&str>,
    ) -> Result<Vec<Message>, AppError> {
        let engine = self.client.engine();
        let mut all = Vec::new();
        match (handle, group) {
            (Some(handle), _) => all.extend(engine.history(handle)?),
            (None, Some(group)) => all.extend(engine.group_history(group)?),
            (None, None) => {
                for handle in engine.contacts() {
                    all.extend(engine.history(&handle)?);
                }
                for group in engine.groups() {
                    all.extend(engine.group_history(&group.id)?);
                }
            }
        }
        all.retain(|m| m.file.is_some() && !m.deleted);
        all.sort_by_key(|m| m.sent_at);
        Ok(all)
    }

    /// Files under this many bytes are fetched as they arrive (0: off).
    pub fn auto_fetch_bytes(&self) -> Result<u64, AppError> {
        Ok(self.client.engine().auto_fetch_bytes()?)
    }

    /// Sets [`App::auto_fetch_bytes`].
    pub fn set_auto_fetch_bytes(&mut self, bytes: u64) -> Result<(), AppError> {
        Ok(self.client.engine_mut().set_auto_fetch_bytes(bytes)?)
    }
}

/// Where `save_file` writes a file named `name`: inside `dest` when it is
/// a directory (or the current directory), under the sanitized name.
pub fn save_path(dest: Option<&Path>, name: &str) -> PathBuf {
    match dest {
        None => PathBuf::from(".").join(sanitize_name(name)),
        Some(dir) if dir.is_dir() => dir.join(sanitize_name(name)),
        Some(path) => path.to_owned(),
    }
}
