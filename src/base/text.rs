//! Showing untrusted text on an operator's terminal: event messages, task descriptions, schedule
//! fields and file excerpts come from anyone who can emit an event or edit a file. Control
//! characters and the bidirectional controls (U+202A–U+202E, U+2066–U+2069, and the marks U+200E,
//! U+200F, U+061C) are shown escaped (`\n`, `\u{1b}`, `\u{202e}`), so a value cannot fake extra
//! output lines, send terminal escape sequences or reorder what the operator reads; commands are
//! shown shell-quoted, so the words are unambiguous. Every value from a file, an event or a request
//! that the CLI prints goes through [`safe`] (or [`safe_or`] for optional ones).

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as is: a control character (C0, DEL, C1) or a
/// bidirectional control that reorders the text around it.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// `s` with every control character and bidirectional control escaped (unchanged, without
/// copying, when it has none).
pub(crate) fn safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// An optional value shown through [`safe`], or `default` (trusted text) when there is none.
pub(crate) fn safe_or<'a>(s: Option<&'a str>, default: &'a str) -> Cow<'a, str> {
    s.map_or(Cow::Borrowed(default), safe)
}

/// Serialized JSON with the characters JSON leaves raw but a terminal acts on (DEL, the C1
/// controls such as U+009B CSI, the bidirectional controls) written as `\u` escapes (`\u009b`).
/// They can only occur inside strings, so the document means exactly the same.
pub(crate) fn json_safe(json: String) -> String {
    if !json.chars().any(is_unsafe) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_unsafe(c) && !matches!(c, '\n' | '\t' | '\r') {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A path shown through [`safe`] (a file name can hold any byte but `/` and NUL).
pub(crate) fn safe_path(p: &std::path::Path) -> String {
    safe(&p.to_string_lossy()).into_owned()
}

/// A command line as a POSIX shell would need it typed: words with anything but
/// `[A-Za-z0-9_./=:,+@%-]` single-quoted (control characters escaped as by [`safe`]).
pub(crate) fn shell_words(words: &[String]) -> String {
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
        assert_eq!(safe("del \u{7f}"), "del \\u{7f}");
    }

    #[test]
    fn bidirectional_controls_are_escaped() {
        assert_eq!(safe("a\u{202e}txt.exe"), "a\\u{202e}txt.exe");
        for c in ['\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}'] {
            let shown = safe(&format!("x{c}y")).into_owned();
            assert!(!shown.contains(c), "{:?} shown raw", c);
            assert_eq!(shown, format!("x\\u{{{:x}}}y", c as u32));
        }
        assert_eq!(safe("naïve ☃ 日本"), "naïve ☃ 日本");
        assert_eq!(safe_or(None, "-"), "-");
        assert_eq!(safe_or(Some("a\nb"), "-"), "a\\nb");
    }

    #[test]
    fn json_keeps_its_meaning_without_raw_terminal_controls() {
        let v = serde_json::json!({"r": "a\u{9b}31m\u{7f}\u{202e}b\u{1b}]0;t\u{7}\nc"});
        let shown = json_safe(serde_json::to_string_pretty(&v).unwrap());
        assert!(
            !shown.chars().any(|c| c != '\n' && (c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c))),
            "{shown:?}"
        );
        assert_eq!(serde_json::from_str::<serde_json::Value>(&shown).unwrap(), v);
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
