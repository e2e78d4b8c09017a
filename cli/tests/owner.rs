//! One owner per profile, end to end with the real binaries: `sotto
//! listen` / `sotto daemon` own a home, other commands run through them,
//! and the control socket speaks JSON-RPC 2.0 (docs/CLIENT_API.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A long-running `sotto` (listen or daemon) whose stdout lines are
/// collected as they come.
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Where its stderr goes, to show when a test fails.
    stderr: tempfile::NamedTempFile,
}

impl Running {
    fn start(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut command = command(home, args);
        for (key, value) in env {
            command.env(key, value);
        }
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr.reopen().unwrap())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.unwrap()).is_err() {
                    return;
                }
            }
        });
        // It owns the home once its socket answers.
        eventually("the owner's control socket", || {
            UnixStream::connect(home.join("control.sock")).is_ok()
        });
        Running {
            child,
            lines,
            stderr,
        }
    }

    fn next_json(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|error| {
                panic!(
                    "a line from the owner: {error}; its stderr:\n{}",
                    std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
                )
            });
        serde_json::from_str(&line).unwrap()
    }

    fn signal(&mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON-RPC client on the control socket.
struct Rpc {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    notifications: std::collections::VecDeque<Value>,
}

impl Rpc {
    fn connect(home: &Path) -> Rpc {
        let stream = UnixStream::connect(home.join("control.sock")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Rpc {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            next_id: 1,
            notifications: Default::default(),
        }
    }

    fn send_line(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).unwrap();
        self.writer.write_all(b"\n").unwrap();
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).unwrap();
        assert!(n > 0, "the owner closed the connection");
        serde_json::from_str(&line).unwrap()
    }

    /// The next answer (not a notification).
    fn answer(&mut self) -> Value {
        loop {
            let value = self.read();
            if value.get("method").is_some() {
                self.notifications.push_back(value);
            } else {
                return value;
            }
        }
    }

    /// Calls `method`: the whole answer object.
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_line(&line.to_string());
        let answer = self.answer();
        assert_eq!(answer["jsonrpc"], "2.0");
        assert_eq!(answer["id"], id, "{answer}");
        answer
    }

    /// Calls `method` and expects a result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let answer = self.request(method, params);
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Calls `method` and expects an error: its code.
    fn error(&mut self, method: &str, params: Value) -> i64 {
        let answer = self.request(method, params);
        answer["error"]["code"].as_i64().expect("an error")
    }

    /// Waits for a notification `method` matching `check`.
    fn notification(&mut self, method: &str, check: impl Fn(&Value) -> bool) -> Value {
        loop {
            while let Some(value) = self.notifications.pop_front() {
                if value["method"] == method && check(&value["params"]) {
                    return value["params"].clone();
                }
            }
            let value = self.read();
            self.notifications.push_back(value);
        }
    }
}

fn text_of(value: &Value) -> &str {
    value["text"].as_str().unwrap_or_default()
}

#[test]
fn commands_run_through_a_listening_owner_and_a_killed_owner_is_replaced() {
    let (_relay, _homes, alice, bob) = team_of_two();
    // Without an owner, for comparison.
    let whoami_alone = sotto(&bob, &["whoami", "--json"]);
    let unknown_alone = sotto_stdin(&bob, &["send", "zed"], "hello?\n");
    let sent_alone = sotto_stdin(&bob, &["send", "alice"], "before the owner\n");
    assert_eq!(ok(&sent_alone), "sent to alice\n");

    let mut listen = Running::start(&bob, &["listen", "--json"], &[]);
    // The same output, --json and exit codes, through the owner.
    let whoami_owned = sotto(&bob, &["whoami", "--json"]);
    assert_eq!(ok(&whoami_owned), ok(&whoami_alone));
    let unknown_owned = sotto_stdin(&bob, &["send", "zed"], "hello?\n");
    assert_eq!(unknown_owned.status.code(), Some(4));
    assert_eq!(unknown_owned.status.code(), unknown_alone.status.code());
    assert_eq!(unknown_owned.stderr, unknown_alone.stderr);
    assert!(!String::from_utf8_lossy(&unknown_owned.stderr).contains("lock"));

    // A send through the owner (the text from stdin), and alice's reply
    // printed by listen.
    let sent_owned = sotto_stdin(&bob, &["send", "alice"], "with the owner\n");
    assert_eq!(ok(&sent_owned), ok(&sent_alone));
    assert_eq!(sent_owned.stderr, sent_alone.stderr);
    let sent: Value = serde_json::from_str(
        ok(&sotto_stdin(
            &bob,
            &["send", "alice", "--json"],
            "hi alice\n",
        ))
        .trim(),
    )
    .unwrap();
    assert_eq!(sent["to"], "alice");
    assert_eq!(sent["status"], "sent");
    let got = ok(&sotto(&alice, &["sync", "--json"]));
    assert!(got.contains("\"hi alice\""), "{got}");
    assert!(got.contains("\"with the owner\""), "{got}");
    ok(&sotto_stdin(
        &alice,
        &["send", "bob"],
        "hi bob, from alice\n",
    ));
    let shown = listen.next_json();
    assert_eq!(text_of(&shown), "hi bob, from alice");
    assert_eq!(shown["from"], "alice");
    // History through the owner holds both.
    let history = ok(&sotto(&bob, &["history", "alice"]));
    assert!(history.contains("me -> alice: hi alice"), "{history}");
    assert!(history.contains("alice: hi bob, from alice"), "{history}");

    // kill -9: the socket stays behind; the next command takes over.
    listen.signal("-KILL");
    assert!(bob.join("control.sock").exists());
    let whoami_after = sotto(&bob, &["whoami", "--json"]);
    assert_eq!(ok(&whoami_after), ok(&whoami_alone));
    // And the next owner replaces the stale socket.
    let mut daemon = Running::start(&bob, &["daemon"], &[]);
    let mut rpc = Rpc::connect(&bob);
    assert_eq!(rpc.call("whoami", json!({}))["handle"], "bob");
    drop(rpc);
    // SIGTERM: a clean stop, socket and lock gone.
    let status = daemon.signal("-TERM");
    assert!(status.success(), "{status:?}");
    assert!(!bob.join("control.sock").exists());
    assert!(!bob.join("owner.lock").exists());
    // The profile works on its own again.
    let history_after = ok(&sotto(&bob, &["history", "alice"]));
    assert_eq!(history_after, history);
}

#[test]
fn the_control_protocol_answers_each_method_and_survives_bad_input() {
    let (_relay, _homes, alice, bob) = team_of_two();
    ok(&sotto_stdin(&alice, &["send", "bob"], "first\n"));
    let _daemon = Running::start(&bob, &["daemon"], &[]);
    let mut rpc = Rpc::connect(&bob);

    let me = rpc.call("whoami", json!({}));
    assert_eq!(me["handle"], "bob");
    assert_eq!(me["team"], "acme");
    assert_eq!(me["admin"], false);
    assert!(me["device"].is_string(), "{me}");

    let members = rpc.call("members", Value::Null);
    let handles: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["handle"].as_str().unwrap())
        .collect();
    assert_eq!(handles, ["alice", "bob"]);

    // The daemon's first sync took alice's message already.
    let synced = rpc.call("sync", json!({}));
    assert!(
        synced["messages"].as_array().unwrap().is_empty(),
        "{synced}"
    );
    let history = rpc.call("history", json!({"with": "alice"}));
    assert_eq!(text_of(&history["messages"][0]), "first");

    assert_eq!(rpc.call("subscribe", json!({})), json!({}));
    let sent = rpc.call("send", json!({"to": "alice", "text": "to alice"}));
    let id = sent["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    // alice's device receives it and answers with a delivered receipt.
    ok(&sotto(&alice, &["sync"]));
    let status = rpc.notification("status", |p| {
        p["id"] == id.as_str() && p["status"] == "delivered"
    });
    assert_eq!(status["to"], "alice");
    // A message from alice arrives as a notification.
    ok(&sotto_stdin(&alice, &["send", "bob"], "pushed\n"));
    let message = rpc.notification("message", |p| text_of(p) == "pushed");
    assert_eq!(message["from"], "alice");
    assert_eq!(message["outgoing"], false);

    // Groups, through cli.run and the methods.
    let created = rpc.call(
        "cli.run",
        json!({"argv": ["--json", "group", "create", "crew", "alice"]}),
    );
    assert_eq!(created["exit_code"], 0, "{created}");
    let created: Value = serde_json::from_str(created["stdout"].as_str().unwrap().trim()).unwrap();
    assert_eq!(created["group"], "crew");
    let groups = rpc.call("groups", json!({}));
    assert_eq!(groups["groups"][0]["name"], "crew");
    let mut members: Vec<&str> = groups["groups"][0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    members.sort_unstable();
    assert_eq!(members, ["alice", "bob"]);
    let group_sent = rpc.call(
        "group.send",
        json!({"group": "crew", "text": "to the crew"}),
    );
    assert_eq!(group_sent["id"].as_str().unwrap().len(), 32);
    let group_history = rpc.call("history", json!({"group": "crew"}));
    assert_eq!(text_of(&group_history["messages"][0]), "to the crew");
    let last = rpc.call("history", json!({"with": "alice", "limit": 1}));
    assert_eq!(last["messages"].as_array().unwrap().len(), 1);
    assert_eq!(text_of(&last["messages"][0]), "pushed");

    // Failures carry the CLI's exit codes.
    assert_eq!(rpc.error("send", json!({"to": "zed", "text": "hi"})), 4);
    let run = rpc.call("cli.run", json!({"argv": ["send", "zed", "hi"]}));
    assert_eq!(run["exit_code"], 4);
    assert!(
        run["stderr"].as_str().unwrap().contains("not a member"),
        "{run}"
    );
    let usage = rpc.call(
        "cli.run",
        json!({"argv": ["invite", "erin", "--expires", "soon"]}),
    );
    assert_eq!(usage["exit_code"], 2);

    // Bad input: an error each, and the connection goes on.
    rpc.send_line("this is not json");
    let answer = rpc.answer();
    assert_eq!(answer["error"]["code"], -32700);
    assert_eq!(answer["id"], Value::Null);
    assert_eq!(rpc.error("no.such.method", json!({})), -32601);
    assert_eq!(rpc.error("send", json!({"to": "alice"})), -32602);
    assert_eq!(rpc.error("send", json!({"to": 7, "text": "x"})), -32602);
    assert_eq!(rpc.error("history", json!({})), -32602);
    assert_eq!(rpc.error("cli.run", json!({"argv": "whoami"})), -32602);
    rpc.send_line(r#"{"id": 99, "method": "whoami"}"#);
    assert_eq!(rpc.answer()["error"]["code"], -32600);
    rpc.send_line("[1, 2]");
    assert_eq!(rpc.answer()["error"]["code"], -32600);
    // A line over 1 MiB: an error, skipped to its newline.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"send","params":{{"to":"alice","text":"{}"}}}}"#,
        "x".repeat((1 << 20) + 10)
    );
    rpc.send_line(&huge);
    let answer = rpc.answer();
    assert_eq!(answer["error"]["code"], -32600, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer")
    );
    // Nothing was lost: the connection still answers, and the huge message
    // was not sent.
    assert_eq!(rpc.call("whoami", json!({}))["handle"], "bob");
    let history = rpc.call("history", json!({"with": "alice"}));
    assert!(
        history["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| text_of(m).len() < 100)
    );
}

#[test]
fn many_clients_at_once_and_a_slow_subscriber_do_not_stall_the_owner() {
    let (_relay, _homes, alice, bob) = team_of_two();
    // A small notification queue, so that a few big messages overflow it.
    let _bob = Running::start(&bob, &["daemon"], &[("SOTTO_NOTIFY_QUEUE", "4")]);
    let _alice = Running::start(&alice, &["daemon"], &[]);

    // Sixteen clients at once, each with a few calls.
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let bob = bob.clone();
            std::thread::spawn(move || {
                let mut rpc = Rpc::connect(&bob);
                for _ in 0..3 {
                    assert_eq!(rpc.call("whoami", json!({}))["handle"], "bob");
                    rpc.call("history", json!({"with": "alice"}));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }

    // One subscriber never reads; another reads as they come.
    let mut slow = Rpc::connect(&bob);
    slow.call("subscribe", json!({}));
    let mut fast = Rpc::connect(&bob);
    fast.call("subscribe", json!({}));
    let count = 24;
    let fast = std::thread::spawn(move || {
        for n in 0..count {
            let prefix = format!("{n} ");
            fast.notification("message", |p| text_of(p).starts_with(&prefix));
        }
    });
    let mut sender = Rpc::connect(&alice);
    let big = "y".repeat(15 * 1024);
    let mut other = Rpc::connect(&bob);
    for n in 0..count {
        sender.call("send", json!({"to": "bob", "text": format!("{n} {big}")}));
        if n % 8 == 0 {
            // The owner answers other clients meanwhile.
            assert_eq!(other.call("whoami", json!({}))["handle"], "bob");
        }
    }
    // The reading subscriber got every message, in order.
    fast.join().unwrap();

    // The slow one lost its oldest notifications, and was told so.
    slow.writer
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut lagged = 0;
    let mut messages = 0;
    let mut line = String::new();
    loop {
        line.clear();
        match slow.reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => break,
        }
        let value: Value = serde_json::from_str(&line).unwrap();
        match value["method"].as_str() {
            Some("lagged") => lagged += value["params"]["missed"].as_u64().unwrap(),
            Some("message") => messages += 1,
            _ => {}
        }
    }
    assert!(lagged > 0, "no lagged notice");
    assert!(messages < count, "{messages} of {count} kept");
    // Everything is in the history all the same.
    let history = other.call("history", json!({"with": "alice"}));
    assert_eq!(history["messages"].as_array().unwrap().len(), count);
}

#[test]
fn an_owner_refuses_a_home_others_can_enter() {
    use std::os::unix::fs::PermissionsExt;
    let (_relay, _homes, _alice, bob) = team_of_two();
    std::fs::set_permissions(&bob, std::fs::Permissions::from_mode(0o755)).unwrap();
    for args in [&["daemon"][..], &["listen"][..]] {
        let output = sotto(&bob, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(5), "{stderr}");
        assert!(stderr.contains("mode 755"), "{stderr}");
        assert!(stderr.contains("chmod 700"), "{stderr}");
        assert!(!bob.join("control.sock").exists());
    }
}

#[test]
fn send_reads_the_message_from_stdin() {
    let (_relay, _homes, alice, bob) = team_of_two();
    ok(&sotto_stdin(&alice, &["send", "bob"], "from stdin\n"));
    ok(&sotto_stdin(&alice, &["send", "bob", "-"], "two\nlines\n"));
    ok(&sotto(&alice, &["send", "bob", "as an argument"]));
    let empty = sotto_stdin(&alice, &["send", "bob"], "");
    assert_eq!(empty.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&empty.stderr).contains("empty"));
    let got: Vec<String> = ok(&sotto(&bob, &["sync", "--json"]))
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            text_of(&v).to_owned()
        })
        .collect();
    assert_eq!(got, ["from stdin", "two\nlines", "as an argument"]);

    // The same for a group.
    ok(&sotto(&alice, &["group", "create", "crew", "bob"]));
    ok(&sotto_stdin(
        &alice,
        &["group", "send", "crew"],
        "to the crew\n",
    ));
    let got = ok(&sotto(&bob, &["sync", "--json"]));
    assert!(got.contains("\"to the crew\""), "{got}");
}

#[test]
fn listen_beside_a_daemon_follows_it_and_takes_over_when_it_stops() {
    let (_relay, _homes, alice, bob) = team_of_two();
    let mut daemon = Running::start(&bob, &["daemon"], &[]);
    let listen = Running::start(&bob, &["listen", "--json"], &[]);
    // listen subscribes to the daemon's notifications shortly after it
    // starts: send until one arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        assert!(Instant::now() < deadline, "listen printed nothing");
        ok(&sotto_stdin(
            &alice,
            &["send", "bob"],
            &format!("ping {n}\n"),
        ));
        n += 1;
        if let Ok(line) = listen.lines.recv_timeout(Duration::from_secs(2)) {
            let value: Value = serde_json::from_str(&line).unwrap();
            assert!(text_of(&value).starts_with("ping "), "{value}");
            break;
        }
    }
    // The daemon stops; listen owns the profile from then on.
    assert!(daemon.signal("-TERM").success());
    ok(&sotto_stdin(&alice, &["send", "bob"], "after the daemon\n"));
    loop {
        let value = listen.next_json();
        if text_of(&value) == "after the daemon" {
            break;
        }
        assert!(text_of(&value).starts_with("ping "), "{value}");
    }
    eventually("listen's control socket", || {
        UnixStream::connect(bob.join("control.sock")).is_ok()
    });
    let owner = std::fs::read_to_string(bob.join("owner.lock")).unwrap();
    assert!(owner.starts_with("sotto listen"), "{owner}");
    assert_eq!(
        Rpc::connect(&bob).call("whoami", json!({}))["handle"],
        "bob"
    );
}

#[test]
fn a_database_held_outside_the_owner_protocol_is_named_not_shown_raw() {
    let (_relay, _homes, _alice, bob) = team_of_two();
    let _daemon = Running::start(&bob, &["daemon"], &[]);
    // Something that holds the store without the owner's lock and socket
    // (here the daemon, its lock and socket files taken away).
    std::fs::remove_file(bob.join("control.sock")).unwrap();
    std::fs::remove_file(bob.join("owner.lock")).unwrap();
    let output = sotto(&bob, &["whoami"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("open in another program"), "{stderr}");
    assert!(
        !stderr.contains("WouldBlock") && !stderr.contains("IO error"),
        "{stderr}"
    );
}

/// The statuses of alice's messages to bob, oldest first, after a sync.
fn statuses_after_sync(alice: &Path) -> Vec<String> {
    ok(&sotto(alice, &["sync"]));
    ok(&sotto(alice, &["history", "bob", "--json"]))
        .lines()
        .map(|line| {
            let message: Value = serde_json::from_str(line).unwrap();
            message["status"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn shown_messages_are_read_the_receipt_waits_for_the_next_delivery_and_can_be_turned_off() {
    let (_relay, _homes, alice, bob) = team_of_two();
    ok(&sotto_stdin(&alice, &["send", "bob"], "one\n"));
    ok(&sotto(&bob, &["sync"]));
    assert_eq!(statuses_after_sync(&alice), ["delivered"]);

    // `history` shows it: read, but the receipt waits in bob's outbox
    // for his next delivery rather than timing the moment he looked.
    ok(&sotto(&bob, &["history", "alice"]));
    assert_eq!(statuses_after_sync(&alice), ["delivered"]);
    ok(&sotto(&bob, &["sync"]));
    assert_eq!(statuses_after_sync(&alice), ["read"]);

    // Read receipts off: the setting is the profile's and stays.
    let off = ok(&sotto(&bob, &["settings", "--read-receipts", "off"]));
    assert!(off.contains("read receipts: off"), "{off}");
    let shown: Value =
        serde_json::from_str(ok(&sotto(&bob, &["settings", "--json"])).trim()).unwrap();
    assert_eq!(shown, json!({"read_receipts": false, "auto_fetch_mib": 0}));
    fails(
        &sotto(&bob, &["settings", "--read-receipts", "maybe"]),
        2,
        "neither on nor off",
    );
    ok(&sotto_stdin(&alice, &["send", "bob"], "two\n"));
    ok(&sotto(&bob, &["sync"]));
    ok(&sotto(&bob, &["history", "alice"]));
    ok(&sotto(&bob, &["sync"]));
    assert_eq!(statuses_after_sync(&alice), ["read", "delivered"]);

    // On again, through a running owner: the `read` method marks what
    // was shown, and the receipt goes with the owner's next answer.
    ok(&sotto(&bob, &["settings", "--read-receipts", "on"]));
    let _daemon = Running::start(&bob, &["daemon"], &[]);
    let mut rpc = Rpc::connect(&bob);
    rpc.call("subscribe", json!({}));
    ok(&sotto_stdin(&alice, &["send", "bob"], "three\n"));
    rpc.notification("message", |p| text_of(p) == "three");
    let unread = |rpc: &mut Rpc| {
        let list = rpc.call("conversations", json!({}));
        let alice = list["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["with"] == "alice")
            .unwrap()
            .clone();
        assert_eq!(text_of(&alice["last"]), "three", "{alice}");
        alice["unread"].as_u64().unwrap()
    };
    assert_eq!(unread(&mut rpc), 1);
    assert_eq!(
        rpc.call("read", json!({"with": "alice"})),
        json!({"with": "alice"})
    );
    assert_eq!(rpc.error("read", json!({})), -32602);
    assert_eq!(rpc.error("read", json!({"with": "bob"})), -32602);
    // ("two" was read while receipts were off: alice never learns it.)
    eventually("the read receipt from the owner", || {
        statuses_after_sync(&alice) == ["read", "delivered", "read"]
    });
    assert_eq!(
        unread(&mut rpc),
        0,
        "read marks are what unread counts start from"
    );
}

#[test]
fn verify_sas_runs_through_a_running_owner_as_it_does_without_one() {
    let (_relay, _homes, alice, bob) = team_of_two();
    ok(&sotto_stdin(&alice, &["send", "bob"], "hi\n"));
    ok(&sotto(&bob, &["sync"]));
    // alice's profile is owned by a daemon; bob runs on his own.
    let _daemon = Running::start(&alice, &["daemon"], &[]);
    let mut rpc = Rpc::connect(&alice);
    assert_eq!(rpc.error("verify.sas.code", json!({"with": "bob"})), -32602);
    assert_eq!(
        rpc.error("verify.sas.result", json!({"with": "bob"})),
        -32602
    );
    assert_eq!(rpc.error("verify.sas.start", json!({"with": "zed"})), 4);

    verify_both_by_sas(&alice, &bob);
    let members = rpc.call("members", json!({}));
    let bob_entry = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["handle"] == "bob")
        .unwrap()
        .clone();
    assert_eq!(bob_entry["verified"], true, "{members}");
}
