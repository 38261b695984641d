//! `authorized-keys` and `host-key`: the keys the listener will use at
//! boot, read from the image (not from /etc/portcullis: the image is what
//! boots), with their fingerprints for the report. A key file changed on
//! the system but not rebuilt into the image is a warning: the admin's new
//! key does not work yet, or clients will see a new host key after the next
//! rebuild.

use super::{fail, pass, warn, Ctx};
use crate::authkeys::{fingerprint, AuthorizedKeys};
use crate::preflight::report::{AuthorizedKey, Check};
use crate::text::{clip, clip_message};
use russh::keys::PrivateKey;
use std::path::{Path, PathBuf};

/// The key files the config names, or the defaults when it is unusable
/// (the config check reports that; these still say what the image holds).
fn paths(ctx: &Ctx<'_>) -> (Vec<PathBuf>, PathBuf) {
    match &ctx.settings {
        Ok(s) => (s.host_keys.clone(), s.authorized_keys.clone()),
        Err(_) => (
            vec![PathBuf::from("/etc/portcullis/host_key")],
            PathBuf::from("/etc/portcullis/authorized_keys"),
        ),
    }
}

fn changed(ctx: &Ctx<'_>, path: &Path, in_image: &[u8]) -> bool {
    ctx.system
        .read_file(path)
        .is_some_and(|here| here != in_image)
}

pub fn authorized_keys(ctx: &Ctx<'_>) -> (Check, Vec<AuthorizedKey>) {
    const ID: &str = "authorized-keys";
    let (_, path) = paths(ctx);
    let shown = path.display();
    let Some(bytes) = ctx.file(&path) else {
        return (
            fail(
                ID,
                format!("no {shown} in the image: nobody can log in to unlock"),
                format!(
                    "put the admins' public keys in {shown}, then run {}",
                    ctx.rebuild()
                ),
            ),
            Vec::new(),
        );
    };
    let text = String::from_utf8_lossy(bytes);
    let parsed = match AuthorizedKeys::parse(&text) {
        Ok(k) => k,
        Err(e) => {
            return (
                fail(
                    ID,
                    format!("{shown} in the image: {e}"),
                    format!("correct {shown}, then run {}", ctx.rebuild()),
                ),
                Vec::new(),
            )
        }
    };
    let keys: Vec<AuthorizedKey> = parsed
        .keys
        .iter()
        .map(|k| AuthorizedKey {
            fingerprint: fingerprint(&k.key),
            algorithm: k.key.algorithm().as_str().to_string(),
            comment: clip_message(&k.comment),
        })
        .collect();
    let check = if keys.is_empty() {
        fail(
            ID,
            format!("{shown} in the image lists no key: nobody can log in to unlock"),
            format!(
                "add an admin's public key (one ssh-ed25519 … line) to {shown}, then run {}",
                ctx.rebuild()
            ),
        )
    } else if changed(ctx, &path, bytes) {
        warn(
            ID,
            format!(
                "{shown} changed since the image was built: the image still has the old {} key(s)",
                keys.len()
            ),
            format!("run {}", ctx.rebuild()),
        )
    } else {
        pass(ID, format!("{} key(s) in {shown}", keys.len()))
    };
    (check, keys)
}

pub fn host_key(ctx: &Ctx<'_>) -> (Check, Vec<String>) {
    const ID: &str = "host-key";
    let (host_keys, _) = paths(ctx);
    let mut fps = Vec::new();
    let mut stale = Vec::new();
    for path in &host_keys {
        let shown = path.display();
        let Some(bytes) = ctx.file(path) else {
            return (
                fail(
                    ID,
                    format!("no host key {shown} in the image: the listener will not start"),
                    format!(
                        "create it once with `portcullisd keygen {shown}`, then run {}",
                        ctx.rebuild()
                    ),
                ),
                fps,
            );
        };
        match parse(bytes) {
            Ok(key) => fps.push(fingerprint(key.public_key())),
            Err(why) => {
                return (
                    fail(
                        ID,
                        format!("host key {shown} in the image {why}"),
                        format!(
                            "replace it (`portcullisd keygen --force {shown}`; clients must pin the new key), then run {}",
                            ctx.rebuild()
                        ),
                    ),
                    fps,
                )
            }
        }
        if changed(ctx, path, bytes) {
            stale.push(shown.to_string());
        }
    }
    let check = if let Some(first) = stale.first() {
        warn(
            ID,
            format!(
                "{} differs from the key in the image: clients see the image's key until the next rebuild, then the new one",
                clip(first)
            ),
            format!(
                "run {} now and pin the new key on the clients (docs/rotation.md)",
                ctx.rebuild()
            ),
        )
    } else {
        pass(ID, fps.join(", "))
    };
    (check, fps)
}

/// An OpenSSH private key the listener can serve, or why not (the words
/// after "host key PATH in the image").
fn parse(bytes: &[u8]) -> Result<PrivateKey, &'static str> {
    if bytes.starts_with(b"-----BEGIN ") && !bytes.starts_with(b"-----BEGIN OPENSSH") {
        return Err("is in PEM format, which the listener does not read");
    }
    let key = PrivateKey::from_openssh(bytes).map_err(|_| "is not an OpenSSH private key")?;
    if key.is_encrypted() {
        return Err("is encrypted; the listener needs it unencrypted");
    }
    Ok(key)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::field_reassign_with_default
)]
mod tests {
    use super::super::fixture::{check, file};
    use crate::preflight::image::Image;
    use crate::preflight::report::Status;
    use crate::preflight::system::fake::FakeSystem;

    const AK: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGzmd7Q2xTUCfkNPMnhbU2GXHfpjYs/jBdqoNlYzR+1j admin@ws\n";

    fn host_key() -> (Vec<u8>, String) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("host_key");
        let k = crate::hostkey::generate(&p, "t").unwrap();
        (
            std::fs::read(&p).unwrap(),
            crate::authkeys::fingerprint(k.public_key()),
        )
    }

    fn run(id: &str, img: &Image, sys: &FakeSystem) -> (crate::preflight::report::ImageReport,) {
        let target = super::super::Target {
            image: img,
            name: "i".into(),
            kernel: None,
            cmdline: None,
        };
        (super::super::run(
            &target,
            sys,
            &super::super::Selection::parse(id).unwrap(),
        ),)
    }

    #[test]
    fn authorized_keys_pass_with_fingerprints() {
        let mut img = Image::default();
        file(&mut img, "etc/portcullis/authorized_keys", AK.as_bytes());
        let (r,) = run("authorized-keys", &img, &FakeSystem::default());
        assert_eq!(r.checks[0].status, Status::Pass, "{r:?}");
        assert_eq!(r.authorized_keys.len(), 1);
        assert_eq!(r.authorized_keys[0].algorithm, "ssh-ed25519");
        assert_eq!(r.authorized_keys[0].comment, "admin@ws");
        assert!(r.authorized_keys[0].fingerprint.starts_with("SHA256:"));
    }

    #[test]
    fn authorized_keys_fail_when_missing_empty_or_bad() {
        let sys = FakeSystem::default();
        let c = check("authorized-keys", &Image::default(), &sys, "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("nobody can log in"), "{c:?}");
        let mut img = Image::default();
        file(&mut img, "etc/portcullis/authorized_keys", b"# none\n");
        let c = check("authorized-keys", &img, &sys, "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("lists no key"), "{c:?}");
        let mut img = Image::default();
        file(
            &mut img,
            "etc/portcullis/authorized_keys",
            b"command=\"x\" ssh-ed25519 AAAA\n",
        );
        let c = check("authorized-keys", &img, &sys, "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("line 1"), "{c:?}");
    }

    #[test]
    fn authorized_keys_warn_when_not_rebuilt() {
        let mut img = Image::default();
        file(&mut img, "etc/portcullis/authorized_keys", AK.as_bytes());
        let mut sys = FakeSystem::default();
        sys.files.insert(
            "/etc/portcullis/authorized_keys".into(),
            format!("{AK}{AK}").into_bytes(),
        );
        let c = check("authorized-keys", &img, &sys, "");
        assert_eq!(c.status, Status::Warn, "{c:?}");
    }

    #[test]
    fn host_key_passes_and_reports_its_fingerprint() {
        let (key, fp) = host_key();
        let mut img = Image::default();
        file(&mut img, "etc/portcullis/host_key", &key);
        let mut sys = FakeSystem::default();
        sys.files.insert("/etc/portcullis/host_key".into(), key);
        let (r,) = run("host-key", &img, &sys);
        assert_eq!(r.checks[0].status, Status::Pass, "{r:?}");
        assert_eq!(r.host_keys, vec![fp.clone()]);
        assert_eq!(r.checks[0].summary, fp);
    }

    #[test]
    fn host_key_fails_when_missing_or_unreadable_and_warns_when_changed() {
        let sys = FakeSystem::default();
        let c = check("host-key", &Image::default(), &sys, "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("portcullisd keygen"));
        let mut img = Image::default();
        file(
            &mut img,
            "etc/portcullis/host_key",
            b"-----BEGIN RSA PRIVATE KEY-----\n",
        );
        let c = check("host-key", &img, &sys, "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("PEM"), "{c:?}");
        let (key, _) = host_key();
        let (other, _) = host_key();
        let mut img = Image::default();
        file(&mut img, "etc/portcullis/host_key", &key);
        let mut sys = FakeSystem::default();
        sys.files.insert("/etc/portcullis/host_key".into(), other);
        let c = check("host-key", &img, &sys, "");
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.fix.unwrap().contains("pin the new key"));
    }

    #[test]
    fn the_config_names_the_key_files() {
        let (key, _) = host_key();
        let mut img = Image::default();
        file(
            &mut img,
            "etc/portcullis/portcullisd.toml",
            b"host-key = \"/etc/k/ed\"\nauthorized-keys = \"/etc/k/ak\"\n",
        );
        file(&mut img, "etc/k/ed", &key);
        file(&mut img, "etc/k/ak", AK.as_bytes());
        let sys = FakeSystem::default();
        assert_eq!(check("host-key", &img, &sys, "").status, Status::Pass);
        assert_eq!(
            check("authorized-keys", &img, &sys, "").status,
            Status::Pass
        );
    }
}
