//! Where the store's master key comes from: a key file or a passphrase.
//!
//! Every store directory has a small plaintext *header* (`store.header`,
//! JSON) that says which key source the store was created with, holds the
//! Argon2id salt and parameters for a passphrase store, and an *unlock
//! verifier* (a known block sealed under a subkey of the master key). The
//! verifier is how a wrong passphrase or a wrong key file becomes a typed
//! error at open, instead of a `Decrypt` error on the first read.
//!
//! - **Key file** (the default): 32 random bytes in a file created with
//!   `create_new` and mode 0600 (permissions set again before any byte is
//!   written, whatever the umask). A key file that group or others can read
//!   is refused, naming the `chmod` that fixes it: a key others can read
//!   protects nothing. The key file guards a copied or synced database
//!   directory; it does not guard against someone who can read the user's
//!   whole home directory — that is what the passphrase is for.
//! - **Passphrase**: Argon2id, m = 64 MiB, t = 3, p = 1, with a random
//!   16-byte salt. That is RFC 9106's memory-constrained profile with one
//!   lane (the `argon2` crate computes lanes on one thread anyway): a few
//!   hundred milliseconds once per unlock, and 64 MiB per guess for an
//!   attacker. The parameters live in the header, so they can be raised for
//!   new stores without breaking old ones; on open they are bounded, so a
//!   doctored header cannot make the client allocate gigabytes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::StoreError;
use super::crypt::{MasterKey, check_verifier, make_verifier};

/// File name of the plaintext header inside a store directory.
pub(crate) const HEADER_FILE: &str = "store.header";
/// File name of the default key file inside a store directory.
pub(crate) const KEY_FILE: &str = "store.key";

const HEADER_FORMAT: &str = "sotto-store";
const HEADER_VERSION: u32 = 1;

const ARGON2_M_KIB: u32 = 64 * 1024;
const ARGON2_T: u32 = 3;
const ARGON2_P: u32 = 1;
const SALT_LEN: usize = 16;

/// How a store's master key is obtained. Holds a secret, so no `Debug`.
pub enum KeySource {
    /// A random 32-byte key in this file, created (mode 0600) when a new
    /// store is created and the file does not exist yet.
    KeyFile(PathBuf),
    /// A passphrase, stretched with Argon2id. The bytes are used exactly
    /// as given (callers strip a trailing newline).
    Passphrase(Zeroizing<String>),
}

impl KeySource {
    /// The default: the key file `store.key` inside the store directory.
    pub fn key_file_in(dir: &Path) -> Self {
        Self::KeyFile(dir.join(KEY_FILE))
    }

    /// A passphrase key source.
    pub fn passphrase(passphrase: impl Into<String>) -> Self {
        Self::Passphrase(Zeroizing::new(passphrase.into()))
    }

    fn describe(&self) -> &'static str {
        match self {
            Self::KeyFile(_) => "key file",
            Self::Passphrase(_) => "passphrase",
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    key: HeaderKey,
    /// Hex of the unlock verifier.
    verifier: String,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum HeaderKey {
    KeyFile,
    Passphrase { argon2id: Argon2Header },
}

impl HeaderKey {
    fn describe(&self) -> &'static str {
        match self {
            Self::KeyFile => "key file",
            Self::Passphrase { .. } => "passphrase",
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Argon2Header {
    m_kib: u32,
    t: u32,
    p: u32,
    /// Hex of the salt.
    salt: String,
}

/// Returns the master key of the store in `dir`, creating the header (and
/// the key file or salt) if the store is new. `has_data` says whether the
/// database already exists: data without a header is refused rather than
/// silently given a new key it cannot be read with.
pub(crate) fn unlock(
    dir: &Path,
    source: KeySource,
    has_data: bool,
) -> Result<MasterKey, StoreError> {
    let header_path = dir.join(HEADER_FILE);
    match read_header(&header_path)? {
        Some(header) => unlock_existing(&header_path, header, source),
        None if has_data => Err(StoreError::Header {
            path: header_path,
            reason: "the file is missing but the database exists".into(),
        }),
        None => create(&header_path, source),
    }
}

fn unlock_existing(
    header_path: &Path,
    header: Header,
    source: KeySource,
) -> Result<MasterKey, StoreError> {
    let bad = |reason: &str| StoreError::Header {
        path: header_path.to_path_buf(),
        reason: reason.into(),
    };
    if header.format != HEADER_FORMAT || header.version != HEADER_VERSION {
        return Err(bad("it is not a version 1 sotto store header"));
    }
    let verifier = hex::decode(&header.verifier).map_err(|_| bad("the verifier is not hex"))?;
    let (master, wrong) = match (&header.key, source) {
        (HeaderKey::KeyFile, KeySource::KeyFile(path)) => {
            let master = load_key_file(&path)?;
            (master, StoreError::WrongKeyFile { path })
        }
        (HeaderKey::Passphrase { argon2id }, KeySource::Passphrase(passphrase)) => {
            let salt = hex::decode(&argon2id.salt).map_err(|_| bad("the salt is not hex"))?;
            let in_bounds = (8 * 1024..=1024 * 1024).contains(&argon2id.m_kib)
                && (1..=16).contains(&argon2id.t)
                && (1..=8).contains(&argon2id.p)
                && (SALT_LEN..=64).contains(&salt.len());
            if !in_bounds {
                return Err(bad("the Argon2id parameters are out of bounds"));
            }
            let master = derive(&passphrase, &salt, argon2id.m_kib, argon2id.t, argon2id.p)?;
            (master, StoreError::WrongPassphrase)
        }
        (expected, given) => {
            return Err(StoreError::KeySourceMismatch {
                expected: expected.describe(),
                given: given.describe(),
            });
        }
    };
    if check_verifier(&master, &verifier) {
        Ok(master)
    } else {
        Err(wrong)
    }
}

fn create(header_path: &Path, source: KeySource) -> Result<MasterKey, StoreError> {
    let (master, key) = match source {
        KeySource::KeyFile(path) => {
            let master = match load_key_file(&path) {
                Err(StoreError::KeyFileMissing { .. }) => create_key_file(&path)?,
                other => other?,
            };
            (master, HeaderKey::KeyFile)
        }
        KeySource::Passphrase(passphrase) => {
            if passphrase.is_empty() {
                return Err(StoreError::EmptyPassphrase);
            }
            let mut salt = [0u8; SALT_LEN];
            getrandom::fill(&mut salt).map_err(StoreError::Random)?;
            let master = derive(&passphrase, &salt, ARGON2_M_KIB, ARGON2_T, ARGON2_P)?;
            let argon2id = Argon2Header {
                m_kib: ARGON2_M_KIB,
                t: ARGON2_T,
                p: ARGON2_P,
                salt: hex::encode(salt),
            };
            (master, HeaderKey::Passphrase { argon2id })
        }
    };
    let header = Header {
        format: HEADER_FORMAT.into(),
        version: HEADER_VERSION,
        key,
        verifier: hex::encode(make_verifier(&master)?),
    };
    write_header(header_path, &header)?;
    Ok(master)
}

fn derive(
    passphrase: &str,
    salt: &[u8],
    m_kib: u32,
    t: u32,
    p: u32,
) -> Result<MasterKey, StoreError> {
    let params = Params::new(m_kib, t, p, Some(32)).map_err(|e| StoreError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.as_bytes(), salt, out.as_mut())
        .map_err(|e| StoreError::Kdf(e.to_string()))?;
    Ok(MasterKey::from_bytes(*out))
}

fn read_header(path: &Path) -> Result<Option<Header>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_err("read", path, source)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Header {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// Writes the header atomically: temporary file, fsync, rename, fsync dir.
fn write_header(path: &Path, header: &Header) -> Result<(), StoreError> {
    let json = serde_json::to_vec_pretty(header).map_err(|e| StoreError::Header {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let tmp = path.with_extension("header.tmp");
    let mut file = private_file(OpenOptions::new().write(true).create(true).truncate(true))
        .open(&tmp)
        .map_err(|e| io_err("create", &tmp, e))?;
    file.write_all(&json)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_err("rename", path, e))?;
    sync_parent(path)
}

fn load_key_file(path: &Path) -> Result<MasterKey, StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StoreError::KeyFileMissing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io_err("open", path, e)),
    };
    // Check the open file, not the path, so a swap in between is caught.
    let meta = file.metadata().map_err(|e| io_err("inspect", path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::KeyFilePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    if meta.len() != 32 {
        return Err(StoreError::KeyFileMalformed {
            path: path.to_path_buf(),
            len: meta.len(),
        });
    }
    let mut key = Zeroizing::new([0u8; 32]);
    file.read_exact(key.as_mut())
        .map_err(|e| io_err("read", path, e))?;
    Ok(MasterKey::from_bytes(*key))
}

fn create_key_file(path: &Path) -> Result<MasterKey, StoreError> {
    let master = MasterKey::random()?;
    let mut file = private_file(OpenOptions::new().write(true).create_new(true))
        .open(path)
        .map_err(|e| io_err("create the key file", path, e))?;
    // The mode given to `open` is filtered by the umask (which can only
    // remove bits); set it explicitly anyway before the key is written.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err("restrict the permissions of", path, e))?;
    }
    file.write_all(master.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("write the key file", path, e))?;
    sync_parent(path)?;
    Ok(master)
}

fn private_file(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Makes a create or rename durable by syncing the directory entry.
fn sync_parent(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_err("sync the directory", parent, e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

pub(crate) fn io_err(action: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_created_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let a = unlock(dir.path(), KeySource::KeyFile(path.clone()), false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let b = unlock(dir.path(), KeySource::KeyFile(path), true).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
    }

    #[cfg(unix)]
    #[test]
    fn readable_key_file_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        unlock(dir.path(), KeySource::KeyFile(path.clone()), false).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = unlock(dir.path(), KeySource::KeyFile(path.clone()), true)
            .err()
            .unwrap();
        assert!(matches!(
            err,
            StoreError::KeyFilePermissions { mode: 0o644, .. }
        ));
        let msg = err.to_string();
        assert!(msg.contains("chmod 600"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn wrong_or_missing_or_malformed_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        unlock(dir.path(), KeySource::KeyFile(path.clone()), false).unwrap();

        let other = dir.path().join("other.key");
        create_key_file(&other).unwrap();
        assert!(matches!(
            unlock(dir.path(), KeySource::KeyFile(other), true),
            Err(StoreError::WrongKeyFile { .. })
        ));

        let missing = dir.path().join("missing.key");
        assert!(matches!(
            unlock(dir.path(), KeySource::KeyFile(missing), true),
            Err(StoreError::KeyFileMissing { .. })
        ));

        let short = dir.path().join("short.key");
        private_file(OpenOptions::new().write(true).create_new(true))
            .open(&short)
            .unwrap()
            .write_all(b"too short")
            .unwrap();
        assert!(matches!(
            unlock(dir.path(), KeySource::KeyFile(short), true),
            Err(StoreError::KeyFileMalformed { len: 9, .. })
        ));
    }

    #[test]
    fn passphrase_unlocks_and_wrong_one_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let a = unlock(dir.path(), KeySource::passphrase("correct horse"), false).unwrap();
        let b = unlock(dir.path(), KeySource::passphrase("correct horse"), true).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        let err = unlock(dir.path(), KeySource::passphrase("battery staple"), true)
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::WrongPassphrase));
        assert_eq!(err.to_string(), "the store passphrase is wrong");
    }

    #[test]
    fn key_source_mismatch_and_empty_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            unlock(dir.path(), KeySource::passphrase(""), false),
            Err(StoreError::EmptyPassphrase)
        ));
        unlock(dir.path(), KeySource::key_file_in(dir.path()), false).unwrap();
        assert!(matches!(
            unlock(dir.path(), KeySource::passphrase("x"), true),
            Err(StoreError::KeySourceMismatch {
                expected: "key file",
                given: "passphrase"
            })
        ));
    }

    #[test]
    fn data_without_header_and_doctored_header_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            unlock(dir.path(), KeySource::key_file_in(dir.path()), true),
            Err(StoreError::Header { .. })
        ));
        let header = Header {
            format: HEADER_FORMAT.into(),
            version: HEADER_VERSION,
            key: HeaderKey::Passphrase {
                argon2id: Argon2Header {
                    m_kib: u32::MAX,
                    t: 1,
                    p: 1,
                    salt: hex::encode([0u8; 16]),
                },
            },
            verifier: String::new(),
        };
        write_header(&dir.path().join(HEADER_FILE), &header).unwrap();
        assert!(matches!(
            unlock(dir.path(), KeySource::passphrase("x"), true),
            Err(StoreError::Header { .. })
        ));
        fs::write(dir.path().join(HEADER_FILE), b"{not json").unwrap();
        assert!(matches!(
            unlock(dir.path(), KeySource::passphrase("x"), true),
            Err(StoreError::Header { .. })
        ));
    }
}
