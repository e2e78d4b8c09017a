//! Moving a file's chunks: upload from a reader (from the start, or on
//! from what the relay already holds), resumable download into a cache
//! of the still-encrypted blobs, and save to a path after the hash
//! checked out.
//!
//! **The cache** (`<home>/files/`, 0700) holds, per file message ID,
//! `<id>.blobs` (the chunks exactly as fetched: ciphertext, 64 KiB each,
//! each checked against its index before it is appended) and
//! `<id>.state` (chunks kept, the relay cursor after the last one, and
//! whether the whole file was hash-checked), rewritten after every page
//! and synced with the blobs every [`SYNC_EVERY`] chunks and whenever the
//! download stops. An interrupted download (a crash, the relay
//! restarting, the network going away) resumes from the cursor: nothing
//! fetched twice, nothing decrypted lands on disk before `save`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sotto_proto::{Blob, wire};
use zeroize::Zeroizing;

use super::{
    BLOB_LEN, CHUNK_DATA, FileError, FileInfo, FileKey, chunk_len, open_file_chunk, padded_chunks,
    padme, real_chunks, seal_chunk,
};
use crate::net::RelayConnection;

/// Puts in flight at once: a window of 64 chunks (4 MiB of blobs, and
/// their frames, in memory). Against 16: uploads ~15 % faster on loopback,
/// the sender's peak memory 9 MiB above idle instead of 3 (BENCHMARKS,
/// "Files"). (64 used to meet a relay flush bug, fixed since.)
const PUT_WINDOW: usize = 64;
/// Downloaded chunks are synced to disk with their state at least every
/// this many (4 MiB): a power cut refetches at most that much; a killed
/// process nothing (the state follows every page, the page cache keeps
/// what was written).
const SYNC_EVERY: u64 = 64;
const STATE_LEN: usize = 17;

/// Progress callback: bytes of the file moved so far.
pub type Progress<'a> = &'a mut (dyn FnMut(u64) + Send);

/// The largest file the relay's advertised per-mailbox limits take (its
/// padded chunk count within both quotas); `None` if the relay does not
/// advertise them (a relay from before issue 21).
pub fn max_file_size(limits: &wire::Limits) -> Option<u64> {
    let by_bytes = limits.mailbox_max_bytes / BLOB_LEN as u64;
    let cap = match (limits.mailbox_max_blobs, by_bytes) {
        (0, 0) => return None,
        (0, b) | (b, 0) => b,
        (a, b) => a.min(b),
    }
    .min(u64::from(u32::MAX));
    if cap == 0 {
        return Some(0);
    }
    // The most real chunks whose padded count fits (padme is monotonic).
    let (mut lo, mut hi) = (1u64, cap);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if padme(mid) <= cap {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo * CHUNK_DATA as u64)
}

/// Encrypts and uploads `size` bytes from `reader` to a fresh file
/// mailbox on `conn`; returns the file message to send (name, media
/// type, caption and thumbnail still to fill in). A file over the relay's
/// advertised limit is refused before the first put. `ttl_secs` 0 is the
/// relay's default; `now_secs` dates the expiry the message announces.
pub async fn upload(
    conn: &RelayConnection,
    reader: &mut (dyn Read + Send),
    size: u64,
    ttl_secs: u32,
    now_secs: u64,
    progress: Progress<'_>,
) -> Result<FileInfo, FileError> {
    check_size(conn, size)?;
    let key = FileKey::random()?;
    let mut noop = |_: u64, _: u64| {};
    let sha256 = put_chunks(
        conn,
        &key,
        reader,
        size,
        Resume::default(),
        ttl_secs,
        &mut noop,
        progress,
    )
    .await?;
    Ok(uploaded_info(conn, key, size, sha256, ttl_secs, now_secs))
}

/// Refuses a file over the relay's advertised per-mailbox limit.
pub(crate) fn check_size(conn: &RelayConnection, size: u64) -> Result<(), FileError> {
    let limits = conn.welcome().limits.clone().unwrap_or_default();
    if let Some(limit) = max_file_size(&limits)
        && size > limit
    {
        return Err(FileError::TooBig { size, limit });
    }
    Ok(())
}

/// The file message of an upload that finished (name, media type,
/// caption and thumbnail still to fill in).
pub(crate) fn uploaded_info(
    conn: &RelayConnection,
    key: FileKey,
    size: u64,
    sha256: [u8; 32],
    ttl_secs: u32,
    now_secs: u64,
) -> FileInfo {
    let ttl = if ttl_secs == 0 {
        conn.welcome()
            .limits
            .as_ref()
            .map_or(0, |l| l.default_ttl_secs)
    } else {
        ttl_secs
    };
    FileInfo {
        sha256,
        expires_at: if ttl == 0 {
            0
        } else {
            now_secs + u64::from(ttl)
        },
        ..blank_info(key, size)
    }
}

/// The file message of a file of `size` bytes under `key`, its hash not
/// known yet (zero) and nothing else filled in.
pub(crate) fn blank_info(key: FileKey, size: u64) -> FileInfo {
    FileInfo {
        key,
        chunks: padded_chunks(size),
        size,
        sha256: [0; 32],
        name: String::new(),
        media_type: String::new(),
        thumbnail: Vec::new(),
        caption: String::new(),
        expires_at: 0,
    }
}

/// Where an upload stands on the relay: the first `chunks` chunks are
/// stored, the last of them under `seq`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// Chunks stored, in order.
    pub chunks: u64,
    /// The seq of the last of them (0: none).
    pub seq: u64,
}

/// Finds how far an earlier upload under `key` got: reads the file
/// mailbox after `known` (what the sender had recorded, at most behind
/// the truth by the puts in flight when it stopped) and counts the chunks
/// that follow in order. A blob that is not the next chunk means the
/// mailbox cannot be continued ([`FileError::BadChunk`]): start afresh.
pub async fn resume_point(
    conn: &RelayConnection,
    key: &FileKey,
    size: u64,
    known: Resume,
) -> Result<Resume, FileError> {
    let probe = blank_info(key.clone(), size);
    let signer = key.mailbox();
    let mut at = known;
    loop {
        let page = conn.fetch(&signer, at.seq, 0).await?;
        for stored in &page.blobs {
            open_file_chunk(&probe, at.chunks, &stored.blob)?;
            at.chunks += 1;
            at.seq = stored.seq;
        }
        if !page.more {
            return Ok(at);
        }
    }
}

/// Reads `size` bytes from `reader` (from its start: the chunks already
/// on the relay are read again only to hash them), seals and puts the
/// chunks from `from.chunks` on, with up to [`PUT_WINDOW`] puts in flight.
/// `confirmed(chunks, seq)` is told each time the stored prefix grows;
/// returns the SHA-256 of the whole file.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn put_chunks(
    conn: &RelayConnection,
    key: &FileKey,
    reader: &mut (dyn Read + Send),
    size: u64,
    from: Resume,
    ttl_secs: u32,
    confirmed: &mut (dyn FnMut(u64, u64) + Send),
    progress: Progress<'_>,
) -> Result<[u8; 32], FileError> {
    use futures::StreamExt as _;
    let mailbox = key.mailbox().id();
    let chunks = padded_chunks(size);
    let real = real_chunks(size);
    let mut hasher = Sha256::new();
    let mut buf = Zeroizing::new(vec![0u8; CHUNK_DATA]);
    // The chunks already stored are only hashed.
    for index in 0..from.chunks.min(real) {
        let len = chunk_len(size, index);
        read_exact(reader, &mut buf[..len], size, index)?;
        hasher.update(&buf[..len]);
    }
    let mut stored = from.chunks;
    progress((stored * CHUNK_DATA as u64).min(size));
    // A sliding window of puts, answered in order: the frames are written
    // in the order the futures are first polled (the send lock is fair),
    // so the relay stores the chunks in order.
    let mut in_flight = futures::stream::FuturesOrdered::new();
    let mut settle = |result: Option<Result<u64, crate::net::NetError>>,
                      stored: &mut u64|
     -> Result<(), FileError> {
        if let Some(result) = result {
            let seq = result?;
            *stored += 1;
            confirmed(*stored, seq);
            progress((*stored * CHUNK_DATA as u64).min(size));
        }
        Ok(())
    };
    for index in from.chunks..chunks {
        let len = if index < real {
            chunk_len(size, index)
        } else {
            0
        };
        read_exact(reader, &mut buf[..len], size, index)?;
        hasher.update(&buf[..len]);
        let blob = seal_chunk(key, index, index + 1 == chunks, &buf[..len])?;
        let blob = Blob::new(blob.into()).map_err(|_| FileError::BadLayout { index })?;
        in_flight.push_back(async move { conn.put(&mailbox, &blob, ttl_secs).await });
        if in_flight.len() >= PUT_WINDOW {
            settle(in_flight.next().await, &mut stored)?;
        }
    }
    while let Some(result) = in_flight.next().await {
        settle(Some(result), &mut stored)?;
    }
    // The reader must be at its end now.
    let mut extra = [0u8; 1];
    if reader.read(&mut extra)? != 0 {
        return Err(FileError::SizeChanged {
            expected: size,
            found: size + 1,
        });
    }
    Ok(hasher.finalize().into())
}

fn read_exact(
    reader: &mut (dyn Read + Send),
    buf: &mut [u8],
    size: u64,
    index: u64,
) -> Result<(), FileError> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(FileError::SizeChanged {
                    expected: size,
                    found: index * CHUNK_DATA as u64 + got as u64,
                });
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Where a download stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferState {
    /// Chunks fetched, checked and kept.
    pub chunks: u64,
    /// The relay cursor after the last of them.
    pub seq: u64,
    /// The whole file is here and its hash checked.
    pub complete: bool,
}

/// The local cache of downloaded (still encrypted) file chunks.
#[derive(Clone, Debug)]
pub struct FileCache {
    dir: PathBuf,
}

impl FileCache {
    /// The cache in `dir` (made 0700 on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn ensure_dir(&self) -> Result<(), FileError> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.dir)?;
        Ok(())
    }

    fn blobs(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.blobs"))
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.state"))
    }

    /// Where the download of file `id` stands.
    pub fn state(&self, id: &str) -> Result<TransferState, FileError> {
        let bytes = match fs::read(self.state_path(id)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TransferState::default());
            }
            Err(e) => return Err(e.into()),
        };
        let Ok(bytes) = <[u8; STATE_LEN]>::try_from(bytes.as_slice()) else {
            // A torn or foreign state file: start over.
            return Ok(TransferState::default());
        };
        let mut chunks = [0u8; 8];
        chunks.copy_from_slice(&bytes[..8]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[8..16]);
        Ok(TransferState {
            chunks: u64::from_be_bytes(chunks),
            seq: u64::from_be_bytes(seq),
            complete: bytes[16] == 1,
        })
    }

    fn write_state(&self, id: &str, state: &TransferState, durable: bool) -> Result<(), FileError> {
        let mut bytes = [0u8; STATE_LEN];
        bytes[..8].copy_from_slice(&state.chunks.to_be_bytes());
        bytes[8..16].copy_from_slice(&state.seq.to_be_bytes());
        bytes[16] = u8::from(state.complete);
        let tmp = self.dir.join(format!("{id}.state.tmp"));
        {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            if durable {
                file.sync_all()?;
            }
        }
        fs::rename(&tmp, self.state_path(id))?;
        Ok(())
    }

    /// Opens the blob file of `id` cut to what its state vouches for.
    fn open_blobs(&self, id: &str) -> Result<(File, TransferState), FileError> {
        self.ensure_dir()?;
        let mut state = self.state(id)?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(self.blobs(id))?;
        let kept = state.chunks.saturating_mul(BLOB_LEN as u64);
        let len = file.metadata()?.len();
        if len < kept {
            // Less on disk than the state says: start over.
            state = TransferState::default();
        }
        file.set_len(state.chunks * BLOB_LEN as u64)?;
        file.seek(SeekFrom::End(0))?;
        Ok((file, state))
    }

    /// Forgets the download of `id` (the sender deleted it, or to start over).
    pub fn remove(&self, id: &str) -> Result<(), FileError> {
        for path in [self.blobs(id), self.state_path(id)] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Fetches the chunks of file `id` (its message `info`) into `cache`,
/// from where an earlier attempt stopped, checking each chunk against its
/// index as it comes; then checks the whole file's SHA-256. File mailboxes
/// are read, never acked: other readers fetch the same chunks.
pub async fn download(
    conn: &RelayConnection,
    cache: &FileCache,
    id: &str,
    info: &FileInfo,
    progress: Progress<'_>,
) -> Result<(), FileError> {
    let (mut file, mut state) = cache.open_blobs(id)?;
    if state.complete {
        return Ok(());
    }
    let signer = info.mailbox();
    // From the first chunk, the hash is taken on the way; a resumed
    // download hashes the cache once at the end instead.
    let mut hasher = (state.chunks == 0).then(Sha256::new);
    let mut synced = state.chunks;
    let fetch = |after: u64| {
        let page: futures::future::BoxFuture<'_, Result<wire::FetchOk, crate::net::NetError>> =
            Box::pin(conn.fetch(&signer, after, 0));
        futures::future::maybe_done(page)
    };
    let mut fetching = Some(fetch(state.seq));
    let outcome = loop {
        let Some(mut current) = fetching.take() else {
            break Ok(());
        };
        (&mut current).await;
        let page = match std::pin::Pin::new(&mut current).take_output() {
            Some(Ok(page)) => page,
            Some(Err(error)) => break Err(error.into()),
            None => break Err(FileError::Io("a fetch ended without an answer".into())),
        };
        // The next page is asked for before this one is checked and
        // written, so the relay's answer overlaps the local work.
        if page.more
            && let Some(last) = page.blobs.last()
        {
            let mut next = fetch(last.seq);
            let _ = futures::poll!(&mut next);
            fetching = Some(next);
        }
        let mut failed = None;
        for stored in &page.blobs {
            match open_file_chunk(info, state.chunks, &stored.blob) {
                Ok(data) => {
                    if let Some(hasher) = hasher.as_mut() {
                        hasher.update(&data[..]);
                    }
                }
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
            file.write_all(&stored.blob)?;
            state.chunks += 1;
            state.seq = stored.seq;
        }
        // What came is kept, whatever follows: the state follows every
        // page (a killed process loses nothing: the page cache has the
        // blobs), and both are synced to disk every few MiB and whenever
        // the download stops (a power cut loses at most that much).
        let stopping = failed.is_some() || fetching.is_none();
        let durable = stopping || state.chunks >= synced + SYNC_EVERY;
        if durable {
            file.sync_data()?;
            synced = state.chunks;
        }
        cache.write_state(id, &state, durable)?;
        progress((state.chunks * CHUNK_DATA as u64).min(info.size));
        if let Some(error) = failed {
            break Err(error);
        }
    };
    outcome?;
    if state.chunks < info.chunks {
        return Err(FileError::Missing {
            have: state.chunks,
            count: info.chunks,
        });
    }
    let hash = match hasher {
        Some(hasher) => hasher.finalize().into(),
        None => match hash_of(cache, id, info, None) {
            Ok(hash) => hash,
            Err(error) => {
                // The cache no longer holds what its state vouched for
                // (a power cut between syncs): the next attempt starts over.
                cache.remove(id)?;
                return Err(error);
            }
        },
    };
    if hash != info.sha256 {
        return Err(FileError::HashMismatch);
    }
    state.complete = true;
    cache.write_state(id, &state, true)
}

/// Decrypts the cached chunks of `id` in order, hashing (and writing to
/// `out` if given) the file bytes.
fn hash_of(
    cache: &FileCache,
    id: &str,
    info: &FileInfo,
    mut out: Option<&mut File>,
) -> Result<[u8; 32], FileError> {
    let mut blobs = File::open(cache.blobs(id))?;
    let mut hasher = Sha256::new();
    let mut blob = vec![0u8; BLOB_LEN];
    for index in 0..info.chunks {
        blobs
            .read_exact(&mut blob)
            .map_err(|_| FileError::Missing {
                have: index,
                count: info.chunks,
            })?;
        let data = open_file_chunk(info, index, &blob)?;
        hasher.update(&data[..]);
        if let Some(out) = out.as_deref_mut() {
            out.write_all(&data)?;
        }
    }
    Ok(hasher.finalize().into())
}

/// Writes the downloaded file `id` to `dest` (which must not exist):
/// decrypted into a temporary file beside it, hash-checked, synced, then
/// renamed. On any error nothing is left at `dest` and the cache is kept.
pub fn save(cache: &FileCache, id: &str, info: &FileInfo, dest: &Path) -> Result<(), FileError> {
    let state = cache.state(id)?;
    if !state.complete {
        return Err(FileError::Missing {
            have: state.chunks,
            count: info.chunks,
        });
    }
    if dest.exists() {
        return Err(FileError::Exists(dest.display().to_string()));
    }
    let dir = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| FileError::Io(format!("randomness: {e}")))?;
    let tmp = dir.join(format!(".sotto-part-{}", hex::encode(suffix)));
    let written = (|| {
        let mut out = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let hash = hash_of(cache, id, info, Some(&mut out))?;
        if hash != info.sha256 {
            return Err(FileError::HashMismatch);
        }
        out.sync_all()?;
        if dest.exists() {
            return Err(FileError::Exists(dest.display().to_string()));
        }
        fs::rename(&tmp, dest)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Deletes every blob of the file `info` describes from the relay (its
/// sender, before the TTL); returns how many the relay deleted. Readers
/// that had not fetched it get [`FileError::Missing`].
pub async fn delete(conn: &RelayConnection, info: &FileInfo) -> Result<u32, FileError> {
    let signer = info.mailbox();
    let mut seqs = Vec::new();
    let mut after = 0;
    loop {
        let page = conn.fetch(&signer, after, 0).await?;
        for stored in &page.blobs {
            seqs.push(stored.seq);
            after = stored.seq;
        }
        if !page.more {
            break;
        }
    }
    Ok(conn.ack(&signer, seqs).await?)
}
