//! A fixed two-member group for the fuzz targets (feature
//! `test-support`).

use sotto_proto::Message as _;
use sotto_proto::client::{GroupEnvelope, Payload, payload};
use vodozemac::megolm::GroupSession;

use super::Rotation;
use crate::engine::{Engine, EngineError, Message, Received, corrupt};
use crate::{EPOCH_SECS, Epoch, Store, Tree, records, seal};

/// A fixed two-member group for the fuzz targets: alice (admin) and bob,
/// on in-memory stores, with the group state and alice's session key
/// already at bob. Not part of the API.
#[doc(hidden)]
pub struct FuzzGroup {
    alice: Engine,
    bob: Engine,
    now_ms: u64,
}

#[doc(hidden)]
impl FuzzGroup {
    /// The setup: cards exchanged, the group made, one message delivered.
    pub fn new() -> Result<Self, EngineError> {
        let now_ms = 1_700_000_000_000;
        let engine = |handle: &str| -> Result<Engine, EngineError> {
            let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(crate::MemoryStore::new()?);
            Engine::create(store, handle, now_ms / 1000)
        };
        let mut fuzz = Self {
            alice: engine("alice")?,
            bob: engine("bob")?,
            now_ms,
        };
        fuzz.alice.import_card(&fuzz.bob.export_card())?;
        fuzz.bob.import_card(&fuzz.alice.export_card())?;
        fuzz.alice
            .create_group("fuzz", &["bob".to_owned()], Rotation::default(), now_ms)?;
        fuzz.alice.queue_group_text("fuzz", "hello", now_ms)?;
        fuzz.deliver()?;
        Ok(fuzz)
    }

    fn epoch(&self) -> Epoch {
        Epoch::from_unix_secs(self.now_ms / 1000, EPOCH_SECS)
    }

    /// Everything in alice's outbox, to bob.
    fn deliver(&mut self) -> Result<Vec<Received>, EngineError> {
        let epoch = self.epoch();
        self.bob.inboxes(self.now_ms / 1000, 1)?;
        let mut received = Vec::new();
        for item in self.alice.outgoing(self.now_ms / 1000)? {
            received.push(
                self.bob
                    .receive_in(&item.mailbox, item.blob.as_bytes(), epoch)?,
            );
            self.alice.sent(&item.key)?;
        }
        Ok(received)
    }

    /// `data` as the plaintext of a blob in the group's mailbox, sealed to
    /// the group's envelope key: what any member could put there. With
    /// `fix_up`, an input that decodes as a `GroupEnvelope` gets this
    /// group's ID, generation, epoch and alice as its sender, so mutations
    /// reach session lookup and Megolm decryption.
    pub fn group_blob(
        &mut self,
        data: &[u8],
        fix_up: bool,
    ) -> Result<Option<Received>, EngineError> {
        let epoch = self.epoch();
        let info = self.alice.find_group("fuzz")?;
        let group = self.alice.group_by_hex(&info.id)?;
        let mut plaintext = data.to_vec();
        if fix_up && let Ok(mut envelope) = GroupEnvelope::decode(data) {
            envelope.group_id = group.id.to_vec().into();
            envelope.generation = group.current.number;
            envelope.epoch = epoch.get();
            envelope.sender_identity_key = self.alice.me.to_vec().into();
            envelope.sender_user = "alice".into();
            if let Some(record) = self.alice.outbound_record(&group.id)? {
                envelope.session_id = GroupSession::from_pickle(record.pickle).session_id();
            }
            plaintext = envelope.encode_to_vec();
        }
        let Ok(blob) = seal(&group.current.envelope().public(), &plaintext) else {
            return Ok(None);
        };
        let mailbox = group.current.inbox().public().mailbox(epoch);
        self.bob.inboxes(self.now_ms / 1000, 1)?;
        self.bob
            .receive_in(&mailbox, blob.as_bytes(), epoch)
            .map(Some)
    }

    /// A real group message from alice, as the plaintext of its blob (a
    /// seed for the fuzzer).
    pub fn sample_envelope(&mut self, text: &str) -> Result<Vec<u8>, EngineError> {
        self.alice.queue_group_text("fuzz", text, self.now_ms)?;
        let mut sample = Vec::new();
        for (key, value) in self.alice.store.scan_prefix(Tree::Outbox, &[])? {
            let record = records::decode_outbox(&value).map_err(corrupt)?;
            if record.group.is_some() {
                let mut envelope =
                    GroupEnvelope::decode(record.envelope.as_slice()).map_err(corrupt)?;
                envelope.epoch = self.epoch().get();
                sample = envelope.encode_to_vec();
                self.alice.sent(&key)?;
            }
        }
        self.deliver()?;
        Ok(sample)
    }

    /// Bob's view of the group: its history must always load.
    pub fn bob_history(&self) -> Result<Vec<Message>, EngineError> {
        // By ID: an admin's state may rename the group.
        let id = self.alice.find_group("fuzz")?.id;
        self.bob.group_history(&id)
    }

    /// `data`, if it decodes as an Olm payload, sent by alice to bob: group
    /// states, keys, requests and withheld notices with any content.
    /// With `fix_up`, a group body gets this group's ID.
    pub fn olm_payload(&mut self, data: &[u8], fix_up: bool) -> Result<Vec<Received>, EngineError> {
        let Ok(mut payload) = Payload::decode(data) else {
            return Ok(Vec::new());
        };
        if fix_up {
            let id: bytes::Bytes = self
                .alice
                .groups
                .keys()
                .next()
                .map(|id| id.to_vec().into())
                .unwrap_or_default();
            match &mut payload.body {
                Some(payload::Body::GroupState(state)) => state.group_id = id,
                Some(payload::Body::GroupKey(key)) => key.group_id = id,
                Some(payload::Body::GroupKeyRequest(request)) => request.group_id = id,
                Some(payload::Body::GroupKeyWithheld(withheld)) => withheld.group_id = id,
                Some(payload::Body::GroupLeave(leave)) => leave.group_id = id,
                _ => {}
            }
        }
        match self.alice.queue("bob", payload, None) {
            Ok(_) => {}
            Err(EngineError::TooLong(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error),
        }
        self.deliver()
    }
}
