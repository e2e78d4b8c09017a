//! The chat as a user sees it: keys in, the fake owner's calls and the
//! rendered screen (ratatui's `TestBackend`) out.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use serde_json::json;

use super::backend::fake::FakeOwner;
use super::*;

async fn chat(options: Options) -> (Driver, FakeOwner, Terminal<TestBackend>) {
    let owner = FakeOwner::new();
    owner.inner.lock().unwrap().histories.insert(
        "bob".into(),
        json!({"messages": [
            {"id": "h1", "from": "bob", "to": null, "group": null, "text": "hello from history", "sent_at": 3_600_000, "status": "received"},
            {"id": "h2", "from": "alice", "to": "bob", "group": null, "text": "my old reply", "sent_at": 3_660_000, "status": "delivered"},
        ]}),
    );
    let mut driver = Driver::start(owner.clone(), options).await.unwrap();
    driver.settle().await;
    let terminal = Terminal::new(TestBackend::new(80, 20)).unwrap();
    (driver, owner, terminal)
}

fn screen(terminal: &mut Terminal<TestBackend>, driver: &Driver) -> Vec<String> {
    terminal
        .draw(|frame| {
            ui::draw(frame, &driver.chat);
        })
        .unwrap();
    let buffer = terminal.backend().buffer();
    let width = usize::from(buffer.area.width);
    buffer
        .content()
        .chunks(width)
        .map(|row| row.iter().map(|cell| cell.symbol()).collect::<String>())
        .collect()
}

fn shows(screen: &[String], needle: &str) -> bool {
    screen.iter().any(|row| row.contains(needle))
}

fn press(driver: &mut Driver, code: KeyCode) {
    driver.key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn type_text(driver: &mut Driver, text: &str) {
    for c in text.chars() {
        press(driver, KeyCode::Char(c));
    }
}

fn message(id: &str, from: &str, group: Option<&str>, text: &str) -> serde_json::Value {
    json!({"id": id, "from": from, "to": null, "group": group, "text": text, "sent_at": 7_200_000, "status": "received"})
}

#[tokio::test]
async fn the_side_list_shows_members_groups_and_unread_counts() {
    let (mut driver, owner, mut terminal) = chat(Options::default()).await;
    let before = screen(&mut terminal, &driver);
    assert!(shows(&before, "Conversations"));
    for name in ["sotto", "bob", "carol", "#ops"] {
        assert!(
            shows(&before, &format!(" {name} ")),
            "{name} missing:\n{}",
            before.join("\n")
        );
    }
    // My own handle is not a conversation.
    assert!(
        !before.iter().any(|row| row.starts_with("│alice")),
        "{}",
        before.join("\n")
    );
    owner.notify("message", message("m1", "carol", None, "ping"));
    owner.notify("message", message("m2", "bob", Some("ops"), "one"));
    owner.notify("message", message("m3", "carol", Some("ops"), "two"));
    driver.settle().await;
    let after = screen(&mut terminal, &driver);
    assert!(shows(&after, "carol (1)"), "{}", after.join("\n"));
    assert!(shows(&after, "#ops (2)"), "{}", after.join("\n"));
    assert!(shows(&after, "3 unread"), "{}", after.join("\n"));
}

#[tokio::test]
async fn arrows_and_enter_open_a_conversation_with_its_history_times_and_statuses() {
    let (mut driver, owner, mut terminal) = chat(Options::default()).await;
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(
        owner.calls("history"),
        vec![json!({"with": "bob", "limit": 500})]
    );
    let rows = screen(&mut terminal, &driver);
    assert!(shows(&rows, "┌ bob ─"), "{}", rows.join("\n"));
    assert!(
        shows(&rows, "01:00 bob: hello from history"),
        "{}",
        rows.join("\n")
    );
    assert!(
        shows(&rows, "01:01 me: my old reply  delivered"),
        "{}",
        rows.join("\n")
    );
    assert!(shows(&rows, "message to bob"), "{}", rows.join("\n"));
    // Down twice more and Enter: the group.
    press(&mut driver, KeyCode::Esc);
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert!(shows(&screen(&mut terminal, &driver), "┌ #ops ─"));
    assert_eq!(
        owner.calls("history").last(),
        Some(&json!({"group": "ops", "limit": 500}))
    );
}

#[tokio::test]
async fn typing_and_enter_sends_through_the_owner_and_shows_the_message_and_its_status() {
    let (mut driver, owner, mut terminal) = chat(Options::default()).await;
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    type_text(&mut driver, "hi bob");
    assert!(shows(&screen(&mut terminal, &driver), "│hi bob"));
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(
        owner.calls("send"),
        vec![json!({"to": "bob", "text": "hi bob"})]
    );
    assert!(driver.chat.compose.text.is_empty());
    let rows = screen(&mut terminal, &driver);
    assert!(
        rows.iter().any(|r| r.contains("me: hi bob  sent")),
        "{}",
        rows.join("\n")
    );
    // The id the owner gave is the one status notifications name.
    let id = owner.calls("send").len();
    assert!(id > 0);
    let sent_id = match driver.chat.current().entries.last() {
        Some(state::Entry::Message(m)) => m.id.clone(),
        other => panic!("{other:?}"),
    };
    owner.notify("status", json!({"id": sent_id, "status": "read"}));
    driver.settle().await;
    assert!(shows(&screen(&mut terminal, &driver), "me: hi bob  read"));
    // In a group, `group.send`.
    driver.key(KeyEvent::new(KeyCode::Char('n'), KeyModifiers::CONTROL));
    assert_eq!(driver.chat.current().kind, Kind::Contact("carol".into()));
    driver.key(KeyEvent::new(KeyCode::Char('n'), KeyModifiers::CONTROL));
    assert_eq!(driver.chat.current().kind, Kind::Group("ops".into()));
    type_text(&mut driver, "all hands");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(
        owner.calls("group.send"),
        vec![json!({"group": "ops", "text": "all hands"})]
    );
}

#[tokio::test]
async fn a_refused_send_is_shown_and_the_text_comes_back() {
    let (mut driver, owner, mut terminal) = chat(Options::default()).await;
    owner.inner.lock().unwrap().refuse_sends = Some("bob is no longer a member of the team".into());
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    type_text(&mut driver, "still there?");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    let rows = screen(&mut terminal, &driver);
    assert!(
        shows(&rows, "not sent: bob is no longer a member"),
        "{}",
        rows.join("\n")
    );
    assert!(shows(&rows, "│still there?"), "{}", rows.join("\n"));
}

#[tokio::test]
async fn alt_enter_inserts_a_line_break_and_enter_sends_both_lines() {
    let (mut driver, owner, mut terminal) = chat(Options::default()).await;
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    type_text(&mut driver, "first");
    driver.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT));
    type_text(&mut driver, "second");
    driver.settle().await;
    assert!(owner.calls("send").is_empty());
    let rows = screen(&mut terminal, &driver);
    let first = rows
        .iter()
        .position(|r| r.starts_with("│first"))
        .expect("first line");
    assert!(
        rows[first + 1].starts_with("│second"),
        "{}",
        rows.join("\n")
    );
    // The cursor sits after "second".
    terminal
        .backend_mut()
        .assert_cursor_position((7, first as u16 + 1));
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(
        owner.calls("send"),
        vec![json!({"to": "bob", "text": "first\nsecond"})]
    );
    let rows = screen(&mut terminal, &driver);
    let sent = rows
        .iter()
        .position(|r| r.contains("me: first"))
        .expect("sent");
    assert!(rows[sent + 1].contains("second"), "{}", rows.join("\n"));
}

#[tokio::test]
async fn a_resize_redraws_the_whole_layout_at_the_new_size() {
    let (mut driver, _owner, mut terminal) = chat(Options::default()).await;
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    let wide = screen(&mut terminal, &driver);
    assert_eq!((wide.len(), wide[0].chars().count()), (20, 80));
    terminal.backend_mut().resize(50, 12);
    driver.terminal(TermEvent::Resize(50, 12));
    let narrow = screen(&mut terminal, &driver);
    assert_eq!((narrow.len(), narrow[0].chars().count()), (12, 50));
    // Everything is still there: title, list, view, compose box, help bar.
    assert!(narrow[0].contains("alice in acme"), "{}", narrow.join("\n"));
    assert!(shows(&narrow, "bob"), "{}", narrow.join("\n"));
    assert!(shows(&narrow, "hello from"), "{}", narrow.join("\n"));
    assert!(shows(&narrow, "message to bob"), "{}", narrow.join("\n"));
    assert!(narrow[11].contains("Enter send"), "{}", narrow.join("\n"));
    // Long lines wrap inside the narrower view instead of being cut.
    let rows_of_history = narrow
        .iter()
        .filter(|r| r.contains("history") || r.contains("hello from"))
        .count();
    assert!(rows_of_history >= 1);
    // Too small to be useful: a sentence, no panic.
    terminal.backend_mut().resize(10, 4);
    let tiny = screen(&mut terminal, &driver);
    assert!(tiny.join("").contains("sotto"));
}

#[tokio::test]
async fn the_help_bar_shows_the_keys_for_where_the_focus_is() {
    let (mut driver, _owner, mut terminal) = chat(Options::default()).await;
    let rows = screen(&mut terminal, &driver);
    let help = rows.last().unwrap();
    for words in [
        "↑↓ move",
        "Enter open",
        "Tab write",
        "^C quit",
        "/help commands",
    ] {
        assert!(help.contains(words), "{words:?} not in {help:?}");
    }
    press(&mut driver, KeyCode::Tab);
    let rows = screen(&mut terminal, &driver);
    let help = rows.last().unwrap();
    for words in ["Enter send", "Alt+Enter new line", "Tab/Esc list"] {
        assert!(help.contains(words), "{words:?} not in {help:?}");
    }
    type_text(&mut driver, "/help");
    press(&mut driver, KeyCode::Enter);
    let rows = screen(&mut terminal, &driver);
    // The end of the help is on screen (the start scrolled up).
    for words in ["/file PATH [CAPTION]", "/reply MSG TEXT, /react MSG EMOJI"] {
        assert!(shows(&rows, words), "{}", rows.join("\n"));
    }
}

#[tokio::test]
async fn slash_quit_and_ctrl_c_end_the_chat() {
    let (mut driver, _owner, _terminal) = chat(Options::default()).await;
    type_text(&mut driver, "/quit");
    assert!(!driver.chat.quit);
    press(&mut driver, KeyCode::Enter);
    assert!(driver.chat.quit);
    let (mut driver, _owner, _terminal) = chat(Options::default()).await;
    driver.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(driver.chat.quit);
}

#[tokio::test]
async fn slash_commands_run_the_cli_command_and_show_its_output() {
    let (mut driver, owner, mut terminal) = chat(Options::default()).await;
    press(&mut driver, KeyCode::Tab);
    type_text(&mut driver, "/invite dave --expires 1d");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(
        owner.inner.lock().unwrap().commands,
        vec![vec![
            "invite".to_owned(),
            "dave".into(),
            "--expires".into(),
            "1d".into()
        ]]
    );
    let rows = screen(&mut terminal, &driver);
    assert!(
        shows(&rows, "$ sotto invite dave --expires 1d"),
        "{}",
        rows.join("\n")
    );
    assert!(shows(&rows, "ran sotto invite dave"), "{}", rows.join("\n"));
    assert!(shows(&rows, "Give this code"), "{}", rows.join("\n"));
    assert!(!shows(&rows, "QR code"), "{}", rows.join("\n"));
    // /join opens a conversation with someone not in the list yet.
    type_text(&mut driver, "/join erin");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert!(shows(&screen(&mut terminal, &driver), "┌ erin ─"));
    assert_eq!(
        owner.calls("history").last(),
        Some(&json!({"with": "erin", "limit": 500}))
    );
}

#[tokio::test]
async fn live_messages_and_key_change_notices_appear_in_the_open_conversation() {
    let (mut driver, owner, mut terminal) = chat(Options::default()).await;
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    owner.notify("message", message("m9", "bob", None, "are you there?"));
    owner.notify("notice", json!({"text": "bob's key changed (the admin re-invited them): verify them again with `sotto verify bob`"}));
    owner.notify("connection", json!({"online": false}));
    driver.settle().await;
    let rows = screen(&mut terminal, &driver);
    assert!(
        shows(&rows, "02:00 bob: are you there?"),
        "{}",
        rows.join("\n")
    );
    assert!(shows(&rows, "-- bob's key changed"), "{}", rows.join("\n"));
    assert!(rows[0].contains("offline"), "{}", rows[0]);
    // Read in the open conversation: no unread count.
    assert_eq!(driver.chat.unread_total(), 0);
}

#[tokio::test]
async fn control_characters_from_a_peer_never_reach_the_terminal() {
    let (mut driver, owner, mut terminal) = chat(Options::default()).await;
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    owner.notify(
        "message",
        message("evil", "bob", None, "a\x1b]0;pwned\x07b\x1b[2Jc\rd"),
    );
    driver.settle().await;
    let rows = screen(&mut terminal, &driver);
    let all = rows.join("");
    assert!(!all.chars().any(|c| c.is_control()), "{all:?}");
    assert!(shows(&rows, "bob: a"), "{}", rows.join("\n"));
}

#[tokio::test]
async fn bell_rings_for_other_conversations_and_notifications_name_only_the_sender() {
    let options = Options {
        bell: true,
        notify: false,
    };
    let (mut driver, owner, _terminal) = chat(options).await;
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    owner.notify("message", message("a", "bob", None, "in the open one"));
    driver.settle().await;
    assert!(driver.alerts.is_empty());
    owner.notify("message", message("b", "carol", None, "elsewhere"));
    driver.settle().await;
    assert_eq!(driver.alerts, vec!["\x07".to_owned()]);
    // In the background, the open conversation rings too.
    driver.terminal(TermEvent::FocusLost);
    owner.notify("message", message("c", "bob", None, "while away"));
    driver.settle().await;
    assert_eq!(driver.alerts.len(), 2);

    // Without --bell: silence.
    let (mut quiet, owner, _terminal) = chat(Options::default()).await;
    owner.notify("message", message("d", "carol", None, "psst"));
    quiet.settle().await;
    assert!(quiet.alerts.is_empty());

    let both = Options {
        bell: true,
        notify: true,
    };
    let sequence = alert_sequence(both, "carol", &Kind::Group("ops".into())).unwrap();
    assert!(sequence.starts_with('\x07'));
    assert!(sequence.contains("\x1b]777;notify;sotto;New message from carol in #ops\x1b\\"));
    assert!(sequence.contains("\x1b]9;New message from carol in #ops\x1b\\"));
    assert!(alert_sequence(Options::default(), "carol", &Kind::Console).is_none());
}

#[tokio::test]
async fn missed_notifications_reload_the_open_conversation() {
    let (mut driver, owner, mut terminal) = chat(Options::default()).await;
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(owner.calls("history").len(), 1);
    owner.notify("lagged", json!({"missed": 3}));
    driver.settle().await;
    assert_eq!(
        owner.calls("history"),
        vec![json!({"with": "bob", "limit": 500}); 2]
    );
    let rows = screen(&mut terminal, &driver);
    assert!(shows(&rows, "3 updates were missed"), "{}", rows.join("\n"));
    // Reloading shows each message once.
    assert_eq!(
        rows.iter()
            .filter(|r| r.contains("hello from history"))
            .count(),
        1
    );
}

#[tokio::test]
async fn with_the_relay_down_groups_still_show_and_the_title_says_offline() {
    let owner = FakeOwner::new();
    owner.inner.lock().unwrap().relay_down = true;
    let mut driver = Driver::start(owner.clone(), Options::default())
        .await
        .unwrap();
    driver.settle().await;
    let mut terminal = Terminal::new(TestBackend::new(80, 20)).unwrap();
    let rows = screen(&mut terminal, &driver);
    assert!(
        rows[0].contains("offline: messages are queued"),
        "{}",
        rows[0]
    );
    assert!(shows(&rows, "#ops"), "{}", rows.join("\n"));
    assert!(!shows(&rows, " bob "), "{}", rows.join("\n"));
    assert!(
        shows(&rows, "could not list the members: cannot reach the relay"),
        "{}",
        rows.join("\n")
    );
    // Once it is back, /members fills the list.
    owner.inner.lock().unwrap().relay_down = false;
    type_text(&mut driver, "/members");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    let rows = screen(&mut terminal, &driver);
    assert!(shows(&rows, " bob "), "{}", rows.join("\n"));
    assert!(rows[0].contains("· online"), "{}", rows[0]);
}

#[tokio::test]
async fn page_up_shows_older_messages_and_page_down_comes_back() {
    let (mut driver, owner, mut terminal) = chat(Options::default()).await;
    let many: Vec<serde_json::Value> = (0..40)
        .map(|n| json!({"id": format!("old{n}"), "from": "bob", "group": null, "text": format!("message number {n}"), "sent_at": 0, "status": "received"}))
        .collect();
    owner
        .inner
        .lock()
        .unwrap()
        .histories
        .insert("bob".into(), json!({ "messages": many }));
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    let rows = screen(&mut terminal, &driver);
    assert!(shows(&rows, "message number 39"), "{}", rows.join("\n"));
    assert!(!shows(&rows, "message number 20 "), "{}", rows.join("\n"));
    press(&mut driver, KeyCode::PageUp);
    press(&mut driver, KeyCode::PageUp);
    let rows = screen(&mut terminal, &driver);
    assert!(!shows(&rows, "message number 39"), "{}", rows.join("\n"));
    assert!(shows(&rows, "message number 29"), "{}", rows.join("\n"));
    assert!(shows(&rows, "10 lines below, PgDn"), "{}", rows.join("\n"));
    press(&mut driver, KeyCode::PageDown);
    press(&mut driver, KeyCode::PageDown);
    let rows = screen(&mut terminal, &driver);
    assert!(shows(&rows, "message number 39"), "{}", rows.join("\n"));
    assert!(!shows(&rows, "lines below"), "{}", rows.join("\n"));
    // Far past the top, the view stops at the first message.
    for _ in 0..30 {
        press(&mut driver, KeyCode::PageUp);
    }
    let rows = screen(&mut terminal, &driver);
    assert!(shows(&rows, "message number 0 "), "{}", rows.join("\n"));
    // The driver keeps the scroll the drawing used, so one PgDn moves at
    // once.
    let mut used = 0;
    terminal
        .draw(|frame| used = ui::draw(frame, &driver.chat))
        .unwrap();
    driver.chat.scroll = used;
    press(&mut driver, KeyCode::PageDown);
    let rows = screen(&mut terminal, &driver);
    assert!(!shows(&rows, "message number 0 "), "{}", rows.join("\n"));
    assert!(shows(&rows, "message number 5 "), "{}", rows.join("\n"));
}

#[tokio::test]
async fn a_key_change_found_by_a_sync_shows_in_that_members_conversation() {
    let owner = FakeOwner::new();
    owner.inner.lock().unwrap().notices =
        vec!["carol's key changed (the admin re-invited them): verify them again with `sotto verify carol`".into()];
    let mut driver = Driver::start(owner.clone(), Options::default())
        .await
        .unwrap();
    driver.settle().await;
    assert_eq!(owner.calls("sync").len(), 1);
    let mut terminal = Terminal::new(TestBackend::new(80, 20)).unwrap();
    assert!(shows(&screen(&mut terminal, &driver), "carol (1)"));
    driver.key(KeyEvent::new(KeyCode::Char('n'), KeyModifiers::CONTROL));
    driver.key(KeyEvent::new(KeyCode::Char('n'), KeyModifiers::CONTROL));
    driver.settle().await;
    let rows = screen(&mut terminal, &driver);
    assert!(shows(&rows, "┌ carol ─"), "{}", rows.join("\n"));
    assert!(
        shows(&rows, "-- carol's key changed"),
        "{}",
        rows.join("\n")
    );
}

#[tokio::test]
async fn a_paste_keeps_its_line_breaks_and_does_not_send() {
    let (mut driver, owner, _terminal) = chat(Options::default()).await;
    press(&mut driver, KeyCode::Down);
    driver.terminal(TermEvent::Paste("one\r\ntwo".into()));
    driver.settle().await;
    assert!(owner.calls("send").is_empty());
    assert_eq!(
        owner.calls("history"),
        vec![json!({"with": "bob", "limit": 500})]
    );
    assert_eq!(driver.chat.compose.text, "one\ntwo");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(
        owner.calls("send"),
        vec![json!({"to": "bob", "text": "one\ntwo"})]
    );
}

#[tokio::test]
async fn what_is_shown_in_a_focused_terminal_is_marked_read_and_nothing_else() {
    let (mut driver, owner, _terminal) = chat(Options::default()).await;
    // Messages in a closed conversation are not read.
    owner.notify("message", message("m1", "bob", None, "are you there?"));
    driver.settle().await;
    assert!(owner.calls("read").is_empty(), "read before it was shown");
    // Opening bob's conversation shows its history: read.
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(owner.calls("read"), vec![json!({"with": "bob"})]);
    // A message arriving in the open conversation is on screen: read.
    owner.notify("message", message("m2", "bob", None, "hello?"));
    driver.settle().await;
    assert_eq!(owner.calls("read").len(), 2);
    // My own message is not something to mark.
    let mut mine = message("m3", "alice", None, "yes");
    mine["to"] = json!("bob");
    owner.notify("message", mine);
    driver.settle().await;
    assert_eq!(owner.calls("read").len(), 2);
    // Groups get no read receipts.
    owner.notify("message", message("m4", "carol", Some("ops"), "standup"));
    driver.settle().await;
    assert_eq!(owner.calls("read").len(), 2);
}

#[tokio::test]
async fn a_message_that_arrives_while_the_terminal_is_in_the_background_is_read_when_it_comes_back()
{
    let (mut driver, owner, _terminal) = chat(Options::default()).await;
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    let opened = owner.calls("read").len();
    driver.terminal(TermEvent::FocusLost);
    owner.notify("message", message("m1", "bob", None, "ping"));
    driver.settle().await;
    assert_eq!(
        owner.calls("read").len(),
        opened,
        "read while not looked at"
    );
    driver.terminal(TermEvent::FocusGained);
    driver.settle().await;
    assert_eq!(owner.calls("read").len(), opened + 1);
    assert_eq!(owner.calls("read").last(), Some(&json!({"with": "bob"})));
}

#[tokio::test]
async fn going_back_to_a_loaded_conversation_with_new_messages_marks_them_read() {
    let (mut driver, owner, _terminal) = chat(Options::default()).await;
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    // To carol, then bob writes: unread in bob's (loaded) conversation.
    press(&mut driver, KeyCode::Esc);
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    let before = owner.calls("read").len();
    owner.notify("message", message("m1", "bob", None, "back?"));
    driver.settle().await;
    assert_eq!(owner.calls("read").len(), before);
    press(&mut driver, KeyCode::Esc);
    press(&mut driver, KeyCode::Up);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(owner.calls("read").len(), before + 1);
    assert_eq!(owner.calls("read").last(), Some(&json!({"with": "bob"})));
}

#[tokio::test]
async fn unread_counts_come_from_the_owner_so_they_outlive_the_chat() {
    let owner = FakeOwner::new();
    owner.inner.lock().unwrap().conversations = Some(json!({"conversations": [
        {"with": "bob", "unread": 0, "last": null},
        {"with": "carol", "unread": 3, "last": null},
        {"group": "ops", "group_id": "ab", "unread": 2, "last": null},
    ]}));
    let mut driver = Driver::start(owner.clone(), Options::default())
        .await
        .unwrap();
    driver.settle().await;
    let mut terminal = Terminal::new(TestBackend::new(80, 20)).unwrap();
    let rows = screen(&mut terminal, &driver);
    assert!(shows(&rows, "carol (3)"), "{}", rows.join("\n"));
    assert!(shows(&rows, "#ops (2)"), "{}", rows.join("\n"));
    assert!(!shows(&rows, "bob ("), "{}", rows.join("\n"));
    // Opening the group shows it: read there too (a local mark, no receipt).
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(owner.calls("read"), vec![json!({"group": "ops"})]);
    assert!(!shows(&screen(&mut terminal, &driver), "#ops (2)"));
}

#[tokio::test]
async fn an_updated_message_is_replaced_in_place_with_its_reactions_or_stub() {
    let (mut driver, owner, mut terminal) = chat(Options::default()).await;
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    let mut edited = message("h1", "bob", None, "hello, edited");
    edited["edited"] = json!(true);
    edited["reactions"] = json!({"👍": 2});
    owner.notify("message.updated", edited);
    // An update of a message this chat never showed adds nothing.
    owner.notify("message.updated", message("zz", "bob", None, "old one"));
    driver.settle().await;
    let rows = screen(&mut terminal, &driver);
    // The emoji is two cells wide: the screen shows it, then a blank cell.
    assert!(
        shows(&rows, "bob: hello, edited (edited) [👍") && shows(&rows, " 2]"),
        "{}",
        rows.join("\n")
    );
    assert!(!shows(&rows, "hello from history"), "{}", rows.join("\n"));
    assert!(!shows(&rows, "old one"), "{}", rows.join("\n"));
    let mut deleted = message("h1", "bob", None, "");
    deleted["deleted"] = json!(true);
    owner.notify("message.updated", deleted);
    driver.settle().await;
    let rows = screen(&mut terminal, &driver);
    assert!(
        shows(&rows, "bob: (message deleted)"),
        "{}",
        rows.join("\n")
    );
}

#[tokio::test]
async fn reply_react_edit_and_delete_are_typed_as_commands_and_change_the_line_in_place() {
    let (mut driver, owner, mut terminal) = chat(Options::default()).await;
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    // ^2 is bob's h1 (the newest, ^, is my h2).
    type_text(&mut driver, "/react ^2 👍");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(
        owner.calls("react"),
        vec![json!({"id": "h1", "emoji": "👍"})]
    );
    let rows = screen(&mut terminal, &driver);
    assert!(
        shows(&rows, "bob: hello from history [👍"),
        "{}",
        rows.join("\n")
    );
    // /edit and /delete count my own messages: ^ is my h2.
    type_text(&mut driver, "/edit ^ my  better reply");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(
        owner.calls("edit"),
        vec![json!({"id": "h2", "text": "my  better reply"})]
    );
    let rows = screen(&mut terminal, &driver);
    assert!(
        shows(&rows, "me: my  better reply (edited)"),
        "{}",
        rows.join("\n")
    );
    assert!(!shows(&rows, "my old reply"), "{}", rows.join("\n"));
    type_text(&mut driver, "/delete ^");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(owner.calls("delete"), vec![json!({"id": "h2"})]);
    let rows = screen(&mut terminal, &driver);
    assert!(shows(&rows, "me: (message deleted)"), "{}", rows.join("\n"));
    // A reply names what it answers, on screen and to the owner.
    type_text(&mut driver, "/reply ab12cd34ef sounds good");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(
        owner.calls("send").last(),
        Some(&json!({"to": "bob", "text": "sounds good", "reply_to": "ab12cd34ef"}))
    );
    assert!(shows(
        &screen(&mut terminal, &driver),
        "(re ab12cd34) sounds good"
    ));
}

#[tokio::test]
async fn a_message_command_that_names_no_message_says_why_and_asks_nothing() {
    let (mut driver, owner, mut terminal) = chat(Options::default()).await;
    // In the console there is no message to name.
    type_text(&mut driver, "/delete ^");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert!(shows(
        &screen(&mut terminal, &driver),
        "open a conversation first"
    ));
    press(&mut driver, KeyCode::Esc);
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    for (typed, said) in [
        ("/edit ^2 x", "not 2 messages of yours"),
        ("/react ^9 👍", "not 9 messages"),
        ("/react ^0 👍", "positive number"),
        ("/react zz 👍", "names no message"),
        ("/react ^", "usage: /react MSG EMOJI"),
        ("/delete ^ now", "usage: /delete MSG"),
    ] {
        type_text(&mut driver, typed);
        press(&mut driver, KeyCode::Enter);
        driver.settle().await;
        let rows = screen(&mut terminal, &driver);
        assert!(shows(&rows, said), "{typed}: {}", rows.join("\n"));
    }
    for method in ["react", "edit", "delete", "send"] {
        assert!(owner.calls(method).is_empty(), "{method}");
    }
    // A change the owner refuses is said, the line stays.
    type_text(&mut driver, "/react 0123456789abcdef 👍");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    let rows = screen(&mut terminal, &driver);
    assert!(shows(&rows, "could not react to"), "{}", rows.join("\n"));
}

#[tokio::test]
async fn in_a_group_a_reply_goes_to_the_group_naming_the_message_it_answers() {
    let owner = FakeOwner::new();
    owner.inner.lock().unwrap().histories.insert(
        "ops".into(),
        json!({"messages": [
            {"id": "ab01", "from": "bob", "to": null, "group": "ops", "text": "deploy friday?", "sent_at": 3_600_000, "status": "received"},
        ]}),
    );
    let mut driver = Driver::start(owner.clone(), Options::default())
        .await
        .unwrap();
    driver.settle().await;
    type_text(&mut driver, "/join #ops");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    type_text(&mut driver, "/reply ^ yes, friday");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(
        owner.calls("group.send"),
        vec![json!({"group": "ops", "text": "yes, friday", "reply_to": "ab01"})]
    );
    type_text(&mut driver, "/react ^2 🎉");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert_eq!(
        owner.calls("react"),
        vec![json!({"id": "ab01", "emoji": "🎉"})]
    );
}

#[tokio::test]
async fn slash_file_sends_a_file_with_its_caption_showing_the_upload_then_its_size() {
    let (mut driver, owner, _) = chat(Options::default()).await;
    let mut terminal = Terminal::new(TestBackend::new(140, 20)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.txt");
    std::fs::write(&path, vec![b'x'; 3000]).unwrap();
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    type_text(
        &mut driver,
        &format!("/file {} the numbers", path.display()),
    );
    press(&mut driver, KeyCode::Enter);
    // The owner reports half of it uploaded before it answers.
    let transfer = format!("{}:up:1", driver.chat.transfer_prefix);
    owner.notify(
        "file.progress",
        json!({"transfer": transfer, "direction": "up", "name": "report.txt", "done": 1500, "total": 3000}),
    );
    driver.poll();
    let rows = screen(&mut terminal, &driver);
    assert!(
        shows(
            &rows,
            "[file report.txt (2.9 KiB)] the numbers — uploading 50%"
        ),
        "{}",
        rows.join("\n")
    );
    driver.settle().await;
    assert_eq!(
        owner.calls("file.send"),
        vec![
            json!({"to": "bob", "path": path.display().to_string(), "caption": "the numbers", "transfer": transfer})
        ]
    );
    let rows = screen(&mut terminal, &driver);
    assert!(
        shows(&rows, "me: [file report.txt (2.9 KiB)] the numbers  sent"),
        "{}",
        rows.join("\n")
    );
    assert!(!shows(&rows, "uploading"), "{}", rows.join("\n"));
    assert!(driver.chat.transfers.is_empty());
    // A path with spaces, in quotes.
    let spaced = dir.path().join("q 3 plan.txt");
    std::fs::write(&spaced, b"plan").unwrap();
    type_text(
        &mut driver,
        &format!("/file \"{}\" for Monday", spaced.display()),
    );
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    let sent = owner.calls("file.send");
    assert_eq!(sent[1]["path"], spaced.display().to_string());
    assert_eq!(sent[1]["caption"], "for Monday");
    assert!(shows(
        &screen(&mut terminal, &driver),
        "[file q 3 plan.txt (4 B)] for Monday"
    ));
    // No path: the usage.
    type_text(&mut driver, "/file");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert!(shows(&screen(&mut terminal, &driver), "usage: /file PATH"));
}

#[tokio::test]
async fn slash_save_saves_the_newest_or_an_earlier_file_where_asked() {
    let owner = FakeOwner::new();
    owner.inner.lock().unwrap().histories.insert(
        "bob".into(),
        json!({"messages": [
            {"id": "f0000001", "from": "bob", "to": null, "group": null, "text": "", "sent_at": 3_600_000, "status": "received",
             "file": {"id": "f0000001", "name": "old.pdf", "size": 10, "sha256": "00", "media_type": "application/pdf"}},
            {"id": "f0000002", "from": "bob", "to": null, "group": null, "text": "see this", "sent_at": 3_660_000, "status": "received",
             "file": {"id": "f0000002", "name": "new.png", "size": 2048, "sha256": "00", "media_type": "image/png"}},
            {"id": "m0000003", "from": "bob", "to": null, "group": null, "text": "plain text", "sent_at": 3_720_000, "status": "received"},
        ]}),
    );
    let mut driver = Driver::start(owner.clone(), Options::default())
        .await
        .unwrap();
    driver.settle().await;
    let mut terminal = Terminal::new(TestBackend::new(140, 20)).unwrap();
    // In the console there is no file to name.
    type_text(&mut driver, "/save ^");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert!(shows(
        &screen(&mut terminal, &driver),
        "there is no file in this conversation"
    ));
    press(&mut driver, KeyCode::Esc);
    press(&mut driver, KeyCode::Down);
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    let rows = screen(&mut terminal, &driver);
    assert!(
        shows(&rows, "bob: [file new.png (2.0 KiB)] see this"),
        "{}",
        rows.join("\n")
    );
    // ^ is the newest file (not the newest message), to a given path.
    type_text(&mut driver, "/save ^ /tmp/out.png");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    // ^2 the one before, to the download directory.
    type_text(&mut driver, "/save ^2");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    let calls = owner.calls("file.save");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "f0000002");
    assert_eq!(calls[0]["path"], "/tmp/out.png");
    assert_eq!(calls[1]["id"], "f0000001");
    assert!(calls[1].get("path").is_none());
    let rows = screen(&mut terminal, &driver);
    assert!(
        shows(&rows, "saved new.png to /tmp/out.png"),
        "{}",
        rows.join("\n")
    );
    assert!(
        shows(&rows, "saved old.pdf to /downloads/file"),
        "{}",
        rows.join("\n")
    );
    assert!(
        shows(&rows, "— saved to /tmp/out.png"),
        "{}",
        rows.join("\n")
    );
    type_text(&mut driver, "/save ^3");
    press(&mut driver, KeyCode::Enter);
    driver.settle().await;
    assert!(shows(
        &screen(&mut terminal, &driver),
        "there are not 3 files in this conversation"
    ));
}
