//! Cost of sealing and opening one typical chat message: 200 bytes into a
//! 1 KiB blob (one X25519, one HKDF, one ChaCha20-Poly1305 pass each way).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sotto_core::{EnvelopeSecret, open, seal};

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

criterion_group!(benches, seal_and_open);
criterion_main!(benches);
