//! Showing text we did not write: bounded quoting of input in error messages,
//! and neutralising control characters in what servers send to the admin's
//! terminal. Pure functions, no I/O.
//!
//! Why: an error that echoes a 1 MiB option name writes megabytes to stderr,
//! and a server that sends `ESC ]…` or `ESC [2J` can retitle, clear or fake
//! the admin's terminal. JSON output does not pass through here: serde
//! already escapes control characters there, and it must stay exact.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::borrow::Cow;
use std::fmt;

/// How many characters of a quoted input an error message shows.
pub const CLIP_CHARS: usize = 64;

/// Longest path a configuration may name (Linux's PATH_MAX): later errors
/// quote paths in full, so a longer one is refused where it is read.
pub const MAX_PATH: usize = 4096;

/// Input quoted like `{:?}`, but at most [`CLIP_CHARS`] characters of it,
/// followed by `…(N bytes)` when longer. Use it for every user- or
/// file-provided value in an error message.
#[derive(Clone, Copy)]
pub struct Clip<'a>(pub &'a str);

/// Shorthand for [`Clip`].
pub fn clip(s: &str) -> Clip<'_> {
    Clip(s)
}

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(CLIP_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => {
                let head = self.0.get(..cut).unwrap_or_default();
                write!(f, "{head:?}…({} bytes)", self.0.len())
            }
        }
    }
}

// Debug is the same, so `{x:?}` sites can take a `Clip` unchanged.
impl fmt::Debug for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Text that is already quoted or escaped (a TOML value as `toml` prints
/// it), cut like [`Clip`] but not quoted again. Control characters left in
/// it are shown escaped: toml prints a string holding a newline as a
/// multi-line `"""` string (found by the inventory fuzz target).
pub fn clip_plain(s: &str) -> String {
    clip_plain_to(&line(s), CLIP_CHARS)
}

/// Longest library error message shown, after its quoted spans are clipped.
const MAX_MESSAGE_CHARS: usize = 512;

/// Bounds a library's error message that quotes input (toml writes keys as
/// `` `key` `` and values as `"value"`): every quoted span longer than
/// [`CLIP_CHARS`] characters is cut and marked `…(N bytes)`, and what is
/// left is cut at [`MAX_MESSAGE_CHARS`].
pub fn clip_message(msg: &str) -> String {
    /// The quoted span being read.
    struct Span {
        close: char,
        kept: usize,
        bytes: usize,
        cut: bool,
    }
    let mut out = String::with_capacity(msg.len().min(2 * MAX_MESSAGE_CHARS));
    let mut span: Option<Span> = None;
    let mut escaped = false;
    for c in msg.chars() {
        let Some(sp) = &mut span else {
            out.push(c);
            if c == '`' || c == '"' {
                span = Some(Span {
                    close: c,
                    kept: 0,
                    bytes: 0,
                    cut: false,
                });
            }
            continue;
        };
        let ends = c == sp.close && !escaped;
        escaped = sp.close == '"' && c == '\\' && !escaped;
        if ends {
            if sp.cut {
                out.push_str(&format!("…({} bytes)", sp.bytes));
            }
            out.push(c);
            span = None;
        } else {
            sp.bytes += c.len_utf8();
            if sp.kept < CLIP_CHARS {
                out.push(c);
                sp.kept += 1;
            } else {
                sp.cut = true;
            }
        }
    }
    // An unclosed span: say how long it was.
    if let Some(sp) = span.filter(|sp| sp.cut) {
        out.push_str(&format!("…({} bytes)", sp.bytes));
    }
    // Errors are one line (toml puts "expected …" on a line of its own), and
    // any other control character in quoted input is shown escaped.
    let one: Vec<&str> = out
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    clip_message_to(&line(&one.join("; ")), MAX_MESSAGE_CHARS, MAX_MESSAGE_BYTES)
}

/// Longest library error message in bytes: a cap in characters alone lets
/// 512 replacement characters (lossy input, 3 bytes each) through as 1.5 KB
/// (found by the config and inventory fuzz targets).
const MAX_MESSAGE_BYTES: usize = 768;

/// `s` cut at `max_chars` characters or `max_bytes` bytes, whichever comes
/// first, on a character boundary, marked with the full length.
fn clip_message_to(s: &str, max_chars: usize, max_bytes: usize) -> String {
    let cut = s
        .char_indices()
        .enumerate()
        .find(|&(n, (i, c))| n == max_chars || i + c.len_utf8() > max_bytes)
        .map(|(_, (i, _))| i);
    match cut {
        None => s.to_string(),
        Some(cut) => format!("{}…({} bytes)", s.get(..cut).unwrap_or_default(), s.len()),
    }
}

fn clip_plain_to(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((cut, _)) => format!("{}…({} bytes)", s.get(..cut).unwrap_or_default(), s.len()),
    }
}

/// One line of server-provided text (a name, a message) made safe for a
/// terminal: every control character, newlines included, and the Unicode
/// direction overrides are shown escaped (`\x1b`, `\n`, `\u{202e}`).
pub fn line(s: &str) -> Cow<'_, str> {
    neutralise(s, false)
}

/// Several lines of server-provided text (command output): like [`line`],
/// but newline, carriage return and tab are kept.
pub fn block(s: &str) -> Cow<'_, str> {
    neutralise(s, true)
}

fn dangerous(c: char, keep_layout: bool) -> bool {
    if keep_layout && matches!(c, '\n' | '\r' | '\t') {
        return false;
    }
    // C0, DEL and C1 controls (C1 includes the 8-bit CSI, U+009B), and
    // bidi embeddings, overrides and isolates that reorder what is shown.
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn neutralise(s: &str, keep_layout: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| dangerous(c, keep_layout)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !dangerous(c, keep_layout) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// [`block`] for a byte stream that arrives in pieces (live command
/// output): C0 controls but newline, carriage return and tab, DEL, and the
/// UTF-8 encoded C1 controls (`C2 80`–`C2 9F`, e.g. the one-byte CSI) are
/// shown escaped; everything else passes through byte for byte, so a
/// character split across two pieces stays intact.
#[derive(Debug, Default)]
pub struct StreamFilter {
    /// A `C2` lead byte at the end of the previous piece.
    pending_c2: bool,
}

impl StreamFilter {
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 8);
        let esc = |out: &mut Vec<u8>, b: u8| out.extend(format!("\\x{b:02x}").bytes());
        for &b in data {
            if std::mem::take(&mut self.pending_c2) {
                if (0x80..=0x9f).contains(&b) {
                    esc(&mut out, b);
                    continue;
                }
                out.push(0xc2);
            }
            match b {
                b'\n' | b'\r' | b'\t' => out.push(b),
                0..=0x1f | 0x7f => esc(&mut out, b),
                0xc2 => self.pending_c2 = true,
                _ => out.push(b),
            }
        }
        out
    }

    /// What is still held back at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        if std::mem::take(&mut self.pending_c2) {
            vec![0xc2]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_bounded_in_bytes_too() {
        // A key of lossy input: 600 replacement characters, 3 bytes each,
        // after a backtick that ends toml's quoted span early.
        let msg = format!(
            "unknown field ``{}`, expected one of `listen`",
            "\u{fffd}".repeat(600)
        );
        let out = clip_message(&msg);
        assert!(out.len() <= MAX_MESSAGE_BYTES + 32, "{} bytes", out.len());
        assert!(out.ends_with(&format!("…({} bytes)", msg.len())), "{out}");
        // Plain ASCII keeps the character cap.
        let ascii = format!("x{}", "a".repeat(2000));
        assert!(clip_message(&ascii).chars().count() < 600);
    }

    #[test]
    fn clip_bounds_long_input() {
        assert_eq!(clip("root").to_string(), "\"root\"");
        assert_eq!(format!("{:?}", clip("a\"b")), "\"a\\\"b\"");
        let long = "x".repeat(1 << 20);
        let shown = clip(&long).to_string();
        assert_eq!(shown, format!("\"{}\"…(1048576 bytes)", "x".repeat(64)));
        // Cut on a character boundary, never inside a UTF-8 sequence.
        let wide = "é".repeat(100);
        assert_eq!(
            clip(&wide).to_string(),
            format!("\"{}\"…(200 bytes)", "é".repeat(64))
        );
        assert_eq!(clip_plain("{ a = 1 }"), "{ a = 1 }");
        assert_eq!(
            clip_plain(&"q".repeat(65)),
            format!("{}…(65 bytes)", "q".repeat(64))
        );
        let exact = "y".repeat(64);
        assert_eq!(clip(&exact).to_string(), format!("\"{exact}\""));
    }

    #[test]
    fn quoted_spans_in_messages_are_clipped() {
        let long = "k".repeat(100_000);
        let msg = format!("unknown field `{long}`, expected `listen` or `backend`");
        assert_eq!(
            clip_message(&msg),
            format!(
                "unknown field `{}…(100000 bytes)`, expected `listen` or `backend`",
                "k".repeat(64)
            )
        );
        let msg = format!("invalid type: string \"{long}\", expected u32");
        assert_eq!(
            clip_message(&msg),
            format!(
                "invalid type: string \"{}…(100000 bytes)\", expected u32",
                "k".repeat(64)
            )
        );
        // Escaped quotes stay inside the span; short spans are untouched.
        let msg = r#"value "a\"b" and `c`"#;
        assert_eq!(clip_message(msg), msg);
        assert_eq!(clip_message("plain"), "plain");
        // Unclosed span, and a long message without quotes.
        let m = clip_message(&format!("x \"{long}"));
        assert_eq!(m, format!("x \"{}…(100000 bytes)", "k".repeat(64)));
        let m = clip_message(&long);
        assert_eq!(m, format!("{}…(100000 bytes)", "k".repeat(512)));
    }

    #[test]
    fn terminal_text_is_neutralised() {
        assert_eq!(line("root"), "root");
        assert!(matches!(line("root"), Cow::Borrowed(_)));
        assert_eq!(line("a\x1b]0;pwned\x07b"), "a\\x1b]0;pwned\\x07b");
        assert_eq!(line("x\ny"), "x\\ny");
        assert_eq!(line("\u{9b}2J"), "\\x9b2J");
        assert_eq!(line("\u{202e}txt.exe"), "\\u{202e}txt.exe");
        assert_eq!(line("del\x7f"), "del\\x7f");
        assert_eq!(block("one\ntwo\tthree\r\n"), "one\ntwo\tthree\r\n");
        assert_eq!(block("red \x1b[31mX\x1b[0m\n"), "red \\x1b[31mX\\x1b[0m\n");
        assert_eq!(line("ünïcödé ok"), "ünïcödé ok");
    }

    #[test]
    fn streams_are_neutralised_across_pieces() {
        let mut f = StreamFilter::default();
        let mut out = f.push(b"ok \x1b[2J\r\n\xc2");
        out.extend(f.push(b"\x9b31m \xc2"));
        out.extend(f.push(b"\xa9 caf\xc3"));
        out.extend(f.push(b"\xa9\t\x07"));
        out.extend(f.finish());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ok \\x1b[2J\r\n\\x9b31m © café\t\\x07"
        );
        let mut f = StreamFilter::default();
        let mut out = f.push(b"end\xc2");
        out.extend(f.finish());
        assert_eq!(out, b"end\xc2");
    }

    #[test]
    fn library_messages_become_one_line() {
        // Found by the config fuzz target: toml's message for `listen = [`.
        let m = clip_message("invalid array\nexpected `]`\n");
        assert_eq!(m, "invalid array; expected `]`");
        let m = clip_message("bad value \"a\u{1b}[2Jb\"");
        assert!(!m.chars().any(char::is_control), "{m:?}");
    }

    #[test]
    fn plain_clips_are_one_line() {
        let v = toml::Value::String("a\tb\nc".into()).to_string();
        assert!(v.contains('\n'), "toml prints it on two lines: {v:?}");
        let m = clip_plain(&v);
        assert!(!m.chars().any(char::is_control), "{m:?}");
    }
}
