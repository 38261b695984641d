//! The checklist for one image: each check reads the image (and, through
//! [`System`], the machine it will boot) and says pass, warn, fail or skip,
//! with a one-line fix on every warn and fail. One file per concern; this
//! file holds what they share (the parsed config, the kernel release, the
//! effective command line, which generator built the image) and the order
//! they run in.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod argon2;
mod backend;
mod config;
mod conflicts;
mod keys;
mod kmod;
mod listener;
mod network;
mod volumes;

use super::image::Image;
use super::report::{Check, ImageReport, Status};
use super::system::System;
use crate::config::Settings;
use crate::text::clip;
use std::collections::BTreeSet;

/// Where the image keeps the listener's config (every hook puts it there).
pub const CONFIG: &str = "/etc/portcullis/portcullisd.toml";

/// Every check id, in the order they run, with the group `--only` also
/// accepts for it (the build-time hooks run `network,conflicts`).
pub const CHECKS: &[(&str, &str)] = &[
    ("listener", "listener"),
    ("config", "config"),
    ("authorized-keys", "keys"),
    ("host-key", "keys"),
    ("volumes", "luks"),
    ("dm-crypt", "luks"),
    ("backend", "luks"),
    ("argon2-memory", "luks"),
    ("conflicting-hooks", "conflicts"),
    ("network-config", "network"),
    ("nic-driver", "network"),
    ("static-ip", "network"),
];

/// Which checks to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection(BTreeSet<&'static str>);

impl Default for Selection {
    fn default() -> Self {
        Selection(CHECKS.iter().map(|(id, _)| *id).collect())
    }
}

impl Selection {
    /// A comma list of check ids and groups (`network,conflicts`).
    pub fn parse(list: &str) -> Result<Selection, String> {
        let mut out = BTreeSet::new();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let hits: Vec<&'static str> = CHECKS
                .iter()
                .filter(|(id, group)| *id == word || *group == word)
                .map(|(id, _)| *id)
                .collect();
            if hits.is_empty() {
                let mut names: BTreeSet<&str> = CHECKS.iter().map(|(_, g)| *g).collect();
                names.extend(CHECKS.iter().map(|(id, _)| *id));
                return Err(format!(
                    "--only: unknown check {}; choose from {}",
                    clip(word),
                    names.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            out.extend(hits);
        }
        if out.is_empty() {
            return Err("--only: name at least one check (e.g. network,conflicts)".into());
        }
        Ok(Selection(out))
    }

    pub fn has(&self, id: &str) -> bool {
        self.0.contains(id)
    }
}

/// The generator that built an image: it decides how to rebuild it and
/// where its settings live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generator {
    InitramfsTools,
    Dracut,
    Mkinitcpio,
    Unknown,
}

/// One image to check.
pub struct Target<'a> {
    pub image: &'a Image,
    /// The image file, or the staging directory.
    pub name: String,
    pub kernel: Option<String>,
    /// The command line its boot entry passes.
    pub cmdline: Option<String>,
}

/// What every check may look at.
pub struct Ctx<'a> {
    pub image: &'a Image,
    pub system: &'a dyn System,
    /// The kernel release, given or (one `lib/modules/*` in the image) found.
    pub kernel: Option<String>,
    /// The boot entry's command line plus dracut's `etc/cmdline.d` in the image.
    pub cmdline: String,
    /// The image's config, or why it is unusable.
    pub settings: Result<Settings, String>,
    pub generator: Generator,
    /// A systemd initrd (systemd is its init).
    pub systemd: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(target: &Target<'a>, system: &'a dyn System) -> Ctx<'a> {
        let image = target.image;
        let kernel = target.kernel.clone().or_else(|| {
            let k = kmod::kernels(image);
            match k.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            }
        });
        let mut cmdline = target.cmdline.clone().unwrap_or_default();
        // dracut reads these as part of the command line (rd.neednet=1 from
        // our module lives there).
        for (path, e) in image.entries() {
            if path.starts_with("etc/cmdline.d/") && path.ends_with(".conf") {
                cmdline.push(' ');
                cmdline.push_str(&String::from_utf8_lossy(&e.data));
            }
        }
        let settings = match image.file(CONFIG) {
            None => Err(format!("no {CONFIG} in the image")),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Err(_) => Err(format!("{CONFIG} in the image is not UTF-8")),
                Ok(text) => Settings::parse(text, std::path::Path::new(CONFIG))
                    .map_err(|e| format!("{e:#}")),
            },
        };
        Ctx {
            image,
            system,
            kernel,
            cmdline: cmdline.split_whitespace().collect::<Vec<_>>().join(" "),
            settings,
            generator: generator(image),
            systemd: image.file("usr/lib/systemd/systemd").is_some()
                || image.file("lib/systemd/systemd").is_some(),
        }
    }

    /// The words of the command line.
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.cmdline.split_whitespace().map(|w| w.trim_matches('"'))
    }

    /// How to rebuild this image, as a command to run.
    pub fn rebuild(&self) -> String {
        let k = self.kernel.as_deref();
        match (self.generator, k) {
            (Generator::InitramfsTools, Some(k)) => format!("update-initramfs -u -k {k}"),
            (Generator::InitramfsTools, None) => "update-initramfs -u -k all".into(),
            (Generator::Dracut, Some(k)) => format!("dracut -f --kver {k}"),
            (Generator::Dracut, None) => "dracut -f --regenerate-all".into(),
            (Generator::Mkinitcpio, _) => "mkinitcpio -P".into(),
            (Generator::Unknown, _) => {
                "update-initramfs -u -k all, dracut -f --regenerate-all or mkinitcpio -P".into()
            }
        }
    }

    /// The image's file at an absolute path of the config.
    pub fn file(&self, path: &std::path::Path) -> Option<&[u8]> {
        self.image.file(&path.to_string_lossy())
    }
}

fn generator(image: &Image) -> Generator {
    if image.file("scripts/functions").is_some() || image.file("conf/initramfs.conf").is_some() {
        Generator::InitramfsTools
    } else if has_dir(image, "usr/lib/dracut") || image.file("lib/dracut-lib.sh").is_some() {
        Generator::Dracut
    } else if image.file("init_functions").is_some()
        || has_dir(image, "usr/lib/initcpio")
        || image
            .file("config")
            .is_some_and(|c| String::from_utf8_lossy(c).contains("HOOKS="))
    {
        Generator::Mkinitcpio
    } else {
        Generator::Unknown
    }
}

/// Whether the image has the directory `dir` (or anything under it).
fn has_dir(image: &Image, dir: &str) -> bool {
    let under = format!("{dir}/");
    image.get(dir).is_some() || image.paths().any(|p| p.starts_with(&under))
}

/// A passing check.
pub fn pass(id: &str, summary: impl Into<String>) -> Check {
    Check {
        id: id.into(),
        status: Status::Pass,
        summary: summary.into(),
        fix: None,
    }
}

/// A check that does not apply here.
pub fn skip(id: &str, summary: impl Into<String>) -> Check {
    Check {
        id: id.into(),
        status: Status::Skip,
        summary: summary.into(),
        fix: None,
    }
}

/// A warning, with what to do.
pub fn warn(id: &str, summary: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        id: id.into(),
        status: Status::Warn,
        summary: summary.into(),
        fix: Some(fix.into()),
    }
}

/// Remote unlock will fail; with what to do.
pub fn fail(id: &str, summary: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        id: id.into(),
        status: Status::Fail,
        summary: summary.into(),
        fix: Some(fix.into()),
    }
}

/// Runs the selected checks on one image.
/// When no boot entry gives the command line, it is the running system's:
/// right on the server itself, wrong in a chroot or for another boot
/// loader's entry. A network failure judged on it is then a warning that
/// says so, never a silent pass.
pub fn soften_guessed_cmdline(report: &mut ImageReport) {
    for c in &mut report.checks {
        if c.id == "network-config" && c.status == Status::Fail {
            c.status = Status::Warn;
            c.summary.push_str(
                " (judged on the running system's command line: no boot entry gives one)",
            );
            if let Some(fix) = &mut c.fix {
                fix.push_str("; or give the boot entry's line with --cmdline");
            }
        }
    }
}

pub fn run(target: &Target<'_>, system: &dyn System, only: &Selection) -> ImageReport {
    let ctx = Ctx::new(target, system);
    let mut report = ImageReport {
        image: target.name.clone(),
        kernel: ctx.kernel.clone(),
        cmdline: target.cmdline.clone(),
        host_keys: Vec::new(),
        authorized_keys: Vec::new(),
        checks: Vec::new(),
    };
    for (id, _) in CHECKS {
        if !only.has(id) {
            continue;
        }
        let check = match *id {
            "listener" => listener::listener(&ctx),
            "config" => config::config(&ctx),
            "authorized-keys" => {
                let (c, keys) = keys::authorized_keys(&ctx);
                report.authorized_keys = keys;
                c
            }
            "host-key" => {
                let (c, fps) = keys::host_key(&ctx);
                report.host_keys = fps;
                c
            }
            "volumes" => volumes::volumes(&ctx),
            "dm-crypt" => backend::dm_crypt(&ctx),
            "backend" => backend::backend(&ctx),
            "argon2-memory" => argon2::argon2_memory(&ctx),
            "conflicting-hooks" => conflicts::conflicting_hooks(&ctx),
            "network-config" => network::network_config(&ctx),
            "nic-driver" => network::nic_driver(&ctx),
            "static-ip" => network::static_ip(&ctx),
            _ => continue,
        };
        report.checks.push(check);
    }
    report
}

/// Test fixtures shared by the checks' tests.
#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::field_reassign_with_default
)]
pub mod fixture {
    use super::*;
    use crate::preflight::image::{Entry, Kind};
    use crate::preflight::system::fake::FakeSystem;

    pub fn file(image: &mut Image, path: &str, data: &[u8]) {
        image.insert(
            path,
            Entry {
                kind: Kind::File,
                mode: 0o644,
                data: data.to_vec(),
            },
        );
    }

    pub fn exe(image: &mut Image, path: &str, data: &[u8]) {
        image.insert(
            path,
            Entry {
                kind: Kind::File,
                mode: 0o755,
                data: data.to_vec(),
            },
        );
    }

    pub fn link(image: &mut Image, path: &str, target: &str) {
        image.insert(
            path,
            Entry {
                kind: Kind::Symlink,
                mode: 0o777,
                data: target.as_bytes().to_vec(),
            },
        );
    }

    /// Runs one check by id on `image` with `sys`, kernel `6.1.0-test`.
    pub fn check(id: &str, image: &Image, sys: &FakeSystem, cmdline: &str) -> Check {
        let target = Target {
            image,
            name: "/boot/initrd.img".into(),
            kernel: Some("6.1.0-test".into()),
            cmdline: Some(cmdline.into()),
        };
        let only = Selection::parse(id).unwrap();
        run(&target, sys, &only).checks.remove(0)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::field_reassign_with_default
)]
mod tests {
    use super::*;

    #[test]
    fn selection_takes_ids_and_groups() {
        let s = Selection::parse("network,conflicts").unwrap();
        for id in [
            "network-config",
            "nic-driver",
            "static-ip",
            "conflicting-hooks",
        ] {
            assert!(s.has(id), "{id}");
        }
        assert!(!s.has("listener"));
        assert!(Selection::parse("host-key").unwrap().has("host-key"));
        let e = Selection::parse("network,netwrk").unwrap_err();
        assert!(
            e.starts_with("--only: unknown check \"netwrk\"; choose from"),
            "{e}"
        );
        assert!(Selection::parse(",").is_err());
        assert!(Selection::default().has("argon2-memory"));
    }

    #[test]
    fn the_generator_decides_the_rebuild_command() {
        let mut img = Image::default();
        fixture::file(&mut img, "scripts/functions", b"");
        let sys = super::super::system::fake::FakeSystem::default();
        let t = Target {
            image: &img,
            name: "x".into(),
            kernel: Some("6.1.0-18-amd64".into()),
            cmdline: None,
        };
        assert_eq!(
            Ctx::new(&t, &sys).rebuild(),
            "update-initramfs -u -k 6.1.0-18-amd64"
        );
        let mut img = Image::default();
        fixture::file(&mut img, "config", b"HOOKS=\"base udev portcullis\"\n");
        let t = Target { image: &img, ..t };
        assert_eq!(Ctx::new(&t, &sys).rebuild(), "mkinitcpio -P");
    }

    #[test]
    fn a_guessed_command_line_turns_a_network_failure_into_a_warning() {
        let mut r = ImageReport {
            image: "i".into(),
            kernel: None,
            cmdline: None,
            host_keys: vec![],
            authorized_keys: vec![],
            checks: vec![
                fail(
                    "network-config",
                    "no ip=".to_string(),
                    "add ip=dhcp".to_string(),
                ),
                fail("nic-driver", "no driver".to_string(), "add it".to_string()),
            ],
        };
        soften_guessed_cmdline(&mut r);
        assert_eq!(r.checks[0].status, Status::Warn);
        assert!(r.checks[0]
            .summary
            .contains("running system's command line"));
        assert!(r.checks[0].fix.as_ref().unwrap().contains("--cmdline"));
        assert_eq!(r.checks[1].status, Status::Fail, "only the network line");
    }
}
