//! The one passphrase type.
//!
//! A [`Passphrase`] owns its bytes in zeroizing memory, is bounded in size,
//! prints only a placeholder in `Debug`, and deliberately implements neither
//! `Display`, `Serialize` nor `Clone`: the only way to get at the bytes is
//! [`Passphrase::expose`], which makes every use easy to find in review.

use zeroize::{Zeroize, Zeroizing};

/// Largest passphrase we accept, in bytes. cryptsetup's own interactive limit
/// is 512 characters; anything larger is a mistake or an attack.
pub const MAX_LEN: usize = 1024;

/// A LUKS passphrase held in memory that is wiped on drop.
pub struct Passphrase(Zeroizing<Vec<u8>>);

/// Why bytes could not become a passphrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretError {
    Empty,
    TooLong,
}

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretError::Empty => f.write_str("the passphrase is empty"),
            SecretError::TooLong => write!(f, "the passphrase is longer than {MAX_LEN} bytes"),
        }
    }
}

impl std::error::Error for SecretError {}

impl Passphrase {
    /// Takes ownership of `bytes`; on error the bytes are wiped before returning.
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

    /// Builds a passphrase from a line typed or piped by a human: one trailing
    /// `\n` (and a `\r` before it) is removed, as `echo pass | ...` adds it.
    pub fn from_line(mut bytes: Vec<u8>) -> Result<Self, SecretError> {
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Self::new(bytes)
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
            buf: Zeroizing::new(Vec::with_capacity(MAX_LEN + 2)),
            overflow: false,
        }
    }
}

impl SecretBuf {
    /// Appends bytes; once more than `MAX_LEN + 2` bytes arrived the buffer is
    /// marked overflowed and further input is dropped (and wiped by the caller).
    pub fn push(&mut self, data: &[u8]) {
        if self.overflow || self.buf.len() + data.len() > MAX_LEN + 2 {
            self.overflow = true;
            return;
        }
        self.buf.extend_from_slice(data);
    }

    pub fn push_byte(&mut self, b: u8) {
        self.push(&[b]);
    }

    pub fn pop(&mut self) {
        if let Some(last) = self.buf.last_mut() {
            *last = 0;
            self.buf.pop();
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

    /// Position of the first `\n` or `\r`, for line-oriented input.
    pub fn line_end(&self) -> Option<usize> {
        self.buf.iter().position(|&b| b == b'\n' || b == b'\r')
    }

    /// Moves the content out as a passphrase (a line when `line` is set),
    /// leaving the buffer empty. Overflowed input is always an error.
    pub fn take(&mut self, line: bool) -> Result<Passphrase, SecretError> {
        let overflow = std::mem::take(&mut self.overflow);
        let mut v = Vec::with_capacity(MAX_LEN + 2);
        let end = if line {
            self.line_end().unwrap_or(self.buf.len())
        } else {
            self.buf.len()
        };
        v.extend_from_slice(self.buf.get(..end).unwrap_or_default());
        self.buf.zeroize();
        if overflow {
            v.zeroize();
            return Err(SecretError::TooLong);
        }
        Passphrase::new(v)
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
mod tests {
    use super::*;

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
    fn from_line_strips_one_newline() {
        assert_eq!(
            Passphrase::from_line(b"abc\n".to_vec()).unwrap().expose(),
            b"abc"
        );
        assert_eq!(
            Passphrase::from_line(b"abc\r\n".to_vec()).unwrap().expose(),
            b"abc"
        );
        assert_eq!(
            Passphrase::from_line(b"abc\n\n".to_vec()).unwrap().expose(),
            b"abc\n"
        );
        assert_eq!(
            Passphrase::from_line(b"a b ".to_vec()).unwrap().expose(),
            b"a b "
        );
    }

    #[test]
    fn secretbuf_overflow_and_lines() {
        let mut b = SecretBuf::default();
        b.push(b"pass\nrest");
        assert_eq!(b.take(true).unwrap().expose(), b"pass");
        assert!(b.is_empty());
        for _ in 0..(MAX_LEN + 3) {
            b.push_byte(b'x');
        }
        assert!(b.overflowed());
        assert_eq!(b.take(false).unwrap_err(), SecretError::TooLong);
        assert!(!b.overflowed());
        b.push(b"ab");
        b.pop();
        assert_eq!(b.take(false).unwrap().expose(), b"a");
    }
}
