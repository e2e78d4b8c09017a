//! Whole teams through `App` on a relay that enforces anonymous access
//! tokens: bootstrap, invites with registration tokens, joins, messaging
//! by handle, and what the relay keeps afterwards.
#![allow(clippy::unwrap_used)]

use base64::Engine as _;
use sotto_core::{App, AppError, NetError, TokenError};
use sotto_proto::Message as _;
use sotto_tests::teams::{join, key, target, team, tokens_relay};
use sotto_tests::{TestRelay, clock_of, contains, directory_bytes};

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

/// DESIGN §6: revocation rotates `K_dir`. The remaining members move to the
/// new directory (their entries re-published under it), a member invited
/// afterwards finds everyone there, and the revoked member's old key
/// computes none of the new slot IDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_member_rotates_the_directory_key_and_the_team_carries_on_without_them() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["alice", "bob", "carol"]).await;
    let [mut alice, mut bob, mut carol] = <[App; 3]>::try_from(joined).ok().unwrap();
    alice.send("bob", "before").await.unwrap();
    let old_roster_slot = carol.roster_slot().unwrap();
    assert_eq!(carol.directory_version(), 0);

    admin.revoke("carol").await.unwrap();
    assert_eq!(admin.directory_version(), 1);
    let new_roster_slot = admin.roster_slot().unwrap();
    assert_ne!(new_roster_slot, old_roster_slot);
    for member in [&mut alice, &mut bob] {
        member.sync().await.unwrap();
        assert_eq!(member.directory_version(), 1, "{} moved", member.handle());
        assert_eq!(member.roster_slot().unwrap(), new_roster_slot);
        assert_eq!(
            member.members().await.unwrap(),
            ["admin", "alice", "bob"],
            "the new directory's roster"
        );
    }
    // Carol can neither connect nor compute the new slots.
    assert!(carol.sync().await.is_err());
    assert_eq!(carol.directory_version(), 0);
    assert_eq!(carol.roster_slot().unwrap(), old_roster_slot);

    // A member invited now joins the new directory and finds everyone.
    let mut dave = join(&mut admin, homes.path(), "dave", &relay).await;
    assert_eq!(dave.roster_slot().unwrap(), new_roster_slot);
    for peer in ["admin", "alice", "bob"] {
        dave.send(peer, &format!("hello {peer}")).await.unwrap();
    }
    for member in [&mut alice, &mut bob] {
        let report = member.sync().await.unwrap();
        let texts: Vec<&str> = report.messages.iter().map(|m| m.text.as_str()).collect();
        assert!(
            texts.contains(&format!("hello {}", member.handle()).as_str()),
            "{texts:?}"
        );
        member.send("dave", "welcome").await.unwrap();
    }
    let report = dave.sync().await.unwrap();
    assert_eq!(report.messages.len(), 2);
    // Carol was dropped from everyone's contacts; sending to her is refused.
    assert!(alice.send("carol", "still there?").await.is_err());
}

/// DESIGN §7: every message names the token period key its sender holds;
/// a member whom the relay showed another key for the same period is
/// warned (the relay could otherwise tell members apart by their keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_shown_another_token_key_for_the_same_period_is_warned() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["bob"]).await;
    let [mut bob] = <[App; 1]>::try_from(joined).ok().unwrap();
    admin.send("bob", "one").await.unwrap();
    bob.sync().await.unwrap();
    assert_eq!(
        bob.client().engine().token_key_warnings().unwrap(),
        Vec::<u64>::new()
    );
    let key_id = admin.client().engine().token_key_id().unwrap();
    assert_eq!(bob.client().engine().token_key_id(), Some(key_id));

    // Stage a relay that showed bob a different key for this period.
    bob.client()
        .engine_mut()
        .record_period_key(key_id, &[7; 32])
        .unwrap();
    admin.send("bob", "two").await.unwrap();
    let report = bob.sync().await.unwrap();
    assert_eq!(report.messages.len(), 1, "the message itself is authentic");
    assert_eq!(
        bob.client().engine().token_key_warnings().unwrap(),
        [key_id]
    );
}

/// A message to a contact costs one connection and one access token: the
/// roster, the contact's device list and the put share it (a second token
/// per command would only make the member's commands easier to count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_a_known_contact_costs_one_connection_and_one_token() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["bob"]).await;
    let [mut bob] = <[App; 1]>::try_from(joined).ok().unwrap();
    // The first message makes bob a contact (and may refill the wallet).
    admin.send("bob", "first").await.unwrap();
    let stats = relay.server.as_ref().unwrap().relay().stats();
    let connections = || stats.connections.load(std::sync::atomic::Ordering::Relaxed);
    let puts = || stats.puts.load(std::sync::atomic::Ordering::Relaxed);

    let (conns_before, puts_before) = (connections(), puts());
    let tokens_before = admin.client().tokens_left().unwrap().unwrap();
    let sent = admin.send("bob", "second").await.unwrap();
    assert!(sent.delivered);
    assert_eq!(connections() - conns_before, 1, "one connection per send");
    assert_eq!(
        tokens_before - admin.client().tokens_left().unwrap().unwrap(),
        1,
        "one access token per send"
    );
    assert!(
        puts() > puts_before,
        "the message was put on that connection"
    );

    let texts: Vec<String> = bob
        .sync()
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["first", "second"]);
}

/// Issue 18 item 2: a revoked member's groups move on without them. The
/// group's admin makes a new generation whose secret they never get, every
/// member's outbound Megolm session rotates, and no session names them as
/// entitled to its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_member_moves_their_groups_on_and_rotates_every_session() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["alice", "bob", "carol"]).await;
    let [mut alice, mut bob, mut carol] = <[App; 3]>::try_from(joined).ok().unwrap();
    alice
        .group_create(
            "ops",
            &["bob".to_owned(), "carol".to_owned()],
            sotto_core::Rotation::default(),
        )
        .await
        .unwrap();
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    bob.group_send("ops", "before").await.unwrap();
    let report = carol.sync().await.unwrap();
    assert!(report.messages.iter().any(|m| m.text == "before"));
    let (Some(old_session), sessions) = bob.client().engine().own_sessions("ops").unwrap() else {
        panic!("bob has an outbound session");
    };
    let names_carol = |sessions: &[(String, Vec<String>)]| {
        sessions
            .iter()
            .any(|(_, shared)| shared.iter().any(|h| h == "carol"))
    };
    assert!(names_carol(&sessions));

    admin.revoke("carol").await.unwrap();
    // Alice administers the group: her sync moves it on; Bob's follows.
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();
    for member in [&alice, &bob] {
        let ops = member
            .groups()
            .into_iter()
            .find(|g| g.name == "ops")
            .unwrap();
        assert_eq!(ops.generation, 2, "{}: a new generation", member.handle());
        assert_eq!(ops.members, ["alice", "bob"], "{}", member.handle());
    }
    let (current, sessions) = bob.client().engine().own_sessions("ops").unwrap();
    assert_ne!(
        current.as_ref(),
        Some(&old_session),
        "bob's session rotated"
    );
    assert!(
        !names_carol(&sessions),
        "no session names carol: {sessions:?}"
    );
    bob.group_send("ops", "after").await.unwrap();
    let (Some(new_session), sessions) = bob.client().engine().own_sessions("ops").unwrap() else {
        panic!("bob has a new outbound session");
    };
    assert_ne!(new_session, old_session);
    assert!(!names_carol(&sessions));
    let report = alice.sync().await.unwrap();
    assert!(report.messages.iter().any(|m| m.text == "after"));
}

/// Issue 18 item 5: an invite still outstanding when the directory key
/// rotates carries the old key; it is withdrawn (its registration token
/// expires at the relay, the admin is told), and a new invite carries the
/// new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_outstanding_at_a_directory_key_rotation_is_withdrawn() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["alice", "carol"]).await;
    let [mut alice, _carol] = <[App; 2]>::try_from(joined).ok().unwrap();
    let old_code = admin.invite("dave", 3600).await.unwrap();
    admin.revoke("carol").await.unwrap();
    let home = homes.path().join("dave-old");
    let refused = App::join(&home, key(&home), &old_code, clock_of(&relay.clock)).await;
    assert!(
        matches!(refused, Err(AppError::Token(_))),
        "the old invite still joins: {:?}",
        refused.map(|d| d.directory_version())
    );
    let notices = admin.take_notices().unwrap();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("dave") && n.contains("sotto invite dave")),
        "{notices:?}"
    );
    let mut dave = join(&mut admin, homes.path(), "dave", &relay).await;
    assert_eq!(
        dave.roster_slot().unwrap(),
        admin.roster_slot().unwrap(),
        "the new invite has the new key"
    );
    alice.sync().await.unwrap();
    dave.send("alice", "hi").await.unwrap();
    let report = alice.sync().await.unwrap();
    assert!(report.messages.iter().any(|m| m.text == "hi"));
}

/// Issue 18 item 3 (DESIGN §4): request inboxes rotate when a member is
/// revoked (the revoked member read every card in the old directory) and
/// on a schedule; the directory then lists the new card, and a first
/// message sent with it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_inboxes_rotate_on_revocation_and_on_a_schedule() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["alice", "bob", "carol"]).await;
    let [mut alice, mut bob, _carol] = <[App; 3]>::try_from(joined).ok().unwrap();
    let inbox = |app: &mut App| *app.client().engine().own_card().inbox_key.as_bytes();
    let admin_before = inbox(&mut admin);
    let bob_before = inbox(&mut bob);

    admin.revoke("carol").await.unwrap();
    bob.sync().await.unwrap();
    assert_ne!(inbox(&mut admin), admin_before, "the admin's moved");
    let bob_now = inbox(&mut bob);
    assert_ne!(bob_now, bob_before, "bob's moved with the directory key");
    // A member who looks Bob up now finds the new card, and a first
    // message put into the new request inbox arrives.
    let mut dave = join(&mut admin, homes.path(), "dave", &relay).await;
    dave.send("bob", "first contact").await.unwrap();
    assert_eq!(
        *dave
            .client()
            .engine()
            .contact_card("bob")
            .unwrap()
            .inbox_key
            .as_bytes(),
        bob_now
    );
    let report = bob.sync().await.unwrap();
    assert!(report.messages.iter().any(|m| m.text == "first contact"));

    // On a schedule: a week later, Alice's next sync moves hers.
    alice.sync().await.unwrap();
    let alice_before = inbox(&mut alice);
    relay
        .clock
        .advance_secs(sotto_core::REQUEST_INBOX_ROTATE_SECS);
    alice.sync().await.unwrap();
    let alice_now = inbox(&mut alice);
    assert_ne!(alice_now, alice_before, "alice's moved on schedule");
    let mut erin = join(&mut admin, homes.path(), "erin", &relay).await;
    erin.send("alice", "hello").await.unwrap();
    assert_eq!(
        *erin
            .client()
            .engine()
            .contact_card("alice")
            .unwrap()
            .inbox_key
            .as_bytes(),
        alice_now
    );
    let report = alice.sync().await.unwrap();
    assert!(report.messages.iter().any(|m| m.text == "hello"));
}

/// Issue 18 item 3: a contact who wrote first and has no reply inbox yet
/// keeps writing to the request inbox; when that inbox rotates, the
/// contact follows the new card at its next sync, so its messages still
/// arrive once the old inbox's grace period is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_still_on_the_request_inbox_follows_its_rotation() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["alice", "bob", "carol"]).await;
    let [mut alice, mut bob, _carol] = <[App; 3]>::try_from(joined).ok().unwrap();
    // Bob sends nothing back, so Alice never learns a reply inbox of his.
    bob.client().set_receipts(false);
    alice.send("bob", "early").await.unwrap();
    admin.revoke("carol").await.unwrap();
    let report = bob.sync().await.unwrap();
    assert!(report.messages.iter().any(|m| m.text == "early"));
    alice.sync().await.unwrap();
    relay
        .clock
        .advance_secs(sotto_core::REQUEST_INBOX_GRACE_SECS);
    alice.send("bob", "late").await.unwrap();
    let report = bob.sync().await.unwrap();
    assert!(
        report.messages.iter().any(|m| m.text == "late"),
        "alice wrote to bob's retired request inbox"
    );
}
