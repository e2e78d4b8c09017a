//! Replays the committed fuzz corpora of the client targets
//! (`fuzz/corpus/{sealed_envelope,hybrid_envelope,store_record,invite_code,directory,contact_card}/`)
//! through the checks the fuzz targets run (`fuzz/src/core_checks.rs`,
//! shared by `#[path]`).
//!
//! `cargo test -p sotto-core --test fuzz_corpus -- --ignored` regenerates
//! the seeds.
#![allow(clippy::unwrap_used)]

#[path = "../../fuzz/src/corpus.rs"]
mod corpus;

#[path = "../../fuzz/src/core_checks.rs"]
mod core_checks;

use corpus::{corpus, replay};

use core_checks::{
    CARD_SEED, ENVELOPE_SECRET, GROUP_KEY, HANDLE, KEM_SEED, LOG_USER_SEED, NOW_SECS,
    PAIRWISE_SECRETS, STORE_KEY, check_admin_log, check_contact_card, check_directory,
    check_hybrid_envelope, check_invite_code, check_sealed_envelope, check_store_record,
    invite_oracle_input, signed_invite_from_oracle, store_record_input, team,
};
use ed25519_dalek::SigningKey;
use sotto_core::team::{InviteParams, IssuedInvite, build_entry, issue_invite, parse_invite};
use sotto_core::{
    Card, Engine, EnvelopeSecret, KemSecret, MemoryStore, PairwiseKey, Store, Tree,
    fuzz_seal_value, pad, seal_hybrid_with_ephemeral, seal_pairwise_with_ephemeral,
    seal_symmetric_with_salt, seal_with_ephemeral,
};
use sotto_proto::Bucket;
use sotto_proto::Message as _;
use sotto_proto::client::{DeviceCard, DeviceList, Invite, Roster, SignedCard};

#[test]
fn sealed_envelope_corpus_passes() {
    replay("sealed_envelope", check_sealed_envelope);
}

#[test]
fn hybrid_envelope_corpus_passes() {
    replay("hybrid_envelope", check_hybrid_envelope);
}

#[test]
fn store_record_corpus_passes() {
    replay("store_record", check_store_record);
}

#[test]
fn invite_code_corpus_passes() {
    replay("invite_code", check_invite_code);
}

#[test]
fn directory_corpus_passes() {
    replay("directory", check_directory);
}

#[test]
fn admin_log_corpus_passes() {
    replay("admin_log", check_admin_log);
}

/// The admin log seeds reach what their names say: a valid entry, one
/// moved to another index, one with a hash of the wrong length.
#[test]
fn admin_log_seeds_reach_what_their_names_say() {
    use sotto_core::team::{AdminLog, AdminLogError, AdminLogLine};
    let log = AdminLog::new(&team());
    let user = SigningKey::from_bytes(&LOG_USER_SEED);
    let known =
        |actor: &str, key: &[u8; 32]| actor == HANDLE && key == user.verifying_key().as_bytes();
    let seeds = admin_log_seeds();
    assert!(matches!(
        log.open(0, &seeds[0].1[1..], known),
        AdminLogLine::Valid(a) if a.subject == "ann" && a.registration_token_hash == Some([7; 32])
    ));
    let sealed = |entry: &[u8]| {
        let signed = sotto_proto::client::SignedAdminLogEntry {
            entry: entry.to_vec().into(),
            user_key: user.verifying_key().as_bytes().to_vec().into(),
            signature: ed25519_dalek::Signer::sign(
                &user,
                &[sotto_core::team::tags::ADMIN_LOG_ENTRY, entry].concat(),
            )
            .to_bytes()
            .to_vec()
            .into(),
        }
        .encode_to_vec();
        log.seal(&log.slot(0), &signed).unwrap().into_bytes()
    };
    assert_eq!(
        log.open(0, &sealed(&seeds[3].1[1..]), known),
        AdminLogLine::Refused {
            index: 0,
            reason: AdminLogError::Moved { named: 3, found: 0 }
        }
    );
    assert_eq!(
        log.open(0, &sealed(&seeds[4].1[1..]), known),
        AdminLogLine::Refused {
            index: 0,
            reason: AdminLogError::Malformed
        }
    );
}

#[test]
fn contact_card_corpus_passes() {
    replay("contact_card", check_contact_card);
}

#[test]
fn file_message_corpus_passes() {
    replay("file_message", core_checks::check_file_message);
}

/// The file seeds reach what their names say.
#[test]
fn file_message_seeds_reach_what_their_names_say() {
    use sotto_core::{FileError, FileInfo, open_file_chunk};
    let seeds = file_seeds();
    let seed = |name: &str| &seeds.iter().find(|(n, _)| *n == name).unwrap().1;
    assert!(FileInfo::decode(&seed("message")[1..]).is_ok());
    assert!(matches!(
        FileInfo::decode(&seed("message-other-mailbox")[1..]),
        Err(FileError::BadMessage(_))
    ));
    assert!(matches!(
        FileInfo::decode(&seed("message-wrong-count")[1..]),
        Err(FileError::CountMismatch { .. })
    ));
    let info = core_checks::fuzz_file_info();
    assert_eq!(
        open_file_chunk(&info, 0, &seed("chunk-0")[1..])
            .unwrap()
            .len(),
        sotto_core::FILE_CHUNK_DATA
    );
    assert_eq!(
        open_file_chunk(&info, 2, &seed("chunk-last")[1..])
            .unwrap()
            .len(),
        5
    );
    assert!(matches!(
        open_file_chunk(&info, 1, &seed("chunk-0-at-1")[1..]),
        Err(FileError::BadChunk { index: 1 })
    ));
}

/// Seeds for `file_message`: a file message and near misses (another
/// mailbox, a count that is not the size's), and chunks of the fuzz file
/// (the first, the last, the first where the second should be).
fn file_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use sotto_core::{FILE_CHUNK_DATA, FileKey, seal_chunk};
    let mut info = core_checks::fuzz_file_info();
    info.key = FileKey::from_bytes([9; 32]);
    info.name = "../../etc/passwd".into();
    let message = info.to_proto();
    let mut other_mailbox = message.clone();
    other_mailbox.mailbox_id = vec![1; 32].into();
    let mut wrong_count = message.clone();
    wrong_count.chunks += 1;
    let key = FileKey::from_bytes(core_checks::FILE_KEY);
    let first = seal_chunk(&key, 0, false, &vec![0xab; FILE_CHUNK_DATA]).unwrap();
    let last = seal_chunk(&key, 2, true, b"12345").unwrap();
    let with = |mode: u8, bytes: Vec<u8>| [vec![mode], bytes].concat();
    vec![
        ("message", with(0, message.encode_to_vec())),
        (
            "message-other-mailbox",
            with(0, other_mailbox.encode_to_vec()),
        ),
        ("message-wrong-count", with(0, wrong_count.encode_to_vec())),
        ("chunk-0", with(1, first.clone())),
        ("chunk-last", with(5, last)),
        ("chunk-0-at-1", with(3, first)),
    ]
}

#[test]
fn message_content_corpus_passes() {
    replay("message_content", core_checks::check_message_content);
}

/// Seeds for `message_content`: one of each kind, an unknown kind, and
/// near misses (a 15-byte target, a two-emoji reaction).
fn content_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use sotto_core::Content;
    use sotto_proto::client::{self as proto, content};
    let kinds = [
        (
            "post",
            Content::Text {
                body: "hi @bob".into(),
                reply_to: None,
                expires_in_secs: 0,
            },
        ),
        (
            "reply",
            Content::Text {
                body: "re".into(),
                reply_to: Some([1; 16]),
                expires_in_secs: 3600,
            },
        ),
        (
            "react",
            Content::React {
                target: [2; 16],
                emoji: "👍".into(),
                remove: false,
            },
        ),
        (
            "edit",
            Content::Edit {
                target: [3; 16],
                body: "new".into(),
            },
        ),
        ("delete", Content::Delete { target: [4; 16] }),
        ("timer", Content::Timer { secs: 300 }),
    ];
    let mut seeds: Vec<(&'static str, Vec<u8>)> = kinds
        .into_iter()
        .map(|(name, c)| (name, c.to_proto().unwrap().encode_to_vec()))
        .collect();
    seeds.push((
        "unknown-kind",
        proto::Content {
            version: 2,
            kind: None,
        }
        .encode_to_vec(),
    ));
    seeds.push((
        "short-target",
        proto::Content {
            version: 1,
            kind: Some(content::Kind::Delete(proto::Delete {
                target: vec![5; 15].into(),
            })),
        }
        .encode_to_vec(),
    ));
    seeds.push((
        "timer-too-short",
        proto::Content {
            version: 1,
            kind: Some(content::Kind::Timer(proto::Timer { secs: 10 })),
        }
        .encode_to_vec(),
    ));
    seeds.push((
        "two-emoji",
        proto::Content {
            version: 1,
            kind: Some(content::Kind::Reaction(proto::Reaction {
                target: vec![6; 16].into(),
                emoji: "👍👍".into(),
                remove: true,
            })),
        }
        .encode_to_vec(),
    ));
    seeds
}

#[test]
fn group_message_corpus_passes() {
    replay("group_message", core_checks::check_group_message);
}

/// Seeds for `group_message`: a real group envelope (fixed up and not),
/// garbage, and each group control payload.
fn group_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use sotto_proto::client::{
        GroupKey, GroupKeyRequest, GroupKeyWithheld, GroupState, Payload, payload,
    };
    let mut fuzz = sotto_core::FuzzGroup::new().unwrap();
    let envelope = fuzz.sample_envelope("seed").unwrap();
    let with = |path: u8, bytes: Vec<u8>| [vec![path], bytes].concat();
    let body = |body: payload::Body| {
        Payload {
            body: Some(body),
            ..Payload::default()
        }
        .encode_to_vec()
    };
    vec![
        ("envelope", with(0, envelope.clone())),
        ("envelope-fixed", with(2, envelope)),
        ("garbage", with(0, b"not an envelope".to_vec())),
        (
            "state",
            with(
                3,
                body(payload::Body::GroupState(GroupState {
                    generation: 9,
                    name: "renamed".into(),
                    members: vec!["alice".into(), "bob".into()],
                    admins: vec!["alice".into()],
                    secret: vec![7; 32].into(),
                    rotate_messages: 5,
                    rotate_secs: 60,
                    ..GroupState::default()
                })),
            ),
        ),
        (
            "key",
            with(
                3,
                body(payload::Body::GroupKey(GroupKey {
                    generation: 1,
                    exported_key: vec![1; 100].into(),
                    ..GroupKey::default()
                })),
            ),
        ),
        (
            "request",
            with(
                3,
                body(payload::Body::GroupKeyRequest(GroupKeyRequest {
                    session_id: "unknown".into(),
                    ..GroupKeyRequest::default()
                })),
            ),
        ),
        (
            "withheld",
            with(
                3,
                body(payload::Body::GroupKeyWithheld(GroupKeyWithheld {
                    session_id: "unknown".into(),
                    reason: 1,
                    ..GroupKeyWithheld::default()
                })),
            ),
        ),
    ]
}

/// The fixed-up envelope seed reaches decryption: the member reads it.
#[test]
fn group_seeds_reach_the_deep_paths() {
    let seeds = group_seeds();
    let mut fuzz = sotto_core::FuzzGroup::new().unwrap();
    let fixed = &seeds[1].1;
    // Fixed up to this setup's group and session, the seed's Megolm
    // message (made by another setup's session) reaches decryption, which
    // refuses it: dropped, never shown.
    let received = fuzz.group_blob(&fixed[1..], true).unwrap();
    assert!(
        matches!(
            received,
            Some(sotto_core::Received::Dropped(
                sotto_core::Dropped::Undecryptable
            ))
        ),
        "{received:?}"
    );
    // This setup's own message is read once; replayed, it is a duplicate.
    let own = fuzz.sample_envelope("own").unwrap();
    let first = fuzz.group_blob(&own, false).unwrap();
    assert!(
        matches!(&first, Some(sotto_core::Received::Message(m)) if m.text == "own"),
        "{first:?}"
    );
    let replayed = fuzz.group_blob(&own, false).unwrap();
    assert!(
        matches!(replayed, Some(sotto_core::Received::Duplicate)),
        "{replayed:?}"
    );
}

fn invite(handle: &str, expires_at: u64) -> IssuedInvite {
    issue_invite(
        &team(),
        &InviteParams {
            team_name: "acme",
            handle,
            expires_at,
            relay_addr: "relay.example:7443",
            relay_fingerprint: [7; 32],
            registration_token: b"registration-token",
            issuer_key: [9; 32],
            device: false,
        },
    )
    .unwrap()
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    [&[mode], bytes].concat()
}

fn invite_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let code = invite(HANDLE, NOW_SECS + 3600).code;
    let spaced = code.replacen(':', ": ", 1);
    // The oracle form: an invite without its certificate, which the check
    // signs and inserts after field 5.
    let cert = sotto_proto::client::InviteCert {
        team_key: team().team.verifying_key().as_bytes().to_vec().into(),
        handle: HANDLE.into(),
        invite_key: SigningKey::from_bytes(&[3; 32])
            .verifying_key()
            .as_bytes()
            .to_vec()
            .into(),
        expires_at: NOW_SECS + 3600,
    }
    .encode_to_vec();
    let head = Invite {
        version: 1,
        team_name: "acme".into(),
        relay_addr: "relay.example:7443".into(),
        relay_fingerprint: vec![7; 32].into(),
        dir_key: vec![0x22; 32].into(),
        ..Invite::default()
    }
    .encode_to_vec();
    let tail = Invite {
        invite_secret: vec![3; 32].into(),
        registration_token: b"token".to_vec().into(),
        issuer_key: vec![9; 32].into(),
        ..Invite::default()
    }
    .encode_to_vec();
    let oracle = invite_oracle_input(
        &cert,
        head.len() as u8,
        &[head.clone(), tail.clone()].concat(),
    );
    let unknown_field = invite_oracle_input(
        &cert,
        head.len() as u8,
        &[head, tail, vec![0x68, 1]].concat(),
    );
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(MemoryStore::new().unwrap());
    let device = Engine::create(store, HANDLE, 0).unwrap().signed_card();
    let link = |registration_token: Option<[u8; 32]>, expires_at: u64| {
        sotto_core::team::link_code(&sotto_core::team::LinkParams {
            team_name: "acme",
            handle: HANDLE,
            relay_addr: "relay.example:7443",
            relay_fingerprint: [7; 32],
            issuer_key: [9; 32],
            dir_key: [0x22; 32],
            dir_version: 2,
            team_key: *team().team.verifying_key().as_bytes(),
            secret: [5; 32],
            device: device.clone(),
            registration_token,
            expires_at,
        })
    };
    vec![
        ("code", with_mode(0, code.as_bytes())),
        (
            "code-spaced",
            with_mode(0, format!("  {spaced}\n").as_bytes()),
        ),
        (
            "code-expired",
            with_mode(0, invite(HANDLE, NOW_SECS - 1).code.as_bytes()),
        ),
        (
            "code-truncated",
            with_mode(0, &code.as_bytes()[..code.len() - 3]),
        ),
        ("not-an-invite", with_mode(0, b"sotto-card:AAAA")),
        ("oracle", oracle),
        ("oracle-unknown-field", unknown_field),
        (
            "link",
            with_mode(2, link(Some([4; 32]), NOW_SECS + 60).as_bytes()),
        ),
        (
            "link-no-access",
            with_mode(2, link(None, NOW_SECS + 60).as_bytes()),
        ),
        (
            "link-expired",
            with_mode(2, link(None, NOW_SECS - 1).as_bytes()),
        ),
    ]
}

fn device_card(handle: &str) -> SignedCard {
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(MemoryStore::new().unwrap());
    Engine::create(store, handle, 0).unwrap().signed_card()
}

fn directory_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let card = device_card(HANDLE);
    let issued = invite(HANDLE, u64::MAX);
    let user = SigningKey::from_bytes(&[6; 32]);
    let entry = build_entry(
        &issued.cert,
        HANDLE,
        &issued.invite_key,
        &user,
        2,
        std::slice::from_ref(&card),
    );
    let ann = invite("ann", u64::MAX);
    let ann_entry = build_entry(&ann.cert, "ann", &ann.invite_key, &user, 1, &[]);
    let roster = Roster {
        version: 3,
        handles: vec!["ann".into(), HANDLE.into()],
        ..Roster::default()
    };
    vec![
        ("entry", with_mode(0, &entry)),
        ("entry-of-another-handle", with_mode(0, &ann_entry)),
        (
            "roster",
            with_mode(1, &team().sign_roster(3, &roster.handles)),
        ),
        ("roster-content", with_mode(2, &roster.encode_to_vec())),
        ("roster-empty", with_mode(2, &[])),
        (
            "device-list",
            with_mode(
                3,
                &DeviceList {
                    version: 2,
                    devices: vec![card.clone()],
                }
                .encode_to_vec(),
            ),
        ),
        (
            "device-list-other-handle",
            with_mode(
                3,
                &DeviceList {
                    version: 1,
                    devices: vec![device_card("ann")],
                }
                .encode_to_vec(),
            ),
        ),
        (
            "roster-admins",
            with_mode(
                2,
                &Roster {
                    admin: "ann".into(),
                    admins: vec!["ann".into(), HANDLE.into()],
                    ..roster.clone()
                }
                .encode_to_vec(),
            ),
        ),
        (
            "roster-admin-not-a-member",
            with_mode(
                2,
                &Roster {
                    admin: "zed".into(),
                    admins: vec!["zed".into()],
                    ..roster.clone()
                }
                .encode_to_vec(),
            ),
        ),
    ]
}

fn admin_log_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use sotto_core::team::{AdminLog, sign_log_entry};
    use sotto_proto::client::AdminLogEntry;
    let entry = AdminLogEntry {
        at: NOW_SECS,
        actor: HANDLE.into(),
        action: "invite".into(),
        subject: "ann".into(),
        registration_token_hash: vec![7; 32].into(),
        index: 0,
    };
    let user = SigningKey::from_bytes(&LOG_USER_SEED);
    let signed = sign_log_entry(&user, &entry);
    let log = AdminLog::new(&team());
    let sealed = log.seal(&log.slot(0), &signed).unwrap();
    vec![
        ("sealed", with_mode(0, sealed.as_bytes())),
        ("signed", with_mode(1, &signed)),
        ("entry", with_mode(2, &entry.encode_to_vec())),
        (
            "entry-moved",
            with_mode(
                2,
                &AdminLogEntry {
                    index: 3,
                    ..entry.clone()
                }
                .encode_to_vec(),
            ),
        ),
        (
            "entry-short-hash",
            with_mode(
                2,
                &AdminLogEntry {
                    registration_token_hash: vec![7; 5].into(),
                    ..entry
                }
                .encode_to_vec(),
            ),
        ),
    ]
}

fn card_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let signed = device_card(HANDLE);
    let mut card = DeviceCard::decode(signed.card.clone()).unwrap();
    card.signing_key = SigningKey::from_bytes(&CARD_SEED)
        .verifying_key()
        .as_bytes()
        .to_vec()
        .into();
    let exported = Card::export(&signed);
    vec![
        ("card", with_mode(0, exported.as_bytes())),
        (
            "card-spaced",
            with_mode(0, format!("\t{exported} ").as_bytes()),
        ),
        ("card-oracle", with_mode(1, &card.encode_to_vec())),
        ("not-a-card", with_mode(0, b"sotto-card:AAAA")),
    ]
}

/// The seeds reach the decoders' success paths, where the round-trip
/// checks bite; the near-misses do not.
#[test]
fn team_and_card_seeds_are_accepted_where_they_should_be() {
    let invites = invite_seeds();
    let code = |i: usize| String::from_utf8(invites[i].1[1..].to_vec()).unwrap();
    assert!(parse_invite(&code(0), NOW_SECS).is_ok());
    assert!(parse_invite(&code(1), NOW_SECS).is_ok());
    assert!(parse_invite(&code(2), NOW_SECS).is_err(), "expired");
    let oracle = signed_invite_from_oracle(&invites[5].1[1..]).unwrap();
    assert_eq!(parse_invite(&oracle, NOW_SECS).unwrap().handle, HANDLE);
    let unknown = signed_invite_from_oracle(&invites[6].1[1..]).unwrap();
    assert!(parse_invite(&unknown, NOW_SECS).is_err(), "not canonical");
    let link = |name: &str| {
        let (_, data) = invites.iter().find(|(n, _)| *n == name).unwrap();
        sotto_core::team::parse_link(std::str::from_utf8(&data[1..]).unwrap(), NOW_SECS)
    };
    assert!(link("link").unwrap().registration_token.is_some());
    assert!(link("link-no-access").unwrap().registration_token.is_none());
    assert!(link("link-expired").is_err(), "expired");

    let directory = core_checks::directory();
    let seeds = directory_seeds();
    assert_eq!(
        directory
            .verify_entry(HANDLE, &seeds[0].1[1..])
            .unwrap()
            .devices
            .len(),
        1
    );
    assert!(directory.verify_entry(HANDLE, &seeds[1].1[1..]).is_err());
    assert_eq!(
        directory
            .verify_roster(&seeds[2].1[1..], 0)
            .unwrap()
            .version,
        3
    );

    let cards = card_seeds();
    for seed in &cards[..2] {
        let text = String::from_utf8(seed.1[1..].to_vec()).unwrap();
        assert_eq!(Card::import(&text).unwrap().0.handle, HANDLE);
    }
}

fn envelope_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let recipient = EnvelopeSecret::from_bytes(ENVELOPE_SECRET).public();
    let sealed = seal_with_ephemeral(&recipient, b"hello", Bucket::K1, &[9; 32]).unwrap();
    let group = seal_symmetric_with_salt(&GROUP_KEY, b"hi all", Bucket::K1, &[8; 32]).unwrap();
    let group4k = seal_symmetric_with_salt(&GROUP_KEY, &[1; 2000], Bucket::K1, &[7; 32]).unwrap();
    let (_, padded) = pad(b"padded", Bucket::K1).unwrap();
    let mut unpaddable = vec![0u8];
    unpaddable.extend_from_slice(&padded);
    let mut tampered = group.as_bytes().to_vec();
    tampered[100] ^= 1;
    vec![
        ("sealed-1k", sealed.as_bytes().to_vec()),
        ("group-1k", group.as_bytes().to_vec()),
        ("group-4k", group4k.as_bytes().to_vec()),
        ("group-tampered", tampered),
        ("padded", unpaddable),
        ("short", vec![1, 2, 3]),
    ]
}

fn hybrid_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let recipient = EnvelopeSecret::from_bytes(ENVELOPE_SECRET).public();
    let kem = KemSecret::from_seed(&KEM_SEED).public();
    let encapsulation = kem.encapsulate_with(&[3; 32]).unwrap();
    let hybrid = seal_hybrid_with_ephemeral(
        &recipient,
        &kem,
        &encapsulation,
        b"hello",
        Bucket::K4,
        &[9; 32],
    )
    .unwrap();
    let pairwise = seal_pairwise_with_ephemeral(
        &recipient,
        &PairwiseKey::from_bytes(PAIRWISE_SECRETS[1]),
        b"hello again",
        Bucket::K1,
        &[10; 32],
    )
    .unwrap();
    let stranger = seal_pairwise_with_ephemeral(
        &recipient,
        &PairwiseKey::from_bytes([0x63; 32]),
        b"not for you",
        Bucket::K1,
        &[11; 32],
    )
    .unwrap();
    let mut bad_ciphertext = hybrid.as_bytes().to_vec();
    bad_ciphertext[40] ^= 1;
    vec![
        ("hybrid-4k", hybrid.as_bytes().to_vec()),
        ("hybrid-bad-ciphertext", bad_ciphertext),
        ("hybrid-truncated", hybrid.as_bytes()[..1024].to_vec()),
        ("pairwise-1k", pairwise.as_bytes().to_vec()),
        ("pairwise-unknown-secret", stranger.as_bytes().to_vec()),
    ]
}

/// The hybrid seeds reach what their names say.
#[test]
fn hybrid_seeds_open_where_they_should() {
    let secret = EnvelopeSecret::from_bytes(ENVELOPE_SECRET);
    let kem = KemSecret::from_seed(&KEM_SEED);
    let seeds = hybrid_seeds();
    let opened = sotto_core::open_hybrid(&secret, &kem, &seeds[0].1).unwrap();
    assert_eq!(opened.plaintext.as_slice(), b"hello");
    assert!(sotto_core::open_hybrid(&secret, &kem, &seeds[1].1).is_err());
    assert!(sotto_core::open_hybrid(&secret, &kem, &seeds[2].1).is_err());
    let candidates = PAIRWISE_SECRETS.map(PairwiseKey::from_bytes);
    let (plain, index) = sotto_core::open_pairwise(&secret, &seeds[3].1, &candidates).unwrap();
    assert_eq!((plain.as_slice(), index), (b"hello again".as_slice(), 1));
    assert!(sotto_core::open_pairwise(&secret, &seeds[4].1, &candidates).is_err());
    // The committed corpus holds these seeds.
    for (name, data) in seeds {
        let file = corpus("hybrid_envelope").join(format!("seed-{name}"));
        assert_eq!(std::fs::read(&file).unwrap(), data, "{name}");
    }
}

#[test]
#[ignore = "writes the hybrid_envelope seed corpus into fuzz/corpus"]
fn regenerate_hybrid_envelope_seeds() {
    let dir = corpus("hybrid_envelope");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in hybrid_seeds() {
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
    // A card with an ML-KEM key, for `contact_card` (the older card seeds
    // have none).
    let exported = Card::export(&device_card(HANDLE));
    std::fs::write(
        corpus("contact_card").join("seed-card-ml-kem"),
        with_mode(0, exported.as_bytes()),
    )
    .unwrap();
}

fn store_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let sealed = |tree, key: &[u8], value: &[u8]| {
        store_record_input(
            tree,
            key,
            &fuzz_seal_value(STORE_KEY, tree, key, value).unwrap(),
        )
    };
    let history = sealed(Tree::History, &[5; 24], b"a message");
    let mut swapped = history.clone();
    swapped[0] = 6; // the same value presented as another tree's
    vec![
        ("history", history),
        ("meta-empty", sealed(Tree::Meta, b"schema", b"")),
        ("seen", sealed(Tree::Seen, &[1; 16], &[0; 8])),
        ("swapped-tree", swapped),
        ("truncated", vec![1, 3, b'k', b'e', b'y', 1, 0, 0]),
    ]
}

#[test]
fn valid_seeds_open() {
    let secret = EnvelopeSecret::from_bytes(ENVELOPE_SECRET);
    let seeds = envelope_seeds();
    assert_eq!(&**sotto_core::open(&secret, &seeds[0].1).unwrap(), b"hello");
    assert_eq!(
        &**sotto_core::open_symmetric(&GROUP_KEY, &seeds[1].1).unwrap(),
        b"hi all"
    );
    let store = store_seeds();
    let (tree, key, value) = core_checks::store_record_parts(&store[0].1).unwrap();
    assert_eq!(
        &sotto_core::fuzz_open_value(STORE_KEY, tree, key, value).unwrap()[..],
        b"a message"
    );
    let (tree, key, value) = core_checks::store_record_parts(&store[3].1).unwrap();
    assert!(sotto_core::fuzz_open_value(STORE_KEY, tree, key, value).is_err());
}

#[test]
#[ignore = "writes the seed corpus into fuzz/corpus"]
fn regenerate_seed_corpus() {
    for (target, seeds) in [
        ("sealed_envelope", envelope_seeds()),
        ("hybrid_envelope", hybrid_seeds()),
        ("store_record", store_seeds()),
        ("invite_code", invite_seeds()),
        ("directory", directory_seeds()),
        ("admin_log", admin_log_seeds()),
        ("contact_card", card_seeds()),
        ("group_message", group_seeds()),
        ("message_content", content_seeds()),
        ("file_message", file_seeds()),
    ] {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        }
    }
}

#[test]
#[ignore = "writes the file_message seeds into fuzz/corpus"]
fn regenerate_file_message_seeds() {
    let dir = corpus("file_message");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in file_seeds() {
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}
