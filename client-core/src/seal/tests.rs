//! Tests of the sealed formats: layout, boundaries, tampering, both
//! versions.

use proptest::prelude::*;

use super::envelope::seal_key;
use super::padding::write_padded;
use super::*;

const EPH: [u8; 32] = [0x42; 32];

fn recipient() -> EnvelopeSecret {
    EnvelopeSecret::from_bytes([0x17; 32])
}

/// A blob sealed to `to` whose padded body is written by `fill`: lets
/// tests produce authentic blobs with malformed padding.
fn seal_raw(to: &EnvelopePublic, bucket: Bucket, fill: impl FnOnce(&mut [u8])) -> Blob {
    let key = seal_key(to, &EPH).unwrap();
    seal_padded(SEAL_VERSION, &key.eph_public, &key.aead_key, bucket, fill)
}

#[test]
fn bucket_boundaries_are_the_size_minus_53() {
    assert_eq!(SEAL_OVERHEAD, 53);
    assert_eq!(max_plaintext_len(Bucket::K1), 971);
    assert_eq!(max_plaintext_len(Bucket::K4), 4043);
    assert_eq!(max_plaintext_len(Bucket::K16), 16331);
    assert_eq!(max_plaintext_len(Bucket::K64), 65483);
}

#[test]
fn round_trip_at_every_bucket_boundary() {
    let secret = recipient();
    let mut lengths = vec![(0, Bucket::K1), (1, Bucket::K1)];
    for pair in Bucket::ALL.windows(2) {
        let max = max_plaintext_len(pair[0]);
        lengths.extend([(max - 1, pair[0]), (max, pair[0]), (max + 1, pair[1])]);
    }
    let max = max_plaintext_len(Bucket::K64);
    lengths.extend([(max - 1, Bucket::K64), (max, Bucket::K64)]);
    for (len, bucket) in lengths {
        let plaintext: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
        let blob = seal(&secret.public(), &plaintext).unwrap();
        assert_eq!(blob.bucket(), bucket, "length {len}");
        assert_eq!(blob.len(), bucket.size(), "length {len}");
        assert_eq!(
            open(&secret, blob.as_bytes()).unwrap().as_slice(),
            plaintext
        );
    }
}

#[test]
fn too_large_is_a_typed_error_pointing_to_attachments() {
    let len = max_plaintext_len(Bucket::K64) + 1;
    let error = seal(&recipient().public(), &vec![0; len]).unwrap_err();
    assert!(matches!(error, SealError::TooLarge { len: l, max: 65483 } if l == len));
    assert!(error.to_string().contains("attachment"));
    assert!(matches!(
        seal_symmetric(&[1; 32], &vec![0; len]),
        Err(SealError::TooLarge { .. })
    ));
    assert_eq!(
        pad(&vec![0; len], Bucket::K1).unwrap_err(),
        PadError::TooLarge { len, max: 65483 }
    );
}

#[test]
fn a_minimum_bucket_can_be_forced() {
    let secret = recipient();
    let blob = seal_min_bucket(&secret.public(), b"hi", Bucket::K16).unwrap();
    assert_eq!(blob.bucket(), Bucket::K16);
    assert_eq!(open(&secret, blob.as_bytes()).unwrap().as_slice(), b"hi");
    // A floor below what the message needs is no ceiling.
    let blob = seal_min_bucket(&secret.public(), &[7; 2000], Bucket::K1).unwrap();
    assert_eq!(blob.bucket(), Bucket::K4);
}

#[test]
fn the_layout_is_the_one_of_the_design() {
    // Re-derive the key from the spec with the primitives directly.
    let secret = recipient();
    let blob = seal_with_ephemeral(&secret.public(), b"layout", Bucket::K1, &EPH).unwrap();
    let bytes = blob.as_bytes();
    let eph_public = x25519_dalek::x25519(EPH, x25519_dalek::X25519_BASEPOINT_BYTES);
    assert_eq!(bytes[0], 1);
    assert_eq!(&bytes[1..33], &eph_public);
    let shared = x25519_dalek::x25519(EPH, *secret.public().as_bytes());
    let mut salt = eph_public.to_vec();
    salt.extend_from_slice(secret.public().as_bytes());
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&salt), &shared)
        .expand(b"sotto/seal/v1", &mut key)
        .unwrap();
    let mut body = bytes[33..1024 - 16].to_vec();
    let tag = Tag::try_from(&bytes[1024 - 16..]).unwrap();
    ChaCha20Poly1305::new(&key.into())
        .decrypt_inout_detached(
            &Nonce::from([0; 12]),
            &bytes[..33],
            body.as_mut_slice().into(),
            &tag,
        )
        .unwrap();
    assert_eq!(&body[..4], &6u32.to_be_bytes());
    assert_eq!(&body[4..10], b"layout");
    assert!(body[10..].iter().all(|b| *b == 0));
    assert_eq!(body.len(), padded_len(Bucket::K1));
}

#[test]
fn a_fixed_ephemeral_is_deterministic_and_a_fresh_one_is_not() {
    let to = recipient().public();
    let a = seal_with_ephemeral(&to, b"same", Bucket::K1, &EPH).unwrap();
    let b = seal_with_ephemeral(&to, b"same", Bucket::K1, &EPH).unwrap();
    assert_eq!(a, b);
    assert_ne!(seal(&to, b"same").unwrap(), seal(&to, b"same").unwrap());
}

#[test]
fn wrong_key_is_a_decryption_error() {
    let blob = seal(&recipient().public(), b"secret").unwrap();
    let other = EnvelopeSecret::from_bytes([0x18; 32]);
    assert_eq!(open(&other, blob.as_bytes()), Err(OpenError::Decryption));
}

#[test]
fn truncated_and_extended_blobs_are_not_a_bucket() {
    let secret = recipient();
    let blob = seal(&secret.public(), b"secret").unwrap();
    let bytes = blob.as_bytes();
    assert_eq!(
        open(&secret, &bytes[..1023]),
        Err(OpenError::NotABucket { len: 1023 })
    );
    assert_eq!(open(&secret, &[]), Err(OpenError::NotABucket { len: 0 }));
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(
        open(&secret, &longer),
        Err(OpenError::NotABucket { len: 1025 })
    );
}

#[test]
fn every_flipped_bit_is_caught() {
    let secret = recipient();
    let blob = seal(&secret.public(), b"do not touch").unwrap();
    for byte in 0..blob.len() {
        for bit in [0x01u8, 0x80] {
            let mut bytes = blob.as_bytes().to_vec();
            bytes[byte] ^= bit;
            let expected = if byte == 0 {
                OpenError::WrongVersion {
                    found: 1 ^ bit,
                    expected: 1,
                }
            } else {
                OpenError::Decryption
            };
            // Flipping the top bit of the ephemeral key's last byte is
            // ignored by x25519 itself, but the header is AEAD data.
            assert_eq!(
                open(&secret, &bytes),
                Err(expected),
                "byte {byte} bit {bit}"
            );
        }
    }
}

#[test]
fn garbage_of_a_bucket_size_is_refused() {
    let secret = recipient();
    let mut garbage = vec![0u8; 1024];
    getrandom::fill(&mut garbage).unwrap();
    garbage[0] = SEAL_VERSION;
    assert_eq!(open(&secret, &garbage), Err(OpenError::Decryption));
    garbage[0] = 9;
    assert_eq!(
        open(&secret, &garbage),
        Err(OpenError::WrongVersion {
            found: 9,
            expected: 1
        })
    );
}

#[test]
fn low_order_keys_are_refused_both_ways() {
    let secret = recipient();
    // The all-zero u-coordinate is a low-order point.
    let mut blob = vec![0u8; 1024];
    blob[0] = SEAL_VERSION;
    assert_eq!(open(&secret, &blob), Err(OpenError::LowOrderKey));
    assert!(matches!(
        seal(&EnvelopePublic::from_bytes([0; 32]), b"x"),
        Err(SealError::InvalidRecipientKey)
    ));
}

#[test]
fn non_zero_padding_is_refused() {
    let secret = recipient();
    let blob = seal_raw(&secret.public(), Bucket::K1, |body| {
        write_padded(body, b"hello");
        let last = body.len() - 1;
        body[last] = 1;
    });
    assert_eq!(
        open(&secret, blob.as_bytes()),
        Err(OpenError::Malformed(UnpadError::NonZeroPadding))
    );
}

#[test]
fn a_length_beyond_the_body_is_refused() {
    let secret = recipient();
    let available = padded_len(Bucket::K1) - 4;
    let blob = seal_raw(&secret.public(), Bucket::K1, |body| {
        body.fill(0);
        body[..4].copy_from_slice(&(available as u32 + 1).to_be_bytes());
    });
    assert_eq!(
        open(&secret, blob.as_bytes()),
        Err(OpenError::Malformed(UnpadError::LengthExceeds {
            claimed: available + 1,
            available
        }))
    );
    // Exactly the whole body is a valid (maximal) message.
    let blob = seal_raw(&secret.public(), Bucket::K1, |body| {
        body.fill(5);
        body[..4].copy_from_slice(&(available as u32).to_be_bytes());
    });
    assert_eq!(open(&secret, blob.as_bytes()).unwrap().len(), available);
}

#[test]
fn pad_and_unpad_are_strict_inverses() {
    let (bucket, padded) = pad(b"abc", Bucket::K1).unwrap();
    assert_eq!(bucket, Bucket::K1);
    assert_eq!(padded.len(), padded_len(Bucket::K1));
    assert_eq!(unpad(&padded).unwrap(), b"abc");
    let (bucket, _) = pad(b"abc", Bucket::K4).unwrap();
    assert_eq!(bucket, Bucket::K4);
    assert_eq!(unpad(&[0, 0, 0]), Err(UnpadError::TooShort { len: 3 }));
    assert_eq!(unpad(&[0, 0, 0, 0]).unwrap(), b"");
    assert_eq!(
        unpad(&[0, 0, 0, 2, 9]),
        Err(UnpadError::LengthExceeds {
            claimed: 2,
            available: 1
        })
    );
    assert_eq!(
        unpad(&[0, 0, 0, 1, 9, 0, 3]),
        Err(UnpadError::NonZeroPadding)
    );
}

#[test]
fn group_blobs_round_trip_and_look_like_sealed_ones() {
    let key = [0x33; 32];
    let blob = seal_symmetric(&key, b"to the group").unwrap();
    assert_eq!(blob.bucket(), Bucket::K1);
    assert_eq!(blob.as_bytes()[0], GROUP_SEAL_VERSION);
    assert_eq!(
        open_symmetric(&key, blob.as_bytes()).unwrap().as_slice(),
        b"to the group"
    );
    assert_eq!(
        open_symmetric(&[0x34; 32], blob.as_bytes()),
        Err(OpenError::Decryption)
    );
    // Same sizes as 1:1 blobs at every boundary.
    let max = max_plaintext_len(Bucket::K1);
    assert_eq!(
        seal_symmetric(&key, &vec![1; max]).unwrap().bucket(),
        Bucket::K1
    );
    assert_eq!(
        seal_symmetric(&key, &vec![1; max + 1]).unwrap().bucket(),
        Bucket::K4
    );
    let forced = seal_symmetric_min_bucket(&key, b"", Bucket::K64).unwrap();
    assert_eq!(forced.bucket(), Bucket::K64);
    // A fresh salt each time; a fixed salt is deterministic.
    assert_ne!(blob, seal_symmetric(&key, b"to the group").unwrap());
    let salt = [9; 32];
    assert_eq!(
        seal_symmetric_with_salt(&key, b"x", Bucket::K1, &salt).unwrap(),
        seal_symmetric_with_salt(&key, b"x", Bucket::K1, &salt).unwrap()
    );
}

#[test]
fn a_blob_of_one_kind_is_refused_by_the_other() {
    let secret = recipient();
    let sealed = seal(&secret.public(), b"1:1").unwrap();
    let group = seal_symmetric(&[0x33; 32], b"group").unwrap();
    assert_eq!(
        open_symmetric(&[0x33; 32], sealed.as_bytes()),
        Err(OpenError::WrongVersion {
            found: 1,
            expected: 2
        })
    );
    assert_eq!(
        open(&secret, group.as_bytes()),
        Err(OpenError::WrongVersion {
            found: 2,
            expected: 1
        })
    );
}

#[test]
fn the_header_of_a_group_blob_is_authenticated() {
    let key = [0x33; 32];
    let blob = seal_symmetric(&key, b"group").unwrap();
    let mut bytes = blob.as_bytes().to_vec();
    bytes[5] ^= 1;
    assert_eq!(open_symmetric(&key, &bytes), Err(OpenError::Decryption));
}

#[test]
fn envelope_keys_persist_and_debug_shows_a_fingerprint() {
    let secret = EnvelopeSecret::generate();
    let restored = EnvelopeSecret::from_bytes(*secret.to_bytes());
    assert_eq!(restored.public(), secret.public());
    let public = secret.public();
    assert_eq!(EnvelopePublic::from_slice(public.as_bytes()), Ok(public));
    assert!(EnvelopePublic::from_slice(&[0; 31]).is_err());
    let shown = format!("{public:?}");
    assert!(shown.contains(&public.short()));
    assert!(!shown.contains(&hex::encode(public.as_bytes())));
}

fn blob_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1024usize),
        Just(4096),
        Just(16384),
        Just(65536),
        0usize..1100,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn open_never_panics_on_arbitrary_bytes(
        len in blob_len(),
        seed in any::<u64>(),
        version in prop_oneof![Just(1u8), Just(2u8), any::<u8>()],
    ) {
        // Cheap deterministic filler: arbitrary enough, and fast for 64 KiB.
        let mut state = seed | 1;
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        if let Some(first) = bytes.first_mut() {
            *first = version;
        }
        prop_assert!(open(&recipient(), &bytes).is_err());
        prop_assert!(open_symmetric(&[0x33; 32], &bytes).is_err());
        let _ = unpad(&bytes);
    }

    #[test]
    fn any_plaintext_round_trips_in_exactly_one_bucket(
        plaintext in proptest::collection::vec(any::<u8>(), 0..5000),
    ) {
        let secret = recipient();
        let blob = seal(&secret.public(), &plaintext).unwrap();
        prop_assert_eq!(Some(blob.bucket()), Bucket::of_len(blob.len()));
        prop_assert!(max_plaintext_len(blob.bucket()) >= plaintext.len());
        let opened = open(&secret, blob.as_bytes()).unwrap();
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());

        let group = seal_symmetric(&[0x33; 32], &plaintext).unwrap();
        prop_assert_eq!(group.bucket(), blob.bucket());
        let opened = open_symmetric(&[0x33; 32], group.as_bytes()).unwrap();
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
    }

    #[test]
    fn any_tampering_is_caught(
        plaintext in proptest::collection::vec(any::<u8>(), 0..900),
        position in 0usize..1024,
        mask in 1u8..=255,
    ) {
        let secret = recipient();
        let mut bytes = seal(&secret.public(), &plaintext).unwrap().as_bytes().to_vec();
        bytes[position] ^= mask;
        prop_assert!(open(&secret, &bytes).is_err());
    }
}

// ---- The hybrid envelopes (versions 3 and 4, DESIGN §5.1) ----

use super::hybrid::{seal_hybrid_with_ephemeral, seal_pairwise_with_ephemeral};

const KEM_SEED: [u8; 64] = [0x01; 64];
const KEM_M: [u8; 32] = [0x02; 32];

fn kem() -> KemSecret {
    KemSecret::from_seed(&KEM_SEED)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Known answers: fixed seeds give fixed keys, ciphertexts, secrets and
/// blobs. A change to the combination (inputs, order, labels) or to the
/// layout fails here.
#[test]
fn hybrid_known_answers() {
    let kem = kem();
    let public = kem.public();
    assert_eq!(public.as_bytes().len(), KEM_PUBLIC_LEN);
    let encapsulation = public.encapsulate_with(&KEM_M).unwrap();
    let pairwise = encapsulation.pairwise(&public);
    let x25519 = recipient();
    let blob = seal_hybrid_with_ephemeral(
        &x25519.public(),
        &public,
        &encapsulation,
        b"first contact",
        Bucket::K1,
        &EPH,
    )
    .unwrap();
    let later = seal_pairwise_with_ephemeral(
        &x25519.public(),
        &pairwise,
        b"later",
        Bucket::K1,
        &[0x43; 32],
    )
    .unwrap();
    let answers = [
        sha256_hex(public.as_bytes()),
        sha256_hex(encapsulation.ciphertext()),
        hex::encode(*encapsulation.shared),
        hex::encode(pairwise.as_bytes()),
        sha256_hex(blob.as_bytes()),
        sha256_hex(later.as_bytes()),
    ];
    assert_eq!(answers, KNOWN_ANSWERS.map(str::to_owned), "{answers:#?}");
    // And they open.
    let opened = open_hybrid(&x25519, &kem, blob.as_bytes()).unwrap();
    assert_eq!(opened.plaintext.as_slice(), b"first contact");
    assert!(opened.pairwise == pairwise);
    let (plain, index) = open_pairwise(&x25519, later.as_bytes(), [&pairwise]).unwrap();
    assert_eq!((plain.as_slice(), index), (b"later".as_slice(), 0));
}

/// SHA-256 of the ML-KEM public key and ciphertext, the ML-KEM shared
/// secret, the pairwise secret, SHA-256 of the version-3 and version-4
/// blobs. Computed independently, from the formulas in DESIGN §5.1, with a
/// second implementation of ML-KEM-768, X25519, HKDF-SHA256 and
/// ChaCha20-Poly1305 (the first three also match FIPS 203's seed-based
/// key generation and encapsulation).
const KNOWN_ANSWERS: [&str; 6] = [
    "e68d60857f9cb41f88c278ca430e472c6df5679fd5bac3ce872334293c5d0c42",
    "cf2e49c7b792b92c9353575dea79546722b22d4ca66c7b7caef0454c49082934",
    "adb494c04fc78a643c632686e4c76ea471b4b7c30a14a5592dd3b0b8e6730359",
    "a33d2e47c3592b79ffc68752e633dc71c514011e252fec46ef8f8339a48caf16",
    "e163a6c60397e182bece0ca138f54ff58db43a4cb468cbae01cbecf3cf00e94e",
    "ee1d7c266335f303d1cf345e3bf89a2944971cd813ebe334f3f2d4de364bfb43",
];

/// An ordinary message costs the same bytes on the wire as before the
/// hybrid envelope: a version-4 blob has version 1's 33-byte header, so
/// the 1 KiB bucket holds 971 plaintext bytes either way.
#[test]
fn the_1_kib_bucket_is_unchanged_by_the_pairwise_envelope() {
    let x25519 = recipient();
    let pairwise = PairwiseKey::from_bytes([9; 32]);
    let max = max_plaintext_len(Bucket::K1);
    assert_eq!(max, 971);
    for len in [0, 200, max] {
        let classical = seal(&x25519.public(), &vec![1; len]).unwrap();
        let pq = seal_pairwise(&x25519.public(), &pairwise, &vec![1; len], Bucket::K1).unwrap();
        assert_eq!(pq.len(), 1024);
        assert_eq!(pq.len(), classical.len());
    }
    let over = seal_pairwise(&x25519.public(), &pairwise, &vec![1; max + 1], Bucket::K1).unwrap();
    assert_eq!(over.bucket(), Bucket::K4);
}

#[test]
fn hybrid_round_trips_at_every_bucket_boundary_and_is_never_1_kib() {
    let x25519 = recipient();
    let kem = kem();
    let public = kem.public();
    let encapsulation = public.encapsulate().unwrap();
    assert_eq!(max_hybrid_plaintext_len(Bucket::K1), 0);
    assert_eq!(
        max_hybrid_plaintext_len(Bucket::K4),
        4096 - 33 - 1088 - 16 - 4
    );
    let mut lengths = vec![(0, Bucket::K4)];
    for pair in Bucket::ALL[1..].windows(2) {
        let max = max_hybrid_plaintext_len(pair[0]);
        lengths.extend([(max, pair[0]), (max + 1, pair[1])]);
    }
    for (len, bucket) in lengths {
        let plaintext: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let blob = seal_hybrid(
            &x25519.public(),
            &public,
            &encapsulation,
            &plaintext,
            Bucket::K1,
        )
        .unwrap();
        assert_eq!(blob.bucket(), bucket, "length {len}");
        assert_eq!(blob.as_bytes()[0], HYBRID_SEAL_VERSION);
        let opened = open_hybrid(&x25519, &kem, blob.as_bytes()).unwrap();
        assert_eq!(opened.plaintext.as_slice(), plaintext);
        assert!(opened.pairwise == encapsulation.pairwise(&public));
    }
    let too_long = max_hybrid_plaintext_len(Bucket::K64) + 1;
    assert!(matches!(
        seal_hybrid(
            &x25519.public(),
            &public,
            &encapsulation,
            &vec![0; too_long],
            Bucket::K1
        ),
        Err(SealError::TooLarge { .. })
    ));
}

#[test]
fn a_hybrid_blob_needs_both_keys_and_every_header_byte() {
    let x25519 = recipient();
    let kem = kem();
    let public = kem.public();
    let encapsulation = public.encapsulate().unwrap();
    let blob = seal_hybrid(&x25519.public(), &public, &encapsulation, b"hi", Bucket::K1).unwrap();
    let bytes = blob.as_bytes();
    // The right X25519 key with another ML-KEM key, and the reverse.
    let other_kem = KemSecret::from_seed(&[5; 64]);
    assert_eq!(
        open_hybrid(&x25519, &other_kem, bytes).err(),
        Some(OpenError::Decryption)
    );
    assert_eq!(
        open_hybrid(&EnvelopeSecret::from_bytes([0x18; 32]), &kem, bytes).err(),
        Some(OpenError::Decryption)
    );
    // A flipped bit in the ephemeral key, the ML-KEM ciphertext, the body.
    for at in [1, 33, 33 + 1087, HYBRID_HEADER_LEN, bytes.len() - 1] {
        let mut tampered = bytes.to_vec();
        tampered[at] ^= 1;
        assert!(open_hybrid(&x25519, &kem, &tampered).is_err(), "byte {at}");
    }
    // Not a classical blob, not a pairwise one.
    assert_eq!(
        open(&x25519, bytes).err(),
        Some(OpenError::WrongVersion {
            found: HYBRID_SEAL_VERSION,
            expected: SEAL_VERSION
        })
    );
    let classical = seal(&x25519.public(), b"hi").unwrap();
    assert!(matches!(
        open_hybrid(&x25519, &kem, classical.as_bytes()),
        Err(OpenError::WrongVersion {
            found: SEAL_VERSION,
            ..
        })
    ));
    // Truncated to a bucket too small for the header.
    assert!(matches!(
        open_hybrid(&x25519, &kem, &bytes[..1024]),
        Err(OpenError::NotABucket { .. } | OpenError::Decryption)
    ));
}

#[test]
fn a_pairwise_blob_opens_only_with_its_secret_and_says_which() {
    let x25519 = recipient();
    let secrets: Vec<PairwiseKey> = (1..=4).map(|i| PairwiseKey::from_bytes([i; 32])).collect();
    let blob = seal_pairwise(&x25519.public(), &secrets[2], b"hello", Bucket::K1).unwrap();
    assert_eq!(blob.as_bytes()[0], PAIRWISE_SEAL_VERSION);
    let (plain, index) = open_pairwise(&x25519, blob.as_bytes(), &secrets).unwrap();
    assert_eq!((plain.as_slice(), index), (b"hello".as_slice(), 2));
    assert_eq!(
        open_pairwise(&x25519, blob.as_bytes(), &secrets[..2]).err(),
        Some(OpenError::Decryption)
    );
    assert_eq!(
        open_pairwise(&x25519, blob.as_bytes(), []).err(),
        Some(OpenError::Decryption)
    );
    // Without the pairwise secret the X25519 key alone does not open it.
    assert!(open(&x25519, blob.as_bytes()).is_err());
    let mut tampered = blob.as_bytes().to_vec();
    tampered[500] ^= 1;
    assert_eq!(
        open_pairwise(&x25519, &tampered, &secrets).err(),
        Some(OpenError::Decryption)
    );
}

#[test]
fn a_bad_ml_kem_public_key_is_refused() {
    assert_eq!(
        KemPublic::from_slice(&[0; 100]).err(),
        Some(KemKeyError::Length { got: 100 })
    );
    // Every 12-bit coefficient 0xfff is above the modulus.
    assert_eq!(
        KemPublic::from_slice(&[0xff; KEM_PUBLIC_LEN]).err(),
        Some(KemKeyError::Invalid)
    );
    let good = kem().public();
    assert_eq!(KemPublic::from_slice(good.as_bytes()).unwrap(), good);
    // The seed round-trips to the same key.
    assert_eq!(KemSecret::from_seed(&kem().to_seed()).public(), good);
}
