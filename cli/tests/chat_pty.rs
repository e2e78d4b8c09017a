//! `sotto chat` end to end: the real binary in a pseudo-terminal, its
//! screen read back through a terminal emulator, against a real relay and
//! a second member using the command line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::*;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};

/// Counts the bells the program rings.
#[derive(Default)]
struct Bells(usize);

impl vt100::Callbacks for Bells {
    fn audible_bell(&mut self, _: &mut vt100::Screen) {
        self.0 += 1;
    }
}

/// `sotto chat` running in a pseudo-terminal of 100 x 30.
struct Chat {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    keys: Box<dyn Write + Send>,
    _master: Box<dyn portable_pty::MasterPty + Send>,
    terminal: Arc<Mutex<vt100::Parser<Bells>>>,
}

impl Chat {
    fn start(home: &Path, args: &[&str]) -> Chat {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 30,
                cols: 100,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_sotto"));
        command.arg("--home");
        command.arg(home);
        command.arg("chat");
        command.args(args);
        command.env("SOTTO_LOG", "error");
        command.env("TERM", "xterm-256color");
        command.env_remove("SOTTO_PASSPHRASE");
        let child = pty.slave.spawn_command(command).unwrap();
        drop(pty.slave);
        let terminal = Arc::new(Mutex::new(vt100::Parser::new_with_callbacks(
            std::num::NonZeroU16::new(30).unwrap(),
            std::num::NonZeroU16::new(100).unwrap(),
            0,
            Bells::default(),
        )));
        let mut output = pty.master.try_clone_reader().unwrap();
        let screen = terminal.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = output.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                screen.lock().unwrap().process(&buffer[..n]);
            }
        });
        let keys = pty.master.take_writer().unwrap();
        Chat {
            child,
            keys,
            _master: pty.master,
            terminal,
        }
    }

    fn screen(&self) -> String {
        self.terminal.lock().unwrap().screen().contents()
    }

    fn bells(&self) -> usize {
        self.terminal.lock().unwrap().callbacks().0
    }

    fn type_keys(&mut self, keys: &str) {
        self.keys.write_all(keys.as_bytes()).unwrap();
        self.keys.flush().unwrap();
    }

    /// Waits until the screen shows `text`.
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} never appeared; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
    }
}

const DOWN: &str = "\x1b[B";
const CTRL_N: &str = "\x0e";
const CTRL_P: &str = "\x10";

#[test]
fn a_message_typed_in_chat_reaches_the_other_member_and_their_reply_appears_on_screen() {
    let (_relay, _homes, alice, bob) = team_of_two();
    let mut chat = Chat::start(&alice, &["--bell"]);
    chat.wait_for("alice in acme");
    chat.wait_for("online");
    chat.wait_for("│  bob");

    // Arrow down to bob, Enter opens; typing and Enter sends.
    chat.type_keys(DOWN);
    chat.type_keys("\r");
    chat.wait_for("message to bob");
    chat.type_keys("hello from alice's chat\r");
    chat.wait_for("me: hello from alice's chat  sent");

    // The chat owns alice's profile: another command runs through it.
    let whoami = ok(&sotto(&alice, &["whoami"]));
    assert!(whoami.contains("alice in team \"acme\""), "{whoami}");

    // bob receives it.
    let synced = ok(&sotto(&bob, &["sync", "--json"]));
    assert!(synced.contains("hello from alice's chat"), "{synced}");
    // bob's device acknowledged it: alice sees it delivered.
    chat.wait_for("me: hello from alice's chat  delivered");

    // alice looks at the console; bob's reply rings the bell and counts
    // as unread beside his name.
    chat.type_keys(CTRL_P);
    chat.wait_for("command (/help)");
    let bells = chat.bells();
    ok(&sotto(&bob, &["send", "alice", "hi alice, bob here"]));
    chat.wait_for("bob (1)");
    assert_eq!(chat.bells(), bells + 1, "{}", chat.screen());
    chat.type_keys(CTRL_N);
    chat.wait_for("bob: hi alice, bob here");
    assert!(!chat.screen().contains("bob (1)"), "{}", chat.screen());

    // Alt+Enter breaks the line; Enter sends both lines as one message.
    chat.type_keys("two\x1b\rlines\r");
    chat.wait_for("me: two");
    let synced = ok(&sotto(&bob, &["sync", "--json"]));
    assert!(synced.contains("two\\nlines"), "{synced}");

    // /quit leaves, puts the terminal back and hands the profile back.
    chat.type_keys("/quit\r");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = chat.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the chat did not quit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(!chat.terminal.lock().unwrap().screen().alternate_screen());
    let history = ok(&sotto(&alice, &["history", "bob"]));
    assert!(history.contains("hi alice, bob here"), "{history}");
}

/// The `--json` sync of `home`: every line it printed.
fn synced(home: &Path) -> Vec<serde_json::Value> {
    ok(&sotto(home, &["--json", "sync"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The first `updated` message of a sync of `home`.
fn updated(home: &Path) -> serde_json::Value {
    let lines = synced(home);
    lines
        .iter()
        .find_map(|l| l.get("updated").cloned())
        .unwrap_or_else(|| panic!("no update in {lines:?}"))
}

#[test]
fn reply_react_edit_and_delete_typed_in_chat_reach_the_other_member() {
    let (_relay, _homes, alice, bob) = team_of_two();
    let mut chat = Chat::start(&alice, &[]);
    chat.wait_for("online");
    chat.wait_for("│  bob");
    chat.type_keys(DOWN);
    chat.type_keys("\r");
    chat.wait_for("message to bob");
    let sent = ok(&sotto(&bob, &["--json", "send", "alice", "lunch at noon?"]));
    let sent: serde_json::Value = serde_json::from_str(sent.lines().next().unwrap()).unwrap();
    let lunch = sent["id"].as_str().unwrap().to_owned();
    chat.wait_for("bob: lunch at noon?");

    // A reaction to bob's message (^: the newest in the conversation).
    chat.type_keys("/react ^ 👍\r");
    chat.wait_for("bob: lunch at noon? [");
    let reacted = updated(&bob);
    assert_eq!(reacted["id"], lunch.as_str());
    assert_eq!(reacted["reactions"]["👍"], 1, "{reacted}");

    // A reply to it.
    chat.type_keys("/reply ^ yes, noon works\r");
    chat.wait_for(&format!("me: (re {}) yes, noon works  sent", &lunch[..8]));
    let reply = synced(&bob)
        .into_iter()
        .find(|l| l["text"] == "yes, noon works")
        .expect("the reply reached bob");
    assert_eq!(reply["reply_to"], lunch.as_str());
    let reply_id = reply["id"].as_str().unwrap().to_owned();

    // An edit of my reply (^ counts my own messages for /edit).
    chat.type_keys("/edit ^ yes, 12:30 works\r");
    chat.wait_for("yes, 12:30 works (edited)");
    let edited = updated(&bob);
    assert_eq!(edited["id"], reply_id.as_str());
    assert_eq!(edited["text"], "yes, 12:30 works");
    assert_eq!(edited["edited"], true);

    // Deleted for everyone: bob keeps a stub and no text.
    chat.type_keys("/delete ^\r");
    chat.wait_for("me: (message deleted)");
    let deleted = updated(&bob);
    assert_eq!(deleted["id"], reply_id.as_str());
    assert_eq!(deleted["deleted"], true);
    let history = ok(&sotto(&bob, &["history", "alice"]));
    assert!(!history.contains("12:30"), "{history}");
    assert!(history.contains("message deleted"), "{history}");

    // Bob's own edit shows in alice's chat, in place, reaction kept.
    ok(&sotto_stdin(&bob, &["edit", &lunch], "lunch at one?\n"));
    chat.wait_for("bob: lunch at one? (edited) [");
    assert!(
        !chat.screen().contains("lunch at noon?"),
        "{}",
        chat.screen()
    );

    // Bob's message is not mine to edit: the chat says so, nothing changes.
    chat.type_keys(&format!("/edit {} mine now\r", &lunch[..8]));
    chat.wait_for("could not edit that message");
    let history = ok(&sotto(&bob, &["history", "alice"]));
    assert!(!history.contains("mine now"), "{history}");
}
