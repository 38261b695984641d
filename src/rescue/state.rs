//! What the rescue system looks like right now: tools, block devices, RAM,
//! mounts, lockdown, and what an earlier `portcullis rescue` run opened.
//! Read with one read-only remote command whose output is split into
//! sections by a random boundary, so file contents cannot fake a section.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::lsblk::{self, Dev};
use super::shell::quote;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;

/// Where this tool keeps its state on the rescue side (tmpfs /run).
pub const STATE_DIR: &str = "/run/portcullis-rescue";
/// One mapper name per line: the volumes `unlock` opened, so `close` closes
/// those and nothing else.
pub const OPENED_FILE: &str = "/run/portcullis-rescue/opened";
/// Temporary read-only mounts for discovery.
pub const PEEK_DIR: &str = "/run/portcullis-rescue/peek";
/// ramfs (never swapped) holding the combined initrd until kexec loaded it.
pub const KEXEC_DIR: &str = "/run/portcullis-rescue/kexec";

/// The standard tools, the Debian package that has each, and what needs it.
pub const TOOLS: &[(&str, &str, &str)] = &[
    ("lsblk", "util-linux", "listing block devices"),
    ("mount", "mount", "mounting"),
    ("umount", "mount", "unmounting"),
    ("cryptsetup", "cryptsetup-bin", "opening LUKS volumes"),
    ("btrfs", "btrfs-progs", "btrfs subvolumes and checks"),
    ("e2fsck", "e2fsprogs", "checking ext2/3/4"),
    ("xfs_repair", "xfsprogs", "checking xfs"),
    ("fsck.vfat", "dosfstools", "checking FAT/EFI partitions"),
    (
        "kexec",
        "kexec-tools",
        "booting the main kernel without a reboot",
    ),
    ("chroot", "coreutils", "running commands in the main system"),
    ("truncate", "coreutils", "building the combined initrd"),
];

/// The package to install for a tool, for error messages.
pub fn package_of(tool: &str) -> &'static str {
    TOOLS
        .iter()
        .find(|t| t.0 == tool)
        .map(|t| t.1)
        .unwrap_or("?")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub mountpoint: String,
    /// Path inside the filesystem (the btrfs subvolume, a bind source).
    pub root: String,
    pub fstype: String,
    pub source: String,
    pub options: String,
}

impl Mount {
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    pub tools: Vec<String>,
    pub devices: Vec<Dev>,
    pub lsblk_error: Option<String>,
    pub mem_available_kib: Option<u64>,
    pub mem_total_kib: Option<u64>,
    pub mounts: Vec<Mount>,
    /// The selected lockdown mode (`none`, `integrity`, `confidentiality`).
    pub lockdown: Option<String>,
    pub secure_boot: Option<bool>,
    /// systemd runs the rescue system (then `systemctl kexec` shuts down cleanly).
    pub systemd: bool,
    pub swap_active: bool,
    pub opened: Vec<String>,
    pub uid: Option<u32>,
}

impl Facts {
    pub fn has(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t == tool)
    }

    /// An error naming the missing tool and its package, or Ok.
    pub fn require(&self, tools: &[&str]) -> Result<()> {
        let missing: Vec<&str> = tools.iter().copied().filter(|t| !self.has(t)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = missing
            .iter()
            .map(|t| format!("`{t}` (package {})", package_of(t)))
            .collect();
        anyhow::bail!(
            "the rescue system lacks {}: install it there (e.g. apt-get install {}) or boot a rescue image that has it",
            list.join(", "),
            missing.iter().map(|t| package_of(t)).collect::<Vec<_>>().join(" ")
        )
    }

    pub fn mount_at(&self, path: &str) -> Option<&Mount> {
        // The last mount on a path is the visible one.
        self.mounts.iter().rev().find(|m| m.mountpoint == path)
    }

    /// Mounts at or below `base`, deepest first (the order to unmount).
    pub fn mounts_under(&self, base: &str) -> Vec<&Mount> {
        let prefix = format!("{}/", base.trim_end_matches('/'));
        let mut v: Vec<&Mount> = self
            .mounts
            .iter()
            .filter(|m| m.mountpoint == base || m.mountpoint.starts_with(&prefix))
            .collect();
        // Later mounts over earlier ones on the same path come off first.
        v.reverse();
        v.sort_by_key(|m| std::cmp::Reverse(m.mountpoint.matches('/').count()));
        v
    }

    /// Is this device (or its mapping) mounted anywhere?
    pub fn device_mounted(&self, path: &str) -> Vec<&Mount> {
        let dev_name = path.rsplit('/').next().unwrap_or(path);
        self.mounts
            .iter()
            .filter(|m| {
                m.source == path
                    || (path.starts_with("/dev/mapper/") && m.source == format!("/dev/{dev_name}"))
            })
            .collect()
    }

    /// Lockdown or Secure Boot: only signed kernels through kexec_file_load.
    pub fn restricted_kexec(&self) -> bool {
        self.lockdown.as_deref().is_some_and(|l| l != "none") || self.secure_boot == Some(true)
    }
}

/// A random boundary for one probe's sections. Fails rather than fall back
/// to a guessable one: a known boundary lets file contents fake sections.
pub fn boundary() -> Result<String> {
    boundary_from(Path::new("/dev/urandom"))
}

/// [`boundary`] from a given random source (tests use a missing or short
/// file to see the failure).
fn boundary_from(source: &Path) -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open(source)
        .and_then(|mut f| f.read_exact(&mut b))
        .with_context(|| {
            format!(
                "reading {} for a probe boundary; the client needs a readable /dev/urandom",
                source.display()
            )
        })?;
    Ok(format!(
        "@@portcullis-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

/// The read-only command that gathers [`Facts`].
pub fn probe_command(b: &str) -> String {
    let tools: Vec<&str> = TOOLS.iter().map(|t| t.0).collect();
    let b = quote(b);
    format!(
        "echo {b} tools; for t in {tools} systemctl; do command -v \"$t\" >/dev/null 2>&1 && echo \"$t\"; done; \
         echo {b} lsblk; {lsblk} 2>&1; \
         echo {b} blkid; blkid -c /dev/null -o export 2>/dev/null; \
         echo {b} meminfo; cat /proc/meminfo; \
         echo {b} mountinfo; cat /proc/self/mountinfo; \
         echo {b} lockdown; cat /sys/kernel/security/lockdown 2>/dev/null; \
         echo {b} secureboot; od -An -tu1 -j4 -N1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d0-aae5-4e4b9cfb1d0e 2>/dev/null; \
         echo {b} systemd; [ -d /run/systemd/system ] && echo yes; \
         echo {b} swaps; cat /proc/swaps 2>/dev/null; \
         echo {b} opened; cat {opened} 2>/dev/null; \
         echo {b} uid; id -u; true",
        tools = tools.join(" "),
        lsblk = lsblk::COMMAND,
        opened = OPENED_FILE,
    )
}

/// Splits probe output into (section header, body) pairs.
pub fn sections<'a>(out: &'a str, b: &str) -> Vec<(&'a str, String)> {
    let mut v: Vec<(&str, String)> = Vec::new();
    let marker = format!("{b} ");
    for line in out.lines() {
        if let Some(h) = line.strip_prefix(&marker) {
            v.push((h, String::new()));
        } else if let Some((_, body)) = v.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    v
}

pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(Mount {
                root: super::fstab::unescape(f.get(3)?),
                mountpoint: super::fstab::unescape(f.get(4)?),
                options: f.get(5)?.to_string(),
                fstype: r.first()?.to_string(),
                source: super::fstab::unescape(r.get(1)?),
            })
        })
        .collect()
}

/// Fills filesystem type, UUID and labels from `blkid -o export` where lsblk
/// had none: without udev (busybox-based rescue images, a bare initramfs)
/// lsblk does not probe, blkid does.
pub fn merge_blkid(devices: &mut [Dev], export: &str) {
    for block in export.split("\n\n") {
        let get = |k: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_string)
        };
        let Some(name) = get("DEVNAME") else { continue };
        let Some(d) = devices.iter_mut().find(|d| d.path == name) else {
            continue;
        };
        if d.fstype.is_none() {
            d.fstype = get("TYPE");
            d.uuid = d.uuid.take().or_else(|| get("UUID"));
            d.label = d.label.take().or_else(|| get("LABEL"));
        }
        d.partuuid = d.partuuid.take().or_else(|| get("PARTUUID"));
        d.partlabel = d.partlabel.take().or_else(|| get("PARTLABEL"));
    }
}

pub fn parse_facts(out: &str, b: &str) -> Facts {
    let mut f = Facts::default();
    let mut blkid = String::new();
    for (h, body) in sections(out, b) {
        match h {
            "tools" => f.tools = body.lines().map(str::to_string).collect(),
            "lsblk" => match lsblk::parse(&body) {
                Ok(d) => f.devices = d,
                Err(e) => {
                    let first = body
                        .lines()
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(200)
                        .collect::<String>();
                    f.lsblk_error = Some(format!("{e:#}: {first}"));
                }
            },
            "blkid" => blkid = body,
            "meminfo" => {
                f.mem_available_kib = super::luks::mem_available_kib(&body);
                f.mem_total_kib = body.lines().find_map(|l| {
                    l.strip_prefix("MemTotal:")?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                });
            }
            "mountinfo" => f.mounts = parse_mountinfo(&body),
            "lockdown" => {
                f.lockdown = body
                    .split_whitespace()
                    .find(|w| w.starts_with('['))
                    .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
            }
            "secureboot" => f.secure_boot = body.trim().parse::<u8>().ok().map(|v| v == 1),
            "systemd" => f.systemd = body.trim() == "yes",
            "swaps" => f.swap_active = body.lines().skip(1).any(|l| !l.trim().is_empty()),
            "opened" => {
                f.opened = body
                    .lines()
                    .map(str::trim)
                    .filter(|l| super::shell::mapper_name(l).is_ok())
                    .map(str::to_string)
                    .collect();
                f.opened.dedup();
            }
            "uid" => f.uid = body.trim().parse().ok(),
            _ => {}
        }
    }
    merge_blkid(&mut f.devices, &blkid);
    f
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
pub mod tests {
    use super::*;

    pub const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
23 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,size=1k
24 22 0:22 / /proc rw - proc proc rw
30 22 0:26 /@ /mnt/portcullis ro,relatime - btrfs /dev/mapper/root ro,space_cache=v2,subvolid=256,subvol=/@
31 30 0:26 /@home /mnt/portcullis/home ro,relatime - btrfs /dev/mapper/root ro,subvolid=257,subvol=/@home
32 30 254:17 / /mnt/portcullis/boot ro,relatime - ext4 /dev/vdb1 ro
33 30 0:5 / /mnt/portcullis/dev rw,nosuid - devtmpfs devtmpfs rw
34 33 0:23 / /mnt/portcullis/dev/pts rw - devpts devpts rw
35 22 0:40 / /srv/with\\040space rw - tmpfs tmpfs rw
";

    /// A probe answer as a real rescue system gives it.
    pub fn probe_output(b: &str, opened: &str, mountinfo: &str) -> String {
        probe_output_with(b, opened, mountinfo, include_str!("fixtures/lsblk.json"))
    }

    pub fn probe_output_with(b: &str, opened: &str, mountinfo: &str, lsblk: &str) -> String {
        format!(
            "{b} tools\nlsblk\nmount\numount\ncryptsetup\nbtrfs\ne2fsck\nkexec\nchroot\ntruncate\n\
             {b} lsblk\n{lsblk}\
             {b} meminfo\nMemTotal: 1000000 kB\nMemAvailable: 800000 kB\n\
             {b} mountinfo\n{mountinfo}\
             {b} lockdown\n[none] integrity confidentiality\n\
             {b} secureboot\n\
             {b} systemd\n\
             {b} swaps\nFilename Type Size Used Priority\n\
             {b} opened\n{opened}\
             {b} uid\n0\n"
        )
    }

    #[test]
    fn facts_from_probe() {
        let b = "@@portcullis-00";
        let f = parse_facts(&probe_output(b, "root\nbad name\n", MOUNTINFO), b);
        assert!(f.has("kexec") && !f.has("xfs_repair"));
        assert_eq!(f.devices.len(), 5);
        assert_eq!(f.mem_available_kib, Some(800000));
        assert_eq!(f.lockdown.as_deref(), Some("none"));
        assert_eq!(f.secure_boot, None);
        assert!(!f.systemd && !f.swap_active && !f.restricted_kexec());
        assert_eq!(f.opened, ["root"]);
        assert_eq!(f.uid, Some(0));
        let under: Vec<_> = f
            .mounts_under("/mnt/portcullis")
            .iter()
            .map(|m| m.mountpoint.as_str())
            .collect();
        assert_eq!(
            under,
            [
                "/mnt/portcullis/dev/pts",
                "/mnt/portcullis/dev",
                "/mnt/portcullis/boot",
                "/mnt/portcullis/home",
                "/mnt/portcullis"
            ]
        );
        assert_eq!(f.mount_at("/mnt/portcullis").unwrap().root, "/@");
        assert!(f.mount_at("/mnt/portcullis").unwrap().read_only());
        assert_eq!(f.mounts.last().unwrap().mountpoint, "/srv/with space");
        assert_eq!(f.device_mounted("/dev/mapper/root").len(), 2);
        let e = f.require(&["kexec", "xfs_repair"]).unwrap_err().to_string();
        assert!(e.contains("`xfs_repair` (package xfsprogs)"), "{e}");
        assert!(f.require(&["kexec"]).is_ok());
    }

    #[test]
    fn blkid_fills_what_lsblk_without_udev_misses() {
        let mut devs = lsblk::parse(
            r#"{"blockdevices":[{"name":"vda","path":"/dev/vda","type":"disk","children":[
               {"name":"vda2","path":"/dev/vda2","type":"part","fstype":null,"children":[
                 {"name":"root","path":"/dev/mapper/root","type":"crypt","fstype":null}]}]}]}"#,
        )
        .unwrap();
        merge_blkid(
            &mut devs,
            "DEVNAME=/dev/vda2\nUUID=7d0a\nTYPE=crypto_LUKS\nPARTUUID=0b5c-02\n\n\
             DEVNAME=/dev/mapper/root\nLABEL=main\nUUID=5b3e\nUUID_SUB=x\nTYPE=btrfs\n",
        );
        assert!(devs[1].is_luks());
        assert_eq!(devs[1].uuid.as_deref(), Some("7d0a"));
        assert_eq!(devs[1].partuuid.as_deref(), Some("0b5c-02"));
        assert_eq!(devs[2].fstype.as_deref(), Some("btrfs"));
        assert_eq!(devs[2].label.as_deref(), Some("main"));
        assert_eq!(devs[0].fstype, None);
    }

    #[test]
    fn sections_ignore_fake_boundaries() {
        let b = "@@portcullis-aa";
        let out = format!("{b} fstab\n@@portcullis-bb uid\n{b} uid\n0\n");
        let s = sections(&out, b);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].1, "@@portcullis-bb uid\n");
        let f = parse_facts("lockdown\n", b);
        assert!(f.tools.is_empty());
        let f = parse_facts(
            &format!("{b} lockdown\nnone [integrity] confidentiality\n{b} secureboot\n   1\n"),
            b,
        );
        assert!(f.restricted_kexec());
        assert_eq!(f.secure_boot, Some(true));
    }

    #[test]
    fn boundary_fails_without_randomness() {
        // It used to become all zeros when /dev/urandom could not be read.
        let t = tempfile::tempdir().unwrap();
        let e = format!(
            "{:#}",
            boundary_from(&t.path().join("missing")).unwrap_err()
        );
        assert!(e.contains("probe boundary"), "{e}");
        let short = t.path().join("short");
        std::fs::write(&short, [1u8, 2, 3]).unwrap();
        assert!(boundary_from(&short).is_err());
        let b = boundary().unwrap();
        assert_eq!(b.len(), "@@portcullis-".len() + 16);
        assert_ne!(b, boundary().unwrap());
    }
}
