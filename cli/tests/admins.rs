//! `sotto admin` end to end with the real binaries (issue 18 item 15): a
//! second admin named from the command line invites and revokes through
//! the daemon that owns their profile, `sotto admin log` shows each
//! action with its actor, a member cannot read it, and the last admin
//! stays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Stdio};

/// A `sotto daemon` owning a home until dropped.
struct Daemon(Child);

impl Daemon {
    fn start(home: &Path) -> Daemon {
        let child = command(home, &["daemon"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eventually("the daemon's control socket", || {
            UnixStream::connect(home.join("control.sock")).is_ok()
        });
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json_lines(output: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_second_admin_named_from_the_cli_invites_and_revokes_through_its_daemon() {
    let relay = start_relay();
    let homes = tempfile::tempdir().unwrap();
    let home = |h: &str| homes.path().join(h);
    let (alice, bob, carol, dave) = (home("alice"), home("bob"), home("carol"), home("dave"));
    create_team(&relay, &alice);
    ok(&sotto(&bob, &["join", &invite(&alice, "bob", "7d")]));
    ok(&sotto(&carol, &["join", &invite(&alice, "carol", "7d")]));
    assert_eq!(ok(&sotto(&alice, &["admin", "list"])).trim(), "alice");

    // A member reads no admin log and names no admin.
    fails(&sotto(&bob, &["admin", "log"]), 4, "only a team admin");
    fails(
        &sotto(&bob, &["admin", "add", "carol"]),
        4,
        "only a team admin",
    );

    let added = ok(&sotto(&alice, &["admin", "add", "bob"]));
    assert!(added.contains("bob is now a team admin"), "{added}");
    assert_eq!(
        ok(&sotto(&carol, &["admin", "list"]))
            .lines()
            .collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    // Bob's device takes the grant at its sync; from then on a daemon
    // owns bob's profile and every admin command runs through it.
    let synced = sotto(&bob, &["sync"]);
    ok(&synced);
    assert!(
        String::from_utf8_lossy(&synced.stderr).contains("made you a team admin"),
        "{synced:?}"
    );
    let _daemon = Daemon::start(&bob);
    let code = ok(&sotto(&bob, &["invite", "dave"])).trim().to_owned();
    assert!(code.starts_with("sotto-invite:"), "{code}");
    ok(&sotto(&dave, &["join", &code]));
    ok(&sotto(&bob, &["revoke", "carol"]));
    fails(
        &sotto(&carol, &["send", "alice", "still here?"]),
        4,
        "access to the relay was revoked",
    );
    // Bob removes alice's admin role; the last admin (bob) stays.
    ok(&sotto(&bob, &["admin", "remove", "alice"]));
    fails(&sotto(&bob, &["admin", "remove", "bob"]), 4, "last admin");
    // Alice's device steps down once it reads the new roster: after its
    // sync (the revocation moved the directory to a key it gets there).
    ok(&sotto(&alice, &["sync"]));
    fails(&sotto(&alice, &["admin", "log"]), 4, "only a team admin");
    fails(&sotto(&alice, &["invite", "erin"]), 4, "only a team admin");

    let log = json_lines(&ok(&sotto(&bob, &["admin", "log", "--json"])));
    let seen: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|e| {
            assert_eq!(e["valid"], true, "{e}");
            (
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["subject"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("bob", "admin-remove", "alice"),
            ("bob", "dir-key-rotated", "version 1"),
            ("bob", "revoke", "carol"),
            ("bob", "invite", "dave"),
            ("alice", "admin-add", "bob"),
            ("alice", "invite", "carol"),
            ("alice", "invite", "bob"),
            ("alice", "team-created", "alice"),
        ],
        "newest first, each with its actor"
    );
    let human = ok(&sotto(&bob, &["admin", "log"]));
    let first = human.lines().next().unwrap();
    assert!(first.starts_with("#7  "), "{human}");
    assert!(first.ends_with("UTC  bob  admin-remove alice"), "{human}");
}
