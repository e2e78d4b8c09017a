//! Contacts and their devices: import a card, add and remove a contact,
//! replace the device list the team directory names.

use sotto_proto::Message as _;
use sotto_proto::client::{Envelope, SignedCard};

use super::{Contact, Engine, EngineError, corrupt};
use crate::card::Card;
use crate::{Batch, InboxKey, Tree, records};

/// What [`Engine::set_devices`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceChange {
    /// Devices that are new.
    pub added: usize,
    /// Identity keys of devices no longer listed (nothing more is
    /// encrypted to them).
    pub removed: Vec<[u8; 32]>,
}

impl Engine {
    /// Handles of my contacts (not counting my own other devices).
    pub fn contacts(&self) -> Vec<String> {
        let mut handles: Vec<String> = self
            .contacts
            .iter()
            .filter(|(handle, devices)| *handle != self.handle() && !devices.is_empty())
            .map(|(handle, _)| handle.clone())
            .collect();
        handles.sort();
        handles
    }

    /// The card of `peer`'s first device, if `peer` is a contact.
    pub fn contact_card(&self, peer: &str) -> Option<&Card> {
        self.contacts
            .get(peer)
            .and_then(|devices| devices.first())
            .map(|c| &c.card)
    }

    /// The cards of every device of `peer` I encrypt to (for my own
    /// handle: my other devices).
    pub fn devices_of(&self, peer: &str) -> Vec<Card> {
        self.contacts
            .get(peer)
            .map(|devices| devices.iter().map(|c| c.card.clone()).collect())
            .unwrap_or_default()
    }

    /// `peer`'s user key `U`, as the team layer last verified it.
    pub fn user_key(&self, peer: &str) -> Result<Option<[u8; 32]>, EngineError> {
        Ok(self
            .store
            .get(Tree::Meta, &self.sas_key_slot(b"user-key/", peer))?
            .and_then(|key| <[u8; 32]>::try_from(key.as_slice()).ok()))
    }

    /// The key a verification of `peer` is about: its user key when the
    /// team layer knows it (one for all its devices), else its device key.
    pub(crate) fn verified_key(&self, peer: &str) -> Result<Option<[u8; 32]>, EngineError> {
        if let Some(key) = self.user_key(peer)? {
            return Ok(Some(key));
        }
        Ok(self.contact_card(peer).map(|c| c.identity_key.to_bytes()))
    }

    /// My own card.
    pub fn own_card(&self) -> Card {
        self.device.card()
    }

    /// Forgets a contact (a revoked member): nothing more is encrypted to
    /// it, and its messages are dropped as from an unknown sender. History
    /// stays.
    pub fn remove_contact(&mut self, peer: &str) -> Result<bool, EngineError> {
        let Some(devices) = self.contacts.remove(peer) else {
            return Ok(false);
        };
        let mut batch = Batch::new();
        for contact in &devices {
            self.forget_device(contact, &mut batch);
        }
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(!devices.is_empty())
    }

    /// Deletes a device's record and sessions (the caller removed it from
    /// `contacts`).
    fn forget_device(&mut self, contact: &Contact, batch: &mut Batch) {
        batch.delete(Tree::Contacts, contact.store_key.clone());
        let identity = contact.card.identity_key.to_bytes();
        self.forget_pq(&identity, batch);
        self.sessions.remove(&identity);
        batch.delete(
            Tree::Sessions,
            self.store.blind(&identity).as_bytes().to_vec(),
        );
    }

    fn new_contact(&self, card: Card, signed: &SignedCard) -> Contact {
        let my_inbox = InboxKey::generate();
        let store_key = [
            self.store
                .blind(card.handle.as_bytes())
                .as_bytes()
                .as_slice(),
            self.store
                .blind(&card.identity_key.to_bytes())
                .as_bytes()
                .as_slice(),
        ]
        .concat();
        Contact {
            their_inbox: card.inbox_key,
            card,
            signed_card: signed.encode_to_vec(),
            my_inbox_public: *my_inbox.public().as_bytes(),
            my_inbox,
            store_key,
            pq: Default::default(),
        }
    }

    /// Sets the devices of `peer` (for my own handle: my devices, this one
    /// skipped) to exactly `devices`, as the team layer verified them with
    /// `user_key`: new devices get fresh pairwise inboxes, known ones keep
    /// theirs, and unlisted ones are forgotten with their sessions and
    /// whatever was still queued for them.
    pub fn set_devices(
        &mut self,
        peer: &str,
        user_key: Option<[u8; 32]>,
        devices: Vec<(Card, SignedCard)>,
    ) -> Result<DeviceChange, EngineError> {
        let mut old = self.contacts.remove(peer).unwrap_or_default();
        let mut kept = Vec::new();
        let mut change = DeviceChange::default();
        let mut batch = Batch::new();
        // Every sync calls this for every member: write only what changed.
        let mut dirty = false;
        for (card, signed) in devices {
            if card.identity_key.to_bytes() == self.me || card.handle != peer {
                continue;
            }
            if kept
                .iter()
                .any(|c: &Contact| c.card.identity_key == card.identity_key)
            {
                continue;
            }
            let signed_bytes = signed.encode_to_vec();
            let contact = match old
                .iter()
                .position(|c| c.card.identity_key == card.identity_key)
            {
                Some(index) => {
                    let known = old.swap_remove(index);
                    if known.signed_card == signed_bytes {
                        kept.push(known);
                        continue;
                    }
                    // Their request inbox rotated: if I still write to it
                    // (no reply inbox from them yet), follow it.
                    let their_inbox = if known.their_inbox == known.card.inbox_key {
                        card.inbox_key
                    } else {
                        known.their_inbox
                    };
                    // A new ML-KEM key (the device changed it, or gained
                    // one): the pairwise secret starts over.
                    let pq = if known.card.kem_key == card.kem_key {
                        known.pq
                    } else {
                        self.forget_pq(&card.identity_key.to_bytes(), &mut batch);
                        Default::default()
                    };
                    Contact {
                        pq,
                        card,
                        signed_card: signed_bytes,
                        their_inbox,
                        ..known
                    }
                }
                None => {
                    change.added += 1;
                    self.new_contact(card, &signed)
                }
            };
            batch.put(Tree::Contacts, contact.store_key.clone(), &contact.record());
            dirty = true;
            kept.push(contact);
        }
        for gone in &old {
            change.removed.push(gone.card.identity_key.to_bytes());
            self.forget_device(gone, &mut batch);
            dirty = true;
        }
        if !change.removed.is_empty() {
            self.drop_queued_for(&change.removed, &mut batch)?;
        }
        if self.user_key(peer)? != user_key {
            let user_key_slot = self.sas_key_slot(b"user-key/", peer);
            match user_key {
                Some(key) => batch.put(Tree::Meta, user_key_slot, &key),
                None => batch.delete(Tree::Meta, user_key_slot),
            };
            dirty = true;
        }
        if dirty {
            self.store.apply(batch)?;
            self.store.flush()?;
        }
        if !kept.is_empty() {
            let count = kept.len();
            self.contacts.insert(peer.to_owned(), kept);
            let mut batch = Batch::new();
            let mut started = false;
            for index in 0..count {
                started |= self.ensure_pq(peer, index, 0, &mut batch)?;
            }
            if started {
                self.store.apply(batch)?;
                self.store.flush()?;
            }
        }
        Ok(change)
    }

    /// Drops outbox entries addressed to removed devices.
    fn drop_queued_for(&self, removed: &[[u8; 32]], batch: &mut Batch) -> Result<(), EngineError> {
        for (key, value) in self.store.scan_prefix(Tree::Outbox, &[])? {
            let record = records::decode_outbox(&value).map_err(corrupt)?;
            if record.group.is_some() {
                continue;
            }
            let Ok(envelope) = Envelope::decode(record.envelope.as_slice()) else {
                continue;
            };
            if removed
                .iter()
                .any(|r| r.as_slice() == envelope.recipient_identity_key.as_ref())
            {
                batch.delete(Tree::Outbox, key);
            }
        }
        Ok(())
    }

    /// Adds (or updates) a contact from an exported card.
    pub fn import_card(&mut self, text: &str) -> Result<String, EngineError> {
        let (card, signed) = Card::import(text)?;
        self.add_contact(card, &signed)
    }

    /// Adds (or updates) a contact from a verified card.
    /// A card imported by hand names one device: it replaces whatever
    /// devices the contact had (a known device keeps its pairwise inboxes).
    pub fn add_contact(&mut self, card: Card, signed: &SignedCard) -> Result<String, EngineError> {
        if card.identity_key.to_bytes() == self.me {
            return Err(EngineError::OwnCard);
        }
        let handle = card.handle.clone();
        let user_key = self.user_key(&handle)?;
        self.set_devices(&handle, user_key, vec![(card, signed.clone())])?;
        Ok(handle)
    }

    /// Finds the device with identity key `identity`: its handle and index.
    pub(crate) fn device_with(&self, identity: &[u8]) -> Option<(String, usize)> {
        self.contacts.iter().find_map(|(handle, devices)| {
            devices
                .iter()
                .position(|c| c.card.identity_key.to_bytes().as_slice() == identity)
                .map(|index| (handle.clone(), index))
        })
    }
}
