//! The relay's persistent self-signed certificate.
//!
//! Clients do not use the web PKI: they pin the SHA-256 fingerprint of this
//! certificate, which invite codes carry. It is created on first start and
//! reused forever after, so invites stay valid across restarts.

use std::fs;
use std::io::Write;
use std::path::Path;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// The TLS server name every relay certificate carries; clients ask for it
/// (authentication is by fingerprint, not by name).
pub const RELAY_SERVER_NAME: &str = "sotto-relay";

const CERT_FILE: &str = "relay-cert.der";
const KEY_FILE: &str = "relay-key.der";

/// Loading or creating the certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// File system error.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What we tried.
        action: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// rcgen could not create a certificate.
    #[error("cannot create the relay certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Exactly one of the certificate and key files exists.
    #[error(
        "{0} exists without its pair; restore the missing file from a backup, or remove both to make a new certificate (members then need new invite codes)"
    )]
    Incomplete(String),
}

/// The relay's certificate and private key.
pub struct RelayCert {
    /// DER certificate.
    pub cert: CertificateDer<'static>,
    /// PKCS#8 private key.
    pub key: PrivateKeyDer<'static>,
}

impl RelayCert {
    /// Loads the certificate from `dir`, creating it on first start.
    /// Returns the certificate and whether it was just created.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), CertError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let io = |action, path: &Path| {
            let path = path.display().to_string();
            move |source| CertError::Io {
                action,
                path,
                source,
            }
        };
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let cert = fs::read(&cert_path).map_err(io("read", &cert_path))?;
                let key = fs::read(&key_path).map_err(io("read", &key_path))?;
                Ok((
                    Self {
                        cert: CertificateDer::from(cert),
                        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
                    },
                    false,
                ))
            }
            (false, false) => {
                let generated = rcgen::generate_simple_self_signed(vec![
                    RELAY_SERVER_NAME.to_owned(),
                    "localhost".to_owned(),
                ])?;
                let key = generated.signing_key.serialize_der();
                write_private(&key_path, &key).map_err(io("write", &key_path))?;
                fs::write(&cert_path, generated.cert.der()).map_err(io("write", &cert_path))?;
                Ok((
                    Self {
                        cert: generated.cert.der().clone(),
                        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
                    },
                    true,
                ))
            }
            (true, false) => Err(CertError::Incomplete(cert_path.display().to_string())),
            (false, true) => Err(CertError::Incomplete(key_path.display().to_string())),
        }
    }

    /// SHA-256 of the DER certificate: what clients pin.
    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.cert)
    }
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(cert: &[u8]) -> [u8; 32] {
    Sha256::digest(cert).into()
}

/// Writes a file readable only by its owner (created 0600 before any byte
/// is written).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_persists_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = RelayCert::load_or_create(dir.path()).unwrap();
        assert!(created);
        let (second, created) = RelayCert::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(first.fingerprint(), second.fingerprint());
    }

    #[test]
    fn a_lone_certificate_file_is_an_error_not_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        RelayCert::load_or_create(dir.path()).unwrap();
        fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        assert!(matches!(
            RelayCert::load_or_create(dir.path()),
            Err(CertError::Incomplete(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn the_private_key_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        RelayCert::load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
