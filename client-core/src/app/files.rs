//! Files on the [`App`] (issue 21): send one to a member or a group
//! (upload once, then the file message like a text), fetch and save a
//! received one, list them.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{App, AppError, Sent};
use crate::MessageId;
use crate::engine::Message;
use crate::files::{
    self, FileCache, FileError, FileInfo, FileKey, PendingUpload, Progress, Resume, UploadTarget,
    sanitize_name,
};

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
    /// A small image shown inline (empty: none; [`crate::file_thumbnail`]
    /// makes one of a PNG or JPEG image).
    pub thumbnail: Vec<u8>,
    /// The file on disk `reader` reads: with it, an interrupted upload is
    /// recorded and resumed (see [`App::send_file`]).
    pub source: Option<PathBuf>,
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
    ///
    /// With [`OutgoingFile::source`] the upload is recorded as it goes:
    /// if it is interrupted (this process killed, the relay restarting,
    /// the network gone), sending the same unchanged file to the same
    /// place again, or the next [`App::sync`], goes on from where it
    /// stopped, and the message is sent once.
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
        let target = match to {
            FileTarget::Member(handle) => UploadTarget::Member(handle.clone()),
            FileTarget::Group(group) => UploadTarget::Group(group.clone()),
        };
        // Where the bytes come from on disk, as a record can name it.
        let source = match &file.source {
            Some(path) => {
                let path = std::path::absolute(path).map_err(FileError::from)?;
                let modified = std::fs::metadata(&path)
                    .map(|m| files::modified_ns(&m))
                    .unwrap_or(0);
                Some((path, modified))
            }
            None => None,
        };
        let earlier =
            match &source {
                Some((path, modified)) => PendingUpload::all(self.store.as_ref())?
                    .into_iter()
                    .find(|r| {
                        r.target == target
                            && r.path == *path
                            && r.modified_ns == *modified
                            && r.info.size == file.size
                    }),
                None => None,
            };
        let resumed = earlier.is_some();
        let mut record = match earlier {
            Some(record) => record,
            None => PendingUpload {
                id: crate::records::random_id(),
                target,
                path: source.as_ref().map(|(p, _)| p.clone()).unwrap_or_default(),
                modified_ns: source.as_ref().map_or(0, |(_, m)| *m),
                info: files::blank_info(FileKey::random()?, file.size),
                stored: Resume::default(),
                sent_at: 0,
            },
        };
        // What this send says wins over what an earlier one said.
        record.info.name = file.name;
        record.info.media_type = file.media_type;
        record.info.caption = file.caption;
        record.info.thumbnail = file.thumbnail;
        let keep = source.is_some();
        if keep {
            record.save(self.store.as_ref())?;
        }
        self.run_upload(record, file.reader, keep, resumed, progress)
            .await
    }

    /// Uploads what `record` has not stored yet (from `reader`, read from
    /// its start), then queues its message once and delivers it. `keep`:
    /// the record is in the store and moves along; `resumed`: an earlier
    /// attempt may have stored chunks, or queued the message.
    async fn run_upload(
        &mut self,
        mut record: PendingUpload,
        reader: &mut (dyn Read + Send),
        keep: bool,
        resumed: bool,
        progress: Progress<'_>,
    ) -> Result<Sent, AppError> {
        // An earlier attempt may have queued the message before it stopped.
        let maybe_queued = resumed && record.sent_at != 0;
        if record.sent_at == 0 {
            let conn = self.client.connect().await?;
            let uploaded = self
                .upload_chunks(&conn, &mut record, reader, keep, resumed, progress)
                .await;
            conn.close().await;
            uploaded?;
            record.sent_at = (self.clock)();
            if keep {
                record.save(self.store.as_ref())?;
            }
        }
        let info = &record.info;
        let already = if maybe_queued {
            self.queued_earlier(&record)?
        } else {
            None
        };
        let id = match (already, &record.target) {
            (Some(id), _) => id,
            (None, UploadTarget::Member(handle)) => {
                self.client
                    .engine_mut()
                    .queue_file(handle, info, record.sent_at)?
            }
            (None, UploadTarget::Group(group)) => {
                self.client
                    .engine_mut()
                    .queue_group_file(group, info, record.sent_at)?
            }
        };
        if keep {
            record.remove(self.store.as_ref())?;
        }
        let delivered = self.deliver_or_queue().await?;
        Ok(Sent { id, delivered })
    }

    /// Puts the chunks `record` has not stored yet on `conn`, and fills
    /// in its file message (hash, expiry).
    async fn upload_chunks(
        &mut self,
        conn: &crate::RelayConnection,
        record: &mut PendingUpload,
        reader: &mut (dyn Read + Send),
        keep: bool,
        resumed: bool,
        progress: Progress<'_>,
    ) -> Result<(), AppError> {
        if let UploadTarget::Member(handle) = &record.target {
            let handle = handle.clone();
            self.roster_check(conn, &handle, true).await?;
        }
        let size = record.info.size;
        files::check_size(conn, size)?;
        let mut from = Resume::default();
        if resumed {
            match files::resume_point(conn, &record.info.key, size, record.stored).await {
                Ok(at) => from = at,
                Err(
                    FileError::BadChunk { .. }
                    | FileError::BadLayout { .. }
                    | FileError::CountMismatch { .. }
                    | FileError::ForeignChunk { .. },
                ) => {
                    // The mailbox cannot be continued: its blobs go, and
                    // the file goes afresh under a new key.
                    files::delete(conn, &record.info).await?;
                    record.info.key = FileKey::random()?;
                    record.stored = Resume::default();
                    if keep {
                        record.save(self.store.as_ref())?;
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
        let store = self.store.clone();
        let mut moving = record.clone();
        let mut recorded = from.chunks;
        let mut confirmed = move |chunks: u64, seq: u64| {
            if keep && chunks >= recorded + files::RECORD_EVERY {
                moving.stored = Resume { chunks, seq };
                // Only progress: if it cannot be written, a resumed upload
                // reads a little more back from the relay.
                let _ = moving.save(store.as_ref());
                recorded = chunks;
            }
        };
        let sha256 = files::put_chunks(
            conn,
            &record.info.key,
            reader,
            size,
            from,
            0,
            &mut confirmed,
            progress,
        )
        .await?;
        let done = files::uploaded_info(
            conn,
            record.info.key.clone(),
            size,
            sha256,
            0,
            Self::now_secs(&self.clock),
        );
        record.info.sha256 = done.sha256;
        record.info.expires_at = done.expires_at;
        record.stored = Resume {
            chunks: done.chunks,
            seq: 0,
        };
        Ok(())
    }

    /// The message an earlier attempt of `record` queued, if it got that
    /// far before it stopped (same `sent_at` and hash, mine).
    fn queued_earlier(&mut self, record: &PendingUpload) -> Result<Option<MessageId>, AppError> {
        let engine = self.client.engine();
        let history = match &record.target {
            UploadTarget::Member(handle) => engine.history(handle)?,
            UploadTarget::Group(group) => engine.group_history(group)?,
        };
        let sha256 = hex::encode(record.info.sha256);
        let Some(found) = history.iter().find(|m| {
            m.from_me
                && m.sent_at == record.sent_at
                && m.file.as_ref().is_some_and(|f| f.sha256 == sha256)
        }) else {
            return Ok(None);
        };
        let id = crate::parse_message_id(&found.id).map_err(crate::EngineError::from)?;
        if engine.file_info(&id)?.is_none() {
            self.client.engine_mut().keep_file(&id, &record.info)?;
        }
        Ok(Some(id))
    }

    /// Goes on with every upload an earlier run left unfinished (see
    /// [`App::send_file`]); [`App::sync`] calls it. An upload whose file is
    /// gone or changed, or whose conversation is gone, is given up (its
    /// chunks deleted from the relay); a network failure leaves it for
    /// next time. Returns the messages sent.
    pub async fn resume_uploads(&mut self) -> Result<Vec<Sent>, AppError> {
        let mut sent = Vec::new();
        for record in PendingUpload::all(self.store.as_ref())? {
            let mut empty = std::io::empty();
            let opened = if record.sent_at == 0 {
                match std::fs::File::open(&record.path) {
                    Ok(file) => match file.metadata() {
                        Ok(meta)
                            if meta.len() == record.info.size
                                && files::modified_ns(&meta) == record.modified_ns =>
                        {
                            Some(file)
                        }
                        _ => None,
                    },
                    Err(_) => None,
                }
            } else {
                None
            };
            let mut opened = opened;
            let reader: &mut (dyn Read + Send) = match opened.as_mut() {
                Some(file) => file,
                None if record.sent_at != 0 => &mut empty,
                None => {
                    self.give_up(&record).await?;
                    continue;
                }
            };
            let mut quiet = |_| {};
            match self
                .run_upload(record.clone(), reader, true, true, &mut quiet)
                .await
            {
                Ok(done) => sent.push(done),
                Err(error @ (AppError::Net(_) | AppError::File(FileError::Net(_)))) => {
                    return Err(error);
                }
                Err(AppError::File(FileError::Io(_))) => return Ok(sent),
                Err(_) => self.give_up(&record).await?,
            }
        }
        Ok(sent)
    }

    /// Drops an upload that cannot go on, and its chunks on the relay.
    async fn give_up(&mut self, record: &PendingUpload) -> Result<(), AppError> {
        tracing::debug!("an interrupted upload cannot go on; its chunks are deleted");
        if record.stored.chunks > 0 {
            let conn = self.client.connect().await?;
            let deleted = files::delete(&conn, &record.info).await;
            conn.close().await;
            deleted?;
        }
        record.remove(self.store.as_ref())?;
        Ok(())
    }

    /// Uploads this device started and has not finished (to show them).
    pub fn pending_uploads(&self) -> Result<Vec<PendingUpload>, AppError> {
        Ok(PendingUpload::all(self.store.as_ref())?)
    }

    /// The small JPEG that came inline with file `id` (`None`: it came
    /// without one).
    pub fn file_thumbnail(&self, id: &MessageId) -> Result<Option<Vec<u8>>, AppError> {
        let info = self.file_info(id)?;
        Ok((!info.thumbnail.is_empty()).then(|| info.thumbnail.clone()))
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
