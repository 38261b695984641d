//! Host-key pinning for initramfs identities, kept in portcullis's own file
//! (`~/.config/portcullis/known_hosts`), never in `~/.ssh/known_hosts`, so the
//! initramfs key and the booted system's key of the same address never collide.
//!
//! Format, one per line: `[host]:port key-type base64`, as OpenSSH writes
//! non-default ports. Comments and blank lines are kept.

use anyhow::{Context, Result};
use russh::keys::PublicKey;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What the file says about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Match,
    Unknown,
    /// Pinned with another key; the pinned key's fingerprint and its line.
    Changed {
        pinned: String,
        line: usize,
    },
}

pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("portcullis").join("known_hosts"))
}

pub fn host_id(host: &str, port: u16) -> String {
    format!(
        "[{}]:{port}",
        host.trim_start_matches('[').trim_end_matches(']')
    )
}

/// Looks `host_id` up in `text`. Lines that cannot be parsed are skipped
/// (they cannot match), but a changed key on any valid line wins.
pub fn check(text: &str, host_id: &str, key: &PublicKey) -> Verdict {
    let mut verdict = Verdict::Unknown;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut w = line.split_ascii_whitespace();
        let (Some(hosts), Some(kind), Some(b64)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        if !hosts.split(',').any(|h| h == host_id) {
            continue;
        }
        let Ok(pinned) = PublicKey::from_openssh(&format!("{kind} {b64}")) else {
            continue;
        };
        if pinned.key_data() == key.key_data() {
            return Verdict::Match;
        }
        verdict = Verdict::Changed {
            pinned: crate::authkeys::fingerprint(&pinned),
            line: i + 1,
        };
    }
    verdict
}

pub fn check_file(path: &Path, host_id: &str, key: &PublicKey) -> Result<Verdict> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(check(&t, host_id, key)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Verdict::Unknown),
        Err(e) => Err(e).with_context(|| format!("reading known hosts {}", path.display())),
    }
}

/// Appends a pin (creating the file 0600 and its directory 0700).
pub fn add(path: &Path, host_id: &str, key: &PublicKey) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let line = format!(
        "{host_id} {}\n",
        key.to_openssh().context("encoding the host key")?
    );
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening known hosts {}", path.display()))?;
    f.write_all(line.as_bytes())
        .with_context(|| format!("writing known hosts {}", path.display()))
}

use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGzmd7Q2xTUCfkNPMnhbU2GXHfpjYs/jBdqoNlYzR+1j";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    #[test]
    fn verdicts() {
        let k1 = PublicKey::from_openssh(K1).unwrap();
        let k2 = PublicKey::from_openssh(K2).unwrap();
        let text = format!("# pins\ngarbage\n[web1]:22 {K1}\n[db1]:2222,[db1b]:2222 {K2}\n");
        assert_eq!(check(&text, "[web1]:22", &k1), Verdict::Match);
        assert_eq!(check(&text, "[db1b]:2222", &k2), Verdict::Match);
        assert_eq!(check(&text, "[web1]:2222", &k1), Verdict::Unknown);
        match check(&text, "[web1]:22", &k2) {
            Verdict::Changed { pinned, line } => {
                assert_eq!(line, 3);
                assert_eq!(pinned, crate::authkeys::fingerprint(&k1));
            }
            v => panic!("{v:?}"),
        }
        assert_eq!(host_id("::1", 22), "[::1]:22");
    }

    #[test]
    fn add_then_match() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sub/known_hosts");
        let k1 = PublicKey::from_openssh(K1).unwrap();
        assert_eq!(check_file(&p, "[h]:22", &k1).unwrap(), Verdict::Unknown);
        add(&p, "[h]:22", &k1).unwrap();
        assert_eq!(check_file(&p, "[h]:22", &k1).unwrap(), Verdict::Match);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
