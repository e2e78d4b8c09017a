//! The pairwise post-quantum secret of each contact device (DESIGN §5.1).
//!
//! When a contact device's card carries an ML-KEM key, I encapsulate to it
//! once (a *pending* encapsulation) and seal every blob to that device as
//! a first-contact hybrid envelope (version 3, 4 KiB for an ordinary
//! message) carrying the same ciphertext, with a fresh X25519 key each
//! time, until the device answers with a version-4 envelope mixing the
//! secret in: that proves it decapsulated, and the secret becomes
//! *current*. From then on every blob either way is version 4, 1 KiB for
//! an ordinary message. A version-3 blob from the device (it encapsulated
//! to me) makes its secret current at once, after Olm authenticated it.
//!
//! When both sides encapsulate at once, the encapsulation of the device
//! with the smaller identity key wins: the other drops its own pending one
//! when it sees it. The secret is replaced by a new encapsulation when it
//! is [`PQ_REFRESH_SECS`] old (at the next message I queue to that device)
//! and whenever the device's ML-KEM key changes or a device is added; the
//! one it replaced is still accepted until the next replacement, for blobs
//! already in flight, then erased.

use zeroize::Zeroizing;

use super::{Contact, Engine, EngineError};
use crate::{Batch, KEM_CIPHERTEXT_LEN, KemEncapsulation, KemPublic, PairwiseKey, Store, Tree};

/// A pairwise secret is replaced by a new encapsulation after this long
/// (7 days): the forward-secrecy granularity of the outer layer.
pub const PQ_REFRESH_SECS: u64 = 7 * 24 * 3600;

/// Store key prefix (tree Meta) of a device's pairwise state, followed by
/// `blind(identity key)`.
const PQ_PREFIX: &[u8] = b"pq-pair/";
/// The record format's version.
const PQ_RECORD_VERSION: u8 = 1;

/// A pending encapsulation to a device and the secret it establishes.
pub(crate) struct Pending {
    pub(crate) encapsulation: KemEncapsulation,
    pub(crate) pairwise: PairwiseKey,
}

/// The pairwise post-quantum state with one contact device. No `Debug`;
/// every secret in it is wiped on drop.
#[derive(Default)]
pub(crate) struct PqPair {
    /// The confirmed secret and when it became current (unix seconds).
    pub(crate) current: Option<(PairwiseKey, u64)>,
    /// The secret `current` replaced, still accepted from the device.
    pub(crate) previous: Option<PairwiseKey>,
    /// My encapsulation the device has not yet answered.
    pub(crate) pending: Option<Pending>,
}

/// Which of a device's secrets opened a version-4 blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Current,
    Previous,
    Pending,
}

/// How a 1:1 blob was sealed, as far as the receive path needs it.
pub(crate) enum Sealed {
    /// Version 1: X25519 only.
    Classical,
    /// Version 3: carries a new pairwise secret from the sender.
    Hybrid(PairwiseKey),
    /// Version 4, opened with `slot` of the device with this identity key.
    Pairwise([u8; 32], Slot),
}

impl PqPair {
    /// Whether there is anything to keep.
    fn is_empty(&self) -> bool {
        self.current.is_none() && self.previous.is_none() && self.pending.is_none()
    }

    /// The secrets a version-4 blob from this device may use.
    pub(crate) fn candidates(&self) -> impl Iterator<Item = (Slot, &PairwiseKey)> {
        self.current
            .iter()
            .map(|(key, _)| (Slot::Current, key))
            .chain(self.previous.iter().map(|key| (Slot::Previous, key)))
            .chain(self.pending.iter().map(|p| (Slot::Pending, &p.pairwise)))
    }

    /// `secret` becomes current; the current one is kept as previous.
    fn make_current(&mut self, secret: PairwiseKey, now_secs: u64) {
        self.previous = self.current.take().map(|(key, _)| key);
        self.current = Some((secret, now_secs));
    }

    /// Binary record: `version, flags, [current(32) since(8)],
    /// [previous(32)], [pending ct(1088) ss(32)]`.
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(2 + 40 + 32 + 1120));
        let flags = u8::from(self.current.is_some())
            | u8::from(self.previous.is_some()) << 1
            | u8::from(self.pending.is_some()) << 2;
        out.extend_from_slice(&[PQ_RECORD_VERSION, flags]);
        if let Some((key, since)) = &self.current {
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&since.to_be_bytes());
        }
        if let Some(key) = &self.previous {
            out.extend_from_slice(key.as_bytes());
        }
        if let Some(pending) = &self.pending {
            out.extend_from_slice(pending.encapsulation.ciphertext());
            out.extend_from_slice(pending.encapsulation.shared.as_ref());
        }
        out
    }

    /// Reads [`PqPair::encode`]'s record; `kem_key` is the device's
    /// current ML-KEM key (a pending encapsulation's secret is bound to it).
    fn decode(bytes: &[u8], kem_key: Option<&KemPublic>) -> Option<Self> {
        let (&[version, flags], mut rest) = bytes.split_first_chunk::<2>()?;
        if version != PQ_RECORD_VERSION || flags > 0b111 {
            return None;
        }
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        let key32 = |b: &[u8]| -> Option<[u8; 32]> { b.try_into().ok() };
        let mut pair = Self::default();
        if flags & 1 != 0 {
            let key = key32(take(32)?)?;
            let since = u64::from_be_bytes(take(8)?.try_into().ok()?);
            pair.current = Some((PairwiseKey::from_bytes(key), since));
        }
        if flags & 2 != 0 {
            pair.previous = Some(PairwiseKey::from_bytes(key32(take(32)?)?));
        }
        if flags & 4 != 0 {
            let ct: [u8; KEM_CIPHERTEXT_LEN] = take(KEM_CIPHERTEXT_LEN)?.try_into().ok()?;
            let shared = key32(take(32)?)?;
            let encapsulation = KemEncapsulation::from_parts(Box::new(ct), shared);
            // A pending encapsulation to a key the device no longer has is
            // useless: a new one is made.
            if let Some(kem_key) = kem_key {
                let pairwise = encapsulation.pairwise(kem_key);
                pair.pending = Some(Pending {
                    encapsulation,
                    pairwise,
                });
            }
        }
        rest.is_empty().then_some(pair)
    }
}

/// The store key of a device's pairwise state.
fn pq_store_key(store: &dyn Store, identity: &[u8; 32]) -> Vec<u8> {
    [PQ_PREFIX, store.blind(identity).as_bytes().as_slice()].concat()
}

/// Loads a device's pairwise state (empty when none is stored or the
/// record is unreadable: a new encapsulation starts over, nothing breaks).
pub(crate) fn load_pq(
    store: &dyn Store,
    identity: &[u8; 32],
    kem_key: Option<&KemPublic>,
) -> Result<PqPair, EngineError> {
    Ok(store
        .get(Tree::Meta, &pq_store_key(store, identity))?
        .and_then(|bytes| PqPair::decode(&bytes, kem_key))
        .unwrap_or_default())
}

impl Engine {
    /// Writes (or, when empty, deletes) a device's pairwise state.
    pub(crate) fn save_pq(&self, contact: &Contact, batch: &mut Batch) {
        let key = pq_store_key(self.store.as_ref(), &contact.card.identity_key.to_bytes());
        if contact.pq.is_empty() {
            batch.delete(Tree::Meta, key);
        } else {
            batch.put(Tree::Meta, key, &contact.pq.encode());
        }
    }

    /// Deletes a removed device's pairwise state.
    pub(crate) fn forget_pq(&self, identity: &[u8; 32], batch: &mut Batch) {
        batch.delete(Tree::Meta, pq_store_key(self.store.as_ref(), identity));
    }

    /// Makes sure a device with an ML-KEM key has a secret to seal with:
    /// a new encapsulation when there is none pending and no current one,
    /// or the current one is [`PQ_REFRESH_SECS`] old at `now_secs`.
    /// Returns whether the state changed (it is then added to `batch`).
    pub(crate) fn ensure_pq(
        &mut self,
        handle: &str,
        index: usize,
        now_secs: u64,
        batch: &mut Batch,
    ) -> Result<bool, EngineError> {
        let Some(contact) = self
            .contacts
            .get_mut(handle)
            .and_then(|devices| devices.get_mut(index))
        else {
            return Ok(false);
        };
        let Some(kem_key) = contact.card.kem_key.clone() else {
            return Ok(false);
        };
        let due = match (&contact.pq.pending, &contact.pq.current) {
            (Some(_), _) => false,
            (None, None) => true,
            (None, Some((_, since))) => now_secs >= since.saturating_add(PQ_REFRESH_SECS),
        };
        if !due {
            return Ok(false);
        }
        let encapsulation = kem_key.encapsulate()?;
        let pairwise = encapsulation.pairwise(&kem_key);
        contact.pq.pending = Some(Pending {
            encapsulation,
            pairwise,
        });
        let contact = &self.contacts[handle][index];
        self.save_pq(contact, batch);
        Ok(true)
    }

    /// After Olm authenticated a blob from device `index` of `peer`: a
    /// version-3 blob's secret becomes current (unless my own pending
    /// encapsulation wins the tie), a version-4 blob opened with my pending
    /// secret confirms it. The state change is added to `batch`.
    pub(crate) fn on_sealed(
        &mut self,
        peer: &str,
        index: usize,
        sealed: Sealed,
        now_secs: u64,
        batch: &mut Batch,
    ) {
        let me = self.me;
        let Some(contact) = self
            .contacts
            .get_mut(peer)
            .and_then(|devices| devices.get_mut(index))
        else {
            return;
        };
        let changed = match sealed {
            Sealed::Classical | Sealed::Pairwise(_, Slot::Current | Slot::Previous) => false,
            Sealed::Pairwise(_, Slot::Pending) => match contact.pq.pending.take() {
                Some(pending) => {
                    contact.pq.make_current(pending.pairwise, now_secs);
                    true
                }
                None => false,
            },
            Sealed::Hybrid(secret) => {
                let pq = &mut contact.pq;
                let known = pq.current.as_ref().is_some_and(|(k, _)| *k == secret)
                    || pq.previous.as_ref() == Some(&secret);
                // Both encapsulated at once: the smaller identity key's
                // encapsulation wins; the other side adopts it.
                let mine_wins = pq.pending.is_some()
                    && me.as_slice() < contact.card.identity_key.as_bytes().as_slice();
                if known || mine_wins {
                    false
                } else {
                    pq.pending = None;
                    pq.make_current(secret, now_secs);
                    true
                }
            }
        };
        if changed {
            let contact = &self.contacts[peer][index];
            self.save_pq(contact, batch);
        }
    }

    /// Whether every device of `peer` I write to has an ML-KEM key (the
    /// hybrid envelope); `None` if `peer` is not a contact.
    pub fn is_post_quantum(&self, peer: &str) -> Option<bool> {
        let devices = self.contacts.get(peer).filter(|d| !d.is_empty())?;
        Some(devices.iter().all(|c| c.card.kem_key.is_some()))
    }

    /// Whether every device of every member in `members` (mine included)
    /// has an ML-KEM key: then group blobs are sealed as version 4.
    pub(crate) fn group_is_post_quantum(&self, members: &[String]) -> bool {
        members.iter().all(|member| {
            let devices = self.contacts.get(member);
            if member == self.handle() {
                devices.is_none_or(|d| d.iter().all(|c| c.card.kem_key.is_some()))
            } else {
                devices.is_some_and(|d| !d.is_empty() && d.iter().all(|c| c.card.kem_key.is_some()))
            }
        })
    }

    /// Whether an established pairwise secret (not just a pending
    /// encapsulation) is held with every device of `peer`.
    pub fn pq_established(&self, peer: &str) -> bool {
        self.contacts.get(peer).is_some_and(|devices| {
            !devices.is_empty() && devices.iter().all(|c| c.pq.current.is_some())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use sotto_proto::Bucket;
    use sotto_proto::Message as _;
    use sotto_proto::client::Envelope;

    use super::*;
    use crate::{
        Dropped, EPOCH_SECS, Epoch, HYBRID_SEAL_VERSION, KemSecret, MemoryStore,
        PAIRWISE_SEAL_VERSION, Received, SEAL_VERSION, records,
    };

    const NOW: u64 = 1_800_000_000;

    fn engine(handle: &str) -> (Engine, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new().unwrap());
        (Engine::create(store.clone(), handle, NOW).unwrap(), store)
    }

    /// Delivers everything `from` has queued; returns each blob's version
    /// and bucket and what `to` made of it.
    fn deliver(from: &mut Engine, to: &mut Engine, now: u64) -> Vec<(u8, Bucket, Received)> {
        let epoch = Epoch::from_unix_secs(now, EPOCH_SECS);
        let mut out = Vec::new();
        for item in from.outgoing(now).unwrap() {
            let blob = item.blob.as_bytes();
            let received = to.receive(blob, epoch).unwrap();
            from.sent(&item.key).unwrap();
            out.push((blob[0], item.blob.bucket(), received));
        }
        out
    }

    fn say(from: &mut Engine, to: &mut Engine, text: &str, now: u64) -> Vec<(u8, Bucket)> {
        let peer = to.handle().to_owned();
        from.queue_text(&peer, text, now * 1000).unwrap();
        let delivered = deliver(from, to, now);
        assert!(
            delivered
                .iter()
                .all(|(_, _, r)| matches!(r, Received::Message(m) if m.text == text)),
            "{text} was not received"
        );
        delivered.into_iter().map(|(v, b, _)| (v, b)).collect()
    }

    /// `e`'s card as a version from before the hybrid envelope made it:
    /// no ML-KEM key, signed by the device.
    fn classical_card(e: &Engine) -> String {
        let mut card = e.own_card();
        card.kem_key = None;
        crate::card::export(&card.sign(|m| e.device.account.sign(m)))
    }

    fn pair() -> (Engine, Arc<dyn Store>, Engine) {
        let (mut alice, alice_store) = engine("alice");
        let (mut bob, _) = engine("bob");
        alice.import_card(&bob.export_card()).unwrap();
        bob.import_card(&alice.export_card()).unwrap();
        (alice, alice_store, bob)
    }

    fn current(e: &Engine, peer: &str) -> [u8; 32] {
        *e.contacts[peer][0]
            .pq
            .current
            .as_ref()
            .unwrap()
            .0
            .as_bytes()
    }

    /// Sends back and forth until both sides hold one established secret;
    /// returns every blob's version and bucket.
    fn establish(alice: &mut Engine, bob: &mut Engine) -> Vec<(u8, Bucket)> {
        let mut blobs = Vec::new();
        for round in 0..3 {
            blobs.extend(say(alice, bob, &format!("a{round}"), NOW));
            blobs.extend(say(bob, alice, &format!("b{round}"), NOW));
        }
        assert!(alice.pq_established("bob") && bob.pq_established("alice"));
        assert_eq!(current(alice, "bob"), current(bob, "alice"));
        blobs
    }

    #[test]
    fn first_contact_is_hybrid_and_then_every_blob_is_pairwise_in_1_kib() {
        let (mut alice, _, mut bob) = pair();
        assert_eq!(alice.is_post_quantum("bob"), Some(true));
        let blobs = establish(&mut alice, &mut bob);
        // First contact: the hybrid envelope, 4 KiB for a short text.
        assert_eq!(blobs[0], (HYBRID_SEAL_VERSION, Bucket::K4));
        // Every blob of the pair is hybrid or pairwise; none classical.
        for (version, bucket) in &blobs {
            match *version {
                HYBRID_SEAL_VERSION => assert_eq!(*bucket, Bucket::K4),
                PAIRWISE_SEAL_VERSION => assert_eq!(*bucket, Bucket::K1),
                other => panic!("a blob of version {other} between two PQ devices"),
            }
        }
        // Once established, ordinary messages are 1 KiB pairwise blobs
        // both ways.
        assert_eq!(
            say(&mut alice, &mut bob, "later", NOW),
            [(PAIRWISE_SEAL_VERSION, Bucket::K1)]
        );
        assert_eq!(
            say(&mut bob, &mut alice, "later too", NOW),
            [(PAIRWISE_SEAL_VERSION, Bucket::K1)]
        );
    }

    #[test]
    fn the_pairwise_secret_survives_a_restart() {
        let (mut alice, alice_store, mut bob) = pair();
        establish(&mut alice, &mut bob);
        let before = current(&alice, "bob");
        drop(alice);
        let mut alice = Engine::open(alice_store).unwrap().unwrap();
        assert_eq!(current(&alice, "bob"), before);
        assert_eq!(
            say(&mut alice, &mut bob, "after restart", NOW),
            [(PAIRWISE_SEAL_VERSION, Bucket::K1)]
        );
    }

    #[test]
    fn a_classical_envelope_from_a_post_quantum_contact_is_refused_and_nothing_is_lost() {
        let (mut alice, _, mut bob) = pair();
        establish(&mut alice, &mut bob);
        alice.queue_text("bob", "secret", NOW * 1000).unwrap();
        // An attacker (or a broken client) seals alice's genuine envelope
        // classically.
        let (_, value) = alice
            .store
            .scan_prefix(Tree::Outbox, &[])
            .unwrap()
            .remove(0);
        let record = records::decode_outbox(&value).unwrap();
        let mut envelope = Envelope::decode(record.envelope.as_slice()).unwrap();
        let epoch = Epoch::from_unix_secs(NOW, EPOCH_SECS);
        envelope.epoch = epoch.get();
        let bob_card = bob.own_card();
        let classical = crate::seal(&bob_card.envelope_key, &envelope.encode_to_vec()).unwrap();
        assert_eq!(classical.as_bytes()[0], SEAL_VERSION);
        assert!(matches!(
            bob.receive(classical.as_bytes(), epoch).unwrap(),
            Received::Dropped(Dropped::Downgrade)
        ));
        assert_eq!(bob.drops().by_reason.get("Downgrade"), Some(&1));
        // Refused before Olm ran: the genuine blob still decrypts.
        let delivered = deliver(&mut alice, &mut bob, NOW);
        assert!(
            matches!(&delivered[..], [(PAIRWISE_SEAL_VERSION, _, Received::Message(m))] if m.text == "secret")
        );
    }

    #[test]
    fn a_contact_without_an_ml_kem_key_keeps_working_classically() {
        let (mut alice, _) = engine("alice");
        let (mut bob, _) = engine("bob");
        // Alice runs a version from before the hybrid envelope: her card
        // has no ML-KEM key, and she reads none in bob's.
        alice.import_card(&classical_card(&bob)).unwrap();
        bob.import_card(&classical_card(&alice)).unwrap();
        assert_eq!(bob.is_post_quantum("alice"), Some(false));
        assert!(bob.contacts["alice"][0].pq.is_empty());
        for round in 0..2 {
            assert_eq!(
                say(&mut alice, &mut bob, &format!("a{round}"), NOW),
                [(SEAL_VERSION, Bucket::K1)]
            );
            assert_eq!(
                say(&mut bob, &mut alice, &format!("b{round}"), NOW),
                [(SEAL_VERSION, Bucket::K1)]
            );
        }
        assert!(!bob.pq_established("alice"));
    }

    /// Bob still holds alice's card from before her upgrade; alice holds
    /// his new one and encapsulates to it. Bob answers with the pairwise
    /// secret, not classically (alice would refuse that as a downgrade).
    #[test]
    fn a_contact_known_by_an_old_card_who_encapsulated_to_me_gets_pairwise_blobs() {
        let (mut alice, _) = engine("alice");
        let (mut bob, _) = engine("bob");
        alice.import_card(&bob.export_card()).unwrap();
        bob.import_card(&classical_card(&alice)).unwrap();
        assert_eq!(
            say(&mut alice, &mut bob, "hello", NOW),
            [(HYBRID_SEAL_VERSION, Bucket::K4)]
        );
        assert_eq!(
            say(&mut bob, &mut alice, "hi", NOW),
            [(PAIRWISE_SEAL_VERSION, Bucket::K1)]
        );
        assert_eq!(
            say(&mut alice, &mut bob, "and on", NOW),
            [(PAIRWISE_SEAL_VERSION, Bucket::K1)]
        );
        assert!(alice.pq_established("bob"));
    }

    #[test]
    fn the_pairwise_secret_is_replaced_after_the_refresh_period() {
        let (mut alice, _, mut bob) = pair();
        establish(&mut alice, &mut bob);
        let before = current(&alice, "bob");
        let later = NOW + PQ_REFRESH_SECS;
        // The first message after the period carries a new encapsulation.
        assert_eq!(
            say(&mut alice, &mut bob, "a week on", later),
            [(HYBRID_SEAL_VERSION, Bucket::K4)]
        );
        assert_eq!(
            say(&mut bob, &mut alice, "reply", later),
            [(PAIRWISE_SEAL_VERSION, Bucket::K1)]
        );
        assert_eq!(
            say(&mut alice, &mut bob, "again", later),
            [(PAIRWISE_SEAL_VERSION, Bucket::K1)]
        );
        assert_ne!(current(&alice, "bob"), before);
        assert_eq!(current(&alice, "bob"), current(&bob, "alice"));
        // The replaced secret is kept only as the previous one.
        let pq = &bob.contacts["alice"][0].pq;
        assert_eq!(pq.previous.as_ref().map(|k| *k.as_bytes()), Some(before));
    }

    #[test]
    fn a_new_ml_kem_key_on_a_device_starts_a_new_pairwise_secret() {
        let (mut alice, _, mut bob) = pair();
        establish(&mut alice, &mut bob);
        // Bob's device replaces its ML-KEM key (a device change); alice
        // reads the new card.
        bob.device.kem = KemSecret::generate();
        alice.import_card(&bob.export_card()).unwrap();
        assert!(!alice.pq_established("bob"));
        assert_eq!(
            say(&mut alice, &mut bob, "to the new key", NOW),
            [(HYBRID_SEAL_VERSION, Bucket::K4)]
        );
        assert_eq!(
            say(&mut bob, &mut alice, "reply", NOW),
            [(PAIRWISE_SEAL_VERSION, Bucket::K1)]
        );
        assert!(alice.pq_established("bob"));
    }

    /// A home from before the hybrid envelope: its device record has no
    /// ML-KEM seed. The first open makes one, saves it, and the card
    /// carries it from then on (the same key at every later open).
    #[test]
    fn a_device_from_before_the_ml_kem_key_gets_one_at_open_and_keeps_it() {
        let (alice, store) = engine("alice");
        drop(alice);
        let key = crate::device::Device::store_key();
        let bytes = store.get(Tree::Identity, key).unwrap().unwrap();
        let mut record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        record.as_object_mut().unwrap().remove("kem_seed");
        store
            .put(Tree::Identity, key, &serde_json::to_vec(&record).unwrap())
            .unwrap();
        let alice = Engine::open(store.clone()).unwrap().unwrap();
        let made = alice.own_card().kem_key.unwrap();
        drop(alice);
        let alice = Engine::open(store).unwrap().unwrap();
        assert_eq!(alice.own_card().kem_key, Some(made));
    }

    #[test]
    fn the_pairwise_record_round_trips_and_rejects_damage() {
        let kem = KemSecret::from_seed(&[3; 64]).public();
        let encapsulation = kem.encapsulate_with(&[4; 32]).unwrap();
        let pairwise = encapsulation.pairwise(&kem);
        let pair = PqPair {
            current: Some((PairwiseKey::from_bytes([1; 32]), 77)),
            previous: Some(PairwiseKey::from_bytes([2; 32])),
            pending: Some(Pending {
                encapsulation,
                pairwise,
            }),
        };
        let bytes = pair.encode();
        let back = PqPair::decode(&bytes, Some(&kem)).unwrap();
        assert_eq!(back.encode(), bytes);
        assert!(back.pending.unwrap().pairwise == pair.pending.as_ref().unwrap().pairwise);
        // A pending encapsulation to a key the device no longer has is
        // dropped.
        assert!(PqPair::decode(&bytes, None).unwrap().pending.is_none());
        for len in 0..bytes.len() {
            assert!(PqPair::decode(&bytes[..len], Some(&kem)).is_none());
        }
        let mut bad_flags = bytes.to_vec();
        bad_flags[1] = 0xff;
        assert!(PqPair::decode(&bad_flags, Some(&kem)).is_none());
    }
}
