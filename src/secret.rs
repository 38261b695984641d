//! The one passphrase type, and the one rule for passphrases typed or piped
//! by a human.
//!
//! A [`Passphrase`] owns its bytes in zeroizing memory, is bounded in size,
//! prints only a placeholder in `Debug`, and deliberately implements neither
//! `Display`, `Serialize` nor `Clone`: the only way to get at the bytes is
//! [`Passphrase::expose`], which makes every use easy to find in review.
//!
//! [`Passphrase::from_human`] is the rule every human path applies (client
//! prompt, listener pty prompt, `--passphrase-stdin`, `--passphrase-command`,
//! passphrase files, `ssh HOST unlock`), so one typed passphrase reaches
//! cryptsetup as the same bytes whichever way it came. Machine mode
//! (`portcullis/1 unlock`) uses [`Passphrase::new`]: verbatim.
//!
//! Parses network input: no `unwrap`, `expect`, indexing or `panic` here.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zeroize::{Zeroize, Zeroizing};

/// Largest passphrase we accept, in bytes. cryptsetup's own interactive limit
/// is 512 characters; anything larger is a mistake or an attack.
pub const MAX_LEN: usize = 1024;

/// Bytes a line-oriented reader keeps: the longest first line plus `\r\n`.
pub const LINE_CAP: usize = MAX_LEN + 2;

/// A LUKS passphrase held in memory that is wiped on drop.
pub struct Passphrase(Zeroizing<Vec<u8>>);

/// Why bytes could not become a passphrase. The messages name the problem,
/// never the bytes around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretError {
    Empty,
    TooLong,
    /// A control character other than TAB (or DEL) in a human passphrase:
    /// some path cannot carry it (a terminal editor, a line reader), so no
    /// path accepts it.
    Control(u8),
}

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretError::Empty => f.write_str("the passphrase is empty"),
            SecretError::TooLong => write!(f, "the passphrase is longer than {MAX_LEN} bytes"),
            SecretError::Control(0) => f.write_str(
                "the passphrase contains a NUL byte, which a terminal cannot carry; \
                 passphrases may not contain control characters other than TAB",
            ),
            SecretError::Control(0x1b) => f.write_str(
                "the passphrase contains ESC (sent by arrow and function keys); \
                 type it again without special keys",
            ),
            SecretError::Control(0x7f) => f.write_str(
                "the passphrase contains DEL (0x7f, a terminal's backspace); \
                 passphrases may not contain control characters other than TAB",
            ),
            SecretError::Control(b) => write!(
                f,
                "the passphrase contains the control character 0x{b:02x} (Ctrl-{}); \
                 passphrases may not contain control characters other than TAB",
                char::from(b.wrapping_add(0x40))
            ),
        }
    }
}

impl std::error::Error for SecretError {}

/// Where the first line of human input ends: its first `\n` or `\r`. A lone
/// `\r` counts, because a terminal's Enter sends `\r`: the pty prompt must
/// take it as Enter, and every other path must give the same bytes.
pub fn line_end(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n' || b == b'\r')
}

/// Whether a human path refuses this byte inside a passphrase: the C0
/// control characters except TAB, and DEL. TAB and every byte from 0x80 up
/// (UTF-8 or not) are carried verbatim.
fn refused(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

impl Passphrase {
    /// Takes ownership of `bytes` verbatim (machine mode); on error the bytes
    /// are wiped before returning.
    pub fn new(mut bytes: Vec<u8>) -> Result<Self, SecretError> {
        let err = if bytes.is_empty() {
            Some(SecretError::Empty)
        } else if bytes.len() > MAX_LEN {
            Some(SecretError::TooLong)
        } else {
            None
        };
        match err {
            Some(e) => {
                bytes.zeroize();
                Err(e)
            }
            None => Ok(Passphrase(Zeroizing::new(bytes))),
        }
    }

    /// THE rule for human input, on every human path: the passphrase is the
    /// bytes before the first line end (`\n`, `\r\n` or a lone `\r`); the
    /// line end and everything after it (a password manager's further lines)
    /// are ignored. Then, in this order: longer than [`MAX_LEN`] is
    /// `TooLong`, nothing is `Empty`, and a control character other than TAB
    /// is `Control` (refused, never dropped). The caller still owns and
    /// wipes `input`; only the passphrase bytes are copied.
    pub fn from_human(input: &[u8]) -> Result<Self, SecretError> {
        let end = line_end(input).unwrap_or(input.len());
        let line = input.get(..end).unwrap_or_default();
        if line.len() > MAX_LEN {
            return Err(SecretError::TooLong);
        }
        if let Some(&b) = line.iter().find(|&&b| refused(b)) {
            return Err(SecretError::Control(b));
        }
        let mut v = Vec::with_capacity(line.len());
        v.extend_from_slice(line);
        Self::new(v)
    }

    /// [`Passphrase::from_human`] on an owned buffer, which is wiped.
    pub fn from_line(bytes: Vec<u8>) -> Result<Self, SecretError> {
        let bytes = Zeroizing::new(bytes);
        Self::from_human(&bytes)
    }

    /// The raw bytes, for handing to cryptsetup's stdin or an SSH channel.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// A growable buffer for secret input arriving in pieces (SSH data packets,
/// keystrokes). Never reallocates: capacity is reserved up front so no copy
/// of the secret is left behind in freed memory.
pub struct SecretBuf {
    buf: Zeroizing<Vec<u8>>,
    overflow: bool,
}

impl Default for SecretBuf {
    fn default() -> Self {
        SecretBuf {
            buf: Zeroizing::new(Vec::with_capacity(LINE_CAP)),
            overflow: false,
        }
    }
}

impl SecretBuf {
    /// Appends bytes; once more than [`LINE_CAP`] bytes arrived the buffer is
    /// marked overflowed and further input is dropped (and wiped by the caller).
    pub fn push(&mut self, data: &[u8]) {
        if self.overflow || self.buf.len() + data.len() > LINE_CAP {
            self.overflow = true;
            return;
        }
        self.buf.extend_from_slice(data);
    }

    /// Appends human input up to and including its first line end; what
    /// follows the line end is ignored (the rule drops it anyway), so a long
    /// tail after a short first line never overflows. Returns whether the
    /// first line is complete.
    pub fn push_line(&mut self, data: &[u8]) -> bool {
        if self.line_end().is_some() {
            return true;
        }
        match line_end(data) {
            Some(end) => {
                self.push(data.get(..=end).unwrap_or(data));
                !self.overflow
            }
            None => {
                self.push(data);
                false
            }
        }
    }

    pub fn push_byte(&mut self, b: u8) {
        self.push(&[b]);
    }

    /// Removes the last character: a whole UTF-8 sequence when the buffer
    /// ends with one (what a terminal's backspace means), else one byte.
    pub fn pop(&mut self) {
        let len = self.buf.len();
        let n = (2..=4)
            .filter(|&n| n <= len)
            .find(|&n| {
                let tail = self.buf.get(len - n..).unwrap_or_default();
                tail.first().is_some_and(|&b| b >= 0xc0) && std::str::from_utf8(tail).is_ok()
            })
            .unwrap_or(1);
        for _ in 0..n {
            if let Some(last) = self.buf.last_mut() {
                *last = 0;
                self.buf.pop();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Position of the first line end, for line-oriented input.
    pub fn line_end(&self) -> Option<usize> {
        line_end(&self.buf)
    }

    /// Moves the content out as a passphrase, leaving the buffer empty:
    /// through the human rule when `human` is set, else verbatim (machine
    /// mode). Overflowed input is always `TooLong`.
    pub fn take(&mut self, human: bool) -> Result<Passphrase, SecretError> {
        let overflow = std::mem::take(&mut self.overflow);
        let r = if overflow {
            Err(SecretError::TooLong)
        } else if human {
            Passphrase::from_human(&self.buf)
        } else {
            let mut v = Vec::with_capacity(self.buf.len());
            v.extend_from_slice(&self.buf);
            Passphrase::new(v)
        };
        self.buf.zeroize();
        r
    }

    pub fn clear(&mut self) {
        self.buf.zeroize();
        self.overflow = false;
    }
}

impl std::fmt::Debug for SecretBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretBuf(<redacted, {} bytes>)", self.buf.len())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn human(b: &[u8]) -> Result<Vec<u8>, SecretError> {
        Passphrase::from_human(b).map(|p| p.expose().to_vec())
    }

    #[test]
    fn debug_is_redacted() {
        let p = Passphrase::new(b"hunter2-secret".to_vec()).unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let mut b = SecretBuf::default();
        b.push(b"hunter2-secret");
        assert!(!format!("{b:?}").contains("hunter2"));
    }

    #[test]
    fn bounds() {
        assert_eq!(Passphrase::new(vec![]).unwrap_err(), SecretError::Empty);
        assert_eq!(
            Passphrase::new(vec![b'a'; MAX_LEN + 1]).unwrap_err(),
            SecretError::TooLong
        );
        assert_eq!(Passphrase::new(vec![b'a'; MAX_LEN]).unwrap().len(), MAX_LEN);
    }

    #[test]
    fn machine_mode_is_verbatim() {
        let p = Passphrase::new(b"a\nb\r\0\x1b".to_vec()).unwrap();
        assert_eq!(p.expose(), b"a\nb\r\0\x1b");
    }

    #[test]
    fn the_human_rule() {
        // Exactly one line end removed, whatever kind; the tail is ignored.
        assert_eq!(human(b"abc").unwrap(), b"abc");
        assert_eq!(human(b"abc\n").unwrap(), b"abc");
        assert_eq!(human(b"abc\r\n").unwrap(), b"abc");
        assert_eq!(human(b"abc\r").unwrap(), b"abc");
        assert_eq!(human(b"abc\n\n").unwrap(), b"abc");
        assert_eq!(human(b"L1\nL2\n").unwrap(), b"L1");
        assert_eq!(human(b"L1\rL2").unwrap(), b"L1");
        let mut tail = b"short\n".to_vec();
        tail.extend(vec![b'x'; 100_000]);
        assert_eq!(human(&tail).unwrap(), b"short");
        // Spaces, TAB and non-UTF-8 bytes are carried verbatim.
        assert_eq!(human(b" a\tb \n").unwrap(), b" a\tb ");
        assert_eq!(human(b"\xff\xfe\xc3(\n").unwrap(), b"\xff\xfe\xc3(");
        assert_eq!(
            human("p\u{e4}ss\n".as_bytes()).unwrap(),
            "p\u{e4}ss".as_bytes()
        );
        // Refused, never dropped.
        assert_eq!(human(b"a\0b\n"), Err(SecretError::Control(0)));
        assert_eq!(human(b"a\x1b[Db\n"), Err(SecretError::Control(0x1b)));
        assert_eq!(human(b"a\x7fb"), Err(SecretError::Control(0x7f)));
        assert_eq!(human(b"a\x01b"), Err(SecretError::Control(1)));
        assert_eq!(human(b"\n"), Err(SecretError::Empty));
        assert_eq!(human(b""), Err(SecretError::Empty));
        // A refused byte after the line end is tail, and ignored.
        assert_eq!(human(b"ok\n\0\x1b").unwrap(), b"ok");
        // Bounds on the first line only.
        let mut max = vec![b'a'; MAX_LEN];
        assert_eq!(human(&max).unwrap().len(), MAX_LEN);
        max.extend_from_slice(b"\r\n");
        assert_eq!(human(&max).unwrap().len(), MAX_LEN);
        assert_eq!(human(&[b'a'; MAX_LEN + 1]), Err(SecretError::TooLong));
        // Too long wins over a control character, as an editor's overflow
        // cannot know what it dropped.
        let mut long = vec![0u8; MAX_LEN + 1];
        long.push(b'\n');
        assert_eq!(human(&long), Err(SecretError::TooLong));
    }

    #[test]
    fn errors_are_one_line_and_say_what_to_do() {
        for e in [
            SecretError::Empty,
            SecretError::TooLong,
            SecretError::Control(0),
            SecretError::Control(0x1b),
            SecretError::Control(0x7f),
            SecretError::Control(0x01),
        ] {
            let m = e.to_string();
            assert!(!m.contains('\n') && m.starts_with("the passphrase"), "{m}");
        }
        assert!(SecretError::Control(1).to_string().contains("Ctrl-A"));
    }

    #[test]
    fn from_line_is_the_rule() {
        assert_eq!(
            Passphrase::from_line(b"abc\r\n".to_vec()).unwrap().expose(),
            b"abc"
        );
        assert_eq!(
            Passphrase::from_line(b"abc\n\n".to_vec()).unwrap().expose(),
            b"abc"
        );
    }

    #[test]
    fn secretbuf_overflow_and_lines() {
        let mut b = SecretBuf::default();
        b.push(b"pass\nrest");
        assert_eq!(b.take(true).unwrap().expose(), b"pass");
        assert!(b.is_empty());
        for _ in 0..(LINE_CAP + 1) {
            b.push_byte(b'x');
        }
        assert!(b.overflowed());
        assert_eq!(b.take(false).unwrap_err(), SecretError::TooLong);
        assert!(!b.overflowed());
        b.push(b"ab");
        b.pop();
        assert_eq!(b.take(false).unwrap().expose(), b"a");
        // Backspace removes a whole UTF-8 character, or one stray byte.
        b.push("a\u{e4}".as_bytes());
        b.pop();
        assert_eq!(b.take(false).unwrap().expose(), b"a");
        b.push("a\u{20ac}".as_bytes());
        b.push(b"\xff");
        b.pop();
        b.pop();
        assert_eq!(b.take(false).unwrap().expose(), b"a");
    }

    #[test]
    fn push_line_ignores_the_tail() {
        // A short first line followed by a long tail in one packet: the
        // tail must not overflow the buffer (issue 11 D).
        let mut b = SecretBuf::default();
        let mut pkt = b"short\n".to_vec();
        pkt.extend(vec![b'x'; 70_000]);
        assert!(b.push_line(&pkt));
        assert!(!b.overflowed());
        assert!(b.push_line(b"more"));
        assert_eq!(b.take(true).unwrap().expose(), b"short");
        // In pieces.
        assert!(!b.push_line(b"sh"));
        assert!(b.push_line(b"ort\r\nrest"));
        assert_eq!(b.take(true).unwrap().expose(), b"short");
        // A first line that is too long overflows.
        assert!(!b.push_line(&vec![b'a'; LINE_CAP + 1]));
        assert!(b.overflowed());
        assert_eq!(b.take(true).unwrap_err(), SecretError::TooLong);
    }
}
