//! This device's long-term keys (DESIGN §3): a vodozemac Olm `Account`, the
//! x25519 envelope key, and the request-inbox key. Created once, persisted
//! in the encrypted store, never logged. The request-inbox key alone
//! rotates (DESIGN §4): on a schedule and whenever the team directory key
//! does (a revocation); the one it replaced is still read for a grace
//! period, for first messages sent with the old card.

use serde::{Deserialize, Serialize};
use sotto_proto::client::SignedCard;
use vodozemac::olm::{Account, AccountPickle};
use zeroize::Zeroizing;

use crate::card::Card;
use crate::{EnvelopeSecret, InboxKey, KEM_SEED_LEN, KemSecret, Store, Tree};

const DEVICE_KEY: &[u8] = b"device";

/// The persisted form (inside the encrypted store).
#[derive(Serialize, Deserialize)]
struct DeviceRecord {
    handle: String,
    account: AccountPickle,
    envelope_secret: [u8; 32],
    request_inbox_seed: [u8; 32],
    /// When the request-inbox key was made (unix seconds; 0 in records
    /// from before rotation: due at once).
    #[serde(default)]
    request_inbox_since: u64,
    /// The request-inbox key before the last rotation, and until when
    /// (unix seconds) it is still read.
    #[serde(default)]
    previous_request_inbox: Option<([u8; 32], u64)>,
    /// The ML-KEM-768 key's 64-byte seed as two halves (`d`, `z`); absent
    /// in records from before the hybrid envelope (one is made at load).
    #[serde(default)]
    kem_seed: Option<([u8; 32], [u8; 32])>,
}

/// A device's secrets. No `Debug`: nothing here may reach a log.
pub struct Device {
    pub(crate) handle: String,
    pub(crate) account: Account,
    pub(crate) envelope: EnvelopeSecret,
    /// The ML-KEM-768 key of the hybrid envelope (DESIGN §5.1).
    pub(crate) kem: KemSecret,
    /// Set when [`Device::load`] made the ML-KEM key (a record from before
    /// it): the record must be saved, and the card published again.
    pub(crate) kem_fresh: bool,
    pub(crate) request_inbox: InboxKey,
    pub(crate) request_inbox_since: u64,
    pub(crate) previous_request_inbox: Option<(InboxKey, u64)>,
}

/// Loading or saving the device failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] crate::StoreError),
    /// The stored device record is unreadable.
    #[error("the stored device keys are damaged: {0}")]
    Corrupt(String),
}

impl Device {
    /// New keys for a member's device.
    pub fn generate(handle: &str) -> Self {
        let mut account = Account::new();
        // Not marked as published: vodozemac reports only unpublished
        // fallback keys, and the card must always carry it.
        account.generate_fallback_key();
        Self {
            handle: handle.to_owned(),
            account,
            envelope: EnvelopeSecret::generate(),
            kem: KemSecret::generate(),
            kem_fresh: false,
            request_inbox: InboxKey::generate(),
            request_inbox_since: 0,
            previous_request_inbox: None,
        }
    }

    /// Replaces the request-inbox key with a fresh one made at `now_secs`;
    /// the old one is still read until `now_secs + grace_secs`.
    pub(crate) fn rotate_request_inbox(&mut self, now_secs: u64, grace_secs: u64) {
        let old = std::mem::replace(&mut self.request_inbox, InboxKey::generate());
        self.previous_request_inbox = Some((old, now_secs.saturating_add(grace_secs)));
        self.request_inbox_since = now_secs;
    }

    /// The request-inbox keys to read at `now_secs`: the current one, and
    /// the one before it while its grace period lasts.
    pub(crate) fn request_inboxes(&self, now_secs: u64) -> Vec<&InboxKey> {
        let mut keys = vec![&self.request_inbox];
        if let Some((previous, until)) = &self.previous_request_inbox
            && now_secs < *until
        {
            keys.push(previous);
        }
        keys
    }

    /// The handle this device belongs to.
    pub fn handle(&self) -> &str {
        &self.handle
    }

    /// Serialises the device (secrets included) for the encrypted store.
    pub(crate) fn record(&self) -> Result<Zeroizing<Vec<u8>>, DeviceError> {
        let seed = self.kem.to_seed();
        let (d, z) = seed.split_at(KEM_SEED_LEN / 2);
        let mut record = DeviceRecord {
            handle: self.handle.clone(),
            account: self.account.pickle(),
            envelope_secret: *self.envelope.to_bytes(),
            request_inbox_seed: *self.request_inbox.seed_bytes(),
            request_inbox_since: self.request_inbox_since,
            previous_request_inbox: self
                .previous_request_inbox
                .as_ref()
                .map(|(key, until)| (*key.seed_bytes(), *until)),
            kem_seed: Some((
                d.try_into().unwrap_or_default(),
                z.try_into().unwrap_or_default(),
            )),
        };
        let bytes = serde_json::to_vec(&record)
            .map(Zeroizing::new)
            .map_err(|e| DeviceError::Corrupt(e.to_string()));
        zeroize::Zeroize::zeroize(&mut record.envelope_secret);
        zeroize::Zeroize::zeroize(&mut record.request_inbox_seed);
        if let Some((d, z)) = &mut record.kem_seed {
            zeroize::Zeroize::zeroize(d);
            zeroize::Zeroize::zeroize(z);
        }
        bytes
    }

    /// Writes the device to the store.
    pub fn save(&self, store: &dyn Store) -> Result<(), DeviceError> {
        store.put(Tree::Identity, DEVICE_KEY, &self.record()?)?;
        Ok(())
    }

    /// The store key of the device record (for batched saves).
    pub(crate) fn store_key() -> &'static [u8] {
        DEVICE_KEY
    }

    /// Loads the device, if this store has one.
    pub fn load(store: &dyn Store) -> Result<Option<Self>, DeviceError> {
        let Some(bytes) = store.get(Tree::Identity, DEVICE_KEY)? else {
            return Ok(None);
        };
        let mut record: DeviceRecord =
            serde_json::from_slice(&bytes).map_err(|e| DeviceError::Corrupt(e.to_string()))?;
        let (kem, kem_fresh) = match &record.kem_seed {
            Some((d, z)) => {
                let mut seed = Zeroizing::new([0u8; KEM_SEED_LEN]);
                seed[..32].copy_from_slice(d);
                seed[32..].copy_from_slice(z);
                (KemSecret::from_seed(&seed), false)
            }
            None => (KemSecret::generate(), true),
        };
        if let Some((d, z)) = &mut record.kem_seed {
            zeroize::Zeroize::zeroize(d);
            zeroize::Zeroize::zeroize(z);
        }
        let device = Self {
            handle: std::mem::take(&mut record.handle),
            account: Account::from_pickle(record.account),
            envelope: EnvelopeSecret::from_bytes(record.envelope_secret),
            kem,
            kem_fresh,
            request_inbox: InboxKey::from_seed(record.request_inbox_seed),
            request_inbox_since: record.request_inbox_since,
            previous_request_inbox: record
                .previous_request_inbox
                .map(|(seed, until)| (InboxKey::from_seed(seed), until)),
        };
        zeroize::Zeroize::zeroize(&mut record.envelope_secret);
        zeroize::Zeroize::zeroize(&mut record.request_inbox_seed);
        if let Some((seed, _)) = &mut record.previous_request_inbox {
            zeroize::Zeroize::zeroize(seed);
        }
        Ok(Some(device))
    }

    /// This device's card.
    pub fn card(&self) -> Card {
        let fallback_key = self
            .account
            .fallback_key()
            .into_values()
            .next()
            .expect("invariant: a fallback key is generated with every device");
        let keys = self.account.identity_keys();
        Card {
            handle: self.handle.clone(),
            identity_key: keys.curve25519,
            signing_key: keys.ed25519,
            envelope_key: self.envelope.public(),
            inbox_key: self.request_inbox.public(),
            fallback_key,
            kem_key: Some(self.kem.public()),
        }
    }

    /// This device's card, signed by its Olm ed25519 key.
    pub fn signed_card(&self) -> SignedCard {
        self.card().sign(|message| self.account.sign(message))
    }
}
