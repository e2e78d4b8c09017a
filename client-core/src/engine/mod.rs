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
//!
//! Where each part lives (every file extends the one [`Engine`]):
//!
//! - `mod.rs`: the [`Engine`] state, opening and creating it, the
//!   stored counters; the shared types ([`Message`], [`Status`],
//!   [`Received`], [`Dropped`], [`EngineError`]…) are defined in
//!   `crate::records` and re-exported here.
//! - `contacts`: contacts and their devices — import a card, add,
//!   remove, replace a contact's device list ([`DeviceChange`]).
//! - `olm`: Olm sessions — save, adopt, decrypt with the sessions of one
//!   device.
//! - `outbox`: queue a text or receipt, seal it to every device of the
//!   peer, hand out [`Outgoing`] blobs and forget them once sent.
//! - `pq`: the pairwise post-quantum secret with each contact device
//!   (DESIGN §5.1): which envelope version a blob gets, confirming,
//!   refreshing, the downgrade rule's data.
//! - `receive`: the inboxes to read and [`Engine::receive`], the
//!   acceptance rule above; dispatches group, device and team payloads to
//!   `crate::group` and `crate::devices`.
//! - `actions`: replies, reactions, edits and deletes for everyone — the
//!   message index by ID and the rule for who may change what.
//! - `history`: the local history, statuses (receipts, read marks) and
//!   the per-conversation sequence numbers.
//! - `search`: local search ([`Query`]) and export over the history.
//! - `timer`: disappearing messages — a conversation's timer, and
//!   purging what ran out.
//! - `verify`: the engine's side of SAS verification and verified keys.
//! - `team_keys`: the access-token period keys a payload names
//!   (DESIGN §7) and the pending team directory key.
//!
//! Groups (`crate::group`) and device linking (`crate::devices`) add more
//! `impl Engine` blocks on top of this module; this module never imports
//! them.

mod actions;
mod contacts;
mod files;
mod history;
mod olm;
mod outbox;
mod pq;
mod receive;
mod reports;
mod search;
mod team_keys;
mod timer;
mod verify;

pub(crate) use crate::records::{
    ContactRecord, OutboxRecord, corrupt, random_id, split_status_record, status_record,
};
pub use crate::records::{
    DropCounts, Dropped, EngineError, Message, MessageId, Outgoing, Received, Status,
};
pub use contacts::DeviceChange;
pub use pq::PQ_REFRESH_SECS;
pub use search::Query;
pub(crate) use timer::checked as checked_timer;
pub(crate) use timer::timer_notice;

use std::collections::HashMap;
use std::sync::Arc;

use sotto_proto::client::SignedCard;
use sotto_proto::{MailboxId, Message as _};
use vodozemac::olm::{Session, SessionPickle};

use crate::card::Card;
use crate::device::Device;
use crate::{InboxKey, InboxPublic, Store, Tree, records};
use team_keys::newest_token_key;

const ENVELOPE_VERSION: u32 = 1;
/// Olm sessions kept per contact device (both sides may start one at once).
const MAX_SESSIONS: usize = 4;
const HISTORY_SEQ: &[u8] = b"history-seq";
const OUTBOX_SEQ: &[u8] = b"outbox-seq";
const LAST_EPOCH: &[u8] = b"last-epoch";
const DIR_KEY: &[u8] = b"team/dir-key";

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
    /// The pairwise post-quantum secret with this device (stored apart,
    /// see `pq`).
    pq: pq::PqPair,
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
    pub(crate) groups: HashMap<crate::records::GroupId, crate::records::Group>,
    /// Which mailboxes [`Engine::inboxes`] handed out belong to a group.
    pub(crate) group_mailboxes: crate::records::MailboxMap,
    /// Set when a group's secret changed (a new group, a new generation):
    /// there are new mailboxes to read.
    pub(crate) groups_changed: bool,
    /// The newest access-token period key this device holds, named in
    /// every payload (DESIGN §7).
    token_key: Option<sotto_proto::client::TokenKeyRef>,
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
        let mut device = Device::generate(handle);
        device.request_inbox_since = now_secs;
        device.save(store.as_ref())?;
        let engine = Self::with_device(store, device)?;
        engine.synced_until(now_secs)?;
        // An empty history: nothing to build the expiry index from.
        engine.store.put(Tree::Meta, timer::EXPIRES_INDEXED, &[])?;
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
            let pq = pq::load_pq(
                store.as_ref(),
                &card.identity_key.to_bytes(),
                card.kem_key.as_ref(),
            )?;
            let contact = Contact {
                pq,
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
        let groups = crate::records::load_groups(store.as_ref())?;
        let mut engine = Self {
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
        };
        engine.upgrade_pq()?;
        Ok(engine)
    }

    /// At open: saves an ML-KEM key made for a device record from before
    /// it, and starts a pairwise secret with every contact device that has
    /// an ML-KEM key and none (contacts from before the hybrid envelope).
    fn upgrade_pq(&mut self) -> Result<(), EngineError> {
        let mut batch = crate::Batch::new();
        let mut dirty = false;
        if self.device.kem_fresh {
            batch.put(
                Tree::Identity,
                Device::store_key().to_vec(),
                &self.device.record()?,
            );
            self.device.kem_fresh = false;
            dirty = true;
        }
        let targets: Vec<(String, usize)> = self
            .contacts
            .iter()
            .flat_map(|(handle, devices)| (0..devices.len()).map(|i| (handle.clone(), i)))
            .collect();
        for (handle, index) in targets {
            dirty |= self.ensure_pq(&handle, index, 0, &mut batch)?;
        }
        if dirty {
            self.store.apply(batch)?;
            self.store.flush()?;
        }
        Ok(())
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

    /// Makes everything applied so far durable.
    pub fn flush(&self) -> Result<(), EngineError> {
        Ok(self.store.flush()?)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{Batch, EPOCH_SECS, Epoch, MemoryStore};

    pub(crate) const NOW: u64 = 1_800_000_000;

    fn engine(handle: &str) -> (Engine, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
        (Engine::create(store.clone(), handle, NOW).unwrap(), store)
    }

    /// Hands every queued message of `from` to `to` at [`NOW`] (the engine
    /// tests' one clock), marking each sent.
    pub(crate) fn deliver(from: &mut Engine, to: &mut Engine) -> Vec<Received> {
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
