//! The listener's host key: an ed25519 key in OpenSSH format, read from a
//! file and never generated at boot (a key made at boot would change on every
//! reboot and teach admins to ignore host-key warnings).

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use anyhow::{bail, Context, Result};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Loads an unencrypted ed25519 host key.
pub fn load(path: &Path) -> Result<PrivateKey> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading host key {}", path.display()))?,
    );
    let key = PrivateKey::from_openssh(text.as_bytes()).with_context(|| {
        format!(
            "host key {} is not an OpenSSH private key; create one with `portcullisd keygen {}`",
            path.display(),
            path.display()
        )
    })?;
    if key.is_encrypted() {
        bail!(
            "host key {} is encrypted; the listener needs it unencrypted",
            path.display()
        );
    }
    if key.algorithm() != Algorithm::Ed25519 {
        bail!(
            "host key {} is {}; portcullisd uses ed25519 host keys only",
            path.display(),
            key.algorithm()
        );
    }
    Ok(key)
}

/// Whether other users may read the file (a problem at image build time).
pub fn world_or_group_readable(path: &Path) -> Result<bool> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading host key {}", path.display()))?
        .permissions()
        .mode();
    Ok(mode & 0o077 != 0)
}

/// Where the public half of the key at `path` goes: `path` + `.pub`, as
/// ssh-keygen does (`host_key` → `host_key.pub`, `x.key` → `x.key.pub`).
pub fn public_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Creates a new ed25519 host key at `path` (mode 0600) and its public half
/// at [`public_path`], and returns it; never overwrites either file.
pub fn generate(path: &Path, comment: &str) -> Result<PrivateKey> {
    generate_with(path, comment, false)
}

/// [`generate`], but with `force` an existing key and public file are
/// replaced. Without it nothing is written unless both paths are free, so a
/// refusal leaves no half-made pair.
pub fn generate_with(path: &Path, comment: &str, force: bool) -> Result<PrivateKey> {
    if path.extension().is_some_and(|e| e == "pub") {
        bail!(
            "{} ends in .pub, the name of a public key; give the private key's path \
             (its public half goes to PATH.pub)",
            path.display()
        );
    }
    let pub_path = public_path(path);
    for (what, p) in [("host key", path), ("public key", pub_path.as_path())] {
        // symlink_metadata: a dangling symlink counts as existing too.
        if std::fs::symlink_metadata(p).is_ok() {
            if !force {
                bail!(
                    "{what} {} already exists; an existing key is never overwritten: move it \
                     away, choose another path, or pass --force to replace it",
                    p.display()
                );
            }
            std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(seed.as_mut()))
        .context("reading /dev/urandom")?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    let text = key
        .to_openssh(LineEnding::LF)
        .context("encoding the host key")?;
    let public = key
        .public_key()
        .to_openssh()
        .context("encoding the public key")?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!(
                "creating host key {} (an existing key is never overwritten; move it away first)",
                path.display()
            )
        })?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing host key {}", path.display()))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&pub_path)
        .and_then(|mut f| f.write_all(format!("{public}\n").as_bytes()))
        .with_context(|| format!("writing public key {}", pub_path.display()))?;
    Ok(key)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_and_refuse_overwrite() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("host_key");
        let k = generate(&p, "test").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!world_or_group_readable(&p).unwrap());
        let l = load(&p).unwrap();
        assert_eq!(l.public_key(), k.public_key());
        let e = generate(&p, "again").unwrap_err();
        assert!(format!("{e:#}").contains("never overwritten"));
        assert!(std::fs::read_to_string(t.path().join("host_key.pub"))
            .unwrap()
            .starts_with("ssh-ed25519 "));
        std::fs::write(t.path().join("junk"), "not a key").unwrap();
        let e = load(&t.path().join("junk")).unwrap_err();
        assert!(format!("{e:#}").contains("portcullisd keygen"));
    }

    #[test]
    fn keygen_never_writes_over_a_private_key() {
        let t = tempfile::tempdir().unwrap();
        // `keygen x.pub` used to write the public half over the private one.
        let p = t.path().join("x.pub");
        let e = format!("{:#}", generate(&p, "c").unwrap_err());
        assert!(e.contains("ends in .pub") && e.contains("PATH.pub"), "{e}");
        assert!(!p.exists());
    }

    #[test]
    fn keygen_never_overwrites_an_existing_public_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x.key");
        let other = t.path().join("x.pub");
        std::fs::write(&other, "someone else's public key\n").unwrap();
        // x.key.pub, as ssh-keygen names it: x.pub is left alone.
        generate(&p, "c").unwrap();
        assert_eq!(
            std::fs::read_to_string(&other).unwrap(),
            "someone else's public key\n"
        );
        assert_eq!(public_path(&p), t.path().join("x.key.pub"));
        // An existing x.key.pub without its key is refused before anything
        // is written.
        let q = t.path().join("y.key");
        std::fs::write(public_path(&q), "old\n").unwrap();
        let e = format!("{:#}", generate(&q, "c").unwrap_err());
        assert!(
            e.contains("public key") && e.contains("y.key.pub already exists"),
            "{e}"
        );
        assert!(e.contains("--force"), "{e}");
        assert!(!q.exists());
        assert_eq!(std::fs::read_to_string(public_path(&q)).unwrap(), "old\n");
        // --force replaces both.
        let k = generate_with(&q, "c", true).unwrap();
        assert_eq!(load(&q).unwrap().public_key(), k.public_key());
        assert!(std::fs::read_to_string(public_path(&q))
            .unwrap()
            .starts_with("ssh-ed25519 "));
        let k2 = generate_with(&q, "c", true).unwrap();
        assert_ne!(k2.public_key(), k.public_key());
    }
}
