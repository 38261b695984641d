//! The listener's host key: an ed25519 key in OpenSSH format, read from a
//! file and never generated at boot (a key made at boot would change on every
//! reboot and teach admins to ignore host-key warnings).

use anyhow::{bail, Context, Result};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
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

/// Creates a new ed25519 host key at `path` (mode 0600, refusing to
/// overwrite) and returns it. The public half is written next to it as
/// `path.pub`.
pub fn generate(path: &Path, comment: &str) -> Result<PrivateKey> {
    let mut seed = Zeroizing::new([0u8; 32]);
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(seed.as_mut()))
        .context("reading /dev/urandom")?;
    let mut key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
    key.set_comment(comment);
    let text = key
        .to_openssh(LineEnding::LF)
        .context("encoding the host key")?;
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
    let public = key
        .public_key()
        .to_openssh()
        .context("encoding the public key")?;
    let pub_path = path.with_extension("pub");
    std::fs::write(&pub_path, format!("{public}\n"))
        .with_context(|| format!("writing {}", pub_path.display()))?;
    Ok(key)
}

#[cfg(test)]
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
        std::fs::write(t.path().join("junk"), "not a key").unwrap();
        let e = load(&t.path().join("junk")).unwrap_err();
        assert!(format!("{e:#}").contains("portcullisd keygen"));
    }
}
