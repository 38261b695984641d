//! Where the client gets the LUKS passphrase: a no-echo prompt on the
//! terminal, standard input, a password-manager command or a file only its
//! owner can read. This is the one passphrase `Source` of the crate (the
//! command line, the inventory and `watch` all use it). Every source
//! applies the one human rule ([`Passphrase::from_human`]: the first line,
//! one line end removed, control characters refused), so the same typed or
//! stored passphrase gives the same bytes whichever source it came from.
//! Intermediate buffers are wiped.
//!
//! Reads untrusted program output: no `unwrap`, `expect`, indexing or
//! `panic` here.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::client::tty::{self, TtyError};
use crate::secret::{Passphrase, LINE_CAP};
use crate::text::clip;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use zeroize::Zeroizing;

/// Most bytes read from standard input or a passphrase command. Everything
/// after the first line is read and discarded (a password manager prints
/// more lines, and must not die of SIGPIPE), but not without bound.
pub const MAX_INPUT: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// Ask on the terminal, without echo.
    Prompt,
    /// The first line of standard input.
    Stdin,
    /// Run this through `sh -c` and use the first line of its output.
    Command(String),
    /// A file only its owner can read (its first line).
    File(PathBuf),
}

impl Source {
    /// Whether it can be used without a human at a terminal (`watch`).
    /// Standard input counts as interactive: a service has none to give.
    pub fn unattended(&self) -> bool {
        matches!(self, Source::Command(_) | Source::File(_))
    }

    /// How the inventory spells it, for messages. Never a secret: a command
    /// or a path, not what they produce.
    pub fn describe(&self) -> String {
        match self {
            Source::Prompt => "\"prompt\"".into(),
            Source::Stdin => "\"stdin\"".into(),
            Source::Command(c) => format!("{{ command = {} }}", clip(c)),
            Source::File(p) => format!("{{ file = {} }}", clip(&p.display().to_string())),
        }
    }
}

/// Reads the passphrase. `what` names the target in the prompt.
pub fn read(source: &Source, what: &str) -> Result<Passphrase> {
    match source {
        Source::Prompt => {
            tty::read_secret(&format!("LUKS passphrase for {what}: ")).map_err(|e| match e {
                TtyError::NoTerminal => anyhow!(
                    "there is no terminal to ask for the passphrase on; \
                     use --passphrase-stdin or --passphrase-command"
                ),
                TtyError::Refused(e) => anyhow!("{e}; nothing was sent"),
                e => anyhow!("reading the passphrase: {e}; nothing was sent"),
            })
        }
        Source::Stdin => from_reader(std::io::stdin().lock()),
        Source::Command(cmd) => from_command(cmd),
        Source::File(p) => from_file(p),
    }
}

/// Reads a passphrase file, refusing one that others may read: a secret in
/// a world-readable file is already leaked, and we should not bless it.
pub fn from_file(path: &Path) -> Result<Passphrase> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("opening passphrase file {}", path.display()))?;
    let meta = f
        .metadata()
        .with_context(|| format!("reading passphrase file {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "passphrase file {} is readable by group or others; chmod 600 it",
            path.display()
        );
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(crate::secret::MAX_LEN + 2));
    f.take(crate::secret::MAX_LEN as u64 + 2)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading passphrase file {}", path.display()))?;
    // The first line is all the rule looks at; the rest need not be read.
    Passphrase::from_human(&buf).map_err(|e| anyhow!("passphrase file {}: {e}", path.display()))
}

/// Why [`drain`] stopped.
enum Drained {
    /// End of input; the first [`LINE_CAP`] bytes are kept.
    Eof,
    /// More than [`MAX_INPUT`] bytes.
    TooMuch,
}

/// Reads `r` to EOF, bounded by [`MAX_INPUT`], keeping the first line (at
/// most [`LINE_CAP`] bytes) in `head`; the rest is read into a wiped buffer
/// and dropped.
fn drain(mut r: impl Read, head: &mut Zeroizing<Vec<u8>>) -> std::io::Result<Drained> {
    let mut chunk = Zeroizing::new([0u8; 8192]);
    let mut total = 0usize;
    loop {
        let n = match r.read(&mut chunk[..]) {
            Ok(0) => return Ok(Drained::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n;
        if total > MAX_INPUT {
            return Ok(Drained::TooMuch);
        }
        let got = chunk.get(..n).unwrap_or_default();
        let room = LINE_CAP.saturating_sub(head.len());
        if room > 0 && crate::secret::line_end(head).is_none() {
            head.extend_from_slice(got.get(..n.min(room)).unwrap_or_default());
        }
    }
}

/// Reads standard input (or any reader) through the human rule.
pub fn from_reader(r: impl Read) -> Result<Passphrase> {
    let mut head = Zeroizing::new(Vec::with_capacity(LINE_CAP));
    match drain(r, &mut head).context("reading the passphrase from standard input")? {
        Drained::Eof => {}
        Drained::TooMuch => bail!(
            "standard input holds more than {MAX_INPUT} bytes; \
             give the passphrase as its first line"
        ),
    }
    Passphrase::from_human(&head).map_err(|e| anyhow!("{e} (standard input)"))
}

/// Runs a password-manager command; the first line of its output is the
/// passphrase (`pass show` prints more lines). All its output is read, so it
/// never dies of SIGPIPE; beyond [`MAX_INPUT`] it is killed. Its stderr goes
/// to ours so the manager can ask for its own unlock.
pub fn from_command(cmd: &str) -> Result<Passphrase> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("running passphrase command {cmd:?}"))?;
    let mut head = Zeroizing::new(Vec::with_capacity(LINE_CAP));
    let drained = match child.stdout.take() {
        Some(out) => drain(out, &mut head),
        None => Ok(Drained::Eof),
    };
    if !matches!(drained, Ok(Drained::Eof)) {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for passphrase command {cmd:?}"))?;
    match drained.with_context(|| format!("reading output of passphrase command {cmd:?}"))? {
        Drained::Eof => {}
        Drained::TooMuch => bail!(
            "passphrase command {cmd:?} printed more than {MAX_INPUT} bytes; \
             make it print the passphrase on its first line"
        ),
    }
    if !status.success() {
        bail!("passphrase command {cmd:?} failed ({status}); run it by hand to see why");
    }
    Passphrase::from_human(&head).map_err(|e| anyhow!("passphrase command {cmd:?}: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn reader_applies_the_rule() {
        assert_eq!(from_reader(&b"s3cret\n"[..]).unwrap().expose(), b"s3cret");
        assert_eq!(from_reader(&b"s3cret\r"[..]).unwrap().expose(), b"s3cret");
        assert_eq!(from_reader(&b"L1\nL2\n"[..]).unwrap().expose(), b"L1");
        assert!(from_reader(&b""[..]).is_err());
        assert!(from_reader(&vec![b'a'; 5000][..]).is_err());
        let e = from_reader(&b"a\0b\n"[..]).unwrap_err().to_string();
        assert!(e.contains("NUL") && e.contains("standard input"), "{e}");
        // A short first line and a long tail.
        let mut long = b"short\n".to_vec();
        long.extend(vec![b'x'; 200_000]);
        assert_eq!(from_reader(&long[..]).unwrap().expose(), b"short");
        let huge = vec![b'x'; MAX_INPUT + 1];
        let e = from_reader(&huge[..]).unwrap_err().to_string();
        assert!(e.contains("first line"), "{e}");
    }

    #[test]
    fn command_output_is_drained_and_crlf_handled() {
        assert_eq!(
            from_command("printf 'pw1\\nurl: x\\n'").unwrap().expose(),
            b"pw1"
        );
        assert_eq!(from_command("printf 'pw1\\r\\n'").unwrap().expose(), b"pw1");
        // Long output after the first line: drained, no SIGPIPE (the old
        // code stopped after 1026 bytes and the command died with 141).
        let pw = from_command("printf 'pw2\\n'; head -c 300000 /dev/zero").unwrap();
        assert_eq!(pw.expose(), b"pw2");
        let e = from_command("printf 'pw\\n'; head -c 2000000 /dev/zero")
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than") && e.contains("first line"), "{e}");
        let e = from_command("exit 3").unwrap_err().to_string();
        assert!(e.contains("failed"), "{e}");
        let e = from_command("true").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
