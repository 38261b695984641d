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

use crate::error::{bail, Context, Result};
use crate::sys::{Runner, SystemRunner};
use russh::keys::ssh_key::private::Ed25519Keypair;
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

/// A fresh ed25519 or ECDSA key (RSA keys come from [`rsa_by_ssh_keygen`]).
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
        KeyType::Rsa => bail!("RSA keys are made by ssh-keygen"),
    }
}

/// The ssh-keygen that makes RSA host keys.
const SSH_KEYGEN: &str = "ssh-keygen";

/// Makes a 3072-bit RSA key (ssh-keygen's default size) at `path` and
/// `path.pub` with OpenSSH's own generator, and loads it back. RSA key
/// generation (prime search) would add about 38 KB zstd to every initramfs
/// for a key type few hosts need (docs/rotation.md), and keygen runs on the
/// installed system, where ssh-keygen is at hand; the listener only loads
/// and signs with RSA keys. Both paths must be free (the caller checked).
fn rsa_by_ssh_keygen(runner: &dyn Runner, path: &Path, comment: &str) -> Result<PrivateKey> {
    let args: Vec<String> = [
        "-q", "-t", "rsa", "-b", "3072", "-N", "", "-C", comment, "-f",
    ]
    .into_iter()
    .map(String::from)
    .chain([path.display().to_string()])
    .collect();
    let out = runner
        .run(Path::new(SSH_KEYGEN), &args, None)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                crate::err!(
                    "--type rsa uses OpenSSH's ssh-keygen, which is not installed: install \
                 openssh-client (openssh on Arch and Fedora), or make an ed25519 key (the default)"
                )
            } else {
                crate::err!("running ssh-keygen for an RSA key: {e}")
            }
        })?;
    if out.code != Some(0) {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.lines().map(str::trim).find(|l| !l.is_empty());
        bail!(
            "ssh-keygen could not make an RSA key at {}: {}",
            path.display(),
            why.unwrap_or("it failed without a message")
        );
    }
    // ssh-keygen writes 0600; refuse anything looser rather than trust it.
    if world_or_group_readable(path)? {
        bail!(
            "ssh-keygen left {} readable by others; remove it and try again",
            path.display()
        );
    }
    load(path)
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
    if ty == KeyType::Rsa {
        return rsa_by_ssh_keygen(&SystemRunner, path, comment);
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

    /// `--type rsa` gets OpenSSH's key: 3072 bits, 0600, the comment, both
    /// halves, and it loads; a second run refuses to overwrite it.
    #[test]
    fn rsa_keys_come_from_ssh_keygen() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("host_key.rsa");
        let k = generate_typed(&p, "portcullis-initramfs", false, KeyType::Rsa).unwrap();
        assert!(matches!(k.algorithm(), Algorithm::Rsa { .. }));
        assert_eq!(k.comment().to_string(), "portcullis-initramfs");
        assert_eq!(load(&p).unwrap().public_key(), k.public_key());
        assert!(!world_or_group_readable(&p).unwrap());
        let public = std::fs::read_to_string(public_path(&p)).unwrap();
        assert!(public.starts_with("ssh-rsa "), "{public}");
        assert_eq!(k.public_key().key_data().rsa().unwrap().key_size(), 3072);
        let e = format!(
            "{:#}",
            generate_typed(&p, "c", false, KeyType::Rsa).unwrap_err()
        );
        assert!(e.contains("never overwritten"), "{e}");
    }

    struct FakeKeygen(std::io::ErrorKind, Option<i32>, &'static str);
    impl Runner for FakeKeygen {
        fn run(
            &self,
            program: &Path,
            args: &[String],
            _: Option<&[u8]>,
        ) -> std::io::Result<crate::sys::Output> {
            assert_eq!(program, Path::new("ssh-keygen"));
            assert!(args.windows(2).any(|w| w == ["-b", "3072"]));
            if self.1.is_none() {
                return Err(std::io::Error::new(self.0, "no such file"));
            }
            Ok(crate::sys::Output {
                code: self.1,
                stdout: vec![],
                stderr: self.2.as_bytes().to_vec(),
            })
        }
    }

    #[test]
    fn rsa_keygen_failures_say_what_to_do() {
        let p = Path::new("/nonexistent/k");
        let e = rsa_by_ssh_keygen(&FakeKeygen(std::io::ErrorKind::NotFound, None, ""), p, "c");
        let e = format!("{:#}", e.unwrap_err());
        assert!(
            e.contains("install openssh-client") && e.contains("ed25519"),
            "{e}"
        );
        let fail = FakeKeygen(
            std::io::ErrorKind::Other,
            Some(1),
            "\nSaving key failed: denied\n",
        );
        let e = format!("{:#}", rsa_by_ssh_keygen(&fail, p, "c").unwrap_err());
        assert_eq!(
            e,
            "ssh-keygen could not make an RSA key at /nonexistent/k: Saving key failed: denied"
        );
        assert!(!e.contains('\n'));
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
