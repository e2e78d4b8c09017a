//! Group conversations end to end: real relay on loopback, real clients
//! over real sled stores, one manual clock.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use sotto_core::{
    EPOCH_SECS, Epoch, HYBRID_SEAL_VERSION, PAIRWISE_SEAL_VERSION, Received, Rotation, Status,
};
use sotto_proto::{Bucket, MailboxId};
use sotto_tests::{Member, Recording, TestRelay, clock_of, contains, directory_bytes, introduce};

fn now_ms(relay: &TestRelay) -> u64 {
    clock_of(&relay.clock)()
}

/// Devices for `handles` that all have each other's cards.
fn acquainted(relay: &TestRelay, handles: &[&str]) -> Vec<Member> {
    let mut members: Vec<Member> = handles.iter().map(|h| Member::new(h, relay)).collect();
    acquaint(&mut members);
    members
}

/// Everyone has everyone's card (as the team directory gives them).
fn acquaint(members: &mut [Member]) {
    for i in 0..members.len() {
        let (left, right) = members.split_at_mut(i + 1);
        for other in right {
            introduce(&mut left[i], other);
        }
    }
}

/// Texts of the group's history, in order.
fn texts(member: &Member, group: &str) -> Vec<String> {
    member
        .client
        .engine()
        .group_history(group)
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect()
}

async fn group_send(member: &mut Member, group: &str, text: &str, now: u64) {
    member
        .client
        .engine_mut()
        .queue_group_text(group, text, now)
        .unwrap();
    member.client.deliver().await.unwrap();
}

/// `creator` makes a group of everyone in `others`, and they sync it in.
async fn make_group<'a>(
    creator: &mut Member,
    others: impl IntoIterator<Item = &'a mut Member>,
    name: &str,
    now: u64,
) {
    let others: Vec<&mut Member> = others.into_iter().collect();
    let invited: Vec<String> = others
        .iter()
        .map(|m| m.client.engine().handle().to_owned())
        .collect();
    creator
        .client
        .engine_mut()
        .create_group(name, &invited, Rotation::default(), now)
        .unwrap();
    creator.client.deliver().await.unwrap();
    for member in others {
        member.client.sync().await.unwrap();
        assert_eq!(
            member
                .client
                .engine()
                .find_group(name)
                .unwrap()
                .members
                .len(),
            invited.len() + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_members_exchange_1000_messages_each_received_once_with_one_put_per_message() {
    let relay = TestRelay::start().await;
    let mut members: Vec<Member> = (0..10)
        .map(|i| Member::new(&format!("member{i}"), &relay))
        .collect();
    acquaint(&mut members);
    let puts = || relay.server().relay().stats().puts.load(Ordering::Relaxed);
    let before = puts();
    let now = now_ms(&relay);
    let (creator, others) = members.split_first_mut().unwrap();
    make_group(creator, others.iter_mut(), "team", now).await;

    let mut duplicates = 0;
    for round in 0..10 {
        for (i, member) in members.iter_mut().enumerate() {
            for k in 0..10 {
                member
                    .client
                    .engine_mut()
                    .queue_group_text("team", &format!("{i}/{round}/{k}"), now)
                    .unwrap();
            }
            member.client.deliver().await.unwrap();
        }
        if round == 4 {
            for member in &mut members {
                duplicates += member.client.sync().await.unwrap().duplicates;
            }
        }
    }
    for member in &mut members {
        duplicates += member.client.sync().await.unwrap().duplicates;
    }

    // One put per message; besides them only the group state to 9 members
    // and each member's session key to the 9 others, over Olm.
    assert_eq!(puts() - before, 1000 + 9 + 10 * 9);
    // A member's own blobs come back once from the shared mailbox (and are
    // recognised); the cursor keeps anything from being read twice.
    assert_eq!(duplicates, 1000);
    for (i, member) in members.iter().enumerate() {
        let history = member.client.engine().group_history("team").unwrap();
        assert_eq!(history.len(), 1000, "member{i} has every message once");
        let unique: HashSet<&str> = history.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(unique.len(), 1000);
        assert!(history.iter().all(|m| m.status != Status::Waiting));
        assert_eq!(history.iter().filter(|m| m.from_me).count(), 100);
        assert!(
            history
                .iter()
                .filter(|m| !m.from_me)
                .all(|m| m.group.as_deref() == Some("team")
                    && m.text.split('/').next() == m.from.strip_prefix("member"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_misses_everything_after_removal_and_a_late_joiner_sees_only_what_follows()
{
    let relay = TestRelay::start().await;
    let mut members = acquainted(&relay, &["alice", "bob", "carol", "dave"]);
    let now = now_ms(&relay);
    let epoch = Epoch::from_unix_secs(now / 1000, EPOCH_SECS);
    let [alice, bob, carol, dave] = members.as_mut_slice() else {
        unreachable!()
    };
    make_group(alice, [&mut *bob, &mut *carol], "team", now).await;
    group_send(alice, "team", "before", now).await;
    carol.client.sync().await.unwrap();
    assert_eq!(texts(carol, "team"), ["before"]);
    let old_mailbox = carol.client.engine().group_mailbox("team", epoch).unwrap();

    alice
        .client
        .engine_mut()
        .remove_group_members("team", &["carol".into()], now)
        .unwrap();
    alice.client.deliver().await.unwrap();
    group_send(alice, "team", "after removal", now).await;
    bob.client.sync().await.unwrap();
    group_send(bob, "team", "bob after removal", now).await;

    let new_mailbox = alice.client.engine().group_mailbox("team", epoch).unwrap();
    assert_ne!(old_mailbox, new_mailbox, "the group mailbox moved");
    // Before and after hearing of the removal, carol computes neither this
    // epoch's new mailbox nor any later one.
    let cannot_locate = |carol: &Member, alice: &Member| {
        for hour in 0..3 {
            let e = Epoch::new(epoch.get() + hour);
            assert_ne!(
                carol.client.engine().group_mailbox("team", e).unwrap(),
                alice.client.engine().group_mailbox("team", e).unwrap()
            );
        }
    };
    cannot_locate(carol, alice);
    // Carol typed something before she heard: it is dropped, not sent.
    carol
        .client
        .engine_mut()
        .queue_group_text("team", "typed while removed", now)
        .unwrap();
    let report = carol.client.sync().await.unwrap();
    assert!(
        report.messages.is_empty(),
        "carol gets nothing after removal"
    );
    assert!(
        carol
            .client
            .engine()
            .outgoing(now / 1000)
            .unwrap()
            .is_empty()
    );
    let history = carol.client.engine().group_history("team").unwrap();
    assert_eq!(history.last().unwrap().status, Status::Unsent);
    assert_eq!(
        texts(carol, "team"),
        ["before", "typed while removed"],
        "what carol typed stays in her history, marked unsent"
    );
    assert!(!carol.client.engine().find_group("team").unwrap().active);
    assert!(
        carol
            .client
            .engine_mut()
            .queue_group_text("team", "still here?", now)
            .is_err()
    );
    cannot_locate(carol, alice);

    alice
        .client
        .engine_mut()
        .add_group_members("team", &["dave".into()], now)
        .unwrap();
    alice.client.deliver().await.unwrap();
    group_send(alice, "team", "welcome dave", now).await;
    dave.client.sync().await.unwrap();
    assert_eq!(texts(dave, "team"), ["welcome dave"], "only what follows");
    bob.client.sync().await.unwrap();
    assert_eq!(
        texts(bob, "team"),
        [
            "before",
            "after removal",
            "bob after removal",
            "welcome dave"
        ]
    );
    // Alice stored her own message before she read bob's: local order.
    alice.client.sync().await.unwrap();
    assert_eq!(
        texts(alice, "team"),
        [
            "before",
            "after removal",
            "welcome dave",
            "bob after removal"
        ]
    );
    // Survives a restart: groups, sessions and cursors are in the store.
    dave.reopen();
    group_send(bob, "team", "after restart", now).await;
    let report = dave.client.sync().await.unwrap();
    assert_eq!(report.messages.len(), 1);
    assert_eq!(texts(dave, "team"), ["welcome dave", "after restart"]);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_before_its_key_waits_then_decrypts_and_a_replay_is_ignored() {
    let relay = TestRelay::start().await;
    let mut alice = Member::new("alice", &relay);
    let mut bob = Member::new("bob", &relay);
    introduce(&mut alice, &mut bob);
    let now = now_ms(&relay);
    make_group(&mut alice, [&mut bob], "pair", now).await;
    let epoch = Epoch::from_unix_secs(now / 1000, EPOCH_SECS);
    let group_mailbox = alice.client.engine().group_mailbox("pair", epoch).unwrap();

    alice
        .client
        .engine_mut()
        .queue_group_text("pair", "early", now)
        .unwrap();
    let outgoing = alice.client.engine().outgoing(now / 1000).unwrap();
    assert_eq!(outgoing.len(), 2, "the session key, then the message");
    let (message, key): (Vec<_>, Vec<_>) = outgoing
        .into_iter()
        .partition(|o| o.mailbox == group_mailbox);
    let (message, key) = (&message[0], &key[0]);

    let bob_engine = bob.client.engine_mut();
    bob_engine.inboxes(now / 1000, 1).unwrap();
    let waiting = bob_engine
        .receive_in(&message.mailbox, message.blob.as_bytes(), epoch)
        .unwrap();
    let Received::Message(waiting) = waiting else {
        panic!("expected a waiting message, got {waiting:?}")
    };
    assert_eq!(waiting.status, Status::Waiting);
    let unlocked = bob_engine
        .receive_in(&key.mailbox, key.blob.as_bytes(), epoch)
        .unwrap();
    let Received::Unlocked(unlocked) = unlocked else {
        panic!("expected the message to unlock, got {unlocked:?}")
    };
    assert_eq!(unlocked.len(), 1);
    assert_eq!(unlocked[0].text, "early");
    assert_eq!(unlocked[0].status, Status::Received);
    let replay = bob_engine
        .receive_in(&message.mailbox, message.blob.as_bytes(), epoch)
        .unwrap();
    assert!(matches!(replay, Received::Duplicate), "{replay:?}");
    let history = bob_engine.group_history("pair").unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].text, "early");
    assert_eq!(history[0].status, Status::Received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_key_is_asked_for_and_a_key_from_before_joining_is_withheld() {
    let relay = TestRelay::start().await;
    let mut members = acquainted(&relay, &["alice", "bob", "dave"]);
    let now = now_ms(&relay);
    let epoch = Epoch::from_unix_secs(now / 1000, EPOCH_SECS);
    let [alice, bob, dave] = members.as_mut_slice() else {
        unreachable!()
    };
    make_group(alice, [&mut *bob], "team", now).await;

    // The session key to bob is lost on the way.
    alice
        .client
        .engine_mut()
        .queue_group_text("team", "lost key", now)
        .unwrap();
    let group_mailbox = alice.client.engine().group_mailbox("team", epoch).unwrap();
    for item in alice.client.engine().outgoing(now / 1000).unwrap() {
        if item.mailbox != group_mailbox {
            alice.client.engine_mut().sent(&item.key).unwrap();
        }
    }
    alice.client.deliver().await.unwrap();
    let report = bob.client.sync().await.unwrap();
    assert_eq!(report.messages.len(), 1);
    assert_eq!(report.messages[0].status, Status::Waiting);
    // Bob's sync asked alice for the key; alice's sync answers.
    alice.client.sync().await.unwrap();
    let report = bob.client.sync().await.unwrap();
    assert_eq!(report.messages.len(), 1);
    assert_eq!(report.messages[0].text, "lost key");
    assert_eq!(report.messages[0].status, Status::Received);
    assert_eq!(texts(bob, "team"), ["lost key"]);

    // A message queued before dave joined reaches the new mailbox after:
    // dave asks for its key and is told it is withheld.
    alice
        .client
        .engine_mut()
        .queue_group_text("team", "before dave", now)
        .unwrap();
    alice
        .client
        .engine_mut()
        .add_group_members("team", &["dave".into()], now)
        .unwrap();
    alice.client.deliver().await.unwrap();
    let report = dave.client.sync().await.unwrap();
    assert_eq!(report.messages.len(), 1);
    assert_eq!(report.messages[0].status, Status::Waiting);
    alice.client.sync().await.unwrap();
    let report = dave.client.sync().await.unwrap();
    assert_eq!(report.messages.len(), 1);
    assert_eq!(report.messages[0].status, Status::Withheld);
    assert_eq!(report.messages[0].text, "");
    let history = dave.client.engine().group_history("team").unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].status, Status::Withheld);
    // Bob, a member then, reads it.
    bob.client.sync().await.unwrap();
    assert_eq!(texts(bob, "team"), ["lost key", "before dave"]);
}

/// DESIGN §2 and §4 for groups: the group mailbox ID never repeats across
/// epochs, every group blob has the shape and bucket of the 1:1 blob with
/// the same text, and the relay's data holds no group name or handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_mailboxes_rotate_every_epoch_and_group_blobs_look_like_one_to_one_blobs() {
    let clock = sotto_relay::ManualClock::at_secs(sotto_relay::testing::T0);
    let (recording, server, dir) = Recording::start(&clock);
    let addr = sotto_core::RelayAddr {
        addr: server.local_addr(),
        fingerprint: server.fingerprint(),
    };
    let mut members: Vec<Member> = ["alice-handle", "bob-handle", "carol-handle"]
        .iter()
        .map(|h| Member::new_at(h, addr, &clock))
        .collect();
    acquaint(&mut members);
    let now = clock_of(&clock)();
    let (alice, others) = members.split_first_mut().unwrap();
    make_group(alice, others.iter_mut(), "secret-group-name", now).await;
    // Bob answers once: alice and bob then hold a pairwise post-quantum
    // secret, and their ordinary 1:1 blobs are version 4, 1 KiB.
    others[0]
        .client
        .send_text("alice-handle", "hello")
        .await
        .unwrap();
    alice.client.sync().await.unwrap();

    let mut group_mailboxes: HashMap<MailboxId, u64> = HashMap::new();
    let (mut group_sizes, mut direct_sizes) = (Vec::new(), Vec::new());
    let texts = ["hi", &"medium ".repeat(40), &"long ".repeat(400)];
    for _hour in 0..3 {
        let now = clock_of(&clock)();
        let epoch = Epoch::from_unix_secs(now / 1000, EPOCH_SECS);
        let mailbox = alice
            .client
            .engine()
            .group_mailbox("secret-group-name", epoch)
            .unwrap();
        assert!(
            group_mailboxes.insert(mailbox, epoch.get()).is_none(),
            "a group mailbox ID repeated"
        );
        for text in texts {
            let before = recording.puts().len();
            alice.client.send_text("bob-handle", text).await.unwrap();
            let direct = &recording.puts()[before..];
            assert_eq!(direct.len(), 1);
            assert_eq!(direct[0].2, PAIRWISE_SEAL_VERSION);
            direct_sizes.push(direct[0].1);

            let before = recording.puts().len();
            group_send(alice, "secret-group-name", text, now).await;
            let group: Vec<_> = recording.puts()[before..]
                .iter()
                .filter(|(m, _, _)| *m == mailbox)
                .cloned()
                .collect();
            assert_eq!(group.len(), 1, "one put per group message");
            assert_eq!(group[0].2, PAIRWISE_SEAL_VERSION, "the 1:1 header");
            group_sizes.push(group[0].1);
        }
        for member in others.iter_mut() {
            member.client.sync().await.unwrap();
        }
        clock.advance_secs(EPOCH_SECS);
    }
    assert_eq!(
        group_sizes, direct_sizes,
        "the same bucket for the same text"
    );
    assert!(group_sizes.contains(&Bucket::K1.size()) && group_sizes.contains(&Bucket::K4.size()));
    for (i, (_, size, version)) in recording.puts().into_iter().enumerate() {
        // Every member is post-quantum capable: first contacts (alice and
        // carol, bob and carol never answer each other here) are hybrid,
        // version 3; everything else has the pairwise 1:1 header.
        assert!(
            [HYBRID_SEAL_VERSION, PAIRWISE_SEAL_VERSION].contains(&version),
            "blob {i} has version {version}"
        );
        assert!(Bucket::ALL.iter().any(|b| b.size() == size));
    }
    for member in others.iter() {
        assert_eq!(
            member
                .client
                .engine()
                .group_history("secret-group-name")
                .unwrap()
                .len(),
            9
        );
    }
    server.shutdown().await;
    let raw = directory_bytes(dir.path());
    for needle in [
        b"secret-group-name".as_slice(),
        b"alice-handle",
        b"bob-handle",
        b"medium",
    ] {
        assert!(
            !contains(&raw, needle),
            "{} found in the relay's data",
            String::from_utf8_lossy(needle)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_rotate_after_the_configured_count_and_on_every_membership_change() {
    let relay = TestRelay::start().await;
    let mut members = acquainted(&relay, &["alice", "bob", "carol"]);
    let now = now_ms(&relay);
    let [alice, bob, carol] = members.as_mut_slice() else {
        unreachable!()
    };
    let rotation = Rotation {
        messages: 3,
        secs: 3600,
    };
    alice
        .client
        .engine_mut()
        .create_group("team", &["bob".into()], rotation, now)
        .unwrap();
    alice.client.deliver().await.unwrap();
    bob.client.sync().await.unwrap();
    let puts = || relay.server().relay().stats().puts.load(Ordering::Relaxed);
    // Puts per message: a new session costs its key to bob first.
    let mut costs = Vec::new();
    for i in 0..7 {
        let before = puts();
        group_send(alice, "team", &format!("m{i}"), now).await;
        costs.push(puts() - before);
    }
    assert_eq!(
        costs,
        [2, 1, 1, 2, 1, 1, 2],
        "a new session every 3 messages"
    );
    // ... and after the time limit.
    let later = now + 3600 * 1000;
    let before = puts();
    group_send(alice, "team", "an hour later", later).await;
    assert_eq!(puts() - before, 2);
    // ... and on a membership change, even mid-session.
    alice
        .client
        .engine_mut()
        .add_group_members("team", &["carol".into()], later)
        .unwrap();
    alice.client.deliver().await.unwrap();
    let before = puts();
    group_send(alice, "team", "with carol", later).await;
    assert_eq!(puts() - before, 3, "the new session's key to bob and carol");
    bob.client.sync().await.unwrap();
    carol.client.sync().await.unwrap();
    assert_eq!(texts(bob, "team").len(), 9);
    assert_eq!(texts(carol, "team"), ["with carol"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_receives_group_messages_and_follows_a_new_group_at_once() {
    let relay = TestRelay::start().await;
    let mut alice = Member::new("alice", &relay);
    let mut bob = Member::new("bob", &relay);
    introduce(&mut alice, &mut bob);
    let now = now_ms(&relay);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut client = bob.client;
    let listener = tokio::spawn(async move {
        client
            .listen(
                |m| {
                    let _ = tx.send((m.group.clone(), m.text.clone(), m.status));
                },
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
            .unwrap();
    });
    // The group is created while bob listens: he follows its mailbox at
    // once, without waiting for the next epoch.
    alice
        .client
        .engine_mut()
        .create_group("live", &["bob".into()], Rotation::default(), now)
        .unwrap();
    alice.client.deliver().await.unwrap();
    for i in 0..3 {
        group_send(&mut alice, "live", &format!("live {i}"), now).await;
    }
    // A message can overtake its key while bob resubscribes: it is shown
    // as waiting, then again once the key arrives.
    let mut got = Vec::new();
    while got.len() < 3 {
        let (group, text, status) =
            tokio::time::timeout(std::time::Duration::from_secs(20), rx.recv())
                .await
                .expect("pushed")
                .unwrap();
        assert_eq!(group.as_deref(), Some("live"));
        if status == Status::Received {
            got.push(text);
        } else {
            assert_eq!((status, text.as_str()), (Status::Waiting, ""));
        }
    }
    got.sort();
    assert_eq!(got, ["live 0", "live 1", "live 2"]);
    stop_tx.send(()).unwrap();
    listener.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_leaves_is_removed_by_the_admin_and_reads_nothing_after() {
    let relay = TestRelay::start().await;
    let mut members = acquainted(&relay, &["alice", "bob", "carol"]);
    let now = now_ms(&relay);
    let [alice, bob, carol] = members.as_mut_slice() else {
        unreachable!()
    };
    make_group(alice, [&mut *bob, &mut *carol], "team", now).await;
    group_send(alice, "team", "before", now).await;
    carol.client.sync().await.unwrap();

    // The admin cannot leave; a member can, at once on their device.
    assert!(alice.client.engine_mut().leave_group("team", now).is_err());
    let left = carol.client.engine_mut().leave_group("team", now).unwrap();
    assert!(!left.active);
    carol.client.deliver().await.unwrap();
    assert!(
        carol
            .client
            .engine_mut()
            .queue_group_text("team", "after leaving", now)
            .is_err()
    );

    // Alice's device hears of it and removes carol: a new generation.
    let generation = alice.client.engine().find_group("team").unwrap().generation;
    alice.client.sync().await.unwrap();
    let info = alice.client.engine().find_group("team").unwrap();
    assert_eq!(info.generation, generation + 1);
    assert_eq!(info.members, ["alice", "bob"]);
    group_send(alice, "team", "without carol", now).await;
    bob.client.sync().await.unwrap();
    assert_eq!(texts(bob, "team"), ["before", "without carol"]);
    assert!(carol.client.sync().await.unwrap().messages.is_empty());
    assert_eq!(texts(carol, "team"), ["before"]);
    let epoch = Epoch::from_unix_secs(now / 1000, EPOCH_SECS);
    assert_ne!(
        carol.client.engine().group_mailbox("team", epoch).unwrap(),
        alice.client.engine().group_mailbox("team", epoch).unwrap()
    );
}

/// A group's read mark is local: what I was shown stops counting as
/// unread, nothing goes to the relay, and pages read back from the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_unread_counts_follow_the_local_read_mark_and_history_reads_in_pages() {
    let relay = TestRelay::start().await;
    let mut members = acquainted(&relay, &["alice", "bob"]);
    let (alice, rest) = members.split_first_mut().unwrap();
    let bob = &mut rest[0];
    let now = now_ms(&relay);
    make_group(alice, [&mut *bob], "crew", now).await;
    for n in 1..=5 {
        group_send(alice, "crew", &format!("m{n}"), now + n).await;
    }
    bob.client.sync().await.unwrap();
    let engine = bob.client.engine();
    assert_eq!(engine.group_unread("crew").unwrap(), 5);
    let last_two = engine.group_history_page("crew", None, 2).unwrap();
    let texts: Vec<&str> = last_two.iter().map(|(_, m)| m.text.as_str()).collect();
    assert_eq!(texts, ["m4", "m5"]);
    let above = engine
        .group_history_page("crew", Some(last_two[0].0), 10)
        .unwrap();
    let texts: Vec<&str> = above.iter().map(|(_, m)| m.text.as_str()).collect();
    assert_eq!(texts, ["m1", "m2", "m3"], "the page above, oldest first");
    let outbox = bob.client.engine().outgoing(now / 1000).unwrap().len();
    assert_eq!(bob.client.engine_mut().mark_group_read("crew").unwrap(), 5);
    assert_eq!(bob.client.engine().group_unread("crew").unwrap(), 0);
    assert_eq!(
        bob.client.engine().outgoing(now / 1000).unwrap().len(),
        outbox,
        "no receipt for a group"
    );
    group_send(alice, "crew", "m6", now + 6).await;
    bob.client.sync().await.unwrap();
    assert_eq!(bob.client.engine().group_unread("crew").unwrap(), 1);
    // My own messages never count.
    group_send(bob, "crew", "mine", now + 7).await;
    assert_eq!(bob.client.engine().group_unread("crew").unwrap(), 1);
    relay.stop().await;
}
