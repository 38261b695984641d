//! A no-echo line editor for the interactive session (`ssh -t host`).
//!
//! Pure logic over keystroke bytes: the caller feeds what the client sent and
//! acts on the returned events. Nothing typed is ever echoed back.

use crate::secret::{Passphrase, SecretBuf, SecretError};

#[derive(Debug)]
pub enum Key {
    /// Enter was pressed: here is the line.
    Line(Result<Passphrase, SecretError>),
    /// Ctrl-C, or Ctrl-D on an empty line.
    Cancel,
}

#[derive(Debug, Default)]
pub struct LineEditor {
    buf: SecretBuf,
    /// Inside an escape sequence (arrow keys and the like), which is skipped
    /// rather than becoming part of the passphrase.
    escape: Escape,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    Started,
    Csi,
}

impl LineEditor {
    /// Feeds bytes; returns the first event they complete, if any. Bytes after
    /// an event in the same packet are dropped: the caller re-prompts.
    pub fn feed(&mut self, data: &[u8]) -> Option<Key> {
        for &b in data {
            match self.escape {
                Escape::Started => {
                    self.escape = if b == b'[' || b == b'O' {
                        Escape::Csi
                    } else {
                        Escape::None
                    };
                    continue;
                }
                Escape::Csi => {
                    if (0x40..=0x7e).contains(&b) {
                        self.escape = Escape::None;
                    }
                    continue;
                }
                Escape::None => {}
            }
            match b {
                0x03 => {
                    self.buf.clear();
                    return Some(Key::Cancel);
                }
                0x04 if self.buf.is_empty() => return Some(Key::Cancel),
                b'\r' | b'\n' => return Some(Key::Line(self.buf.take(false))),
                0x7f | 0x08 => self.buf.pop(),
                // Ctrl-U: kill the whole line.
                0x15 => self.buf.clear(),
                0x1b => self.escape = Escape::Started,
                b if b < 0x20 => {}
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

    #[test]
    fn editing() {
        let mut e = LineEditor::default();
        assert!(e.feed(b"pas").is_none());
        assert!(e.feed(b"sx\x7f").is_none());
        assert_eq!(line(&mut e, b"\r"), b"pass");
        assert_eq!(line(&mut e, b"ab\x1b[Dc\r"), b"abc");
        assert_eq!(line(&mut e, b"junk\x15ok\n"), b"ok");
        assert!(matches!(e.feed(b"abc\x03"), Some(Key::Cancel)));
        assert!(matches!(e.feed(b"\x04"), Some(Key::Cancel)));
        assert!(matches!(
            e.feed(b"\r"),
            Some(Key::Line(Err(SecretError::Empty)))
        ));
        let long = vec![b'a'; 5000];
        assert!(e.feed(&long).is_none());
        assert!(matches!(
            e.feed(b"\r"),
            Some(Key::Line(Err(SecretError::TooLong)))
        ));
    }
}
