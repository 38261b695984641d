//! The listener's host keys: OpenSSH-format private keys (ed25519, ECDSA or
//! RSA, at most one per algorithm), read from files and never generated at
//! boot (a key made at boot would change on every reboot and teach admins to
//! ignore host-key warnings).

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use anyhow::{bail, Context, Result};
use russh::keys::ssh_key::private::{Ed25519Keypair, RsaKeypair};
use russh::keys::ssh_key::{EcdsaCurve, LineEnding};
use russh::keys::{Algorithm, PrivateKey};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The key types `keygen --type` makes and the listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Ed25519,
    /// ECDSA on NIST P-256 (`ecdsa-sha2-nistp256`, ssh-keygen's default).
    Ecdsa,
    /// 3072-bit RSA, signing with rsa-sha2-512/256.
    Rsa,
}

impl KeyType {
    /// Parses `--type`'s value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ed25519" => Some(KeyType::Ed25519),
            "ecdsa" => Some(KeyType::Ecdsa),
            "rsa" => Some(KeyType::Rsa),
            _ => None,
        }
    }
}

/// Loads an unencrypted ed25519, ECDSA or RSA host key.
pub fn load(path: &Path) -> Result<PrivateKey> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading host key {}", path.display()))?,
    );
    // ssh-keygen -m PEM, dropbearconvert and old OpenSSH write this format.
    if text.starts_with("-----BEGIN ") && !text.starts_with("-----BEGIN OPENSSH") {
        bail!(
            "host key {} is in PEM format; rewrite it in OpenSSH's format with \
             `ssh-keygen -p -N '' -P '' -f {}` (same key, same fingerprint)",
            path.display(),
            path.display()
        );
    }
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
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } | Algorithm::Rsa { .. } => Ok(key),
        other => bail!(
            "host key {} is {other}; portcullisd serves ed25519, ECDSA or RSA host keys \
             (make one with `portcullisd keygen --type ed25519 {}`)",
            path.display(),
            path.display()
        ),
    }
}

/// Loads every host key (`shown[i]` is the path as the config names it,
/// `read[i]` where to read it) and refuses two keys of one algorithm: an SSH
/// server signs each key exchange with the first key of the negotiated
/// algorithm, so a second one would never be shown (docs/rotation.md).
pub fn load_all(shown: &[PathBuf], read: &[PathBuf]) -> Result<Vec<PrivateKey>> {
    let mut keys: Vec<(PrivateKey, &Path)> = Vec::with_capacity(read.len());
    for (name, path) in shown.iter().zip(read) {
        let key = load(path)?;
        if let Some((_, first)) = keys
            .iter()
            .find(|(k, _)| same_algorithm(&k.algorithm(), &key.algorithm()))
        {
            bail!(
                "host keys {} and {} are both {}: a listener shows one key per algorithm, \
                 so the second would never be used; keep one (to rotate, see docs/rotation.md)",
                first.display(),
                name.display(),
                key.algorithm()
            );
        }
        keys.push((key, name));
    }
    Ok(keys.into_iter().map(|(k, _)| k).collect())
}

/// Whether two keys would be offered under the same signature algorithms
/// (every RSA key serves every rsa-sha2 variant).
fn same_algorithm(a: &Algorithm, b: &Algorithm) -> bool {
    a == b || matches!((a, b), (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }))
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
    generate_typed(path, comment, force, KeyType::Ed25519)
}

/// A fresh key of type `ty`.
fn new_key(ty: KeyType) -> Result<PrivateKey> {
    match ty {
        KeyType::Ed25519 => {
            let mut seed = Zeroizing::new([0u8; 32]);
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(seed.as_mut()))
                .context("reading /dev/urandom")?;
            Ok(PrivateKey::from(Ed25519Keypair::from_seed(&seed)))
        }
        KeyType::Ecdsa => PrivateKey::random(
            &mut russh::keys::key::safe_rng(),
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        )
        .context("making an ECDSA key"),
        // 3072 bits, ssh-keygen's default size.
        KeyType::Rsa => RsaKeypair::random(&mut russh::keys::key::safe_rng(), 3072)
            .map(PrivateKey::from)
            .context("making an RSA key"),
    }
}

/// [`generate_with`] for a key of type `ty`.
pub fn generate_typed(path: &Path, comment: &str, force: bool, ty: KeyType) -> Result<PrivateKey> {
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
    let mut key = new_key(ty)?;
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

    #[test]
    fn one_key_per_algorithm() {
        let t = tempfile::tempdir().unwrap();
        let path = |n: &str| t.path().join(n);
        generate(&path("ed1"), "a").unwrap();
        generate(&path("ed2"), "b").unwrap();
        let ec = generate_typed(&path("ec"), "c", false, KeyType::Ecdsa).unwrap();
        assert!(std::fs::read_to_string(public_path(&path("ec")))
            .unwrap()
            .starts_with("ecdsa-sha2-nistp256 "));
        let both = [path("ed1"), path("ec")];
        let keys = load_all(&both, &both).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].public_key(), ec.public_key());
        // Two ed25519 keys: refused, naming both files as the config does.
        let shown = [PathBuf::from("/etc/a"), PathBuf::from("/etc/b")];
        let e = format!(
            "{:#}",
            load_all(&shown, &[path("ed1"), path("ed2")]).unwrap_err()
        );
        assert!(
            e.contains("host keys /etc/a and /etc/b are both ssh-ed25519") && !e.contains('\n'),
            "{e}"
        );
        // A missing one is named too.
        let e = format!(
            "{:#}",
            load_all(&both, &[path("ed1"), path("gone")]).unwrap_err()
        );
        assert!(e.contains("gone"), "{e}");
        assert!(same_algorithm(
            &Algorithm::Rsa { hash: None },
            &Algorithm::Rsa {
                hash: Some(russh::keys::HashAlg::Sha512)
            }
        ));
        // A PEM key (ssh-keygen -m PEM, dropbearconvert): the way to convert
        // it is named, and it works.
        let pem = path("pem");
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ecdsa", "-m", "PEM", "-N", "", "-f"])
            .arg(&pem)
            .status()
            .unwrap();
        assert!(ok.success());
        let e = format!("{:#}", load(&pem).unwrap_err());
        assert!(
            e.contains("PEM format") && e.contains("ssh-keygen -p"),
            "{e}"
        );
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-p", "-N", "", "-P", "", "-f"])
            .arg(&pem)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        assert!(load(&pem).unwrap().algorithm().is_ecdsa());
        assert_eq!(KeyType::parse("ecdsa"), Some(KeyType::Ecdsa));
        assert_eq!(KeyType::parse("dsa"), None);
    }
}
