//! `sotto-relay audit`: everything the relay stores, in counts and sizes.
//!
//! DESIGN §2 promises that a seized relay data directory links nothing: it
//! holds opaque bucket-sized blobs under rotating mailbox IDs, minute-rounded
//! expiries, opaque slots, a certificate and maybe an unused bootstrap code.
//! This module lets an operator or auditor check that claim on a real data
//! directory without reading any content: it reports how many of each thing
//! there is and how big, never a blob, a slot value, a key or a full mailbox
//! ID (`--verbose` shows 4-byte prefixes, enough to tell mailboxes apart and
//! too short to look one up).
//!
//! The database is opened, read and closed; nothing is inserted, removed or
//! flushed. sled has no read-only mode and locks its directory, so opening
//! a running relay's database fails with [`AuditError::Locked`]; the
//! command line then asks the running relay over its admin socket
//! (`crate::control`), which runs the same scan on its own open database
//! ([`audit_open`]) and sends the report.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bootstrap;
use crate::cert::fingerprint;
use crate::storage::{SledStorage, Storage, StoreError};

/// The database directory inside a data dir (as `Server::start` lays it out).
const DB_DIR: &str = "db";
/// sled's data file inside [`DB_DIR`]; its absence means "no database here".
const SLED_DATA_FILE: &str = "db";
/// The certificate file (`cert.rs` writes it under this name).
const CERT_FILE: &str = "relay-cert.der";

/// The audit could not run.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The data directory has no relay database; nothing was created.
    #[error(
        "{dir} holds no relay database (no {db}); check --data, or start the relay once to create one"
    )]
    NoDatabase {
        /// The data directory.
        dir: PathBuf,
        /// The database file that was expected.
        db: PathBuf,
    },
    /// The data directory runs on the fjall engine, which the audit,
    /// `verify` and backup do not read yet.
    #[error(
        "{dir} holds a fjall database (storage.engine = \"fjall\"): audit, verify and backup read the sled engine only so far; nothing was read"
    )]
    FjallEngine {
        /// The data directory.
        dir: PathBuf,
    },
    /// A running relay holds sled's lock on the database.
    #[error(
        "the relay database in {dir} is in use (sled's lock is held): stop the relay first or copy the data dir and audit the copy"
    )]
    Locked {
        /// The database directory.
        dir: PathBuf,
    },
    /// The database could not be opened or read.
    #[error("cannot read the relay database in {dir}: {source}")]
    Store {
        /// The database directory.
        dir: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// A file in the data directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One blob or slot-value size and how many records have it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeCount {
    /// Size in bytes.
    pub size: u64,
    /// Records of that size.
    pub count: u64,
}

/// Record sizes and their counts, smallest first. For blobs and slots every
/// size should be a bucket size (1, 4, 16 or 64 KiB).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SizeHistogram(pub Vec<SizeCount>);

impl SizeHistogram {
    /// Counts one record of `size` bytes.
    pub fn add(&mut self, size: u64) {
        match self.0.binary_search_by_key(&size, |s| s.size) {
            Ok(i) => self.0[i].count += 1,
            Err(i) => self.0.insert(i, SizeCount { size, count: 1 }),
        }
    }

    /// Records counted.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|s| s.count).sum()
    }

    /// Sum of the sizes of all records.
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(|s| s.size * s.count).sum()
    }
}

/// One mailbox as the scan saw it: a 4-byte prefix of its ID, never more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditMailbox {
    /// First 4 bytes of the mailbox ID.
    pub prefix: [u8; 4],
    /// Blobs it holds.
    pub blobs: u64,
    /// Bytes of those blobs.
    pub bytes: u64,
}

/// What [`SledStorage::audit_scan`] found: counts and sizes only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditCounts {
    /// sled tree names, including sled's own default tree.
    pub trees: Vec<String>,
    /// Mailboxes holding at least one blob, in ID order.
    pub mailboxes: Vec<AuditMailbox>,
    /// Blob sizes.
    pub blob_sizes: SizeHistogram,
    /// Earliest stored expiry (unix seconds).
    pub oldest_expiry: Option<u64>,
    /// Latest stored expiry (unix seconds).
    pub newest_expiry: Option<u64>,
    /// Stored expiries that are not a whole minute (should be none).
    pub unaligned_expiry: u64,
    /// Entries in the expiry index.
    pub expiry_entries: u64,
    /// Expiry index entries whose blob is gone (harmless; purged later).
    pub dangling_expiry: u64,
    /// Slot value sizes.
    pub slot_sizes: SizeHistogram,
    /// Entries in sled's default tree (the relay writes none).
    pub default_tree_entries: u64,
    /// Records that do not parse.
    pub corrupt: u64,
}

/// A file in the data directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the data directory.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// Blob totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobSummary {
    /// Blobs stored.
    pub count: u64,
    /// Bytes of blobs.
    pub bytes: u64,
    /// Blobs per size.
    pub sizes: SizeHistogram,
    /// Most blobs in any one mailbox.
    pub max_per_mailbox: u64,
}

/// Expiry times, as stored (rounded up to the minute at put).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpirySummary {
    /// Earliest expiry, unix seconds.
    pub oldest: Option<u64>,
    /// Latest expiry, unix seconds.
    pub newest: Option<u64>,
    /// `oldest` as `YYYY-MM-DD HH:MM UTC`.
    pub oldest_utc: Option<String>,
    /// `newest` as `YYYY-MM-DD HH:MM UTC`.
    pub newest_utc: Option<String>,
    /// Whether every stored expiry is a whole minute (DESIGN §2.4).
    pub all_minute_aligned: bool,
    /// Entries in the expiry index.
    pub index_entries: u64,
    /// Index entries whose blob is gone.
    pub dangling: u64,
}

/// Directory slot totals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotSummary {
    /// Slots stored.
    pub count: u64,
    /// Bytes of slot values.
    pub bytes: u64,
    /// Slots per value size.
    pub sizes: SizeHistogram,
}

/// A mailbox in `--verbose` output: a 4-byte prefix, never the full ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxPrefix {
    /// First 4 bytes of the ID, hex.
    pub prefix: String,
    /// Blobs it holds.
    pub blobs: u64,
    /// Bytes of those blobs.
    pub bytes: u64,
}

/// Everything the relay stores, as counts and sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// The audited data directory.
    pub data_dir: String,
    /// Every file in it (sizes only), sorted by path.
    pub files: Vec<FileEntry>,
    /// SHA-256 of the relay certificate (what invite codes pin), hex.
    pub certificate_fingerprint: Option<String>,
    /// Whether an unused admin bootstrap code exists (the code is not shown).
    pub bootstrap_code_unused: bool,
    /// Bytes sled's files occupy.
    pub db_size_on_disk: u64,
    /// Bytes of blobs and slot values (what the disk budget counts).
    pub stored_bytes: u64,
    /// sled trees.
    pub trees: Vec<String>,
    /// Mailboxes holding at least one blob.
    pub mailboxes: u64,
    /// Blobs.
    pub blobs: BlobSummary,
    /// Expiry times.
    pub expiry: ExpirySummary,
    /// Directory slots.
    pub slots: SlotSummary,
    /// Entries in sled's default tree (the relay writes none there).
    pub default_tree_entries: u64,
    /// Records that do not parse (a damaged database).
    pub corrupt_records: u64,
    /// Per-mailbox prefixes and counts; only with `verbose`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox_prefixes: Option<Vec<MailboxPrefix>>,
}

/// Audits the relay data directory `data_dir` of a stopped relay (a
/// running one is audited through its admin socket: [`audit_open`]).
/// With `verbose`, the report lists each mailbox by a 4-byte ID prefix.
pub fn audit(data_dir: &Path, verbose: bool) -> Result<AuditReport, AuditError> {
    let (storage, files) = open_listed(data_dir)?;
    audit_open(&storage, data_dir, files, verbose)
}

/// Opens the database of an existing data directory (never creating one),
/// for the audit, `verify` and an offline backup.
pub(crate) fn open_existing(data_dir: &Path) -> Result<(SledStorage, PathBuf), AuditError> {
    let db_dir = data_dir.join(DB_DIR);
    let db_file = db_dir.join(SLED_DATA_FILE);
    // sled creates a database where there is none; an audit must not.
    if !db_file.is_file() {
        // An unreadable data dir says so rather than "no database".
        if let Err(source) = fs::read_dir(data_dir)
            && source.kind() != std::io::ErrorKind::NotFound
        {
            return Err(AuditError::Io {
                path: data_dir.to_owned(),
                source,
            });
        }
        if data_dir.join(crate::storage::FJALL_DIR).is_dir() {
            return Err(AuditError::FjallEngine {
                dir: data_dir.to_owned(),
            });
        }
        return Err(AuditError::NoDatabase {
            dir: data_dir.to_owned(),
            db: db_file,
        });
    }
    let storage = SledStorage::open(&db_dir).map_err(|source| {
        if is_lock_error(&source) {
            AuditError::Locked {
                dir: db_dir.clone(),
            }
        } else {
            AuditError::Store {
                dir: db_dir.clone(),
                source,
            }
        }
    })?;
    Ok((storage, db_dir))
}

fn open_listed(data_dir: &Path) -> Result<(SledStorage, Vec<FileEntry>), AuditError> {
    // Listed before sled opens, so the report shows the directory as found.
    let db_file = data_dir.join(DB_DIR).join(SLED_DATA_FILE);
    let files = if db_file.is_file() {
        list_data_dir(data_dir)?
    } else {
        Vec::new()
    };
    let (storage, _) = open_existing(data_dir)?;
    Ok((storage, files))
}

/// Every file in `data_dir` with its size, sorted by path.
pub(crate) fn list_data_dir(data_dir: &Path) -> Result<Vec<FileEntry>, AuditError> {
    let mut files = Vec::new();
    list_files(data_dir, data_dir, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The audit of an open database (a stopped relay's, or the running
/// relay's own through its admin socket: reads only).
pub(crate) fn audit_open(
    storage: &SledStorage,
    data_dir: &Path,
    files: Vec<FileEntry>,
    verbose: bool,
) -> Result<AuditReport, AuditError> {
    let db_dir = data_dir.join(DB_DIR);
    let store_error = |source| AuditError::Store {
        dir: db_dir.clone(),
        source,
    };
    let counts = storage.audit_scan().map_err(store_error)?;
    let db_size_on_disk = storage.size_on_disk().map_err(store_error)?;
    let stored_bytes = storage.total_bytes();

    let cert_path = data_dir.join(CERT_FILE);
    let certificate_fingerprint = match fs::read(&cert_path) {
        Ok(der) => Some(hex::encode(fingerprint(&der))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(AuditError::Io {
                path: cert_path,
                source,
            });
        }
    };

    Ok(AuditReport {
        data_dir: data_dir.display().to_string(),
        files,
        certificate_fingerprint,
        bootstrap_code_unused: bootstrap::path(data_dir).is_file(),
        db_size_on_disk,
        stored_bytes,
        trees: counts.trees,
        mailboxes: counts.mailboxes.len() as u64,
        blobs: BlobSummary {
            count: counts.blob_sizes.count(),
            bytes: counts.blob_sizes.bytes(),
            max_per_mailbox: counts.mailboxes.iter().map(|m| m.blobs).max().unwrap_or(0),
            sizes: counts.blob_sizes,
        },
        expiry: ExpirySummary {
            oldest: counts.oldest_expiry,
            newest: counts.newest_expiry,
            oldest_utc: counts.oldest_expiry.map(utc_minute),
            newest_utc: counts.newest_expiry.map(utc_minute),
            all_minute_aligned: counts.unaligned_expiry == 0,
            index_entries: counts.expiry_entries,
            dangling: counts.dangling_expiry,
        },
        slots: SlotSummary {
            count: counts.slot_sizes.count(),
            bytes: counts.slot_sizes.bytes(),
            sizes: counts.slot_sizes,
        },
        default_tree_entries: counts.default_tree_entries,
        corrupt_records: counts.corrupt,
        mailbox_prefixes: verbose.then(|| {
            counts
                .mailboxes
                .iter()
                .map(|m| MailboxPrefix {
                    prefix: hex::encode(m.prefix),
                    blobs: m.blobs,
                    bytes: m.bytes,
                })
                .collect()
        }),
    })
}

/// sled reports a held lock as a plain I/O error with this text.
fn is_lock_error(error: &StoreError) -> bool {
    matches!(error, StoreError::Db(::sled::Error::Io(e)) if e.to_string().contains("could not acquire lock"))
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<FileEntry>) -> Result<(), AuditError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| AuditError::Io { path, source }
    };
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        // symlink_metadata: a link is listed, never followed out of the dir.
        let meta = fs::symlink_metadata(&path).map_err(io(&path))?;
        if meta.is_dir() {
            list_files(root, &path, out)?;
        } else {
            out.push(FileEntry {
                path: path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
                bytes: meta.len(),
            });
        }
    }
    Ok(())
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC` (seconds dropped: stored expiries
/// are whole minutes); the plain number for a time past the calendar's
/// range (year 9999), which only a damaged record could hold.
fn utc_minute(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|time| {
            time.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| format!("{secs} (unix seconds)"))
}

fn sizes(f: &mut fmt::Formatter<'_>, histogram: &SizeHistogram) -> fmt::Result {
    for s in &histogram.0 {
        writeln!(f, "    {:>6} bytes: {}", s.size, s.count)?;
    }
    Ok(())
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "sotto relay audit of {}", self.data_dir)?;
        writeln!(
            f,
            "Counts and sizes only: no blob, slot value, key or full mailbox ID is shown."
        )?;
        writeln!(f)?;
        writeln!(f, "mailboxes holding blobs: {}", self.mailboxes)?;
        writeln!(
            f,
            "blobs: {} ({} bytes; at most {} in one mailbox)",
            self.blobs.count, self.blobs.bytes, self.blobs.max_per_mailbox
        )?;
        sizes(f, &self.blobs.sizes)?;
        match (&self.expiry.oldest_utc, &self.expiry.newest_utc) {
            (Some(oldest), Some(newest)) => {
                writeln!(f, "expiry: oldest {oldest}, newest {newest}")?
            }
            _ => writeln!(f, "expiry: no blobs")?,
        }
        writeln!(
            f,
            "    all minute-aligned: {}; index entries: {} ({} without a blob)",
            yes_no(self.expiry.all_minute_aligned),
            self.expiry.index_entries,
            self.expiry.dangling
        )?;
        writeln!(
            f,
            "directory slots: {} ({} bytes of values)",
            self.slots.count, self.slots.bytes
        )?;
        sizes(f, &self.slots.sizes)?;
        writeln!(
            f,
            "stored bytes (blobs + slot values): {}",
            self.stored_bytes
        )?;
        writeln!(f, "database size on disk: {} bytes", self.db_size_on_disk)?;
        writeln!(f, "database trees: {}", self.trees.join(", "))?;
        writeln!(
            f,
            "entries in sled's default tree: {}",
            self.default_tree_entries
        )?;
        writeln!(f, "corrupt records: {}", self.corrupt_records)?;
        writeln!(
            f,
            "certificate fingerprint (SHA-256): {}",
            self.certificate_fingerprint.as_deref().unwrap_or("none")
        )?;
        writeln!(
            f,
            "unused bootstrap code: {}",
            if self.bootstrap_code_unused {
                "yes (not shown; `sotto-relay bootstrap-code` prints it)"
            } else {
                "no"
            }
        )?;
        writeln!(f, "files:")?;
        for file in &self.files {
            writeln!(f, "    {:>12}  {}", file.bytes, file.path)?;
        }
        if let Some(prefixes) = &self.mailbox_prefixes {
            writeln!(f, "mailboxes (4-byte ID prefixes):")?;
            for m in prefixes {
                writeln!(f, "    {}…  {} blobs, {} bytes", m.prefix, m.blobs, m.bytes)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_minute_formats_known_dates() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_minute(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(utc_minute(253_402_300_799), "9999-12-31 23:59 UTC");
        assert_eq!(utc_minute(u64::MAX), format!("{} (unix seconds)", u64::MAX));
    }

    #[test]
    fn histogram_counts_and_sums() {
        let mut h = SizeHistogram::default();
        for size in [4096, 1024, 4096] {
            h.add(size);
        }
        assert_eq!(
            h.0,
            vec![
                SizeCount {
                    size: 1024,
                    count: 1
                },
                SizeCount {
                    size: 4096,
                    count: 2
                }
            ]
        );
        assert_eq!((h.count(), h.bytes()), (3, 9216));
    }

    #[test]
    fn a_missing_database_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            audit(dir.path(), false),
            Err(AuditError::NoDatabase { .. })
        ));
        assert!(!dir.path().join(DB_DIR).exists());
    }
}
