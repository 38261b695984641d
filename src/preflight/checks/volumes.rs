//! `volumes`: what the image will unlock (the config's `[[volume]]`s, the
//! kernel command line's `cryptdevice=`/`rd.luks.*`, the crypttab inside
//! the image) against the LUKS devices of this machine. A volume naming no
//! device here cannot be opened at boot; a passphrase volume of
//! /etc/crypttab the image leaves out is asked for on the console later,
//! where nobody is.

use super::{fail, pass, skip, warn, Ctx};
use crate::config::BackendKind;
use crate::preflight::report::Check;
use crate::preflight::system::LuksDevice;
use crate::text::clip;
use crate::unlock::crypttab;
use crate::unlock::volume::{self, DeviceSpec};

const ID: &str = "volumes";

/// One volume the image will try to open.
#[derive(Debug, Clone)]
pub struct ImageVolume {
    pub name: String,
    pub device: DeviceSpec,
    /// Where it is named: `portcullisd.toml`, `the kernel command line`, …
    pub origin: &'static str,
}

/// Every volume the image will unlock, without duplicate names: only the
/// sources the backend it picks at boot reads (daemon.rs, unlock/): askpass
/// answers cryptroot's crypttab; systemd the image's /etc/crypttab and
/// `rd.luks.*`; cryptsetup the `[[volume]]`s and the command line.
pub fn image_volumes(ctx: &Ctx<'_>) -> Vec<ImageVolume> {
    let mut out: Vec<ImageVolume> = Vec::new();
    let mut add = |v: ImageVolume| {
        if !out.iter().any(|o| o.name == v.name) {
            out.push(v);
        }
    };
    let kind = super::backend::effective(ctx);
    let (config, cmdline, crypttab) = match kind {
        BackendKind::Askpass => (
            false,
            false,
            Some(("cryptroot/crypttab", "the image's cryptroot/crypttab")),
        ),
        BackendKind::Systemd => (
            false,
            true,
            Some(("etc/crypttab", "the image's /etc/crypttab")),
        ),
        _ => (
            true,
            ctx.settings
                .as_ref()
                .map_or(true, |s| s.volumes_from_cmdline),
            None,
        ),
    };
    if config {
        if let Ok(s) = &ctx.settings {
            for v in &s.volumes {
                add(ImageVolume {
                    name: v.name.clone(),
                    device: v.device.clone(),
                    origin: "portcullisd.toml",
                });
            }
        }
    }
    if let Some((path, origin)) = crypttab {
        if let Some(text) = ctx.image.file(path) {
            for e in crypttab::parse(&String::from_utf8_lossy(text)) {
                if let Ok(device) = DeviceSpec::parse(&e.source) {
                    add(ImageVolume {
                        name: e.name,
                        device,
                        origin,
                    });
                }
            }
        }
    }
    if cmdline {
        for v in volume::from_cmdline(&ctx.cmdline).0 {
            add(ImageVolume {
                name: v.name,
                device: v.device,
                origin: "the kernel command line",
            });
        }
    }
    out
}

/// The LUKS device of this machine a spec names.
pub fn find<'d>(
    ctx: &Ctx<'_>,
    devs: &'d [LuksDevice],
    spec: &DeviceSpec,
) -> Option<&'d LuksDevice> {
    let direct = devs.iter().find(|d| match spec {
        DeviceSpec::Uuid(u) => d.uuid == *u,
        DeviceSpec::Label(l) => d.version == 2 && d.label == *l,
        _ => false,
    });
    direct.or_else(|| {
        let path = ctx.system.resolve(spec)?;
        devs.iter().find(|d| d.path == path)
    })
}

pub fn volumes(ctx: &Ctx<'_>) -> Check {
    let vols = image_volumes(ctx);
    if vols.is_empty() {
        return fail(
            ID,
            "the image names no volume to unlock",
            format!(
                "add a [[volume]] to portcullisd.toml, the volume to /etc/crypttab, or cryptdevice=/rd.luks.uuid= to the kernel command line; then run {}",
                ctx.rebuild()
            ),
        );
    }
    let devs = ctx.system.luks_devices();
    if devs.is_empty() {
        return warn(
            ID,
            format!(
                "no LUKS device readable on this machine: cannot tell whether {} is one",
                names(&vols)
            ),
            "run preflight as root on the server the image boots",
        );
    }
    let mut found = Vec::new();
    for v in &vols {
        match find(ctx, &devs, &v.device) {
            Some(d) => found.push(d.path.clone()),
            None => {
                return fail(
                    ID,
                    format!(
                        "volume {} ({}, from {}) is not a LUKS device of this machine",
                        clip(&v.name),
                        crate::text::clip_plain(&v.device.to_string()),
                        v.origin
                    ),
                    format!(
                        "correct its device (UUID= from `blkid -t TYPE=crypto_LUKS`) in {}, then run {}",
                        v.origin.trim_start_matches("the image's "),
                        ctx.rebuild()
                    ),
                )
            }
        }
    }
    // Passphrase volumes of the running system's crypttab the image leaves
    // out: asked on the console after the switch to the real root.
    let left_out: Vec<String> = ctx
        .system
        .crypttab()
        .map(|t| crypttab::parse(&t))
        .unwrap_or_default()
        .into_iter()
        .filter(|e| matches!(e.key.as_str(), "none" | "-" | ""))
        .filter(|e| !e.options.split(',').any(|o| o == "noauto"))
        .filter(|e| !vols.iter().any(|v| v.name == e.name))
        .filter(|e| {
            DeviceSpec::parse(&e.source)
                .ok()
                .and_then(|s| find(ctx, &devs, &s))
                .is_some_and(|d| !found.contains(&d.path))
        })
        .map(|e| e.name)
        .collect();
    if let Some(first) = left_out.first() {
        return warn(
            ID,
            format!(
                "/etc/crypttab volume {} asks for a passphrase but the image does not unlock it: the boot waits at the console for it",
                clip(first)
            ),
            format!(
                "add the initramfs option to its /etc/crypttab line (Debian) or a [[volume]] for it in portcullisd.toml, then run {}",
                ctx.rebuild()
            ),
        );
    }
    pass(
        ID,
        vols.iter()
            .zip(&found)
            .map(|(v, p)| format!("{} ({})", v.name, p.display()))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

fn names(vols: &[ImageVolume]) -> String {
    vols.iter()
        .map(|v| v.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `skip` with this id (for checks that have no volume to look at).
pub fn none(id: &str) -> Check {
    skip(id, "no LUKS device readable on this machine")
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::field_reassign_with_default
)]
pub mod tests {
    use super::super::fixture::{check, exe, file};
    use crate::preflight::image::Image;
    use crate::preflight::report::Status;
    use crate::preflight::system::fake::FakeSystem;
    use crate::preflight::system::{Keyslot, LuksDevice};

    pub fn dev(path: &str, uuid: &str, memory_kib: u64) -> LuksDevice {
        LuksDevice {
            path: path.into(),
            version: 2,
            uuid: uuid.into(),
            label: String::new(),
            keyslots: vec![Keyslot {
                id: 0,
                kdf: "argon2id".into(),
                memory_kib: Some(memory_kib),
            }],
        }
    }

    fn debian_image() -> Image {
        let mut img = Image::default();
        exe(&mut img, crate::unlock::askpass::ASKPASS, b"askpass");
        file(
            &mut img,
            "cryptroot/crypttab",
            b"vda2_crypt UUID=aaaa-1 none luks,discard\n",
        );
        img
    }

    #[test]
    fn passes_when_every_volume_is_here() {
        let mut sys = FakeSystem::default();
        sys.luks = vec![dev("/dev/vda2", "aaaa-1", 65536)];
        let c = check("volumes", &debian_image(), &sys, "");
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert_eq!(c.summary, "vda2_crypt (/dev/vda2)");
    }

    #[test]
    fn fails_on_a_volume_that_is_not_here_or_none_at_all() {
        let mut sys = FakeSystem::default();
        sys.luks = vec![dev("/dev/vda2", "bbbb-2", 65536)];
        let c = check("volumes", &debian_image(), &sys, "");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c
            .summary
            .contains("\"vda2_crypt\" (UUID=aaaa-1, from the image's cryptroot/crypttab)"));
        let c = check("volumes", &Image::default(), &sys, "");
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("no volume"));
        // The command line counts (volumes-from-cmdline is on by default).
        let c = check(
            "volumes",
            &Image::default(),
            &sys,
            "cryptdevice=UUID=bbbb-2:root",
        );
        assert_eq!(c.status, Status::Pass, "{c:?}");
    }

    #[test]
    fn warns_on_a_crypttab_volume_left_out() {
        let mut sys = FakeSystem::default();
        sys.luks = vec![
            dev("/dev/vda2", "aaaa-1", 65536),
            dev("/dev/vdb", "cccc-3", 65536),
        ];
        sys.crypttab = Some(
            "vda2_crypt UUID=aaaa-1 none luks\ndata UUID=cccc-3 none luks\nkeyed UUID=cccc-3 /etc/k luks\n"
                .into(),
        );
        let c = check("volumes", &debian_image(), &sys, "");
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(c.summary.contains("\"data\""));
        sys.crypttab = Some("data UUID=cccc-3 none luks,noauto\n".into());
        assert_eq!(
            check("volumes", &debian_image(), &sys, "").status,
            Status::Pass
        );
    }

    #[test]
    fn counts_only_what_the_effective_backend_reads() {
        let mut sys = FakeSystem::default();
        sys.luks = vec![dev("/dev/vda2", "aaaa-1", 65536)];
        // initramfs-tools with an empty cryptroot/crypttab: askpass asks
        // for nothing, whatever portcullisd.toml lists.
        let mut img = Image::default();
        exe(&mut img, crate::unlock::askpass::ASKPASS, b"askpass");
        file(&mut img, "cryptroot/crypttab", b"");
        file(
            &mut img,
            "etc/portcullis/portcullisd.toml",
            b"[[volume]]\nname = \"root\"\ndevice = \"UUID=aaaa-1\"\n",
        );
        let c = check("volumes", &img, &sys, "cryptdevice=UUID=aaaa-1:root");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.summary.contains("no volume"), "{c:?}");
        // mkinitcpio-style (no askpass, no systemd): cryptsetup never
        // reads /etc/crypttab.
        let mut img = Image::default();
        file(&mut img, "init_functions", b"");
        file(&mut img, "etc/crypttab", b"root UUID=aaaa-1 none luks\n");
        let c = check("volumes", &img, &sys, "");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        let c = check("volumes", &img, &sys, "cryptdevice=UUID=aaaa-1:root");
        assert_eq!(c.status, Status::Pass, "{c:?}");
    }

    #[test]
    fn warns_when_no_device_is_readable() {
        let c = check("volumes", &debian_image(), &FakeSystem::default(), "");
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.unwrap().contains("root"));
    }
}
