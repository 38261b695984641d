//! A no-echo line editor for passphrase prompts: the listener's interactive
//! session (`ssh -t host`) and the client's own terminal prompt both use it,
//! so the same keystrokes give the same passphrase on either side.
//!
//! Pure logic over keystroke bytes: the caller feeds what arrived and acts on
//! the returned events. Nothing typed is ever echoed back. Editing keys are
//! backspace (DEL or Ctrl-H, one character), Ctrl-U (kill the line), Ctrl-C
//! (cancel) and Ctrl-D on an empty line (cancel); Enter is `\r` or `\n`.
//! Every other byte goes into the line, and the line goes through
//! [`Passphrase::from_human`]: a control character such as ESC (arrow keys)
//! makes the line refused with a message, never silently dropped.
//!
//! Attacker-facing: no `unwrap`, `expect`, indexing or `panic` here.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::secret::{Passphrase, SecretBuf, SecretError};

#[derive(Debug)]
pub enum Key {
    /// Enter was pressed: here is the line, through the human rule.
    Line(Result<Passphrase, SecretError>),
    /// Ctrl-C, or Ctrl-D on an empty line.
    Cancel,
}

#[derive(Debug, Default)]
pub struct LineEditor {
    buf: SecretBuf,
    /// The last Enter was a `\r`: a `\n` right after it belongs to the same
    /// line end (`\r\n`), even when it comes in the next packet.
    after_cr: bool,
}

impl LineEditor {
    /// Feeds bytes; returns the first event they complete, if any. Bytes after
    /// an event in the same packet are dropped (the tail after a line end is
    /// ignored on every human path); the caller re-prompts if it wants more.
    pub fn feed(&mut self, data: &[u8]) -> Option<Key> {
        let mut bytes = data.iter().copied();
        if std::mem::take(&mut self.after_cr) && data.first() == Some(&b'\n') {
            bytes.next();
        }
        for b in bytes {
            match b {
                0x03 => {
                    self.buf.clear();
                    return Some(Key::Cancel);
                }
                0x04 if self.buf.is_empty() => return Some(Key::Cancel),
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    return Some(Key::Line(self.buf.take(true)));
                }
                0x7f | 0x08 => self.buf.pop(),
                // Ctrl-U: kill the whole line.
                0x15 => self.buf.clear(),
                b => self.buf.push_byte(b),
            }
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::panic, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn line(e: &mut LineEditor, d: &[u8]) -> Vec<u8> {
        match e.feed(d) {
            Some(Key::Line(Ok(p))) => p.expose().to_vec(),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn refused(e: &mut LineEditor, d: &[u8]) -> SecretError {
        match e.feed(d) {
            Some(Key::Line(Err(err))) => err,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn editing() {
        let mut e = LineEditor::default();
        assert!(e.feed(b"pas").is_none());
        assert!(e.feed(b"sx\x7f").is_none());
        assert_eq!(line(&mut e, b"\r"), b"pass");
        assert_eq!(line(&mut e, b"junk\x15ok\n"), b"ok");
        assert_eq!(line(&mut e, "n\u{e4}\x08\x08ab\r".as_bytes()), b"ab");
        assert!(matches!(e.feed(b"abc\x03"), Some(Key::Cancel)));
        assert!(matches!(e.feed(b"\x04"), Some(Key::Cancel)));
        assert_eq!(refused(&mut e, b"\r"), SecretError::Empty);
        let long = vec![b'a'; 5000];
        assert!(e.feed(&long).is_none());
        assert_eq!(refused(&mut e, b"\r"), SecretError::TooLong);
    }

    #[test]
    fn bytes_are_carried_or_refused_never_dropped() {
        let mut e = LineEditor::default();
        assert_eq!(line(&mut e, b"a\tb\r"), b"a\tb");
        assert_eq!(line(&mut e, b"\xff\xfe(\r"), b"\xff\xfe(");
        // An arrow key is ESC [ D: refused, not swallowed with the next byte.
        assert_eq!(refused(&mut e, b"ab\x1b[Dc\r"), SecretError::Control(0x1b));
        assert_eq!(refused(&mut e, b"a\0b\r"), SecretError::Control(0));
        assert_eq!(refused(&mut e, b"a\x04b\r"), SecretError::Control(4));
        // The editor starts clean after a refusal.
        assert_eq!(line(&mut e, b"ok\r"), b"ok");
    }

    #[test]
    fn crlf_is_one_line_end_even_across_packets() {
        let mut e = LineEditor::default();
        assert_eq!(line(&mut e, b"one\r"), b"one");
        assert_eq!(line(&mut e, b"\ntwo\r"), b"two");
        // Only right after a \r: a lone \n is Enter.
        assert_eq!(refused(&mut e, b"x\x1b\n"), SecretError::Control(0x1b));
        assert_eq!(refused(&mut e, b"\n"), SecretError::Empty);
        // The tail after Enter in one packet is dropped.
        assert_eq!(line(&mut e, b"L1\r\nL2\r\n"), b"L1");
        assert!(e.feed(b"L3").is_none());
        assert_eq!(line(&mut e, b"\r"), b"L3");
    }
}
