//! `sotto chat`: a terminal chat client. It owns the profile while it
//! runs (other `sotto` commands go through it) and is itself a client of
//! that owner, through the same calls and notifications as the control
//! socket.
//!
//! - [`state`]: conversations, messages, unread counts, compose buffer,
//!   focus; pure, driven by actions and events.
//! - [`input`]: keys to actions.
//! - [`ui`]: drawing the state with ratatui.
//! - [`backend`]: what the chat asks of the owner, and a fake for tests.
//! - this file: the driver, which runs the requests the state returns on a
//!   worker task (in order, so messages go out as typed) and feeds back
//!   keys, results and notifications.

mod backend;
mod input;
pub(crate) mod session;
mod state;
mod ui;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use crossterm::event::{Event as TermEvent, KeyEvent};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use backend::{CallError, ChatBackend, Event};
use state::{Chat, ChatMessage, Kind, Request};

/// Called from another thread when there is something to apply.
pub(crate) type Wake = std::sync::Arc<dyn Fn() + Send + Sync>;

/// How the chat tells about new messages.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Options {
    /// Ring the terminal bell on a new message elsewhere than in the open
    /// conversation (or anywhere while the terminal is not focused).
    pub(crate) bell: bool,
    /// Also ask the terminal for a desktop notification (OSC 777 and
    /// OSC 9), naming the sender only, never the text.
    pub(crate) notify: bool,
}

/// A request's outcome, back from the worker.
#[derive(Debug)]
enum Done {
    /// The members (from the relay) and the groups (local), each or why
    /// not.
    Directory(
        Result<Vec<String>, CallError>,
        Result<Vec<String>, CallError>,
        Vec<(Kind, usize)>,
    ),
    /// Notices a sync brought ("bob's key changed ...").
    Notices(Vec<String>),
    History(Kind, Result<(Vec<ChatMessage>, Option<u64>), String>),
    Earlier(Kind, Result<(Vec<ChatMessage>, Option<u64>), String>),
    Sent {
        to: Kind,
        local: u64,
        result: Result<(String, bool), String>,
    },
    Output(String),
    /// The answer to a window's call.
    Called(u64, Result<Value, String>),
    /// A reaction, edit or delete made (owner method, then the changed
    /// message) or refused.
    Changed(&'static str, Result<Value, String>),
    /// A file of mine sent (ID, delivered, size) or not.
    FileSent {
        to: Kind,
        local: u64,
        result: Result<(String, bool, u64), String>,
    },
    /// A file saved (where) or not.
    FileSaved(String, Result<String, String>),
    /// What the owner told of a file message.
    FileInfo(String, Result<state::FileDetails, String>),
    /// Nothing to show (a read mark).
    Quiet,
}

/// The chat and the channels around it.
pub(crate) struct Driver {
    pub(crate) chat: Chat,
    work: mpsc::UnboundedSender<Request>,
    done: mpsc::UnboundedReceiver<Done>,
    events: broadcast::Receiver<Event>,
    in_flight: usize,
    options: Options,
    /// Whether the terminal has the user's focus (as far as it reports).
    focused: bool,
    /// A message arrived in the open conversation while the terminal was
    /// not focused: it is read once the focus comes back.
    unseen: bool,
    /// Bytes for the terminal: bells and notification sequences.
    pub(crate) alerts: Vec<String>,
    /// When to look at the directory again (new members, changed keys).
    refresh: tokio::time::Interval,
    /// Whether to keep [`Driver::arrivals`] (a window's notifications).
    pub(crate) record_arrivals: bool,
    /// New messages from others that the user was not looking at.
    pub(crate) arrivals: Vec<session::Arrival>,
    /// The owner's notifications ended (it stopped); said once.
    closed: bool,
    /// Answers to a window's calls, by ticket, until it takes them.
    pub(crate) replies: std::collections::HashMap<u64, Result<Value, String>>,
}

/// How often the chat re-reads the members and the directory: a changed
/// key or a new member shows within this.
const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl Driver {
    /// Asks the owner who I am, subscribes, and starts loading the list.
    pub(crate) async fn start<B: ChatBackend>(
        backend: B,
        options: Options,
    ) -> Result<Self, CallError> {
        Self::start_waking(backend, options, None).await
    }

    /// [`Driver::start`], calling `wake` (from another thread) whenever a
    /// request's result is ready for [`Driver::poll`]: a window repaints
    /// then rather than at its next tick.
    pub(crate) async fn start_waking<B: ChatBackend>(
        backend: B,
        options: Options,
        wake: Option<Wake>,
    ) -> Result<Self, CallError> {
        let events = backend.subscribe();
        let me = backend.call("whoami", json!({})).await?;
        let field = |name: &str| {
            me.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let mut chat = Chat::new(&field("handle"), &field("team"));
        // Tells this client's transfers from other clients' of the same
        // owner in the `file.progress` notifications.
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        chat.transfer_prefix = format!("c{}-{started:x}", std::process::id());
        let (work, jobs) = mpsc::unbounded_channel();
        let (done_tx, done) = mpsc::unbounded_channel();
        tokio::spawn(worker(backend, chat.me.clone(), jobs, done_tx, wake));
        let mut driver = Self {
            chat,
            work,
            done,
            events,
            in_flight: 0,
            options,
            focused: true,
            unseen: false,
            alerts: Vec::new(),
            refresh: tokio::time::interval_at(
                tokio::time::Instant::now() + REFRESH_EVERY,
                REFRESH_EVERY,
            ),
            record_arrivals: false,
            arrivals: Vec::new(),
            closed: false,
            replies: std::collections::HashMap::new(),
        };
        driver.chat.say(format!(
            "Welcome, {}. Up/Down and Enter open a conversation; type and Enter sends; /help lists the commands.",
            driver.chat.me
        ));
        driver.run(vec![Request::Refresh, Request::Sync]);
        Ok(driver)
    }

    pub(crate) fn run(&mut self, requests: Vec<Request>) {
        for request in requests {
            if request == Request::Quit {
                continue;
            }
            if self.work.send(request).is_ok() {
                self.in_flight += 1;
            }
        }
    }

    /// A key from the terminal.
    pub(crate) fn key(&mut self, key: KeyEvent) {
        if let Some(action) = input::action(key, self.chat.focus) {
            self.act(action);
        }
    }

    /// What a key or a click asks for.
    pub(crate) fn act(&mut self, action: state::Action) {
        let requests = self.chat.apply(action);
        self.run(requests);
    }

    /// The terminal or window gained or lost the user's focus.
    pub(crate) fn set_focused(&mut self, focused: bool) {
        self.focused = focused;
        if focused && std::mem::take(&mut self.unseen) {
            self.shown();
        }
    }

    /// Applies every result and notification already here, without
    /// waiting (a window calls it once per frame, in the runtime's
    /// context); true when anything changed.
    pub(crate) fn poll(&mut self) -> bool {
        use tokio::sync::broadcast::error::TryRecvError;
        let mut changed = false;
        while let Ok(done) = self.done.try_recv() {
            self.finished(done);
            changed = true;
        }
        loop {
            match self.events.try_recv() {
                Ok(event) => self.notified(event),
                Err(TryRecvError::Lagged(missed)) => self.missed(missed),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => {
                    if !std::mem::replace(&mut self.closed, true) {
                        self.chat.say("the owner of this profile stopped");
                        self.chat.on_connection(false);
                        changed = true;
                    }
                    break;
                }
            }
            changed = true;
        }
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        if self.refresh.poll_tick(&mut context).is_ready() {
            self.run(vec![Request::Refresh, Request::Sync]);
        }
        changed
    }

    /// Any terminal event.
    pub(crate) fn terminal(&mut self, event: TermEvent) {
        match event {
            TermEvent::Key(key) => self.key(key),
            TermEvent::Paste(text) => {
                // Pasted line breaks stay in the message: only Enter sends.
                for c in text.chars().filter(|c| *c != '\r' || !text.contains('\n')) {
                    let c = if c == '\r' { '\n' } else { c };
                    let requests = self.chat.apply(state::Action::Insert(c));
                    self.run(requests);
                }
            }
            TermEvent::FocusGained => self.set_focused(true),
            TermEvent::FocusLost => self.set_focused(false),
            // The next draw takes the new size.
            TermEvent::Resize(..) | TermEvent::Mouse(_) => {}
        }
    }

    fn finished(&mut self, done: Done) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match done {
            Done::Directory(members, groups, unread) => {
                self.chat.set_unread(&unread);
                // Groups are local: they show even when the relay is not
                // reachable to list the members.
                match groups {
                    Ok(groups) => self.chat.set_directory(&[], &groups),
                    Err(error) => self.chat.say(format!("could not list the groups: {error}")),
                }
                match members {
                    Ok(members) => {
                        self.chat.set_directory(&members, &[]);
                        // The member list comes from the relay: it is
                        // reachable now.
                        self.chat.on_connection(true);
                    }
                    Err(error) => {
                        if error.code == i64::from(crate::errors::NETWORK) {
                            self.chat.on_connection(false);
                        }
                        self.chat.say(format!(
                            "could not list the members: {error}; /join HANDLE opens a conversation, /members tries again"
                        ));
                    }
                }
            }
            Done::Notices(notices) => {
                for notice in notices {
                    self.chat.on_notice(&notice);
                }
            }
            Done::History(kind, Ok((messages, earlier))) => {
                let open = self.chat.current().kind == kind;
                self.chat.on_history(kind, messages, earlier);
                if open {
                    self.shown();
                }
            }
            Done::History(kind, Err(error)) => self.chat.say(format!(
                "could not load the history with {}: {error}",
                kind.label()
            )),
            Done::Earlier(kind, Ok((messages, earlier))) => {
                self.chat.on_earlier(kind, messages, earlier);
            }
            Done::Earlier(kind, Err(error)) => {
                let index = self.chat.conversation(&kind);
                self.chat.conversations[index].loading_earlier = false;
                self.chat.say(format!(
                    "could not load earlier messages with {}: {error}",
                    kind.label()
                ));
            }
            Done::Sent { to, local, result } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                self.chat.on_sent(&to, local, now, result);
            }
            Done::Output(text) => self.chat.say(text),
            Done::Called(ticket, result) => {
                self.replies.insert(ticket, result);
            }
            Done::Changed(_, Ok(message)) => {
                if let Some((_, message)) = backend::parse_message(&message, &self.chat.me) {
                    self.chat.on_update(message);
                }
            }
            Done::Changed(method, Err(error)) => {
                let what = if method == "react" {
                    "react to"
                } else {
                    method
                };
                self.chat
                    .say(format!("could not {what} that message: {error}"));
            }
            Done::FileSent { to, local, result } => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                self.chat.on_file_sent(&to, local, now, result);
            }
            Done::FileSaved(id, result) => self.chat.on_file_saved(&id, result),
            Done::FileInfo(id, result) => self.chat.on_file_info(&id, result),
            Done::Quiet => {}
        }
    }

    /// The open conversation is on screen: a member's messages in it are
    /// read (while the terminal has the focus; else once it comes back).
    fn shown(&mut self) {
        if !self.focused {
            self.unseen = true;
            return;
        }
        let kind = self.chat.current().kind.clone();
        if kind != Kind::Console {
            self.run(vec![Request::Read(kind)]);
        }
    }

    fn notified(&mut self, event: Event) {
        match event.method.as_str() {
            "message" => {
                let Some((kind, message)) = backend::parse_message(&event.params, &self.chat.me)
                else {
                    return;
                };
                let from = message.from.clone();
                let first_line = message.text.lines().next().unwrap_or_default().to_owned();
                let incoming = !message.outgoing;
                let elsewhere = self.chat.on_message(kind.clone(), message);
                if incoming && (elsewhere || !self.focused) {
                    self.alert(&from, &kind, first_line);
                }
                if incoming && self.chat.current().kind == kind {
                    self.shown();
                }
            }
            "message.updated" => {
                if let Some((_, message)) = backend::parse_message(&event.params, &self.chat.me) {
                    self.chat.on_update(message);
                }
            }
            "status" => {
                let id = event.params.get("id").and_then(Value::as_str);
                let status = event
                    .params
                    .get("status")
                    .and_then(|s| serde_json::from_value(s.clone()).ok());
                if let (Some(id), Some(status)) = (id, status) {
                    self.chat.on_status(id, status);
                }
            }
            "file.progress" => {
                let params = &event.params;
                if let (Some(transfer), Some(done), Some(total)) = (
                    params.get("transfer").and_then(Value::as_str),
                    params.get("done").and_then(Value::as_u64),
                    params.get("total").and_then(Value::as_u64),
                ) {
                    self.chat.on_progress(transfer, done, total);
                }
            }
            "connection" => {
                if let Some(online) = event.params.get("online").and_then(Value::as_bool) {
                    self.chat.on_connection(online);
                }
            }
            // Through a socket, the owner reports what this client missed.
            "lagged" => self.missed(
                event
                    .params
                    .get("missed")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            ),
            "notice" => {
                let text = event
                    .params
                    .get("text")
                    .or_else(|| event.params.get("notice"))
                    .and_then(Value::as_str);
                if let Some(text) = text {
                    self.chat.on_notice(text);
                }
            }
            _ => {}
        }
    }

    /// Too slow to keep up: what was missed is in the history, so the
    /// open conversation is reloaded.
    fn missed(&mut self, missed: u64) {
        self.chat.say(format!(
            "{missed} updates were missed; reloading this conversation"
        ));
        let kind = self.chat.current().kind.clone();
        if kind != Kind::Console {
            self.run(vec![Request::History(kind)]);
        }
    }

    fn alert(&mut self, from: &str, kind: &Kind, first_line: String) {
        if self.record_arrivals {
            self.arrivals.push(session::Arrival {
                from: from.to_owned(),
                group: match kind {
                    Kind::Group(name) => Some(name.clone()),
                    Kind::Contact(_) | Kind::Console => None,
                },
                first_line,
            });
        }
        if let Some(sequence) = alert_sequence(self.options, from, kind) {
            self.alerts.push(sequence);
        }
    }

    /// Waits for the next key, result or notification and applies it;
    /// false once the terminal's events ended.
    pub(crate) async fn step(&mut self, terminal: &mut mpsc::Receiver<TermEvent>) -> bool {
        tokio::select! {
            event = terminal.recv() => match event {
                Some(event) => self.terminal(event),
                None => return false,
            },
            Some(done) = self.done.recv() => self.finished(done),
            _ = self.refresh.tick() => self.run(vec![Request::Refresh, Request::Sync]),
            event = self.events.recv() => match event {
                Ok(event) => self.notified(event),
                Err(broadcast::error::RecvError::Lagged(missed)) => self.missed(missed),
                Err(broadcast::error::RecvError::Closed) => {
                    self.chat.say("the owner of this profile stopped");
                    self.chat.on_connection(false);
                    // Keep the screen up for the user to read; keys still work.
                    std::future::pending::<()>().await;
                }
            },
        }
        true
    }

    /// Test helper: applies every result and notification until nothing
    /// is in flight.
    #[cfg(test)]
    pub(crate) async fn settle(&mut self) {
        loop {
            while let Ok(event) = self.events.try_recv() {
                self.notified(event);
            }
            if self.in_flight == 0 {
                return;
            }
            match tokio::time::timeout(std::time::Duration::from_secs(5), self.done.recv()).await {
                Ok(Some(done)) => self.finished(done),
                _ => panic!("a request never finished"),
            }
        }
    }
}

/// What to write to the terminal for a new message from `from` in `kind`:
/// a bell, and with `notify` a desktop notification (OSC 777 for
/// terminals of the rxvt family, OSC 9 for the others; unknown ones ignore
/// both). The sender's name only: the text never leaves the chat window.
pub(crate) fn alert_sequence(options: Options, from: &str, kind: &Kind) -> Option<String> {
    let mut out = String::new();
    if options.bell {
        out.push('\x07');
    }
    if options.notify {
        let place = match kind {
            Kind::Group(name) => format!(" in #{name}"),
            _ => String::new(),
        };
        let body: String = format!("New message from {from}{place}")
            .chars()
            .filter(|c| !c.is_control() && *c != ';')
            .collect();
        out.push_str(&format!("\x1b]777;notify;sotto;{body}\x1b\\"));
        out.push_str(&format!("\x1b]9;{body}\x1b\\"));
    }
    (!out.is_empty()).then_some(out)
}

/// How many messages of a conversation are loaded at a time: the last
/// page when it opens, one more page each time the user scrolls past the
/// top. A conversation of any length opens at once.
pub const HISTORY_PAGE: u64 = 500;

/// One page of a conversation's history: the last, or the one before
/// `before`; with the cursor of the page before it, if there is one.
async fn history_page<B: ChatBackend>(
    backend: &B,
    kind: &Kind,
    before: Option<u64>,
    me: &str,
) -> Result<(Vec<ChatMessage>, Option<u64>), String> {
    let Some((field, name)) = backend::target_params(kind) else {
        return Ok((Vec::new(), None));
    };
    let mut params = json!({ field: name, "limit": HISTORY_PAGE });
    if let Some(before) = before {
        params["before"] = json!(before);
    }
    let result = backend
        .call("history", params)
        .await
        .map_err(|e| e.message)?;
    let earlier = result.get("earlier").and_then(Value::as_u64);
    Ok((backend::parse_messages(&result, me), earlier))
}

/// Runs requests one at a time, so messages go out in the order typed.
async fn worker<B: ChatBackend>(
    backend: B,
    me: String,
    mut jobs: mpsc::UnboundedReceiver<Request>,
    done: mpsc::UnboundedSender<Done>,
    wake: Option<Wake>,
) {
    while let Some(request) = jobs.recv().await {
        let outcome = match request {
            Request::Refresh => {
                let members = backend.call("members", json!({})).await;
                let groups = backend.call("groups", json!({})).await;
                // Unread counts are the owner's (they outlive this chat); an
                // owner that cannot tell leaves them as they are.
                let unread = backend
                    .call("conversations", json!({}))
                    .await
                    .map(|c| backend::parse_unread(&c))
                    .unwrap_or_default();
                Done::Directory(
                    members.map(|m| backend::parse_members(&m)),
                    groups.map(|g| backend::parse_groups(&g)),
                    unread,
                )
            }
            Request::Sync => {
                // A sync re-reads every member's directory entry, which is
                // where a changed key shows; its notices are for the user.
                // Its messages reach the chat as notifications anyway, and
                // a failure is the connection's, which the title shows.
                let notices = backend
                    .call("sync", json!({}))
                    .await
                    .map(|result| backend::names(&result, "notices", "text"))
                    .unwrap_or_default();
                Done::Notices(notices)
            }
            Request::History(kind) => {
                let result = history_page(&backend, &kind, None, &me).await;
                Done::History(kind, result)
            }
            Request::Earlier(kind, before) => {
                let result = history_page(&backend, &kind, Some(before), &me).await;
                Done::Earlier(kind, result)
            }
            Request::Send {
                to,
                text,
                local,
                reply_to,
            } => {
                let call = match &to {
                    Kind::Group(name) => {
                        let mut params = json!({"group": name, "text": text});
                        if let Some(reply_to) = &reply_to {
                            params["reply_to"] = json!(reply_to);
                        }
                        backend.call("group.send", params).await
                    }
                    Kind::Contact(handle) => {
                        let mut params = json!({"to": handle, "text": text});
                        if let Some(reply_to) = &reply_to {
                            params["reply_to"] = json!(reply_to);
                        }
                        backend.call("send", params).await
                    }
                    Kind::Console => Err(CallError {
                        code: 2,
                        message: "the console is not a conversation".into(),
                    }),
                };
                let result = call.map_err(|e| e.message).and_then(|result| {
                    let id = result
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| "the owner gave no message ID".to_owned())?;
                    let queued = result.get("status").and_then(Value::as_str) == Some("queued");
                    Ok((id.to_owned(), !queued))
                });
                Done::Sent { to, local, result }
            }
            Request::Change { id, change } => {
                let mut params = json!({ "id": id });
                match &change {
                    state::Change::React(emoji) => params["emoji"] = json!(emoji),
                    state::Change::Edit(text) => params["text"] = json!(text),
                    state::Change::Delete => {}
                }
                let result = backend
                    .call(change.method(), params)
                    .await
                    .map(|result| result.get("message").cloned().unwrap_or(Value::Null))
                    .map_err(|e| e.message);
                Done::Changed(change.method(), result)
            }
            Request::Command(args) => {
                let shown = format!("$ sotto {}", args.join(" "));
                let (ok, output) = backend::run_command(&backend, args).await;
                Done::Output(match (ok, output.is_empty()) {
                    (true, true) => format!("{shown}\ndone"),
                    (true, false) => format!("{shown}\n{output}"),
                    (false, _) => format!("{shown}\nfailed: {output}"),
                })
            }
            Request::Read(kind) => {
                // A failed read mark costs nothing visible: the next one
                // covers it.
                if let Some((field, name)) = backend::target_params(&kind) {
                    let _ = backend.call("read", json!({ field: name })).await;
                }
                Done::Quiet
            }
            Request::Call {
                ticket,
                method,
                params,
            } => Done::Called(
                ticket,
                backend.call(&method, params).await.map_err(|e| e.message),
            ),
            Request::SendFile {
                to,
                path,
                caption,
                local,
                transfer,
            } => {
                // The owner may run in another directory.
                let path = std::path::absolute(&path).map_or(path, |p| p.display().to_string());
                let mut params = json!({"path": path, "caption": caption, "transfer": transfer});
                match backend::target_params(&to) {
                    Some(("group", group)) => params["group"] = group,
                    Some((_, handle)) => params["to"] = handle,
                    None => {}
                }
                let result = backend
                    .call("file.send", params)
                    .await
                    .map_err(|e| e.message)
                    .and_then(|result| {
                        let id = result
                            .get("id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| "the owner gave no message ID".to_owned())?;
                        let queued = result.get("status").and_then(Value::as_str) == Some("queued");
                        let size = result.get("size").and_then(Value::as_u64).unwrap_or(0);
                        Ok((id.to_owned(), !queued, size))
                    });
                Done::FileSent { to, local, result }
            }
            Request::SaveFile { id, path, transfer } => {
                let mut params = json!({"id": id, "transfer": transfer});
                if let Some(path) = path {
                    params["path"] =
                        json!(std::path::absolute(&path).map_or(path, |p| p.display().to_string()));
                }
                let result = backend
                    .call("file.save", params)
                    .await
                    .map_err(|e| e.message)
                    .map(|result| {
                        result
                            .get("path")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    });
                Done::FileSaved(id, result)
            }
            Request::FileInfo(id) => {
                let result = backend
                    .call("file.info", json!({ "id": id }))
                    .await
                    .map(|info| state::FileDetails::from_json(&info))
                    .map_err(|e| e.message);
                Done::FileInfo(id, result)
            }
            Request::Quit => continue,
        };
        if done.send(outcome).is_err() {
            return;
        }
        if let Some(wake) = &wake {
            wake();
        }
    }
}

/// Puts the terminal back (cooked mode, main screen, no paste or focus
/// reports) however the chat ends, early return or panic included.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        use crossterm::event::{DisableBracketedPaste, DisableFocusChange};
        let _ = crossterm::execute!(std::io::stdout(), DisableBracketedPaste, DisableFocusChange);
        ratatui::restore();
    }
}

/// Runs the chat on this terminal with `backend` until the user quits.
async fn run_on_terminal<B: ChatBackend>(backend: B, options: Options) -> anyhow::Result<()> {
    use crossterm::event::{EnableBracketedPaste, EnableFocusChange};
    let mut driver = Driver::start(backend, options)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let _guard = TerminalGuard;
    // Bracketed paste keeps a pasted line break from sending; focus
    // reports let `--bell` ring for the open conversation too when the
    // terminal is in the background. Both are plain escape sequences that
    // terminals without them ignore.
    let _ = crossterm::execute!(std::io::stdout(), EnableBracketedPaste, EnableFocusChange);
    let (keys, mut key_events) = mpsc::channel(64);
    let stop = Arc::new(AtomicBool::new(false));
    let _reader = {
        let stop = stop.clone();
        std::thread::spawn(move || read_terminal(&keys, &stop))
    };
    // The reader thread stops within a poll interval once this is dropped.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop = Stop(stop);
    loop {
        let mut scroll = driver.chat.scroll;
        terminal.draw(|frame| scroll = ui::draw(frame, &driver.chat))?;
        driver.chat.scroll = scroll;
        if !driver.alerts.is_empty() {
            let mut stdout = std::io::stdout().lock();
            for alert in driver.alerts.drain(..) {
                stdout.write_all(alert.as_bytes())?;
            }
            stdout.flush()?;
        }
        if driver.chat.quit || !driver.step(&mut key_events).await {
            return Ok(());
        }
    }
}

/// Reads terminal events on a thread of its own (crossterm's reads
/// block) until `stop` or the chat is gone.
fn read_terminal(keys: &mpsc::Sender<TermEvent>, stop: &AtomicBool) {
    let tick = std::time::Duration::from_millis(100);
    while !stop.load(Ordering::Relaxed) {
        match crossterm::event::poll(tick) {
            Ok(true) => match crossterm::event::read() {
                Ok(event) => {
                    if keys.blocking_send(event).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            Ok(false) => {}
            Err(_) => return,
        }
    }
}

/// SIGTERM or SIGHUP (the SSH session went away).
async fn hung_up() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}

/// `sotto chat` on the profile at `home`: owns the profile for as long as
/// it runs (other `sotto` commands go through it), or, when a `sotto
/// daemon` already owns it, is a client of that daemon.
pub(crate) async fn run(home: &Path, options: Options) -> anyhow::Result<()> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(crate::errors::UsageError(
            "`sotto chat` needs a terminal; scripts use the other commands, or `sotto daemon` and its control socket".into(),
        )
        .into());
    }
    match crate::owner::attach(home, "chat").await? {
        crate::owner::Attached::Owned(handle, mut owner) => {
            let result = tokio::select! {
                result = run_on_terminal(handle, options) => result,
                // This device was removed, or the store broke: the
                // terminal is restored and the reason printed.
                failed = owner.failed() => failed,
                () = hung_up() => Ok(()),
            };
            let stopped = owner.shutdown().await;
            result.and(stopped)
        }
        crate::owner::Attached::Remote(handle) => tokio::select! {
            result = run_on_terminal(handle, options) => result,
            () = hung_up() => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests;
