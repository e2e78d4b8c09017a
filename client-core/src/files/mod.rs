//! Files and images (issue 21, DESIGN §8 "Files", PROTOCOL.md "Files").
//!
//! A file travels as ordinary 64 KiB blobs in a **file mailbox** of its
//! own, encrypted under a fresh random **file key**; the message that
//! carries the file (`Content.file`, inside Olm or Megolm) holds the key
//! and what a reader checks the download against.
//!
//! - `mod.rs` (here): the file key and what it derives (chunk key, the
//!   mailbox's signing key), the chunk codec (ChaCha20-Poly1305 with the
//!   STREAM construction's nonce layout: chunk index and final flag, both
//!   also in the associated data), Padmé padding of the chunk count, the
//!   checked [`FileInfo`] of a file message, and name sanitizing.
//! - `transfer.rs`: upload from a reader (resumable from what the relay
//!   holds), resumable download into a local cache of the encrypted
//!   blobs, and save (decrypt, hash-check, rename).
//! - `upload.rs`: the store record of an upload in progress, so that one
//!   interrupted goes on where it stopped and its message is sent once.
//! - `thumbnail.rs`: the small JPEG sent inline with a PNG or JPEG image.
//!
//! Memory stays flat: one chunk (plus a window of puts in flight) at a
//! time, whatever the file's size.

mod thumbnail;
mod transfer;
mod upload;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use ed25519_dalek::{Signer as _, SigningKey};
use hkdf::Hkdf;
use sha2::Sha256;
use sotto_proto::client as proto;
use sotto_proto::{Bucket, MailboxId};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

pub use thumbnail::{THUMBNAIL_SIDE, thumbnail};
pub use transfer::{
    FileCache, Progress, Resume, TransferState, delete, download, max_file_size, resume_point,
    save, upload,
};
pub(crate) use transfer::{blank_info, check_size, put_chunks, uploaded_info};
pub use upload::{PendingUpload, UploadTarget};
pub(crate) use upload::{RECORD_EVERY, modified_ns};

/// The AEAD key of a file's chunks: `HKDF-SHA256(file key, info)`.
pub const CHUNK_KEY_INFO: &[u8] = b"sotto/file-chunk-key/v1";
/// The seed of the file mailbox's ed25519 key: `HKDF-SHA256(file key, info)`.
pub const MAILBOX_KEY_INFO: &[u8] = b"sotto/file-mailbox/v1";
/// Prefix of every chunk's associated data.
pub const CHUNK_AAD: &[u8] = b"sotto/file-chunk/v1";

/// Every file blob is exactly this big: the largest bucket.
pub const BLOB_LEN: usize = Bucket::K64.size();
const TAG_LEN: usize = 16;
const LEN_PREFIX: usize = 4;
/// File bytes per chunk: a 64 KiB blob less the tag and the length prefix.
pub const CHUNK_DATA: usize = BLOB_LEN - TAG_LEN - LEN_PREFIX;
/// The largest inline thumbnail, in bytes (it rides in the message, which
/// must fit one 64 KiB blob with its Olm or Megolm framing).
pub const MAX_THUMBNAIL: usize = 16 * 1024;
/// The longest file name kept, in bytes.
pub const MAX_NAME: usize = 255;
/// The longest media type kept, in bytes.
pub const MAX_MEDIA_TYPE: usize = 127;
/// The longest caption kept, in bytes.
pub const MAX_CAPTION: usize = 16 * 1024;

/// A file's 32-byte random key. Zeroized on drop; its `Debug` prints
/// nothing of it.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct FileKey([u8; 32]);

impl std::fmt::Debug for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileKey(..)")
    }
}

impl FileKey {
    /// A fresh random key.
    pub fn random() -> Result<Self, FileError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| FileError::Io(format!("randomness: {e}")))?;
        Ok(Self(key))
    }

    /// The key from 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes (to put into the file message).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn derive(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, &self.0)
            .expand(info, out.as_mut())
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 output"));
        out
    }

    /// The chunk cipher.
    fn cipher(&self) -> ChaCha20Poly1305 {
        let key = self.derive(CHUNK_KEY_INFO);
        ChaCha20Poly1305::new((&*key).into())
    }

    /// The signer that owns the file's mailbox.
    pub fn mailbox(&self) -> FileMailbox {
        FileMailbox(SigningKey::from_bytes(&self.derive(MAILBOX_KEY_INFO)))
    }
}

/// The owner key of a file mailbox: whoever holds the file key may fetch
/// (and, the sender, delete) its blobs. `mailbox = SHA-256("sotto/mailbox/v1"
/// || public key)`, as for any mailbox; it never rotates.
pub struct FileMailbox(SigningKey);

impl FileMailbox {
    /// The mailbox ID.
    pub fn id(&self) -> MailboxId {
        MailboxId::for_key_bytes(self.0.verifying_key().as_bytes())
    }
}

impl crate::net::MailboxSigner for FileMailbox {
    fn mailbox_id(&self) -> MailboxId {
        self.id()
    }

    fn blinded_key(&self) -> [u8; 32] {
        *self.0.verifying_key().as_bytes()
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

/// Why a file could not be sent, fetched or saved. Nothing is written to
/// the destination path on any of them; a partial download is kept.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Bigger than the relay takes in one mailbox.
    #[error(
        "the file is {size} bytes; this relay takes files of at most {limit} bytes (its per-mailbox quota)"
    )]
    TooBig {
        /// The file's size.
        size: u64,
        /// The largest file the relay's limits allow.
        limit: u64,
    },
    /// The reader gave another number of bytes than announced.
    #[error("the file changed while it was read ({expected} bytes expected, {found} read)")]
    SizeChanged {
        /// Bytes announced.
        expected: u64,
        /// Bytes read.
        found: u64,
    },
    /// A chunk fails its authentication: changed on the way, or put into
    /// the file mailbox by someone without the file key.
    #[error(
        "chunk {index} of the file does not decrypt: it was corrupted, or written by someone else"
    )]
    BadChunk {
        /// The chunk's index.
        index: u64,
    },
    /// The mailbox holds more chunks than the message says.
    #[error(
        "the file's mailbox holds more than the {count} chunks its message names: someone else wrote into it"
    )]
    ForeignChunk {
        /// The chunk count of the message.
        count: u64,
    },
    /// The chunks end at another place than the message's chunk count.
    #[error("the file has another number of chunks than its message says ({count})")]
    CountMismatch {
        /// The chunk count of the message.
        count: u64,
    },
    /// A chunk decrypts but has the wrong length for its place.
    #[error("chunk {index} of the file has the wrong length for the file's size")]
    BadLayout {
        /// The chunk's index.
        index: u64,
    },
    /// Fewer chunks on the relay than the message says.
    #[error(
        "only {have} of the file's {count} chunks are on the relay (not uploaded yet, or expired); try again later"
    )]
    Missing {
        /// Chunks received.
        have: u64,
        /// The chunk count of the message.
        count: u64,
    },
    /// The file's SHA-256 is not the one its message names.
    #[error("the file's SHA-256 does not match its message; nothing was saved")]
    HashMismatch,
    /// A file message breaks the format.
    #[error("bad file message: {0}")]
    BadMessage(&'static str),
    /// The file message came without a thumbnail.
    #[error("the file came without a thumbnail (only PNG and JPEG images have one)")]
    NoThumbnail,
    /// The destination exists.
    #[error("{0} exists; choose another path")]
    Exists(String),
    /// Local I/O failed.
    #[error("file I/O: {0}")]
    Io(String),
    /// The relay connection failed or refused.
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
}

impl From<std::io::Error> for FileError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error.to_string())
    }
}

/// Padmé padding (Nikitin et al., PETS 2019) of a count: rounds `n` up
/// so that only O(log log n) bits of it are left to learn.
pub fn padme(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let e = 63 - u64::from(n.leading_zeros());
    let s = 64 - u64::from(e.leading_zeros());
    let last_bits = e - s;
    let mask = (1u64 << last_bits) - 1;
    (n + mask) & !mask
}

/// The chunks a file of `size` bytes has before padding (at least one).
pub fn real_chunks(size: u64) -> u64 {
    size.div_ceil(CHUNK_DATA as u64).max(1)
}

/// The chunks a file of `size` bytes is uploaded as: the real ones padded
/// with empty dummy chunks to [`padme`] of their count.
pub fn padded_chunks(size: u64) -> u64 {
    padme(real_chunks(size))
}

/// The file bytes chunk `index` of a file of `size` bytes holds.
pub fn chunk_len(size: u64, index: u64) -> usize {
    let start = index.saturating_mul(CHUNK_DATA as u64);
    size.saturating_sub(start).min(CHUNK_DATA as u64) as usize
}

fn nonce(index: u64, last: bool) -> Result<Nonce, FileError> {
    // STREAM (big-endian 32-bit counter, last-block flag); the key is
    // fresh per file, so the nonce prefix is zero.
    let counter = u32::try_from(index).map_err(|_| FileError::BadMessage("chunk count"))?;
    let mut nonce = Nonce::default();
    nonce[7..11].copy_from_slice(&counter.to_be_bytes());
    nonce[11] = u8::from(last);
    Ok(nonce)
}

fn aad(index: u64, last: bool) -> [u8; CHUNK_AAD.len() + 9] {
    let mut aad = [0u8; CHUNK_AAD.len() + 9];
    aad[..CHUNK_AAD.len()].copy_from_slice(CHUNK_AAD);
    aad[CHUNK_AAD.len()..CHUNK_AAD.len() + 8].copy_from_slice(&index.to_be_bytes());
    aad[CHUNK_AAD.len() + 8] = u8::from(last);
    aad
}

/// Encrypts chunk `index` (`data` at most [`CHUNK_DATA`] bytes; the last
/// chunk of the padded sequence has `last` set) into one 64 KiB blob.
pub fn seal_chunk(
    key: &FileKey,
    index: u64,
    last: bool,
    data: &[u8],
) -> Result<Vec<u8>, FileError> {
    if data.len() > CHUNK_DATA {
        return Err(FileError::BadLayout { index });
    }
    let mut blob = vec![0u8; BLOB_LEN];
    let (body, tag_out) = blob.split_at_mut(BLOB_LEN - TAG_LEN);
    body[..LEN_PREFIX].copy_from_slice(&(data.len() as u32).to_be_bytes());
    body[LEN_PREFIX..LEN_PREFIX + data.len()].copy_from_slice(data);
    let tag = key
        .cipher()
        .encrypt_inout_detached(&nonce(index, last)?, &aad(index, last), body.into())
        .map_err(|_| FileError::BadLayout { index })?;
    tag_out.copy_from_slice(&tag);
    Ok(blob)
}

/// Decrypts chunk `index` of a blob. Returns the file bytes it holds.
pub fn open_chunk(
    key: &FileKey,
    index: u64,
    last: bool,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, FileError> {
    if blob.len() != BLOB_LEN {
        return Err(FileError::BadChunk { index });
    }
    let tag =
        Tag::try_from(&blob[BLOB_LEN - TAG_LEN..]).map_err(|_| FileError::BadChunk { index })?;
    let mut body = Zeroizing::new(blob[..BLOB_LEN - TAG_LEN].to_vec());
    key.cipher()
        .decrypt_inout_detached(
            &nonce(index, last)?,
            &aad(index, last),
            body.as_mut_slice().into(),
            &tag,
        )
        .map_err(|_| FileError::BadChunk { index })?;
    let mut len = [0u8; LEN_PREFIX];
    len.copy_from_slice(&body[..LEN_PREFIX]);
    let len = u32::from_be_bytes(len) as usize;
    if len > CHUNK_DATA || body[LEN_PREFIX + len..].iter().any(|&b| b != 0) {
        return Err(FileError::BadLayout { index });
    }
    body.copy_within(LEN_PREFIX..LEN_PREFIX + len, 0);
    body.truncate(len);
    Ok(body)
}

/// Opens chunk `index` of the file `info` describes and checks it sits
/// where it should: the final flag on the last chunk only, the length its
/// place in the file calls for (dummy chunks are empty). A chunk that
/// opens only with the other final flag means the count is wrong.
pub fn open_file_chunk(
    info: &FileInfo,
    index: u64,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, FileError> {
    if index >= info.chunks {
        return Err(FileError::ForeignChunk { count: info.chunks });
    }
    let last = index + 1 == info.chunks;
    let data = match open_chunk(&info.key, index, last, blob) {
        Ok(data) => data,
        Err(FileError::BadChunk { .. }) if open_chunk(&info.key, index, !last, blob).is_ok() => {
            return Err(FileError::CountMismatch { count: info.chunks });
        }
        Err(error) => return Err(error),
    };
    if data.len() != chunk_len(info.size, index) {
        return Err(FileError::BadLayout { index });
    }
    Ok(data)
}

/// A file message, checked: what the sender's `Content.file` carries.
#[derive(Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The file key.
    pub key: FileKey,
    /// Chunks in the mailbox, dummies included.
    pub chunks: u64,
    /// Plaintext size in bytes.
    pub size: u64,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
    /// The file's name as the sender gave it (sanitized on save).
    pub name: String,
    /// Its media type (`image/png`; empty: unknown).
    pub media_type: String,
    /// A small image shown inline (empty: none).
    pub thumbnail: Vec<u8>,
    /// The text sent with it.
    pub caption: String,
    /// When the relay drops its blobs (unix seconds; 0: unknown).
    pub expires_at: u64,
}

impl std::fmt::Debug for FileInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileInfo")
            .field("chunks", &self.chunks)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl FileInfo {
    /// The file mailbox.
    pub fn mailbox(&self) -> FileMailbox {
        self.key.mailbox()
    }

    /// Checks a wire file message: key and hash 32 bytes, the mailbox the
    /// key derives, a chunk count that is the padded count of the size,
    /// bounded name, media type, thumbnail and caption.
    pub fn from_proto(file: proto::File) -> Result<Self, FileError> {
        let key: [u8; 32] = file
            .key
            .as_ref()
            .try_into()
            .map_err(|_| FileError::BadMessage("the key is not 32 bytes"))?;
        let sha256: [u8; 32] = file
            .sha256
            .as_ref()
            .try_into()
            .map_err(|_| FileError::BadMessage("the hash is not 32 bytes"))?;
        let key = FileKey::from_bytes(key);
        if file.mailbox_id.as_ref() != key.mailbox().id().as_bytes() {
            return Err(FileError::BadMessage("the mailbox is not the key's"));
        }
        if file.chunks != padded_chunks(file.size) {
            return Err(FileError::CountMismatch { count: file.chunks });
        }
        if file.name.len() > MAX_NAME
            || file.media_type.len() > MAX_MEDIA_TYPE
            || file.thumbnail.len() > MAX_THUMBNAIL
            || file.caption.len() > MAX_CAPTION
        {
            return Err(FileError::BadMessage("a field is too long"));
        }
        Ok(Self {
            key,
            chunks: file.chunks,
            size: file.size,
            sha256,
            name: file.name,
            media_type: file.media_type,
            thumbnail: file.thumbnail.to_vec(),
            caption: file.caption,
            expires_at: file.expires_at,
        })
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::File {
        proto::File {
            key: self.key.as_bytes().to_vec().into(),
            mailbox_id: self.mailbox().id().as_bytes().to_vec().into(),
            chunks: self.chunks,
            size: self.size,
            sha256: self.sha256.to_vec().into(),
            name: self.name.clone(),
            media_type: self.media_type.clone(),
            thumbnail: self.thumbnail.clone().into(),
            caption: self.caption.clone(),
            expires_at: self.expires_at,
        }
    }

    /// Decodes an encoded `File` (the fuzzed entry point, and the store's
    /// record of a received file).
    pub fn decode(bytes: &[u8]) -> Result<Self, FileError> {
        use sotto_proto::Message as _;
        let file = proto::File::decode(bytes).map_err(|_| FileError::BadMessage("no decode"))?;
        Self::from_proto(file)
    }

    /// What history and output show of it (no key).
    pub fn summary(&self) -> crate::records::FileRef {
        crate::records::FileRef {
            name: self.name.clone(),
            size: self.size,
            sha256: hex::encode(self.sha256),
            media_type: self.media_type.clone(),
            chunks: self.chunks,
            has_thumbnail: !self.thumbnail.is_empty(),
        }
    }
}

/// A file name safe to create in a directory: the last path component
/// only, no separators, `..`, control characters or leading dots, at
/// most [`MAX_NAME`] bytes (the extension kept), never empty.
pub fn sanitize_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.');
    let mut out = if trimmed.is_empty() || trimmed.chars().all(|c| c == '.' || c == '_') {
        "file".to_owned()
    } else {
        trimmed.to_owned()
    };
    if out.len() > MAX_NAME {
        let ext = out
            .rfind('.')
            .map(|at| out[at..].to_owned())
            .filter(|ext| ext.len() <= 16)
            .unwrap_or_default();
        let mut cut = MAX_NAME - ext.len();
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out = format!("{}{ext}", &out[..cut]);
    }
    out
}

#[cfg(test)]
mod tests;
