//! Real access tokens for a relay that requires them (DESIGN §6, §7), got
//! the way real devices get them, so that connection setup is measured with
//! token redemption in it.
//!
//! Given a fresh relay's bootstrap code, the load generator becomes its
//! admin (`bootstrap`), mints one registration token per issuance account
//! it needs, registers each account, and refills it with VOPRF tokens
//! (blinded, evaluated by the relay with a DLEQ proof, checked against the
//! pinned issuer key, unblinded). A relay gives one account at most
//! `tokens_per_period` tokens per period (500 by default), so N tokens take
//! ⌈N / 500⌉ accounts. All of that happens before anything is measured.
//! Every load connection then presents one unspent token in its hello, as
//! `TokenWallet::connect` does, and the relay redeems it (VOPRF evaluation
//! and a spent-token record) before it serves the connection.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use ed25519_dalek::SigningKey;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;
use sotto_core::{AccessToken, IssuanceAccount, RelayAddr, RelayConnection};

/// Tokens the relay gives one issuance account per period by default
/// (`[tokens] tokens_per_period`); also its default issuance batch.
pub(crate) const TOKENS_PER_ACCOUNT: usize = 500;

/// Accounts registered and refilled at once.
const PARALLEL_ACCOUNTS: usize = 4;

/// Unspent tokens, one per load connection.
pub(crate) struct Tokens {
    unspent: Mutex<Vec<AccessToken>>,
    issued: usize,
}

/// How the tokens were obtained (reported with the run).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Issuance {
    pub(crate) tokens: usize,
    pub(crate) accounts: usize,
    /// Bootstrap, registrations and refills, wall time.
    pub(crate) secs: f64,
}

impl Tokens {
    /// Bootstraps the relay with `code` and obtains `count` tokens.
    pub(crate) async fn obtain(
        relay: &RelayAddr,
        code: &str,
        count: usize,
    ) -> anyhow::Result<(Self, Issuance)> {
        let started = Instant::now();
        let admin_conn = RelayConnection::connect(relay, None)
            .await
            .context("cannot open the admin connection")?;
        let admin = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let issuer = sotto_core::bootstrap(&admin_conn, code.trim(), &admin)
            .await
            .context("cannot bootstrap the relay (pass a fresh relay's unused bootstrap code)")?;
        let accounts = count.div_ceil(TOKENS_PER_ACCOUNT).max(1);
        let expires_at = unix_now() + 3600;
        let registrations = sotto_core::mint_registrations(
            &admin_conn,
            &admin,
            u32::try_from(accounts).context("too many accounts")?,
            expires_at,
        )
        .await
        .context("cannot mint registration tokens")?;
        admin_conn.close().await;

        let mut left = count;
        let plan: Vec<_> = registrations
            .into_iter()
            .map(|registration| {
                let n = left.min(TOKENS_PER_ACCOUNT);
                left -= n;
                (registration, n)
            })
            .collect();
        let batches: Vec<Vec<AccessToken>> = stream::iter(plan)
            .map(|(registration, n)| async move {
                // Each account on a connection of its own, as a device does.
                let conn = RelayConnection::connect(relay, None)
                    .await
                    .context("cannot open an issuance connection")?;
                let account = IssuanceAccount::generate()?;
                sotto_core::register(&conn, &registration, &account)
                    .await
                    .context("cannot register an issuance account")?;
                let tokens = sotto_core::refill(&conn, &account, &issuer, n as u32)
                    .await
                    .context("cannot obtain tokens")?;
                conn.close().await;
                anyhow::Ok(tokens)
            })
            .buffer_unordered(PARALLEL_ACCOUNTS)
            .try_collect()
            .await?;
        let unspent: Vec<AccessToken> = batches.into_iter().flatten().collect();
        anyhow::ensure!(
            unspent.len() == count,
            "asked for {count} tokens, got {}",
            unspent.len()
        );
        let issuance = Issuance {
            tokens: count,
            accounts,
            secs: round3(started.elapsed()),
        };
        Ok((
            Self {
                unspent: Mutex::new(unspent),
                issued: count,
            },
            issuance,
        ))
    }

    /// One unspent token, encoded for a hello.
    pub(crate) fn take(&self) -> anyhow::Result<bytes::Bytes> {
        let mut unspent = self
            .unspent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let token = unspent.pop().with_context(|| {
            format!(
                "all {} tokens obtained before the run are spent (more connections than planned)",
                self.issued
            )
        })?;
        Ok(token.encode())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn round3(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
