//! Replies, reactions, edits, deletes and mentions (issue 22) through
//! `App`, on a real relay that enforces anonymous access tokens: two
//! members with two devices each, 1:1 and in a group, and a device linked
//! afterwards whose handed-over history carries every change.
#![allow(clippy::unwrap_used)]

use sotto_core::{ActionError, App, AppError, Change, EngineError, Message, Rotation};
use sotto_tests::teams::{key, team, tokens_relay};
use sotto_tests::{TestRelay, clock_of};

/// Links a new device (in `homes/name`) to `existing`'s member, with the
/// history since `history_since_ms` when given.
async fn link(
    existing: &mut App,
    homes: &std::path::Path,
    name: &str,
    relay: &TestRelay,
    history_since_ms: Option<u64>,
) -> App {
    let code = existing.device_add().await.unwrap();
    let home = homes.join(name);
    let (mut new, confirm) = App::join_link(
        &home,
        key(&home),
        &code.code,
        None,
        Some(name),
        clock_of(&relay.clock),
    )
    .await
    .unwrap();
    existing
        .device_approve(&confirm, history_since_ms)
        .await
        .unwrap();
    new.sync().await.unwrap();
    assert_eq!(new.awaiting_approval(), None);
    new
}

fn find<'a>(history: &'a [Message], id: &str) -> &'a Message {
    history.iter().find(|m| m.id == id).unwrap()
}

async fn sync_all(apps: &mut [&mut App]) {
    for app in apps.iter_mut() {
        app.sync().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_changes_reach_both_devices_of_both_members_and_only_authors_edit() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    bob.sync().await.unwrap();
    alice
        .group_create("ops", &["bob".to_owned()], Rotation::default())
        .await
        .unwrap();
    bob.sync().await.unwrap();
    // Linked after the group exists: the approving device hands it over.
    let mut alice2 = link(&mut alice, homes.path(), "alice2", &relay, None).await;
    let mut bob2 = link(&mut bob, homes.path(), "bob2", &relay, None).await;
    sync_all(&mut [&mut alice, &mut bob]).await;

    let sent = alice
        .group_send("ops", "@bob deploy on friday")
        .await
        .unwrap();
    let id = hex::encode(sent.id);
    sync_all(&mut [&mut alice2, &mut bob, &mut bob2]).await;
    for app in [&alice, &alice2, &bob, &bob2] {
        let history = app.group_history("ops").unwrap();
        let message = find(&history, &id);
        // The same ID everywhere; the mention lights up for bob only.
        assert_eq!(
            message.mentions_me,
            app.handle() == "bob",
            "{}",
            app.handle()
        );
    }

    // Bob's second device reacts and replies; every device sees both.
    bob2.change_message(&id[..8], Change::React("🚀".into()))
        .await
        .unwrap();
    let reply = bob2
        .group_send_reply("ops", "on it", Some(&sent.id))
        .await
        .unwrap();
    // Alice's second device edits her message.
    alice2
        .change_message(&id, Change::Edit("@bob deploy on monday".into()))
        .await
        .unwrap();
    sync_all(&mut [&mut alice, &mut alice2, &mut bob, &mut bob2]).await;
    for app in [&alice, &alice2, &bob, &bob2] {
        let history = app.group_history("ops").unwrap();
        let message = find(&history, &id);
        assert_eq!(message.text, "@bob deploy on monday", "{}", app.handle());
        assert!(message.edited());
        assert_eq!(message.reaction_counts(), [("🚀", 1)].into());
        let reply = find(&history, &hex::encode(reply.id));
        assert_eq!(reply.reply_to.as_deref(), Some(id.as_str()));
    }

    // Bob may not edit or delete alice's message, from either device.
    for app in [&mut bob, &mut bob2] {
        assert!(matches!(
            app.change_message(&id, Change::Edit("mine".into())).await,
            Err(AppError::Engine(EngineError::Action(
                ActionError::NotAuthor
            )))
        ));
        assert!(matches!(
            app.change_message(&id, Change::Delete).await,
            Err(AppError::Engine(EngineError::Action(
                ActionError::NotAuthor
            )))
        ));
    }

    // Deleted for everyone, from the first device.
    alice.change_message(&id, Change::Delete).await.unwrap();
    sync_all(&mut [&mut alice2, &mut bob, &mut bob2]).await;
    for app in [&alice, &alice2, &bob, &bob2] {
        let history = app.group_history("ops").unwrap();
        let message = find(&history, &id);
        assert!(message.deleted, "{}", app.handle());
        assert!(message.text.is_empty() && message.reactions.is_empty());
        // Gone from search too.
        assert!(app.search("monday", None, None, 10).unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_device_gets_replies_edits_reactions_and_deletes_with_the_history() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    bob.sync().await.unwrap();

    let one = alice.send("bob", "one").await.unwrap().id;
    let two = alice.send("bob", "two").await.unwrap().id;
    bob.sync().await.unwrap();
    bob.change_message(&hex::encode(one), Change::React("👍".into()))
        .await
        .unwrap();
    let reply = bob
        .send_reply("alice", "re two", Some(&two))
        .await
        .unwrap()
        .id;
    alice.sync().await.unwrap();
    alice
        .change_message(&hex::encode(one), Change::Edit("one, edited".into()))
        .await
        .unwrap();
    alice
        .change_message(&hex::encode(two), Change::Delete)
        .await
        .unwrap();

    let mut laptop = link(&mut alice, homes.path(), "laptop", &relay, Some(0)).await;
    let history = laptop.history("bob").unwrap();
    let first = find(&history, &hex::encode(one));
    assert_eq!(first.text, "one, edited");
    assert!(first.edited());
    assert_eq!(first.reaction_counts(), [("👍", 1)].into());
    let second = find(&history, &hex::encode(two));
    assert!(second.deleted && second.text.is_empty());
    let answer = find(&history, &hex::encode(reply));
    assert_eq!(answer.reply_to, Some(hex::encode(two)));

    // The handed-over messages can be changed from the new device.
    laptop
        .change_message(&hex::encode(reply), Change::React("❤️".into()))
        .await
        .unwrap();
    bob.sync().await.unwrap();
    let at_bob = bob.history("alice").unwrap();
    assert_eq!(
        find(&at_bob, &hex::encode(reply)).reaction_counts(),
        [("❤️", 1)].into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_says_so_takes_its_timer_from_an_admin_only() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob", "carol"]).await;
    let mut carol = members.pop().unwrap();
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    alice
        .group_create(
            "ops",
            &["bob".to_owned(), "carol".to_owned()],
            Rotation::default(),
        )
        .await
        .unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    // By default any member sets it.
    bob.set_timer(None, Some("ops"), 3600).await.unwrap();
    sync_all(&mut [&mut alice, &mut carol]).await;
    for app in [&alice, &bob, &carol] {
        assert_eq!(app.group_timer("ops").unwrap(), 3600, "{}", app.handle());
    }

    // Only alice, the group's admin, may say so.
    assert!(matches!(
        bob.group_set_timer_admins_only("ops", true).await,
        Err(AppError::Engine(EngineError::NotGroupAdmin(_)))
    ));
    let info = alice
        .group_set_timer_admins_only("ops", true)
        .await
        .unwrap();
    assert!(info.timer_admins_only);
    carol.sync().await.unwrap();
    assert!(
        carol
            .groups()
            .iter()
            .any(|g| g.name == "ops" && g.timer_admins_only)
    );

    // Bob's device has not heard yet (as a stale or modified client):
    // its timer change goes out, and carol's device ignores it.
    bob.set_timer(None, Some("ops"), 300).await.unwrap();
    assert_eq!(bob.group_timer("ops").unwrap(), 300);
    carol.sync().await.unwrap();
    assert_eq!(carol.group_timer("ops").unwrap(), 3600);
    let notices = carol.group_history("ops").unwrap();
    assert!(
        !notices.iter().any(|m| m.text.contains("5 minutes")),
        "the refused change shows nowhere: {notices:?}"
    );
    // Once bob's device knows, it refuses to send one.
    bob.sync().await.unwrap();
    assert!(
        bob.groups()
            .iter()
            .any(|g| g.name == "ops" && g.timer_admins_only)
    );
    assert!(matches!(
        bob.set_timer(None, Some("ops"), 600).await,
        Err(AppError::Engine(EngineError::GroupChange(_)))
    ));
    // The admin's change is taken by everyone.
    alice.set_timer(None, Some("ops"), 86_400).await.unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    for app in [&alice, &bob, &carol] {
        assert_eq!(app.group_timer("ops").unwrap(), 86_400, "{}", app.handle());
    }
    // And back to any member.
    alice
        .group_set_timer_admins_only("ops", false)
        .await
        .unwrap();
    sync_all(&mut [&mut bob, &mut carol]).await;
    bob.set_timer(None, Some("ops"), 7200).await.unwrap();
    sync_all(&mut [&mut alice, &mut carol]).await;
    for app in [&alice, &bob, &carol] {
        assert_eq!(app.group_timer("ops").unwrap(), 7200, "{}", app.handle());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_linked_before_a_group_exists_learn_it_and_read_it() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    bob.sync().await.unwrap();
    let mut alice2 = link(&mut alice, homes.path(), "alice2", &relay, None).await;
    let mut bob2 = link(&mut bob, homes.path(), "bob2", &relay, None).await;
    sync_all(&mut [&mut alice, &mut bob, &mut alice2, &mut bob2]).await;

    alice
        .group_create("ops", &["bob".to_owned()], Rotation::default())
        .await
        .unwrap();
    let sent = alice.group_send("ops", "first words").await.unwrap();
    sync_all(&mut [&mut alice2, &mut bob, &mut bob2]).await;
    for app in [&alice2, &bob, &bob2] {
        assert!(
            app.groups().iter().any(|g| g.name == "ops"),
            "{} never learned the group",
            app.handle()
        );
        let history = app.group_history("ops").unwrap();
        assert_eq!(
            find(&history, &hex::encode(sent.id)).text,
            "first words",
            "{}",
            app.handle()
        );
    }
    // And the linked devices speak in it.
    let from_bob2 = bob2.group_send("ops", "bob2 here").await.unwrap();
    sync_all(&mut [&mut alice, &mut alice2, &mut bob]).await;
    for app in [&alice, &alice2, &bob] {
        let history = app.group_history("ops").unwrap();
        assert_eq!(find(&history, &hex::encode(from_bob2.id)).text, "bob2 here");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_linked_after_its_member_was_a_contact_learns_a_new_group() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (_admin, mut members) = team(&relay, homes.path(), &["alice", "bob"]).await;
    let mut bob = members.pop().unwrap();
    let mut alice = members.pop().unwrap();
    bob.sync().await.unwrap();
    // alice knows bob's one device (a session and all) ...
    alice.send("bob", "hi").await.unwrap();
    bob.sync().await.unwrap();
    bob.send("alice", "hi back").await.unwrap();
    alice.sync().await.unwrap();
    // ... then bob links a second one, and alice makes a group at once.
    let mut bob2 = link(&mut bob, homes.path(), "bob2", &relay, None).await;
    alice
        .group_create("ops", &["bob".to_owned()], Rotation::default())
        .await
        .unwrap();
    let sent = alice.group_send("ops", "first words").await.unwrap();
    // alice's device wrote to bob's first device only; it hands the group
    // to bob2, which asks alice for the key of what it cannot read yet.
    for _ in 0..2 {
        sync_all(&mut [&mut bob, &mut bob2, &mut alice]).await;
    }
    bob2.sync().await.unwrap();
    for (app, device) in [(&bob, "bob"), (&bob2, "bob2")] {
        assert!(
            app.groups().iter().any(|g| g.name == "ops"),
            "{device} never learned the group"
        );
        let history = app.group_history("ops").unwrap();
        assert_eq!(find(&history, &hex::encode(sent.id)).text, "first words");
    }
}
