//! Value encryption, key blinding and the unlock verifier.
//!
//! One 32-byte *master key* (from the key file or from Argon2id) is never
//! used directly: HKDF-SHA256 expands it into one subkey per job, each named
//! by a `sotto/store/v1/...` info string, so a bug or a leak in one use
//! cannot be turned against another.
//!
//! A sealed value is `version(1) || nonce(12) || ChaCha20-Poly1305(value)`
//! with associated data `version || tree tag || key`. The random nonce is
//! drawn fresh per write (2^-32 collision odds only after ~2^48 writes under
//! one key, far beyond a client's lifetime), and the associated data binds
//! the ciphertext to its slot: a value copied or swapped to another key or
//! tree by someone with write access to the disk fails to open.

use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{BlindId, StoreError, Tree};

/// Format version of a sealed value (first byte).
const VALUE_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to its plaintext.
pub(crate) const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

const INFO_VALUE: &[u8] = b"sotto/store/v1/value";
const INFO_KEY_MAC: &[u8] = b"sotto/store/v1/key-mac";
const INFO_VERIFIER: &[u8] = b"sotto/store/v1/verifier";
/// The known block the verifier encrypts, and its associated data.
const VERIFIER_BLOCK: &[u8] = b"sotto/store/v1/verifier-block";

/// The store's 32-byte root secret. Zeroized on drop; deliberately no
/// `Debug`, `Clone` or accessor outside this module tree.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct MasterKey([u8; 32]);

impl MasterKey {
    /// Wraps key bytes (from a key file or a KDF).
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A fresh key from the operating system's random number generator.
    pub(crate) fn random() -> Result<Self, StoreError> {
        let mut key = Self([0; 32]);
        getrandom::fill(&mut key.0).map_err(StoreError::Random)?;
        Ok(key)
    }

    /// The raw bytes, for writing a new key file.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn subkey(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        // The master key is already uniformly random (OS RNG or Argon2id
        // output), so HKDF's extract salt adds nothing; info separates uses.
        let hk = Hkdf::<Sha256>::new(None, &self.0);
        let mut out = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's 255 * 32 output limit.
        hk.expand(info, out.as_mut())
            .expect("HKDF-SHA256 can always expand 32 bytes");
        out
    }
}

/// The per-store cipher state: the value AEAD and the key-blinding MAC key.
/// Both zeroize on drop (the AEAD via chacha20poly1305's `zeroize`
/// feature); no `Debug`.
pub(crate) struct Crypt {
    value: ChaCha20Poly1305,
    key_mac: Zeroizing<[u8; 32]>,
}

impl Crypt {
    /// Derives the subkeys from a master key.
    pub(crate) fn new(master: &MasterKey) -> Self {
        let value_key = master.subkey(INFO_VALUE);
        Self {
            value: ChaCha20Poly1305::new((&*value_key).into()),
            key_mac: master.subkey(INFO_KEY_MAC),
        }
    }

    /// Encrypts `plaintext` for the slot (`tree`, `key`).
    pub(crate) fn seal(
        &self,
        tree: Tree,
        key: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(StoreError::Random)?;
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.push(VALUE_VERSION);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        let aad = associated_data(tree, key);
        let sealed = self
            .value
            .encrypt_in_place(&nonce.into(), &aad, &mut body)
            .map_err(|_| StoreError::ValueTooLarge {
                tree,
                len: plaintext.len(),
            });
        if sealed.is_err() {
            body.zeroize();
        }
        sealed?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts a value read from the slot (`tree`, `key`).
    pub(crate) fn open(
        &self,
        tree: Tree,
        key: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let (version, rest) = sealed.split_first().ok_or(StoreError::Corrupt {
            tree,
            reason: "the value is empty",
        })?;
        if *version != VALUE_VERSION {
            return Err(StoreError::Corrupt {
                tree,
                reason: "the value has an unknown format version",
            });
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreError::Corrupt {
                tree,
                reason: "the value is shorter than its nonce and tag",
            });
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| StoreError::Corrupt {
            tree,
            reason: "the value's nonce is truncated",
        })?;
        let mut plain = Zeroizing::new(body.to_vec());
        self.value
            .decrypt_in_place(&nonce.into(), &associated_data(tree, key), &mut *plain)
            .map_err(|_| StoreError::Decrypt { tree })?;
        Ok(plain)
    }

    /// Keyed, truncated HMAC-SHA256 of `id` (see [`BlindId`]).
    pub(crate) fn blind(&self, id: &[u8]) -> BlindId {
        let mut out = [0u8; BlindId::LEN];
        let tag = self.mac().chain_update(id).finalize().into_bytes();
        out.copy_from_slice(&tag[..BlindId::LEN]);
        BlindId(out)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        <Hmac<Sha256> as KeyInit>::new_from_slice(self.key_mac.as_ref())
            .expect("HMAC-SHA256 accepts a 32-byte key")
    }
}

fn associated_data(tree: Tree, key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(2 + key.len());
    aad.push(VALUE_VERSION);
    aad.push(tree.tag());
    aad.extend_from_slice(key);
    aad
}

/// Makes the unlock verifier: the known block sealed under its own subkey.
/// Stored in the plaintext header, it lets `open` tell a wrong passphrase or
/// key file from a corrupt database before touching any value.
pub(crate) fn make_verifier(master: &MasterKey) -> Result<Vec<u8>, StoreError> {
    let cipher = ChaCha20Poly1305::new((&*master.subkey(INFO_VERIFIER)).into());
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(StoreError::Random)?;
    let mut body = VERIFIER_BLOCK.to_vec();
    cipher
        .encrypt_in_place(&nonce.into(), VERIFIER_BLOCK, &mut body)
        .expect("ChaCha20-Poly1305 can seal a 29-byte block");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Whether `verifier` was made by [`make_verifier`] under `master`.
pub(crate) fn check_verifier(master: &MasterKey, verifier: &[u8]) -> bool {
    if verifier.len() != NONCE_LEN + VERIFIER_BLOCK.len() + TAG_LEN {
        return false;
    }
    let (nonce, body) = verifier.split_at(NONCE_LEN);
    let Ok(nonce) = <[u8; NONCE_LEN]>::try_from(nonce) else {
        return false;
    };
    let cipher = ChaCha20Poly1305::new((&*master.subkey(INFO_VERIFIER)).into());
    let mut body = body.to_vec();
    cipher
        .decrypt_in_place(&nonce.into(), VERIFIER_BLOCK, &mut body)
        .is_ok()
        && body == VERIFIER_BLOCK
}

/// Fuzzing hook, not API: opens a stored value under the master key
/// `master` exactly as the store does on every read, so the `store_record`
/// fuzz target reaches the real decoding path without a store.
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub fn fuzz_open_value(
    master: [u8; 32],
    tree: Tree,
    key: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    Crypt::new(&MasterKey::from_bytes(master)).open(tree, key, sealed)
}

/// Fuzzing hook, not API: seals a value as the store does on write (for
/// seed corpora and round-trip checks).
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub fn fuzz_seal_value(
    master: [u8; 32],
    tree: Tree,
    key: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, StoreError> {
    Crypt::new(&MasterKey::from_bytes(master)).seal(tree, key, plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypt() -> Crypt {
        Crypt::new(&MasterKey::random().unwrap())
    }

    #[test]
    fn seal_open_round_trip_and_fresh_nonces() {
        let c = crypt();
        let a = c.seal(Tree::History, b"k", b"hello").unwrap();
        let b = c.seal(Tree::History, b"k", b"hello").unwrap();
        assert_ne!(a, b, "each write draws a fresh nonce");
        assert_eq!(a.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(&**c.open(Tree::History, b"k", &a).unwrap(), b"hello");
    }

    #[test]
    fn value_is_bound_to_tree_and_key() {
        let c = crypt();
        let sealed = c.seal(Tree::History, b"k1", b"v").unwrap();
        assert!(matches!(
            c.open(Tree::History, b"k2", &sealed),
            Err(StoreError::Decrypt {
                tree: Tree::History
            })
        ));
        assert!(matches!(
            c.open(Tree::Outbox, b"k1", &sealed),
            Err(StoreError::Decrypt { tree: Tree::Outbox })
        ));
    }

    #[test]
    fn malformed_values_are_typed_errors() {
        let c = crypt();
        for bad in [&[][..], &[1u8; 5][..], &[9u8; 40][..]] {
            assert!(matches!(
                c.open(Tree::Meta, b"k", bad),
                Err(StoreError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn other_key_cannot_open() {
        let sealed = crypt().seal(Tree::Meta, b"k", b"v").unwrap();
        assert!(matches!(
            crypt().open(Tree::Meta, b"k", &sealed),
            Err(StoreError::Decrypt { .. })
        ));
    }

    #[test]
    fn verifier_accepts_only_its_key() {
        let key = MasterKey::random().unwrap();
        let v = make_verifier(&key).unwrap();
        assert!(check_verifier(&key, &v));
        assert!(!check_verifier(&MasterKey::random().unwrap(), &v));
        assert!(!check_verifier(&key, &v[1..]));
    }

    #[test]
    fn blind_is_keyed_and_deterministic() {
        let c = crypt();
        assert_eq!(c.blind(b"@alice").0, c.blind(b"@alice").0);
        assert_ne!(c.blind(b"@alice").0, c.blind(b"@bob").0);
        assert_ne!(c.blind(b"@alice").0, crypt().blind(b"@alice").0);
    }
}
