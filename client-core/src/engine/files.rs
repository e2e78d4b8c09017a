//! File messages (issue 21): queueing one to a member or a group after
//! its chunks are uploaded, filing a received one, and the store record
//! that keeps each file's key (`Seen`: `"file/" || message ID` → the
//! encoded `File`, sealed like every store value). History entries carry
//! only a [`crate::FileRef`], never the key.

use sotto_proto::Message as _;
use sotto_proto::client::{Payload, group_payload, payload};

use super::{Engine, EngineError, Message, MessageId, Status, corrupt};
use crate::files::FileInfo;
use crate::records::{self, ActionError, Content};
use crate::{Batch, Tree};

const FILE_PREFIX: &[u8] = b"file/";
const AUTO_FETCH: &[u8] = b"files/auto-fetch-bytes";

fn file_key(id: &[u8]) -> Vec<u8> {
    [FILE_PREFIX, id].concat()
}

impl Engine {
    /// Keeps the file message `info` of message `id` in `batch`.
    pub(crate) fn put_file(&self, id: &[u8], info: &FileInfo, batch: &mut Batch) {
        batch.put(
            Tree::Seen,
            file_key(id),
            &zeroize::Zeroizing::new(info.to_proto().encode_to_vec()),
        );
    }

    /// Forgets the key of the file message `id` carried (deleted for
    /// everyone), in `batch`.
    pub(crate) fn forget_file(&self, id: &[u8], batch: &mut Batch) {
        batch.delete(Tree::Seen, file_key(id));
    }

    /// Keeps the file message `info` of message `id` (an upload resumed
    /// after its message was queued but before its key was kept).
    pub(crate) fn keep_file(&mut self, id: &[u8], info: &FileInfo) -> Result<(), EngineError> {
        let mut batch = Batch::new();
        self.put_file(id, info, &mut batch);
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(())
    }

    /// The file message `id` carried, if it carried one.
    pub fn file_info(&self, id: &MessageId) -> Result<Option<FileInfo>, EngineError> {
        self.store
            .get(Tree::Seen, &file_key(id))?
            .map(|bytes| FileInfo::decode(&bytes).map_err(corrupt))
            .transpose()
    }

    /// Queues the file message `info` (its chunks already uploaded) to
    /// every device of `peer` and my other devices. Returns its ID.
    pub fn queue_file(
        &mut self,
        peer: &str,
        info: &FileInfo,
        now_ms: u64,
    ) -> Result<MessageId, EngineError> {
        let content = Content::File(Box::new(info.clone()));
        let payload = Payload {
            sent_at: now_ms,
            body: content.to_proto().map(payload::Body::Content),
            ..Payload::default()
        };
        let mut message = Message::plain(
            String::new(),
            peer.to_owned(),
            self.device.handle.clone(),
            true,
            info.caption.clone(),
            now_ms,
            Status::Queued,
            None,
        );
        message.file = Some(info.summary());
        let id = self.queue(peer, payload, Some(&message))?;
        let mut batch = Batch::new();
        self.put_file(&id, info, &mut batch);
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(id)
    }

    /// Queues the file message `info` to `group`: one put, whatever the
    /// group's size. Returns its ID.
    pub fn queue_group_file(
        &mut self,
        group: &str,
        info: &FileInfo,
        now_ms: u64,
    ) -> Result<MessageId, EngineError> {
        let Some(content) = Content::File(Box::new(info.clone())).to_proto() else {
            return Err(ActionError::UnknownMessage(String::new()).into());
        };
        let id = self.queue_group_payload(
            group,
            group_payload::Body::Content(content),
            Some((&info.caption, None, 0)),
            now_ms,
        )?;
        let mut batch = Batch::new();
        self.put_file(&id, info, &mut batch);
        // The entry was filed as a text: it gets its file.
        if let Some(target) = self.find_message(&id)?
            && let Some(value) = self.store.get(Tree::History, &target.key)?
        {
            let mut stored = records::decode_message(&value).map_err(corrupt)?;
            stored.file = Some(info.summary());
            batch.put(Tree::History, target.key, &records::encode_message(&stored));
        }
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(id)
    }

    /// Files under this many bytes are fetched as they arrive (0: none).
    pub fn auto_fetch_bytes(&self) -> Result<u64, EngineError> {
        Ok(match self.store.get(Tree::Meta, AUTO_FETCH)? {
            Some(bytes) => {
                let bytes: [u8; 8] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt("auto-fetch setting"))?;
                u64::from_be_bytes(bytes)
            }
            None => 0,
        })
    }

    /// Sets [`Engine::auto_fetch_bytes`].
    pub fn set_auto_fetch_bytes(&mut self, bytes: u64) -> Result<(), EngineError> {
        self.store
            .put(Tree::Meta, AUTO_FETCH, &bytes.to_be_bytes())?;
        self.store.flush()?;
        Ok(())
    }
}
