//! Finding the main system: which filesystem (and btrfs subvolume) holds its
//! `/etc/fstab`, and translating that fstab's device names (UUID=, LABEL=,
//! `/dev/mapper/NAME` via its crypttab) into the rescue system's devices.
//! The remote part is one read-only "peek": a temporary read-only mount
//! without journal or log replay, then unmounted again.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::fstab;
use super::lsblk::{Dev, Devices};
use super::shell::{join, quote};
use super::state::{sections, PEEK_DIR};
use crate::unlock::crypttab;
use serde::Serialize;

/// Filesystems worth peeking into.
pub fn peekable(fstype: &str) -> bool {
    matches!(fstype, "btrfs" | "ext2" | "ext3" | "ext4" | "xfs" | "vfat")
}

/// Read-only mount options that also skip journal/log replay, so a peek
/// never writes to a damaged filesystem.
fn peek_options(fstype: &str) -> &'static str {
    match fstype {
        "btrfs" => "ro,subvolid=5,rescue=nologreplay",
        "ext3" | "ext4" => "ro,noload",
        "xfs" => "ro,norecovery",
        _ => "ro",
    }
}

/// The peek command for one device.
pub fn peek_command(b: &str, dev: &Dev) -> String {
    let fstype = dev.fstype.as_deref().unwrap_or("auto");
    let b = quote(b);
    let subvols = if fstype == "btrfs" {
        format!("echo {b} subvols; btrfs subvolume list -a \"$P\" 2>&1; ")
    } else {
        String::new()
    };
    format!(
        "P={peek}; mkdir -p \"$P\" && {mount} \"$P\" || exit 3; \
         {subvols}\
         for d in \"$P\" \"$P\"/*; do [ -f \"$d/etc/fstab\" ] || continue; \
         echo {b} root \"${{d#\"$P\"}}\"; echo {b} fstab; head -c 262144 \"$d/etc/fstab\"; echo; \
         echo {b} crypttab; head -c 262144 \"$d/etc/crypttab\" 2>/dev/null; echo; done; \
         echo {b} kernels; for f in \"$P\"/vmlinuz* \"$P\"/boot/vmlinuz* \"$P\"/*/boot/vmlinuz*; do \
         [ -f \"$f\" ] && echo \"${{f#\"$P\"}}\"; done; umount \"$P\"",
        peek = quote(PEEK_DIR),
        mount = join(&["mount", "-t", fstype, "-o", peek_options(fstype), &dev.path]),
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundRoot {
    /// Directory inside the filesystem, "" for its top; for btrfs the
    /// subvolume path ("@").
    pub dir: String,
    #[serde(skip)]
    pub fstab_text: String,
    #[serde(skip)]
    pub crypttab_text: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Peek {
    pub device: String,
    pub fstype: String,
    pub subvols: Vec<String>,
    pub roots: Vec<FoundRoot>,
    pub kernels: Vec<String>,
    pub error: Option<String>,
}

pub fn parse_peek(device: &Dev, out: &str, b: &str, status: Option<u32>, stderr: &str) -> Peek {
    let mut p = Peek {
        device: device.path.clone(),
        fstype: device.fstype.clone().unwrap_or_default(),
        ..Default::default()
    };
    if status == Some(3) {
        let why = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("mount failed");
        p.error = Some(format!(
            "cannot mount read-only to look inside: {}",
            why.trim()
        ));
        return p;
    }
    let mut current: Option<FoundRoot> = None;
    for (h, body) in sections(out, b) {
        match h.split_once(' ').map_or((h, ""), |(a, r)| (a, r)) {
            ("subvols", _) => {
                // "ID 256 gen 9 top level 5 path @" (-a prints "<FS_TREE>/@").
                p.subvols = body
                    .lines()
                    .filter_map(|l| {
                        l.split_once(" path ")
                            .map(|(_, s)| s.trim_start_matches("<FS_TREE>/").to_string())
                    })
                    .collect();
            }
            ("root", dir) => {
                if let Some(r) = current.take() {
                    p.roots.push(r);
                }
                current = Some(FoundRoot {
                    dir: dir.trim_start_matches('/').to_string(),
                    fstab_text: String::new(),
                    crypttab_text: String::new(),
                });
            }
            ("fstab", _) => {
                if let Some(r) = current.as_mut() {
                    r.fstab_text = body;
                }
            }
            ("crypttab", _) => {
                if let Some(r) = current.as_mut() {
                    r.crypttab_text = body;
                }
            }
            ("kernels", _) => {
                if let Some(r) = current.take() {
                    p.roots.push(r);
                }
                p.kernels = body
                    .lines()
                    .map(|l| l.trim_start_matches('/').to_string())
                    .collect();
            }
            _ => {}
        }
    }
    if let Some(r) = current.take() {
        p.roots.push(r);
    }
    p
}

/// The main system as found: where its root is and its own fstab/crypttab.
#[derive(Debug, Clone, Serialize)]
pub struct MainSystem {
    pub device: String,
    pub fstype: String,
    /// btrfs subvolume of `/`, if any.
    pub subvol: Option<String>,
    pub fstab: Vec<fstab::Entry>,
    #[serde(skip)]
    pub crypttab: Vec<crypttab::Entry>,
}

/// Why no single main system was picked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChooseError {
    #[error(
        "no filesystem with an /etc/fstab found among the unlocked and unmounted ones; \
         unlock the volumes first, or name the root with --root-device DEV [--subvol NAME]"
    )]
    NoneFound,
    /// The candidates, each `DEVICE` or `DEVICE subvolume NAME`.
    #[error(
        "several candidate root filesystems: {}; choose one with --root-device DEV [--subvol NAME]",
        .0.join(", ")
    )]
    Several(Vec<String>),
}

/// Picks the one main system among the peeks. `want` narrows by device and
/// subvolume (from --root-device / --subvol).
pub fn choose(
    peeks: &[Peek],
    want_device: Option<&str>,
    want_subvol: Option<&str>,
) -> Result<MainSystem, ChooseError> {
    let mut found: Vec<MainSystem> = Vec::new();
    for p in peeks {
        if want_device.is_some_and(|d| d != p.device) {
            continue;
        }
        for r in &p.roots {
            let subvol = (p.fstype == "btrfs" && !r.dir.is_empty()).then(|| r.dir.clone());
            if let Some(w) = want_subvol {
                if subvol.as_deref().unwrap_or("") != w.trim_start_matches('/') {
                    continue;
                }
            }
            found.push(MainSystem {
                device: p.device.clone(),
                fstype: p.fstype.clone(),
                subvol,
                fstab: fstab::parse(&r.fstab_text),
                crypttab: crypttab::parse(&r.crypttab_text),
            });
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(ChooseError::NoneFound),
        _ => Err(ChooseError::Several(
            found
                .iter()
                .map(|m| match &m.subvol {
                    Some(s) => format!("{} subvolume {s}", m.device),
                    None => m.device.clone(),
                })
                .collect::<Vec<_>>(),
        )),
    }
}

/// Translates an fstab device field to a rescue-side device path, going
/// through the main system's crypttab for `/dev/mapper/NAME`.
pub fn resolve(spec: &str, devices: &[Dev], crypttab: &[crypttab::Entry]) -> Option<String> {
    let name = spec
        .strip_prefix("/dev/mapper/")
        .or_else(|| spec.strip_prefix("/dev/disk/by-id/dm-name-"));
    if let Some(name) = name {
        if let Some(e) = crypttab.iter().find(|e| e.name == name) {
            let luks = devices.resolve(&e.source)?;
            return devices.mapping_of(&luks.path).map(|m| m.path.clone());
        }
    }
    devices.resolve(spec).map(|d| d.path.clone())
}

/// The LUKS device a crypttab entry refers to.
pub fn luks_device<'a>(e: &crypttab::Entry, devices: &'a [Dev]) -> Option<&'a Dev> {
    devices.resolve(&e.source).filter(|d| d.is_luks())
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
    use crate::rescue::lsblk;

    fn devs() -> Vec<Dev> {
        lsblk::parse(include_str!("fixtures/lsblk.json")).unwrap()
    }

    #[test]
    fn peek_round_trip() {
        let b = "@@portcullis-11";
        let d = devs();
        let root = d.iter().find(|x| x.path == "/dev/mapper/root").unwrap();
        let cmd = peek_command(b, root);
        assert!(
            cmd.contains(
                "mount -t btrfs -o ro,subvolid=5,rescue=nologreplay /dev/mapper/root \"$P\""
            ),
            "{cmd}"
        );
        let out = format!(
            "{b} subvols\nID 256 gen 9 top level 5 path <FS_TREE>/@\nID 257 gen 9 top level 5 path <FS_TREE>/@home\n\
             {b} root /@\n{b} fstab\n{fstab}\n{b} crypttab\nroot UUID=7d0a6f0e-3333-4a4a-9f9f-0123456789ab none luks\n\n\
             {b} kernels\n/@/boot/vmlinuz-6.1.0-9-amd64\n",
            fstab = include_str!("fixtures/fstab")
        );
        let p = parse_peek(root, &out, b, Some(0), "");
        assert_eq!(p.subvols, ["@", "@home"]);
        assert_eq!(p.roots.len(), 1);
        assert_eq!(p.roots[0].dir, "@");
        assert_eq!(p.kernels, ["@/boot/vmlinuz-6.1.0-9-amd64"]);
        let boot = d.iter().find(|x| x.path == "/dev/vdb1").unwrap();
        let pb = parse_peek(
            boot,
            &format!("{b} kernels\n/vmlinuz-6.1\n"),
            b,
            Some(0),
            "",
        );
        assert!(pb.roots.is_empty());
        let peeks = vec![p.clone(), pb];
        let m = choose(&peeks, None, None).unwrap();
        assert_eq!(
            (m.device.as_str(), m.subvol.as_deref()),
            ("/dev/mapper/root", Some("@"))
        );
        assert_eq!(m.fstab.len(), 5);
        assert_eq!(m.crypttab[0].name, "root");
        assert_eq!(
            choose(&peeks, Some("/dev/vdb1"), None).unwrap_err(),
            ChooseError::NoneFound
        );
        assert!(choose(&peeks, None, Some("other")).is_err());
        let two = vec![p.clone(), p];
        let e = choose(&two, None, None).unwrap_err();
        assert_eq!(
            e,
            ChooseError::Several(vec![
                "/dev/mapper/root subvolume @".into(),
                "/dev/mapper/root subvolume @".into()
            ])
        );
        assert_eq!(
            e.to_string(),
            "several candidate root filesystems: /dev/mapper/root subvolume @, \
             /dev/mapper/root subvolume @; choose one with --root-device DEV [--subvol NAME]"
        );
        let failed = parse_peek(boot, "", b, Some(3), "mount: wrong fs type\n");
        assert!(failed.error.unwrap().contains("wrong fs type"));
    }

    #[test]
    fn resolving_fstab_devices() {
        let d = devs();
        let ct = crypttab::parse("root UUID=7d0a6f0e-3333-4a4a-9f9f-0123456789ab none luks\n");
        assert_eq!(
            resolve("/dev/mapper/root", &d, &ct).as_deref(),
            Some("/dev/mapper/root")
        );
        let ct2 =
            crypttab::parse("sda2_crypt UUID=7d0a6f0e-3333-4a4a-9f9f-0123456789ab none luks\n");
        // The crypttab name differs from the rescue-side mapping name.
        assert_eq!(
            resolve("/dev/mapper/sda2_crypt", &d, &ct2).as_deref(),
            Some("/dev/mapper/root")
        );
        assert_eq!(
            resolve("UUID=1c1e9a47-2222-4b4b-8e8e-0123456789ab", &d, &ct).as_deref(),
            Some("/dev/vdb1")
        );
        assert_eq!(resolve("/dev/mapper/vg-root", &d, &ct), None);
        assert_eq!(luks_device(&ct[0], &d).unwrap().path, "/dev/vdb2");
    }
}
