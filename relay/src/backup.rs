//! `sotto-relay backup`, `restore` and `verify` (issue 24 item 4).
//!
//! A backup is one file, written while the relay runs (through its admin
//! socket, `crate::control`) or from a stopped data directory:
//!
//! ```text
//! "sottoBK1"
//! record*      tag(1) ‖ len(4, big-endian) ‖ body(len), len ≤ 1 MiB
//!   0x01 header  JSON {"schema", "created_at", "relay_version"}
//!   0x02 file    name_len(1) ‖ name ‖ bytes   (certificate, its key, issuer key, bootstrap code)
//!   0x03 record  tree_len(1) ‖ tree ‖ key_len(2) ‖ key ‖ value   (token trees, slots)
//!   0x04 blob    mailbox(32) ‖ id(8) ‖ expires_at(8) ‖ blob
//! 0xFF end     files(8) ‖ records(8) ‖ blobs(8) ‖ SHA-256 of every byte before this record
//! ```
//!
//! **What is consistent.** Blobs are copied without stopping anything: the
//! relay inserts a blob into the database before the flush that makes it
//! durable and acknowledges it only after, and a chunk of blobs is read
//! whole at one moment. So every blob acknowledged before the backup began
//! is in it, complete, unless it was acked or expired while the backup ran
//! (then it is gone on the relay too). Blobs put during the backup may or
//! may not be in it. The token state (issuer seed and generation, admin
//! key, registrations, accounts, revocation index) is copied under the lock
//! every token operation holds, so it is one cut: no account without its
//! registration. Issuance counts, spent tokens and directory slots are
//! copied record by record (each record is independent of the others).
//!
//! **At-rest keys.** Blobs are sealed in the database under day keys
//! (`storage::at_rest`) kept in `db/at-rest-keys`, which the relay rewrites
//! when a day starts or a key is destroyed. Copying that file and the
//! database separately would not be consistent (a key created or destroyed
//! between the two copies), so a backup holds neither: it holds the blobs
//! opened, as the relay itself reads them (clients' sealed envelopes), and
//! a restore seals them again under new day keys of the restored data
//! directory. The expiry index is not copied either: a restore rebuilds it
//! from the blobs' expiries, so no restored blob can outlive its TTL.
//!
//! The file holds the certificate's private key, the issuer key and the
//! token seed: whoever has it can act as the relay. It is created 0600;
//! keep it encrypted and short-lived (a blob acked after the backup stays
//! readable in it, unlike in the relay).

use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sotto_proto::{Blob, MailboxId};
use zeroize::Zeroizing;

use crate::schema::{self, SCHEMA_VERSION, SchemaError};
use crate::storage::{SledStorage, Storage, StoreError};

const MAGIC: &[u8; 8] = b"sottoBK1";
const TAG_HEADER: u8 = 0x01;
const TAG_FILE: u8 = 0x02;
const TAG_RECORD: u8 = 0x03;
const TAG_BLOB: u8 = 0x04;
const TAG_END: u8 = 0xFF;
/// Largest record body: a blob is at most 64 KiB, a slot value one bucket.
const MAX_RECORD: usize = 1 << 20;
/// The data directory's files a backup holds (the certificate and its key,
/// the token issuer key, an unused bootstrap code).
const FILES: [&str; 4] = [
    "relay-cert.der",
    "relay-key.der",
    "issuer-key",
    "bootstrap-code",
];
/// Token trees copied under the token lock, as one cut.
const LOCKED_TREES: [&str; 4] = ["issuer", "registrations", "accounts", "revocations"];
/// Blobs a restore queues before it flushes them into the database.
const RESTORE_BATCH: usize = 512;

/// A backup, restore or verify failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Writing the backup out failed (the target is full, or the reader
    /// went away).
    #[error("cannot write the backup: {0}")]
    Write(#[source] io::Error),
    /// Reading a backup file failed.
    #[error("cannot read the backup: {0}")]
    Read(#[source] io::Error),
    /// The backup file is not a complete, intact backup.
    #[error("not a usable backup: {0}")]
    Damaged(String),
    /// The relay's database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file in the data directory could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was tried.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The schema version does not fit.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The backup file named already exists.
    #[error("{0} exists: choose another name or remove it first (nothing was written)")]
    TargetExists(PathBuf),
    /// The running relay could not be asked, or refused.
    #[error("{0}")]
    Control(String),
    /// The restore target already holds something.
    #[error("{0} is not empty: restore only into a new or empty directory (nothing was changed)")]
    NotEmpty(PathBuf),
}

impl BackupError {
    /// Whether this is the target file system being full (or the file
    /// too large for it): `sotto-relay backup` exits 3 then.
    pub fn is_no_space(&self) -> bool {
        match self {
            Self::Write(e) | Self::Io { source: e, .. } => no_space(e),
            _ => false,
        }
    }
}

/// Whether an I/O error means "no room": a full file system, a quota, or a
/// file size limit.
pub fn no_space(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    )
}

/// The first record of a backup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupHeader {
    /// The data directory's schema version it was taken from.
    pub schema: u32,
    /// Unix seconds when it began.
    pub created_at: u64,
    /// The relay release that wrote it.
    pub relay_version: String,
}

/// What a backup holds, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    /// Files of the data directory.
    pub files: u64,
    /// Token and slot records.
    pub records: u64,
    /// Blobs.
    pub blobs: u64,
    /// Bytes of blobs.
    pub blob_bytes: u64,
    /// The header's schema version.
    pub schema: u32,
    /// The header's time (unix seconds).
    pub created_at: u64,
}

/// Hashes everything written through it.
struct Hashing<W> {
    out: W,
    hash: Sha256,
}

impl<W: Write> Hashing<W> {
    fn record(&mut self, tag: u8, parts: &[&[u8]]) -> Result<(), BackupError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_RECORD {
            return Err(BackupError::Damaged(format!(
                "a record of {len} bytes is over the format's limit"
            )));
        }
        self.write(&[tag])?;
        self.write(&(len as u32).to_be_bytes())?;
        for part in parts {
            self.write(part)?;
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        self.hash.update(bytes);
        self.out.write_all(bytes).map_err(BackupError::Write)
    }
}

/// Writes a backup of the data directory `data_dir`, whose database is
/// open as `storage`, to `out`. In a running relay `tokens` is its token
/// state, held while the token trees are copied. Returns what it wrote.
pub(crate) fn write_backup<W: Write>(
    out: W,
    data_dir: &Path,
    storage: &SledStorage,
    tokens: Option<&crate::tokens::Tokens>,
    now: u64,
) -> Result<BackupSummary, BackupError> {
    let mut out = Hashing {
        out: BufWriter::with_capacity(256 * 1024, out),
        hash: Sha256::new(),
    };
    out.write(MAGIC)?;
    let schema = schema::check(data_dir)?.unwrap_or(SCHEMA_VERSION);
    let header = BackupHeader {
        schema,
        created_at: now,
        relay_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let header = serde_json::to_vec(&header)
        .map_err(|e| BackupError::Damaged(format!("cannot encode the header: {e}")))?;
    out.record(TAG_HEADER, &[&header])?;
    let mut summary = BackupSummary {
        schema,
        created_at: now,
        ..BackupSummary::default()
    };
    for name in FILES {
        let path = data_dir.join(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(BackupError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        out.record(TAG_FILE, &[&[name.len() as u8], name.as_bytes(), &bytes])?;
        summary.files += 1;
    }
    // Read into memory under the lock (these trees are team-sized), and
    // written after it is released: a slow reader of the backup must not
    // hold up token operations.
    let mut cut = Vec::new();
    {
        let _lock = tokens.map(|t| t.hold());
        for tree in LOCKED_TREES {
            for entry in storage
                .record_tree(tree)
                .ok_or_else(|| BackupError::Damaged(format!("no tree {tree}")))?
                .iter()
            {
                let (key, value) = entry.map_err(StoreError::from)?;
                cut.push((tree, key.to_vec(), Zeroizing::new(value.to_vec())));
            }
        }
    }
    for (tree, key, value) in &cut {
        write_record(&mut out, tree, key, value)?;
        summary.records += 1;
    }
    drop(cut);
    for tree in SledStorage::RECORD_TREES {
        if !LOCKED_TREES.contains(&tree) {
            summary.records += copy_tree(&mut out, storage, tree)?;
        }
    }
    storage.for_each_blob(|mailbox, seq, expires_at, blob| {
        out.record(
            TAG_BLOB,
            &[
                mailbox.as_bytes(),
                &seq.to_be_bytes(),
                &expires_at.to_be_bytes(),
                blob.as_bytes(),
            ],
        )?;
        summary.blobs += 1;
        summary.blob_bytes += blob.len() as u64;
        Ok::<(), BackupError>(())
    })?;
    let digest = out.hash.clone().finalize();
    let mut end = Vec::with_capacity(56);
    for count in [summary.files, summary.records, summary.blobs] {
        end.extend_from_slice(&count.to_be_bytes());
    }
    end.extend_from_slice(&digest);
    out.record(TAG_END, &[&end])?;
    out.out
        .into_inner()
        .map_err(|e| BackupError::Write(e.into_error()))?
        .flush()
        .map_err(BackupError::Write)?;
    Ok(summary)
}

fn copy_tree<W: Write>(
    out: &mut Hashing<W>,
    storage: &SledStorage,
    name: &str,
) -> Result<u64, BackupError> {
    let tree = storage
        .record_tree(name)
        .ok_or_else(|| BackupError::Damaged(format!("no tree {name}")))?;
    let mut count = 0;
    for entry in tree.iter() {
        let (key, value) = entry.map_err(StoreError::from)?;
        write_record(out, name, &key, &Zeroizing::new(value.to_vec()))?;
        count += 1;
    }
    Ok(count)
}

fn write_record<W: Write>(
    out: &mut Hashing<W>,
    tree: &str,
    key: &[u8],
    value: &[u8],
) -> Result<(), BackupError> {
    let key_len = u16::try_from(key.len())
        .map_err(|_| BackupError::Damaged(format!("a key of {} bytes in {tree}", key.len())))?;
    out.record(
        TAG_RECORD,
        &[
            &[tree.len() as u8],
            tree.as_bytes(),
            &key_len.to_be_bytes(),
            key,
            value,
        ],
    )
}

/// One record of a backup, as read.
enum Record {
    Header(BackupHeader),
    File(String, Zeroizing<Vec<u8>>),
    Tree(String, Vec<u8>, Zeroizing<Vec<u8>>),
    Blob(MailboxId, u64, u64, Blob),
}

/// Reads a backup record by record, checking the end record's counts and
/// hash before it says the backup is over.
struct Reader<R> {
    input: R,
    hash: Sha256,
    counts: [u64; 3],
    done: bool,
}

fn damaged(what: impl Into<String>) -> BackupError {
    BackupError::Damaged(what.into())
}

impl<R: Read> Reader<R> {
    fn new(mut input: R) -> Result<Self, BackupError> {
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|e| read_error(e, "the file is shorter than a backup's first bytes"))?;
        if &magic != MAGIC {
            return Err(damaged("not a sotto relay backup (wrong first bytes)"));
        }
        let mut hash = Sha256::new();
        hash.update(magic);
        Ok(Self {
            input,
            hash,
            counts: [0; 3],
            done: false,
        })
    }

    fn next(&mut self) -> Result<Option<Record>, BackupError> {
        if self.done {
            return Ok(None);
        }
        let mut head = [0u8; 5];
        self.input
            .read_exact(&mut head)
            .map_err(|e| read_error(e, "truncated: the end record is missing"))?;
        let tag = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_RECORD {
            return Err(damaged(format!("a record claims {len} bytes")));
        }
        let mut body = Zeroizing::new(vec![0u8; len]);
        self.input
            .read_exact(&mut body)
            .map_err(|e| read_error(e, "truncated inside a record"))?;
        if tag == TAG_END {
            let digest = self.hash.clone().finalize();
            if body.len() != 56 {
                return Err(damaged("end record of the wrong size"));
            }
            let counts: Vec<u64> = body[..24]
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
                .collect();
            if counts != self.counts {
                return Err(damaged("the end record's counts do not match the records"));
            }
            if body[24..] != digest[..] {
                return Err(damaged("the checksum does not match: the file was altered"));
            }
            let mut rest = [0u8; 1];
            if self.input.read(&mut rest).map_err(BackupError::Read)? != 0 {
                return Err(damaged("bytes after the end record"));
            }
            self.done = true;
            return Ok(None);
        }
        self.hash.update(head);
        self.hash.update(&*body);
        let record = match tag {
            TAG_HEADER => Record::Header(
                serde_json::from_slice(&body)
                    .map_err(|e| damaged(format!("unreadable header: {e}")))?,
            ),
            TAG_FILE => {
                let (name, rest) = split_name(&body)?;
                if !FILES.contains(&name.as_str()) {
                    return Err(damaged(format!("unexpected file {name:?}")));
                }
                self.counts[0] += 1;
                Record::File(name, Zeroizing::new(rest.to_vec()))
            }
            TAG_RECORD => {
                let (tree, rest) = split_name(&body)?;
                if !SledStorage::RECORD_TREES.contains(&tree.as_str()) {
                    return Err(damaged(format!("unexpected tree {tree:?}")));
                }
                let key_len = rest
                    .get(..2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
                    .ok_or_else(|| damaged("short record"))?;
                let key = rest
                    .get(2..2 + key_len)
                    .ok_or_else(|| damaged("short record key"))?;
                self.counts[1] += 1;
                Record::Tree(
                    tree,
                    key.to_vec(),
                    Zeroizing::new(rest[2 + key_len..].to_vec()),
                )
            }
            TAG_BLOB => {
                if body.len() < 48 {
                    return Err(damaged("short blob record"));
                }
                let mailbox = MailboxId::from_slice(&body[..32])
                    .map_err(|e| damaged(format!("blob record: {e}")))?;
                let seq = u64::from_be_bytes(body[32..40].try_into().unwrap_or_default());
                let expires_at = u64::from_be_bytes(body[40..48].try_into().unwrap_or_default());
                let blob = Blob::new(Bytes::copy_from_slice(&body[48..]))
                    .map_err(|e| damaged(format!("blob record: {e}")))?;
                self.counts[2] += 1;
                Record::Blob(mailbox, seq, expires_at, blob)
            }
            other => return Err(damaged(format!("unknown record type {other:#x}"))),
        };
        Ok(Some(record))
    }
}

fn read_error(error: io::Error, eof: &str) -> BackupError {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        damaged(eof)
    } else {
        BackupError::Read(error)
    }
}

fn split_name(body: &[u8]) -> Result<(String, &[u8]), BackupError> {
    let len = *body.first().ok_or_else(|| damaged("empty record"))? as usize;
    let name = body
        .get(1..1 + len)
        .and_then(|n| std::str::from_utf8(n).ok())
        .ok_or_else(|| damaged("unreadable name"))?;
    Ok((name.to_owned(), &body[1 + len..]))
}

fn open_backup(path: &Path) -> Result<Reader<BufReader<fs::File>>, BackupError> {
    let file = fs::File::open(path).map_err(|source| BackupError::Io {
        action: "open",
        path: path.to_owned(),
        source,
    })?;
    Reader::new(BufReader::with_capacity(256 * 1024, file))
}

/// Reads the backup file at `path` through to its end record and checks
/// it: format, every record, the counts and the checksum. Changes nothing.
pub fn verify_backup(path: &Path) -> Result<BackupSummary, BackupError> {
    let mut reader = open_backup(path)?;
    let mut summary = BackupSummary::default();
    let mut header = None;
    while let Some(record) = reader.next()? {
        match record {
            Record::Header(h) => {
                if h.schema > SCHEMA_VERSION {
                    return Err(SchemaError::Newer {
                        dir: path.to_owned(),
                        found: h.schema,
                    }
                    .into());
                }
                summary.schema = h.schema;
                summary.created_at = h.created_at;
                header = Some(h);
            }
            _ if header.is_none() => return Err(damaged("records before the header")),
            Record::File(..) => summary.files += 1,
            Record::Tree(..) => summary.records += 1,
            Record::Blob(_, _, _, blob) => {
                summary.blobs += 1;
                summary.blob_bytes += blob.len() as u64;
            }
        }
    }
    if header.is_none() {
        return Err(damaged("no header"));
    }
    Ok(summary)
}

/// Restores the backup at `from` into `data_dir`, which must not exist or
/// be empty. The whole file is verified first, so a damaged backup changes
/// nothing; a failure while restoring removes what the restore created.
pub fn restore(from: &Path, data_dir: &Path) -> Result<BackupSummary, BackupError> {
    let summary = verify_backup(from)?;
    let created = match fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty(data_dir.to_owned()));
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(source) => {
            return Err(BackupError::Io {
                action: "read",
                path: data_dir.to_owned(),
                source,
            });
        }
    };
    let result = restore_into(from, data_dir);
    if result.is_err() {
        // Only what this restore made: the directory was new or empty.
        if created {
            let _ = fs::remove_dir_all(data_dir);
        } else if let Ok(entries) = fs::read_dir(data_dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let _ = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
    }
    result.map(|()| summary)
}

fn restore_into(from: &Path, data_dir: &Path) -> Result<(), BackupError> {
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Io {
            action,
            path,
            source,
        }
    };
    fs::create_dir_all(data_dir).map_err(io("create", data_dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
            .map_err(io("protect", data_dir))?;
    }
    let mut reader = open_backup(from)?;
    let storage = SledStorage::open(&data_dir.join("db"))?;
    let mut schema = SCHEMA_VERSION;
    let mut queued = 0;
    while let Some(record) = reader.next()? {
        match record {
            Record::Header(header) => schema = header.schema,
            Record::File(name, bytes) => {
                let path = data_dir.join(&name);
                crate::cert::write_private(&path, &bytes).map_err(io("write", &path))?;
            }
            Record::Tree(tree, key, value) => {
                if let Some(tree) = storage.record_tree(&tree) {
                    tree.insert(key, value.as_slice())
                        .map_err(StoreError::from)?;
                }
            }
            Record::Blob(mailbox, seq, expires_at, blob) => {
                storage.import_blob(&mailbox, seq, expires_at, &blob);
                queued += 1;
                if queued == RESTORE_BATCH {
                    storage.flush()?;
                    queued = 0;
                }
            }
        }
    }
    storage.flush()?;
    drop(storage);
    schema::write(data_dir, schema)?;
    // A backup of an older schema is migrated like its data dir would be.
    schema::prepare(data_dir)?;
    Ok(())
}

/// What `sotto-relay verify --data DIR` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// The schema version (after no change: verify migrates nothing).
    pub schema: Option<u32>,
    /// Blobs that read and open.
    pub blobs: u64,
    /// Directory slots.
    pub slots: u64,
    /// What is wrong; empty when the data directory is fine.
    pub problems: Vec<String>,
}

/// Checks a stopped relay's data directory without changing it: the
/// schema version, the certificate and its key (they must belong
/// together), the token state, and that every stored record reads and
/// every sealed blob opens under its at-rest key.
pub fn verify_data_dir(data_dir: &Path) -> Result<VerifyReport, crate::AuditError> {
    let mut report = VerifyReport::default();
    match schema::check(data_dir) {
        Ok(version) => report.schema = version,
        Err(error) => {
            // Nothing else can be read safely (or at all).
            report.problems.push(error.to_string());
            return Ok(report);
        }
    }
    let cert = fs::read(data_dir.join("relay-cert.der"));
    let key = fs::read(data_dir.join("relay-key.der"));
    match (cert, key) {
        (Ok(cert), Ok(key)) => {
            if let Err(error) = keys_match(cert, key) {
                report.problems.push(format!(
                    "the certificate and its key do not belong together: {error}"
                ));
            }
        }
        (Err(e), _) => report.problems.push(format!("relay-cert.der: {e}")),
        (_, Err(e)) => report.problems.push(format!("relay-key.der: {e}")),
    }
    let (storage, _) = crate::audit::open_existing(data_dir)?;
    match storage.audit_scan() {
        Ok(counts) => {
            report.blobs = counts.blob_sizes.count();
            report.slots = counts.slot_sizes.count();
            if counts.corrupt > 0 {
                report.problems.push(format!(
                    "{} records do not read (or do not open under their at-rest key)",
                    counts.corrupt
                ));
            }
        }
        Err(error) => report.problems.push(format!("database: {error}")),
    }
    if let Err(error) = storage.issuer_state() {
        report.problems.push(format!("token state: {error}"));
    }
    Ok(report)
}

/// Whether the private key belongs to the certificate (rustls checks it
/// when it is given both).
fn keys_match(cert: Vec<u8>, key: Vec<u8>) -> Result<(), String> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Writes a backup of a stopped relay's data directory to `out`.
pub fn backup_stopped<W: Write>(
    data_dir: &Path,
    out: W,
    now: u64,
) -> Result<BackupSummary, BackupError> {
    schema::check(data_dir)?;
    let (storage, _) = crate::audit::open_existing(data_dir).map_err(|e| match e {
        crate::AuditError::Store { source, .. } => BackupError::Store(source),
        other => BackupError::Damaged(other.to_string()),
    })?;
    write_backup(out, data_dir, &storage, None, now)
}

/// Where a backup was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupSource {
    /// The running relay, through its admin socket.
    Running,
    /// A stopped relay's data directory, opened directly.
    Stopped,
}

/// `sotto-relay backup --to FILE`: backs up the relay of `data_dir`
/// (through its admin socket while it runs, else directly) into the new
/// file `to`. The bytes go to `FILE.partial` (0600) first, which is
/// checked, fsynced and renamed to `to` only when complete; on any failure
/// it is removed, so `to` is either a whole, verified backup or absent.
/// The relay and its data are never changed.
pub fn backup_to_file(
    data_dir: &Path,
    to: &Path,
    now: u64,
) -> Result<(BackupSummary, BackupSource), BackupError> {
    schema::check(data_dir)?;
    if to.exists() {
        return Err(BackupError::TargetExists(to.to_owned()));
    }
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&partial).map_err(|source| BackupError::Io {
        action: "create",
        path: partial.clone(),
        source,
    })?;
    let result = fill(data_dir, file, &partial, now);
    let result = result.and_then(|done| {
        fs::rename(&partial, to).map_err(|source| BackupError::Io {
            action: "rename",
            path: partial.clone(),
            source,
        })?;
        if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = fs::File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(done)
    });
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

fn fill(
    data_dir: &Path,
    mut file: fs::File,
    partial: &Path,
    now: u64,
) -> Result<(BackupSummary, BackupSource), BackupError> {
    #[cfg(unix)]
    match crate::control::request(data_dir, "backup") {
        Ok(mut reader) => {
            let mut buffer = vec![0u8; 256 * 1024];
            loop {
                let n = reader.read(&mut buffer).map_err(|e| {
                    BackupError::Control(format!("the running relay stopped sending: {e}"))
                })?;
                if n == 0 {
                    break;
                }
                file.write_all(&buffer[..n]).map_err(BackupError::Write)?;
            }
            file.sync_all().map_err(BackupError::Write)?;
            let summary = verify_backup(partial).map_err(|e| match e {
                BackupError::Damaged(what) => BackupError::Control(format!(
                    "the running relay sent an incomplete backup ({what}); its log says why"
                )),
                other => other,
            })?;
            return Ok((summary, BackupSource::Running));
        }
        Err(crate::control::ControlError::NotRunning(_)) => {}
        Err(error) => return Err(BackupError::Control(error.to_string())),
    }
    let summary = backup_stopped(data_dir, &mut file, now)?;
    file.sync_all().map_err(BackupError::Write)?;
    Ok((summary, BackupSource::Stopped))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails like a full disk after `room` bytes.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn data_dir_with_blobs(n: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        crate::RelayCert::load_or_create(dir.path()).unwrap();
        schema::prepare(dir.path()).unwrap();
        let storage = SledStorage::open(&dir.path().join("db")).unwrap();
        for i in 0..n {
            let mailbox = MailboxId::from_bytes([(i % 7) as u8; 32]);
            let blob = Blob::new(Bytes::from(vec![i as u8; 1024])).unwrap();
            storage
                .append(&mailbox, &blob, 1_700_000_000, 1_700_086_400)
                .unwrap();
        }
        storage.flush().unwrap();
        dir
    }

    #[test]
    fn a_full_target_is_a_no_space_error_and_the_data_is_untouched() {
        let dir = data_dir_with_blobs(300);
        let error = backup_stopped(dir.path(), Full { room: 100_000 }, 1).unwrap_err();
        assert!(error.is_no_space(), "{error}");
        // The database still reads whole.
        let mut out = Vec::new();
        let summary = backup_stopped(dir.path(), &mut out, 1).unwrap();
        assert_eq!(summary.blobs, 300);
    }

    #[test]
    fn a_backup_restores_blob_for_blob_and_a_flipped_byte_is_caught() {
        let dir = data_dir_with_blobs(40);
        let file = dir.path().join("backup");
        let summary = backup_stopped(dir.path(), fs::File::create(&file).unwrap(), 5).unwrap();
        assert_eq!((summary.blobs, summary.files), (40, 2));
        assert_eq!(verify_backup(&file).unwrap(), summary);

        let target = dir.path().join("restored");
        restore(&file, &target).unwrap();
        let report = verify_data_dir(&target).unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.blobs, 40);
        assert_eq!(
            fs::read(dir.path().join("relay-key.der")).unwrap(),
            fs::read(target.join("relay-key.der")).unwrap()
        );
        // Restoring again over it is refused.
        assert!(matches!(
            restore(&file, &target),
            Err(BackupError::NotEmpty(_))
        ));

        let mut bytes = fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        fs::write(&file, &bytes).unwrap();
        assert!(matches!(verify_backup(&file), Err(BackupError::Damaged(_))));
        let other = dir.path().join("other");
        assert!(restore(&file, &other).is_err());
        assert!(!other.exists(), "a damaged backup creates nothing");

        bytes.truncate(middle);
        fs::write(&file, &bytes).unwrap();
        assert!(matches!(verify_backup(&file), Err(BackupError::Damaged(_))));
    }
}
