//! A member's devices (issue 11, DESIGN "Devices") through `App`, on a
//! real relay that enforces anonymous access tokens: linking a device with
//! a link code and a confirmation code, fan-out to every device, history
//! for a new device, device invites without approval, removal with a new
//! user key, conflicting successors, re-invites, and what the relay keeps.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use sotto_core::team::TeamError;
use sotto_core::{App, AppError};
use sotto_tests::teams::{key, team, tokens_relay};
use sotto_tests::{TestRelay, clock_of, contains, directory_bytes};

/// Links a new device (in `homes/name`) to `existing`'s member and
/// approves it; returns it once it applied the member state.
async fn link(
    existing: &mut App,
    homes: &std::path::Path,
    name: &str,
    relay: &TestRelay,
    history_since_ms: Option<u64>,
) -> App {
    let code = existing.device_add().await.unwrap();
    assert!(code.relay_access, "self-service is on by default");
    let (mut new, confirm) = request_link(homes, name, &code.code, None, Some(name), relay).await;
    assert_eq!(new.awaiting_approval(), Some(confirm.as_str()));
    // Before approval it can read nothing and publish nothing.
    assert!(matches!(
        new.send("admin", "too early").await,
        Err(AppError::Team(TeamError::AwaitingApproval(_)))
    ));
    existing
        .device_approve(&confirm, history_since_ms)
        .await
        .unwrap();
    let parts = Arc::new(Mutex::new(Vec::new()));
    let seen = parts.clone();
    new.client()
        .set_history_progress(move |part, of, messages| {
            seen.lock().unwrap().push((part, of, messages))
        });
    let report = new.sync().await.unwrap();
    // The progress shown while the history arrives matches what came.
    let parts = parts.lock().unwrap().clone();
    assert_eq!(
        parts.iter().map(|(_, _, m)| m).sum::<usize>(),
        report.history_messages
    );
    assert_eq!(
        parts.last().map(|(part, of, _)| (*part, *of)),
        report.history_parts
    );
    if let Some((part, of, _)) = parts.last() {
        assert_eq!(part, of, "every part arrived: {parts:?}");
    }
    if history_since_ms.is_none() {
        assert!(parts.is_empty());
    }
    assert_eq!(new.awaiting_approval(), None, "the member state arrived");
    new
}

/// A new device in `homes/name` asks to be linked with `code` (and the
/// admin's device invite, where given); returns it and the code it shows.
async fn request_link(
    homes: &std::path::Path,
    name: &str,
    code: &str,
    admin_code: Option<&str>,
    device_name: Option<&str>,
    relay: &TestRelay,
) -> (App, String) {
    let home = homes.join(name);
    App::join_link(
        &home,
        key(&home),
        code,
        admin_code,
        device_name,
        clock_of(&relay.clock),
    )
    .await
    .unwrap()
}

/// The ID of `app`'s member's device other than `app` (there is one).
fn other_device(app: &App) -> String {
    app.devices(false)
        .unwrap()
        .into_iter()
        .find(|d| !d.this)
        .unwrap()
        .id
}

fn texts(messages: &[sotto_core::Message]) -> Vec<String> {
    messages.iter().map(|m| m.text.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_device_gets_each_message_once_and_shows_what_its_twin_sent() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    bob.sync().await.unwrap();
    let mut laptop = link(&mut alice, homes.path(), "laptop", &relay, None).await;
    let devices = alice.devices(false).unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices.iter().filter(|d| d.this).count(), 1);
    assert!(devices.iter().any(|d| d.name == "laptop"));
    assert_eq!(laptop.devices(false).unwrap().len(), 2);

    // Bob sends once: both of Alice's devices show it, once each.
    bob.send("alice", "hello both").await.unwrap();
    assert_eq!(
        bob.client().engine().devices_of("alice").len(),
        2,
        "bob encrypts to both of alice's devices"
    );
    let on_phone = alice.sync().await.unwrap();
    let on_laptop = laptop.sync().await.unwrap();
    assert_eq!(texts(&on_phone.messages), ["hello both"]);
    assert_eq!(texts(&on_laptop.messages), ["hello both"]);
    assert_eq!(on_laptop.messages[0].from, "bob");

    // Alice writes from the laptop: Bob sees one message; her phone shows
    // it as hers in the conversation with Bob.
    laptop.send("bob", "from the laptop").await.unwrap();
    let at_bob = bob.sync().await.unwrap();
    assert_eq!(texts(&at_bob.messages), ["from the laptop"]);
    assert_eq!(at_bob.messages[0].from, "alice");
    alice.sync().await.unwrap();
    let history = alice.history("bob").unwrap();
    let mine: Vec<_> = history
        .iter()
        .filter(|m| m.text == "from the laptop")
        .collect();
    assert_eq!(mine.len(), 1);
    assert!(mine[0].from_me, "a message from my other device is mine");
    assert_eq!(mine[0].peer, "bob");

    // A third member who resolves Alice for the first time finds both.
    admin.sync().await.unwrap();
    admin.send("alice", "team news").await.unwrap();
    assert_eq!(admin.client().engine().devices_of("alice").len(), 2);
    assert_eq!(texts(&laptop.sync().await.unwrap().messages), ["team news"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_with_history_ends_with_the_approvers_history_and_groups() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    for i in 0..5 {
        alice.send("bob", &format!("a{i}")).await.unwrap();
        bob.sync().await.unwrap();
        bob.send("alice", &format!("b{i}")).await.unwrap();
        alice.sync().await.unwrap();
    }
    alice
        .group_create("ops", &["bob".to_owned()], sotto_core::Rotation::default())
        .await
        .unwrap();
    bob.sync().await.unwrap();
    bob.group_send("ops", "before the laptop").await.unwrap();
    alice.sync().await.unwrap();

    let mut laptop = link(&mut alice, homes.path(), "laptop", &relay, Some(0)).await;
    let on_phone = texts(&alice.history("bob").unwrap());
    assert_eq!(on_phone.len(), 10);
    assert_eq!(texts(&laptop.history("bob").unwrap()), on_phone);
    assert!(laptop.history("bob").unwrap()[0].from_me);

    // The group came with it, and new group messages are readable on it.
    assert_eq!(laptop.groups().len(), 1);
    assert_eq!(
        texts(&laptop.group_history("ops").unwrap()),
        texts(&alice.group_history("ops").unwrap())
    );
    bob.sync().await.unwrap();
    bob.group_send("ops", "after the laptop").await.unwrap();
    let got = laptop.sync().await.unwrap();
    assert!(
        texts(&got.messages).contains(&"after the laptop".to_owned()),
        "{:?}",
        got.messages
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_invite_nobody_approves_reads_nothing_and_a_wrong_secret_is_refused() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();

    // The admin's device invite gives relay access only.
    let admin_code = admin.invite_device("alice", 3600).await.unwrap();
    let direct = App::join(
        &homes.path().join("direct"),
        key(&homes.path().join("direct")),
        &admin_code,
        clock_of(&relay.clock),
    )
    .await;
    assert!(
        matches!(
            direct,
            Err(AppError::Invite(sotto_core::team::InviteError::LinkNeeded))
        ),
        "a device invite alone is no membership"
    );
    let link_code = alice.device_add().await.unwrap();
    let (mut ghost, _confirm) = request_link(
        homes.path(),
        "ghost",
        &link_code.code,
        Some(&admin_code),
        None,
        &relay,
    )
    .await;
    // Alice sees the request but nobody approves it.
    let report = alice.sync().await.unwrap();
    assert_eq!(report.link_requests, 1);
    assert_eq!(alice.devices(true).unwrap().len(), 2);
    bob.send("alice", "for alice only").await.unwrap();
    assert_eq!(bob.client().engine().devices_of("alice").len(), 1);
    let at_ghost = ghost.sync().await.unwrap();
    assert!(at_ghost.messages.is_empty(), "{:?}", at_ghost.messages);
    assert_eq!(
        texts(&alice.sync().await.unwrap().messages),
        ["for alice only"]
    );

    // A request MACed with another secret is dropped, not listed.
    let forged = sotto_core::team::parse_link(&link_code.code, 0).unwrap();
    let code = sotto_core::team::link_code(&sotto_core::team::LinkParams {
        team_name: &forged.team_name,
        handle: &forged.handle,
        relay_addr: &forged.relay_addr,
        relay_fingerprint: forged.relay_fingerprint,
        issuer_key: forged.issuer_key,
        dir_key: forged.dir_key,
        dir_version: forged.dir_version,
        team_key: forged.team_key,
        secret: [7u8; 32], // not the secret alice's device made
        device: forged.signed_device.clone(),
        registration_token: None,
        expires_at: forged.expires_at,
    });
    let admin_code = admin.invite_device("alice", 3600).await.unwrap();
    let (_forger, confirm) = request_link(
        homes.path(),
        "forger",
        &code,
        Some(&admin_code),
        None,
        &relay,
    )
    .await;
    let report = alice.sync().await.unwrap();
    assert_eq!(report.link_requests, 0);
    assert!(report.dropped >= 1);
    assert!(matches!(
        alice.device_approve(&confirm, None).await,
        Err(AppError::NoSuchLinkRequest(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_device_loses_access_and_gets_nothing_new() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    alice
        .group_create("ops", &["bob".to_owned()], sotto_core::Rotation::default())
        .await
        .unwrap();
    bob.sync().await.unwrap();
    let mut old = link(&mut alice, homes.path(), "old-phone", &relay, None).await;
    bob.send("alice", "before").await.unwrap();
    bob.group_send("ops", "group before").await.unwrap();
    assert!(texts(&old.sync().await.unwrap().messages).contains(&"before".to_owned()));
    bob.client().engine().mark_verified("alice").unwrap();
    alice.sync().await.unwrap();

    let id = other_device(&alice);
    let removed = alice.device_remove(&id).await.unwrap();
    assert_eq!(removed.id, id);
    assert_eq!(alice.devices(false).unwrap().len(), 1);

    // Bob's next sync follows Alice's new user key (signed by the old
    // one): the removed device is gone, his verification carries over.
    bob.sync().await.unwrap();
    assert_eq!(bob.client().engine().devices_of("alice").len(), 1);
    assert!(bob.is_verified("alice").unwrap());
    bob.send("alice", "after").await.unwrap();
    bob.group_send("ops", "group after").await.unwrap();
    assert_eq!(
        texts(&alice.sync().await.unwrap().messages),
        ["after", "group after"]
    );
    // The removed device lost its relay access (its hoarded tokens died
    // with the token key), and nothing new was encrypted to it.
    let after = old.sync().await;
    assert!(
        matches!(
            after,
            Err(AppError::Token(_)) | Err(AppError::Team(TeamError::DeviceRemoved))
        ),
        "the removed device still syncs: {:?}",
        after.map(|r| r.messages)
    );
    assert!(
        old.history("bob")
            .unwrap()
            .iter()
            .all(|m| m.text != "after"),
        "nothing new reached the removed device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_successors_of_one_user_key_make_others_trust_neither() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    bob.sync().await.unwrap();
    let mut rogue = link(&mut alice, homes.path(), "rogue", &relay, None).await;
    bob.sync().await.unwrap();
    // The rogue device signs a successor of the user key it holds...
    rogue.announce_forged_succession().await.unwrap();
    bob.sync().await.unwrap();
    // ... and Alice, removing it, signs another one.
    let id = other_device(&alice);
    alice.device_remove(&id).await.unwrap();
    bob.sync().await.unwrap();
    let notices = bob.take_notices().unwrap();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("two different successors")),
        "{notices:?}"
    );
    assert!(matches!(
        bob.send("alice", "hi").await,
        Err(AppError::Team(TeamError::UserKeyConflict(h))) if h == "alice"
    ));
    assert!(bob.client().engine().devices_of("alice").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_member_shows_key_changed_and_loses_verification() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let alice = members.pop().unwrap();
    bob.send("alice", "hi").await.unwrap();
    bob.client().engine().mark_verified("alice").unwrap();
    assert!(bob.is_verified("alice").unwrap());
    let before = bob.safety_number("alice").unwrap();
    drop(alice); // every device lost

    let code = admin.invite_replace("alice", 3600).await.unwrap();
    let home = homes.path().join("alice-new");
    let mut alice = App::join(&home, key(&home), &code, clock_of(&relay.clock))
        .await
        .unwrap();
    bob.sync().await.unwrap(); // the new directory key
    bob.sync().await.unwrap(); // alice's new entry under it
    let notices = bob.take_notices().unwrap();
    assert!(
        notices.iter().any(|n| n.contains("alice's key changed")),
        "{notices:?}"
    );
    assert!(!bob.is_verified("alice").unwrap(), "verification reset");
    assert_ne!(bob.safety_number("alice").unwrap(), before);
    bob.send("alice", "welcome back").await.unwrap();
    assert_eq!(
        texts(&alice.sync().await.unwrap().messages),
        ["welcome back"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_data_links_none_of_alices_devices() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    let mut laptop = link(&mut alice, homes.path(), "laptop", &relay, Some(0)).await;
    bob.send("alice", "to both").await.unwrap();
    laptop.send("bob", "from laptop").await.unwrap();
    alice.sync().await.unwrap();
    laptop.sync().await.unwrap();
    bob.sync().await.unwrap();
    let mut keys = Vec::new();
    for device in [&mut alice, &mut laptop] {
        let card = device.client().engine().own_card();
        keys.push(card.identity_key.to_bytes().to_vec());
        keys.push(card.signing_key.as_bytes().to_vec());
        keys.push(card.envelope_key.as_bytes().to_vec());
        keys.push(card.inbox_key.as_bytes().to_vec());
        keys.push(card.fallback_key.to_bytes().to_vec());
    }
    keys.push(b"laptop".to_vec());
    keys.push(b"from laptop".to_vec());
    let TestRelay { server, dir, .. } = relay;
    server.unwrap().shutdown().await;
    let stored = directory_bytes(dir.path());
    for key in keys {
        assert!(!contains(&stored, &key), "the relay stored {key:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_approved_device_may_approve_a_link_code_another_printed() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    let mut laptop = link(&mut alice, homes.path(), "laptop", &relay, None).await;

    // The phone prints the code; the laptop approves.
    let code = alice.device_add().await.unwrap();
    let (mut tablet, confirm) = request_link(
        homes.path(),
        "tablet",
        &code.code,
        None,
        Some("tablet"),
        &relay,
    )
    .await;
    laptop.sync().await.unwrap(); // the shared secret and the request
    let pending = laptop.devices(true).unwrap();
    assert!(
        pending
            .iter()
            .any(|d| d.confirm.as_deref() == Some(confirm.as_str()))
    );
    let approved = laptop.device_approve(&confirm, None).await.unwrap();
    assert_eq!(approved.name, "tablet");
    tablet.sync().await.unwrap();
    assert_eq!(tablet.awaiting_approval(), None);
    // The phone learns of it, and no longer lists it as pending.
    alice.sync().await.unwrap();
    let on_phone = alice.devices(true).unwrap();
    assert_eq!(on_phone.len(), 3, "{on_phone:?}");
    assert!(on_phone.iter().all(|d| d.approved));
    bob.send("alice", "three devices").await.unwrap();
    for device in [&mut alice, &mut laptop, &mut tablet] {
        assert_eq!(
            texts(&device.sync().await.unwrap().messages),
            ["three devices"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_device_lists_are_refused_by_other_clients_with_a_clear_error() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    let old_laptop = link(&mut alice, homes.path(), "laptop", &relay, None).await;
    bob.send("alice", "hi").await.unwrap();
    let refused = |result: Result<sotto_core::Sent, AppError>| match result {
        Err(AppError::Team(error)) => error.to_string(),
        other => panic!("bob wrote to a forged list: {other:?}"),
    };

    // 1. A list signed by the team key (the admin's, or a relay's guess).
    let team_key = admin.team_key().unwrap();
    let forged = alice.forged_entry(Some(&team_key), 50).unwrap();
    alice.write_entry(&forged).await.unwrap();
    bob.sync().await.unwrap();
    let notices = bob.take_notices().unwrap();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("not signed by its user key")),
        "{notices:?}"
    );
    let error = refused(bob.send("alice", "to a forged list").await);
    assert!(error.contains("not signed by its user key"), "{error}");
    // Alice publishes a proper list again (version 60).
    let proper = alice.forged_entry(None, 60).unwrap();
    alice.write_entry(&proper).await.unwrap();
    bob.send("alice", "back to normal").await.unwrap();

    // 2. A stale version of a proper list (a replay).
    let stale = alice.forged_entry(None, 55).unwrap();
    alice.write_entry(&stale).await.unwrap();
    let error = refused(bob.send("alice", "to a stale list").await);
    assert!(error.contains("older than one already seen"), "{error}");
    alice.write_entry(&proper).await.unwrap();

    // 3. After a removal, the removed device's list (signed by the user
    // key it still holds, at any version), as a hostile relay would serve.
    let id = other_device(&alice);
    alice.device_remove(&id).await.unwrap();
    bob.send("alice", "after removal").await.unwrap();
    let from_removed = old_laptop.forged_entry(None, 999).unwrap();
    alice.write_entry(&from_removed).await.unwrap();
    let error = refused(bob.send("alice", "to the removed device").await);
    assert!(error.contains("older than one already seen"), "{error}");
    assert_eq!(
        bob.client().engine().devices_of("alice").len(),
        1,
        "bob still encrypts only to alice's remaining device"
    );
}

/// Issue 18 item 1: revoking a member ends the relay account of every
/// device they registered — one linked by self-service (the device that
/// minted its registration token reported it to the admin over Olm) and
/// one linked with the admin's device invite — not only their first
/// invite's, and from any device of the admin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_member_ends_the_relay_access_of_every_device_they_registered() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    let mut phone = link(&mut alice, homes.path(), "phone", &relay, None).await;
    let device_invite = admin.invite_device("alice", 3600).await.unwrap();
    let code = alice.device_add().await.unwrap();
    let (mut tablet, confirm) = request_link(
        homes.path(),
        "tablet",
        &code.code,
        Some(&device_invite),
        Some("tablet"),
        &relay,
    )
    .await;
    alice.device_approve(&confirm, None).await.unwrap();
    tablet.sync().await.unwrap();
    assert_eq!(tablet.awaiting_approval(), None);
    // The admin files the accounts Alice's device reported.
    admin.sync().await.unwrap();
    phone.sync().await.unwrap();
    // A device of the admin's linked afterwards learns them with the
    // member state, and revokes from there.
    let mut admin_laptop = link(&mut admin, homes.path(), "admin-laptop", &relay, None).await;
    assert!(admin_laptop.is_admin());

    admin_laptop.revoke("alice").await.unwrap();
    for (name, device) in [
        ("first device", &mut alice),
        ("self-service device", &mut phone),
        ("device-invite device", &mut tablet),
    ] {
        let after = device.sync().await;
        assert!(
            matches!(after, Err(AppError::Token(sotto_core::TokenError::Revoked))),
            "alice's {name} kept its relay access: {:?}",
            after.map(|r| r.messages.len())
        );
    }
    // The rest of the team carries on.
    bob.sync().await.unwrap();
    bob.send("admin", "still here").await.unwrap();
    // Every one of those accounts is in the admin log, where any admin
    // finds it: the device invite, the one alice's device reported, the
    // one the admin's own device minted for its laptop.
    let log: Vec<(String, String)> = admin
        .admin_log()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|line| match line {
            sotto_core::team::AdminLogLine::Valid(a) => Some((a.action, a.subject)),
            sotto_core::team::AdminLogLine::Refused { .. } => None,
        })
        .collect();
    for (action, subject) in [
        ("invite-device", "alice"),
        ("account-recorded", "alice"),
        ("account-recorded", "admin"),
    ] {
        assert!(
            log.contains(&(action.into(), subject.into())),
            "{action} {subject} not in {log:?}"
        );
    }
}
