//! End to end with the real binaries: a `sotto-relay` process and `sotto`
//! commands in temp homes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn messages(output: &str) -> Vec<serde_json::Value> {
    output
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_team_from_relay_start_to_revocation() {
    let relay = start_relay();
    let homes = tempfile::tempdir().unwrap();
    let (alice, bob, carol) = (
        homes.path().join("alice"),
        homes.path().join("bob"),
        homes.path().join("carol"),
    );
    create_team(&relay, &alice);
    let bob_code = invite(&alice, "bob", "7d");
    let carol_code = invite(&alice, "carol", "7d");
    assert!(bob_code.starts_with("sotto-invite:"));
    ok(&sotto(&bob, &["join", &bob_code]));
    ok(&sotto(&carol, &["join", &carol_code]));

    let members = ok(&sotto(&bob, &["members"]));
    assert_eq!(
        members.lines().collect::<Vec<_>>(),
        vec!["alice", "bob", "carol"]
    );

    ok(&sotto(&alice, &["send", "bob", "hello bob"]));
    ok(&sotto(&bob, &["send", "alice", "hi alice"]));
    ok(&sotto(&carol, &["send", "bob", "bob, it's carol"]));

    let synced = messages(&ok(&sotto(&bob, &["sync", "--json"])));
    let mut got: Vec<(String, String)> = synced
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("alice".into(), "hello bob".into()),
            ("carol".into(), "bob, it's carol".into())
        ]
    );
    for message in &synced {
        assert!(message["id"].as_str().unwrap().len() == 32);
        assert!(message["group"].is_null());
        assert!(message["sent_at"].as_u64().unwrap() > 0);
    }
    let alice_sync = messages(&ok(&sotto(&alice, &["sync", "--json"])));
    assert_eq!(alice_sync.len(), 1);
    assert_eq!(
        (
            alice_sync[0]["from"].as_str(),
            alice_sync[0]["text"].as_str()
        ),
        (Some("bob"), Some("hi alice"))
    );
    // Nothing is delivered twice.
    assert!(messages(&ok(&sotto(&bob, &["sync", "--json"]))).is_empty());

    let history = messages(&ok(&sotto(&bob, &["history", "alice", "--json"])));
    assert_eq!(history.len(), 2);

    let number = |home: &Path, peer: &str| {
        let out = ok(&sotto(home, &["verify", peer, "--json"]));
        let json: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        json["safety_number"].as_str().unwrap().to_owned()
    };
    let from_alice = number(&alice, "bob");
    assert_eq!(
        from_alice,
        number(&bob, "alice"),
        "both sides show the same safety number"
    );
    assert_eq!(from_alice.len(), 12 * 5 + 11);
    // Both run this version: their envelopes are post-quantum hybrid.
    let verify = ok(&sotto(&alice, &["verify", "bob", "--json"]));
    let json: serde_json::Value = serde_json::from_str(verify.trim()).unwrap();
    assert_eq!(json["post_quantum"], true);
    assert!(ok(&sotto(&alice, &["verify", "bob"])).contains("post-quantum hybrid"));

    // Bob may not invite; the admin revokes bob; bob can no longer send.
    fails(&sotto(&bob, &["invite", "dave"]), 4, "only a team admin");
    ok(&sotto(&alice, &["revoke", "bob"]));
    assert_eq!(
        ok(&sotto(&carol, &["members"])).lines().collect::<Vec<_>>(),
        vec!["alice", "carol"]
    );
    // Enforced by the relay: the revoked member's account gets no tokens,
    // and the tokens it holds were issued under a key the relay retired.
    fails(
        &sotto(&bob, &["send", "alice", "still here?"]),
        4,
        "access to the relay was revoked",
    );
    fails(
        &sotto(&carol, &["send", "bob", "bye"]),
        4,
        "\"bob\" is not a member",
    );
}

#[test]
fn demo_runs_a_whole_team_and_exits_zero() {
    let output = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .arg("demo")
        .env("SOTTO_LOG", "error")
        .output()
        .unwrap();
    let stdout = ok(&output);
    assert!(
        stdout.contains("bob got from alice  \"Hi Bob! Welcome to the team.\""),
        "{stdout}"
    );
    assert!(stdout.contains("alice got from carol"), "{stdout}");
    assert!(stdout.contains("blob(s), 1024 bytes"), "{stdout}");
    assert!(
        stdout.contains("carol got from alice in #launch  \"Launch is at 10:00."),
        "{stdout}"
    );
    assert!(stdout.contains("the relay holds 1 blob(s)"), "{stdout}");
    // The second device gets the message once, as the first one does.
    for device in ["phone ", "laptop"] {
        let line = format!("alice's {device} got from bob    \"Both of your devices get this");
        assert_eq!(stdout.matches(&line).count(), 1, "{stdout}");
    }
    assert!(stdout.contains("5 messages of history"), "{stdout}");
}

/// `sotto sync` in a home with no identity, with only `env` set (no
/// `--home`): its error names the home it used.
fn home_used(env: &[(&str, &Path)], args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(args)
        .arg("sync")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v.as_os_str())))
        .env("SOTTO_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "stderr: {stderr}");
    let home = stderr
        .split("no sotto identity in ")
        .nth(1)
        .and_then(|rest| rest.split("; run").next())
        .unwrap_or_else(|| panic!("no home named in: {stderr}"));
    home.to_owned()
}

#[test]
fn the_home_is_the_flag_then_sotto_home_then_the_xdg_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (home, xdg, flag, env) = (
        dir.path().join("home"),
        dir.path().join("xdg"),
        dir.path().join("flag"),
        dir.path().join("env"),
    );
    let shown = |path: &Path| path.display().to_string();
    assert_eq!(
        home_used(&[("HOME", &home)], &[]),
        shown(&home.join(".local/share/sotto"))
    );
    assert_eq!(
        home_used(&[("HOME", &home), ("XDG_DATA_HOME", &xdg)], &[]),
        shown(&xdg.join("sotto"))
    );
    // A relative XDG_DATA_HOME is ignored, as the XDG spec says.
    assert_eq!(
        home_used(
            &[("HOME", &home), ("XDG_DATA_HOME", Path::new("relative"))],
            &[]
        ),
        shown(&home.join(".local/share/sotto"))
    );
    assert_eq!(
        home_used(
            &[
                ("HOME", &home),
                ("XDG_DATA_HOME", &xdg),
                ("SOTTO_HOME", &env)
            ],
            &[]
        ),
        shown(&env)
    );
    let flag_arg = shown(&flag);
    assert_eq!(
        home_used(
            &[
                ("HOME", &home),
                ("XDG_DATA_HOME", &xdg),
                ("SOTTO_HOME", &env)
            ],
            &["--home", &flag_arg]
        ),
        flag_arg
    );
}

#[test]
fn the_errors_people_hit_are_clear_with_distinct_exit_codes() {
    let relay = start_relay();
    let homes = tempfile::tempdir().unwrap();
    let admin = homes.path().join("admin");

    // A certificate fingerprint that is not the relay's.
    let mut wrong = relay.fingerprint.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    fails(
        &sotto(
            &admin,
            &[
                "team",
                "create",
                &relay.bootstrap,
                "--handle",
                "alice",
                "--relay",
                &relay.addr,
                "--fingerprint",
                &wrong,
            ],
        ),
        3,
        "different certificate",
    );
    create_team(&relay, &admin);

    // Not yet joined.
    let nobody = homes.path().join("nobody");
    fails(&sotto(&nobody, &["sync"]), 5, "sotto join");

    // Unknown handle.
    fails(
        &sotto(&admin, &["send", "zed", "hello?"]),
        4,
        "\"zed\" is not a member",
    );

    // Used and expired invites.
    let code = invite(&admin, "bob", "7d");
    ok(&sotto(&homes.path().join("bob"), &["join", &code]));
    fails(
        &sotto(&homes.path().join("bob2"), &["join", &code]),
        4,
        "already used",
    );
    // Two seconds: with one, the relay's clock may already have reached the
    // expiry when it mints the token (it refuses a past expiry).
    let short = invite(&admin, "carol", "2s");
    std::thread::sleep(std::time::Duration::from_millis(3100));
    fails(
        &sotto(&homes.path().join("carol"), &["join", &short]),
        4,
        "expired",
    );
    fails(
        &sotto(&homes.path().join("x"), &["join", "not-a-code"]),
        4,
        "not a sotto invite code",
    );

    // A wrong store passphrase.
    let dave_home = homes.path().join("dave");
    let dave_code = invite(&admin, "dave", "7d");
    let with_passphrase = |home: &Path, passphrase: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sotto"))
            .arg("--home")
            .arg(home)
            .args(args)
            .env("SOTTO_PASSPHRASE", passphrase)
            .env("SOTTO_LOG", "error")
            .output()
            .unwrap()
    };
    ok(&with_passphrase(
        &dave_home,
        "correct horse",
        &["join", &dave_code],
    ));
    ok(&with_passphrase(&dave_home, "correct horse", &["whoami"]));
    fails(
        &with_passphrase(&dave_home, "wrong horse", &["sync"]),
        5,
        "passphrase is wrong",
    );

    // Usage errors.
    fails(
        &sotto(&admin, &["invite", "erin", "--expires", "soon"]),
        2,
        "not a duration",
    );

    // The relay is gone.
    drop(relay);
    fails(&sotto(&admin, &["sync"]), 3, "cannot reach the relay");
}

#[test]
fn interactive_sas_verification_through_the_relay() {
    let (_relay, _homes, alice, bob) = team_of_two();
    verify_both_by_sas(&alice, &bob);
    let status = |home: &Path, peer: &str| {
        let out = ok(&sotto(home, &["verify", peer, "--json"]));
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["verified"].clone()
    };
    assert_eq!(status(&alice, "bob"), true);
    assert_eq!(status(&bob, "alice"), true);
}

#[test]
fn listen_prints_messages_as_they_arrive_and_reconnects_after_the_relay_restarts() {
    use std::sync::mpsc;
    let (relay, _homes, alice, bob) = team_of_two();

    let mut listener = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .arg("--home")
        .arg(&bob)
        .args(["listen", "--json"])
        .env("SOTTO_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = listener.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let next_text = |lines: &mpsc::Receiver<String>| {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a message line");
        serde_json::from_str::<serde_json::Value>(&line).unwrap()["text"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    ok(&sotto(&alice, &["send", "bob", "one"]));
    assert_eq!(next_text(&lines), "one");
    // The relay goes away and comes back; listen reconnects by itself.
    let relay = relay.restart();
    ok(&sotto(&alice, &["send", "bob", "two"]));
    assert_eq!(next_text(&lines), "two");
    let _ = listener.kill();
    let _ = listener.wait();
    drop(relay);
}

/// Issue "prove it": a client killed (SIGKILL) at varying points of a sync
/// loses no message and shows none twice.
#[test]
fn a_client_killed_during_sync_loses_nothing_and_shows_nothing_twice() {
    let (_relay, _homes, alice, bob) = team_of_two();
    let texts: Vec<String> = (0..12).map(|n| format!("message {n}")).collect();
    for text in &texts {
        ok(&sotto(&alice, &["send", "bob", text]));
    }

    let mut shown: Vec<String> = Vec::new();
    // An uninterrupted sync takes about half a second here: these points
    // fall before, during and after its fetch, store and ack.
    for kill_after_ms in [0u64, 40, 80, 120, 200, 300, 400, 500] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
            .arg("--home")
            .arg(&bob)
            .args(["sync", "--json"])
            .env("SOTTO_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(kill_after_ms));
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if let Ok(message) = serde_json::from_str::<serde_json::Value>(line) {
                shown.push(message["text"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    // A sync that is not interrupted brings in whatever is left.
    for message in messages(&ok(&sotto(&bob, &["sync", "--json"]))) {
        shown.push(message["text"].as_str().unwrap().to_owned());
    }
    // Nothing is shown twice. (A sync killed after storing but before
    // printing shows nothing; the message is in the history all the same.)
    let mut sorted = shown.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        shown.len(),
        "a message was shown twice: {shown:?}"
    );
    assert!(shown.iter().all(|text| texts.contains(text)), "{shown:?}");
    let history: Vec<String> = messages(&ok(&sotto(&bob, &["history", "alice", "--json"])))
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        history, texts,
        "the history holds each message once, in order"
    );
}

/// DESIGN §8: nothing typed is lost while the relay is down.
#[test]
fn a_message_typed_while_the_relay_is_down_is_queued_and_delivered_later() {
    let (relay, _homes, alice, bob) = team_of_two();
    ok(&sotto(&alice, &["send", "bob", "before"]));

    // The relay stops; alice keeps typing.
    let mut relay = relay;
    relay.stop();
    let queued = ok(&sotto(
        &alice,
        &["send", "bob", "while the relay was down", "--json"],
    ));
    let queued: serde_json::Value = serde_json::from_str(queued.trim()).unwrap();
    assert_eq!(queued["status"], "queued");

    // The relay is back: the next sync sends what was queued.
    let _relay = relay.start_again();
    ok(&sotto(&alice, &["sync"]));
    let texts: Vec<String> = messages(&ok(&sotto(&bob, &["sync", "--json"])))
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, vec!["before", "while the relay was down"]);
}

#[test]
fn groups_from_creation_to_removal_through_the_cli() {
    let (_relay, homes, alice, bob) = team_of_two();
    let carol = homes.path().join("carol");
    let code = invite(&alice, "carol", "7d");
    ok(&sotto(&carol, &["join", &code]));

    let created = messages(&ok(&sotto(
        &alice,
        &[
            "--json",
            "group",
            "create",
            "ops",
            "bob",
            "carol",
            "--rotate-messages",
            "50",
        ],
    )));
    assert_eq!(created[0]["group"], "ops");
    assert_eq!(
        created[0]["members"],
        serde_json::json!(["alice", "bob", "carol"])
    );
    assert_eq!(created[0]["admins"], serde_json::json!(["alice"]));
    let sent = messages(&ok(&sotto(
        &alice,
        &["--json", "group", "send", "ops", "hello ops"],
    )));
    assert_eq!(sent[0]["status"], "sent");

    for home in [&bob, &carol] {
        let synced = messages(&ok(&sotto(home, &["--json", "sync"])));
        let texts: Vec<_> = synced.iter().filter(|m| m["group"] == "ops").collect();
        assert_eq!(texts.len(), 1, "{synced:?}");
        assert_eq!(texts[0]["from"], "alice");
        assert_eq!(texts[0]["text"], "hello ops");
    }
    let listed = messages(&ok(&sotto(&bob, &["--json", "group", "list"])));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["active"], true);

    // Only the admin changes the membership.
    fails(
        &sotto(&bob, &["group", "remove", "ops", "carol"]),
        4,
        "only the admins",
    );
    fails(
        &sotto(&bob, &["group", "send", "nosuch", "hi"]),
        4,
        "no group",
    );

    ok(&sotto(&alice, &["group", "remove", "ops", "carol"]));
    ok(&sotto(&alice, &["group", "send", "ops", "without carol"]));
    ok(&sotto(&bob, &["group", "send", "ops", "bob too"]));
    let carol_sync = messages(&ok(&sotto(&carol, &["--json", "sync"])));
    assert!(
        carol_sync.iter().all(|m| m["group"] != "ops"),
        "{carol_sync:?}"
    );
    let carol_groups = messages(&ok(&sotto(&carol, &["--json", "group", "list"])));
    assert_eq!(carol_groups[0]["active"], false);
    fails(
        &sotto(&carol, &["group", "send", "ops", "let me in"]),
        4,
        "no longer a member",
    );

    ok(&sotto(&alice, &["sync"]));
    let history = messages(&ok(&sotto(&alice, &["--json", "group", "history", "ops"])));
    let texts: Vec<&str> = history
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello ops", "without carol", "bob too"]);
    assert!(history.iter().all(|m| m["group"] == "ops"));
    let human = ok(&sotto(&alice, &["group", "history", "ops"]));
    assert!(human.contains("#ops bob: bob too"), "{human}");

    // A member leaves; the admin's next sync removes them.
    fails(
        &sotto(&alice, &["group", "leave", "ops"]),
        4,
        "you administer",
    );
    let left = messages(&ok(&sotto(&bob, &["--json", "group", "leave", "ops"])));
    assert_eq!(left[0]["active"], false);
    ok(&sotto(&alice, &["sync"]));
    let groups = messages(&ok(&sotto(&alice, &["--json", "group", "list"])));
    assert_eq!(groups[0]["members"], serde_json::json!(["alice"]));
}

#[test]
fn a_second_device_linked_approved_and_removed_through_the_cli() {
    let (_relay, homes, alice, bob) = team_of_two();
    let laptop = homes.path().join("alice-laptop");
    let link = ok(&sotto(&alice, &["device", "add"]));
    let link = link.trim();
    assert!(link.starts_with("sotto-link:"), "{link}");
    let joined = messages(&ok(&sotto(
        &laptop,
        &["--json", "join", link, "--name", "laptop"],
    )));
    let confirm = joined[0]["confirm"].as_str().unwrap().to_owned();
    assert_eq!(confirm.len(), 9, "{confirm}");
    // Waiting: the request is listed with the code it shows.
    let pending = messages(&ok(&sotto(&alice, &["--json", "devices", "--pending"])));
    assert!(
        pending.iter().any(|d| d["confirm"] == confirm.as_str()),
        "{pending:?}"
    );
    fails(
        &sotto(&alice, &["device", "approve", "0000-0000"]),
        4,
        "no new device waiting",
    );
    ok(&sotto(
        &alice,
        &["device", "approve", &confirm, "--history", "30d"],
    ));
    ok(&sotto(&laptop, &["sync"]));
    let devices = messages(&ok(&sotto(&laptop, &["--json", "devices"])));
    assert_eq!(devices.len(), 2, "{devices:?}");
    assert_eq!(devices.iter().filter(|d| d["this"] == true).count(), 1);
    assert!(devices.iter().any(|d| d["name"] == "laptop"));

    // Bob sends once; both of alice's devices show it once.
    ok(&sotto(&bob, &["send", "alice", "to both"]));
    for home in [&alice, &laptop] {
        let got = messages(&ok(&sotto(home, &["--json", "sync"])));
        let texts: Vec<_> = got.iter().filter(|m| m["text"] == "to both").collect();
        assert_eq!(texts.len(), 1, "{got:?}");
        assert_eq!(texts[0]["from"], "bob");
    }
    // The laptop writes; bob sees one message from alice.
    ok(&sotto(&laptop, &["send", "bob", "from the laptop"]));
    let at_bob = messages(&ok(&sotto(&bob, &["--json", "sync"])));
    assert_eq!(at_bob.len(), 1, "{at_bob:?}");
    assert_eq!(at_bob[0]["from"], "alice");

    // Removal from the first device.
    let laptop_id = devices.iter().find(|d| d["name"] == "laptop").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    fails(
        &sotto(&laptop, &["device", "remove", &laptop_id]),
        4,
        "device you are using",
    );
    ok(&sotto(&alice, &["device", "remove", &laptop_id]));
    let left = messages(&ok(&sotto(&alice, &["--json", "devices"])));
    assert_eq!(left.len(), 1, "{left:?}");
    ok(&sotto(&bob, &["send", "alice", "after removal"]));
    let got = messages(&ok(&sotto(&alice, &["--json", "sync"])));
    assert!(got.iter().any(|m| m["text"] == "after removal"), "{got:?}");
    let removed = sotto(&laptop, &["--json", "sync"]);
    let shown = String::from_utf8_lossy(&removed.stdout);
    assert!(!shown.contains("after removal"), "{shown}");
}

#[test]
fn revoke_says_at_once_which_outstanding_invites_it_withdrew() {
    let (_relay, _homes, alice, _bob) = team_of_two();
    let _code = invite(&alice, "carol", "7d");
    let out = sotto(&alice, &["revoke", "bob"]);
    let stdout = ok(&out);
    assert!(stdout.contains("bob was removed"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the invite for carol") && stderr.contains("withdrawn"),
        "{stderr}"
    );
}
