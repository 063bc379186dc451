//! Showing untrusted text on an operator's terminal: event messages, task descriptions, schedule
//! fields and file excerpts come from anyone who can emit an event or edit a file. Control
//! characters are shown escaped (`\n`, `\u{1b}`), so a value cannot fake extra output lines or
//! send terminal escape sequences; commands are shown shell-quoted, so the words are unambiguous.

use std::borrow::Cow;

/// `s` with every control character escaped (unchanged, without copying, when it has none).
pub fn safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A command line as a POSIX shell would need it typed: words with anything but
/// `[A-Za-z0-9_./=:,+@%-]` single-quoted (control characters escaped as by [`safe`]).
pub fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b"_./=:,+@%-".contains(&b));
            if plain { w.clone() } else { format!("'{}'", safe(&w.replace('\'', "'\\''"))) }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(safe("plain text"), "plain text");
        assert_eq!(safe("two\nlines"), "two\\nlines");
        assert_eq!(safe("\u{1b}]0;owned\u{7}title"), "\\u{1b}]0;owned\\u{7}title");
        assert_eq!(safe("tab\tand\rcr"), "tab\\tand\\rcr");
        assert_eq!(safe("csi \u{9b}31m"), "csi \\u{9b}31m");
    }

    #[test]
    fn commands_are_quoted() {
        let w = |v: &[&str]| shell_words(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(w(&["echo", "hi"]), "echo hi");
        assert_eq!(w(&["sh", "-c", "rm -rf /; echo $HOME"]), "sh -c 'rm -rf /; echo $HOME'");
        assert_eq!(w(&["echo", "it's"]), "echo 'it'\\''s'");
        assert_eq!(w(&["echo", ""]), "echo ''");
        assert_eq!(w(&["a\nb"]), "'a\\nb'");
    }
}
