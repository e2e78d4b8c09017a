//! Known-answer tests for key blinding (DESIGN §4): every field of every
//! vector in `vectors/blinding.json`, computed with libsodium independently
//! of sotto. A mismatch in any byte is a bug in the derivation.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;
use sotto_core::{Epoch, InboxKey, InboxPublic, blinding_internals};
use sotto_proto::MailboxId;

#[derive(Deserialize)]
struct Vector {
    inbox_seed: String,
    inbox_public: String,
    epoch: u64,
    h_e: String,
    blinded_public: String,
    blinded_secret_scalar: String,
    blinded_nonce_prefix: String,
    mailbox_id: String,
    message: String,
    blinded_signature: String,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/blinding.json");
    let text = std::fs::read_to_string(path).expect("the vector file is committed");
    let vectors: Vec<Vector> = serde_json::from_str(&text).expect("the vector file parses");
    assert!(!vectors.is_empty());
    vectors
}

fn bytes32(hex_str: &str) -> [u8; 32] {
    hex::decode(hex_str)
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

#[test]
fn every_field_of_every_vector_matches() {
    for (i, v) in vectors().iter().enumerate() {
        let key = InboxKey::from_seed(bytes32(&v.inbox_seed));
        let epoch = Epoch::new(v.epoch);
        let public = key.public();
        assert_eq!(
            hex::encode(public.as_bytes()),
            v.inbox_public,
            "vector {i}: P"
        );

        let internals = blinding_internals(&key, epoch);
        assert_eq!(hex::encode(internals.h_e), v.h_e, "vector {i}: h_e");
        assert_eq!(
            hex::encode(*internals.b_e),
            v.blinded_secret_scalar,
            "vector {i}: b_e"
        );
        assert_eq!(
            hex::encode(*internals.n_e),
            v.blinded_nonce_prefix,
            "vector {i}: n_e"
        );

        let blinded = key.blind(epoch);
        assert_eq!(blinded.epoch(), epoch);
        assert_eq!(
            hex::encode(blinded.blinded_key().as_bytes()),
            v.blinded_public,
            "vector {i}: B_e (owner)"
        );
        assert_eq!(
            hex::encode(public.blinded_key(epoch)),
            v.blinded_public,
            "vector {i}: B_e (sender)"
        );
        assert_eq!(
            hex::encode(blinded.mailbox_id().as_bytes()),
            v.mailbox_id,
            "vector {i}: mailbox (owner)"
        );
        assert_eq!(
            hex::encode(public.mailbox(epoch).as_bytes()),
            v.mailbox_id,
            "vector {i}: mailbox (sender)"
        );
        assert_eq!(
            MailboxId::for_key_bytes(&bytes32(&v.blinded_public)),
            public.mailbox(epoch),
            "vector {i}: mailbox from B_e"
        );

        let message = hex::decode(&v.message).expect("hex");
        let signature = blinded.sign(&message);
        assert_eq!(
            hex::encode(signature),
            v.blinded_signature,
            "vector {i}: signature"
        );
        let verifying = VerifyingKey::from_bytes(&bytes32(&v.blinded_public)).expect("B_e");
        verifying
            .verify_strict(&message, &Signature::from_bytes(&signature))
            .expect("the vector signature verifies strictly under B_e");
    }
}

#[test]
fn the_public_key_of_every_vector_parses() {
    for v in vectors() {
        let public = InboxPublic::from_bytes(&bytes32(&v.inbox_public)).expect("valid P");
        assert_eq!(
            hex::encode(public.mailbox(Epoch::new(v.epoch)).as_bytes()),
            v.mailbox_id
        );
    }
}
