//! The desktop window driven headless (egui_kittest, through AccessKit
//! labels, as a screen reader sees it) against a real relay on loopback
//! and real profiles in temp dirs: the window owns bob's profile while
//! alice uses the library directly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use sotto_core::{App, KeySource, RelayTarget, system_clock};
use sotto_desktop::{CODE_LABEL, Desktop, Shell};

/// A relay, alice (admin, an open App) and bob's home (joined, closed:
/// the window opens it).
struct Team {
    runtime: Arc<tokio::runtime::Runtime>,
    server: Option<sotto_relay::Server>,
    alice: App,
    bob_home: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn team() -> Team {
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let (server, alice) = runtime.block_on(async {
        let server = relay(dir.path()).await;
        let relay = RelayTarget {
            addr: server.local_addr().to_string(),
            fingerprint: server.fingerprint(),
        };
        let bootstrap = server.new_bootstrap_code().unwrap().to_owned();
        let home = dir.path().join("alice");
        let mut alice = App::create_team(
            &home,
            KeySource::key_file_in(&home),
            relay,
            &bootstrap,
            "acme",
            "alice",
            system_clock(),
        )
        .await
        .unwrap();
        let code = alice.invite("bob", 3600).await.unwrap();
        let home = dir.path().join("bob");
        let bob = App::join(&home, KeySource::key_file_in(&home), &code, system_clock())
            .await
            .unwrap();
        drop(bob);
        (server, alice)
    });
    Team {
        runtime,
        server: Some(server),
        alice,
        bob_home: dir.path().join("bob"),
        _dir: dir,
    }
}

/// A relay on loopback with its data in `dir`.
async fn relay(dir: &std::path::Path) -> sotto_relay::Server {
    sotto_relay::Server::start(sotto_relay::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("relay"),
        ..sotto_relay::Config::default()
    })
    .await
    .unwrap()
}

/// A team whose members are all closed homes (alice's App closed too), so
/// that windows open either.
struct Homes {
    runtime: Arc<tokio::runtime::Runtime>,
    alice: std::path::PathBuf,
    bob: std::path::PathBuf,
    // Dropped last: the relay, then the directory.
    _server: Option<sotto_relay::Server>,
    _dir: tempfile::TempDir,
}

fn homes() -> Homes {
    let Team {
        runtime,
        server,
        alice,
        bob_home,
        _dir,
    } = team();
    drop(alice);
    Homes {
        runtime,
        alice: _dir.path().join("alice"),
        bob: bob_home,
        _server: server,
        _dir,
    }
}

/// Bob's window, loaded (members, groups, the first sync).
fn window(team: &Team) -> Harness<'static, Desktop> {
    window_on(&team.runtime, &team.bob_home)
}

/// Steps the window until `done` holds, applying what the owner sends.
fn until<S: Settle>(
    harness: &mut Harness<'static, S>,
    what: &str,
    done: impl Fn(&Harness<'static, S>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done(harness) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        harness.state_mut().settle_for(Duration::from_millis(50));
        harness.run_steps(1);
    }
}

/// What a window waits on between frames in these tests.
trait Settle {
    fn settle_for(&mut self, max: Duration);
}

impl Settle for Desktop {
    fn settle_for(&mut self, max: Duration) {
        self.settle(max);
    }
}

impl Settle for Shell {
    fn settle_for(&mut self, max: Duration) {
        match self.desktop_mut() {
            Some(desktop) => desktop.settle(max),
            // The join runs on the runtime: give it time between frames.
            None => std::thread::sleep(max),
        }
    }
}

fn shows<S>(harness: &Harness<'static, S>, text: &str) -> bool {
    harness.query_all_by_label_contains(text).next().is_some()
}

#[test]
fn a_message_arrives_shows_unread_opens_and_the_reply_reaches_the_sender() {
    let mut team = team();
    let mut harness = window(&team);
    // alice writes while the window is open: it arrives live.
    let alice = &mut team.alice;
    team.runtime
        // A character no font draws (and a recent emoji) shows as a box,
        // never a crash: the harness panics on a missing glyph otherwise.
        .block_on(alice.send("bob", "hello bob \u{1F916}\u{10FFFD}"))
        .unwrap();
    until(&mut harness, "alice's unread count", |h| {
        shows(h, "alice  (1)")
    });

    harness.get_by_label_contains("alice  (1)").click();
    harness.run_steps(2);
    until(&mut harness, "alice's message in the view", |h| {
        shows(h, "hello bob")
    });
    // Opened: nothing unread is left.
    assert!(!shows(&harness, "alice  (1)"));

    let compose =
        harness.get_by_label("Message (Enter sends, Shift+Enter a new line, / for commands)");
    compose.focus();
    compose.type_text("hi alice");
    harness.run_steps(1);
    harness.key_press(egui::Key::Enter);
    harness.run_steps(2);
    until(&mut harness, "my reply marked sent", |h| {
        shows(h, "hi alice")
    });

    let received = team
        .runtime
        .block_on(async {
            for _ in 0..100 {
                let report = team.alice.sync().await.unwrap();
                if let Some(m) = report.messages.into_iter().find(|m| m.text == "hi alice") {
                    return Some(m);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        })
        .expect("alice receives the reply typed in the window");
    assert_eq!(received.text, "hi alice");
    let mut desktop = harness.into_state();
    desktop.close_blocking().unwrap();
}

#[test]
fn the_relay_going_away_shows_a_banner_and_the_message_waits_in_the_outbox() {
    let mut team = team();
    let mut harness = window(&team);
    assert!(!shows(&harness, "The relay cannot be reached"));
    let server = team.server.take().unwrap();
    team.runtime.block_on(server.shutdown());
    until(&mut harness, "the offline banner", |h| {
        shows(h, "The relay cannot be reached")
    });
    assert!(harness.state().session().online() == Some(false));

    // Typed while offline: shown as queued, not lost.
    harness.state_mut().open_named("alice");
    harness.run_steps(2);
    let compose =
        harness.get_by_label("Message (Enter sends, Shift+Enter a new line, / for commands)");
    compose.focus();
    compose.type_text("are you there");
    harness.run_steps(1);
    harness.key_press(egui::Key::Enter);
    until(&mut harness, "the message queued", |h| {
        shows(h, "are you there") && shows(h, "queued")
    });
    let mut desktop = harness.into_state();
    desktop.close_blocking().unwrap();
}

/// A window on an empty home: the join form.
fn join_window(team: &Team, home: &std::path::Path) -> Harness<'static, Shell> {
    let shell = Shell::new(home.to_owned(), team.runtime.clone(), Arc::new(|| {}));
    let mut harness = Harness::builder()
        .with_size(egui::vec2(900.0, 600.0))
        .build_ui_state(|ui, shell: &mut Shell| shell.ui(ui), shell);
    harness.run_steps(2);
    harness
}

#[test]
fn a_new_profile_joins_with_an_invite_code_in_the_window_and_a_bad_code_leaves_nothing() {
    let mut team = team();
    let home = team.bob_home.with_file_name("carol");

    // A damaged code: the reason is shown, nothing is joined.
    let mut harness = join_window(&team, &home);
    assert!(shows(&harness, "Join your team"));
    let field = harness.get_by_label(CODE_LABEL);
    field.focus();
    field.type_text("sotto-invite:not-a-real-code");
    harness.run_steps(1);
    harness.get_by_label("Join").click();
    until(&mut harness, "the refusal", |h| {
        shows(h, "damaged") || shows(h, "not a sotto invite code")
    });
    assert!(harness.state().desktop().is_none());
    drop(harness);

    // Opened again: still the join form, then a real code joins and the
    // conversations open on the new profile.
    let code = team
        .runtime
        .block_on(team.alice.invite("carol", 3600))
        .unwrap();
    let mut harness = join_window(&team, &home);
    assert!(shows(&harness, "Join your team"));
    let field = harness.get_by_label(CODE_LABEL);
    field.focus();
    field.type_text(&code);
    harness.run_steps(1);
    harness.get_by_label("Join").click();
    until(&mut harness, "the conversations of the new member", |h| {
        h.state().desktop().is_some() && shows(h, "carol in acme")
    });
    harness.state_mut().close_blocking().unwrap();
}

/// A window on `home` (a joined profile, closed), loaded.
fn window_on(
    runtime: &Arc<tokio::runtime::Runtime>,
    home: &std::path::Path,
) -> Harness<'static, Desktop> {
    let session = runtime
        .block_on(sotto_cli::Session::open(home, || {}))
        .unwrap();
    let mut desktop = Desktop::new(session, runtime.clone());
    desktop.settle(Duration::from_secs(30));
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1000.0, 700.0))
        .build_ui_state(|ui, desktop: &mut Desktop| desktop.ui(ui), desktop);
    harness.run_steps(2);
    harness
}

/// Steps two windows in turn until `a_done` holds for `a` and `b_done`
/// for `b`.
fn until_both(
    a: &mut Harness<'static, Desktop>,
    b: &mut Harness<'static, Desktop>,
    what: &str,
    a_done: impl Fn(&Harness<'static, Desktop>) -> bool,
    b_done: impl Fn(&Harness<'static, Desktop>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(a_done(a) && b_done(b)) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for window in [&mut *a, &mut *b] {
            window.state_mut().settle(Duration::from_millis(50));
            window.run_steps(1);
        }
    }
}

fn open_team_window(harness: &mut Harness<'static, Desktop>) {
    harness
        .query_all_by_label(sotto_desktop::TEAM_BUTTON)
        .next()
        .expect("the Team button")
        .click();
    harness.run_steps(2);
    until(harness, "the members list", |h| shows(h, "Refresh"));
}

#[test]
fn a_member_sees_the_team_a_safety_number_and_links_a_device_with_a_code_and_qr_code() {
    let mut team = team();
    let mut harness = window(&team);
    open_team_window(&mut harness);
    assert!(shows(&harness, "bob (you)"));
    assert!(shows(&harness, "not verified"));
    // bob is no admin: no admin tab.
    assert!(harness.query_by_label("Admin").is_none());

    harness.get_by_label("Safety number of alice").click();
    until(&mut harness, "the safety number", |h| {
        shows(h, "Safety number with alice")
    });
    // The number alice's side computes, shown whole in bob's dialog.
    team.runtime
        .block_on(team.alice.ensure_contact("bob"))
        .unwrap();
    let number = team.alice.safety_number("bob").unwrap();
    assert!(number.chars().filter(char::is_ascii_digit).count() >= 60);
    assert!(shows(&harness, &number), "{number}");

    harness.get_by_label("My devices").click();
    until(&mut harness, "this device in the list", |h| {
        shows(h, "this device")
    });
    harness.get_by_label("Add a device").click();
    until(&mut harness, "the link code", |h| shows(h, "sotto-link:"));
    assert!(harness.query_by_label("QR code").is_some());
    harness.into_state().close_blocking().unwrap();
}

#[test]
fn an_admin_invites_with_a_qr_code_makes_a_group_and_removes_a_member_in_the_team_window() {
    let team = homes();
    let mut harness = window_on(&team.runtime, &team.alice);
    open_team_window(&mut harness);
    until(&mut harness, "the admin tab", |h| {
        h.query_by_label("Admin").is_some()
    });
    harness.get_by_label("Admin").click();
    harness.run_steps(2);

    type_in(&mut harness, "Handle to invite", "dave");
    harness.get_by_label("Invite").click();
    until(&mut harness, "dave's invite code", |h| {
        shows(h, "sotto-invite:")
    });
    assert!(shows(&harness, "Invite code for dave"));
    assert!(harness.query_by_label("QR code").is_some());

    type_in(&mut harness, "Group name", "ops");
    type_in(&mut harness, "Members (handles, space-separated)", "bob");
    harness.get_by_label("Create group").click();
    until(&mut harness, "the group made", |h| {
        shows(h, "Group ops: create")
    });
    assert!(!shows(&harness, "failed"));

    type_in(&mut harness, "Handle to remove", "bob");
    harness.get_by_label("Remove…").click();
    harness.run_steps(2);
    // Nothing happens before the confirmation.
    assert!(shows(&harness, "Remove bob from the team?"));
    harness.get_by_label("Remove bob").click();
    until(&mut harness, "bob removed", |h| shows(h, "bob removed"));
    assert!(!shows(&harness, "failed"));
    harness.get_by_label("Members").click();
    until(&mut harness, "the members without bob", |h| {
        shows(h, "alice (you)") && !shows(h, "Safety number of bob")
    });
    harness.into_state().close_blocking().unwrap();
}

#[test]
fn two_members_compare_emoji_in_their_windows_and_both_show_verified() {
    let team = homes();
    let mut bob = window_on(&team.runtime, &team.bob);
    let mut alice = window_on(&team.runtime, &team.alice);
    open_team_window(&mut bob);
    open_team_window(&mut alice);
    alice.get_by_label("Compare emoji with bob").click();
    bob.get_by_label("Compare emoji with alice").click();
    let code_shown = |h: &Harness<'static, Desktop>| shows(h, "They match");
    until_both(&mut alice, &mut bob, "the emoji", code_shown, code_shown);
    alice.get_by_label("They match").click();
    bob.get_by_label("They match").click();
    until_both(
        &mut alice,
        &mut bob,
        "the verification",
        |h| shows(h, "bob is verified."),
        |h| shows(h, "alice is verified."),
    );
    until(&mut alice, "the verified mark", |h| shows(h, "verified ✔"));
    alice.into_state().close_blocking().unwrap();
    bob.into_state().close_blocking().unwrap();
}

fn set_window_focus(harness: &mut Harness<'static, Desktop>, focused: bool) {
    harness
        .input_mut()
        .viewports
        .entry(egui::ViewportId::ROOT)
        .or_default()
        .focused = Some(focused);
    harness.run_steps(2);
}

#[test]
fn a_message_in_the_background_notifies_with_the_sender_only_unless_text_is_turned_on() {
    let mut team = team();
    let mut harness = window(&team);
    set_window_focus(&mut harness, false);
    let runtime = team.runtime.clone();
    let mut send = |text: &str| runtime.block_on(team.alice.send("bob", text)).unwrap();

    send("the launch code is 1234");
    until(&mut harness, "a notification", |h| {
        !h.state().notifications.is_empty()
    });
    assert_eq!(harness.state().notifications, vec!["alice: new message"]);

    harness.state_mut().notifications.clear();
    harness.state_mut().notify_text = true;
    send("second line one\nline two");
    until(&mut harness, "a notification with text", |h| {
        !h.state().notifications.is_empty()
    });
    assert_eq!(
        harness.state().notifications,
        vec!["alice: second line one"]
    );

    // In front of the user: the unread count tells, no notification.
    harness.state_mut().notifications.clear();
    set_window_focus(&mut harness, true);
    send("third");
    until(&mut harness, "the third message counted", |h| {
        shows(h, "alice  (3)")
    });
    assert!(harness.state().notifications.is_empty());
    harness.into_state().close_blocking().unwrap();
}

fn type_in<S>(harness: &mut Harness<'static, S>, label: &str, text: &str) {
    let field = harness.get_by_label(label);
    field.focus();
    field.type_text(text);
    harness.run_steps(1);
}

#[test]
fn an_admin_creates_a_team_in_the_window_with_a_passphrase_and_is_asked_for_it_next_time() {
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let server = runtime.block_on(relay(dir.path()));
    let bootstrap = server.new_bootstrap_code().unwrap().to_owned();
    let home = dir.path().join("alice");
    let shell = Shell::new(home.clone(), runtime.clone(), Arc::new(|| {}));
    let mut harness = Harness::builder()
        .with_size(egui::vec2(900.0, 800.0))
        .build_ui_state(|ui, shell: &mut Shell| shell.ui(ui), shell);
    harness.run_steps(2);
    harness.get_by_label("Create a team (admin)").click();
    harness.run_steps(2);
    type_in(&mut harness, "Bootstrap code", &bootstrap);
    type_in(
        &mut harness,
        "Relay address",
        &server.local_addr().to_string(),
    );
    type_in(
        &mut harness,
        "Relay fingerprint",
        &hex_of(&server.fingerprint()),
    );
    type_in(&mut harness, "Your handle", "alice");
    type_in(&mut harness, "Team name", "acme");
    type_in(
        &mut harness,
        sotto_desktop::NEW_PASSPHRASE_LABEL,
        "correct horse",
    );
    type_in(&mut harness, sotto_desktop::AGAIN_LABEL, "correct hose");
    harness.get_by_label("Create team").click();
    harness.run_steps(2);
    assert!(shows(&harness, "The two passphrases differ."));
    assert!(harness.state().desktop().is_none());
    // Fixed: the second field says the same.
    let again = harness.get_by_label(sotto_desktop::AGAIN_LABEL);
    again.focus();
    harness.run_steps(1);
    for _ in 0.."correct hose".len() {
        harness.key_press(egui::Key::Backspace);
    }
    type_in(&mut harness, sotto_desktop::AGAIN_LABEL, "correct horse");
    harness.get_by_label("Create team").click();
    until(&mut harness, "the new team's conversations", |h| {
        h.state().desktop().is_some() && shows(h, "alice in acme")
    });
    harness.state_mut().close_blocking().unwrap();
    drop(harness);

    // Opened again: the store asks for its passphrase; a wrong one is
    // refused and the prompt stays, the right one opens it.
    let shell = Shell::new(home, runtime.clone(), Arc::new(|| {}));
    let mut harness = Harness::builder()
        .with_size(egui::vec2(900.0, 600.0))
        .build_ui_state(|ui, shell: &mut Shell| shell.ui(ui), shell);
    harness.run_steps(2);
    assert!(shows(&harness, "This profile is locked"));
    type_in(&mut harness, sotto_desktop::PASSPHRASE_LABEL, "wrong");
    harness.get_by_label("Unlock").click();
    harness.run_steps(2);
    assert!(shows(
        &harness,
        "That passphrase does not open this profile."
    ));
    assert!(harness.state().desktop().is_none());
    type_in(
        &mut harness,
        sotto_desktop::PASSPHRASE_LABEL,
        "correct horse",
    );
    harness.get_by_label("Unlock").click();
    until(&mut harness, "the profile open", |h| {
        h.state().desktop().is_some() && shows(h, "alice in acme")
    });
    harness.state_mut().close_blocking().unwrap();
    drop(server);
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_long_conversation_opens_on_its_last_page_and_earlier_pages_load_on_demand() {
    let team = team();
    // 1,200 messages from alice in bob's store (filed directly: sending
    // them through the relay would only make the test slow).
    team.runtime.block_on(async {
        let mut bob = App::open(
            &team.bob_home,
            KeySource::key_file_in(&team.bob_home),
            system_clock(),
        )
        .await
        .unwrap();
        bob.client()
            .engine_mut()
            .bench_fill_history("alice", &["deploy"], 1_200)
            .unwrap();
    });
    let mut harness = window(&team);
    harness.state_mut().open_named("alice");
    // (The last one shows in the side list too: the one before it shows
    // only in the conversation.)
    until(&mut harness, "the last messages", |h| {
        shows(h, "message 1198 about deploy")
    });
    // Only the last page was loaded, and only the rows near the view
    // are drawn: the page's first message is not, until scrolled to.
    assert_eq!(harness.state().session().lines(), 500);
    assert!(!shows(&harness, "message 700 about deploy"));
    scroll_up(&mut harness);
    until(&mut harness, "the page's first message, scrolled to", |h| {
        shows(h, "message 700 about deploy")
    });
    assert!(!shows(&harness, "message 699 about deploy"));
    assert!(!shows(&harness, "message 1198 about deploy"));
    // The next page comes from the store.
    harness
        .get_by_label("Load earlier messages")
        .click_accesskit();
    // (A person scrolls up to the button; the screen reader's click
    // reaches it wherever it is.)
    until(&mut harness, "the page before", |h| {
        h.state().session().lines() == 1_000
    });
    assert!(harness.state().session().has_earlier());
    until(&mut harness, "the page drawn", |h| {
        shows(h, "message 200 about deploy")
    });
    harness
        .get_by_label("Load earlier messages")
        .click_accesskit();
    until(&mut harness, "the first page", |h| {
        h.state().session().lines() == 1_200
    });
    // The first message reached: nothing more to load.
    assert!(!harness.state().session().has_earlier());
    until(&mut harness, "the first message drawn", |h| {
        shows(h, "message 0 about deploy")
    });
    assert!(!shows(&harness, "Load earlier messages"));
    harness.into_state().close_blocking().unwrap();
}

/// Turns the mouse wheel over the messages as far up as they go.
fn scroll_up(harness: &mut Harness<'static, Desktop>) {
    harness.hover_at(egui::pos2(500.0, 300.0));
    harness.event(egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Point,
        delta: egui::vec2(0.0, 1.0e7),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Unknown,
        modifiers: egui::Modifiers::NONE,
    });
}

/// Syncs alice until her history with bob satisfies `done`.
fn alice_sees(team: &mut Team, what: &str, done: impl Fn(&[sotto_core::Message]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        team.runtime.block_on(team.alice.sync()).unwrap();
        let history = team.alice.history("bob").unwrap();
        if done(&history) {
            return;
        }
        assert!(Instant::now() < deadline, "alice never saw {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn reply_react_edit_and_delete_from_a_message_menu_reach_the_other_member() {
    let mut team = team();
    let mut harness = window(&team);
    team.runtime
        .block_on(team.alice.send("bob", "hello bob"))
        .unwrap();
    harness.state_mut().open_named("alice");
    until(&mut harness, "alice's message", |h| shows(h, "hello bob"));

    // React from the menu.
    right_click(&mut harness, "hello bob");
    harness.run_steps(2);
    harness.get_by_label("👍").click();
    until(&mut harness, "the reaction shown", |h| {
        shows(h, "hello bob [👍 1]")
    });
    alice_sees(&mut team, "the reaction", |h| {
        h.iter()
            .any(|m| m.text == "hello bob" && m.reactions.contains_key("👍"))
    });

    // Reply: the compose box says to what; the reply names it.
    right_click(&mut harness, "hello bob");
    harness.run_steps(2);
    harness.get_by_label("Reply").click();
    harness.run_steps(2);
    assert!(shows(&harness, "Replying to alice: hello bob"));
    let compose =
        harness.get_by_label("Message (Enter sends, Shift+Enter a new line, / for commands)");
    compose.focus();
    compose.type_text("yes, hello");
    harness.run_steps(1);
    harness.key_press(egui::Key::Enter);
    harness.run_steps(2);
    assert!(!shows(&harness, "Replying to"));
    alice_sees(&mut team, "the reply", |h| {
        let original = h
            .iter()
            .find(|m| m.text == "hello bob")
            .map(|m| m.id.clone());
        h.iter()
            .any(|m| m.text == "yes, hello" && m.reply_to.is_some() && m.reply_to == original)
    });

    // Edit my own message: the compose box starts from its text.
    until(&mut harness, "my reply with its ID", |h| {
        !h.state().session().busy() && shows(h, "yes, hello")
    });
    right_click(&mut harness, "yes, hello");
    harness.run_steps(2);
    harness.get_by_label("Edit").click();
    harness.run_steps(2);
    assert!(shows(&harness, "Editing your message"));
    let compose =
        harness.get_by_label("Message (Enter sends, Shift+Enter a new line, / for commands)");
    assert_eq!(compose.value().as_deref(), Some("yes, hello"));
    compose.focus();
    harness.run_steps(1);
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    harness.run_steps(1);
    harness
        .get_by_label("Message (Enter sends, Shift+Enter a new line, / for commands)")
        .type_text("yes, hello again");
    harness.run_steps(1);
    harness.key_press(egui::Key::Enter);
    until(&mut harness, "the edit shown", |h| {
        shows(h, "yes, hello again (edited)")
    });
    alice_sees(&mut team, "the edit", |h| {
        h.iter()
            .any(|m| m.text == "yes, hello again" && m.edited_at.is_some())
    });

    // Delete it for everyone.
    right_click(&mut harness, "yes, hello again");
    harness.run_steps(2);
    harness.get_by_label("Delete for everyone").click();
    until(&mut harness, "the deleted stub", |h| {
        !shows(h, "yes, hello again")
    });
    alice_sees(&mut team, "the delete", |h| {
        h.iter().any(|m| m.deleted) && !h.iter().any(|m| m.text.contains("hello again"))
    });
    // alice's message has no Edit or Delete in its menu.
    right_click(&mut harness, "hello bob");
    harness.run_steps(2);
    assert!(harness.query_by_label("Reply").is_some());
    assert!(harness.query_by_label("Edit").is_none());
    assert!(harness.query_by_label("Delete for everyone").is_none());
    harness.into_state().close_blocking().unwrap();
}

/// Opens the menu of the message showing `text` (the view draws after the
/// side list, whose last-message line may show the same text).
fn right_click(harness: &mut Harness<'static, Desktop>, text: &str) {
    harness
        .query_all_by_label_contains(text)
        .last()
        .expect("the message")
        .click_secondary();
}

/// A file that egui hands over as dropped onto the window.
#[derive(Debug)]
struct Dropped(std::path::PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &std::path::Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

/// Drops `path` onto the window (the next frame sees it).
fn drop_file<S>(harness: &mut Harness<'static, S>, path: &std::path::Path) {
    harness
        .input_mut()
        .dropped_files
        .push(Arc::new(Dropped(path.to_owned())));
    harness.run_steps(1);
}

/// A small PNG: a 48×32 gradient.
fn small_png() -> Vec<u8> {
    let picture = image::RgbImage::from_fn(48, 32, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 7) as u8, 128])
    });
    let mut png = Vec::new();
    picture
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

fn click(harness: &mut Harness<'static, Desktop>, label: &str) {
    harness.get_by_label(label).click();
    harness.run_steps(2);
}

#[test]
fn a_png_attached_in_one_window_shows_as_a_card_with_a_thumbnail_in_the_other_and_saves_byte_for_byte()
 {
    let team = homes();
    let files = tempfile::tempdir().unwrap();
    let original = files.path().join("chart.png");
    let png = small_png();
    std::fs::write(&original, &png).unwrap();
    let mut alice = window_on(&team.runtime, &team.alice);
    let mut bob = window_on(&team.runtime, &team.bob);
    alice.state_mut().open_named("bob");
    bob.state_mut().open_named("alice");
    alice.run_steps(2);

    click(&mut alice, sotto_desktop::ATTACH_BUTTON);
    type_in(
        &mut alice,
        sotto_desktop::ATTACH_PATH_LABEL,
        &original.display().to_string(),
    );
    type_in(&mut alice, sotto_desktop::CAPTION_LABEL, "the chart");
    click(&mut alice, sotto_desktop::SEND_FILE_BUTTON);
    until_both(
        &mut alice,
        &mut bob,
        "the card in both windows, with the thumbnail in bob's",
        |h| shows(h, "chart.png") && shows(h, "sent"),
        |h| shows(h, "chart.png") && shows(h, "the chart") && shows(h, "Picture chart.png"),
    );

    // Save as… a path of bob's choosing: the very bytes.
    let saved = files.path().join("from alice.png");
    click(&mut bob, sotto_desktop::SAVE_AS_BUTTON);
    type_in(
        &mut bob,
        sotto_desktop::SAVE_PATH_LABEL,
        &saved.display().to_string(),
    );
    click(&mut bob, sotto_desktop::SAVE_HERE_BUTTON);
    until(&mut bob, "the saved note", |h| shows(h, "Saved to"));
    assert_eq!(std::fs::read(&saved).unwrap(), png);
    alice.into_state().close_blocking().unwrap();
    bob.into_state().close_blocking().unwrap();
}

#[test]
fn a_file_dropped_onto_the_window_is_sent_to_the_open_conversation() {
    let mut team = team();
    let mut harness = window(&team);
    harness.state_mut().open_named("alice");
    harness.run_steps(2);
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("notes.txt");
    std::fs::write(&path, b"dropped notes\n").unwrap();
    drop_file(&mut harness, &path);
    until(&mut harness, "the file sent", |h| {
        !h.state().session().busy() && shows(h, "notes.txt") && shows(h, "sent")
    });
    alice_sees(&mut team, "the dropped file", |h| {
        h.iter().any(|m| {
            m.file
                .as_ref()
                .is_some_and(|f| f.name == "notes.txt" && f.size == 14)
        })
    });
    harness.into_state().close_blocking().unwrap();
}

#[test]
fn the_join_form_reads_the_code_from_a_picture_of_its_qr_code_or_says_none_was_found() {
    let runtime = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let shell = Shell::new(dir.path().join("new"), runtime, Arc::new(|| {}));
    let mut harness = Harness::builder()
        .with_size(egui::vec2(900.0, 700.0))
        .build_ui_state(|ui, shell: &mut Shell| shell.ui(ui), shell);
    harness.run_steps(2);

    // A picture without a code, by its path: a clear error.
    let blank = dir.path().join("blank.png");
    image::GrayImage::from_pixel(80, 80, image::Luma([255]))
        .save(&blank)
        .unwrap();
    type_in(
        &mut harness,
        sotto_desktop::QR_PATH_LABEL,
        &blank.display().to_string(),
    );
    harness.get_by_label(sotto_desktop::QR_BUTTON).click();
    harness.run_steps(2);
    assert!(shows(&harness, "no QR code was found in that picture"));

    // The code's picture dropped onto the form fills the code in.
    let code = "sotto-invite:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    let qr = qrcode::QrCode::new(code.as_bytes()).unwrap();
    let width = u32::try_from(qr.width()).unwrap();
    let colors = qr.to_colors();
    let picture = image::GrayImage::from_fn((width + 8) * 4, (width + 8) * 4, |x, y| {
        let (mx, my) = (x / 4, y / 4);
        let dark = (4..width + 4).contains(&mx)
            && (4..width + 4).contains(&my)
            && colors[((my - 4) * width + (mx - 4)) as usize] == qrcode::Color::Dark;
        image::Luma([if dark { 0 } else { 255 }])
    });
    let path = dir.path().join("invite.png");
    picture.save(&path).unwrap();
    harness
        .input_mut()
        .dropped_files
        .push(Arc::new(Dropped(path)));
    harness.run_steps(2);
    assert_eq!(
        harness.get_by_label(CODE_LABEL).value().as_deref(),
        Some(code)
    );
    assert!(shows(&harness, "Code read from the picture."));
}
