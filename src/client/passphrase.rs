//! Where the client gets the LUKS passphrase: a no-echo prompt on the
//! terminal, standard input, or a password-manager command. The value goes
//! straight into a [`Passphrase`]; intermediate buffers are wiped.

use crate::secret::Passphrase;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::process::{Command, Stdio};
use zeroize::Zeroizing;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Ask on the terminal, without echo.
    Prompt,
    /// Read standard input to EOF; one trailing newline is dropped.
    Stdin,
    /// Run this through `sh -c` and use its standard output.
    Command(String),
}

/// Reads the passphrase. `what` names the target in the prompt.
pub fn read(source: &Source, what: &str) -> Result<Passphrase> {
    match source {
        Source::Prompt => {
            let s = Zeroizing::new(
                rpassword::prompt_password(format!("LUKS passphrase for {what}: "))
                    .context("reading the passphrase from the terminal (no terminal? use --passphrase-stdin or --passphrase-command)")?,
            );
            Passphrase::new(s.as_bytes().to_vec()).map_err(|e| anyhow::anyhow!("{e}"))
        }
        Source::Stdin => from_reader(std::io::stdin().lock()),
        Source::Command(cmd) => from_command(cmd),
    }
}

/// Reads to EOF, bounded, into zeroizing memory.
pub fn from_reader(r: impl Read) -> Result<Passphrase> {
    let mut buf = Zeroizing::new(Vec::with_capacity(crate::secret::MAX_LEN + 2));
    r.take(crate::secret::MAX_LEN as u64 + 2)
        .read_to_end(&mut buf)
        .context("reading the passphrase from standard input")?;
    Passphrase::from_line(std::mem::take(&mut *buf))
        .map_err(|e| anyhow::anyhow!("{e} (standard input)"))
}

/// Runs a password-manager command; its stdout is the passphrase. Its
/// stderr goes to ours so the manager can ask for its own unlock.
pub fn from_command(cmd: &str) -> Result<Passphrase> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("running passphrase command {cmd:?}"))?;
    let mut buf = Zeroizing::new(Vec::with_capacity(crate::secret::MAX_LEN + 2));
    if let Some(out) = child.stdout.take() {
        out.take(crate::secret::MAX_LEN as u64 + 2)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading output of passphrase command {cmd:?}"))?;
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for {cmd:?}"))?;
    if !status.success() {
        bail!("passphrase command {cmd:?} failed ({status}); run it by hand to see why");
    }
    // `pass show` prints the password on the first line; keep only that.
    let first_line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let mut line = Vec::with_capacity(first_line_end);
    line.extend_from_slice(buf.get(..first_line_end).unwrap_or_default());
    Passphrase::new(line).map_err(|e| anyhow::anyhow!("passphrase command {cmd:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_and_command() {
        assert_eq!(from_reader(&b"s3cret\n"[..]).unwrap().expose(), b"s3cret");
        assert!(from_reader(&b""[..]).is_err());
        assert!(from_reader(&vec![b'a'; 5000][..]).is_err());
        assert_eq!(
            from_command("printf 'pw1\\nurl: x\\n'").unwrap().expose(),
            b"pw1"
        );
        let e = from_command("exit 3").unwrap_err().to_string();
        assert!(e.contains("failed"), "{e}");
        let e = from_command("true").unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
