//! This device's long-term keys (DESIGN §3): a vodozemac Olm `Account`, the
//! x25519 envelope key, and the request-inbox key. Created once, persisted
//! in the encrypted store, never logged.

use serde::{Deserialize, Serialize};
use sotto_proto::client::SignedCard;
use vodozemac::olm::{Account, AccountPickle};
use zeroize::Zeroizing;

use crate::card::Card;
use crate::{EnvelopeSecret, InboxKey, Store, Tree};

const DEVICE_KEY: &[u8] = b"device";

/// The persisted form (inside the encrypted store).
#[derive(Serialize, Deserialize)]
struct DeviceRecord {
    handle: String,
    account: AccountPickle,
    envelope_secret: [u8; 32],
    request_inbox_seed: [u8; 32],
}

/// A device's secrets. No `Debug`: nothing here may reach a log.
pub struct Device {
    pub(crate) handle: String,
    pub(crate) account: Account,
    pub(crate) envelope: EnvelopeSecret,
    pub(crate) request_inbox: InboxKey,
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
            request_inbox: InboxKey::generate(),
        }
    }

    /// The handle this device belongs to.
    pub fn handle(&self) -> &str {
        &self.handle
    }

    /// Serialises the device (secrets included) for the encrypted store.
    pub(crate) fn record(&self) -> Result<Zeroizing<Vec<u8>>, DeviceError> {
        let record = DeviceRecord {
            handle: self.handle.clone(),
            account: self.account.pickle(),
            envelope_secret: *self.envelope.to_bytes(),
            request_inbox_seed: *self.request_inbox.seed_bytes(),
        };
        serde_json::to_vec(&record)
            .map(Zeroizing::new)
            .map_err(|e| DeviceError::Corrupt(e.to_string()))
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
        let device = Self {
            handle: std::mem::take(&mut record.handle),
            account: Account::from_pickle(record.account),
            envelope: EnvelopeSecret::from_bytes(record.envelope_secret),
            request_inbox: InboxKey::from_seed(record.request_inbox_seed),
        };
        zeroize::Zeroize::zeroize(&mut record.envelope_secret);
        zeroize::Zeroize::zeroize(&mut record.request_inbox_seed);
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
        }
    }

    /// This device's card, signed by its Olm ed25519 key.
    pub fn signed_card(&self) -> SignedCard {
        self.card().sign(|message| self.account.sign(message))
    }
}
