//! Cost of sealing and opening one typical chat message: 200 bytes into a
//! 1 KiB blob (one X25519, one HKDF, one ChaCha20-Poly1305 pass each way),
//! classically (version 1, before the post-quantum envelope) and with the
//! pairwise post-quantum secret mixed in (version 4, every ordinary message
//! between two devices that have one); and the first-contact cost of the
//! hybrid envelope (version 3: an ML-KEM-768 encapsulation, 4 KiB).
//!
//! Before/after: "seal 200 B into 1 KiB" and "open 1 KiB blob" are the
//! classical figures; the "pairwise" ones replace them for PQ-capable
//! pairs.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sotto_core::{
    EnvelopeSecret, KemSecret, PairwiseKey, open, open_hybrid, open_pairwise, seal, seal_hybrid,
    seal_pairwise,
};
use sotto_proto::Bucket;

fn seal_and_open(c: &mut Criterion) {
    let secret = EnvelopeSecret::from_bytes([0x17; 32]);
    let public = secret.public();
    let message = [0x61u8; 200];
    let blob = seal(&public, &message).expect("200 bytes fit in 1 KiB");

    c.bench_function("seal 200 B into 1 KiB", |b| {
        b.iter(|| seal(black_box(&public), black_box(&message)))
    });
    c.bench_function("open 1 KiB blob", |b| {
        b.iter(|| open(black_box(&secret), black_box(blob.as_bytes())))
    });
}

fn pairwise(c: &mut Criterion) {
    let secret = EnvelopeSecret::from_bytes([0x17; 32]);
    let public = secret.public();
    let message = [0x61u8; 200];
    // A device with 100 contact devices holds up to 300 secrets (current,
    // previous, pending); the blob's is the last one tried.
    let secrets: Vec<PairwiseKey> = (0..100u8)
        .map(|i| PairwiseKey::from_bytes([i; 32]))
        .collect();
    let blob =
        seal_pairwise(&public, &secrets[99], &message, Bucket::K1).expect("200 bytes fit in 1 KiB");

    c.bench_function("seal 200 B pairwise into 1 KiB", |b| {
        b.iter(|| {
            seal_pairwise(
                black_box(&public),
                black_box(&secrets[0]),
                black_box(&message),
                Bucket::K1,
            )
        })
    });
    c.bench_function("open 1 KiB pairwise blob, 1 secret held", |b| {
        b.iter(|| {
            open_pairwise(
                black_box(&secret),
                black_box(blob.as_bytes()),
                &secrets[99..],
            )
        })
    });
    c.bench_function("open 1 KiB pairwise blob, 100 secrets held", |b| {
        b.iter(|| open_pairwise(black_box(&secret), black_box(blob.as_bytes()), &secrets))
    });
}

fn first_contact(c: &mut Criterion) {
    let secret = EnvelopeSecret::from_bytes([0x17; 32]);
    let public = secret.public();
    let kem = KemSecret::from_seed(&[0x18; 64]);
    let kem_public = kem.public();
    let message = [0x61u8; 200];
    let encapsulation = kem_public.encapsulate().expect("randomness");
    let blob = seal_hybrid(&public, &kem_public, &encapsulation, &message, Bucket::K1)
        .expect("200 bytes fit in 4 KiB");

    c.bench_function("ML-KEM-768 key generation", |b| b.iter(KemSecret::generate));
    c.bench_function(
        "first contact: encapsulate and seal 200 B into 4 KiB",
        |b| {
            b.iter(|| {
                let encapsulation = black_box(&kem_public).encapsulate().expect("randomness");
                seal_hybrid(
                    black_box(&public),
                    &kem_public,
                    &encapsulation,
                    black_box(&message),
                    Bucket::K1,
                )
            })
        },
    );
    c.bench_function("first contact: open 4 KiB hybrid blob", |b| {
        b.iter(|| {
            open_hybrid(
                black_box(&secret),
                black_box(&kem),
                black_box(blob.as_bytes()),
            )
        })
    });
}

criterion_group!(benches, seal_and_open, pairwise, first_contact);
criterion_main!(benches);
