//! Whole teams through `App` on a relay that enforces anonymous access
//! tokens: bootstrap, invites with registration tokens, joins, messaging
//! by handle, and what the relay keeps afterwards.
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use sotto_core::{App, AppError, KeySource, NetError, RelayTarget, TokenError};
use sotto_proto::Message as _;
use sotto_tests::{TestRelay, clock_of, contains, directory_bytes};

fn target(relay: &TestRelay) -> RelayTarget {
    RelayTarget {
        addr: relay.addr.to_string(),
        fingerprint: relay.fingerprint,
    }
}

fn key(home: &std::path::Path) -> KeySource {
    KeySource::key_file_in(home)
}

async fn tokens_relay() -> TestRelay {
    TestRelay::start_with(|c| c.tokens.require_tokens = true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_and_three_invited_members_all_message_each_other_on_a_token_relay() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let clock = clock_of(&relay.clock);
    let home = |h: &str| homes.path().join(h);
    let code = relay.bootstrap_code().unwrap();
    let mut admin = App::create_team(
        &home("admin.k"),
        key(&home("admin.k")),
        target(&relay),
        &code,
        "acme-team-x",
        "admin.k",
        clock.clone(),
    )
    .await
    .unwrap();
    // The bootstrap code works once.
    let again = App::create_team(
        &home("other"),
        key(&home("other")),
        target(&relay),
        &code,
        "x",
        "other",
        clock.clone(),
    )
    .await;
    assert!(
        matches!(again, Err(AppError::Token(TokenError::BootstrapInvalid))),
        "{:?}",
        again.err()
    );

    let mut apps = Vec::new();
    for handle in ["alice.k", "bob.k", "carol.k"] {
        let code = admin.invite(handle, 3600).await.unwrap();
        apps.push(
            App::join(&home(handle), key(&home(handle)), &code, clock.clone())
                .await
                .unwrap(),
        );
    }
    apps.push(admin);
    let handles: Vec<String> = apps.iter().map(|a| a.handle().to_owned()).collect();
    assert_eq!(apps[0].members().await.unwrap().len(), 4);

    for app in &mut apps {
        for peer in &handles {
            if peer != app.handle() {
                let text = format!("secret-text {} -> {peer}", app.handle());
                app.send(peer, &text).await.unwrap();
            }
        }
    }
    let mut long_term_keys = Vec::new();
    for app in &mut apps {
        let report = app.sync().await.unwrap();
        let mut got: Vec<String> = report.messages.iter().map(|m| m.text.clone()).collect();
        got.sort();
        let mut expected: Vec<String> = handles
            .iter()
            .filter(|h| h.as_str() != app.handle())
            .map(|h| format!("secret-text {h} -> {}", app.handle()))
            .collect();
        expected.sort();
        assert_eq!(
            got,
            expected,
            "{} got every member's message exactly once",
            app.handle()
        );
        let card = app.client().engine().own_card();
        long_term_keys.push(card.identity_key.to_bytes().to_vec());
        long_term_keys.push(card.signing_key.as_bytes().to_vec());
        long_term_keys.push(card.envelope_key.as_bytes().to_vec());
        long_term_keys.push(card.inbox_key.as_bytes().to_vec());
        long_term_keys.push(card.fallback_key.to_bytes().to_vec());
    }

    // After the whole scenario the relay's data directory holds no handle,
    // no team name, no message text and no long-term public key.
    let TestRelay { server, dir, .. } = relay;
    server.unwrap().shutdown().await;
    let raw = directory_bytes(dir.path());
    for needle in [
        "alice.k",
        "bob.k",
        "carol.k",
        "admin.k",
        "acme-team-x",
        "secret-text",
    ] {
        assert!(
            !contains(&raw, needle.as_bytes()),
            "{needle} found in the relay's data"
        );
    }
    for key in &long_term_keys {
        assert!(
            !contains(&raw, key),
            "a long-term key found in the relay's data"
        );
    }
}

#[tokio::test]
async fn an_invite_presented_to_a_different_relay_is_refused() {
    let ours = tokens_relay().await;
    let theirs = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let clock = clock_of(&ours.clock);
    let admin_home = homes.path().join("admin");
    let mut admin = App::create_team(
        &admin_home,
        key(&admin_home),
        target(&ours),
        &ours.bootstrap_code().unwrap(),
        "t",
        "admin",
        clock.clone(),
    )
    .await
    .unwrap();
    let code = admin.invite("bob", 3600).await.unwrap();
    // The same code, pointed at another relay (the address is not what
    // binds it; the pinned certificate is).
    let body = code.strip_prefix("sotto-invite:").unwrap();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut invite =
        sotto_proto::client::Invite::decode(engine.decode(body).unwrap().as_slice()).unwrap();
    invite.relay_addr = theirs.addr.to_string();
    let redirected = format!("sotto-invite:{}", engine.encode(invite.encode_to_vec()));
    let bob_home = homes.path().join("bob");
    let error = App::join(&bob_home, key(&bob_home), &redirected, clock)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, AppError::Net(NetError::FingerprintMismatch { .. })),
        "{error}"
    );
    assert!(
        error.to_string().contains("different certificate"),
        "{error}"
    );
    ours.stop().await;
    theirs.stop().await;
}
