//! The chat without a terminal: what a graphical client (`sotto-desktop`)
//! drives. The same [`Driver`], state and owner as `sotto chat`; the
//! window calls [`Session::poll`] once per frame instead of awaiting keys,
//! and reads what to draw through plain accessors.

use std::path::Path;

use sotto_core::Status;

use super::backend::ChatBackend;
use super::state::{Action, Entry, Kind};
pub use super::state::{FileCard, FileDetails, Transfer};
use super::{Driver, Options};

/// A profile opened by a graphical client: this process owns it (other
/// `sotto` commands go through it), or `sotto daemon` does and the
/// session is one of its clients.
pub struct Session {
    driver: Driver,
    /// Set when this process owns the profile: stopped on [`Session::close`].
    owner: Option<crate::owner::Owner>,
    /// New messages from others since the last [`Session::take_arrivals`].
    arrivals: Vec<Arrival>,
    /// The next [`Ticket`].
    next_ticket: u64,
}

/// Names the answer to one [`Session::call`] or [`Session::run_cli`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(u64);

/// What a `sotto` command run through the owner did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliOutput {
    /// Whether it succeeded (exit code 0).
    pub ok: bool,
    /// What it printed on stdout (one JSON value per line with `--json`).
    pub stdout: String,
    /// Everything it printed, for a person (QR codes left out), or why the
    /// call failed.
    pub text: String,
}

/// A conversation in the side list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The name shown: a handle, `#group`, or `sotto` for the console.
    pub label: String,
    /// Messages from others not yet shown.
    pub unread: usize,
    /// Whether it is a group.
    pub group: bool,
    /// The first line of its last message, if one is loaded.
    pub last: Option<String>,
}

/// One line of the open conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A message.
    Message {
        /// The message's ID (`local:N` until the owner gave it one).
        id: &'a str,
        /// Who wrote it (`me` for my own).
        from: &'a str,
        /// Whether I wrote it.
        outgoing: bool,
        /// The text as shown (with what it replies to, "edited", the
        /// reactions).
        text: &'a str,
        /// The text as written (what an edit starts from).
        plain: &'a str,
        /// Deleted for everyone by its author.
        deleted: bool,
        /// The sender's clock, unix milliseconds.
        sent_at_ms: u64,
        /// For my own messages: queued, sent, delivered or read.
        status: Status,
        /// The file it carries (its caption is the text).
        file: Option<&'a FileCard>,
    },
    /// A notice: a key changed, a command's output, an error.
    Notice(&'a str),
}

/// A message from someone else, for a desktop notification: who and
/// where, and its first line for a window whose user asked to see it.
#[derive(Clone, PartialEq, Eq)]
pub struct Arrival {
    /// The sender's handle.
    pub from: String,
    /// The group it was sent to, if any.
    pub group: Option<String>,
    /// The first line of the message. Shown only where the user turned
    /// it on; [`Arrival`]'s `Debug` leaves it out.
    pub first_line: String,
}

impl std::fmt::Debug for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Arrival")
            .field("from", &self.from)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Opens the profile at `home`: owns it, or attaches to the
    /// `sotto daemon` that does. `wake` is called from another thread
    /// whenever something arrives that [`Session::poll`] should apply
    /// (the window repaints).
    ///
    /// # Errors
    /// The profile cannot be opened (not joined yet, wrong passphrase, its
    /// store is locked by a one-shot command that does not finish), or
    /// the owner does not answer.
    pub async fn open(
        home: &Path,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        Self::open_with(home, None, wake).await
    }

    /// [`Session::open`] with the store's passphrase, asked of the user
    /// (it wins over `SOTTO_PASSPHRASE`).
    ///
    /// # Errors
    /// As [`Session::open`]; a wrong passphrase is one
    /// ([`crate::needs_passphrase`]).
    pub async fn open_with(
        home: &Path,
        passphrase: Option<&str>,
        wake: impl Fn() + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let (backend, owner) = match crate::owner::attach_with(home, "desktop", passphrase).await? {
            crate::owner::Attached::Owned(handle, owner) => (handle, Some(owner)),
            crate::owner::Attached::Remote(handle) => (handle, None),
        };
        let wake: super::Wake = std::sync::Arc::new(wake);
        let mut events = backend.subscribe();
        let wake_on_events = wake.clone();
        tokio::spawn(async move {
            let wake = wake_on_events;
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => wake(),
                    Err(RecvError::Closed) => {
                        wake();
                        return;
                    }
                }
            }
        });
        Self::start(backend, owner, Some(wake)).await
    }

    async fn start<B: ChatBackend>(
        backend: B,
        owner: Option<crate::owner::Owner>,
        wake: Option<super::Wake>,
    ) -> anyhow::Result<Self> {
        let mut driver = Driver::start_waking(backend, Options::default(), wake)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        driver.record_arrivals = true;
        Ok(Self {
            driver,
            owner,
            arrivals: Vec::new(),
            next_ticket: 0,
        })
    }

    /// Stops owning the profile (when this process owned it): what is
    /// unsent stays in the outbox for next time. The session shows
    /// nothing new afterwards.
    ///
    /// # Errors
    /// The owner ended with an error (this device was removed, the store
    /// broke).
    pub async fn close(&mut self) -> anyhow::Result<()> {
        match self.owner.take() {
            Some(owner) => owner.shutdown().await,
            None => Ok(()),
        }
    }

    /// Applies every result and notification that arrived; true when
    /// anything changed (the window redraws). Call it within the tokio
    /// runtime's context (`Runtime::enter`).
    pub fn poll(&mut self) -> bool {
        let changed = self.driver.poll();
        self.arrivals.append(&mut self.driver.arrivals);
        changed
    }

    /// Whether requests are still running (the window keeps polling).
    #[must_use]
    pub fn busy(&self) -> bool {
        self.driver.in_flight > 0
    }

    /// Whether the window has the user's focus: messages in the open
    /// conversation are marked read only while it has.
    pub fn set_focused(&mut self, focused: bool) {
        self.driver.set_focused(focused);
    }

    /// My handle.
    #[must_use]
    pub fn me(&self) -> &str {
        &self.driver.chat.me
    }

    /// The team's name.
    #[must_use]
    pub fn team(&self) -> &str {
        &self.driver.chat.team
    }

    /// Whether the relay is reachable (`None` until known).
    #[must_use]
    pub fn online(&self) -> Option<bool> {
        self.driver.chat.online
    }

    /// Unread messages in every conversation.
    #[must_use]
    pub fn unread_total(&self) -> usize {
        self.driver.chat.unread_total()
    }

    /// The side list: the console first, then members, then groups.
    #[must_use]
    pub fn conversations(&self) -> Vec<Row> {
        self.driver
            .chat
            .conversations
            .iter()
            .map(|c| Row {
                label: c.kind.label(),
                unread: c.unread,
                group: matches!(c.kind, Kind::Group(_)),
                last: c.entries.iter().rev().find_map(|e| match e {
                    Entry::Message(m) => Some(m.text.lines().next().unwrap_or("").to_owned()),
                    Entry::Notice(_) => None,
                }),
            })
            .collect()
    }

    /// The index of the open conversation in [`Session::conversations`].
    #[must_use]
    pub fn current(&self) -> usize {
        self.driver.chat.open
    }

    /// Opens conversation `index` (loading its history the first time).
    pub fn open_conversation(&mut self, index: usize) {
        if index < self.driver.chat.conversations.len() {
            self.driver.chat.selected = index;
            self.driver.act(Action::Open);
        }
    }

    /// Opens the conversation with a member, or the group `#name`, adding
    /// it to the list if it is not there yet; false for an unknown name
    /// shape.
    pub fn open_named(&mut self, name: &str) -> bool {
        let kind = match name.strip_prefix('#') {
            Some(group) if !group.is_empty() => Kind::Group(group.to_owned()),
            Some(_) => return false,
            None if !name.is_empty() => Kind::Contact(name.to_owned()),
            None => return false,
        };
        let index = self.driver.chat.conversation(&kind);
        self.open_conversation(index);
        true
    }

    /// How many lines the open conversation has.
    #[must_use]
    pub fn lines(&self) -> usize {
        self.driver.chat.current().entries.len()
    }

    /// Line `index` of the open conversation, oldest first.
    #[must_use]
    pub fn line(&self, index: usize) -> Option<Line<'_>> {
        Some(match self.driver.chat.current().entries.get(index)? {
            Entry::Message(m) => Line::Message {
                id: &m.id,
                from: &m.from,
                outgoing: m.outgoing,
                text: &m.text,
                plain: &m.plain,
                deleted: m.deleted,
                sent_at_ms: m.sent_at,
                status: m.status,
                file: m.file.as_deref(),
            },
            Entry::Notice(text) => Line::Notice(text),
        })
    }

    /// Whether the store holds messages of the open conversation older
    /// than the first loaded one ([`Session::load_earlier`] brings them).
    #[must_use]
    pub fn has_earlier(&self) -> bool {
        self.driver.chat.current().earlier.is_some()
    }

    /// Loads the page of the open conversation before its first loaded
    /// message (nothing if there is none or it is on its way).
    pub fn load_earlier(&mut self) {
        let requests = self.driver.chat.load_earlier();
        self.driver.run(requests);
    }

    /// Sends `text` to the open conversation, or runs it as a `/` command
    /// (`/help` lists them), exactly as typed into `sotto chat`.
    pub fn submit(&mut self, text: &str) {
        self.driver.chat.compose.text = text.to_owned();
        self.driver.chat.compose.cursor = text.len();
        self.driver.chat.focus = super::state::Focus::Compose;
        self.driver.act(Action::Submit);
    }

    /// Sends the file at `path` (with `caption`, may be empty) to the open
    /// conversation: it shows at once with its upload's progress, then
    /// as sent. Nothing happens in the console (a notice says why).
    pub fn send_file(&mut self, path: &Path, caption: &str) {
        let requests = self
            .driver
            .chat
            .send_file(path.display().to_string(), caption.to_owned());
        self.driver.run(requests);
    }

    /// Fetches (if needed) and saves the file of message `id`: to `dest`
    /// (a file to create, or a directory to put it in under its own
    /// name), or to the download directory; never over an existing file.
    /// A notice says where it went, and the line's [`FileCard::saved`].
    pub fn save_file(&mut self, id: &str, dest: Option<&Path>) {
        let requests = self
            .driver
            .chat
            .save_file(id, dest.map(|d| d.display().to_string()));
        self.driver.run(requests);
    }

    /// What the owner told of the file of message `id` (media type,
    /// whether it is downloaded, its thumbnail); the first call asks, and
    /// the answer shows on a later frame.
    pub fn file_details(&mut self, id: &str) -> Option<FileDetails> {
        let (details, requests) = self.driver.chat.file_details(id);
        let details = details.cloned();
        self.driver.run(requests);
        details
    }

    /// This client's uploads and downloads in progress.
    #[must_use]
    pub fn transfers(&self) -> Vec<Transfer> {
        self.driver.chat.transfers.values().cloned().collect()
    }

    /// The messages from others that arrived since the last call, for
    /// notifications.
    pub fn take_arrivals(&mut self) -> Vec<Arrival> {
        std::mem::take(&mut self.arrivals)
    }

    /// Starts one control-protocol call (docs/CLIENT_API.md), for a
    /// dialog: its answer comes back through [`Session::reply`]. Calls run
    /// in order with the chat's own requests.
    pub fn call(&mut self, method: &str, params: serde_json::Value) -> Ticket {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.driver.run(vec![super::state::Request::Call {
            ticket,
            method: method.to_owned(),
            params,
        }]);
        Ticket(ticket)
    }

    /// Starts `sotto ARGS...` inside the owner, exactly as typed in a
    /// terminal; its output comes back through [`Session::cli_reply`].
    pub fn run_cli(&mut self, args: &[&str]) -> Ticket {
        self.call("cli.run", serde_json::json!({ "argv": args }))
    }

    /// The answer to `ticket` once it came (taken: a second call gives
    /// None), or why the call failed.
    pub fn reply(&mut self, ticket: Ticket) -> Option<Result<serde_json::Value, String>> {
        self.driver.replies.remove(&ticket.0)
    }

    /// What the command started by [`Session::run_cli`] printed, once it
    /// finished (taken, like [`Session::reply`]).
    pub fn cli_reply(&mut self, ticket: Ticket) -> Option<CliOutput> {
        Some(match self.reply(ticket)? {
            Ok(result) => {
                let field = |name: &str| {
                    result
                        .get(name)
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                let stdout = field("stdout");
                CliOutput {
                    ok: result.get("exit_code").and_then(serde_json::Value::as_i64) == Some(0),
                    text: super::backend::readable(&format!("{stdout}\n{}", field("stderr"))),
                    stdout,
                }
            }
            Err(error) => CliOutput {
                ok: false,
                stdout: String::new(),
                text: error,
            },
        })
    }
}
