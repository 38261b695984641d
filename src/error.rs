//! The error type of the listener's paths (config, host keys, the daemon,
//! the relay): a one-line message with its context, written as anyhow
//! writes `{:#}` ("reading config /x: No such file or directory (os error
//! 2)"), so messages and the tests that read them stay as they were.
//!
//! Why not anyhow there: `anyhow::Error` captures a `std::backtrace`
//! whether or not anyone prints it, which keeps libunwind, the DWARF reader
//! and the demangler in the binary. In the small listener build
//! (`PORTCULLIS_SMALL=1`, panics abort at once) nothing else needs them:
//! about 22 KB zstd of every initramfs. The client keeps anyhow; `?` turns
//! this error into an `anyhow::Error` (the `From` below).

use std::fmt;

/// A message, its context first. Not `std::error::Error`: that would rule
/// out the blanket `From` that lets `?` take any standard error (as
/// anyhow's own type does).
pub struct Error {
    msg: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error saying `msg`.
    pub fn msg(msg: impl fmt::Display) -> Self {
        Error {
            msg: msg.to_string(),
        }
    }

    /// This error under `context`: "context: this".
    pub fn context(self, context: impl fmt::Display) -> Self {
        Error {
            msg: format!("{context}: {}", self.msg),
        }
    }
}

/// Any standard error, with its `source()` chain on the same line.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(e: E) -> Self {
        let mut msg = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        Error { msg }
    }
}

impl From<Error> for anyhow::Error {
    fn from(e: Error) -> Self {
        anyhow::Error::msg(e.msg)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

/// The message itself, as anyhow's `Debug` shows it (no backtrace here).
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

/// `.context(…)` and `.with_context(|| …)` on results and options.
pub trait Context<T> {
    fn context<C: fmt::Display>(self, context: C) -> Result<T>;
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context<C: fmt::Display>(self, context: C) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C: fmt::Display>(self, context: C) -> Result<T> {
        self.ok_or_else(|| Error::msg(context))
    }
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.ok_or_else(|| Error::msg(f()))
    }
}

/// An [`Error`] from a format string: `err!("{path}: no keys")`.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::error::Error::msg(format!($($arg)*))
    };
}

/// Returns early with an [`Error`] from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::err!($($arg)*).into())
    };
}

pub use crate::{bail, err};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("IO error")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn eof() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "early eof")
    }

    /// The same line anyhow's `{:#}` printed, context and sources included.
    #[test]
    fn messages_read_as_anyhow_wrote_them() {
        let ours: Result<()> = Err(Outer(eof())).context("SSH handshake");
        let theirs: anyhow::Result<()> =
            anyhow::Context::context(Err(Outer(eof())), "SSH handshake");
        let ours = format!("{:#}", ours.unwrap_err());
        assert_eq!(ours, format!("{:#}", theirs.unwrap_err()));
        assert_eq!(ours, "SSH handshake: IO error: early eof");

        let none: Option<u8> = None;
        let e = none.with_context(|| format!("key {}", 3)).unwrap_err();
        assert_eq!(e.to_string(), "key 3");
        assert_eq!(format!("{e:?}"), "key 3");
        assert_eq!(
            err!("a {}", 1).context("b").context("c").to_string(),
            "c: b: a 1"
        );
    }

    /// Through `?` into the client's anyhow, the message is unchanged.
    #[test]
    fn into_anyhow_keeps_the_line() {
        fn ours() -> Result<()> {
            bail!("{}: no keys", "/etc/portcullis/authorized_keys")
        }
        fn client() -> anyhow::Result<()> {
            ours()?;
            Ok(())
        }
        let e = client().unwrap_err().context("checking");
        assert_eq!(
            format!("{e:#}"),
            "checking: /etc/portcullis/authorized_keys: no keys"
        );
    }
}
