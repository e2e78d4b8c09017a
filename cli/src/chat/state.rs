//! The chat's state: conversations, their messages and unread counts, the
//! compose buffer, focus and scrolling. No I/O and no clock: the driver
//! feeds it actions (from keys) and events (from the owner of the
//! profile) and carries out the [`Request`]s it returns, so every
//! behaviour is testable without a terminal or a relay.

use sotto_core::Status;

/// Who a conversation is with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    /// The console: command output and notices about no one in particular.
    Console,
    /// A 1:1 conversation with a member.
    Contact(String),
    /// A group conversation.
    Group(String),
}

impl Kind {
    /// The name shown in the side list and the view's title.
    pub(crate) fn label(&self) -> String {
        match self {
            Kind::Console => "sotto".into(),
            Kind::Contact(handle) => handle.clone(),
            Kind::Group(name) => format!("#{name}"),
        }
    }
}

/// A message as the chat shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChatMessage {
    /// Hex message ID; empty while a message of mine waits for its ID.
    pub(crate) id: String,
    /// Who wrote it.
    pub(crate) from: String,
    /// Whether I wrote it.
    pub(crate) outgoing: bool,
    /// The text as shown: with what it replies to, "edited" and the
    /// reactions.
    pub(crate) text: String,
    /// The text as written, without those marks (what an edit starts
    /// from).
    pub(crate) plain: String,
    /// Deleted for everyone by its author.
    pub(crate) deleted: bool,
    /// Sender clock, unix milliseconds.
    pub(crate) sent_at: u64,
    /// Delivery state.
    pub(crate) status: Status,
    /// The file it carries, if any (boxed: most messages have none).
    pub(crate) file: Option<Box<FileCard>>,
}

/// A file a message carries, as a conversation shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileCard {
    /// The file's name (sanitized by the owner before it is saved).
    pub name: String,
    /// Its size in bytes (unknown while my upload starts).
    pub size: Option<u64>,
    /// Its media type (`image/png`; empty: unknown).
    pub media_type: String,
    /// The text sent with it.
    pub caption: String,
    /// Bytes moved and total while it uploads or downloads here.
    pub progress: Option<(u64, u64)>,
    /// Where this client saved it last.
    pub saved: Option<String>,
}

impl FileCard {
    /// Whether it is an image a window can show inline (PNG or JPEG).
    #[must_use]
    pub fn is_image(&self) -> bool {
        let lower = self.name.to_ascii_lowercase();
        matches!(self.media_type.as_str(), "image/png" | "image/jpeg")
            || lower.ends_with(".png")
            || lower.ends_with(".jpg")
            || lower.ends_with(".jpeg")
    }

    /// The line the terminal shows: name, size, the caption, and how far
    /// a transfer got.
    pub(crate) fn line(&self, upload: bool) -> String {
        let mut line = match self.size {
            Some(size) => format!("[file {} ({})]", self.name, human_size(size)),
            None => format!("[file {}]", self.name),
        };
        if !self.caption.is_empty() {
            line.push(' ');
            line.push_str(&self.caption);
        }
        if let Some((done, total)) = self.progress {
            let percent = done.saturating_mul(100).checked_div(total).unwrap_or(0);
            let what = if upload { "uploading" } else { "downloading" };
            line.push_str(&format!(" — {what} {percent}% of {}", human_size(total)));
        }
        if let Some(path) = &self.saved {
            line.push_str(&format!(" — saved to {path}"));
        }
        line
    }
}

pub(crate) use crate::files::human_size;

/// Which messages `^N` counts back through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Among {
    /// Every message.
    All,
    /// Mine only (what `/edit` and `/delete` act on).
    Mine,
    /// File messages only (what `/save` acts on).
    Files,
}

impl Among {
    fn picks(self, m: &ChatMessage) -> bool {
        match self {
            Self::All => true,
            Self::Mine => m.outgoing,
            Self::Files => m.file.is_some() && !m.deleted,
        }
    }
}

/// What the owner told of a file message (`file.info`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileDetails {
    /// The file's name, sanitized.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type (empty: unknown).
    pub media_type: String,
    /// Whether its chunks are fetched and hash-checked (a save needs no
    /// download).
    pub downloaded: bool,
    /// A small image the sender put into the message (empty: none).
    pub thumbnail: Vec<u8>,
}

impl FileDetails {
    /// A `file.info` answer, read.
    pub(crate) fn from_json(value: &serde_json::Value) -> Self {
        let text = |key: &str| {
            value
                .get(key)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Self {
            name: text("name"),
            size: value
                .get("size")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
            media_type: text("media_type"),
            downloaded: value
                .get("downloaded")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            thumbnail: hex::decode(text("thumbnail")).unwrap_or_default(),
        }
    }
}

/// A transfer of this client in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The file's name.
    pub name: String,
    /// Bytes moved.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
    /// An upload (else a download).
    pub upload: bool,
}

/// `PATH [REST]`, or `"PATH WITH SPACES" [REST]`: the path and the rest,
/// trimmed.
fn split_path(text: &str) -> (String, String) {
    let text = text.trim();
    if let Some(quoted) = text.strip_prefix('"')
        && let Some((path, rest)) = quoted.split_once('"')
    {
        return (path.to_owned(), rest.trim().to_owned());
    }
    match text.split_once(char::is_whitespace) {
        Some((path, rest)) => (path.to_owned(), rest.trim().to_owned()),
        None => (text.to_owned(), String::new()),
    }
}

/// One line of a conversation's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A message.
    Message(ChatMessage),
    /// Something the user should know: a key changed, a command's output,
    /// an error.
    Notice(String),
}

/// A conversation in the side list.
#[derive(Clone, Debug)]
pub(crate) struct Conversation {
    /// Who it is with.
    pub(crate) kind: Kind,
    /// Its log, oldest first.
    pub(crate) entries: Vec<Entry>,
    /// Messages from others that arrived while it was not open.
    pub(crate) unread: usize,
    /// Whether its history was asked for.
    pub(crate) loaded: bool,
    /// Where the page before the oldest loaded message starts, if the
    /// store holds more (the `earlier` of the history call).
    pub(crate) earlier: Option<u64>,
    /// Whether that page was asked for and has not come yet.
    pub(crate) loading_earlier: bool,
    /// What was being written here while another conversation was open.
    pub(crate) draft: Compose,
}

impl Conversation {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            entries: Vec::new(),
            unread: 0,
            loaded: false,
            earlier: None,
            loading_earlier: false,
            draft: Compose::default(),
        }
    }
}

/// Which part of the screen keys go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Focus {
    /// The side list: arrows move, Enter opens.
    List,
    /// The compose line: typing, Enter sends.
    Compose,
}

/// What a key asks for, whatever key it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Select the conversation above.
    Up,
    /// Select the conversation below.
    Down,
    /// Open the selected conversation and start typing in it.
    Open,
    /// Open the next conversation in the list.
    Next,
    /// Open the previous conversation in the list.
    Prev,
    /// Switch focus between the list and the compose line.
    ToggleFocus,
    /// Focus the side list.
    FocusList,
    /// Type a character.
    Insert(char),
    /// A line break in the message.
    Newline,
    /// Send the message or run the `/` command.
    Submit,
    /// Delete the character before the cursor.
    Backspace,
    /// Delete the character under the cursor.
    Delete,
    /// Cursor left.
    Left,
    /// Cursor right.
    Right,
    /// Cursor one line up in a multi-line message.
    LineUp,
    /// Cursor one line down in a multi-line message.
    LineDown,
    /// Cursor to the start of the line.
    Home,
    /// Cursor to the end of the line.
    End,
    /// Clear the compose buffer.
    Clear,
    /// Delete the word before the cursor.
    DeleteWord,
    /// Scroll the view towards older messages.
    ScrollUp,
    /// Scroll the view towards newer messages.
    ScrollDown,
    /// Leave the chat.
    Quit,
}

/// Something only the driver can do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// Send `text` to a member or group.
    Send {
        /// The conversation.
        to: Kind,
        /// The text.
        text: String,
        /// The local number of the placeholder shown until the ID comes.
        local: u64,
        /// The message it replies to (its ID or first 8+ hex digits).
        reply_to: Option<String>,
    },
    /// React to, edit or delete (for everyone) a message.
    Change {
        /// The message's ID (or its first 8+ hex digits).
        id: String,
        /// What to do.
        change: Change,
    },
    /// Load a conversation's history (its last page).
    History(Kind),
    /// Load the page of a conversation's history before cursor `before`.
    Earlier(Kind, u64),
    /// Mark a conversation read: it was shown (open in a focused
    /// terminal).
    Read(Kind),
    /// Run a `sotto` command (arguments after `sotto`) and show its
    /// output.
    Command(Vec<String>),
    /// Refresh the side list (members and groups).
    Refresh,
    /// Sync through the owner, for the notices it brings (a changed key).
    Sync,
    /// One control-protocol call for a window's dialog; its answer is
    /// kept under `ticket` until the window takes it.
    Call {
        /// Names the answer.
        ticket: u64,
        /// The method (docs/CLIENT_API.md).
        method: String,
        /// Its parameters.
        params: serde_json::Value,
    },
    /// Upload the file at `path` and send it to `to`, with a placeholder
    /// (`local`) until its ID comes.
    SendFile {
        /// The conversation.
        to: Kind,
        /// The file, as typed (made absolute by the driver).
        path: String,
        /// Text sent with it.
        caption: String,
        /// The placeholder's number.
        local: u64,
        /// Names its `file.progress` notifications.
        transfer: String,
    },
    /// Fetch and save the file of message `id`.
    SaveFile {
        /// The message's ID.
        id: String,
        /// Where (a file or a directory); none: the download directory.
        path: Option<String>,
        /// Names its `file.progress` notifications.
        transfer: String,
    },
    /// Ask the owner about the file of message `id` (`file.info`).
    FileInfo(String),
    /// Leave.
    Quit,
}

/// A change to a message, as `/react`, `/edit` and `/delete` ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Toggle this reaction (one emoji).
    React(String),
    /// Replace the text (my own messages only).
    Edit(String),
    /// Delete for everyone (my own messages only).
    Delete,
}

impl Change {
    /// The owner method that makes it.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Change::React(_) => "react",
            Change::Edit(_) => "edit",
            Change::Delete => "delete",
        }
    }
}

/// The text being written, with a cursor (a byte index on a char
/// boundary).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Compose {
    pub(crate) text: String,
    pub(crate) cursor: usize,
}

impl Compose {
    fn insert(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    fn prev_boundary(&self) -> Option<usize> {
        self.text[..self.cursor]
            .char_indices()
            .last()
            .map(|(i, _)| i)
    }

    fn next_boundary(&self) -> Option<usize> {
        self.text[self.cursor..]
            .chars()
            .next()
            .map(|c| self.cursor + c.len_utf8())
    }

    fn backspace(&mut self) {
        if let Some(prev) = self.prev_boundary() {
            self.text.replace_range(prev..self.cursor, "");
            self.cursor = prev;
        }
    }

    fn delete(&mut self) {
        if let Some(next) = self.next_boundary() {
            self.text.replace_range(self.cursor..next, "");
        }
    }

    fn line_start(&self) -> usize {
        self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1)
    }

    fn line_end(&self) -> usize {
        self.text[self.cursor..]
            .find('\n')
            .map_or(self.text.len(), |i| self.cursor + i)
    }

    fn delete_word(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches(' ');
        let start = trimmed
            .rfind(|c: char| c.is_whitespace())
            .map_or(0, |i| i + 1);
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Moves the cursor to the same column of the line above (`up`) or
    /// below; false when there is no such line.
    fn vertical(&mut self, up: bool) -> bool {
        let start = self.line_start();
        let column = self.text[start..self.cursor].chars().count();
        let target_start = if up {
            if start == 0 {
                return false;
            }
            self.text[..start - 1].rfind('\n').map_or(0, |i| i + 1)
        } else {
            let end = self.line_end();
            if end == self.text.len() {
                return false;
            }
            end + 1
        };
        let line = &self.text[target_start..];
        let line = &line[..line.find('\n').unwrap_or(line.len())];
        let offset = line
            .char_indices()
            .nth(column)
            .map_or(line.len(), |(i, _)| i);
        self.cursor = target_start + offset;
        true
    }

    fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }
}

/// The whole chat.
#[derive(Debug)]
pub(crate) struct Chat {
    /// My handle.
    pub(crate) me: String,
    /// The team's name.
    pub(crate) team: String,
    /// The console first, then members, then groups, each by name.
    pub(crate) conversations: Vec<Conversation>,
    /// The conversation highlighted in the side list.
    pub(crate) selected: usize,
    /// The conversation shown in the view.
    pub(crate) open: usize,
    /// Where keys go.
    pub(crate) focus: Focus,
    /// The message being written.
    pub(crate) compose: Compose,
    /// Lines scrolled up from the newest (0: follow new messages).
    pub(crate) scroll: usize,
    /// Whether the relay is reachable, once known.
    pub(crate) online: Option<bool>,
    /// Set once the user asked to leave.
    pub(crate) quit: bool,
    next_local: u64,
    /// Starts the transfer names of this client, told apart from other
    /// clients' in the owner's `file.progress` notifications.
    pub(crate) transfer_prefix: String,
    /// Transfers of this client in progress, by transfer name.
    pub(crate) transfers: std::collections::BTreeMap<String, Transfer>,
    /// What the owner told of file messages, by message ID.
    pub(crate) file_details: std::collections::HashMap<String, FileDetails>,
    /// File messages asked about (answered or not).
    file_asked: std::collections::HashSet<String>,
}

/// The `/help` text, also the source of the help bar's words.
pub(crate) const HELP: &str = "\
Keys: Up/Down and Enter open a conversation, Ctrl+N/Ctrl+P the next or previous one; Tab or Esc switch between the list and the compose line; Enter sends, Alt+Enter starts a new line; PgUp/PgDn scroll; Ctrl+C quits.
/join NAME: open the conversation with a member or #group
/invite HANDLE [--device|--replace] [--expires 7d]: (admin) invite a member; shows the code
/group create|add|remove NAME HANDLE..., /group leave NAME, /group list: groups
/verify HANDLE: the safety number to compare with HANDLE
/devices [--pending]: your devices
/settings [--read-receipts on|off]: this profile's settings (read receipts: what you open here is marked read)
/file PATH [CAPTION]: send a file; /save FILE [PATH]: save one (FILE: ^ the newest file, ^2…)
/reply MSG TEXT, /react MSG EMOJI, /edit MSG TEXT, /delete MSG (MSG: ^ newest, ^2…, or an ID)
/members: reload the members and groups
/quit: leave (Ctrl+C too). //text sends a message that starts with /";

impl Chat {
    /// A chat for `me` in `team`, showing only the console.
    pub(crate) fn new(me: &str, team: &str) -> Self {
        Self {
            me: me.to_owned(),
            team: team.to_owned(),
            conversations: vec![Conversation::new(Kind::Console)],
            selected: 0,
            open: 0,
            focus: Focus::List,
            compose: Compose::default(),
            scroll: 0,
            online: None,
            quit: false,
            next_local: 0,
            transfer_prefix: "chat".into(),
            transfers: std::collections::BTreeMap::new(),
            file_details: std::collections::HashMap::new(),
            file_asked: std::collections::HashSet::new(),
        }
    }

    /// The conversation shown in the view.
    pub(crate) fn current(&self) -> &Conversation {
        &self.conversations[self.open]
    }

    /// The index of the conversation with `kind`, added in its place if
    /// new (the selection and the open conversation stay where they are).
    pub(crate) fn conversation(&mut self, kind: &Kind) -> usize {
        if let Some(index) = self.conversations.iter().position(|c| &c.kind == kind) {
            return index;
        }
        let selected = self.conversations[self.selected].kind.clone();
        let open = self.conversations[self.open].kind.clone();
        self.conversations.push(Conversation::new(kind.clone()));
        self.conversations.sort_by(|a, b| a.kind.cmp(&b.kind));
        let find = |k: &Kind| {
            self.conversations
                .iter()
                .position(|c| &c.kind == k)
                .unwrap_or(0)
        };
        self.selected = find(&selected);
        self.open = find(&open);
        find(kind)
    }

    /// Unread counts the owner keeps (across restarts), for conversations
    /// not open; new ones are added.
    pub(crate) fn set_unread(&mut self, counts: &[(Kind, usize)]) {
        for (kind, unread) in counts {
            let index = self.conversation(kind);
            if index != self.open {
                self.conversations[index].unread = *unread;
            }
        }
    }

    /// Members (my own handle is skipped) and groups known to the owner.
    pub(crate) fn set_directory(&mut self, members: &[String], groups: &[String]) {
        for handle in members {
            if *handle != self.me {
                self.conversation(&Kind::Contact(handle.clone()));
            }
        }
        for group in groups {
            self.conversation(&Kind::Group(group.clone()));
        }
    }

    /// Applies one user action; returns what the driver must do.
    pub(crate) fn apply(&mut self, action: Action) -> Vec<Request> {
        let last = self.conversations.len() - 1;
        match action {
            Action::Up => self.selected = self.selected.saturating_sub(1),
            Action::Down => self.selected = (self.selected + 1).min(last),
            Action::Open => {
                self.focus = Focus::Compose;
                return self.open_selected();
            }
            Action::Next | Action::Prev => {
                self.selected = if action == Action::Next {
                    if self.open == last { 0 } else { self.open + 1 }
                } else if self.open == 0 {
                    last
                } else {
                    self.open - 1
                };
                return self.open_selected();
            }
            Action::ToggleFocus => {
                self.focus = match self.focus {
                    Focus::List => Focus::Compose,
                    Focus::Compose => Focus::List,
                };
            }
            Action::FocusList => self.focus = Focus::List,
            Action::Insert(c) => {
                // Typing in the list writes to the conversation it points
                // at, as the compose box's title then says.
                let requests = if self.focus == Focus::List && self.selected != self.open {
                    self.open_selected()
                } else {
                    Vec::new()
                };
                self.focus = Focus::Compose;
                self.compose.insert(c);
                return requests;
            }
            Action::Newline => self.compose.insert('\n'),
            Action::Submit => return self.submit(),
            Action::Backspace => self.compose.backspace(),
            Action::Delete => self.compose.delete(),
            Action::Left => {
                if let Some(prev) = self.compose.prev_boundary() {
                    self.compose.cursor = prev;
                }
            }
            Action::Right => {
                if let Some(next) = self.compose.next_boundary() {
                    self.compose.cursor = next;
                }
            }
            Action::LineUp => {
                self.compose.vertical(true);
            }
            Action::LineDown => {
                self.compose.vertical(false);
            }
            Action::Home => self.compose.cursor = self.compose.line_start(),
            Action::End => self.compose.cursor = self.compose.line_end(),
            Action::Clear => {
                self.compose.take();
            }
            Action::DeleteWord => self.compose.delete_word(),
            Action::ScrollUp => self.scroll = self.scroll.saturating_add(5),
            Action::ScrollDown => self.scroll = self.scroll.saturating_sub(5),
            Action::Quit => {
                self.quit = true;
                return vec![Request::Quit];
            }
        }
        Vec::new()
    }

    fn open_selected(&mut self) -> Vec<Request> {
        // Each conversation keeps its own draft: text typed for one member
        // never goes to the next one opened.
        if self.open != self.selected {
            let draft = std::mem::take(&mut self.conversations[self.selected].draft);
            self.conversations[self.open].draft = std::mem::replace(&mut self.compose, draft);
        }
        self.open = self.selected;
        self.scroll = 0;
        let conversation = &mut self.conversations[self.open];
        let unread = std::mem::take(&mut conversation.unread);
        if conversation.loaded || conversation.kind == Kind::Console {
            // Loaded: what came meanwhile is on screen now. (Not loaded:
            // the driver marks it read once the history is shown.)
            return match &conversation.kind {
                Kind::Contact(_) | Kind::Group(_) if unread > 0 => {
                    vec![Request::Read(conversation.kind.clone())]
                }
                _ => Vec::new(),
            };
        }
        conversation.loaded = true;
        vec![Request::History(conversation.kind.clone())]
    }

    /// A notice in the open conversation.
    pub(crate) fn say(&mut self, text: impl Into<String>) {
        let open = self.open;
        self.conversations[open]
            .entries
            .push(Entry::Notice(text.into()));
        self.scroll = 0;
    }

    fn submit(&mut self) -> Vec<Request> {
        if self.compose.text.trim().is_empty() {
            return Vec::new();
        }
        let text = self.compose.take();
        if let Some(command) = text.trim_start().strip_prefix('/') {
            // `//text` sends "/text".
            if !command.starts_with('/') {
                return self.command(command);
            }
        }
        let text = match text.trim_start().strip_prefix("//") {
            Some(rest) => format!("/{rest}"),
            None => text,
        };
        self.send(text, None)
    }

    /// Sends `text` (replying to `reply_to`) to the open conversation,
    /// with a placeholder until the ID comes back.
    fn send(&mut self, text: String, reply_to: Option<String>) -> Vec<Request> {
        let to = self.current().kind.clone();
        if to == Kind::Console {
            self.say("This is the console: open a conversation first (Up/Down and Enter, or /join NAME).");
            // Nothing typed is lost.
            self.compose.text = text;
            self.compose.cursor = self.compose.text.len();
            return Vec::new();
        }
        self.next_local += 1;
        let local = self.next_local;
        let shown = match reply_to.as_deref().and_then(|id| id.get(..8)) {
            Some(short) => format!("(re {short}) {text}"),
            None => text.clone(),
        };
        let placeholder = ChatMessage {
            id: format!("local:{local}"),
            from: self.me.clone(),
            outgoing: true,
            text: shown,
            plain: text.clone(),
            deleted: false,
            sent_at: 0,
            status: Status::Queued,
            file: None,
        };
        let open = self.open;
        self.conversations[open]
            .entries
            .push(Entry::Message(placeholder));
        self.scroll = 0;
        vec![Request::Send {
            to,
            text,
            local,
            reply_to,
        }]
    }

    /// Sends the file at `path` (with `caption`) to the open
    /// conversation, with a placeholder that shows the upload's progress
    /// until the ID comes back.
    pub(crate) fn send_file(&mut self, path: String, caption: String) -> Vec<Request> {
        let to = self.current().kind.clone();
        if to == Kind::Console {
            self.say("This is the console: open a conversation first (Up/Down and Enter, or /join NAME).");
            return Vec::new();
        }
        self.next_local += 1;
        let local = self.next_local;
        let name = path
            .rsplit(['/', '\\'])
            .find(|part| !part.is_empty())
            .unwrap_or("file")
            .to_owned();
        let card = FileCard {
            name,
            caption: caption.clone(),
            progress: Some((0, 0)),
            ..FileCard::default()
        };
        let placeholder = ChatMessage {
            id: format!("local:{local}"),
            from: self.me.clone(),
            outgoing: true,
            text: card.line(true),
            plain: caption.clone(),
            deleted: false,
            sent_at: 0,
            status: Status::Queued,
            file: Some(Box::new(card.clone())),
        };
        let open = self.open;
        self.conversations[open]
            .entries
            .push(Entry::Message(placeholder));
        self.scroll = 0;
        let transfer = format!("{}:up:{local}", self.transfer_prefix);
        self.transfers.insert(
            transfer.clone(),
            Transfer {
                name: card.name,
                done: 0,
                total: 0,
                upload: true,
            },
        );
        vec![Request::SendFile {
            to,
            path,
            caption,
            local,
            transfer,
        }]
    }

    /// Saves the file of message `id` to `path` (a file or a directory;
    /// none: the download directory).
    pub(crate) fn save_file(&mut self, id: &str, path: Option<String>) -> Vec<Request> {
        let transfer = format!("{}:down:{id}", self.transfer_prefix);
        if self.transfers.contains_key(&transfer) {
            self.say("that file is being saved already");
            return Vec::new();
        }
        let name = self
            .file_message(id)
            .and_then(|m| m.file.as_ref())
            .map(|f| f.name.clone())
            .unwrap_or_else(|| "file".into());
        self.transfers.insert(
            transfer.clone(),
            Transfer {
                name,
                done: 0,
                total: 0,
                upload: false,
            },
        );
        vec![Request::SaveFile {
            id: id.to_owned(),
            path,
            transfer,
        }]
    }

    /// The file message `id` in any conversation.
    fn file_message(&self, id: &str) -> Option<&ChatMessage> {
        self.conversations
            .iter()
            .flat_map(|c| &c.entries)
            .find_map(|e| match e {
                Entry::Message(m) if m.id == id && m.file.is_some() => Some(m),
                _ => None,
            })
    }

    fn file_message_mut(&mut self, id: &str) -> Option<&mut ChatMessage> {
        self.conversations
            .iter_mut()
            .flat_map(|c| &mut c.entries)
            .find_map(|e| match e {
                Entry::Message(m) if m.id == id && m.file.is_some() => Some(m),
                _ => None,
            })
    }

    /// A `file.progress` notification: `done` of `total` bytes of
    /// transfer `transfer` moved (only this client's are followed).
    pub(crate) fn on_progress(&mut self, transfer: &str, done: u64, total: u64) {
        let Some(entry) = self.transfers.get_mut(transfer) else {
            return;
        };
        entry.done = done;
        entry.total = total;
        let upload = entry.upload;
        let Some(rest) = transfer.strip_prefix(&format!("{}:", self.transfer_prefix)) else {
            return;
        };
        let id = match rest.split_once(':') {
            Some(("up", local)) => format!("local:{local}"),
            Some(("down", id)) => id.to_owned(),
            _ => return,
        };
        if let Some(message) = self.file_message_mut(&id)
            && let Some(card) = &mut message.file
        {
            card.progress = Some((done, total));
            if upload {
                card.size = Some(total);
            }
            message.text = card.line(upload);
        }
    }

    /// The owner took my file `local` at `now` and gave it `id` (with
    /// its status and size), or failed.
    pub(crate) fn on_file_sent(
        &mut self,
        to: &Kind,
        local: u64,
        now: u64,
        result: Result<(String, bool, u64), String>,
    ) {
        self.transfers
            .remove(&format!("{}:up:{local}", self.transfer_prefix));
        let placeholder = format!("local:{local}");
        match result {
            Ok((id, delivered, size)) => {
                self.on_sent(to, local, now, Ok((id.clone(), delivered)));
                if let Some(message) = self.file_message_mut(&id)
                    && let Some(card) = &mut message.file
                {
                    card.progress = None;
                    card.size = Some(size);
                    message.text = card.line(true);
                }
            }
            Err(error) => {
                let index = self.conversation(to);
                let conversation = &mut self.conversations[index];
                let name = conversation.entries.iter().find_map(|e| match e {
                    Entry::Message(m) if m.id == placeholder => {
                        m.file.as_ref().map(|f| f.name.clone())
                    }
                    _ => None,
                });
                conversation
                    .entries
                    .retain(|e| !matches!(e, Entry::Message(m) if m.id == placeholder));
                conversation.entries.push(Entry::Notice(format!(
                    "file {} not sent: {error}",
                    name.unwrap_or_default()
                )));
            }
        }
    }

    /// The file of message `id` was saved to `path`, or not.
    pub(crate) fn on_file_saved(&mut self, id: &str, result: Result<String, String>) {
        self.transfers
            .remove(&format!("{}:down:{id}", self.transfer_prefix));
        let name = self
            .file_message(id)
            .and_then(|m| m.file.as_ref())
            .map_or_else(|| "the file".to_owned(), |f| f.name.clone());
        match result {
            Ok(path) => {
                if let Some(details) = self.file_details.get_mut(id) {
                    details.downloaded = true;
                }
                if let Some(message) = self.file_message_mut(id)
                    && let Some(card) = &mut message.file
                {
                    card.progress = None;
                    card.saved = Some(path.clone());
                    message.text = card.line(!message.outgoing);
                }
                self.say(format!("saved {name} to {path}"));
            }
            Err(error) => {
                if let Some(message) = self.file_message_mut(id)
                    && let Some(card) = &mut message.file
                {
                    card.progress = None;
                    message.text = card.line(false);
                }
                self.say(format!("could not save {name}: {error}"));
            }
        }
    }

    /// What the owner told of file `id`, once; the first call asks.
    pub(crate) fn file_details(&mut self, id: &str) -> (Option<&FileDetails>, Vec<Request>) {
        if id.is_empty() || id.starts_with("local:") {
            return (None, Vec::new());
        }
        if self.file_asked.insert(id.to_owned()) {
            return (None, vec![Request::FileInfo(id.to_owned())]);
        }
        (self.file_details.get(id), Vec::new())
    }

    /// The owner's `file.info` answer for `id`.
    pub(crate) fn on_file_info(&mut self, id: &str, result: Result<FileDetails, String>) {
        match result {
            Ok(details) => {
                self.file_details.insert(id.to_owned(), details);
            }
            // Asked again on the next look (a network hiccup).
            Err(_) => {
                self.file_asked.remove(id);
            }
        }
    }

    /// The message `reference` names in the open conversation: `^` the
    /// newest, `^N` the N-th newest (counting only those `among` picks),
    /// or an ID (8 to 32 hex digits, checked by the owner).
    fn message_ref(&self, reference: &str, among: Among) -> Result<String, String> {
        let Some(back) = reference.strip_prefix('^') else {
            let hex = reference.len() >= 8
                && reference.len() <= 32
                && reference.chars().all(|c| c.is_ascii_hexdigit());
            return match hex {
                true => Ok(reference.to_ascii_lowercase()),
                false => Err(format!(
                    "{reference:?} names no message: use ^ (the newest), ^2 (the one before)… or an ID from `sotto history`"
                )),
            };
        };
        let n = match back {
            "" => 1,
            n => n
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("^{back}: give ^ or ^N with N a positive number"))?,
        };
        let found = self
            .current()
            .entries
            .iter()
            .rev()
            .filter_map(|e| match e {
                Entry::Message(m) if among.picks(m) => Some(m),
                _ => None,
            })
            .nth(n - 1);
        let (one, many) = match among {
            Among::All => ("message", "messages"),
            Among::Mine => ("message", "messages of yours"),
            Among::Files => ("file", "files"),
        };
        match found {
            Some(m) if m.id.starts_with("local:") => {
                Err(format!("that {one} has no ID yet (it is still being sent)"))
            }
            Some(m) => Ok(m.id.clone()),
            None if n == 1 && among == Among::Files => {
                Err("there is no file in this conversation".to_owned())
            }
            None => Err(format!("there are not {n} {many} in this conversation")),
        }
    }

    /// `/reply`, `/react`, `/edit`, `/delete`: `rest` is what follows the
    /// command's name.
    fn message_command(&mut self, name: &str, rest: &str) -> Vec<Request> {
        let usage = match name {
            "reply" => "usage: /reply MSG TEXT (MSG: ^, ^2… or an ID)",
            "react" => "usage: /react MSG EMOJI (MSG: ^, ^2… or an ID)",
            "edit" => "usage: /edit MSG NEW TEXT (MSG: ^ your newest, ^2… or an ID)",
            _ => "usage: /delete MSG (MSG: ^ your newest, ^2… or an ID)",
        };
        if self.current().kind == Kind::Console {
            self.say("This is the console: open a conversation first (Up/Down and Enter, or /join NAME).");
            return Vec::new();
        }
        let rest = rest.trim_start();
        let (reference, argument) = match rest.split_once(char::is_whitespace) {
            Some((reference, argument)) => (reference, argument.trim()),
            None => (rest, ""),
        };
        let needs_argument = name != "delete";
        if reference.is_empty() || argument.is_empty() == needs_argument {
            self.say(usage);
            return Vec::new();
        }
        let mine = matches!(name, "edit" | "delete");
        let id = match self.message_ref(reference, if mine { Among::Mine } else { Among::All }) {
            Ok(id) => id,
            Err(error) => {
                self.say(error);
                return Vec::new();
            }
        };
        let change = match name {
            "reply" => return self.send(argument.to_owned(), Some(id)),
            "react" => Change::React(argument.to_owned()),
            "edit" => Change::Edit(argument.to_owned()),
            _ => Change::Delete,
        };
        vec![Request::Change { id, change }]
    }

    fn command(&mut self, line: &str) -> Vec<Request> {
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let Some((name, args)) = words.split_first() else {
            return Vec::new();
        };
        let cli = |first: &str| {
            let mut all = vec![first.to_owned()];
            all.extend(args.iter().cloned());
            vec![Request::Command(all)]
        };
        match name.as_str() {
            "quit" | "q" | "exit" => self.apply(Action::Quit),
            "reply" | "react" | "edit" | "delete" => {
                // The text keeps its own spacing: what follows the name.
                let rest = line.trim_start().get(name.len()..).unwrap_or_default();
                let name = name.clone();
                self.message_command(&name, rest)
            }
            "help" | "h" | "?" => {
                self.say(HELP);
                Vec::new()
            }
            "join" | "j" | "open" | "msg" => {
                let Some(target) = args.first() else {
                    self.say("usage: /join NAME (a member's handle, or #group)");
                    return Vec::new();
                };
                let kind = match target.strip_prefix('#') {
                    Some(group) => Kind::Group(group.to_owned()),
                    None if self
                        .conversations
                        .iter()
                        .any(|c| c.kind == Kind::Group(target.clone())) =>
                    {
                        Kind::Group(target.clone())
                    }
                    None if *target == self.me => {
                        self.say("that is you");
                        return Vec::new();
                    }
                    None => Kind::Contact(target.clone()),
                };
                self.selected = self.conversation(&kind);
                self.focus = Focus::Compose;
                self.open_selected()
            }
            "invite" => {
                if args.is_empty() {
                    self.say("usage: /invite HANDLE [--device|--replace] [--expires 7d]");
                    return Vec::new();
                }
                cli("invite")
            }
            "group" | "g" => {
                if args.is_empty() {
                    self.say("usage: /group create|add|remove NAME HANDLE..., /group leave NAME, /group list");
                    return Vec::new();
                }
                cli("group")
            }
            "verify" => {
                if args.is_empty() {
                    self.say("usage: /verify HANDLE");
                    return Vec::new();
                }
                if args.iter().any(|a| a == "--sas") {
                    self.say("The emoji comparison asks its question on a terminal of its own: run `sotto verify HANDLE --sas` in another terminal (it goes through this chat), both of you at the same time.");
                    return Vec::new();
                }
                cli("verify")
            }
            "file" | "attach" => {
                let rest = line.trim_start().get(name.len()..).unwrap_or_default();
                let (path, caption) = split_path(rest);
                if path.is_empty() {
                    self.say("usage: /file PATH [CAPTION] (a path with spaces in \"quotes\")");
                    return Vec::new();
                }
                self.send_file(path, caption)
            }
            "save" => {
                let Some(reference) = args.first() else {
                    self.say("usage: /save FILE [PATH] (FILE: ^ the newest file, ^2…, or an ID)");
                    return Vec::new();
                };
                let rest = line.trim_start().get(name.len()..).unwrap_or_default();
                let rest = rest.trim_start().get(reference.len()..).unwrap_or_default();
                let (path, _) = split_path(rest);
                let id = match self.message_ref(reference, Among::Files) {
                    Ok(id) => id,
                    Err(error) => {
                        self.say(error);
                        return Vec::new();
                    }
                };
                self.save_file(&id, (!path.is_empty()).then_some(path))
            }
            "devices" => cli("devices"),
            "settings" => cli("settings"),
            "members" | "refresh" => vec![Request::Refresh, Request::Sync],
            other => {
                self.say(format!("unknown command /{other}; /help lists them"));
                Vec::new()
            }
        }
    }

    /// A message arrived (or was sent from another of my devices). Returns
    /// whether it is new and from someone else in a conversation that is
    /// not open — what rings the bell.
    pub(crate) fn on_message(&mut self, kind: Kind, message: ChatMessage) -> bool {
        let index = self.conversation(&kind);
        let conversation = &mut self.conversations[index];
        let known = conversation.entries.iter_mut().find_map(|e| match e {
            Entry::Message(m) if m.id == message.id => Some(m),
            _ => None,
        });
        if let Some(existing) = known {
            *existing = message;
            return false;
        }
        let incoming = !message.outgoing;
        conversation.entries.push(Entry::Message(message));
        if index == self.open {
            self.scroll = 0;
            return false;
        }
        if incoming {
            conversation.unread += 1;
        }
        incoming
    }

    /// A message shown earlier changed (a reaction, an edit, a delete for
    /// everyone): replaced in place; one not shown stays out.
    pub(crate) fn on_update(&mut self, message: ChatMessage) {
        for conversation in &mut self.conversations {
            for entry in &mut conversation.entries {
                if let Entry::Message(m) = entry
                    && m.id == message.id
                {
                    *m = message;
                    return;
                }
            }
        }
    }

    /// A conversation's history: replaces what was shown, keeping
    /// messages not (yet) in it and the notices.
    pub(crate) fn on_history(
        &mut self,
        kind: Kind,
        messages: Vec<ChatMessage>,
        earlier: Option<u64>,
    ) {
        let index = self.conversation(&kind);
        let conversation = &mut self.conversations[index];
        let known: std::collections::HashSet<&str> =
            messages.iter().map(|m| m.id.as_str()).collect();
        let is_known = |e: &Entry| matches!(e, Entry::Message(m) if known.contains(m.id.as_str()));
        // What was here before the page's first message (earlier pages
        // loaded before a reload) stays before it; the rest (live
        // messages, notices) after.
        let split = conversation.entries.iter().position(is_known).unwrap_or(0);
        let before: Vec<Entry> = conversation.entries[..split].to_vec();
        let after: Vec<Entry> = conversation.entries[split..]
            .iter()
            .filter(|e| !is_known(e))
            .cloned()
            .collect();
        if !before.iter().any(|e| matches!(e, Entry::Message(_))) {
            conversation.earlier = earlier;
        }
        conversation.entries = before;
        conversation
            .entries
            .extend(messages.into_iter().map(Entry::Message));
        conversation.entries.extend(after);
        conversation.loaded = true;
    }

    /// An earlier page of a conversation's history came: it goes on top.
    pub(crate) fn on_earlier(
        &mut self,
        kind: Kind,
        messages: Vec<ChatMessage>,
        earlier: Option<u64>,
    ) {
        let index = self.conversation(&kind);
        let conversation = &mut self.conversations[index];
        let shown: std::collections::HashSet<String> = conversation
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Message(m) => Some(m.id.clone()),
                Entry::Notice(_) => None,
            })
            .collect();
        let mut entries: Vec<Entry> = messages
            .into_iter()
            .filter(|m| !shown.contains(&m.id))
            .map(Entry::Message)
            .collect();
        entries.append(&mut conversation.entries);
        conversation.entries = entries;
        conversation.earlier = earlier;
        conversation.loading_earlier = false;
    }

    /// Asks for the page before the oldest loaded message of the open
    /// conversation, if the store holds one and it is not on its way.
    pub(crate) fn load_earlier(&mut self) -> Vec<Request> {
        let conversation = &mut self.conversations[self.open];
        match conversation.earlier {
            Some(before) if !conversation.loading_earlier => {
                conversation.loading_earlier = true;
                vec![Request::Earlier(conversation.kind.clone(), before)]
            }
            _ => Vec::new(),
        }
    }

    /// The owner took message `local` at `now` (unix milliseconds) and
    /// gave it `id` (or failed).
    pub(crate) fn on_sent(
        &mut self,
        kind: &Kind,
        local: u64,
        now: u64,
        result: Result<(String, bool), String>,
    ) {
        let index = self.conversation(kind);
        let placeholder = format!("local:{local}");
        let conversation = &mut self.conversations[index];
        let Some(position) = conversation
            .entries
            .iter()
            .position(|e| matches!(e, Entry::Message(m) if m.id == placeholder))
        else {
            return;
        };
        match result {
            Ok((id, delivered)) => {
                let already = conversation
                    .entries
                    .iter()
                    .any(|e| matches!(e, Entry::Message(m) if m.id == id));
                if already {
                    conversation.entries.remove(position);
                } else if let Entry::Message(m) = &mut conversation.entries[position] {
                    m.id = id;
                    m.sent_at = now;
                    m.status = if delivered {
                        Status::Sent
                    } else {
                        Status::Queued
                    };
                }
            }
            Err(error) => {
                let text = match conversation.entries.remove(position) {
                    Entry::Message(m) => m.text,
                    Entry::Notice(text) => text,
                };
                conversation
                    .entries
                    .push(Entry::Notice(format!("not sent: {error}")));
                // Nothing typed is lost: it goes back to that
                // conversation's compose line (or draft, if another is
                // open) unless something new is being written there.
                let compose = if index == self.open {
                    &mut self.compose
                } else {
                    &mut self.conversations[index].draft
                };
                if compose.text.is_empty() {
                    compose.cursor = text.len();
                    compose.text = text;
                }
            }
        }
    }

    /// A message of mine changed status (delivered, read).
    pub(crate) fn on_status(&mut self, id: &str, status: Status) {
        for conversation in &mut self.conversations {
            for entry in &mut conversation.entries {
                if let Entry::Message(m) = entry
                    && m.id == id
                {
                    // Statuses only move forward: a late "delivered" does
                    // not undo "read".
                    if !(m.status == Status::Read && status == Status::Delivered) {
                        m.status = status;
                    }
                    return;
                }
            }
        }
    }

    /// A notice from the owner: shown in the conversation it names
    /// ("bob's key changed ...") or else in the console.
    pub(crate) fn on_notice(&mut self, text: &str) {
        let index = self
            .conversations
            .iter()
            .position(|c| match &c.kind {
                Kind::Contact(handle) => text.starts_with(&format!("{handle}'s ")),
                _ => false,
            })
            .unwrap_or(0);
        self.conversations[index]
            .entries
            .push(Entry::Notice(text.to_owned()));
        if index != self.open {
            self.conversations[index].unread += 1;
        }
    }

    /// The relay went away or came back.
    pub(crate) fn on_connection(&mut self, online: bool) {
        if self.online != Some(online) {
            self.online = Some(online);
        }
    }

    /// Total unread messages outside the open conversation.
    pub(crate) fn unread_total(&self) -> usize {
        self.conversations.iter().map(|c| c.unread).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> Chat {
        let mut chat = Chat::new("alice", "acme");
        chat.set_directory(
            &["alice".into(), "carol".into(), "bob".into()],
            &["ops".into()],
        );
        chat
    }

    fn incoming(id: &str, from: &str, text: &str) -> ChatMessage {
        ChatMessage {
            id: id.into(),
            from: from.into(),
            outgoing: false,
            text: text.into(),
            plain: text.into(),
            deleted: false,
            sent_at: 0,
            status: Status::Received,
            file: None,
        }
    }

    fn kinds(chat: &Chat) -> Vec<Kind> {
        chat.conversations.iter().map(|c| c.kind.clone()).collect()
    }

    #[test]
    fn the_list_holds_the_console_members_without_me_then_groups() {
        let chat = chat();
        assert_eq!(
            kinds(&chat),
            vec![
                Kind::Console,
                Kind::Contact("bob".into()),
                Kind::Contact("carol".into()),
                Kind::Group("ops".into())
            ]
        );
    }

    #[test]
    fn arrows_and_enter_open_a_conversation_and_ask_for_its_history_once() {
        let mut chat = chat();
        assert!(chat.apply(Action::Down).is_empty());
        assert_eq!(
            chat.apply(Action::Open),
            vec![Request::History(Kind::Contact("bob".into()))]
        );
        assert_eq!(chat.open, 1);
        assert_eq!(chat.focus, Focus::Compose);
        chat.apply(Action::FocusList);
        assert!(chat.apply(Action::Open).is_empty(), "history asked twice");
    }

    #[test]
    fn unread_counts_grow_outside_the_open_conversation_and_reset_on_open() {
        let mut chat = chat();
        chat.apply(Action::Down);
        chat.apply(Action::Open);
        assert!(!chat.on_message(Kind::Contact("bob".into()), incoming("1", "bob", "hi")));
        assert!(chat.on_message(Kind::Contact("carol".into()), incoming("2", "carol", "yo")));
        assert!(chat.on_message(Kind::Group("ops".into()), incoming("3", "carol", "all")));
        assert!(chat.on_message(Kind::Group("ops".into()), incoming("4", "bob", "ok")));
        // The same message twice (live, then in a sync) counts once.
        assert!(!chat.on_message(Kind::Group("ops".into()), incoming("4", "bob", "ok")));
        let unread: Vec<usize> = chat.conversations.iter().map(|c| c.unread).collect();
        assert_eq!(unread, vec![0, 0, 1, 2]);
        chat.apply(Action::Next);
        assert_eq!(chat.current().kind, Kind::Contact("carol".into()));
        assert_eq!(chat.conversations[2].unread, 0);
        assert_eq!(chat.unread_total(), 2);
    }

    #[test]
    fn a_message_from_someone_new_adds_their_conversation_in_order() {
        let mut chat = chat();
        chat.apply(Action::Down);
        chat.apply(Action::Open);
        chat.on_message(Kind::Contact("aaron".into()), incoming("1", "aaron", "hi"));
        assert_eq!(chat.conversations[1].kind, Kind::Contact("aaron".into()));
        assert_eq!(chat.current().kind, Kind::Contact("bob".into()));
        assert_eq!(
            chat.conversations[chat.selected].kind,
            Kind::Contact("bob".into())
        );
    }

    #[test]
    fn enter_sends_the_text_and_a_placeholder_takes_the_id_that_comes_back() {
        let mut chat = chat();
        chat.apply(Action::Down);
        chat.apply(Action::Open);
        for c in "hi bob".chars() {
            chat.apply(Action::Insert(c));
        }
        let requests = chat.apply(Action::Submit);
        assert_eq!(
            requests,
            vec![Request::Send {
                to: Kind::Contact("bob".into()),
                text: "hi bob".into(),
                local: 1,
                reply_to: None,
            }]
        );
        assert!(chat.compose.text.is_empty());
        chat.on_sent(
            &Kind::Contact("bob".into()),
            1,
            60_000,
            Ok(("abcd".into(), true)),
        );
        chat.on_status("abcd", Status::Delivered);
        chat.on_status("abcd", Status::Read);
        chat.on_status("abcd", Status::Delivered);
        let Entry::Message(m) = &chat.current().entries[0] else {
            panic!("not a message")
        };
        assert_eq!((m.id.as_str(), m.status), ("abcd", Status::Read));
    }

    #[test]
    fn typing_in_the_list_writes_to_the_conversation_selected() {
        let mut chat = chat();
        chat.apply(Action::Down);
        assert_eq!(
            chat.apply(Action::Insert('h')),
            vec![Request::History(Kind::Contact("bob".into()))]
        );
        assert_eq!(chat.current().kind, Kind::Contact("bob".into()));
        assert_eq!(
            (chat.focus, chat.compose.text.as_str()),
            (Focus::Compose, "h")
        );
    }

    #[test]
    fn each_conversation_keeps_its_own_draft() {
        let mut chat = chat();
        chat.apply(Action::Down);
        chat.apply(Action::Open);
        for c in "for bob".chars() {
            chat.apply(Action::Insert(c));
        }
        chat.apply(Action::Next);
        assert_eq!(chat.current().kind, Kind::Contact("carol".into()));
        assert_eq!(chat.compose.text, "", "bob's draft followed to carol");
        // Enter here sends nothing to carol.
        assert!(chat.apply(Action::Submit).is_empty());
        chat.apply(Action::Prev);
        assert_eq!(chat.compose.text, "for bob");
        assert_eq!(chat.compose.cursor, "for bob".len());
    }

    #[test]
    fn a_refused_message_goes_back_to_its_own_conversation() {
        let mut chat = chat();
        chat.apply(Action::Down);
        chat.apply(Action::Open);
        chat.apply(Action::Insert('x'));
        chat.apply(Action::Submit);
        chat.apply(Action::Next);
        chat.on_sent(&Kind::Contact("bob".into()), 1, 0, Err("refused".into()));
        assert_eq!(chat.compose.text, "");
        chat.apply(Action::Prev);
        assert_eq!(chat.compose.text, "x");
    }

    #[test]
    fn a_failed_send_says_why_and_puts_the_text_back() {
        let mut chat = chat();
        chat.apply(Action::Down);
        chat.apply(Action::Open);
        chat.apply(Action::Insert('x'));
        chat.apply(Action::Submit);
        chat.on_sent(
            &Kind::Contact("bob".into()),
            1,
            0,
            Err("bob is not a member".into()),
        );
        assert_eq!(chat.compose.text, "x");
        assert_eq!(
            chat.current().entries,
            vec![Entry::Notice("not sent: bob is not a member".into())]
        );
    }

    #[test]
    fn alt_enter_makes_multi_line_messages_and_the_cursor_moves_between_lines() {
        let mut chat = chat();
        for c in "abc".chars() {
            chat.apply(Action::Insert(c));
        }
        chat.apply(Action::Newline);
        chat.apply(Action::Insert('d'));
        assert_eq!(chat.compose.text, "abc\nd");
        chat.apply(Action::LineUp);
        assert_eq!(chat.compose.cursor, 1);
        chat.apply(Action::End);
        chat.apply(Action::LineDown);
        assert_eq!(chat.compose.cursor, 5);
        chat.apply(Action::Backspace);
        chat.apply(Action::Backspace);
        assert_eq!(chat.compose.text, "abc");
        chat.apply(Action::Insert(' '));
        chat.apply(Action::Insert('é'));
        chat.apply(Action::Left);
        chat.apply(Action::Delete);
        assert_eq!(chat.compose.text, "abc ");
        chat.apply(Action::DeleteWord);
        assert_eq!(chat.compose.text, "");
    }

    #[test]
    fn slash_commands_map_to_cli_commands_or_act_here() {
        let mut chat = chat();
        let mut run = |line: &str| {
            for c in line.chars() {
                chat.apply(Action::Insert(c));
            }
            chat.apply(Action::Submit)
        };
        assert_eq!(
            run("/invite dave --expires 1d"),
            vec![Request::Command(vec![
                "invite".into(),
                "dave".into(),
                "--expires".into(),
                "1d".into()
            ])]
        );
        assert_eq!(
            run("/group create ops2 bob carol"),
            vec![Request::Command(vec![
                "group".into(),
                "create".into(),
                "ops2".into(),
                "bob".into(),
                "carol".into()
            ])]
        );
        assert_eq!(
            run("/verify bob"),
            vec![Request::Command(vec!["verify".into(), "bob".into()])]
        );
        assert_eq!(
            run("/devices"),
            vec![Request::Command(vec!["devices".into()])]
        );
        assert_eq!(
            run("/join #ops"),
            vec![Request::History(Kind::Group("ops".into()))]
        );
        assert_eq!(chat.current().kind, Kind::Group("ops".into()));
        assert_eq!(
            chat.apply(Action::Insert('/')).len() + {
                for c in "bogus".chars() {
                    chat.apply(Action::Insert(c));
                }
                chat.apply(Action::Submit).len()
            },
            0
        );
        assert!(
            matches!(chat.current().entries.last(), Some(Entry::Notice(n)) if n.contains("unknown command /bogus"))
        );
        for c in "//etc".chars() {
            chat.apply(Action::Insert(c));
        }
        assert!(
            matches!(&chat.apply(Action::Submit)[..], [Request::Send { text, .. }] if text == "/etc")
        );
        for c in "/quit".chars() {
            chat.apply(Action::Insert(c));
        }
        assert_eq!(chat.apply(Action::Submit), vec![Request::Quit]);
        assert!(chat.quit);
    }

    #[test]
    fn a_key_change_notice_lands_in_that_members_conversation() {
        let mut chat = chat();
        chat.on_notice("bob's key changed (the admin re-invited them): verify them again with `sotto verify bob`");
        assert!(
            matches!(&chat.conversations[1].entries[..], [Entry::Notice(n)] if n.contains("key changed"))
        );
        assert_eq!(chat.conversations[1].unread, 1);
        chat.on_notice("something else");
        assert_eq!(chat.conversations[0].entries.len(), 1);
    }

    #[test]
    fn history_merges_with_live_messages_without_doubles() {
        let mut chat = chat();
        chat.on_message(Kind::Contact("bob".into()), incoming("2", "bob", "live"));
        chat.on_history(
            Kind::Contact("bob".into()),
            vec![incoming("1", "bob", "old"), incoming("2", "bob", "live")],
            None,
        );
        let ids: Vec<String> = chat.conversations[1]
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Message(m) => Some(m.id.clone()),
                Entry::Notice(_) => None,
            })
            .collect();
        assert_eq!(ids, vec!["1", "2"]);
    }

    fn ids(chat: &Chat, index: usize) -> Vec<String> {
        chat.conversations[index]
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Message(m) => Some(m.id.clone()),
                Entry::Notice(_) => None,
            })
            .collect()
    }

    #[test]
    fn history_comes_in_pages_and_earlier_pages_go_on_top_and_survive_a_reload() {
        let mut chat = chat();
        let bob = Kind::Contact("bob".into());
        chat.selected = chat.conversation(&bob);
        chat.apply(Action::Open);
        // The last page, with more before it.
        chat.on_history(
            bob.clone(),
            vec![incoming("3", "bob", "c"), incoming("4", "bob", "d")],
            Some(7),
        );
        assert_eq!(chat.load_earlier(), vec![Request::Earlier(bob.clone(), 7)]);
        // Asked once until it comes.
        assert!(chat.load_earlier().is_empty());
        chat.on_earlier(
            bob.clone(),
            vec![incoming("1", "bob", "a"), incoming("2", "bob", "b")],
            None,
        );
        let open = chat.open;
        assert_eq!(ids(&chat, open), vec!["1", "2", "3", "4"]);
        // The first message reached: nothing more to ask.
        assert!(chat.load_earlier().is_empty());
        // A reload (missed updates) brings the last page again: the
        // earlier page stays on top, nothing doubles, the end stays known.
        chat.on_message(bob.clone(), incoming("5", "bob", "e"));
        chat.on_history(
            bob,
            vec![incoming("4", "bob", "d"), incoming("5", "bob", "e")],
            Some(9),
        );
        assert_eq!(ids(&chat, open), vec!["1", "2", "3", "4", "5"]);
        assert!(chat.load_earlier().is_empty());
    }
}
