//! The messaging engine: 1:1 end-to-end encryption with no network I/O.
//!
//! The caller pushes received blobs in ([`Engine::receive`]) and pulls
//! sealed blobs out ([`Engine::outgoing`]); a thin async driver
//! ([`crate::Client`]) moves them to and from the relay. Every state change
//! — Olm session, history, dedup record, outbox — is committed as one
//! atomic store batch, so a crash never leaves a ratchet ahead of the
//! messages it produced.
//!
//! Layers of a 1:1 blob: sealed envelope (hides the sender from the relay,
//! fixes the size) → [`Envelope`] (sender device, claimed user, recipient,
//! epoch, message ID) → Olm message → [`Payload`] (text or receipt, the
//! sender's pairwise reply inbox).
//!
//! **Acceptance rule** (DESIGN §5): a message is accepted only if the sender
//! key in the envelope is a known contact's device key, that contact's card
//! names the claimed user, the Olm session used to decrypt it was
//! established with that key, and the payload's message ID matches the
//! envelope's. Anything else is dropped and counted, never shown.
//!
//! **Pairwise inboxes** (DESIGN §4): every payload carries the sender's
//! inbox for this contact; the first message goes to the contact's request
//! inbox, every later one to the inbox the contact handed back.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sotto_proto::client::{
    Envelope, Payload, Receipt, SasKey, SasMac, SignedCard, Text, payload, receipt,
};
use sotto_proto::{Blob, MailboxId, Message as _};
use vodozemac::Curve25519PublicKey;
use vodozemac::olm::{OlmMessage, Session, SessionConfig, SessionPickle};

use crate::card::{Card, CardError};
use crate::device::{Device, DeviceError};
use crate::{
    Batch, BlindedInbox, EPOCH_SECS, Epoch, InboxKey, InboxPublic, SealError, Store, StoreError,
    Tree, open, records, seal,
};

const ENVELOPE_VERSION: u32 = 1;
/// Olm sessions kept per contact device (both sides may start one at once).
const MAX_SESSIONS: usize = 4;
const HISTORY_SEQ: &[u8] = b"history-seq";
const OUTBOX_SEQ: &[u8] = b"outbox-seq";
const LAST_EPOCH: &[u8] = b"last-epoch";
const DIR_KEY: &[u8] = b"team/dir-key";

/// A 16-byte random message ID.
pub type MessageId = [u8; 16];

/// Where a message is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Mine, in the outbox: not yet accepted by the relay.
    Queued,
    /// Mine, stored durably by the relay.
    Sent,
    /// Mine, never sent: I was removed from the group before it went out.
    Unsent,
    /// Mine, the recipient's device has it.
    Delivered,
    /// Mine, the recipient read it.
    Read,
    /// Theirs.
    Received,
    /// Theirs, in a group, but the sender's session key has not arrived
    /// yet: it was asked for and the text appears when it does.
    Waiting,
    /// Theirs, in a group, and the sender will not share its key (it was
    /// sent before I joined): shown as such, never as an error.
    Withheld,
}

/// A message in the local history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Hex message ID (the same on every device that has it).
    pub id: String,
    /// The other member of the conversation.
    pub peer: String,
    /// Who wrote it.
    pub from: String,
    /// Whether I wrote it.
    pub from_me: bool,
    /// The text.
    pub text: String,
    /// Sender clock, unix milliseconds.
    pub sent_at: u64,
    /// Delivery state.
    pub status: Status,
    /// The group's name, for a group message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Something that needs to reach the relay.
#[derive(Debug)]
pub struct Outgoing {
    /// Outbox entry to remove once the relay acknowledged the put.
    pub key: Vec<u8>,
    /// Where to put it.
    pub mailbox: MailboxId,
    /// The sealed, bucket-sized blob.
    pub blob: Blob,
}

/// What a received blob turned out to be.
#[derive(Debug)]
pub enum Received {
    /// A new message, now in the history.
    Message(Message),
    /// A receipt; the listed messages of mine changed status.
    Receipt,
    /// A step of an interactive verification, kept in the store for the
    /// verifying command to pick up.
    Verification,
    /// Group messages that waited for their session key and are now
    /// readable (or known to be withheld).
    Unlocked(Vec<Message>),
    /// Group membership or a group session key, applied.
    Group,
    /// A new team directory key, kept for the team layer to check (it must
    /// be signed by the team key) and apply; or my member state from one
    /// of my devices (a link approval, a new user key).
    Team,
    /// A new device asks to be linked to me; it waits for
    /// `sotto device approve`.
    LinkRequest,
    /// Part of my history, from the device that approved this one.
    History {
        /// Which part (1-based).
        index: u32,
        /// Of how many.
        total: u32,
        /// Messages it held.
        messages: usize,
    },
    /// A message seen before (a redelivery or a replay): ignored.
    Duplicate,
    /// Not accepted (see [`Dropped`]); counted, never shown.
    Dropped(Dropped),
}

/// Why a blob was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// The sealed envelope did not open (garbage, wrong key, tampered).
    Unsealable,
    /// The envelope does not decode or is addressed to another device.
    BadEnvelope,
    /// The sender is not one of my contacts, or claims another user.
    UnknownSender,
    /// Olm could not decrypt it.
    Undecryptable,
    /// The payload does not match its envelope.
    Mismatch,
    /// About a group I am not in, or from someone who may not say it.
    Group,
}

/// An engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The local store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The device keys could not be loaded or saved.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// No contact with that handle.
    #[error("unknown contact \"{0}\"; import their contact card first")]
    UnknownContact(String),
    /// The card is invalid.
    #[error(transparent)]
    Card(#[from] CardError),
    /// The card is this device's own.
    #[error("that is your own contact card")]
    OwnCard,
    /// The message is too long for one blob.
    #[error("the message is too long to send in one piece ({0} bytes); send it as an attachment")]
    TooLong(usize),
    /// Sealing failed.
    #[error("cannot seal the message: {0}")]
    Seal(#[from] SealError),
    /// Olm failed to encrypt.
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    /// Stored state is damaged.
    #[error("the local store holds a damaged record: {0}")]
    Corrupt(String),
    /// No group by that name or ID.
    #[error("no group \"{0}\"; `sotto group list` shows yours")]
    UnknownGroup(String),
    /// Several groups have that name.
    #[error("several groups are called \"{name}\"; name one by ID: {}", ids.join(", "))]
    AmbiguousGroup {
        /// The name given.
        name: String,
        /// The IDs of the groups so called.
        ids: Vec<String>,
    },
    /// I already have a group by that name.
    #[error("you already have a group called \"{0}\"; choose another name")]
    GroupNameTaken(String),
    /// Only a group's admins change its membership.
    #[error("only the admins of \"{0}\" can change who is in it")]
    NotGroupAdmin(String),
    /// I was removed from the group.
    #[error("you are no longer a member of \"{0}\"")]
    NotInGroup(String),
    /// A group change that changes nothing or is not allowed.
    #[error("{0}")]
    GroupChange(String),
}

/// A contact as stored (binary, see `records.rs`; JSON in old homes).
#[derive(Serialize, Deserialize)]
pub(crate) struct ContactRecord {
    pub(crate) signed_card: Vec<u8>,
    pub(crate) their_inbox: [u8; 32],
    pub(crate) my_inbox_seed: [u8; 32],
}

/// One device of a contact (or one of my own other devices), with the
/// pairwise inboxes agreed with it.
pub(crate) struct Contact {
    pub(crate) card: Card,
    signed_card: Vec<u8>,
    their_inbox: InboxPublic,
    my_inbox: InboxKey,
    /// `my_inbox.public()`, derived once: it is a scalar multiplication,
    /// and every payload to this contact carries it.
    my_inbox_public: [u8; 32],
    /// The store key of its record: `blind(handle) || blind(identity)`
    /// (`blind(handle)` alone in homes from before multi-device).
    store_key: Vec<u8>,
}

/// What [`Engine::set_devices`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceChange {
    /// Devices that are new.
    pub added: usize,
    /// Identity keys of devices no longer listed (nothing more is
    /// encrypted to them).
    pub removed: Vec<[u8; 32]>,
}

impl Contact {
    fn record(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut record = ContactRecord {
            signed_card: self.signed_card.clone(),
            their_inbox: *self.their_inbox.as_bytes(),
            my_inbox_seed: *self.my_inbox.seed_bytes(),
        };
        let bytes = records::encode_contact(&record);
        zeroize::Zeroize::zeroize(&mut record.my_inbox_seed);
        bytes
    }
}

/// An outbox entry as stored (binary, see `records.rs`; JSON in old
/// homes): the envelope without its epoch, which is set when the blob is
/// sealed for delivery (a retry after a long outage goes to the
/// recipient's current mailbox).
#[derive(Serialize, Deserialize)]
pub(crate) struct OutboxRecord {
    pub(crate) peer: String,
    pub(crate) envelope: Vec<u8>,
    /// Hex group ID, for a group message (`envelope` is then a
    /// `GroupEnvelope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<String>,
    /// The message ID (for a group message hidden inside Megolm). Empty in
    /// 1:1 entries of old homes: the envelope has it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) message_id: Vec<u8>,
}

pub(crate) fn corrupt(e: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt(e.to_string())
}

pub(crate) fn random_id() -> MessageId {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).expect("invariant: the OS random number generator works");
    id
}

/// Counters of dropped blobs, by reason.
#[derive(Debug, Default, Clone)]
pub struct DropCounts {
    /// Per reason.
    pub by_reason: HashMap<String, u64>,
}

/// The messaging state of one device.
pub struct Engine {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) device: Device,
    /// This device's curve25519 identity key (cached: it never changes).
    pub(crate) me: [u8; 32],
    /// Every device of every contact, by handle; under my own handle, my
    /// other devices (a message I send is copied to them).
    pub(crate) contacts: HashMap<String, Vec<Contact>>,
    sessions: HashMap<[u8; 32], Vec<Session>>,
    /// The last history sequence number used, per blinded conversation,
    /// read from the conversation's last key when first needed (so no
    /// counter is written per message).
    history_seqs: HashMap<crate::BlindId, u64>,
    /// Upper bound on every history sequence number an old home used (it
    /// kept one global counter); new numbers stay above it.
    legacy_history_seq: u64,
    /// The last outbox sequence number used: at open, the outbox's last
    /// key (or an old home's counter), then counted in memory.
    pub(crate) outbox_seq: u64,
    /// The mailbox of each contact inbox for the epoch last used: blinding
    /// the inbox key is a scalar multiplication, too dear to repeat for
    /// every outgoing blob. Keyed by the inbox key itself, so a contact
    /// that hands out a new inbox never hits a stale entry.
    mailboxes: std::sync::Mutex<HashMap<[u8; 32], (u64, MailboxId)>>,
    drops: DropCounts,
    /// My groups, by ID.
    pub(crate) groups: HashMap<crate::group::GroupId, crate::group::Group>,
    /// Which mailboxes [`Engine::inboxes`] handed out belong to a group.
    pub(crate) group_mailboxes: crate::group::MailboxMap,
    /// Set when a group's secret changed (a new group, a new generation):
    /// there are new mailboxes to read.
    pub(crate) groups_changed: bool,
    /// The newest access-token period key this device holds, named in
    /// every payload (DESIGN §7).
    token_key: Option<sotto_proto::client::TokenKeyRef>,
}

/// The newest period key recorded by the token wallet, as payloads name it.
fn newest_token_key(
    store: &dyn Store,
) -> Result<Option<sotto_proto::client::TokenKeyRef>, EngineError> {
    let newest = store
        .scan_prefix(Tree::Meta, crate::tokens::PERIOD_KEY_PREFIX)?
        .into_iter()
        .filter_map(|(key, public)| {
            let id = key.get(crate::tokens::PERIOD_KEY_PREFIX.len()..)?;
            Some((u64::from_be_bytes(id.try_into().ok()?), public))
        })
        .max_by_key(|(id, _)| *id);
    Ok(
        newest.map(|(key_id, public)| sotto_proto::client::TokenKeyRef {
            key_id,
            fingerprint: crate::token_key_fingerprint(key_id, &public)
                .to_vec()
                .into(),
        }),
    )
}

pub(crate) fn be64_or_zero(bytes: Option<zeroize::Zeroizing<Vec<u8>>>) -> u64 {
    bytes
        .and_then(|b| b.as_slice().try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

impl Engine {
    /// Creates a new device for `handle` in an empty store at `now_secs`.
    /// Nothing can await it in inboxes older than its creation, so its
    /// first sync starts at the current epoch.
    pub fn create(store: Arc<dyn Store>, handle: &str, now_secs: u64) -> Result<Self, EngineError> {
        let device = Device::generate(handle);
        device.save(store.as_ref())?;
        let engine = Self::with_device(store, device)?;
        engine.synced_until(now_secs)?;
        engine.store.flush()?;
        Ok(engine)
    }

    /// Opens the device in `store`, if there is one.
    pub fn open(store: Arc<dyn Store>) -> Result<Option<Self>, EngineError> {
        match Device::load(store.as_ref())? {
            Some(device) => Self::with_device(store, device).map(Some),
            None => Ok(None),
        }
    }

    fn with_device(store: Arc<dyn Store>, device: Device) -> Result<Self, EngineError> {
        let mut contacts: HashMap<String, Vec<Contact>> = HashMap::new();
        for (store_key, value) in store.scan_prefix(Tree::Contacts, &[])? {
            let record = records::decode_contact(&value).map_err(corrupt)?;
            let signed = SignedCard::decode(record.signed_card.as_slice()).map_err(corrupt)?;
            let card = Card::verify(&signed)?;
            let my_inbox = InboxKey::from_seed(record.my_inbox_seed);
            let contact = Contact {
                their_inbox: InboxPublic::from_bytes(&record.their_inbox).map_err(corrupt)?,
                my_inbox_public: *my_inbox.public().as_bytes(),
                my_inbox,
                signed_card: record.signed_card,
                card,
                store_key,
            };
            contacts
                .entry(contact.card.handle.clone())
                .or_default()
                .push(contact);
        }
        let mut sessions = HashMap::new();
        for contact in contacts.values().flatten() {
            let key = contact.card.identity_key.to_bytes();
            if let Some(bytes) = store.get(Tree::Sessions, store.blind(&key).as_bytes())? {
                let pickles: Vec<SessionPickle> =
                    serde_json::from_slice(&bytes).map_err(corrupt)?;
                sessions.insert(key, pickles.into_iter().map(Session::from_pickle).collect());
            }
        }
        let groups = crate::group::load_groups(store.as_ref())?;
        Ok(Self {
            groups,
            group_mailboxes: Default::default(),
            groups_changed: false,
            token_key: newest_token_key(store.as_ref())?,
            me: device.card().identity_key.to_bytes(),
            history_seqs: HashMap::new(),
            legacy_history_seq: be64_or_zero(store.get(Tree::Meta, HISTORY_SEQ)?),
            outbox_seq: be64_or_zero(store.get(Tree::Meta, OUTBOX_SEQ)?).max(
                store
                    .last_key(Tree::Outbox, &[])?
                    .as_deref()
                    .and_then(outbox_seq_of_key)
                    .unwrap_or(0),
            ),
            mailboxes: Default::default(),
            store,
            device,
            contacts,
            sessions,
            drops: DropCounts::default(),
        })
    }

    /// My handle.
    pub fn handle(&self) -> &str {
        self.device.handle()
    }

    /// My signed card, to give to contacts.
    pub fn signed_card(&self) -> SignedCard {
        self.device.signed_card()
    }

    /// My exported card (`sotto-card:…`).
    pub fn export_card(&self) -> String {
        crate::card::export(&self.signed_card())
    }

    /// Dropped blobs by reason since this engine was opened.
    pub fn drops(&self) -> &DropCounts {
        &self.drops
    }

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
                    Contact {
                        card,
                        signed_card: signed_bytes,
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
            self.contacts.insert(peer.to_owned(), kept);
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

    /// Adds `message` to `conversation`'s history in `batch`; for one of
    /// mine, also the status record that receipts move (see
    /// [`status_record`]).
    pub(crate) fn file_message(
        &mut self,
        conversation: &str,
        message: &Message,
        message_id: &[u8],
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        let key = self.next_history_key(conversation)?;
        batch.put(
            Tree::History,
            key.clone(),
            &records::encode_message(message),
        );
        if message.from_me {
            batch.put(
                Tree::Seen,
                [b"out".as_slice(), message_id].concat(),
                &status_record(&key, message.status),
            );
        }
        Ok(())
    }

    /// The key of the next history entry with `peer` (or in a group
    /// conversation): one past the conversation's last key. Keys are
    /// unique and ordered per conversation, which is all history needs.
    pub(crate) fn next_history_key(&mut self, peer: &str) -> Result<Vec<u8>, EngineError> {
        let blind = self.store.blind(peer.as_bytes());
        let seq = match self.history_seqs.get(&blind) {
            Some(seq) => *seq,
            None => self
                .store
                .last_key(Tree::History, blind.as_bytes())?
                .as_deref()
                .and_then(seq_of_key)
                .unwrap_or(0)
                .max(self.legacy_history_seq),
        } + 1;
        self.history_seqs.insert(blind, seq);
        Ok([blind.as_bytes().as_slice(), &seq.to_be_bytes()].concat())
    }

    /// The next outbox key: `be64(seq) || message ID`, so that
    /// [`Engine::sent`] knows the message without reading the entry. The
    /// counter lives in memory: at open it is recovered from the outbox's
    /// last key, and once the outbox is empty no key of the old numbering
    /// is referenced anywhere.
    pub(crate) fn next_outbox_key(&mut self, message_id: &MessageId) -> Vec<u8> {
        self.outbox_seq += 1;
        [self.outbox_seq.to_be_bytes().as_slice(), message_id].concat()
    }

    /// The mailbox of `inbox` in `epoch`, blinded once per epoch.
    fn mailbox_of(&self, inbox: &InboxPublic, epoch: Epoch) -> MailboxId {
        let mut cache = self
            .mailboxes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cache.get(inbox.as_bytes()) {
            Some((cached, mailbox)) if *cached == epoch.get() => *mailbox,
            _ => {
                let mailbox = inbox.mailbox(epoch);
                cache.insert(*inbox.as_bytes(), (epoch.get(), mailbox));
                mailbox
            }
        }
    }

    fn save_sessions(&self, identity: &[u8; 32], batch: &mut Batch) -> Result<(), EngineError> {
        let pickles: Vec<SessionPickle> = self
            .sessions
            .get(identity)
            .map(|sessions| sessions.iter().map(Session::pickle).collect())
            .unwrap_or_default();
        let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&pickles).map_err(corrupt)?);
        batch.put(
            Tree::Sessions,
            self.store.blind(identity).as_bytes().to_vec(),
            &bytes,
        );
        Ok(())
    }

    /// Encrypts `payload` for every device of `peer` and queues it in the
    /// outbox; a message with a history entry is also copied to my own
    /// other devices. History and session state are committed in the same
    /// batch. Returns the message ID.
    pub(crate) fn queue(
        &mut self,
        peer: &str,
        payload: Payload,
        history: Option<&Message>,
    ) -> Result<MessageId, EngineError> {
        self.queue_to(peer, None, payload, history)
    }

    /// As [`Engine::queue`], to one device of `peer` only when `only` is
    /// set. `peer` may be my own handle: then it goes to my other devices.
    pub(crate) fn queue_to(
        &mut self,
        peer: &str,
        only: Option<&[u8]>,
        mut payload: Payload,
        history: Option<&Message>,
    ) -> Result<MessageId, EngineError> {
        let me = self.device.handle.clone();
        if peer != me && self.contacts.get(peer).is_none_or(Vec::is_empty) {
            return Err(EngineError::UnknownContact(peer.to_owned()));
        }
        let message_id = random_id();
        payload.message_id = message_id.to_vec().into();
        payload.token_key = self.token_key.clone();
        if payload.encoded_len() + 80
            > crate::max_plaintext_len(sotto_proto::Bucket::largest()) - 200
        {
            return Err(EngineError::TooLong(payload.encoded_len()));
        }
        let mut targets: Vec<(String, usize)> = Vec::new();
        let count = |handle: &str| self.contacts.get(handle).map_or(0, Vec::len);
        for index in 0..count(peer) {
            let identity = self.contacts[peer][index].card.identity_key.to_bytes();
            if only.is_none_or(|o| o == identity.as_slice()) {
                targets.push((peer.to_owned(), index));
            }
        }
        let copy = history.is_some() && peer != me;
        if copy {
            targets.extend((0..count(&me)).map(|index| (me.clone(), index)));
        }
        let mut batch = Batch::new();
        for (handle, index) in targets {
            let mut payload = payload.clone();
            if handle == me && peer != me {
                payload.sent_to = peer.to_owned();
            }
            self.seal_to_device(&handle, index, &mut payload, &message_id, &mut batch)?;
        }
        if let Some(message) = history {
            let message = Message {
                id: hex::encode(message_id),
                ..message.clone()
            };
            self.file_message(peer, &message, &message_id, &mut batch)?;
        }
        self.store.apply(batch)?;
        Ok(message_id)
    }

    /// Olm-encrypts `payload` to one device and adds the outbox entry (and
    /// the session state) to `batch`.
    fn seal_to_device(
        &mut self,
        handle: &str,
        index: usize,
        payload: &mut Payload,
        message_id: &MessageId,
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        let contact = &self.contacts[handle][index];
        payload.reply_inbox = contact.my_inbox_public.to_vec().into();
        let identity = contact.card.identity_key;
        let fallback = contact.card.fallback_key;
        let plaintext = zeroize::Zeroizing::new(payload.encode_to_vec());
        let sessions = self.sessions.entry(identity.to_bytes()).or_default();
        if sessions.is_empty() {
            let session = self
                .device
                .account
                .create_outbound_session(SessionConfig::version_1(), identity, fallback)
                .map_err(|e| EngineError::Encrypt(e.to_string()))?;
            sessions.insert(0, session);
        }
        let olm = sessions[0]
            .encrypt(plaintext.as_slice())
            .map_err(|e| EngineError::Encrypt(e.to_string()))?;
        let (olm_type, olm_body) = olm.to_parts();
        let envelope = Envelope {
            version: ENVELOPE_VERSION,
            sender_identity_key: self.me.to_vec().into(),
            sender_user: self.device.handle.clone(),
            recipient_identity_key: identity.to_bytes().to_vec().into(),
            epoch: 0,
            message_id: message_id.to_vec().into(),
            olm_type: olm_type as u32,
            olm_body: olm_body.into(),
        };
        let outbox_key = self.next_outbox_key(message_id);
        let record = OutboxRecord {
            peer: handle.to_owned(),
            envelope: envelope.encode_to_vec(),
            group: None,
            message_id: message_id.to_vec(),
        };
        batch.put(Tree::Outbox, outbox_key, &records::encode_outbox(&record));
        // Outbound session creation leaves the account unchanged: only the
        // session is saved.
        self.save_sessions(&identity.to_bytes(), batch)?;
        Ok(())
    }

    /// Queues a text message to `peer`: durable locally before any network
    /// I/O. Returns its ID.
    pub fn queue_text(
        &mut self,
        peer: &str,
        text: &str,
        now_ms: u64,
    ) -> Result<MessageId, EngineError> {
        let payload = Payload {
            sent_at: now_ms,
            body: Some(payload::Body::Text(Text {
                body: text.to_owned(),
            })),
            ..Payload::default()
        };
        let message = Message {
            id: String::new(),
            peer: peer.to_owned(),
            from: self.device.handle.clone(),
            from_me: true,
            text: text.to_owned(),
            sent_at: now_ms,
            status: Status::Queued,
            group: None,
        };
        let id = self.queue(peer, payload, Some(&message))?;
        self.store.flush()?;
        Ok(id)
    }

    /// Queues a delivered or read receipt for `ids` to `peer`.
    pub fn queue_receipt(
        &mut self,
        peer: &str,
        ids: &[MessageId],
        read: bool,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        if ids.is_empty() {
            return Ok(());
        }
        let kind = if read {
            receipt::Kind::Read
        } else {
            receipt::Kind::Delivered
        };
        let payload = Payload {
            sent_at: now_ms,
            body: Some(payload::Body::Receipt(Receipt {
                kind: kind as i32,
                message_ids: ids.iter().map(|id| id.to_vec().into()).collect(),
            })),
            ..Payload::default()
        };
        self.queue(peer, payload, None)?;
        Ok(())
    }

    /// Queues a read receipt for every message from `peer` not yet marked
    /// read; returns how many.
    pub fn mark_read(&mut self, peer: &str, now_ms: u64) -> Result<usize, EngineError> {
        let read_key = [
            b"read-upto/".as_slice(),
            self.store.blind(peer.as_bytes()).as_bytes(),
        ]
        .concat();
        let upto = be64_or_zero(self.store.get(Tree::Meta, &read_key)?);
        let prefix = self.store.blind(peer.as_bytes());
        let mut ids = Vec::new();
        let mut newest = upto;
        for (key, value) in self.store.scan_prefix(Tree::History, prefix.as_bytes())? {
            let seq = seq_of_key(&key).unwrap_or(0);
            if seq <= upto {
                continue;
            }
            newest = newest.max(seq);
            let message = records::decode_message(&value).map_err(corrupt)?;
            if !message.from_me
                && let Ok(id) = hex::decode(&message.id)
                && let Ok(id) = MessageId::try_from(id.as_slice())
            {
                ids.push(id);
            }
        }
        self.queue_receipt(peer, &ids, true, now_ms)?;
        self.store
            .put(Tree::Meta, &read_key, &newest.to_be_bytes())?;
        self.store.flush()?;
        Ok(ids.len())
    }

    /// Everything in the outbox, sealed for the recipients' current
    /// mailboxes at `now`.
    pub fn outgoing(&self, now_secs: u64) -> Result<Vec<Outgoing>, EngineError> {
        let epoch = Epoch::from_unix_secs(now_secs, EPOCH_SECS);
        let mut out = Vec::new();
        for (key, value) in self.store.scan_prefix(Tree::Outbox, &[])? {
            let record = records::decode_outbox(&value).map_err(corrupt)?;
            if let Some(group) = &record.group {
                if let Some((mailbox, blob)) = self.seal_group(group, &record.envelope, epoch)? {
                    out.push(Outgoing { key, mailbox, blob });
                }
                continue;
            }
            let mut envelope = Envelope::decode(record.envelope.as_slice()).map_err(corrupt)?;
            // The device it was sealed for (gone if it was removed since).
            let Some(contact) = self.contacts.get(&record.peer).and_then(|devices| {
                devices.iter().find(|c| {
                    c.card.identity_key.to_bytes().as_slice()
                        == envelope.recipient_identity_key.as_ref()
                })
            }) else {
                continue;
            };
            envelope.epoch = epoch.get();
            let blob = seal(&contact.card.envelope_key, &envelope.encode_to_vec())?;
            out.push(Outgoing {
                key,
                mailbox: self.mailbox_of(&contact.their_inbox, epoch),
                blob,
            });
        }
        Ok(out)
    }

    /// The relay stored an outgoing blob durably: drop it from the outbox
    /// and mark its message sent.
    pub fn sent(&mut self, key: &[u8]) -> Result<(), EngineError> {
        let message_id = match key.get(8..) {
            Some(id) if id.len() == 16 => id.to_vec(),
            // An entry queued by an older version: its key is the
            // sequence number alone.
            _ => {
                let Some(value) = self.store.get(Tree::Outbox, key)? else {
                    return Ok(());
                };
                let record = records::decode_outbox(&value).map_err(corrupt)?;
                if record.message_id.is_empty() {
                    Envelope::decode(record.envelope.as_slice())
                        .map_err(corrupt)?
                        .message_id
                        .to_vec()
                } else {
                    record.message_id
                }
            }
        };
        let mut batch = Batch::new();
        batch.delete(Tree::Outbox, key.to_vec());
        self.update_status(&message_id, Status::Sent, &mut batch)?;
        self.store.apply(batch)?;
        Ok(())
    }

    pub(crate) fn update_status(
        &self,
        message_id: &[u8],
        status: Status,
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        let seen_key = [b"out".as_slice(), message_id].concat();
        let Some(record) = self.store.get(Tree::Seen, &seen_key)? else {
            return Ok(());
        };
        let (history_key, current) = split_status_record(&record).map_err(corrupt)?;
        let current = match current {
            Some(current) => current,
            // An old home kept the status in the history entry only.
            None => match self.store.get(Tree::History, history_key)? {
                Some(bytes) => records::decode_message(&bytes).map_err(corrupt)?.status,
                None => return Ok(()),
            },
        };
        // Status only moves forward (a late "sent" never hides "read").
        let rank = |s: Status| match s {
            Status::Queued => 0,
            Status::Sent | Status::Unsent => 1,
            Status::Delivered => 2,
            Status::Read => 3,
            Status::Received | Status::Waiting | Status::Withheld => 0,
        };
        if rank(status) > rank(current) {
            batch.put(Tree::Seen, seen_key, &status_record(history_key, status));
        }
        Ok(())
    }

    /// The inboxes to read at `now`: my request inbox and every pairwise
    /// inbox, for each epoch from the last fully synced one (minus one, for
    /// senders with skewed clocks) to the current one, bounded by `max_epochs`.
    pub fn inboxes(
        &self,
        now_secs: u64,
        max_epochs: u64,
    ) -> Result<Vec<BlindedInbox>, EngineError> {
        let current = Epoch::from_unix_secs(now_secs, EPOCH_SECS);
        let last = be64_or_zero(self.store.get(Tree::Meta, LAST_EPOCH)?);
        let oldest = current.get().saturating_sub(max_epochs.saturating_sub(1));
        let from = Epoch::new(last.saturating_sub(1).clamp(oldest, current.get()));
        let mut keys: Vec<&InboxKey> = vec![&self.device.request_inbox];
        keys.extend(self.contacts.values().flatten().map(|c| &c.my_inbox));
        let mut inboxes: Vec<BlindedInbox> = Epoch::range(from, current)
            .flat_map(|epoch| keys.iter().map(move |key| key.blind(epoch)))
            .collect();
        inboxes.extend(self.group_inboxes(from, current));
        Ok(inboxes)
    }

    /// Records that every inbox up to `now`'s epoch was drained.
    pub fn synced_until(&self, now_secs: u64) -> Result<(), EngineError> {
        let current = Epoch::from_unix_secs(now_secs, EPOCH_SECS);
        self.store
            .put(Tree::Meta, LAST_EPOCH, &current.get().to_be_bytes())?;
        Ok(())
    }

    pub(crate) fn drop_blob(&mut self, reason: Dropped) -> Received {
        *self
            .drops
            .by_reason
            .entry(format!("{reason:?}"))
            .or_default() += 1;
        Received::Dropped(reason)
    }

    /// Processes one blob read from my inbox of `epoch`. The resulting state
    /// is applied to the store (not yet flushed: the caller flushes once per
    /// batch of blobs, then acks them at the relay).
    pub fn receive(&mut self, blob: &[u8], epoch: Epoch) -> Result<Received, EngineError> {
        let opened = match open(&self.device.envelope, blob) {
            Ok(plaintext) => plaintext,
            Err(_) => return Ok(self.drop_blob(Dropped::Unsealable)),
        };
        let Ok(envelope) = Envelope::decode(opened.as_slice()) else {
            return Ok(self.drop_blob(Dropped::BadEnvelope));
        };
        if envelope.version != ENVELOPE_VERSION
            || envelope.recipient_identity_key.as_ref() != self.me.as_slice()
            || envelope.epoch.abs_diff(epoch.get()) > 1
            || envelope.message_id.len() != 16
        {
            return Ok(self.drop_blob(Dropped::BadEnvelope));
        }
        let seen_key = [b"in".as_slice(), &envelope.message_id].concat();
        if self.store.get(Tree::Seen, &seen_key)?.is_some() {
            return Ok(Received::Duplicate);
        }
        // The sender must be a contact whose card names this device key
        // (or, for a link request, a new device of mine that knows the
        // link secret).
        let Some((peer, device_index)) = self.device_with(&envelope.sender_identity_key) else {
            if envelope.sender_user == self.device.handle {
                return self.on_link_envelope(&envelope, seen_key);
            }
            return Ok(self.drop_blob(Dropped::UnknownSender));
        };
        if peer != envelope.sender_user {
            return Ok(self.drop_blob(Dropped::UnknownSender));
        }
        let from_my_device = peer == self.device.handle;
        let sender = Curve25519PublicKey::from_bytes(
            envelope
                .sender_identity_key
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("sender key length"))?,
        );
        let Ok(olm) = OlmMessage::from_parts(envelope.olm_type as usize, &envelope.olm_body) else {
            return Ok(self.drop_blob(Dropped::Undecryptable));
        };
        let Some((plaintext, account_changed)) = self.decrypt(sender, &olm) else {
            return Ok(self.drop_blob(Dropped::Undecryptable));
        };
        let plaintext = zeroize::Zeroizing::new(plaintext);
        let Ok(payload) = Payload::decode(plaintext.as_slice()) else {
            return Ok(self.drop_blob(Dropped::Mismatch));
        };
        if payload.message_id != envelope.message_id {
            return Ok(self.drop_blob(Dropped::Mismatch));
        }

        let mut batch = Batch::new();
        batch.put(Tree::Seen, seen_key, &[]);
        if from_my_device {
            batch.put(
                Tree::Meta,
                [
                    crate::devices::LAST_SEEN_PREFIX,
                    &envelope.sender_identity_key,
                ]
                .concat(),
                &payload.sent_at.to_be_bytes(),
            );
        }
        self.check_token_key(payload.token_key.as_ref(), &mut batch)?;
        self.save_sessions(&sender.to_bytes(), &mut batch)?;
        if account_changed {
            // A new inbound session may have used up a one-time key.
            batch.put(
                Tree::Identity,
                Device::store_key().to_vec(),
                &self.device.record()?,
            );
        }
        // The sender's pairwise inbox for replies.
        // Compared as bytes first: parsing the key is a point
        // decompression, and it is almost always the one already known.
        if let Some(contact) = self
            .contacts
            .get_mut(&peer)
            .and_then(|devices| devices.get_mut(device_index))
            && contact.their_inbox.as_bytes().as_slice() != payload.reply_inbox.as_ref()
            && let Ok(reply) = InboxPublic::from_slice(&payload.reply_inbox)
        {
            contact.their_inbox = reply;
            batch.put(Tree::Contacts, contact.store_key.clone(), &contact.record());
        }
        let received = match payload.body {
            // A message I sent from another device: into that
            // conversation's history, as mine.
            Some(payload::Body::Text(text)) if from_my_device => {
                let conversation = payload.sent_to;
                if conversation.is_empty() || conversation == peer {
                    return Ok(self.drop_blob(Dropped::Mismatch));
                }
                let message = Message {
                    id: hex::encode(&envelope.message_id),
                    peer: conversation.clone(),
                    from: peer.clone(),
                    from_me: true,
                    text: text.body,
                    sent_at: payload.sent_at,
                    status: Status::Sent,
                    group: None,
                };
                self.file_message(&conversation, &message, &envelope.message_id, &mut batch)?;
                Received::Message(message)
            }
            Some(payload::Body::Text(text)) => {
                let message = Message {
                    id: hex::encode(&envelope.message_id),
                    peer: peer.clone(),
                    from: peer.clone(),
                    from_me: false,
                    text: text.body,
                    sent_at: payload.sent_at,
                    status: Status::Received,
                    group: None,
                };
                self.file_message(&peer, &message, &envelope.message_id, &mut batch)?;
                Received::Message(message)
            }
            Some(payload::Body::SasKey(key)) => {
                let record = [payload.sent_at.to_be_bytes().as_slice(), &key.public_key].concat();
                batch.put(Tree::Meta, self.sas_key_slot(b"sas-key/", &peer), &record);
                Received::Verification
            }
            Some(payload::Body::SasMac(mac)) => {
                let record = [payload.sent_at.to_be_bytes().as_slice(), &mac.mac].concat();
                batch.put(Tree::Meta, self.sas_key_slot(b"sas-mac/", &peer), &record);
                Received::Verification
            }
            Some(payload::Body::Receipt(receipt)) => {
                let status = if receipt.kind == receipt::Kind::Read as i32 {
                    Status::Read
                } else {
                    Status::Delivered
                };
                for id in &receipt.message_ids {
                    self.update_status(id, status, &mut batch)?;
                }
                Received::Receipt
            }
            Some(payload::Body::GroupState(state)) => {
                self.on_group_state(&peer, state, epoch, &mut batch)?
            }
            Some(payload::Body::Succession(succession)) => {
                // Kept for the team layer, which checks it against the
                // user keys it knows (two successors of one key are a
                // compromise).
                let key = [
                    crate::devices::SUCCESSION_PREFIX,
                    self.store.blind(peer.as_bytes()).as_bytes(),
                    succession.old_key.as_ref(),
                    succession.new_key.as_ref(),
                ]
                .concat();
                batch.put(Tree::Meta, key, &succession.encode_to_vec());
                Received::Team
            }
            Some(payload::Body::MemberState(state)) if from_my_device => {
                batch.put(
                    Tree::Meta,
                    crate::devices::MEMBER_STATE.to_vec(),
                    &state.encode_to_vec(),
                );
                Received::Team
            }
            Some(payload::Body::LinkSecret(shared)) if from_my_device => {
                self.on_link_secret(shared)?
            }
            Some(payload::Body::History(chunk)) if from_my_device => {
                self.on_history_chunk(chunk, &mut batch)?
            }
            Some(payload::Body::GroupSession(share)) if from_my_device => {
                self.on_group_session_share(share, &mut batch)?
            }
            Some(
                payload::Body::MemberState(_)
                | payload::Body::History(_)
                | payload::Body::GroupSession(_)
                | payload::Body::LinkSecret(_)
                | payload::Body::LinkRequest(_),
            ) => return Ok(self.drop_blob(Dropped::Mismatch)),
            Some(payload::Body::GroupKey(key)) => {
                self.on_group_key(&peer, &sender.to_bytes(), key, &mut batch)?
            }
            Some(payload::Body::GroupKeyRequest(request)) => {
                self.on_group_key_request(&peer, request, payload.sent_at)?
            }
            Some(payload::Body::GroupKeyWithheld(withheld)) => {
                self.on_group_key_withheld(&peer, withheld, &mut batch)?
            }
            Some(payload::Body::GroupLeave(leave)) => {
                self.on_group_leave(&peer, leave, payload.sent_at)?
            }
            Some(payload::Body::DirKey(dir_key)) => {
                // The newest one wins; the team layer verifies T's signature.
                let newer = self
                    .pending_dir_key()?
                    .is_none_or(|pending| pending.version < dir_key.version);
                if newer {
                    batch.put(Tree::Meta, DIR_KEY.to_vec(), &dir_key.encode_to_vec());
                }
                Received::Team
            }
            None => return Ok(self.drop_blob(Dropped::Mismatch)),
        };
        self.store.apply(batch)?;
        Ok(received)
    }

    /// Keeps a new inbound session with `sender` (made outside
    /// [`Engine::decrypt`]) and the account it changed.
    pub(crate) fn adopt_session(
        &mut self,
        sender: [u8; 32],
        session: Session,
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        let sessions = self.sessions.entry(sender).or_default();
        sessions.insert(0, session);
        sessions.truncate(MAX_SESSIONS);
        self.save_sessions(&sender, batch)?;
        batch.put(
            Tree::Identity,
            Device::store_key().to_vec(),
            &self.device.record()?,
        );
        Ok(())
    }

    /// Decrypts with an existing session or, for a pre-key message, a new
    /// inbound one. Olm authenticates `sender` either way.
    /// The flag is set when a new inbound session changed the account.
    fn decrypt(
        &mut self,
        sender: Curve25519PublicKey,
        olm: &OlmMessage,
    ) -> Option<(Vec<u8>, bool)> {
        let sessions = self.sessions.entry(sender.to_bytes()).or_default();
        if let OlmMessage::PreKey(pre) = olm {
            if let Some(session) = sessions
                .iter_mut()
                .find(|s| s.session_id() == pre.session_id())
            {
                return session.decrypt(olm).ok().map(|p| (p, false));
            }
            let created = self
                .device
                .account
                .create_inbound_session(SessionConfig::version_1(), sender, pre)
                .ok()?;
            sessions.insert(0, created.session);
            sessions.truncate(MAX_SESSIONS);
            return Some((created.plaintext, true));
        }
        for index in 0..sessions.len() {
            if let Ok(plaintext) = sessions[index].decrypt(olm) {
                // The session the peer is using becomes the one we send on.
                let session = sessions.remove(index);
                sessions.insert(0, session);
                return Some((plaintext, false));
            }
        }
        None
    }

    fn sas_key_slot(&self, kind: &[u8], peer: &str) -> Vec<u8> {
        [
            kind,
            self.store.blind(peer.as_bytes()).as_bytes().as_slice(),
        ]
        .concat()
    }

    /// Sends `peer` my ephemeral SAS key.
    pub fn queue_sas_key(
        &mut self,
        peer: &str,
        public_key: &[u8],
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let payload = Payload {
            sent_at: now_ms,
            body: Some(payload::Body::SasKey(SasKey {
                public_key: public_key.to_vec().into(),
            })),
            ..Payload::default()
        };
        self.queue(peer, payload, None)?;
        Ok(())
    }

    /// Sends `peer` the MAC that says my user confirmed the match.
    pub fn queue_sas_mac(
        &mut self,
        peer: &str,
        mac: &[u8],
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let payload = Payload {
            sent_at: now_ms,
            body: Some(payload::Body::SasMac(SasMac {
                mac: mac.to_vec().into(),
            })),
            ..Payload::default()
        };
        self.queue(peer, payload, None)?;
        Ok(())
    }

    fn sas_record(
        &self,
        kind: &[u8],
        peer: &str,
        since_ms: u64,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        let Some(record) = self.store.get(Tree::Meta, &self.sas_key_slot(kind, peer))? else {
            return Ok(None);
        };
        let sent_at = be64_or_zero(Some(zeroize::Zeroizing::new(
            record.get(..8).unwrap_or_default().to_vec(),
        )));
        Ok((sent_at >= since_ms).then(|| record.get(8..).unwrap_or_default().to_vec()))
    }

    /// `peer`'s SAS key, if one sent at or after `since_ms` was received.
    pub fn received_sas_key(
        &self,
        peer: &str,
        since_ms: u64,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        self.sas_record(b"sas-key/", peer, since_ms)
    }

    /// `peer`'s SAS MAC, if one sent at or after `since_ms` was received.
    pub fn received_sas_mac(
        &self,
        peer: &str,
        since_ms: u64,
    ) -> Result<Option<Vec<u8>>, EngineError> {
        self.sas_record(b"sas-mac/", peer, since_ms)
    }

    /// Records that I verified `peer`'s current device key.
    pub fn mark_verified(&self, peer: &str) -> Result<(), EngineError> {
        let key = self
            .verified_key(peer)?
            .ok_or_else(|| EngineError::UnknownContact(peer.to_owned()))?;
        self.store
            .put(Tree::Meta, &self.sas_key_slot(b"verified/", peer), &key)?;
        self.store.flush()?;
        Ok(())
    }

    /// Whether I verified `peer`'s *current* key — its user key, or its
    /// device key outside a team (a changed key is unverified again, never
    /// carried over).
    pub fn is_verified(&self, peer: &str) -> Result<bool, EngineError> {
        let Some(current) = self.verified_key(peer)? else {
            return Ok(false);
        };
        Ok(self
            .store
            .get(Tree::Meta, &self.sas_key_slot(b"verified/", peer))?
            .is_some_and(|key| key.as_slice() == current.as_slice()))
    }

    /// Keeps a verification across a user-key succession the team layer
    /// checked (the old key signed the new one): `old` verified means
    /// `new` is.
    pub(crate) fn carry_verification(
        &self,
        peer: &str,
        old: &[u8; 32],
        new: &[u8; 32],
    ) -> Result<(), EngineError> {
        let slot = self.sas_key_slot(b"verified/", peer);
        if self
            .store
            .get(Tree::Meta, &slot)?
            .is_some_and(|key| key.as_slice() == old.as_slice())
        {
            self.store.put(Tree::Meta, &slot, new)?;
        }
        Ok(())
    }

    /// Olm sessions held with `peer`'s devices (a restart must not add one).
    pub fn session_count(&self, peer: &str) -> usize {
        self.contacts
            .get(peer)
            .map(|devices| {
                devices
                    .iter()
                    .filter_map(|c| self.sessions.get(&c.card.identity_key.to_bytes()))
                    .map(Vec::len)
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Re-reads which access-token period key this device holds (after a
    /// refill), for the payloads it queues from now on.
    pub fn refresh_token_key(&mut self) -> Result<(), EngineError> {
        self.token_key = newest_token_key(self.store.as_ref())?;
        Ok(())
    }

    /// The ID of the period key my payloads name, if I hold one.
    pub fn token_key_id(&self) -> Option<u64> {
        self.token_key.as_ref().map(|k| k.key_id)
    }

    /// A sender named a period key: if I hold another key for the same
    /// period, the relay showed us different keys — a way to tell members
    /// apart (DESIGN §7). Recorded, and reported by
    /// [`Engine::token_key_warnings`]; the message itself is authentic.
    fn check_token_key(
        &self,
        named: Option<&sotto_proto::client::TokenKeyRef>,
        batch: &mut Batch,
    ) -> Result<(), EngineError> {
        let Some(named) = named else {
            return Ok(());
        };
        let key = [
            crate::tokens::PERIOD_KEY_PREFIX,
            &named.key_id.to_be_bytes(),
        ]
        .concat();
        if let Some(mine) = self.store.get(Tree::Meta, &key)?
            && crate::token_key_fingerprint(named.key_id, &mine).as_slice()
                != named.fingerprint.as_ref()
        {
            batch.put(
                Tree::Meta,
                [
                    crate::tokens::KEY_WARNING_PREFIX,
                    &named.key_id.to_be_bytes(),
                ]
                .concat(),
                &[],
            );
        }
        Ok(())
    }

    /// Access-token periods for which this device saw a key other than one
    /// a member (or the relay, earlier) showed it: the relay may be telling
    /// members apart. Empty when all is well.
    pub fn token_key_warnings(&self) -> Result<Vec<u64>, EngineError> {
        Ok(self
            .store
            .scan_prefix(Tree::Meta, crate::tokens::KEY_WARNING_PREFIX)?
            .into_iter()
            .filter_map(|(key, _)| {
                key.get(crate::tokens::KEY_WARNING_PREFIX.len()..)
                    .and_then(|id| id.try_into().ok())
                    .map(u64::from_be_bytes)
            })
            .collect())
    }

    /// Records the period key `public` for `key_id` as this device's (the
    /// wallet does so on refill; tests use it to stage a relay that showed
    /// two members two keys).
    #[doc(hidden)]
    pub fn record_period_key(&mut self, key_id: u64, public: &[u8; 32]) -> Result<(), EngineError> {
        self.store.put(
            Tree::Meta,
            &[crate::tokens::PERIOD_KEY_PREFIX, &key_id.to_be_bytes()].concat(),
            public,
        )?;
        self.refresh_token_key()
    }

    /// A directory key received and not yet applied by the team layer.
    pub fn pending_dir_key(&self) -> Result<Option<sotto_proto::client::DirKey>, EngineError> {
        self.store
            .get(Tree::Meta, DIR_KEY)?
            .map(|bytes| sotto_proto::client::DirKey::decode(bytes.as_slice()).map_err(corrupt))
            .transpose()
    }

    /// The team layer applied (or refused) the pending directory key.
    pub fn clear_dir_key(&self) -> Result<(), EngineError> {
        self.store.delete(Tree::Meta, DIR_KEY)?;
        Ok(self.store.flush()?)
    }

    /// Makes everything applied so far durable.
    pub fn flush(&self) -> Result<(), EngineError> {
        Ok(self.store.flush()?)
    }

    /// My history with `peer`, oldest first.
    pub fn history(&self, peer: &str) -> Result<Vec<Message>, EngineError> {
        if !self.contacts.contains_key(peer)
            && self
                .store
                .last_key(Tree::History, self.store.blind(peer.as_bytes()).as_bytes())?
                .is_none()
        {
            return Err(EngineError::UnknownContact(peer.to_owned()));
        }
        self.history_of(peer)
    }

    /// Every history entry of a conversation, oldest first, with the
    /// current status of my own messages (kept beside the entry, see
    /// [`status_record`]).
    pub(crate) fn history_of(&self, conversation: &str) -> Result<Vec<Message>, EngineError> {
        self.store
            .scan_prefix(
                Tree::History,
                self.store.blind(conversation.as_bytes()).as_bytes(),
            )?
            .into_iter()
            .map(|(_, value)| {
                let mut message = records::decode_message(&value).map_err(corrupt)?;
                if message.from_me
                    && let Ok(id) = hex::decode(&message.id)
                    && let Some(record) = self
                        .store
                        .get(Tree::Seen, &[b"out".as_slice(), &id].concat())?
                    && let (_, Some(status)) = split_status_record(&record).map_err(corrupt)?
                {
                    message.status = status;
                }
                Ok(message)
            })
            .collect()
    }
}

/// The sequence number at the end of a history or outbox key.
fn seq_of_key(key: &[u8]) -> Option<u64> {
    key.get(key.len().checked_sub(8)?..)?
        .try_into()
        .ok()
        .map(u64::from_be_bytes)
}

/// The sequence number at the start of an outbox key.
fn outbox_seq_of_key(key: &[u8]) -> Option<u64> {
    key.get(..8)?.try_into().ok().map(u64::from_be_bytes)
}

/// The record of one of my messages in the `Seen` tree, under
/// `"out" || message ID`: its history key, then its delivery status.
/// Keeping the status here, not in the history entry, makes a status
/// change (sent, delivered, read) a rewrite of 25 bytes instead of a read
/// and rewrite of the whole message.
pub(crate) fn status_record(history_key: &[u8], status: Status) -> Vec<u8> {
    [history_key, &[status.to_byte()]].concat()
}

/// Splits a [`status_record`]. Old homes stored the history key alone
/// (`None`: the status is the history entry's).
pub(crate) fn split_status_record(
    record: &[u8],
) -> Result<(&[u8], Option<Status>), records::RecordError> {
    const HISTORY_KEY_LEN: usize = crate::BlindId::LEN + 8;
    match record.len() {
        HISTORY_KEY_LEN => Ok((record, None)),
        len if len == HISTORY_KEY_LEN + 1 => {
            let (key, status) = record.split_at(HISTORY_KEY_LEN);
            Ok((key, Some(Status::from_byte(status[0])?)))
        }
        _ => Err(records::RecordError::Unknown("status record length")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    const NOW: u64 = 1_800_000_000;

    fn engine(handle: &str) -> (Engine, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
        (Engine::create(store.clone(), handle, NOW).unwrap(), store)
    }

    fn deliver(from: &mut Engine, to: &mut Engine) -> Vec<Received> {
        let epoch = Epoch::from_unix_secs(NOW, EPOCH_SECS);
        let mut received = Vec::new();
        for out in from.outgoing(NOW).unwrap() {
            received.push(to.receive(out.blob.as_bytes(), epoch).unwrap());
            from.sent(&out.key).unwrap();
        }
        received
    }

    /// Rewrites every record the way versions before the binary records
    /// stored them: JSON contacts, outbox entries and history, the status
    /// in the history entry, and the global counters in `Meta`.
    fn downgrade_to_json(store: &dyn Store) {
        let mut batch = Batch::new();
        for (key, value) in store.scan_prefix(Tree::Contacts, &[]).unwrap() {
            let record = records::decode_contact(&value).unwrap();
            batch.put(Tree::Contacts, key, &serde_json::to_vec(&record).unwrap());
        }
        let mut outbox_seq = 0;
        for (key, value) in store.scan_prefix(Tree::Outbox, &[]).unwrap() {
            let mut record = records::decode_outbox(&value).unwrap();
            assert!(record.group.is_none());
            record.message_id.clear();
            outbox_seq = outbox_seq_of_key(&key).unwrap();
            batch.delete(Tree::Outbox, key.clone());
            batch.put(
                Tree::Outbox,
                key[..8].to_vec(),
                &serde_json::to_vec(&record).unwrap(),
            );
        }
        let mut history_seq = 0;
        for (key, value) in store.scan_prefix(Tree::History, &[]).unwrap() {
            let mut message = records::decode_message(&value).unwrap();
            let id = hex::decode(&message.id).unwrap();
            let out = [b"out".as_slice(), &id].concat();
            if let Some(record) = store.get(Tree::Seen, &out).unwrap() {
                let (history_key, status) = split_status_record(&record).unwrap();
                message.status = status.unwrap();
                batch.put(Tree::Seen, out, history_key);
            }
            history_seq = history_seq.max(seq_of_key(&key).unwrap());
            batch.put(Tree::History, key, &serde_json::to_vec(&message).unwrap());
        }
        batch.put(Tree::Meta, HISTORY_SEQ.to_vec(), &history_seq.to_be_bytes());
        batch.put(Tree::Meta, OUTBOX_SEQ.to_vec(), &outbox_seq.to_be_bytes());
        store.apply(batch).unwrap();
        // Really JSON now.
        let (_, value) = &store.scan_prefix(Tree::History, &[]).unwrap()[0];
        assert_eq!(value.first(), Some(&b'{'));
    }

    #[test]
    fn a_home_with_json_records_keeps_working() {
        let (mut alice, alice_store) = engine("alice");
        let (mut bob, _) = engine("bob");
        alice.import_card(&bob.export_card()).unwrap();
        bob.import_card(&alice.export_card()).unwrap();
        alice.queue_text("bob", "one", NOW * 1000).unwrap();
        deliver(&mut alice, &mut bob);
        bob.queue_text("alice", "two", NOW * 1000 + 1).unwrap();
        deliver(&mut bob, &mut alice);
        // Queued, not yet sent, when the old version stopped.
        alice.queue_text("bob", "three", NOW * 1000 + 2).unwrap();
        drop(alice);
        downgrade_to_json(alice_store.as_ref());

        let mut alice = Engine::open(alice_store).unwrap().unwrap();
        let statuses = |e: &Engine| -> Vec<(String, Status)> {
            e.history("bob")
                .unwrap()
                .into_iter()
                .map(|m| (m.text, m.status))
                .collect()
        };
        assert_eq!(
            statuses(&alice),
            [
                ("one".into(), Status::Sent),
                ("two".into(), Status::Received),
                ("three".into(), Status::Queued),
            ]
        );
        // The old outbox entry goes out on the old Olm session.
        let received = deliver(&mut alice, &mut bob);
        assert!(matches!(&received[..], [Received::Message(m)] if m.text == "three"));
        bob.mark_read("alice", NOW * 1000 + 3).unwrap();
        deliver(&mut bob, &mut alice);
        alice.queue_text("bob", "four", NOW * 1000 + 4).unwrap();
        assert_eq!(
            statuses(&alice),
            [
                ("one".into(), Status::Read),
                ("two".into(), Status::Received),
                ("three".into(), Status::Read),
                ("four".into(), Status::Queued),
            ]
        );
        let received = deliver(&mut alice, &mut bob);
        assert!(matches!(&received[..], [Received::Message(m)] if m.text == "four"));
        assert_eq!(statuses(&alice)[3], ("four".into(), Status::Sent));
        assert_eq!(bob.history("alice").unwrap().len(), 4);
    }

    #[test]
    fn counters_resume_after_a_restart_without_meta_writes() {
        let (mut alice, store) = engine("alice");
        let (mut bob, _) = engine("bob");
        alice.import_card(&bob.export_card()).unwrap();
        bob.import_card(&alice.export_card()).unwrap();
        alice.queue_text("bob", "one", NOW * 1000).unwrap();
        alice.queue_text("bob", "two", NOW * 1000).unwrap();
        assert!(store.get(Tree::Meta, HISTORY_SEQ).unwrap().is_none());
        assert!(store.get(Tree::Meta, OUTBOX_SEQ).unwrap().is_none());
        drop(alice);
        let mut alice = Engine::open(store).unwrap().unwrap();
        alice.queue_text("bob", "three", NOW * 1000).unwrap();
        let texts: Vec<String> = alice
            .history("bob")
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, ["one", "two", "three"]);
        let received = deliver(&mut alice, &mut bob);
        assert_eq!(received.len(), 3);
    }
}
