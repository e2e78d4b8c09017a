#![allow(clippy::unwrap_used)]
//! Relay-side cost of anonymous access tokens: evaluating one issuance
//! batch of 100 blinded elements (with its DLEQ proof), and redeeming one
//! token at connection setup (PRF evaluation, constant-time compare, spent
//! set insert) over memory and over sled.
//!
//! The requests are made by client-core's `TokenRequest`, so this bench
//! lives in the cross-crate tests crate (the relay never depends on
//! client-core): `cargo bench -p sotto-tests --bench tokens`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::VerifyingKey;
use sotto_core::{IssuanceAccount, TokenRequest};
use sotto_relay::testing::TokenPaths;
use sotto_relay::{MemoryStorage, SledStorage, Storage};

const BATCH: u32 = 100;

fn tokens<S: Storage>(
    paths: &TokenPaths<S>,
    account: &IssuanceAccount,
    issuer: &VerifyingKey,
    n: u64,
) -> Vec<bytes::Bytes> {
    let mut out = Vec::with_capacity(n as usize);
    while (out.len() as u64) < n {
        let request = TokenRequest::new(BATCH).unwrap();
        let reply = paths
            .issue(&request.issue_request(account, &paths.challenge))
            .unwrap();
        out.extend(
            request
                .finish(&reply, issuer)
                .unwrap()
                .iter()
                .map(|t| t.encode()),
        );
    }
    out.truncate(n as usize);
    out
}

fn redeem<S: Storage>(
    c: &mut Criterion,
    name: &str,
    paths: &TokenPaths<S>,
    account: &IssuanceAccount,
) {
    let issuer = VerifyingKey::from_bytes(&paths.issuer_key()).unwrap();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let pool = tokens(paths, account, &issuer, iters);
            let start = Instant::now();
            for token in &pool {
                paths.redeem(black_box(token)).unwrap();
            }
            start.elapsed()
        })
    });
}

fn token_paths(c: &mut Criterion) {
    let account = IssuanceAccount::generate().unwrap();
    let memory = TokenPaths::new(Arc::new(MemoryStorage::new()), account.public_key()).unwrap();

    let mut group = c.benchmark_group("issue");
    group.throughput(Throughput::Elements(u64::from(BATCH)));
    let request = TokenRequest::new(BATCH).unwrap();
    let issue = request.issue_request(&account, &memory.challenge);
    group.bench_function("relay evaluates a batch of 100", |b| {
        b.iter(|| memory.issue(black_box(&issue)).unwrap())
    });
    group.finish();

    redeem(c, "redeem one token (memory)", &memory, &account);
    let dir = tempfile::tempdir().unwrap();
    let sled = TokenPaths::new(
        Arc::new(SledStorage::open(&dir.path().join("db")).unwrap()),
        account.public_key(),
    )
    .unwrap();
    redeem(c, "redeem one token (sled, unflushed)", &sled, &account);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = token_paths
}
criterion_main!(benches);
