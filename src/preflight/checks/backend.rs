//! `dm-crypt` and `backend`: what opening a LUKS volume needs in the image.
//! The kernel's dm-crypt (a module for the image's kernel, or built in),
//! and what the configured unlock backend drives: cryptsetup itself (with
//! libgcc_s, which argon2's threads need), Debian's askpass and cryptroot,
//! or systemd-cryptsetup and its generator.

use super::kmod::{self, Found};
use super::{fail, pass, warn, Ctx, Generator};
use crate::config::BackendKind;
use crate::preflight::image::Kind;
use crate::preflight::report::Check;

/// The backend's name as the config spells it.
pub fn name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Auto => "auto",
        BackendKind::Cryptsetup => "cryptsetup",
        BackendKind::Systemd => "systemd",
        BackendKind::Askpass => "askpass",
    }
}

pub fn dm_crypt(ctx: &Ctx<'_>) -> Check {
    const ID: &str = "dm-crypt";
    let fix = match ctx.generator {
        Generator::InitramfsTools => {
            "install cryptsetup-initramfs (or add dm_crypt to /etc/initramfs-tools/modules)"
        }
        Generator::Dracut => {
            "add the crypt module (add_dracutmodules+=\" crypt \" in /etc/dracut.conf.d/)"
        }
        Generator::Mkinitcpio => "reinstall the portcullis hooks (they add dm-crypt)",
        Generator::Unknown => "add the dm_crypt module to the image",
    };
    let (Some(crypt), Some(dm)) = (kmod::find(ctx, "dm_crypt"), kmod::find(ctx, "dm_mod")) else {
        return warn(
            ID,
            "the image's kernel release is not known: cannot look for dm-crypt",
            "name it with --kernel REL",
        );
    };
    let kernel = ctx.kernel.as_deref().unwrap_or_default();
    match (crypt, dm) {
        (Found::Missing, _) | (_, Found::Missing) => fail(
            ID,
            format!(
                "{} is neither in the image nor built into {kernel}: no volume can be opened",
                if crypt == Found::Missing {
                    "dm-crypt"
                } else {
                    "dm-mod"
                }
            ),
            format!("{fix}, then run {}", ctx.rebuild()),
        ),
        (c, _) => pass(
            ID,
            if c == Found::BuiltIn {
                format!("dm-crypt is built into {kernel}")
            } else {
                format!("dm-crypt module for {kernel} in the image")
            },
        ),
    }
}

/// The backend the listener will pick at boot in this image.
pub(super) fn effective(ctx: &Ctx<'_>) -> BackendKind {
    let configured = ctx
        .settings
        .as_ref()
        .map(|s| s.backend)
        .unwrap_or(BackendKind::Auto);
    match configured {
        BackendKind::Auto if ctx.systemd => BackendKind::Systemd,
        BackendKind::Auto if ctx.image.file(crate::unlock::askpass::ASKPASS).is_some() => {
            BackendKind::Askpass
        }
        BackendKind::Auto => BackendKind::Cryptsetup,
        other => other,
    }
}

fn executable(ctx: &Ctx<'_>, path: &str) -> bool {
    ctx.image
        .resolve(path)
        .is_some_and(|e| e.kind == Kind::File && e.mode & 0o111 != 0)
}

pub fn backend(ctx: &Ctx<'_>) -> Check {
    const ID: &str = "backend";
    let kind = effective(ctx);
    let auto = ctx
        .settings
        .as_ref()
        .is_ok_and(|s| s.backend == BackendKind::Auto);
    let label = if auto {
        format!("{} (auto)", name(kind))
    } else {
        name(kind).to_string()
    };
    let missing: Vec<&str> = match kind {
        // systemd 256 moved systemd-cryptsetup to /usr/bin; `lib` may be
        // a directory of its own on images that are not merged-/usr.
        BackendKind::Systemd => [
            &[
                "usr/lib/systemd/systemd-cryptsetup",
                "usr/bin/systemd-cryptsetup",
                "lib/systemd/systemd-cryptsetup",
            ][..],
            &[
                "usr/lib/systemd/system-generators/systemd-cryptsetup-generator",
                "lib/systemd/system-generators/systemd-cryptsetup-generator",
            ][..],
        ]
        .into_iter()
        .filter(|alts| !alts.iter().any(|p| executable(ctx, p)))
        .filter_map(|alts| alts.first().copied())
        .collect(),
        BackendKind::Askpass => [
            crate::unlock::askpass::ASKPASS.trim_start_matches('/'),
            "scripts/local-top/cryptroot",
        ]
        .into_iter()
        .filter(|p| !executable(ctx, p))
        .collect(),
        BackendKind::Cryptsetup | BackendKind::Auto => Vec::new(),
    };
    let fix = match kind {
        BackendKind::Systemd => "add systemd's cryptsetup support (dracut: the crypt module; mkinitcpio: the sd-encrypt hook)",
        BackendKind::Askpass => "install cryptsetup-initramfs",
        _ => "install cryptsetup",
    };
    if let Some(first) = missing.first() {
        return fail(
            ID,
            format!("backend {label} needs /{first}, which is not in the image"),
            format!("{fix}, then run {}", ctx.rebuild()),
        );
    }
    // An empty crypttab is as good as none: cryptroot asks for nothing.
    let listed = |t: &[u8]| !crate::unlock::crypttab::parse(&String::from_utf8_lossy(t)).is_empty();
    if kind == BackendKind::Askpass && !ctx.image.file("cryptroot/crypttab").is_some_and(listed) {
        return fail(
            ID,
            "backend askpass: no volume in the image's cryptroot/crypttab: cryptroot will ask for nothing",
            format!(
                "list the root volume in /etc/crypttab (cryptsetup-initramfs reads it), then run {}",
                ctx.rebuild()
            ),
        );
    }
    if kind == BackendKind::Cryptsetup {
        let cs = ctx
            .settings
            .as_ref()
            .map(|s| s.cryptsetup.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/sbin/cryptsetup".into());
        if !executable(ctx, &cs) {
            return fail(
                ID,
                format!("backend {label} runs {cs}, which is not in the image"),
                format!(
                    "{fix} (or set cryptsetup = \"…\" in the config), then run {}",
                    ctx.rebuild()
                ),
            );
        }
        // cryptsetup dlopens libgcc_s for pthread_exit: without it argon2
        // with 2+ threads fails exactly like a wrong passphrase.
        let has_libgcc = ctx
            .image
            .paths()
            .any(|p| p.rsplit('/').next() == Some("libgcc_s.so.1"));
        let static_bin = ctx
            .image
            .file(&cs)
            .is_some_and(|b| !contains(b, b"ld-linux"));
        if !has_libgcc && !static_bin {
            return warn(
                ID,
                format!(
                    "backend {label}: no libgcc_s.so.1 in the image: argon2 keyslots may fail like a wrong passphrase"
                ),
                format!("add libgcc_s.so.1 to the image, then run {}", ctx.rebuild()),
            );
        }
        return pass(ID, format!("backend {label}: {cs} in the image"));
    }
    pass(
        ID,
        format!("backend {label}: what it needs is in the image"),
    )
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
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

    #[test]
    fn dm_crypt_in_the_image_or_built_in() {
        let mut img = Image::default();
        file(&mut img, "lib/modules/6.1.0-test/kernel/dm-crypt.ko", b"");
        file(&mut img, "lib/modules/6.1.0-test/kernel/dm-mod.ko", b"");
        let sys = FakeSystem::default();
        assert_eq!(check("dm-crypt", &img, &sys, "").status, Status::Pass);
        let mut sys = FakeSystem::default();
        sys.builtin.insert(
            "6.1.0-test".into(),
            "kernel/drivers/md/dm-mod.ko\nkernel/drivers/md/dm-crypt.ko\n".into(),
        );
        let c = check("dm-crypt", &Image::default(), &sys, "");
        assert_eq!(c.status, Status::Pass);
        assert!(c.summary.contains("built into"));
    }

    #[test]
    fn dm_crypt_missing_fails() {
        let mut img = Image::default();
        file(&mut img, "scripts/functions", b"");
        file(&mut img, "lib/modules/6.1.0-test/kernel/dm-mod.ko", b"");
        let c = check("dm-crypt", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.fix.unwrap().starts_with("install cryptsetup-initramfs"));
    }

    #[test]
    fn askpass_backend_needs_cryptroot() {
        let mut img = Image::default();
        exe(&mut img, "lib/cryptsetup/askpass", b"");
        exe(&mut img, "scripts/local-top/cryptroot", b"");
        file(&mut img, "cryptroot/crypttab", b"root UUID=1 none luks\n");
        let c = check("backend", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.summary.starts_with("backend askpass"));
        // Only comments and blank lines: no volume to ask for.
        file(&mut img, "cryptroot/crypttab", b"# none\n\n");
        let c = check("backend", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.contains("ask for nothing"), "{c:?}");
        let mut img = Image::default();
        exe(&mut img, "lib/cryptsetup/askpass", b"");
        file(&mut img, "cryptroot/crypttab", b"root UUID=1 none luks\n");
        let c = check("backend", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("scripts/local-top/cryptroot"), "{c:?}");
    }

    #[test]
    fn systemd_backend_needs_systemd_cryptsetup() {
        let mut img = Image::default();
        link(&mut img, "lib", "usr/lib");
        exe(&mut img, "usr/lib/systemd/systemd", b"");
        let c = check("backend", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.starts_with("backend systemd needs"), "{c:?}");
        exe(&mut img, "usr/bin/systemd-cryptsetup", b"");
        exe(
            &mut img,
            "usr/lib/systemd/system-generators/systemd-cryptsetup-generator",
            b"",
        );
        assert_eq!(
            check("backend", &img, &FakeSystem::default(), "").status,
            Status::Pass
        );
    }

    #[test]
    fn cryptsetup_backend_needs_the_binary_and_libgcc() {
        let conf = b"backend = \"cryptsetup\"\n";
        let mut img = Image::default();
        file(&mut img, "etc/portcullis/portcullisd.toml", conf);
        let c = check("backend", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("/sbin/cryptsetup"), "{c:?}");
        exe(
            &mut img,
            "sbin/cryptsetup",
            b"ELF /lib64/ld-linux-x86-64.so.2",
        );
        let c = check("backend", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Warn, "{c:?}");
        file(&mut img, "usr/lib/x86_64-linux-gnu/libgcc_s.so.1", b"");
        let c = check("backend", &img, &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Pass, "{c:?}");
    }
}
