//! The one-time admin bootstrap code.
//!
//! Created on the relay's first start and printed once; `sotto-relay
//! bootstrap-code` prints it again until it is used. The teams layer
//! consumes it when the admin runs `sotto team create`. It lives in a 0600
//! file rather than the database so it can be re-printed while the relay
//! runs (sled locks its directory).

use std::fs;
use std::path::{Path, PathBuf};

use crate::cert::write_private;

const FILE: &str = "bootstrap-code";
/// Prefix that makes a bootstrap code recognisable.
pub const PREFIX: &str = "sotto-boot-";

/// The bootstrap code file in `data_dir`.
pub(crate) fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Creates the code if this data dir never had one; returns it if it was
/// created now (to print once).
pub(crate) fn create_if_first_start(
    data_dir: &Path,
    first_start: bool,
) -> std::io::Result<Option<String>> {
    if !first_start {
        return Ok(None);
    }
    let mut secret = [0u8; 16];
    getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
    let code = format!("{PREFIX}{}", hex::encode(secret));
    write_private(&path(data_dir), code.as_bytes())?;
    Ok(Some(code))
}

/// The unused bootstrap code, if any.
pub fn read(data_dir: &Path) -> std::io::Result<Option<String>> {
    match fs::read_to_string(path(data_dir)) {
        Ok(code) => Ok(Some(code.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes the used code (bootstrap succeeded).
pub(crate) fn remove(data_dir: &Path) -> std::io::Result<()> {
    match fs::remove_file(path(data_dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_readable() {
        let dir = tempfile::tempdir().unwrap();
        let code = create_if_first_start(dir.path(), true).unwrap().unwrap();
        assert!(code.starts_with(PREFIX));
        assert_eq!(read(dir.path()).unwrap(), Some(code));
        assert_eq!(create_if_first_start(dir.path(), false).unwrap(), None);
    }
}
