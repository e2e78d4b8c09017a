//! Drawing the [`Chat`] on a ratatui frame: a title line, the side list
//! of conversations with unread counts, the open conversation, the
//! compose box and a help bar with the keys. Pure: what is drawn depends
//! only on the state and the frame's size.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, List, ListItem, ListState, Paragraph};
use sotto_core::Status;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::state::{Chat, ChatMessage, Entry, Focus, Kind};

/// The most lines the compose box grows to.
const COMPOSE_ROWS: usize = 5;

/// Draws everything; returns how far the view is scrolled, which is at
/// most up to the oldest line (the driver keeps that, so PgDn answers at
/// once after scrolling past the top).
pub(crate) fn draw(frame: &mut Frame, chat: &Chat) -> usize {
    let area = frame.area();
    if area.width < 20 || area.height < 8 {
        frame.render_widget(Clear, area);
        frame.render_widget(Paragraph::new("sotto: the terminal is too small"), area);
        return chat.scroll;
    }
    let inner_width = usize::from(area.width.saturating_sub(2)).max(1);
    let (compose_lines, cursor) =
        compose_layout(&chat.compose.text, chat.compose.cursor, inner_width);
    let compose_height = compose_lines.len().clamp(1, COMPOSE_ROWS) as u16 + 2;
    let [title, middle, compose, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(compose_height),
        Constraint::Length(1),
    ])
    .areas(area);
    let side_width = side_width(chat, area.width);
    let [side, view] =
        Layout::horizontal([Constraint::Length(side_width), Constraint::Min(10)]).areas(middle);

    draw_title(frame, chat, title);
    draw_side(frame, chat, side);
    let scroll = draw_view(frame, chat, view);
    draw_compose(frame, chat, compose, &compose_lines, cursor);
    draw_help(frame, chat, help);
    scroll
}

fn draw_title(frame: &mut Frame, chat: &Chat, area: Rect) {
    let mut spans = vec![
        Span::styled(" sotto ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("· {} in {} ", clean(&chat.me), clean(&chat.team))),
    ];
    match chat.online {
        Some(true) => spans.push(Span::styled("· online ", Style::new().fg(Color::Green))),
        Some(false) => spans.push(Span::styled(
            "· offline: messages are queued ",
            Style::new().fg(Color::Red),
        )),
        None => spans.push(Span::raw("· connecting ")),
    }
    let unread = chat.unread_total();
    if unread > 0 {
        spans.push(Span::styled(
            format!("· {unread} unread "),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    frame.render_widget(
        Paragraph::new(Line::from(spans)).style(Style::new().add_modifier(Modifier::REVERSED)),
        area,
    );
}

fn side_width(chat: &Chat, total: u16) -> u16 {
    let longest = chat
        .conversations
        .iter()
        .map(|c| c.kind.label().width() + 8)
        .max()
        .unwrap_or(12);
    (longest.clamp(19, 30) as u16).min(total / 3)
}

fn draw_side(frame: &mut Frame, chat: &Chat, area: Rect) {
    let items: Vec<ListItem> = chat
        .conversations
        .iter()
        .enumerate()
        .map(|(index, conversation)| {
            let mut style = Style::new();
            if conversation.kind == Kind::Console {
                style = style.fg(Color::DarkGray);
            }
            if index == chat.open {
                style = style.add_modifier(Modifier::BOLD);
            }
            let mut spans = vec![Span::styled(clean(&conversation.kind.label()), style)];
            if conversation.unread > 0 {
                spans.push(Span::styled(
                    format!(" ({})", conversation.unread),
                    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                ));
            }
            ListItem::new(Line::from(spans))
        })
        .collect();
    let focused = chat.focus == Focus::List;
    let list = List::new(items)
        .block(
            Block::bordered()
                .title(" Conversations ")
                .border_style(border(focused)),
        )
        // "> " where the arrows are; "• " marks the open conversation
        // while typing.
        .highlight_symbol(if focused { "> " } else { "• " })
        .highlight_spacing(ratatui::widgets::HighlightSpacing::Always)
        .highlight_style(if focused {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        });
    let mut state = ListState::default().with_selected(Some(chat.selected));
    frame.render_stateful_widget(list, area, &mut state);
}

fn border(focused: bool) -> Style {
    if focused {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new().fg(Color::DarkGray)
    }
}

fn draw_view(frame: &mut Frame, chat: &Chat, area: Rect) -> usize {
    let conversation = chat.current();
    let title = match &conversation.kind {
        Kind::Console => " sotto: /help lists the commands ".to_owned(),
        kind => format!(" {} ", clean(&kind.label())),
    };
    let block = Block::bordered().title(title).border_style(border(false));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = usize::from(inner.width).max(1);
    let height = usize::from(inner.height);
    // From the newest back, only as far as the screen (and the scrolling)
    // reaches: a long history costs nothing per key.
    let wanted = height.saturating_add(chat.scroll);
    let mut groups: Vec<Vec<Line>> = Vec::new();
    let mut count = 0;
    for entry in conversation.entries.iter().rev() {
        if count >= wanted {
            break;
        }
        let mut group = Vec::new();
        match entry {
            Entry::Message(message) => message_lines(&mut group, message, width),
            Entry::Notice(text) => {
                // "-- " before the first line, the rest indented under it.
                let body = width.saturating_sub(3).max(1);
                let wrapped = text.split('\n').flat_map(|p| wrap(&clean(p), body));
                for (n, line) in wrapped.enumerate() {
                    let lead = if n == 0 { "-- " } else { "   " };
                    group.push(Line::styled(
                        format!("{lead}{line}"),
                        Style::new().fg(Color::Yellow),
                    ));
                }
            }
        }
        count += group.len();
        groups.push(group);
    }
    let mut lines: Vec<Line> = groups.into_iter().rev().flatten().collect();
    if lines.is_empty() {
        let hint = match conversation.kind {
            Kind::Console => "Choose a conversation with Up/Down and Enter, or type /help.",
            _ => "No messages yet: type below and press Enter.",
        };
        lines.push(Line::styled(
            hint.to_owned(),
            Style::new().fg(Color::DarkGray),
        ));
    }
    let scroll = chat.scroll.min(lines.len().saturating_sub(height));
    let end = lines.len() - scroll;
    let start = end.saturating_sub(height);
    let shown: Vec<Line> = lines.drain(start..end).collect();
    frame.render_widget(Paragraph::new(shown), inner);
    if scroll > 0 {
        let note = format!(" {scroll} lines below, PgDn ");
        let x = area.x + area.width.saturating_sub(note.width() as u16 + 1);
        let y = area.y + area.height.saturating_sub(1);
        frame.render_widget(
            Paragraph::new(note).style(Style::new().fg(Color::Yellow)),
            Rect::new(x, y, area.width.saturating_sub(x - area.x), 1),
        );
    }
    scroll
}

/// `HH:MM` UTC, as the command line prints it.
fn clock(millis: u64) -> String {
    let secs = millis / 1000;
    format!("{:02}:{:02}", (secs / 3600) % 24, (secs / 60) % 60)
}

fn status_label(message: &ChatMessage) -> Option<&'static str> {
    if message.id.starts_with("local:") {
        return Some("sending");
    }
    match message.status {
        Status::Queued => Some("queued"),
        Status::Sent => Some("sent"),
        Status::Delivered => Some("delivered"),
        Status::Read => Some("read"),
        Status::Unsent => Some("not sent: you were removed from the group"),
        Status::Received | Status::Waiting | Status::Withheld => None,
    }
}

fn message_lines(lines: &mut Vec<Line<'static>>, message: &ChatMessage, width: usize) {
    let time = if message.sent_at == 0 {
        "  ·  ".to_owned()
    } else {
        clock(message.sent_at)
    };
    let sender = if message.outgoing {
        "me".to_owned()
    } else {
        clean(&message.from)
    };
    let prefix = format!("{time} {sender}: ");
    let text = match message.status {
        Status::Waiting => {
            "(waiting for the sender's key; it was asked for and the message appears when it arrives)"
        }
        Status::Withheld => "(not readable: sent before you joined)",
        _ => message.text.as_str(),
    };
    // Continuation lines start under the text, unless the sender's name
    // would leave too little room.
    let indent = if prefix.width() + 20 <= width {
        prefix.width()
    } else {
        2
    };
    let body_width = width.saturating_sub(indent).max(1);
    let first_width = width.saturating_sub(prefix.width()).max(1);
    let mut body = Vec::new();
    for (n, paragraph) in text.split('\n').map(clean).enumerate() {
        let wrapped = if n == 0 {
            let mut first = wrap(&paragraph, first_width);
            if first.len() > 1 {
                let rest = first.split_off(1).join(" ");
                first.extend(wrap(&rest, body_width));
            }
            first
        } else {
            wrap(&paragraph, body_width)
        };
        body.extend(wrapped);
    }
    let sender_style = if message.outgoing {
        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)
    };
    let text_style = match message.status {
        Status::Waiting | Status::Withheld | Status::Unsent => Style::new()
            .fg(Color::DarkGray)
            .add_modifier(Modifier::ITALIC),
        _ => Style::new(),
    };
    let status = status_label(message);
    let count = body.len();
    for (n, line) in body.into_iter().enumerate() {
        let mut spans = if n == 0 {
            vec![
                Span::styled(time.clone(), Style::new().fg(Color::DarkGray)),
                Span::raw(" "),
                Span::styled(sender.clone(), sender_style),
                Span::raw(": "),
            ]
        } else {
            vec![Span::raw(" ".repeat(indent))]
        };
        let used = if n == 0 { prefix.width() } else { indent } + line.width();
        spans.push(Span::styled(line, text_style));
        if n + 1 == count
            && let Some(label) = status
        {
            let label = format!("  {label}");
            if used + label.width() <= width {
                spans.push(Span::styled(label, status_style(message.status)));
                lines.push(Line::from(spans));
            } else {
                lines.push(Line::from(spans));
                lines.push(Line::from(vec![
                    Span::raw(" ".repeat(indent)),
                    Span::styled(label.trim_start().to_owned(), status_style(message.status)),
                ]));
            }
            continue;
        }
        lines.push(Line::from(spans));
    }
}

fn status_style(status: Status) -> Style {
    match status {
        Status::Read => Style::new().fg(Color::Blue),
        Status::Unsent => Style::new().fg(Color::Red),
        _ => Style::new().fg(Color::DarkGray),
    }
}

/// What a peer wrote, safe to put on a terminal: control characters
/// (escape sequences that could retitle the window, clear the screen or
/// worse) become U+FFFD, tabs become spaces.
pub(crate) fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// Greedy word wrap to `width` columns; words longer than a line are cut.
/// An empty text is one empty line.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut line_width = 0;
    for word in text.split(' ') {
        let word_width = word.width();
        let space = usize::from(!line.is_empty());
        if line_width + space + word_width <= width {
            if space == 1 {
                line.push(' ');
            }
            line.push_str(word);
            line_width += space + word_width;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
            line_width = 0;
        }
        for c in word.chars() {
            let w = c.width().unwrap_or(0);
            if line_width + w > width && !line.is_empty() {
                lines.push(std::mem::take(&mut line));
                line_width = 0;
            }
            line.push(c);
            line_width += w;
        }
    }
    lines.push(line);
    lines
}

/// The compose text cut into rows of `width` columns (hard wrap, so the
/// cursor can be placed exactly), and the cursor's (column, row).
pub(crate) fn compose_layout(
    text: &str,
    cursor: usize,
    width: usize,
) -> (Vec<String>, (usize, usize)) {
    let width = width.max(2) - 1;
    let mut rows = vec![String::new()];
    let mut column = 0;
    let mut at = (0, 0);
    for (index, c) in text.char_indices() {
        if index == cursor {
            at = (column, rows.len() - 1);
        }
        if c == '\n' {
            rows.push(String::new());
            column = 0;
            continue;
        }
        let w = c.width().unwrap_or(0);
        if column + w > width {
            rows.push(String::new());
            column = 0;
            if index == cursor {
                at = (0, rows.len() - 1);
            }
        }
        if let Some(row) = rows.last_mut() {
            row.push(if c.is_control() { '\u{FFFD}' } else { c });
        }
        column += w;
    }
    if cursor >= text.len() {
        at = (column, rows.len() - 1);
    }
    (rows, at)
}

fn draw_compose(
    frame: &mut Frame,
    chat: &Chat,
    area: Rect,
    rows: &[String],
    cursor: (usize, usize),
) {
    let focused = chat.focus == Focus::Compose;
    let title = match &chat.current().kind {
        Kind::Console => " command (/help) ".to_owned(),
        kind => format!(" message to {} ", clean(&kind.label())),
    };
    let block = Block::bordered().title(title).border_style(border(focused));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let height = usize::from(inner.height).max(1);
    let first = (cursor.1 + 1).saturating_sub(height);
    let shown: Vec<Line> = rows
        .iter()
        .skip(first)
        .take(height)
        .map(|r| Line::raw(r.clone()))
        .collect();
    if chat.compose.text.is_empty() && !focused {
        frame.render_widget(
            Paragraph::new("Tab or Enter to write").style(Style::new().fg(Color::DarkGray)),
            inner,
        );
    } else {
        frame.render_widget(Paragraph::new(shown), inner);
    }
    if focused {
        let x = inner.x + (cursor.0 as u16).min(inner.width.saturating_sub(1));
        let y = inner.y + ((cursor.1 - first) as u16).min(inner.height.saturating_sub(1));
        frame.set_cursor_position(Position::new(x, y));
    }
}

fn draw_help(frame: &mut Frame, chat: &Chat, area: Rect) {
    let keys: &[(&str, &str)] = match chat.focus {
        Focus::List => &[
            ("↑↓", "move"),
            ("Enter", "open"),
            ("Tab", "write"),
            ("/help", "commands"),
            ("^C", "quit"),
            ("^N/^P", "next/prev"),
            ("PgUp/PgDn", "scroll"),
        ],
        Focus::Compose => &[
            ("Enter", "send"),
            ("Alt+Enter", "new line"),
            ("Tab/Esc", "list"),
            ("/help", "commands"),
            ("^C", "quit"),
            ("^N/^P", "next/prev"),
            ("PgUp/PgDn", "scroll"),
        ],
    };
    // Whole items only, most needed first: a narrow terminal drops the
    // last ones rather than cutting a word.
    let mut spans = Vec::new();
    let mut used = 0;
    for (key, what) in keys {
        let width = key.width() + what.width() + 3;
        if used + width > usize::from(area.width) {
            break;
        }
        used += width;
        spans.push(Span::styled(
            format!(" {key}"),
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(format!(" {what} ")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_and_cuts_long_words() {
        assert_eq!(wrap("hello big world", 9), vec!["hello big", "world"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), vec![""]);
    }

    #[test]
    fn the_compose_cursor_follows_line_breaks_and_wrapping() {
        let (rows, at) = compose_layout("ab\ncd", 5, 10);
        assert_eq!(rows, vec!["ab", "cd"]);
        assert_eq!(at, (2, 1));
        let (rows, at) = compose_layout("abcdef", 1, 4);
        assert_eq!(rows, vec!["abc", "def"]);
        assert_eq!(at, (1, 0));
        let (_, at) = compose_layout("abcdef", 3, 4);
        assert_eq!(at, (0, 1));
    }
}
