//! `sotto-desktop`: the desktop client. While its window is open it owns
//! the profile, exactly like `sotto chat` (other `sotto` commands in a
//! terminal go through it), or it is a client of the `sotto daemon` that
//! owns it. The state, the requests and the owner are the CLI library's
//! ([`sotto_cli::Session`]); this crate only draws them with egui and turns
//! clicks and keys into calls.
//!
//! - [`Shell`]: the whole window: the join form for a home without an
//!   identity, a clear message for a profile that cannot be opened, else
//!   the conversations. Driven the same way by eframe (the real window)
//!   and by egui_kittest (tests, `--screenshot`).
//! - [`Desktop`]: the conversations of an open profile.
//! - `files.rs`: attaching (dialog, drag-and-drop), progress bars, file
//!   cards, inline thumbnails; `picture.rs` decodes images under limits.
//! - [`qr`]: reading a code from a picture of its QR code (join form).
//! - `main.rs`: arguments, the tokio runtime, the window.

mod files;
pub mod notify;
mod picture;
pub mod qr;
mod shell;
mod team;

use std::sync::Arc;

use eframe::egui;

pub use files::{
    ATTACH_BUTTON, ATTACH_PATH_LABEL, CAPTION_LABEL, PREVIEW_MAX, SAVE_AS_BUTTON, SAVE_BUTTON,
    SAVE_HERE_BUTTON, SAVE_PATH_LABEL, SEND_FILE_BUTTON, human_size,
};
pub use picture::THUMBNAIL_SIDE;
pub use shell::{
    AGAIN_LABEL, CODE_LABEL, NEW_PASSPHRASE_LABEL, PASSPHRASE_LABEL, QR_BUTTON, QR_PATH_LABEL,
    Shell, Wake,
};
use sotto_cli::{Line, Row, Session, Status};
pub use team::{TEAM_BUTTON, TeamWindow};

/// How many lines of a conversation are drawn at first; "Show earlier"
/// or "Load earlier messages" adds this many more. Only what is drawn
/// costs a frame, and only the last page is loaded when a conversation
/// opens ([`sotto_cli::HISTORY_PAGE`], the same size), so a conversation
/// of any length opens at once.
#[allow(clippy::cast_possible_truncation)]
pub const PAGE: usize = sotto_cli::HISTORY_PAGE as usize;

/// The window's state.
pub struct Desktop {
    session: Session,
    /// Keeps the owner's tasks running and gives `poll` its context.
    runtime: Arc<tokio::runtime::Runtime>,
    /// What is being written in the open conversation.
    compose: String,
    /// How many lines of the open conversation are drawn.
    shown: usize,
    /// The conversation `shown` counts for.
    shown_for: usize,
    /// The heights of message rows as last drawn, so that a frame lays
    /// out only the rows in view however many are loaded.
    heights: RowHeights,
    /// Ctrl+K: the jump-to-conversation box, while open.
    jump: Option<String>,
    /// Whether the window had the focus at the last frame.
    focused: bool,
    /// Notifications for the desktop, for messages that arrived while
    /// the window did not have the focus: who wrote (and the first line,
    /// with [`Desktop::notify_text`]). `main.rs` shows them.
    pub notifications: Vec<String>,
    /// Whether notifications carry the message's first line (off: only
    /// "alice: new message").
    pub notify_text: bool,
    /// The team window: members, verification, devices, admin.
    team: TeamWindow,
    /// What the compose box does with its text: send, reply, or edit.
    intent: Intent,
    /// Attach and save dialogs, thumbnails.
    files: files::Files,
}

/// What Enter in the compose box does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Intent {
    /// Send a new message.
    #[default]
    New,
    /// Reply to message `id` (from `who`, first line `line`).
    Reply {
        id: String,
        who: String,
        line: String,
    },
    /// Replace the text of my message `id`.
    Edit { id: String },
}

/// What the menu of a message asks for.
enum MessageAction {
    Reply,
    React(&'static str),
    Edit,
    Delete,
    Copy,
    /// Save the file into the download directory.
    Save,
    /// Ask where to save the file (its name).
    SaveAs(String),
}

/// The reactions the menu of a message offers.
pub const QUICK_REACTIONS: [&str; 5] = ["👍", "❤", "😂", "🎉", "👀"];

impl Desktop {
    /// A window on `session`; `runtime` runs its owner.
    #[must_use]
    pub fn new(session: Session, runtime: Arc<tokio::runtime::Runtime>) -> Self {
        Self {
            session,
            runtime,
            compose: String::new(),
            shown: PAGE,
            shown_for: usize::MAX,
            heights: RowHeights::default(),
            jump: None,
            focused: true,
            notifications: Vec::new(),
            notify_text: false,
            team: TeamWindow::default(),
            intent: Intent::New,
            files: files::Files::default(),
        }
    }

    /// The session, for tests and shutdown.
    #[must_use]
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Mutable access to the session (tests drive it directly too).
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Applies what arrives until no request is running, or `max` passed
    /// (a relay that does not answer): for `--screenshot` and tests.
    pub fn settle(&mut self, max: std::time::Duration) {
        let until = std::time::Instant::now() + max;
        loop {
            self.poll();
            let busy = self.session.busy() || self.team.busy() || self.files.busy();
            if !busy || std::time::Instant::now() >= until {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Opens a member's conversation or `#group` by name.
    pub fn open_named(&mut self, name: &str) -> bool {
        let opened = self.session.open_named(name);
        if opened {
            self.shown = PAGE;
            self.shown_for = self.session.current();
        }
        opened
    }

    /// Closes the profile (stops owning it), waiting for the owner.
    ///
    /// # Errors
    /// The owner ended with an error (this device was removed, the store
    /// broke).
    pub fn close_blocking(&mut self) -> anyhow::Result<()> {
        let runtime = self.runtime.clone();
        runtime.block_on(self.session.close())
    }

    /// Applies what arrived from the owner; true when something changed.
    pub fn poll(&mut self) -> bool {
        let _context = self.runtime.enter();
        let changed = self.session.poll();
        for arrival in self.session.take_arrivals() {
            // In front of the user, the unread counts tell.
            if self.focused {
                continue;
            }
            let from = match &arrival.group {
                Some(group) => format!("{} in #{group}", arrival.from),
                None => arrival.from.clone(),
            };
            self.notifications.push(if self.notify_text {
                format!("{from}: {}", elide(&arrival.first_line, 120))
            } else {
                format!("{from}: new message")
            });
        }
        changed
    }

    /// Draws the whole window into `ui` and handles its input.
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        draw_any_text(ui.ctx());
        let focused = ui.ctx().input(|i| i.viewport().focused.unwrap_or(true));
        if focused != self.focused {
            self.focused = focused;
            self.session.set_focused(focused);
        }
        self.poll();
        if ui
            .ctx()
            .input_mut(|i| i.consume_key(egui::Modifiers::COMMAND, egui::Key::K))
        {
            self.jump = Some(String::new());
        }
        files::Files::dropped(ui.ctx(), &mut self.session);
        self.header(ui);
        // The side list is read once per frame and shared by the parts.
        let rows = self.session.conversations();
        self.side_list(ui, &rows);
        self.compose_box(ui);
        self.messages(ui, &rows);
        self.jump_box(ui, &rows);
        self.team.ui(ui.ctx(), &mut self.session);
        self.files.dialogs(ui.ctx(), &mut self.session);
        files::Files::hovering(ui.ctx());
        // The session's results and the owner's notifications wake the
        // window (see main.rs); while calls run, it also looks again soon
        // (the team window's and the file dialogs' calls do not wake it).
        // A slow tick keeps the times and the connection state fresh.
        let again = if self.session.busy() || self.team.busy() || self.files.busy() {
            50
        } else {
            1000
        };
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(again));
    }

    fn header(&mut self, ui: &mut egui::Ui) {
        egui::Panel::top("header").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.strong("sotto");
                ui.label(format!("{} in {}", self.session.me(), self.session.team()));
                match self.session.online() {
                    Some(true) => ui.label("online"),
                    Some(false) => ui.colored_label(ui.visuals().warn_fg_color, "offline"),
                    None => ui.label("connecting…"),
                };
                let unread = self.session.unread_total();
                if unread > 0 {
                    ui.label(format!("{unread} unread"));
                }
                if ui.button(TEAM_BUTTON).clicked() {
                    if self.team.open {
                        self.team.open = false;
                    } else {
                        self.team.show(&mut self.session);
                    }
                }
            });
            if self.session.online() == Some(false) {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    "The relay cannot be reached. What you send waits in the outbox and goes out when it is back.",
                );
            }
        });
    }

    fn side_list(&mut self, ui: &mut egui::Ui, rows: &[Row]) {
        let current = self.session.current();
        let mut open = None;
        egui::Panel::left("conversations")
            .resizable(true)
            .default_size(200.0)
            .show(ui, |ui| {
                ui.heading("Conversations");
                egui::ScrollArea::vertical().show(ui, |ui| {
                    for (index, row) in rows.iter().enumerate() {
                        let mut title = row.label.clone();
                        if row.unread > 0 {
                            title.push_str(&format!("  ({})", row.unread));
                        }
                        let text = if row.unread > 0 {
                            egui::RichText::new(title).strong()
                        } else {
                            egui::RichText::new(title)
                        };
                        let response = ui.selectable_label(index == current, text);
                        if let Some(last) = &row.last {
                            ui.small(elide(last, 40));
                        }
                        if response.clicked() {
                            open = Some(index);
                        }
                    }
                });
            });
        if let Some(index) = open {
            self.open(index);
        }
    }

    fn open(&mut self, index: usize) {
        self.session.open_conversation(index);
        self.shown = PAGE;
        self.shown_for = index;
    }

    fn compose_box(&mut self, ui: &mut egui::Ui) {
        egui::Panel::bottom("compose").show(ui, |ui| {
            let mut cancel = false;
            match &self.intent {
                Intent::New => {}
                Intent::Reply { who, line, .. } => {
                    ui.horizontal(|ui| {
                        ui.label(format!("Replying to {who}: {}", elide(line, 60)));
                        cancel = ui.button("Cancel reply").clicked();
                    });
                }
                Intent::Edit { .. } => {
                    ui.horizontal(|ui| {
                        ui.label("Editing your message (everyone sees it marked edited)");
                        cancel = ui.button("Cancel edit").clicked();
                    });
                }
            }
            if cancel {
                if matches!(self.intent, Intent::Edit { .. }) {
                    self.compose.clear();
                }
                self.intent = Intent::New;
            }
            let label = ui.label("Message (Enter sends, Shift+Enter a new line, / for commands)");
            let edit = egui::TextEdit::multiline(&mut self.compose)
                .desired_rows(2)
                .desired_width(f32::INFINITY)
                .return_key(Some(egui::KeyboardShortcut::new(
                    egui::Modifiers::SHIFT,
                    egui::Key::Enter,
                )));
            let response = ui.add(edit).labelled_by(label.id);
            let enter = response.has_focus()
                && ui.input(|i| i.key_pressed(egui::Key::Enter) && !i.modifiers.shift);
            files::Files::progress(ui, &self.session);
            let mut clicked = false;
            ui.horizontal(|ui| {
                clicked = ui.button("Send").clicked();
                self.files.attach_button(ui);
            });
            if enter || clicked {
                self.send();
                response.request_focus();
            }
        });
    }

    fn send(&mut self) {
        let text = self.compose.trim_end_matches('\n').to_owned();
        if text.trim().is_empty() {
            return;
        }
        match std::mem::take(&mut self.intent) {
            Intent::New => self.session.submit(&text),
            Intent::Reply { id, .. } => self.session.submit(&format!("/reply {id} {text}")),
            Intent::Edit { id } => self.session.submit(&format!("/edit {id} {text}")),
        }
        self.compose.clear();
    }

    /// Carries out what the menu of message `id` asked for.
    fn message_action(&mut self, id: &str, action: MessageAction) {
        let Some(Line::Message {
            from,
            outgoing,
            plain,
            ..
        }) = (0..self.session.lines())
            .rev()
            .filter_map(|index| self.session.line(index))
            .find(|line| matches!(line, Line::Message { id: found, .. } if *found == id))
        else {
            return;
        };
        let who = if outgoing {
            "yourself".to_owned()
        } else {
            from.to_owned()
        };
        let plain = plain.to_owned();
        match action {
            MessageAction::Reply => {
                self.intent = Intent::Reply {
                    id: id.to_owned(),
                    who,
                    line: plain.lines().next().unwrap_or_default().to_owned(),
                };
            }
            MessageAction::React(emoji) => self.session.submit(&format!("/react {id} {emoji}")),
            MessageAction::Edit => {
                self.intent = Intent::Edit { id: id.to_owned() };
                self.compose = plain;
            }
            MessageAction::Delete => self.session.submit(&format!("/delete {id}")),
            MessageAction::Copy => {}
            MessageAction::Save => self.session.save_file(id, None),
            MessageAction::SaveAs(name) => self.files.ask_where(id, &name),
        }
    }

    fn messages(&mut self, ui: &mut egui::Ui, rows: &[Row]) {
        if self.shown_for != self.session.current() {
            self.shown_for = self.session.current();
            self.shown = PAGE;
            self.heights = RowHeights::default();
        }
        let title = rows
            .get(self.session.current())
            .map_or_else(String::new, |r| r.label.clone());
        egui::CentralPanel::default().show(ui, |ui| {
            ui.heading(title);
            let total = self.session.lines();
            let first = total.saturating_sub(self.shown);
            // The files about to be drawn: their thumbnails and details.
            let cards: Vec<(String, sotto_cli::FileCard)> = (first..total)
                .filter_map(|index| match self.session.line(index)? {
                    Line::Message {
                        id,
                        file: Some(card),
                        deleted: false,
                        ..
                    } => Some((id.to_owned(), card.clone())),
                    _ => None,
                })
                .collect();
            self.files
                .update_previews(ui.ctx(), &mut self.session, &cards);
            let downloaded: std::collections::HashSet<String> = cards
                .iter()
                .filter(|(id, _)| {
                    self.session
                        .file_details(id)
                        .is_some_and(|details| details.downloaded)
                })
                .map(|(id, _)| id.clone())
                .collect();
            let mut drawn_at = None;
            let scrolled = egui::ScrollArea::vertical()
                .stick_to_bottom(true)
                .auto_shrink([false, false])
                .show_viewport(ui, |ui, viewport| {
                    drawn_at = Some(viewport.top());
                    if first > 0 {
                        if ui.button(format!("Show earlier ({first} more)")).clicked() {
                            self.shown = self.shown.saturating_add(PAGE);
                        }
                    } else if self.session.has_earlier()
                        && ui.button("Load earlier messages").clicked()
                    {
                        // The store holds more than was loaded: the page
                        // before comes on top, and is shown.
                        self.session.load_earlier();
                        self.shown = self.shown.saturating_add(PAGE);
                    }
                    self.heights.fit(ui.available_width());
                    // Only the rows in view (and a screen's worth around
                    // it) are laid out; the others take their height as
                    // last drawn (or a guess) as empty space.
                    let origin = ui.max_rect().top();
                    let near = viewport.expand2(egui::vec2(0.0, viewport.height()));
                    let spacing = ui.spacing().item_spacing.y;
                    let mut gap = 0.0_f32;
                    let mut day = None;
                    let mut asked = None;
                    for index in first..total {
                        let Some(line) = self.session.line(index) else {
                            continue;
                        };
                        let (key, new_day) = match &line {
                            Line::Message { id, sent_at_ms, .. } => {
                                let this_day = sent_at_ms / 86_400_000;
                                let new_day = day != Some(this_day);
                                day = Some(this_day);
                                (RowKey::Message(id), new_day)
                            }
                            Line::Notice(_) => (RowKey::Notice(index), false),
                        };
                        let top = ui.cursor().top() - origin + gap;
                        let height = self.heights.guess(&key, new_day);
                        if top + height < near.top() || top > near.bottom() {
                            gap += height;
                            continue;
                        }
                        if gap > 0.0 {
                            ui.allocate_space(egui::vec2(0.0, (gap - spacing).max(0.0)));
                            gap = 0.0;
                        }
                        match line {
                            Line::Message { id, sent_at_ms, .. } => {
                                if new_day {
                                    let start = ui.cursor().top();
                                    ui.separator();
                                    ui.weak(day_label(sent_at_ms));
                                    self.heights.day = ui.cursor().top() - start;
                                }
                                let start = ui.cursor().top();
                                let card = Card {
                                    files: &self.files,
                                    downloaded: downloaded.contains(id),
                                };
                                if let Some(action) = message_row(ui, &line, &card) {
                                    asked = Some((id.to_owned(), action));
                                }
                                self.heights.measured(&key, ui.cursor().top() - start);
                            }
                            Line::Notice(text) => {
                                let start = ui.cursor().top();
                                ui.label(egui::RichText::new(text).italics().weak());
                                self.heights.measured(&key, ui.cursor().top() - start);
                            }
                        }
                    }
                    if gap > 0.0 {
                        ui.allocate_space(egui::vec2(0.0, (gap - spacing).max(0.0)));
                    }
                    if let Some((id, action)) = asked {
                        self.message_action(&id, action);
                    }
                });
            // The rows were picked for where the view was; if it moved
            // (sticking to the newest as rows got their real heights, or
            // a jump), the next frame draws the rows now in view.
            if drawn_at.is_some_and(|top| (scrolled.state.clamped_offset().y - top).abs() > 0.5) {
                ui.ctx().request_repaint();
            }
        });
    }

    fn jump_box(&mut self, ui: &mut egui::Ui, rows: &[Row]) {
        let Some(mut query) = self.jump.take() else {
            return;
        };
        let mut keep = true;
        let mut chosen = None;
        egui::Window::new("Jump to conversation")
            .collapsible(false)
            .resizable(false)
            .anchor(egui::Align2::CENTER_TOP, [0.0, 40.0])
            .show(ui.ctx(), |ui| {
                let label = ui.label("Name");
                let response = ui
                    .add(egui::TextEdit::singleline(&mut query))
                    .labelled_by(label.id);
                response.request_focus();
                let needle = query.trim().trim_start_matches('#').to_lowercase();
                let matches: Vec<usize> = rows
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.label.to_lowercase().contains(&needle))
                    .map(|(i, _)| i)
                    .collect();
                for &index in &matches {
                    if ui.button(&rows[index].label).clicked() {
                        chosen = Some(index);
                    }
                }
                if ui.input(|i| i.key_pressed(egui::Key::Escape)) {
                    keep = false;
                }
                if ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                    chosen = matches.first().copied();
                    if chosen.is_none() && !query.trim().is_empty() {
                        // A member or #group not in the list yet.
                        if self.session.open_named(query.trim()) {
                            let index = self.session.current();
                            self.shown = PAGE;
                            self.shown_for = index;
                        }
                        keep = false;
                    }
                }
            });
        if let Some(index) = chosen {
            self.open(index);
            keep = false;
        }
        if keep {
            self.jump = Some(query);
        }
    }
}

impl eframe::App for Desktop {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        Desktop::ui(self, ui);
    }
}

/// What a file message's card needs besides its line.
struct Card<'a> {
    files: &'a files::Files,
    /// Whether the owner holds the file already.
    downloaded: bool,
}

/// Which row a height belongs to: a message by its ID, a notice by its
/// place.
enum RowKey<'a> {
    Message(&'a str),
    Notice(usize),
}

/// The heights of a conversation's rows as last drawn, for the rows out
/// of view. Reset when the conversation or the width changes; a row that
/// changes (an edit, a reaction) is measured again when next in view.
#[derive(Default)]
struct RowHeights {
    width: f32,
    messages: std::collections::HashMap<String, f32>,
    notices: std::collections::HashMap<usize, f32>,
    /// A day separator with its label.
    day: f32,
}

impl RowHeights {
    /// A row's height until it has been drawn: one line of text.
    const GUESS: f32 = 22.0;

    /// Forgets every height if the rows are now `width` wide.
    fn fit(&mut self, width: f32) {
        if (width - self.width).abs() > 0.5 {
            *self = Self {
                width,
                ..Self::default()
            };
        }
    }

    fn guess(&self, key: &RowKey<'_>, new_day: bool) -> f32 {
        let row = match key {
            RowKey::Message(id) => self.messages.get(*id),
            RowKey::Notice(index) => self.notices.get(index),
        };
        let day = if new_day {
            self.day.max(Self::GUESS)
        } else {
            0.0
        };
        row.copied().unwrap_or(Self::GUESS) + day
    }

    fn measured(&mut self, key: &RowKey<'_>, height: f32) {
        match key {
            RowKey::Message(id) => {
                if let Some(known) = self.messages.get_mut(*id) {
                    *known = height;
                } else {
                    self.messages.insert((*id).to_owned(), height);
                }
            }
            RowKey::Notice(index) => {
                self.notices.insert(*index, height);
            }
        }
    }
}

/// One message: time, sender, text, and for mine its delivery state. A
/// right click on it opens its menu (reply, react, and for mine edit and
/// delete for everyone); returns what was chosen. A file shows as a card
/// below its sender.
fn message_row(ui: &mut egui::Ui, line: &Line<'_>, card: &Card<'_>) -> Option<MessageAction> {
    let &Line::Message {
        id,
        from,
        outgoing,
        text,
        deleted,
        sent_at_ms,
        status,
        file,
        ..
    } = line
    else {
        return None;
    };
    if let Some(file) = file.filter(|_| !deleted) {
        let mut chosen = None;
        ui.horizontal_wrapped(|ui| {
            ui.weak(time_label(sent_at_ms));
            let who = if outgoing { "me" } else { from };
            ui.strong(format!("{who}:"));
            if outgoing {
                ui.weak(status_label(status));
            }
        });
        match card.files.card(ui, id, file, card.downloaded) {
            Some(files::CardAction::Save) => chosen = Some(MessageAction::Save),
            Some(files::CardAction::SaveAs) => {
                chosen = Some(MessageAction::SaveAs(file.name.clone()));
            }
            None => {}
        }
        return chosen;
    }
    let mut chosen = None;
    ui.horizontal_wrapped(|ui| {
        ui.weak(time_label(sent_at_ms));
        let who = if outgoing { "me" } else { from };
        ui.strong(format!("{who}:"));
        let body = match status {
            Status::Waiting => {
                ui.label(egui::RichText::new("waiting for this message's key…").italics())
            }
            Status::Withheld => ui.label(
                egui::RichText::new("sent before you joined; not shared with you").italics(),
            ),
            _ => ui.add(egui::Label::new(text).sense(egui::Sense::click())),
        };
        if outgoing {
            ui.weak(status_label(status));
        }
        // A message still without its ID, or deleted, has no menu.
        let actionable = !deleted
            && !id.is_empty()
            && !id.starts_with("local:")
            && !matches!(status, Status::Waiting | Status::Withheld);
        if actionable {
            body.context_menu(|ui| {
                if ui.button("Reply").clicked() {
                    chosen = Some(MessageAction::Reply);
                }
                ui.horizontal(|ui| {
                    for emoji in QUICK_REACTIONS {
                        if ui
                            .button(emoji)
                            .on_hover_text(format!("React {emoji}"))
                            .clicked()
                        {
                            chosen = Some(MessageAction::React(emoji));
                        }
                    }
                });
                if ui.button("Copy text").clicked() {
                    ui.ctx().copy_text(text.to_owned());
                    chosen = Some(MessageAction::Copy);
                }
                if outgoing {
                    ui.separator();
                    if ui.button("Edit").clicked() {
                        chosen = Some(MessageAction::Edit);
                    }
                    if ui.button("Delete for everyone").clicked() {
                        chosen = Some(MessageAction::Delete);
                    }
                }
            });
        }
    });
    chosen
}

/// `queued`, `sent`, `delivered`, `read`, or `not sent` for my messages.
#[must_use]
pub fn status_label(status: Status) -> &'static str {
    match status {
        Status::Queued => "queued",
        Status::Sent => "sent",
        Status::Unsent => "not sent",
        Status::Delivered => "delivered",
        Status::Read => "read",
        Status::Received | Status::Waiting | Status::Withheld => "",
    }
}

/// `HH:MM` (UTC, as the CLI shows times) of a unix-milliseconds time.
#[must_use]
pub fn time_label(ms: u64) -> String {
    let minutes = ms / 60_000;
    format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
}

/// The calendar day (UTC) of a unix-milliseconds time, for the separator
/// between days: `2026-12-03`.
#[must_use]
pub fn day_label(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    time::OffsetDateTime::from_unix_timestamp(secs).map_or_else(
        |_| "—".to_owned(),
        |t| {
            t.format(time::macros::format_description!(
                "[weekday repr:long], [year]-[month]-[day]"
            ))
            .unwrap_or_default()
        },
    )
}

/// A character no font has is drawn as a box, never a panic: the text
/// comes from other people (egui's test harness panics by default).
pub(crate) fn draw_any_text(ctx: &egui::Context) {
    if ctx.missing_glyph_policy() != egui::MissingGlyphPolicy::Tofu {
        ctx.set_missing_glyph_policy(egui::MissingGlyphPolicy::Tofu);
    }
}

/// At most `max` characters of `text`, with `…` when cut.
fn elide(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}
