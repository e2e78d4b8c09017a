//! Keys to [`Action`]s. Only keys every terminal sends over SSH are used:
//! no mouse, no key-release events, no enhanced keyboard protocol (so
//! Alt+Enter, which arrives as ESC CR, rather than Shift+Enter, which most
//! terminals cannot tell from Enter).

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::{Action, Focus};

/// The action for `key` when `focus` has the keys, if any.
pub(crate) fn action(key: KeyEvent, focus: Focus) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let alt = key.modifiers.contains(KeyModifiers::ALT);
    // Keys that mean the same wherever the focus is.
    match key.code {
        KeyCode::Char('c' | 'd') if ctrl => return Some(Action::Quit),
        KeyCode::Char('n') if ctrl => return Some(Action::Next),
        KeyCode::Char('p') if ctrl => return Some(Action::Prev),
        KeyCode::Tab | KeyCode::BackTab => return Some(Action::ToggleFocus),
        KeyCode::PageUp => return Some(Action::ScrollUp),
        KeyCode::PageDown => return Some(Action::ScrollDown),
        _ => {}
    }
    match focus {
        Focus::List => match key.code {
            KeyCode::Up => Some(Action::Up),
            KeyCode::Down => Some(Action::Down),
            KeyCode::Enter | KeyCode::Right => Some(Action::Open),
            // Typing in the list starts a message (or a `/` command).
            KeyCode::Char(c) if !ctrl && !alt => Some(Action::Insert(c)),
            _ => None,
        },
        Focus::Compose => match key.code {
            KeyCode::Enter if alt => Some(Action::Newline),
            KeyCode::Char('j') if ctrl => Some(Action::Newline),
            KeyCode::Enter => Some(Action::Submit),
            KeyCode::Esc => Some(Action::FocusList),
            KeyCode::Backspace if alt => Some(Action::DeleteWord),
            KeyCode::Backspace => Some(Action::Backspace),
            KeyCode::Char('h') if ctrl => Some(Action::Backspace),
            KeyCode::Delete => Some(Action::Delete),
            KeyCode::Left => Some(Action::Left),
            KeyCode::Right => Some(Action::Right),
            KeyCode::Up => Some(Action::LineUp),
            KeyCode::Down => Some(Action::LineDown),
            KeyCode::Home => Some(Action::Home),
            KeyCode::Char('a') if ctrl => Some(Action::Home),
            KeyCode::End => Some(Action::End),
            KeyCode::Char('e') if ctrl => Some(Action::End),
            KeyCode::Char('u') if ctrl => Some(Action::Clear),
            KeyCode::Char('w') if ctrl => Some(Action::DeleteWord),
            KeyCode::Char(c) if !ctrl && !alt => Some(Action::Insert(c)),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn enter_opens_in_the_list_and_sends_in_the_compose_line_alt_enter_breaks_the_line() {
        let enter = key(KeyCode::Enter, KeyModifiers::NONE);
        assert_eq!(action(enter, Focus::List), Some(Action::Open));
        assert_eq!(action(enter, Focus::Compose), Some(Action::Submit));
        let alt_enter = key(KeyCode::Enter, KeyModifiers::ALT);
        assert_eq!(action(alt_enter, Focus::Compose), Some(Action::Newline));
    }

    #[test]
    fn arrows_move_in_the_list_ctrl_n_p_anywhere_tab_switches() {
        let none = KeyModifiers::NONE;
        assert_eq!(
            action(key(KeyCode::Up, none), Focus::List),
            Some(Action::Up)
        );
        assert_eq!(
            action(key(KeyCode::Down, none), Focus::List),
            Some(Action::Down)
        );
        for focus in [Focus::List, Focus::Compose] {
            let ctrl = KeyModifiers::CONTROL;
            assert_eq!(
                action(key(KeyCode::Char('n'), ctrl), focus),
                Some(Action::Next)
            );
            assert_eq!(
                action(key(KeyCode::Char('p'), ctrl), focus),
                Some(Action::Prev)
            );
            assert_eq!(
                action(key(KeyCode::Tab, none), focus),
                Some(Action::ToggleFocus)
            );
            assert_eq!(
                action(key(KeyCode::Char('c'), ctrl), focus),
                Some(Action::Quit)
            );
        }
        let mut release = key(KeyCode::Down, none);
        release.kind = KeyEventKind::Release;
        assert_eq!(action(release, Focus::List), None);
    }

    #[test]
    fn typed_characters_go_to_the_compose_line_control_keys_edit() {
        let none = KeyModifiers::NONE;
        let ctrl = KeyModifiers::CONTROL;
        assert_eq!(
            action(key(KeyCode::Char('x'), none), Focus::List),
            Some(Action::Insert('x'))
        );
        assert_eq!(
            action(key(KeyCode::Char('X'), KeyModifiers::SHIFT), Focus::Compose),
            Some(Action::Insert('X'))
        );
        assert_eq!(
            action(key(KeyCode::Backspace, none), Focus::Compose),
            Some(Action::Backspace)
        );
        assert_eq!(
            action(key(KeyCode::Char('h'), ctrl), Focus::Compose),
            Some(Action::Backspace)
        );
        assert_eq!(
            action(key(KeyCode::Char('h'), none), Focus::Compose),
            Some(Action::Insert('h'))
        );
        assert_eq!(
            action(key(KeyCode::Char('w'), ctrl), Focus::Compose),
            Some(Action::DeleteWord)
        );
        assert_eq!(
            action(key(KeyCode::Esc, none), Focus::Compose),
            Some(Action::FocusList)
        );
    }
}
