//! Replies, reactions, edits, deletes, mentions, search and export through
//! the real binaries: a `sotto-relay` process and `sotto` commands in temp
//! homes, alice with two devices (issue 22).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::path::Path;
use std::process::Stdio;

fn lines(output: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `--json` sync of `home`: (new messages, updated messages).
fn sync(home: &Path) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let all = lines(&ok(&sotto(home, &["--json", "sync"])));
    let (updated, new): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|l| l.get("updated").is_some());
    (
        new,
        updated.into_iter().map(|l| l["updated"].clone()).collect(),
    )
}

/// The message `id` in `home`'s history `args` (`["history", "bob"]`…).
fn in_history(home: &Path, args: &[&str], id: &str) -> serde_json::Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    lines(&ok(&sotto(home, &full)))
        .into_iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {args:?}"))
}

/// Links a second device of alice's in `laptop`.
fn link_laptop(alice: &Path, laptop: &Path) {
    let link = ok(&sotto(alice, &["device", "add"]));
    let joined = lines(&ok(&sotto(
        laptop,
        &["--json", "join", link.trim(), "--name", "laptop"],
    )));
    let confirm = joined[0]["confirm"].as_str().unwrap().to_owned();
    ok(&sotto(alice, &["device", "approve", &confirm]));
    ok(&sotto(laptop, &["sync"]));
}

#[test]
fn reply_react_edit_delete_reach_both_of_alices_devices_and_bob() {
    let (_relay, homes, alice, bob) = team_of_two();
    let laptop = homes.path().join("alice-laptop");
    link_laptop(&alice, &laptop);

    let sent = lines(&ok(&sotto(&alice, &["--json", "send", "bob", "hello bob"])));
    let id = sent[0]["id"].as_str().unwrap().to_owned();
    let (new, _) = sync(&bob);
    assert_eq!(new[0]["id"], id.as_str(), "the same ID on the recipient");
    let (new, _) = sync(&laptop);
    assert_eq!(new[0]["id"], id.as_str(), "the same ID on my other device");

    // A reply, by the ID's start as `sotto history` shows it.
    let human = ok(&sotto(&bob, &["history", "alice"]));
    assert!(human.contains(&id[..8]), "{human}");
    ok(&sotto(
        &bob,
        &["send", "alice", "--reply-to", &id[..8], "hi back"],
    ));
    for home in [&alice, &laptop] {
        let (new, _) = sync(home);
        assert_eq!(new[0]["reply_to"], id.as_str(), "{new:?}");
        assert_eq!(new[0]["text"], "hi back");
    }

    // A reaction shows on every device; the same one again takes it back.
    ok(&sotto(&bob, &["react", &id, "👍"]));
    for home in [&alice, &laptop] {
        let (_, updated) = sync(home);
        assert_eq!(updated[0]["reactions"]["👍"], 1, "{updated:?}");
    }
    ok(&sotto(&bob, &["react", &id, "👍"]));
    sync(&alice);
    assert_eq!(
        in_history(&alice, &["history", "bob"], &id)["reactions"],
        serde_json::json!({})
    );
    fails(&sotto(&bob, &["react", &id, "👍👍"]), 4, "one emoji");

    // The author edits from the laptop: bob and alice's phone see it.
    ok(&sotto_stdin(&laptop, &["edit", &id], "hello, bob!\n"));
    for (home, with) in [(&bob, "alice"), (&alice, "bob")] {
        sync(home);
        let message = in_history(home, &["history", with], &id);
        assert_eq!(message["text"], "hello, bob!");
        assert_eq!(message["edited"], true);
    }
    // Bob may not edit or delete alice's message; nothing changes.
    fails(
        &sotto_stdin(&bob, &["edit", &id], "mine now"),
        4,
        "only its author",
    );
    fails(&sotto(&bob, &["delete", &id]), 4, "only its author");
    fails(
        &sotto(&bob, &["delete", "00112233"]),
        4,
        "no message with ID",
    );

    // Deleted for everyone: a stub everywhere, the text gone.
    ok(&sotto(&alice, &["delete", &id]));
    for (home, with) in [(&bob, "alice"), (&laptop, "bob")] {
        sync(home);
        let message = in_history(home, &["history", with], &id);
        assert_eq!(message["deleted"], true);
        assert_eq!(message["text"], "");
        let human = ok(&sotto(home, &["history", with]));
        assert!(human.contains("message deleted"), "{human}");
        assert!(!human.contains("hello, bob!"), "{human}");
    }
}

#[test]
fn group_mentions_reactions_search_and_export() {
    let (_relay, homes, alice, bob) = team_of_two();
    ok(&sotto(&alice, &["group", "create", "ops", "bob"]));
    ok(&sotto(&bob, &["sync"]));
    let sent = lines(&ok(&sotto(
        &alice,
        &[
            "--json",
            "group",
            "send",
            "ops",
            "@bob please deploy friday",
        ],
    )));
    let id = sent[0]["id"].as_str().unwrap().to_owned();
    ok(&sotto(
        &alice,
        &["group", "send", "ops", "lunch? (not for @bobby)"],
    ));
    let (new, _) = sync(&bob);
    let texts: Vec<_> = new
        .iter()
        .map(|m| (m["text"].clone(), m["mentions_me"].clone()))
        .collect();
    assert_eq!(
        texts,
        [
            ("@bob please deploy friday".into(), true.into()),
            ("lunch? (not for @bobby)".into(), false.into())
        ]
    );
    ok(&sotto(
        &bob,
        &["group", "send", "ops", "--reply-to", &id, "on it"],
    ));
    ok(&sotto(&bob, &["react", &id, "🚀"]));
    let (new, updated) = sync(&alice);
    assert_eq!(new[0]["reply_to"], id.as_str());
    assert_eq!(updated[0]["reactions"]["🚀"], 1);
    // Edits by the author reach the group.
    ok(&sotto_stdin(
        &alice,
        &["edit", &id],
        "@bob please deploy monday",
    ));
    sync(&bob);
    assert_eq!(
        in_history(&bob, &["group", "history", "ops"], &id)["text"],
        "@bob please deploy monday"
    );

    // Search: word prefixes, newest first, any query text is safe.
    let found = lines(&ok(&sotto(&bob, &["--json", "search", "depl mon"])));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["id"], id.as_str());
    assert!(lines(&ok(&sotto(&bob, &["--json", "search", "friday"]))).is_empty());
    for odd in ["\"", ".*", "(", "[a-z]+", "💥", "' OR 1=1 --"] {
        ok(&sotto(&bob, &["--json", "search", odd]));
    }
    let scoped = lines(&ok(&sotto(
        &bob,
        &["--json", "search", "on", "--group", "ops"],
    )));
    assert_eq!(scoped[0]["text"], "on it", "newest first: {scoped:?}");
    assert!(
        lines(&ok(&sotto(
            &bob,
            &["--json", "search", "deploy", "--with", "alice"]
        )))
        .is_empty()
    );

    // Export: every readable message, no key material.
    let jsonl = lines(&ok(&sotto(
        &bob,
        &["export", "--group", "ops", "--format", "jsonl"],
    )));
    assert_eq!(jsonl.len(), 3, "{jsonl:?}");
    let file = homes.path().join("ops.md");
    ok(&sotto(
        &bob,
        &[
            "export",
            "--format",
            "markdown",
            "--output",
            file.to_str().unwrap(),
        ],
    ));
    let markdown = std::fs::read_to_string(&file).unwrap();
    assert!(markdown.contains("## #ops"), "{markdown}");
    assert!(markdown.contains("deploy monday"), "{markdown}");
    assert!(markdown.contains("_(edited)_"), "{markdown}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the export is private");
    }
    // The store key (as bytes or hex) is in neither export.
    let key_file = std::fs::read(bob.join("store.key")).unwrap();
    assert!(key_file.len() >= 16);
    let all_jsonl = ok(&sotto(&bob, &["export", "--format", "jsonl"]));
    for export in [markdown.as_bytes(), all_jsonl.as_bytes()] {
        assert!(!export.windows(16).any(|w| w == &key_file[..16]));
        let hex_key = hex::encode(&key_file[..16]);
        assert!(!String::from_utf8_lossy(export).contains(&hex_key));
    }
    let future = lines(&ok(&sotto(&bob, &["export", "--since", "9999-01-01"])));
    assert!(future.is_empty());
    fails(
        &sotto(&bob, &["export", "--since", "yesterday"]),
        2,
        "not a date",
    );
}

#[test]
fn changes_run_through_the_owner_while_listen_holds_the_profile() {
    let (_relay, _homes, alice, bob) = team_of_two();
    let sent = lines(&ok(&sotto(&alice, &["--json", "send", "bob", "ping"])));
    let id = sent[0]["id"].as_str().unwrap().to_owned();
    sync(&bob);
    let mut listener = command(&bob, &["listen", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("bob's listen owns the profile", || {
        bob.join("control.sock").exists()
    });
    // Through the owner: the reaction, and a refused edit.
    ok(&sotto(&bob, &["react", &id, "👀"]));
    fails(
        &sotto_stdin(&bob, &["edit", &id], "x"),
        4,
        "only its author",
    );
    let _ = listener.kill();
    let _ = listener.wait();
    let (_, updated) = sync(&alice);
    assert_eq!(updated[0]["reactions"]["👀"], 1, "{updated:?}");
}

#[test]
fn disappear_sets_a_timer_both_sides_see_and_messages_carry_their_expiry() {
    let (_relay, _homes, alice, bob) = team_of_two();
    ok(&sotto(&alice, &["disappear", "bob", "1h"]));
    let (new, _) = sync(&bob);
    assert_eq!(
        new[0]["text"], "set disappearing messages to 1 hour",
        "{new:?}"
    );
    assert_eq!(new[0]["from"], "alice");
    let sent = lines(&ok(&sotto(&alice, &["--json", "send", "bob", "brief"])));
    let id = sent[0]["id"].as_str().unwrap().to_owned();
    sync(&bob);
    let message = in_history(&bob, &["history", "alice"], &id);
    let sent_at = message["sent_at"].as_u64().unwrap();
    assert_eq!(message["expires_at"].as_u64(), Some(sent_at + 3_600_000));
    fails(
        &sotto(&alice, &["disappear", "bob", "10s"]),
        4,
        "5 minutes to 4 weeks",
    );
    ok(&sotto(&bob, &["disappear", "alice", "off"]));
    sync(&alice);
    let sent = lines(&ok(&sotto(&alice, &["--json", "send", "bob", "stays"])));
    let id = sent[0]["id"].as_str().unwrap().to_owned();
    sync(&bob);
    assert!(in_history(&bob, &["history", "alice"], &id)["expires_at"].is_null());
}

#[test]
fn group_set_timer_admins_only_is_the_admins_and_members_then_may_not_set_the_timer() {
    let (_relay, _homes, alice, bob) = team_of_two();
    ok(&sotto(&alice, &["group", "create", "ops", "bob"]));
    ok(&sotto(&bob, &["sync"]));
    fails(
        &sotto(&bob, &["group", "set", "ops", "--timer-admins-only", "on"]),
        4,
        "admin",
    );
    let set = lines(&ok(&sotto(
        &alice,
        &["--json", "group", "set", "ops", "--timer-admins-only", "on"],
    )));
    assert_eq!(set[0]["timer_admins_only"], true, "{set:?}");
    ok(&sotto(&bob, &["sync"]));
    let listed = lines(&ok(&sotto(&bob, &["--json", "group", "list"])));
    assert_eq!(listed[0]["timer_admins_only"], true, "{listed:?}");
    fails(
        &sotto(&bob, &["disappear", "--group", "ops", "1h"]),
        4,
        "only an admin of this group may set its timer",
    );
    ok(&sotto(&alice, &["disappear", "--group", "ops", "1h"]));
}
