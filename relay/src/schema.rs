//! The data directory's schema version (issue 24 item 6).
//!
//! `schema-version` in the data directory holds one number: the layout of
//! the files and records in it. A relay refuses to open a data directory of
//! a newer schema than it knows (a downgrade would misread or damage it)
//! and migrates an older one in place before it opens anything else.
//!
//! | version | what |
//! |---|---|
//! | 1 | every data directory made before the marker existed: no `schema-version` file, but relay files (`relay-cert.der`, `db/`, ...) |
//! | 2 | the marker; records as version 1 |
//!
//! The migration 1 → 2 writes the marker only: the record formats of
//! version 1 data directories (one-blob values and unsealed chunks from
//! before at-rest sealing, 33-byte accounts from before device
//! registrations) are still read as they are; nothing needs rewriting to
//! be served. A later version that changes records adds its step to
//! [`migrate`].

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The schema this relay writes and reads.
pub const SCHEMA_VERSION: u32 = 2;
/// The marker file in the data directory.
pub(crate) const FILE: &str = "schema-version";
/// Files whose presence shows a data directory from before the marker.
const RELAY_FILES: [&str; 5] = [
    "relay-cert.der",
    "relay-key.der",
    "db",
    "issuer-key",
    "bootstrap-code",
];

/// The data directory's schema cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Written by a newer release.
    #[error(
        "{dir} holds relay data of schema version {found}, newer than the {SCHEMA_VERSION} this sotto-relay understands: a newer release wrote it. Run that release (or a later one), or restore a backup made with this one; nothing was changed"
    )]
    Newer {
        /// The data directory.
        dir: PathBuf,
        /// The version found.
        found: u32,
    },
    /// The marker holds something else than a version.
    #[error(
        "{path} does not hold a schema version ({content:?}): the data directory is damaged or not a sotto relay's"
    )]
    Unreadable {
        /// The marker file.
        path: PathBuf,
        /// What it holds (at most 40 characters).
        content: String,
    },
    /// The marker could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was tried.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The schema version of the data in `dir`: the marker's, 1 for relay
/// files without a marker, `None` for a directory with no relay data (or
/// none at all).
pub fn detect(dir: &Path) -> Result<Option<u32>, SchemaError> {
    let path = dir.join(FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|v| *v >= 1)
            .map(Some)
            .ok_or_else(|| SchemaError::Unreadable {
                path,
                content: text.chars().take(40).collect(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let old = RELAY_FILES.iter().any(|f| dir.join(f).exists());
            Ok(old.then_some(1))
        }
        Err(source) => Err(SchemaError::Io {
            action: "read",
            path,
            source,
        }),
    }
}

/// Checks that this relay can read `dir` as it is (audit, backup,
/// verify): a newer schema is an error, an older one is fine (the code
/// reads every older record format). Changes nothing.
pub fn check(dir: &Path) -> Result<Option<u32>, SchemaError> {
    let found = detect(dir)?;
    match found {
        Some(found) if found > SCHEMA_VERSION => Err(SchemaError::Newer {
            dir: dir.to_owned(),
            found,
        }),
        _ => Ok(found),
    }
}

/// Makes `dir` current before the relay opens it: refuses a newer schema,
/// migrates an older one step by step, marks a new directory. Returns the
/// version found (`None` for a new directory).
pub fn prepare(dir: &Path) -> Result<Option<u32>, SchemaError> {
    let found = check(dir)?;
    let mut version = found.unwrap_or(SCHEMA_VERSION);
    while version < SCHEMA_VERSION {
        migrate(dir, version)?;
        version += 1;
        write(dir, version)?;
        tracing::info!(from = version - 1, to = version, "data directory migrated");
    }
    if found.is_none() {
        write(dir, SCHEMA_VERSION)?;
    }
    Ok(found)
}

/// The step from `from` to `from + 1`.
fn migrate(_dir: &Path, from: u32) -> Result<(), SchemaError> {
    // 1 → 2 adds the marker only, which the caller writes after each step.
    debug_assert!(from < SCHEMA_VERSION);
    Ok(())
}

/// Writes the marker atomically: a temporary file, fsynced, renamed over
/// the marker, the directory fsynced.
pub(crate) fn write(dir: &Path, version: u32) -> Result<(), SchemaError> {
    let path = dir.join(FILE);
    let temp = dir.join(format!("{FILE}.tmp"));
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| SchemaError::Io {
            action,
            path,
            source,
        }
    };
    let mut file = fs::File::create(&temp).map_err(io("create", &temp))?;
    file.write_all(format!("{version}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("write", &temp))?;
    drop(file);
    fs::rename(&temp, &path).map_err(io("rename", &path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_dir_is_marked_current() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(prepare(dir.path()).unwrap(), None);
        assert_eq!(detect(dir.path()).unwrap(), Some(SCHEMA_VERSION));
    }

    #[test]
    fn relay_files_without_a_marker_are_version_1_and_migrate() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("relay-cert.der"), b"x").unwrap();
        assert_eq!(check(dir.path()).unwrap(), Some(1));
        assert_eq!(prepare(dir.path()).unwrap(), Some(1));
        assert_eq!(detect(dir.path()).unwrap(), Some(SCHEMA_VERSION));
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), "99\n").unwrap();
        let error = prepare(dir.path()).unwrap_err();
        assert!(matches!(error, SchemaError::Newer { found: 99, .. }));
        assert!(error.to_string().contains("newer"));
        assert_eq!(fs::read_to_string(dir.path().join(FILE)).unwrap(), "99\n");
    }

    #[test]
    fn a_garbled_marker_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), "two").unwrap();
        assert!(matches!(
            check(dir.path()),
            Err(SchemaError::Unreadable { .. })
        ));
    }
}
