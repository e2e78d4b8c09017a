//! Device cards: what a device publishes so others can message it, signed
//! by the device's Olm ed25519 key.
//!
//! Before teams exist, people exchange cards by hand (`export` / `import`,
//! a `sotto-card:` string); later the same signed card is the device record
//! inside a directory entry.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sotto_proto::Message;
use sotto_proto::client::{DeviceCard, SignedCard};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature};

use crate::{EnvelopePublic, InboxPublic, KemPublic};

/// Domain separation for card signatures.
pub const CARD_TAG: &[u8] = b"sotto/card/v1";
/// Prefix of an exported card.
pub const CARD_PREFIX: &str = "sotto-card:";
const CARD_VERSION: u32 = 1;

/// A card could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// Not a `sotto-card:` string.
    #[error("this is not a sotto contact card (it should start with \"{CARD_PREFIX}\")")]
    NotACard,
    /// The encoding is damaged.
    #[error("the contact card is damaged: {0}")]
    Malformed(String),
    /// The signature does not verify under the card's own signing key.
    #[error("the contact card's signature does not verify; it was altered")]
    BadSignature,
    /// A newer card format.
    #[error("the contact card has version {0}, which this sotto does not understand; update sotto")]
    UnsupportedVersion(u32),
}

/// A verified device card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Card {
    /// The member's handle, as the card claims it.
    pub handle: String,
    /// Olm curve25519 identity key: the device's identity.
    pub identity_key: Curve25519PublicKey,
    /// Olm ed25519 signing key, which signed this card.
    pub signing_key: Ed25519PublicKey,
    /// Key sealed envelopes to this device are sealed to.
    pub envelope_key: EnvelopePublic,
    /// The device's request inbox.
    pub inbox_key: InboxPublic,
    /// Olm fallback key for starting sessions.
    pub fallback_key: Curve25519PublicKey,
    /// ML-KEM-768 key for the hybrid envelope; `None` on a card from a
    /// version before it (that device is sealed to classically).
    pub kem_key: Option<KemPublic>,
}

fn malformed(what: impl std::fmt::Display) -> CardError {
    CardError::Malformed(what.to_string())
}

fn key32(bytes: &[u8], what: &str) -> Result<[u8; 32], CardError> {
    bytes
        .try_into()
        .map_err(|_| malformed(format!("{what} must be 32 bytes")))
}

impl Card {
    fn to_proto(&self) -> DeviceCard {
        DeviceCard {
            version: CARD_VERSION,
            handle: self.handle.clone(),
            identity_key: self.identity_key.to_bytes().to_vec().into(),
            signing_key: self.signing_key.as_bytes().to_vec().into(),
            envelope_key: self.envelope_key.as_bytes().to_vec().into(),
            inbox_key: self.inbox_key.as_bytes().to_vec().into(),
            fallback_key: self.fallback_key.to_bytes().to_vec().into(),
            kem_key: self
                .kem_key
                .as_ref()
                .map(|k| k.as_bytes().to_vec())
                .unwrap_or_default()
                .into(),
        }
    }

    /// The bytes a device signs for its card.
    pub(crate) fn signing_message(card_bytes: &[u8]) -> Vec<u8> {
        [CARD_TAG, card_bytes].concat()
    }

    /// Encodes the card and signs it with `sign` (the device's Olm key).
    pub(crate) fn sign(&self, sign: impl FnOnce(&[u8]) -> Ed25519Signature) -> SignedCard {
        let card = self.to_proto().encode_to_vec();
        let signature = sign(&Self::signing_message(&card));
        SignedCard {
            card: card.into(),
            signature: signature.to_bytes().to_vec().into(),
        }
    }

    /// Verifies a signed card and parses it.
    pub fn verify(signed: &SignedCard) -> Result<Self, CardError> {
        let card = crate::canonical::decode::<DeviceCard>(&signed.card)
            .ok_or_else(|| malformed("the card does not decode"))?;
        if card.version != CARD_VERSION {
            return Err(CardError::UnsupportedVersion(card.version));
        }
        let signing_key = Ed25519PublicKey::from_slice(&key32(&card.signing_key, "signing key")?)
            .map_err(malformed)?;
        let signature =
            Ed25519Signature::from_slice(&signed.signature).map_err(|_| CardError::BadSignature)?;
        signing_key
            .verify(&Self::signing_message(&signed.card), &signature)
            .map_err(|_| CardError::BadSignature)?;
        let handle = card.handle;
        if handle.is_empty() || handle.len() > 64 || handle.chars().any(char::is_control) {
            return Err(malformed("the handle must be 1 to 64 printable characters"));
        }
        Ok(Self {
            handle,
            identity_key: Curve25519PublicKey::from_bytes(key32(
                &card.identity_key,
                "identity key",
            )?),
            signing_key,
            envelope_key: EnvelopePublic::from_slice(&card.envelope_key).map_err(malformed)?,
            inbox_key: InboxPublic::from_slice(&card.inbox_key).map_err(malformed)?,
            fallback_key: Curve25519PublicKey::from_bytes(key32(
                &card.fallback_key,
                "fallback key",
            )?),
            kem_key: if card.kem_key.is_empty() {
                None
            } else {
                Some(KemPublic::from_slice(&card.kem_key).map_err(malformed)?)
            },
        })
    }

    /// Parses and verifies an exported `sotto-card:` string; returns the
    /// card and the signed form to store.
    pub fn import(text: &str) -> Result<(Self, SignedCard), CardError> {
        let encoded = text
            .trim()
            .strip_prefix(CARD_PREFIX)
            .ok_or(CardError::NotACard)?;
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(malformed)?;
        let signed = crate::canonical::decode::<SignedCard>(&bytes)
            .ok_or_else(|| malformed("the signed card does not decode"))?;
        Ok((Self::verify(&signed)?, signed))
    }

    /// Encodes a signed card as the `sotto-card:` string [`Card::import`]
    /// reads: `import(export(c))` gives `c` back, and `export` of an
    /// imported card gives the imported text (less surrounding whitespace).
    pub fn export(signed: &SignedCard) -> String {
        format!(
            "{CARD_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(signed.encode_to_vec())
        )
    }

    /// Whether envelopes to and from this device are post-quantum hybrid
    /// (its card carries an ML-KEM key).
    pub fn is_post_quantum(&self) -> bool {
        self.kem_key.is_some()
    }

    /// A short fingerprint of the device identity, for display.
    pub fn device_id(&self) -> String {
        hex::encode(&self.identity_key.to_bytes()[..8])
    }
}

/// Encodes a signed card as a `sotto-card:` string.
pub(crate) fn export(signed: &SignedCard) -> String {
    Card::export(signed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::device::Device;

    #[test]
    fn the_ml_kem_key_is_signed_with_the_card_and_cards_without_it_still_parse() {
        let device = Device::generate("ann");
        let signed = device.signed_card();
        let (card, _) = Card::import(&Card::export(&signed)).unwrap();
        assert_eq!(card.kem_key, Some(device.kem.public()));
        assert!(card.is_post_quantum());

        // A card from before the hybrid envelope: no field 8.
        let mut old = card.clone();
        old.kem_key = None;
        let old_signed = old.sign(|m| device.account.sign(m));
        let proto = DeviceCard::decode(old_signed.card.clone()).unwrap();
        assert!(proto.kem_key.is_empty());
        let parsed = Card::verify(&old_signed).unwrap();
        assert_eq!(parsed.kem_key, None);
        assert!(!parsed.is_post_quantum());

        // Swapping the key (stripping it, or another one) breaks the
        // signature.
        let mut stripped = DeviceCard::decode(signed.card.clone()).unwrap();
        stripped.kem_key = Default::default();
        let forged = SignedCard {
            card: stripped.encode_to_vec().into(),
            signature: signed.signature.clone(),
        };
        assert!(matches!(
            Card::verify(&forged),
            Err(CardError::BadSignature)
        ));

        // A signed card with a malformed key is refused, typed.
        let mut bad = DeviceCard::decode(signed.card.clone()).unwrap();
        bad.kem_key = vec![0xff; crate::KEM_PUBLIC_LEN].into();
        let bytes = bad.encode_to_vec();
        let bad_signed = SignedCard {
            signature: device
                .account
                .sign(Card::signing_message(&bytes))
                .to_bytes()
                .to_vec()
                .into(),
            card: bytes.into(),
        };
        assert!(matches!(
            Card::verify(&bad_signed),
            Err(CardError::Malformed(_))
        ));
    }
}
