//! Which characters a field may hold: one rule for the input parsers and for
//! the receiver, so a line WDS accepts is never refused by its own notifier.

/// Bidirectional-text controls: invisible, and able to make a log line or a
/// spreadsheet cell read differently from what it holds ("Trojan Source").
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Why `user_id` may not be used as a user id, if it may not: it contains a
/// control character (a stray tab, a newline from a bad export) or a
/// bidirectional-text control.
pub fn user_id_problem(user_id: &str) -> Option<String> {
    let c = user_id
        .chars()
        .find(|&c| c.is_control() || is_bidi_control(c))?;
    Some(format!(
        "userId contains a control character (U+{:04X})",
        c as u32
    ))
}

/// Why `message` may not be sent as an alert message, if it may not: NUL
/// (it truncates strings in many receivers), a control character other than
/// tab, line feed and carriage return, or a bidirectional-text control.
pub fn message_problem(message: &str) -> Option<String> {
    if message.as_bytes().contains(&0) {
        return Some("alertMessage contains a NUL character".into());
    }
    let c = message
        .chars()
        .find(|&c| (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || is_bidi_control(c))?;
    Some(format!(
        "alertMessage contains a control character (U+{:04X})",
        c as u32
    ))
}

/// Longest display name kept, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 128;

/// A name a client chose (an uploaded file's name), made fit to show as a
/// job's name: its last path component (browsers and tools may send the
/// folders it was in), without control or bidirectional-text characters
/// (which could forge a log line or reorder what a person reads), trimmed
/// and cut at [`MAX_DISPLAY_NAME_CHARS`]. `None` when nothing is left. It is
/// for display only, never a path.
pub fn display_name(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let shown: String = last
        .chars()
        .filter(|&c| !c.is_control() && !is_bidi_control(c))
        .take(MAX_DISPLAY_NAME_CHARS)
        .collect();
    let shown = shown.trim();
    (!shown.is_empty() && shown != "." && shown != "..").then(|| shown.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_the_last_component_without_controls_and_capped() {
        assert_eq!(display_name("users.csv").as_deref(), Some("users.csv"));
        assert_eq!(
            display_name("C:\\fakepath\\Q3 users.csv").as_deref(),
            Some("Q3 users.csv")
        );
        assert_eq!(display_name("../../etc/passwd").as_deref(), Some("passwd"));
        assert_eq!(
            display_name(" a\u{1b}[31mb\u{202E}c\n.csv ").as_deref(),
            Some("a[31mbc.csv")
        );
        assert_eq!(
            display_name("x".repeat(500).as_str()).map(|n| n.len()),
            Some(128)
        );
        for nothing in ["", "  ", "dir/", "..", "\u{7}\u{7}"] {
            assert_eq!(display_name(nothing), None, "{nothing:?}");
        }
    }

    #[test]
    fn ids_refuse_every_control_and_bidi_character() {
        assert_eq!(user_id_problem("user-1 é"), None);
        for bad in ["a\tb", "a\nb", "\u{7f}", "\u{85}", "a\u{202E}b", "\u{2066}"] {
            assert!(user_id_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn messages_keep_line_breaks_and_tabs_only() {
        assert_eq!(message_problem("two\nlines\r\n\tand a tab"), None);
        assert!(message_problem("a\0b").unwrap().contains("NUL"));
        for bad in ["\u{1b}[31mred", "\u{7}", "\u{85}", "abc\u{202E}cba"] {
            assert!(message_problem(bad).is_some(), "{bad:?}");
        }
    }
}
