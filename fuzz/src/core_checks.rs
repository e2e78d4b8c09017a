//! Checks for the client-core fuzz targets (`sealed_envelope`,
//! `store_record`, `invite_code`, `directory`, `contact_card`,
//! `group_message`, `admin_log`, `hybrid_envelope`). One source, compiled twice: by the fuzz targets and by
//! `client-core/tests/fuzz_corpus.rs`, which replays the committed corpus
//! under `cargo test` (both include this file with `#[path]`). It uses only
//! sotto-core's public API and its `#[doc(hidden)]` fuzzing hooks, and
//! panics when an invariant breaks.
#![allow(dead_code, clippy::unwrap_used)]

use ed25519_dalek::{Signer, SigningKey};
use sotto_core::Card;
use sotto_core::team::{
    AdminLog, AdminLogLine, Directory, INVITE_PREFIX, TeamSecrets, build_entry, parse_invite, tags,
};
use sotto_core::{
    EnvelopeSecret, HYBRID_SEAL_VERSION, KemSecret, PAIRWISE_SEAL_VERSION, PairwiseKey, Tree,
    fuzz_open_value, fuzz_seal_value, max_hybrid_plaintext_len, max_plaintext_len, open,
    open_hybrid, open_pairwise, open_symmetric, pad, padded_len, seal_symmetric_with_salt, unpad,
};
use sotto_proto::Bucket;
use sotto_proto::Message as _;
use sotto_proto::client::{
    AdminLogEntry, DeviceList, DirectoryEntry, InviteCert, SignedAdminLogEntry, SignedCard,
    SignedInviteCert, SignedRoster,
};

/// The recipient secret of `sealed_envelope` inputs.
pub(crate) const ENVELOPE_SECRET: [u8; 32] = [0x42; 32];
/// The recipient's ML-KEM seed of `hybrid_envelope` inputs.
pub(crate) const KEM_SEED: [u8; 64] = [0x5a; 64];
/// The pairwise secrets a `hybrid_envelope` recipient holds.
pub(crate) const PAIRWISE_SECRETS: [[u8; 32]; 2] = [[0x61; 32], [0x62; 32]];

/// The group key of `sealed_envelope` inputs.
pub(crate) const GROUP_KEY: [u8; 32] = [0x24; 32];
/// The store master key of `store_record` inputs.
pub(crate) const STORE_KEY: [u8; 32] = [0x77; 32];

/// `hybrid_envelope`: the whole input is a blob for `open_hybrid` (the
/// version-3 header: ephemeral key, ML-KEM ciphertext) and `open_pairwise`
/// (version 4, against two pairwise secrets). Never panics; whatever opens
/// is a bucket-sized blob of its version whose plaintext fits the
/// version's room; a version-3 blob's pairwise secret is a function of its
/// ciphertext alone (the same blob opens to the same secret again);
/// opening version 4 says which secret did it.
pub(crate) fn check_hybrid_envelope(data: &[u8]) {
    let secret = EnvelopeSecret::from_bytes(ENVELOPE_SECRET);
    let kem = KemSecret::from_seed(&KEM_SEED);
    if let Ok(opened) = open_hybrid(&secret, &kem, data) {
        let bucket = Bucket::of_len(data.len()).expect("an opened blob is bucket-sized");
        assert_eq!(data[0], HYBRID_SEAL_VERSION);
        assert!(opened.plaintext.len() <= max_hybrid_plaintext_len(bucket));
        let again = open_hybrid(&secret, &kem, data).unwrap();
        assert!(again.pairwise == opened.pairwise);
    }
    let candidates = PAIRWISE_SECRETS.map(PairwiseKey::from_bytes);
    if let Ok((plain, index)) = open_pairwise(&secret, data, &candidates) {
        let bucket = Bucket::of_len(data.len()).expect("an opened blob is bucket-sized");
        assert_eq!(data[0], PAIRWISE_SEAL_VERSION);
        assert!(plain.len() <= max_plaintext_len(bucket));
        assert!(index < candidates.len());
        let (_, alone) = open_pairwise(&secret, data, [&candidates[index]]).unwrap();
        assert_eq!(alone, 0);
        // The X25519 key alone never opens it.
        assert!(open(&secret, data).is_err());
    }
}

/// `sealed_envelope`: the whole input is a blob for `open` and
/// `open_symmetric`, and (resized to a bucket's padded length chosen by its
/// first byte) a padded plaintext for `unpad`. Never panics; whatever opens
/// is a bucket-sized blob; a group blob re-seals to the same bytes with its
/// salt; `pad(unpad(x)) == x` for every padded-length `x` that unpads.
pub(crate) fn check_sealed_envelope(data: &[u8]) {
    let secret = EnvelopeSecret::from_bytes(ENVELOPE_SECRET);
    if let Ok(plain) = open(&secret, data) {
        let bucket = Bucket::of_len(data.len()).expect("an opened blob is bucket-sized");
        assert!(plain.len() <= max_plaintext_len(bucket));
    }
    if let Ok(plain) = open_symmetric(&GROUP_KEY, data) {
        let bucket = Bucket::of_len(data.len()).expect("an opened blob is bucket-sized");
        let salt: [u8; 32] = data[1..33].try_into().unwrap();
        let again = seal_symmetric_with_salt(&GROUP_KEY, &plain, bucket, &salt).unwrap();
        assert_eq!(
            again.as_bytes(),
            data,
            "a group blob does not re-seal to itself"
        );
    }
    let _ = unpad(data);
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    let bucket = Bucket::ALL[usize::from(choice % 4)];
    let mut padded = rest.to_vec();
    padded.resize(padded_len(bucket), 0);
    if let Ok(message) = unpad(&padded) {
        let (got_bucket, again) =
            pad(message, bucket).expect("an unpadded message fits its bucket");
        assert_eq!(got_bucket, bucket);
        assert_eq!(&again[..], &padded[..], "pad(unpad(x)) != x");
    }
}

/// Splits a `store_record` input into (tree, key, sealed value).
pub(crate) fn store_record_parts(data: &[u8]) -> Option<(Tree, &[u8], &[u8])> {
    let (&tree, rest) = data.split_first()?;
    let (&key_len, rest) = rest.split_first()?;
    let key_len = usize::from(key_len % 64).min(rest.len());
    let (key, sealed) = rest.split_at(key_len);
    Some((Tree::ALL[usize::from(tree) % Tree::ALL.len()], key, sealed))
}

/// The input layout `store_record_parts` reads.
pub(crate) fn store_record_input(tree: Tree, key: &[u8], sealed: &[u8]) -> Vec<u8> {
    let tag = Tree::ALL.iter().position(|t| *t == tree).unwrap() as u8;
    let mut out = vec![tag, key.len() as u8];
    out.extend_from_slice(key);
    out.extend_from_slice(sealed);
    out
}

/// `store_record`: `tree(1) || key_len(1) || key || sealed value` opened
/// under [`STORE_KEY`] as the store reads values. Never panics; a value that
/// opens has exactly the store's overhead and survives a seal/open round
/// trip.
pub(crate) fn check_store_record(data: &[u8]) {
    let Some((tree, key, sealed)) = store_record_parts(data) else {
        return;
    };
    if let Ok(plain) = fuzz_open_value(STORE_KEY, tree, key, sealed) {
        assert_eq!(sealed.len(), plain.len() + 29, "sealed value overhead");
        let again = fuzz_seal_value(STORE_KEY, tree, key, &plain).unwrap();
        assert_eq!(
            &fuzz_open_value(STORE_KEY, tree, key, &again).unwrap()[..],
            &plain[..]
        );
    }
}

// ---------------------------------------------------------------------------
// Invite codes, directory entries and rosters, contact cards.
//
// Each input starts with a mode byte. Mode 0 hands the rest to the decoder
// as it is. The other modes are signing oracles: the check signs the
// fuzzer's bytes with a fixed key the decoder trusts, so the fuzzer reaches
// the parsing *behind* the signature, which it could never forge. Whatever
// a decoder accepts must re-encode, through the library's own encoder, to
// exactly the bytes (or text, less surrounding whitespace) it came from.

/// The team key `T` of every team input.
pub(crate) const TEAM_SEED: [u8; 32] = [0x11; 32];
/// `K_dir` of every team input.
pub(crate) const DIR_KEY: [u8; 32] = [0x22; 32];
/// The invite key of the `directory` oracle's entry.
pub(crate) const INVITE_SEED: [u8; 32] = [0x33; 32];
/// The user key `U` of the `directory` oracle's entry.
pub(crate) const USER_SEED: [u8; 32] = [0x44; 32];
/// The device key that signs `contact_card` oracle cards.
pub(crate) const CARD_SEED: [u8; 32] = [0x55; 32];
/// The handle entries are looked up as.
pub(crate) const HANDLE: &str = "bob";
/// "Now" for invite expiry.
pub(crate) const NOW_SECS: u64 = 1_000_000;

pub(crate) fn team() -> TeamSecrets {
    TeamSecrets {
        team: SigningKey::from_bytes(&TEAM_SEED),
        dir_key: zeroize::Zeroizing::new(DIR_KEY),
    }
}

/// The text a decoder of `prefix`-codes reads: surrounding whitespace, and
/// whitespace after the prefix, are allowed for copy and paste.
fn canonical_text(text: &str, prefix: &str) -> Option<String> {
    let body = text.trim().strip_prefix(prefix)?.trim();
    Some(format!("{prefix}{body}"))
}

/// `invite_code` oracle input: `1 ‖ cert_len ‖ cert ‖ at ‖ invite`, where
/// `invite` is an `Invite` without its certificate and the check inserts
/// the certificate, signed by `T`, as field 6 at byte `at` (mod length).
pub(crate) fn invite_oracle_input(cert: &[u8], at: u8, invite: &[u8]) -> Vec<u8> {
    let mut out = vec![1, cert.len() as u8];
    out.extend_from_slice(cert);
    out.push(at);
    out.extend_from_slice(invite);
    out
}

/// The code an `invite_code` oracle input (less its mode byte) stands for.
pub(crate) fn signed_invite_from_oracle(data: &[u8]) -> Option<String> {
    let (&cert_len, rest) = data.split_first()?;
    let cert = rest.get(..usize::from(cert_len))?;
    let (&at, invite) = rest.get(usize::from(cert_len)..)?.split_first()?;
    let signature = team()
        .team
        .sign(&[tags::INVITE_CERT, cert].concat())
        .to_bytes();
    let signed = SignedInviteCert {
        cert: cert.to_vec().into(),
        signature: signature.to_vec().into(),
    }
    .encode_to_vec();
    let at = usize::from(at) % (invite.len() + 1);
    let mut bytes = invite[..at].to_vec();
    bytes.push(0x32); // field 6, length-delimited
    let mut len = signed.len();
    while len >= 0x80 {
        bytes.push((len as u8) | 0x80);
        len >>= 7;
    }
    bytes.push(len as u8);
    bytes.extend_from_slice(&signed);
    bytes.extend_from_slice(&invite[at..]);
    Some(format!(
        "{INVITE_PREFIX}{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
    ))
}

/// `invite_code`: mode 0, the rest is the code's text; mode 1, see
/// [`invite_oracle_input`]; mode 2, the text of a device-link code. Never
/// panics; an invite (or link) that parses re-encodes to its code and
/// parses again to the same invite.
pub(crate) fn check_invite_code(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 3 == 2 {
        return check_link_code(&String::from_utf8_lossy(rest));
    }
    let code = match mode % 3 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        _ => match signed_invite_from_oracle(rest) {
            Some(code) => code,
            None => return,
        },
    };
    let Ok(parsed) = parse_invite(&code, NOW_SECS) else {
        return;
    };
    let again = parsed.code();
    assert_eq!(
        Some(&again),
        canonical_text(&code, INVITE_PREFIX).as_ref(),
        "an accepted invite code does not re-encode to itself"
    );
    let reparsed = parse_invite(&again, NOW_SECS).unwrap();
    assert_eq!(reparsed.handle, parsed.handle);
    assert_eq!(reparsed.expires_at, parsed.expires_at);
    assert_eq!(reparsed.cert, parsed.cert);
}

/// A `sotto-link:` code: never panics; one that parses re-encodes to
/// itself.
fn check_link_code(code: &str) {
    let Ok(parsed) = sotto_core::team::parse_link(code, NOW_SECS) else {
        return;
    };
    let again = sotto_core::team::link_code(&sotto_core::team::LinkParams {
        team_name: &parsed.team_name,
        handle: &parsed.handle,
        relay_addr: &parsed.relay_addr,
        relay_fingerprint: parsed.relay_fingerprint,
        issuer_key: parsed.issuer_key,
        dir_key: parsed.dir_key,
        dir_version: parsed.dir_version,
        team_key: parsed.team_key,
        secret: *parsed.secret,
        device: parsed.signed_device.clone(),
        registration_token: parsed.registration_token.as_deref().copied(),
        expires_at: parsed.expires_at,
    });
    assert_eq!(
        Some(&again),
        canonical_text(code, sotto_core::team::LINK_PREFIX).as_ref(),
        "an accepted link code does not re-encode to itself"
    );
    let reparsed = sotto_core::team::parse_link(&again, NOW_SECS).unwrap();
    assert_eq!(reparsed.handle, parsed.handle);
    assert_eq!(reparsed.device, parsed.device);
}

/// The directory every `directory` input is checked against.
pub(crate) fn directory() -> Directory {
    team().directory()
}

/// The invite certificate of the `directory` oracle's entry.
pub(crate) fn oracle_cert() -> SignedInviteCert {
    let cert = InviteCert {
        team_key: team().team.verifying_key().as_bytes().to_vec().into(),
        handle: HANDLE.to_owned(),
        invite_key: SigningKey::from_bytes(&INVITE_SEED)
            .verifying_key()
            .as_bytes()
            .to_vec()
            .into(),
        expires_at: u64::MAX,
    }
    .encode_to_vec();
    let signature = team().team.sign(&[tags::INVITE_CERT, &cert].concat());
    SignedInviteCert {
        cert: cert.into(),
        signature: signature.to_bytes().to_vec().into(),
    }
}

/// `directory`: the mode byte picks the input. 0: a `DirectoryEntry` for
/// [`HANDLE`]; 1: a `SignedRoster`; 2: a `Roster` the check signs with `T`;
/// 3: a `DeviceList` the check wraps in an entry whose chain (cert, invite
/// key, user key) it signs. Never panics; whatever verifies re-encodes to
/// the same bytes.
pub(crate) fn check_directory(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let directory = directory();
    match mode % 4 {
        0 => {
            let Ok(entry) = directory.verify_entry(HANDLE, rest) else {
                return;
            };
            let decoded = DirectoryEntry::decode(rest).unwrap();
            assert_eq!(decoded.encode_to_vec(), rest, "entry re-encodes");
            let list = DeviceList::decode(decoded.device_list.clone()).unwrap();
            assert_eq!(list.encode_to_vec(), decoded.device_list, "device list");
            assert_eq!(entry.devices_version, list.version);
            assert_eq!(entry.devices.len(), list.devices.len());
            for ((card, signed), listed) in entry.devices.iter().zip(&list.devices) {
                assert_eq!(signed, listed);
                assert_eq!(&Card::verify(signed).unwrap(), card);
                assert_eq!(card.handle, HANDLE);
            }
        }
        1 | 2 => {
            let signed = if mode % 4 == 1 {
                rest.to_vec()
            } else {
                let signature = team().team.sign(&[tags::ROSTER, rest].concat());
                SignedRoster {
                    roster: rest.to_vec().into(),
                    signature: signature.to_bytes().to_vec().into(),
                }
                .encode_to_vec()
            };
            let Ok(roster) = directory.verify_roster(&signed, 0) else {
                return;
            };
            // Signatures are deterministic: the admin's own encoder
            // reproduces the roster byte for byte.
            assert_eq!(
                team().sign_roster_fields(
                    roster.version,
                    &roster.handles,
                    roster.admin.as_deref().unwrap_or_default(),
                    &roster.admins_listed,
                    roster.issuer.as_ref(),
                ),
                signed,
                "a verified roster does not re-encode to itself"
            );
        }
        _ => {
            let invite_key = SigningKey::from_bytes(&INVITE_SEED);
            let user_key = SigningKey::from_bytes(&USER_SEED);
            let u = user_key.verifying_key();
            let entry = DirectoryEntry {
                version: 1,
                cert: Some(oracle_cert()),
                user_key: u.as_bytes().to_vec().into(),
                user_key_signature: invite_key
                    .sign(&[tags::USER_KEY, HANDLE.as_bytes(), u.as_bytes()].concat())
                    .to_bytes()
                    .to_vec()
                    .into(),
                device_list: rest.to_vec().into(),
                device_list_signature: user_key
                    .sign(&[tags::DEVICE_LIST, rest].concat())
                    .to_bytes()
                    .to_vec()
                    .into(),
                successions: Vec::new(),
            }
            .encode_to_vec();
            let Ok(verified) = directory.verify_entry(HANDLE, &entry) else {
                return;
            };
            let cards: Vec<SignedCard> = verified.devices.iter().map(|(_, s)| s.clone()).collect();
            let rebuilt = build_entry(
                &oracle_cert(),
                HANDLE,
                &invite_key,
                &user_key,
                verified.devices_version,
                &cards,
            );
            assert_eq!(
                rebuilt, entry,
                "a verified entry does not re-encode to itself"
            );
        }
    }
}

/// `contact_card`: mode 0, the rest is a `sotto-card:` text; mode 1, a
/// `DeviceCard` the check signs with [`CARD_SEED`]'s key. Never panics; an
/// imported card exports to its text and verifies to the same card.
pub(crate) fn check_contact_card(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = match mode % 2 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        _ => {
            let key = SigningKey::from_bytes(&CARD_SEED);
            let signature = key.sign(&[sotto_core::CARD_TAG, rest].concat());
            Card::export(&SignedCard {
                card: rest.to_vec().into(),
                signature: signature.to_bytes().to_vec().into(),
            })
        }
    };
    let Ok((card, signed)) = Card::import(&text) else {
        return;
    };
    assert_eq!(
        Some(Card::export(&signed)),
        canonical_text(&text, sotto_core::CARD_PREFIX),
        "an imported card does not export to its text"
    );
    assert_eq!(Card::verify(&signed).unwrap(), card);
}

thread_local! {
    /// One group setup per thread: making it costs Olm accounts and a
    /// session; inputs then run against its (growing) state.
    static GROUP: std::cell::RefCell<Option<sotto_core::FuzzGroup>> =
        const { std::cell::RefCell::new(None) };
}

/// `group_message`: the first byte chooses the path (bit 0) and whether
/// group IDs and senders are fixed up to the real group's (bit 1); the rest
/// is the input. Even: the plaintext of a blob in a group's mailbox (what any member can
/// put there: a `GroupEnvelope` or garbage), sealed to the group key and
/// processed by a member. Odd: an Olm `Payload` from a group admin to a
/// member (group states, session keys, key requests, withheld notices with
/// any content). Never panics, never fails the engine (only a broken store
/// may), a group message is always shown in its group, and the member's
/// group history always loads.
pub(crate) fn check_group_message(data: &[u8]) {
    let Some((&path, input)) = data.split_first() else {
        return;
    };
    GROUP.with(|cell| {
        let mut slot = cell.borrow_mut();
        let group = slot.get_or_insert_with(|| sotto_core::FuzzGroup::new().unwrap());
        let fix_up = path & 2 != 0;
        if path % 2 == 0 {
            if let Some(sotto_core::Received::Message(message)) =
                group.group_blob(input, fix_up).unwrap()
            {
                assert_eq!(message.group.as_deref(), Some("fuzz"));
            }
        } else {
            group.olm_payload(input, fix_up).unwrap();
        }
        group.bob_history().unwrap();
    });
}

/// The user key of the admin (`HANDLE`) whose entries `admin_log`'s
/// oracle modes sign.
pub(crate) const LOG_USER_SEED: [u8; 32] = [0x31; 32];

/// `admin_log`: mode 0, a sealed value read from the log's slot 0; 1, a
/// `SignedAdminLogEntry` the check seals into slot 0 (the AEAD cannot be
/// forged); 2, an `AdminLogEntry` the check signs with the admin's user
/// key and seals. `AdminLog::open` never panics; what it accepts names
/// index 0 and the admin, and (mode 2) re-encodes to exactly its bytes.
pub(crate) fn check_admin_log(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let log = AdminLog::new(&team());
    let user = SigningKey::from_bytes(&LOG_USER_SEED);
    let slot = log.slot(0);
    let signed = match mode % 3 {
        0 => None,
        1 => Some(rest.to_vec()),
        _ => Some(
            SignedAdminLogEntry {
                entry: rest.to_vec().into(),
                user_key: user.verifying_key().as_bytes().to_vec().into(),
                signature: user
                    .sign(&[tags::ADMIN_LOG_ENTRY, rest].concat())
                    .to_bytes()
                    .to_vec()
                    .into(),
            }
            .encode_to_vec(),
        ),
    };
    let value = match signed {
        None => rest.to_vec(),
        Some(signed) => match log.seal(&slot, &signed) {
            Ok(blob) => blob.into_bytes().to_vec(),
            // Larger than the largest bucket.
            Err(_) => return,
        },
    };
    let known =
        |actor: &str, key: &[u8; 32]| actor == HANDLE && key == user.verifying_key().as_bytes();
    match log.open(0, &value, known) {
        AdminLogLine::Valid(action) => {
            assert_eq!((action.index, action.actor.as_str()), (0, HANDLE));
            if mode % 3 == 2 {
                let again = AdminLogEntry {
                    at: action.at,
                    actor: action.actor,
                    action: action.action,
                    subject: action.subject,
                    registration_token_hash: action
                        .registration_token_hash
                        .map(|h| h.to_vec())
                        .unwrap_or_default()
                        .into(),
                    index: action.index,
                }
                .encode_to_vec();
                assert_eq!(
                    again, rest,
                    "an accepted log entry does not re-encode to itself"
                );
            }
        }
        AdminLogLine::Refused { index, .. } => assert_eq!(index, 0),
    }
}

/// `message_content`: the whole input is an encoded `Content` (what a
/// member puts inside Olm or Megolm). [`sotto_core::Content::decode`]
/// never panics; a kind it accepts has 16-byte targets and a reaction of
/// one short grapheme, a timer of 0 or 5 minutes … 4 weeks, re-encodes,
/// and decodes again to the same value;
/// mentions of any handle in its text never panic.
pub(crate) fn check_message_content(data: &[u8]) {
    use sotto_core::Content;
    let Ok(content) = Content::decode(data) else {
        return;
    };
    match &content {
        Content::Unsupported => {
            assert!(content.to_proto().is_none());
            return;
        }
        Content::React { emoji, .. } => {
            assert!(sotto_core::check_reaction(emoji).is_ok());
            assert!(emoji.len() <= sotto_core::MAX_REACTION_LEN);
        }
        Content::Text { body, .. } | Content::Edit { body, .. } => {
            let _ = sotto_core::mentions(body, "bob");
            let _ = sotto_core::mentions(body, "");
        }
        Content::Timer { secs } => {
            assert!(sotto_core::check_timer(*secs).is_ok());
        }
        Content::Delete { .. } => {}
        Content::File(info) => {
            assert_eq!(info.chunks, sotto_core::padded_chunks(info.size));
            assert_eq!(
                info.mailbox().id().as_bytes(),
                &info.to_proto().mailbox_id[..]
            );
        }
    }
    let again = content
        .to_proto()
        .expect("a decoded kind encodes")
        .encode_to_vec();
    assert_eq!(Content::decode(&again), Ok(content), "round trip");
}

/// The file key of `file_message` chunk inputs.
pub(crate) const FILE_KEY: [u8; 32] = [0x46; 32];
/// The size of the file `file_message` chunk inputs belong to: three real
/// chunks, the last five bytes long.
pub(crate) const FILE_SIZE: u64 = 2 * sotto_core::FILE_CHUNK_DATA as u64 + 5;

/// The file message of `file_message` chunk inputs.
pub(crate) fn fuzz_file_info() -> sotto_core::FileInfo {
    sotto_core::FileInfo {
        key: sotto_core::FileKey::from_bytes(FILE_KEY),
        chunks: sotto_core::padded_chunks(FILE_SIZE),
        size: FILE_SIZE,
        sha256: [0; 32],
        name: "f".into(),
        media_type: String::new(),
        thumbnail: Vec::new(),
        caption: String::new(),
        expires_at: 0,
    }
}

/// `file_message`: the first byte picks what the rest is. Even: an
/// encoded `File` for `FileInfo::decode`; what decodes has the padded
/// count of its size, a mailbox its key derives, bounded fields, round
/// trips, and a name that sanitizes to one plain path component. Odd: a
/// chunk blob for `open_file_chunk` at index `(byte / 2) % 4` of a
/// 3-chunk file under [`FILE_KEY`]; what opens has the length its place
/// calls for.
pub(crate) fn check_file_message(data: &[u8]) {
    use sotto_core::{FileInfo, open_file_chunk, sanitize_name};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let Ok(info) = FileInfo::decode(rest) else {
            return;
        };
        assert_eq!(info.chunks, sotto_core::padded_chunks(info.size));
        assert!(info.name.len() <= sotto_core::FILE_MAX_NAME);
        assert!(info.thumbnail.len() <= sotto_core::FILE_MAX_THUMBNAIL);
        let again = info.to_proto().encode_to_vec();
        assert_eq!(FileInfo::decode(&again).expect("round trip"), info);
        let clean = sanitize_name(&info.name);
        assert!(!clean.is_empty() && clean.len() <= sotto_core::FILE_MAX_NAME);
        assert!(!clean.contains('/') && !clean.contains('\\') && !clean.starts_with('.'));
        assert!(!clean.chars().any(char::is_control));
        assert_eq!(std::path::Path::new(&clean).components().count(), 1);
    } else {
        let info = fuzz_file_info();
        let index = u64::from(mode / 2 % 4);
        if let Ok(plain) = open_file_chunk(&info, index, rest) {
            assert_eq!(plain.len(), sotto_core::file_chunk_len(FILE_SIZE, index));
            assert_eq!(rest.len(), sotto_core::FILE_BLOB_LEN);
        }
    }
}
