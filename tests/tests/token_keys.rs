//! Token keys cannot tag a member (issue 18 item 6): the team's roster,
//! signed by `T`, names the relay's issuer key and token period; a refill
//! of a key outside the current period is refused; members cross-check the
//! keys they hold per period, not only per key ID. Real relay on loopback
//! requiring tokens, real stores, one manual clock.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use sotto_core::{App, AppError, TokenError};
use sotto_tests::clock_of;
use sotto_tests::teams::{key, team, tokens_relay};

/// A relay that gave one member a key generation of its own for the
/// period: that member's messages name it, the other member notes the
/// newer generation, and its next refill (the relay keeps handing it the
/// old one) is a warning. Before, only two keys of one key ID were
/// compared, and two generations have two IDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_shown_another_generation_for_the_period_is_warned_at_its_next_refill() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["bob"]).await;
    let [mut bob] = <[App; 1]>::try_from(joined).ok().unwrap();
    admin.send("bob", "one").await.unwrap();
    bob.sync().await.unwrap();
    let key_id = admin.client().engine().token_key_id().unwrap();
    assert_eq!(bob.client().engine().token_key_id(), Some(key_id));

    // Stage a relay that gave bob generation +5 of this period.
    let tagged = key_id + (5 << 40);
    bob.client()
        .engine_mut()
        .record_period_key(tagged, &[7; 32])
        .unwrap();
    bob.send("admin", "two").await.unwrap();
    let report = admin.sync().await.unwrap();
    assert_eq!(report.messages.len(), 1, "the message itself is authentic");
    assert_eq!(
        admin.client().engine().token_key_warnings().unwrap(),
        Vec::<u64>::new(),
        "a newer generation alone may be a revocation"
    );
    // The relay hands the admin the generation it always did.
    admin.client().refill_tokens().await.unwrap();
    assert_eq!(
        admin.client().engine().token_key_warnings().unwrap(),
        [key_id]
    );
    assert_eq!(
        bob.client().engine().token_key_warnings().unwrap(),
        Vec::<u64>::new()
    );
}

/// A revocation moves the relay to a new generation within the period:
/// every member gets the same newer key at its next refill, and nobody is
/// warned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_generation_after_a_revocation_is_no_warning() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["bob", "carol"]).await;
    let [mut bob, _carol] = <[App; 2]>::try_from(joined).ok().unwrap();
    admin.send("bob", "before").await.unwrap();
    bob.send("admin", "before").await.unwrap();
    let before = bob.client().engine().token_key_id().unwrap();

    admin.revoke("carol").await.unwrap();
    admin.client().send_text("bob", "after").await.unwrap();
    bob.sync().await.unwrap();
    bob.send("admin", "after").await.unwrap();
    admin.sync().await.unwrap();
    let after = bob.client().engine().token_key_id().unwrap();
    assert!(after > before, "a new generation after the revocation");
    for member in [&mut admin, &mut bob] {
        assert_eq!(
            member.client().engine().token_key_warnings().unwrap(),
            Vec::<u64>::new(),
            "{} warned",
            member.handle()
        );
    }
}

/// Once the roster named the relay's token period, a key whose period is
/// not the current one is refused, tokens and all. Staged by a device
/// whose clock runs three periods ahead of the relay's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_key_outside_the_current_period_is_refused() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, joined) = team(&relay, homes.path(), &["bob"]).await;
    let [mut bob] = <[App; 1]>::try_from(joined).ok().unwrap();
    // The first sync reads the roster, and with it the period.
    bob.sync().await.unwrap();
    drop(bob);

    let period = relay.config.tokens.token_period_secs;
    let relay_clock = clock_of(&relay.clock);
    let ahead: sotto_core::Clock = Arc::new(move || relay_clock() + 3 * period * 1000);
    let home = homes.path().join("bob");
    let mut bob = App::open(&home, key(&home), ahead).await.unwrap();
    let error = bob.sync().await.unwrap_err();
    assert!(
        matches!(error, AppError::Token(TokenError::KeyOutsidePeriod { .. })),
        "{error:?}"
    );
    assert_eq!(bob.client().tokens_left().unwrap(), Some(0), "none kept");
}
