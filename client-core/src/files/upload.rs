//! Uploads in progress, kept in the store so that one interrupted (the
//! process killed, the relay restarting, the network gone) goes on from
//! where it stopped and its message is sent once.
//!
//! A record (`Meta`: `"files/upload/" || id`, sealed like every store
//! value, since it holds the file key) is written before the first put,
//! moved forward every [`RECORD_EVERY`] stored chunks, marked with the
//! message's `sent_at` just before the message is queued, and deleted
//! once it is. The relay is the truth about what was stored: a resumed
//! upload reads the file mailbox after the recorded cursor (the puts that
//! were in flight may have landed) and continues after the last chunk in
//! order.

use std::path::{Path, PathBuf};

use sotto_proto::Message as _;

use super::{FileError, FileInfo, Resume};
use crate::store::{Store, Tree};

const PREFIX: &[u8] = b"files/upload/";
const FORMAT: u8 = 1;

/// The record moves forward every this many stored chunks (4 MiB): a
/// resumed upload reads back at most that much, plus the puts in flight.
pub(crate) const RECORD_EVERY: u64 = 64;

/// Where an upload goes: a member's handle, or a group's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadTarget {
    /// Every device of a member.
    Member(String),
    /// A group.
    Group(String),
}

/// An upload whose message has not been queued yet.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The record's random ID.
    pub id: [u8; 16],
    /// Where the message goes.
    pub target: UploadTarget,
    /// The file read (absolute).
    pub path: PathBuf,
    /// Its length and modification time (ns since the epoch) when the
    /// upload started: a file changed since is uploaded afresh.
    pub modified_ns: u64,
    /// The file message being built: key, size, name, media type,
    /// caption, thumbnail (the hash is filled in at the end).
    pub info: FileInfo,
    /// How far the relay had stored it when last recorded.
    pub stored: Resume,
    /// The `sent_at` of its message, once it is being queued (0: not yet).
    pub sent_at: u64,
}

impl std::fmt::Debug for PendingUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingUpload")
            .field("size", &self.info.size)
            .field("stored", &self.stored)
            .finish_non_exhaustive()
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FileError> {
        if self.0.len() < n {
            return Err(FileError::BadMessage("truncated upload record"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, FileError> {
        let mut out = [0u8; 8];
        out.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(out))
    }

    fn bytes(&mut self) -> Result<&'a [u8], FileError> {
        let mut len = [0u8; 4];
        len.copy_from_slice(self.take(4)?);
        self.take(u32::from_be_bytes(len) as usize)
    }
}

#[cfg(unix)]
fn path_bytes(path: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt as _;
    path.as_os_str().as_bytes().to_vec()
}

#[cfg(not(unix))]
fn path_bytes(path: &Path) -> Vec<u8> {
    path.to_string_lossy().as_bytes().to_vec()
}

#[cfg(unix)]
fn path_from(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

#[cfg(not(unix))]
fn path_from(bytes: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
}

impl PendingUpload {
    /// The record's bytes (they hold the file key: the store seals them).
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(Vec::new());
        out.push(FORMAT);
        out.extend_from_slice(&self.id);
        let (kind, name) = match &self.target {
            UploadTarget::Member(handle) => (0u8, handle),
            UploadTarget::Group(group) => (1u8, group),
        };
        out.push(kind);
        put_bytes(&mut out, name.as_bytes());
        put_bytes(&mut out, &path_bytes(&self.path));
        for value in [
            self.modified_ns,
            self.stored.chunks,
            self.stored.seq,
            self.sent_at,
        ] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        put_bytes(&mut out, &self.info.to_proto().encode_to_vec());
        out
    }

    /// Reads a record back; every length is checked.
    pub fn decode(bytes: &[u8]) -> Result<Self, FileError> {
        let mut r = Cursor(bytes);
        if r.take(1)? != [FORMAT] {
            return Err(FileError::BadMessage("unknown upload record format"));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(r.take(16)?);
        let kind = r.take(1)?[0];
        let name = String::from_utf8(r.bytes()?.to_vec())
            .map_err(|_| FileError::BadMessage("upload target"))?;
        let target = match kind {
            0 => UploadTarget::Member(name),
            1 => UploadTarget::Group(name),
            _ => return Err(FileError::BadMessage("upload target kind")),
        };
        let path = path_from(r.bytes()?);
        let modified_ns = r.u64()?;
        let stored = Resume {
            chunks: r.u64()?,
            seq: r.u64()?,
        };
        let sent_at = r.u64()?;
        let info = FileInfo::decode(r.bytes()?)?;
        if !r.0.is_empty() {
            return Err(FileError::BadMessage("trailing bytes in upload record"));
        }
        Ok(Self {
            id,
            target,
            path,
            modified_ns,
            info,
            stored,
            sent_at,
        })
    }

    fn key(&self) -> Vec<u8> {
        [PREFIX, &self.id].concat()
    }

    /// Writes the record and flushes the store.
    pub fn save(&self, store: &dyn Store) -> Result<(), crate::StoreError> {
        store.put(Tree::Meta, &self.key(), &self.encode())?;
        store.flush()
    }

    /// Deletes the record (its message is queued, or it was given up).
    pub fn remove(&self, store: &dyn Store) -> Result<(), crate::StoreError> {
        store.delete(Tree::Meta, &self.key())?;
        store.flush()
    }

    /// Every upload in progress; a record that does not decode is
    /// dropped (it cannot be resumed anyway).
    pub fn all(store: &dyn Store) -> Result<Vec<Self>, crate::StoreError> {
        let mut out = Vec::new();
        for (key, value) in store.scan_prefix(Tree::Meta, PREFIX)? {
            match Self::decode(&value) {
                Ok(record) => out.push(record),
                Err(_) => store.delete(Tree::Meta, &key)?,
            }
        }
        Ok(out)
    }
}

/// The modification time of `metadata` in ns since the epoch (0 if the
/// platform has none).
pub(crate) fn modified_ns(metadata: &std::fs::Metadata) -> u64 {
    metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
