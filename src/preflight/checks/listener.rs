//! `listener`: portcullisd is in the image, executable, and the version
//! installed on this system (an image built before an upgrade still runs
//! the old listener).

use super::{fail, pass, warn, Ctx};
use crate::preflight::image::Kind;
use crate::preflight::report::Check;
use crate::text::clip;

const ID: &str = "listener";

/// Where the hooks put the listener (mkinitcpio: /usr/bin).
const PATHS: [&str; 4] = [
    "usr/sbin/portcullisd",
    "usr/bin/portcullisd",
    "sbin/portcullisd",
    "bin/portcullisd",
];

pub fn listener(ctx: &Ctx<'_>) -> Check {
    let Some((path, entry)) = PATHS.iter().find_map(|p| Some((*p, ctx.image.resolve(p)?))) else {
        return fail(
            ID,
            "no portcullisd in the image: nobody will listen for the passphrase",
            format!(
                "enable remote unlock (put portcullisd.toml in /etc/portcullis, see docs/install/), then run {}",
                ctx.rebuild()
            ),
        );
    };
    if entry.kind != Kind::File {
        return fail(
            ID,
            format!("/{path} in the image is not a file"),
            format!("reinstall portcullis-initramfs, then run {}", ctx.rebuild()),
        );
    }
    if entry.mode & 0o111 == 0 {
        return fail(
            ID,
            format!(
                "/{path} in the image is not executable (mode {:o})",
                entry.mode
            ),
            format!(
                "chmod 755 the installed portcullisd, then run {}",
                ctx.rebuild()
            ),
        );
    }
    let ours = env!("CARGO_PKG_VERSION");
    match version(&entry.data) {
        Some(v) if v == ours => pass(ID, format!("portcullisd {v} at /{path}")),
        Some(v) => warn(
            ID,
            format!(
                "portcullisd {} in the image, {ours} installed: the image was built before an upgrade",
                clip(&v)
            ),
            format!("run {}", ctx.rebuild()),
        ),
        None => warn(
            ID,
            format!("/{path} in the image carries no portcullisd version string"),
            format!(
                "reinstall portcullis-initramfs (the binary may be another program), then run {}",
                ctx.rebuild()
            ),
        ),
    }
}

/// The version in the binary's `portcullisd X.Y.Z\n` (its `--version` text).
fn version(bytes: &[u8]) -> Option<String> {
    const TAG: &[u8] = b"portcullisd ";
    let mut rest = bytes;
    while let Some(at) = rest.windows(TAG.len()).position(|w| w == TAG) {
        let after = rest.get(at + TAG.len()..)?;
        let len = after.iter().take(64).position(|&b| b == b'\n').unwrap_or(0);
        let cand = after.get(..len)?;
        let ok = !cand.is_empty()
            && cand.first().is_some_and(u8::is_ascii_digit)
            && cand
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'));
        if ok {
            return Some(String::from_utf8_lossy(cand).into_owned());
        }
        rest = after;
    }
    None
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::field_reassign_with_default
)]
mod tests {
    use super::super::fixture::{check, exe, file, link};
    use crate::preflight::image::Image;
    use crate::preflight::report::Status;
    use crate::preflight::system::fake::FakeSystem;

    fn bin(v: &str) -> Vec<u8> {
        format!("\x7fELF...portcullisd listener...portcullisd {v}\n...").into_bytes()
    }

    #[test]
    fn passes_with_this_version() {
        let mut img = Image::default();
        link(&mut img, "sbin", "usr/sbin");
        exe(
            &mut img,
            "usr/sbin/portcullisd",
            &bin(env!("CARGO_PKG_VERSION")),
        );
        let c = check("listener", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.summary.contains("/usr/sbin/portcullisd"));
    }

    #[test]
    fn fails_when_absent_or_not_executable() {
        let img = Image::default();
        let c = check("listener", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("docs/install"));
        let mut img = Image::default();
        file(&mut img, "usr/bin/portcullisd", &bin("0.1.0"));
        let c = check("listener", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("not executable"), "{c:?}");
    }

    #[test]
    fn warns_on_another_version_or_none() {
        let mut img = Image::default();
        exe(&mut img, "usr/sbin/portcullisd", &bin("0.0.1"));
        let c = check("listener", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Warn);
        assert!(c.summary.contains("\"0.0.1\" in the image"), "{c:?}");
        let mut img = Image::default();
        exe(
            &mut img,
            "usr/sbin/portcullisd",
            b"#!/bin/sh\necho portcullisd \n",
        );
        let c = check("listener", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Warn);
        assert!(c.summary.contains("no portcullisd version"), "{c:?}");
    }
}
