//! Which volumes to unlock: device specs the way the generators write them
//! (`/dev/…`, `/dev/disk/by-*/…`, `UUID=`, `LABEL=`, `PARTUUID=`,
//! `PARTLABEL=`), the kernel command line (`cryptdevice=` with its options,
//! `rd.luks.name=`, `rd.luks.uuid=`), and finding a device without udev (a
//! minimal initramfs has no `/dev/disk/by-*`): LUKS headers for `UUID=` and
//! `LABEL=`, partition tables for `PARTUUID=` and `PARTLABEL=`.

mod partition;

use crate::sys::{read_head, Root};
use crate::text::clip;
use std::path::{Path, PathBuf};

/// How a volume's encrypted device is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    Path(PathBuf),
    Uuid(String),
    Label(String),
    PartUuid(String),
    PartLabel(String),
}

/// Why a device spec was refused. Fields hold the input already clipped
/// (src/text.rs): it may come from a kernel command line or a file of any
/// length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `UUID=`/`PARTUUID=` with something other than hex digits and dashes.
    #[error("{spec} is not a valid {what}")]
    BadHexId { spec: String, what: String },
    #[error("{0}: a LUKS2 label has 1 to 47 bytes")]
    BadLabel(String),
    #[error("{0}: a GPT partition name has 1 to 36 characters")]
    BadPartLabel(String),
    #[error(
        "{0} is not a device: use an absolute path (/dev/vda2, /dev/disk/by-…/…), \
         UUID=…, LABEL=…, PARTUUID=… or PARTLABEL=…"
    )]
    NotADevice(String),
}

fn hex_id(s: &str, tag: &str) -> Result<String, SpecError> {
    let u = s.trim_matches('"').to_ascii_lowercase();
    if u.is_empty() || !u.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        let what = tag.trim_end_matches('=');
        return Err(SpecError::BadHexId {
            spec: clip(&format!("{tag}{s}")).to_string(),
            what: what.to_string(),
        });
    }
    Ok(u)
}

impl DeviceSpec {
    /// Parses `/dev/…`, `UUID=…`, `LABEL=…`, `PARTUUID=…` or `PARTLABEL=…`.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        if let Some(u) = s.strip_prefix("UUID=") {
            Ok(DeviceSpec::Uuid(hex_id(u, "UUID=")?))
        } else if let Some(u) = s.strip_prefix("PARTUUID=") {
            Ok(DeviceSpec::PartUuid(hex_id(u, "PARTUUID=")?))
        } else if let Some(l) = s.strip_prefix("LABEL=") {
            let l = l.trim_matches('"');
            if l.is_empty() || l.len() > 47 {
                return Err(SpecError::BadLabel(clip(s).to_string()));
            }
            Ok(DeviceSpec::Label(l.to_string()))
        } else if let Some(l) = s.strip_prefix("PARTLABEL=") {
            let l = l.trim_matches('"');
            // A GPT name is 36 UTF-16 code units.
            if l.is_empty() || l.encode_utf16().count() > 36 {
                return Err(SpecError::BadPartLabel(clip(s).to_string()));
            }
            Ok(DeviceSpec::PartLabel(l.to_string()))
        } else if s.starts_with('/') {
            Ok(DeviceSpec::Path(PathBuf::from(s)))
        } else {
            // Input is quoted clipped: it may come from a kernel command
            // line or a file of any length.
            Err(SpecError::NotADevice(clip(s).to_string()))
        }
    }

    /// The tag a `/dev/disk/by-*/NAME` link stands for, so it can be found
    /// without udev: `by-uuid/X` is `UUID=X`, and so on. Other paths: `None`.
    fn from_udev_link(p: &Path) -> Option<DeviceSpec> {
        let dir = p.parent()?.to_str()?;
        let name = unescape_udev(p.file_name()?.to_str()?);
        match dir {
            "/dev/disk/by-uuid" => Some(DeviceSpec::Uuid(name.to_ascii_lowercase())),
            "/dev/disk/by-label" => Some(DeviceSpec::Label(name)),
            "/dev/disk/by-partuuid" => Some(DeviceSpec::PartUuid(name.to_ascii_lowercase())),
            "/dev/disk/by-partlabel" => Some(DeviceSpec::PartLabel(name)),
            _ => None,
        }
    }
}

/// udev writes unsafe bytes of a label as `\xNN` in link names.
fn unescape_udev(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'\\' && b.get(i + 1) == Some(&b'x') {
            if let Some(v) = b
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Path(p) => write!(f, "{}", p.display()),
            DeviceSpec::Uuid(u) => write!(f, "UUID={u}"),
            DeviceSpec::Label(l) => write!(f, "LABEL={l}"),
            DeviceSpec::PartUuid(u) => write!(f, "PARTUUID={u}"),
            DeviceSpec::PartLabel(l) => write!(f, "PARTLABEL={l}"),
        }
    }
}

/// How to open a volume: the `cryptdevice=` options of Arch's `encrypt`
/// hook, so a volume opened over SSH gets what the console path gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenOptions {
    pub allow_discards: bool,
    pub sector_size: Option<u32>,
    pub no_read_workqueue: bool,
    pub no_write_workqueue: bool,
}

impl OpenOptions {
    /// Parses a comma-separated `cryptdevice=` option list, with the names
    /// `encrypt` accepts. Unknown or malformed options are returned apart, so
    /// the caller can warn (encrypt ignores them with a message too).
    pub fn parse(list: &str) -> (Self, Vec<String>) {
        let mut o = OpenOptions::default();
        let mut bad = Vec::new();
        for opt in list.split(',').filter(|s| !s.is_empty()) {
            match opt {
                "allow-discards" | "discard" => o.allow_discards = true,
                "no-read-workqueue" | "perf-no_read_workqueue" => o.no_read_workqueue = true,
                "no-write-workqueue" | "perf-no_write_workqueue" => o.no_write_workqueue = true,
                _ => match opt.strip_prefix("sector-size=").map(str::parse::<u32>) {
                    Some(Ok(n)) if n.is_power_of_two() && (512..=4096).contains(&n) => {
                        o.sector_size = Some(n)
                    }
                    _ => bad.push(opt.to_string()),
                },
            }
        }
        (o, bad)
    }

    /// The matching `cryptsetup open` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.allow_discards {
            a.push("--allow-discards".to_string());
        }
        if let Some(n) = self.sector_size {
            a.push(format!("--sector-size={n}"));
        }
        if self.no_read_workqueue {
            a.push("--perf-no_read_workqueue".to_string());
        }
        if self.no_write_workqueue {
            a.push("--perf-no_write_workqueue".to_string());
        }
        a
    }
}

/// One volume to open: its device and the device-mapper name to give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub device: DeviceSpec,
    pub options: OpenOptions,
}

/// Checks a device-mapper name: the kernel allows most bytes, we allow what
/// is safe on a command line and in `/dev/mapper`.
pub fn valid_mapper_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 127
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
}

/// Volumes named on the kernel command line, in order, without duplicates.
/// Returns the volumes and a warning for each entry that could not be used.
pub fn from_cmdline(cmdline: &str) -> (Vec<Volume>, Vec<String>) {
    let mut vols: Vec<Volume> = Vec::new();
    let mut warnings = Vec::new();
    for word in cmdline.split_ascii_whitespace() {
        let word = word.trim_matches('"');
        let mut options = OpenOptions::default();
        let parsed = if let Some(v) = word.strip_prefix("cryptdevice=") {
            // mkinitcpio: cryptdevice=device:dmname[:options]
            let mut parts = v.splitn(3, ':');
            let dev = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            let (o, bad) = OpenOptions::parse(parts.next().unwrap_or(""));
            options = o;
            for b in bad {
                warnings.push(format!(
                    "kernel command line {word:?}: option {b:?} is not supported, ignoring it \
                     (supported: allow-discards, sector-size=N, no-read-workqueue, no-write-workqueue)"
                ));
            }
            DeviceSpec::parse(dev)
                .map(|d| (d, name.to_string()))
                .map_err(|e| e.to_string())
        } else if let Some(v) = word.strip_prefix("rd.luks.name=") {
            // systemd: rd.luks.name=UUID=name
            match v.split_once('=') {
                Some((uuid, name)) => DeviceSpec::parse(&format!("UUID={}", strip_luks(uuid)))
                    .map(|d| (d, name.to_string()))
                    .map_err(|e| e.to_string()),
                None => Err(format!("{word:?}: expected rd.luks.name=UUID=NAME")),
            }
        } else if let Some(v) = word.strip_prefix("rd.luks.uuid=") {
            let uuid = strip_luks(v);
            DeviceSpec::parse(&format!("UUID={uuid}"))
                .map(|d| (d, format!("luks-{uuid}")))
                .map_err(|e| e.to_string())
        } else {
            continue;
        };
        match parsed {
            Ok((device, name)) if valid_mapper_name(&name) => {
                if !vols.iter().any(|v| v.name == name) {
                    vols.push(Volume {
                        name,
                        device,
                        options,
                    });
                }
            }
            Ok((_, name)) => warnings.push(format!(
                "kernel command line {word:?}: {name:?} is not a valid mapper name"
            )),
            Err(e) => warnings.push(format!("kernel command line: {e}")),
        }
    }
    (vols, warnings)
}

fn strip_luks(s: &str) -> &str {
    s.strip_prefix("luks-").unwrap_or(s)
}

/// Identity read from a LUKS header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksHeader {
    pub version: u16,
    pub uuid: String,
    /// LUKS2 only; empty when unset.
    pub label: String,
}

const LUKS_MAGIC: &[u8] = b"LUKS\xba\xbe";

/// Parses the binary LUKS1/LUKS2 header at the start of a device. Both keep
/// the UUID at offset 168 (40 bytes); LUKS2 keeps the label at 24 (48 bytes).
pub fn parse_luks_header(buf: &[u8]) -> Option<LuksHeader> {
    if buf.get(..6)? != LUKS_MAGIC {
        return None;
    }
    let version = u16::from_be_bytes([*buf.get(6)?, *buf.get(7)?]);
    let cstr = |range: std::ops::Range<usize>| -> Option<String> {
        let raw = buf.get(range)?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Some(String::from_utf8_lossy(raw.get(..end)?).into_owned())
    };
    let uuid = cstr(168..208)?.to_ascii_lowercase();
    let label = if version == 2 {
        cstr(24..72)?
    } else {
        String::new()
    };
    Some(LuksHeader {
        version,
        uuid,
        label,
    })
}

/// Finds the device node for `spec`, the way udev and blkid would: a path
/// is taken as given when it exists; a tag (or a `/dev/disk/by-*` link that
/// is absent because udev is not running) is looked up in `/dev/disk/by-*`
/// when udev made it, else by reading LUKS headers (`UUID=`, `LABEL=`) or
/// partition tables (`PARTUUID=`, `PARTLABEL=`) of the block devices in
/// `/sys/class/block`. Returns the path as the system sees it (without the
/// root prefix).
pub fn resolve(root: &Root, spec: &DeviceSpec) -> Option<PathBuf> {
    let (dir, want) = match spec {
        DeviceSpec::Path(p) => {
            if root.join(p).exists() {
                return Some(p.clone());
            }
            return DeviceSpec::from_udev_link(p).and_then(|tag| resolve(root, &tag));
        }
        DeviceSpec::Uuid(u) => ("/dev/disk/by-uuid", u.as_str()),
        DeviceSpec::Label(l) => ("/dev/disk/by-label", l.as_str()),
        DeviceSpec::PartUuid(u) => ("/dev/disk/by-partuuid", u.as_str()),
        DeviceSpec::PartLabel(l) => ("/dev/disk/by-partlabel", l.as_str()),
    };
    let link = Path::new(dir).join(want);
    if root.join(&link).exists() {
        return Some(link);
    }
    match spec {
        DeviceSpec::PartUuid(u) => return partition::find(root, &partition::Want::Uuid(u)),
        DeviceSpec::PartLabel(l) => return partition::find(root, &partition::Want::Label(l)),
        _ => {}
    }
    let mut names: Vec<String> = std::fs::read_dir(root.join("/sys/class/block"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let dev = PathBuf::from("/dev").join(&name);
        let head = read_head(&root.join(&dev), 4096).ok()?;
        let h = parse_luks_header(&head)?;
        let hit = match spec {
            DeviceSpec::Uuid(u) => h.uuid == *u,
            DeviceSpec::Label(l) => h.version == 2 && h.label == *l,
            _ => false,
        };
        hit.then_some(dev)
    })
}

/// Whether a device-mapper device called `name` exists: `/dev/mapper/NAME`,
/// or (without udev) a `/sys/block/dm-*/dm/name` holding it.
pub fn mapper_exists(root: &Root, name: &str) -> bool {
    if root.join(Path::new("/dev/mapper").join(name)).exists() {
        return true;
    }
    let Ok(entries) = std::fs::read_dir(root.join("/sys/block")) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|e| {
        std::fs::read_to_string(e.path().join("dm/name"))
            .map(|n| n.trim() == name)
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_errors_are_bounded() {
        // Found by the unlock fuzz target: the whole input was quoted.
        for bad in [
            "x".repeat(100_000),
            format!("UUID={}", "z".repeat(100_000)),
            format!("LABEL={}", "l".repeat(100_000)),
            format!("PARTLABEL={}", "p".repeat(100_000)),
        ] {
            let e = DeviceSpec::parse(&bad).unwrap_err().to_string();
            assert!(e.len() < 400, "{} bytes: {}", e.len(), &e[..200]);
        }
    }

    fn luks2_header(uuid: &str, label: &str) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[..6].copy_from_slice(LUKS_MAGIC);
        h[6..8].copy_from_slice(&2u16.to_be_bytes());
        h[24..24 + label.len()].copy_from_slice(label.as_bytes());
        h[168..168 + uuid.len()].copy_from_slice(uuid.as_bytes());
        h
    }

    #[test]
    fn device_specs() {
        assert_eq!(
            DeviceSpec::parse("UUID=ABCD-12").unwrap(),
            DeviceSpec::Uuid("abcd-12".into())
        );
        assert_eq!(
            DeviceSpec::parse("LABEL=root").unwrap(),
            DeviceSpec::Label("root".into())
        );
        assert!(matches!(
            DeviceSpec::parse("vda2"),
            Err(SpecError::NotADevice(_))
        ));
        assert!(DeviceSpec::parse("vda2")
            .unwrap_err()
            .to_string()
            .contains("absolute path"));
        assert!(DeviceSpec::parse("UUID=zz").is_err());
        assert_eq!(
            DeviceSpec::parse("PARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4").unwrap(),
            DeviceSpec::PartUuid("0fc63daf-8483-4772-8e79-3d69d8477de4".into())
        );
        assert_eq!(
            DeviceSpec::parse("PARTLABEL=cryptroot").unwrap(),
            DeviceSpec::PartLabel("cryptroot".into())
        );
        assert_eq!(
            DeviceSpec::parse("PARTUUID=xyz").unwrap_err().to_string(),
            "\"PARTUUID=xyz\" is not a valid PARTUUID"
        );
        assert_eq!(
            DeviceSpec::parse("PARTUUID=xyz"),
            Err(SpecError::BadHexId {
                spec: "\"PARTUUID=xyz\"".into(),
                what: "PARTUUID".into()
            })
        );
        assert!(matches!(
            DeviceSpec::parse("LABEL="),
            Err(SpecError::BadLabel(_))
        ));
        assert!(matches!(
            DeviceSpec::parse("PARTLABEL="),
            Err(SpecError::BadPartLabel(_))
        ));
        assert!(DeviceSpec::parse("PARTLABEL=").is_err());
        assert!(DeviceSpec::parse(&format!("PARTLABEL={}", "a".repeat(37))).is_err());
        // Round trip through Display, as status shows it.
        for s in [
            "PARTUUID=1234abcd-02",
            "PARTLABEL=root",
            "/dev/disk/by-id/x",
        ] {
            assert_eq!(DeviceSpec::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn cryptdevice_options() {
        let (v, w) = from_cmdline(
            "cryptdevice=PARTUUID=1234abcd-02:root:allow-discards,sector-size=4096,\
             no-read-workqueue,perf-no_write_workqueue,bogus,sector-size=1000",
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].device, DeviceSpec::PartUuid("1234abcd-02".into()));
        assert_eq!(
            v[0].options.args(),
            [
                "--allow-discards",
                "--sector-size=4096",
                "--perf-no_read_workqueue",
                "--perf-no_write_workqueue"
            ]
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("\"bogus\" is not supported"), "{w:?}");
        assert!(w[1].contains("sector-size=1000"), "{w:?}");
        let (v, w) = from_cmdline("cryptdevice=PARTLABEL=cryptroot:root");
        assert_eq!(v[0].options, OpenOptions::default());
        assert!(v[0].options.args().is_empty() && w.is_empty());
    }

    #[test]
    fn cmdline_forms() {
        let (v, w) = from_cmdline(
            "root=/dev/mapper/root cryptdevice=UUID=1111-aa:root:allow-discards \
             rd.luks.name=luks-2222=data rd.luks.uuid=3333 quiet cryptdevice=bad:x \
             rd.luks.name=nonsense cryptdevice=/dev/vdb:../etc",
        );
        assert_eq!(
            v,
            vec![
                Volume {
                    name: "root".into(),
                    device: DeviceSpec::Uuid("1111-aa".into()),
                    options: OpenOptions {
                        allow_discards: true,
                        ..Default::default()
                    }
                },
                Volume {
                    name: "data".into(),
                    device: DeviceSpec::Uuid("2222".into()),
                    options: OpenOptions::default()
                },
                Volume {
                    name: "luks-3333".into(),
                    device: DeviceSpec::Uuid("3333".into()),
                    options: OpenOptions::default()
                },
            ]
        );
        assert_eq!(w.len(), 3, "{w:?}");
    }

    #[test]
    fn header_parse() {
        let h = parse_luks_header(&luks2_header("1234-abcd", "portcullis-test")).unwrap();
        assert_eq!(h.version, 2);
        assert_eq!(h.uuid, "1234-abcd");
        assert_eq!(h.label, "portcullis-test");
        assert!(parse_luks_header(b"LUKS").is_none());
        assert!(parse_luks_header(&[0u8; 4096]).is_none());
    }

    #[test]
    fn resolve_in_fake_tree() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        std::fs::create_dir_all(t.path().join("sys/class/block/vda")).unwrap();
        std::fs::create_dir_all(t.path().join("sys/class/block/vdb")).unwrap();
        std::fs::create_dir_all(t.path().join("dev")).unwrap();
        std::fs::write(t.path().join("dev/vda"), vec![0u8; 4096]).unwrap();
        std::fs::write(t.path().join("dev/vdb"), luks2_header("cafe-0001", "data")).unwrap();
        assert_eq!(
            resolve(&root, &DeviceSpec::Uuid("cafe-0001".into())),
            Some(PathBuf::from("/dev/vdb"))
        );
        assert_eq!(
            resolve(&root, &DeviceSpec::Label("data".into())),
            Some(PathBuf::from("/dev/vdb"))
        );
        assert_eq!(resolve(&root, &DeviceSpec::Uuid("beef".into())), None);
        assert_eq!(
            resolve(&root, &DeviceSpec::Path("/dev/vda".into())),
            Some(PathBuf::from("/dev/vda"))
        );
        assert_eq!(resolve(&root, &DeviceSpec::Path("/dev/vdz".into())), None);

        assert!(!mapper_exists(&root, "root"));
        std::fs::create_dir_all(t.path().join("sys/block/dm-0/dm")).unwrap();
        std::fs::write(t.path().join("sys/block/dm-0/dm/name"), "root\n").unwrap();
        assert!(mapper_exists(&root, "root"));
    }

    /// sysfs as the kernel lays it out: disks in /sys/class/block, each
    /// disk's partitions as subfolders with a `partition` number file.
    fn disk_tree(t: &Path, disk: &str, image: &[u8], parts: &[(&str, u32)]) {
        let sys = t.join("sys/class/block").join(disk);
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::create_dir_all(t.join("dev")).unwrap();
        std::fs::write(t.join("dev").join(disk), image).unwrap();
        for (p, n) in parts {
            std::fs::create_dir_all(sys.join(p)).unwrap();
            std::fs::write(sys.join(p).join("partition"), format!("{n}\n")).unwrap();
            std::fs::create_dir_all(t.join("sys/class/block").join(p)).unwrap();
            std::fs::write(
                t.join("sys/class/block").join(p).join("partition"),
                format!("{n}\n"),
            )
            .unwrap();
            std::fs::write(t.join("dev").join(p), b"").unwrap();
        }
    }

    #[test]
    fn partuuid_and_partlabel_without_udev() {
        use partition::tests::{gpt_disk, GUID};
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        disk_tree(t.path(), "vda", &[0u8; 4096], &[]);
        disk_tree(
            t.path(),
            "vdb",
            &gpt_disk(&[(0, [7; 16], "boot"), (1, GUID, "cryptroot")]),
            &[("vdb1", 1), ("vdb2", 2)],
        );
        let want = Some(PathBuf::from("/dev/vdb2"));
        let parse = |s: &str| DeviceSpec::parse(s).unwrap();
        assert_eq!(
            resolve(
                &root,
                &parse("PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de4")
            ),
            want
        );
        assert_eq!(
            resolve(
                &root,
                &parse("PARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4")
            ),
            want
        );
        assert_eq!(resolve(&root, &parse("PARTLABEL=cryptroot")), want);
        // A by-partuuid / by-partlabel path with no udev to make the link.
        assert_eq!(
            resolve(
                &root,
                &parse("/dev/disk/by-partuuid/0fc63daf-8483-4772-8e79-3d69d8477de4")
            ),
            want
        );
        assert_eq!(
            resolve(&root, &parse("/dev/disk/by-partlabel/cryptroot")),
            want
        );
        assert_eq!(
            resolve(&root, &parse("PARTLABEL=boot")),
            Some(PathBuf::from("/dev/vdb1"))
        );
        assert_eq!(resolve(&root, &parse("PARTLABEL=nope")), None);
        assert_eq!(resolve(&root, &parse("/dev/disk/by-id/virtio-x")), None);
    }

    #[test]
    fn udev_links_win_and_by_paths_map_to_tags() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        std::fs::create_dir_all(t.path().join("dev/disk/by-partuuid")).unwrap();
        std::fs::write(t.path().join("dev/disk/by-partuuid/1234abcd-02"), b"").unwrap();
        assert_eq!(
            resolve(&root, &DeviceSpec::parse("PARTUUID=1234ABCD-02").unwrap()),
            Some(PathBuf::from("/dev/disk/by-partuuid/1234abcd-02"))
        );
        // No udev link: a by-uuid path is found by its LUKS header.
        std::fs::create_dir_all(t.path().join("sys/class/block/vdc")).unwrap();
        std::fs::write(
            t.path().join("dev/vdc"),
            luks2_header("cafe-0002", "my data"),
        )
        .unwrap();
        assert_eq!(
            resolve(
                &root,
                &DeviceSpec::parse("/dev/disk/by-uuid/cafe-0002").unwrap()
            ),
            Some(PathBuf::from("/dev/vdc"))
        );
        assert_eq!(
            resolve(
                &root,
                &DeviceSpec::parse("/dev/disk/by-label/my\\x20data").unwrap()
            ),
            Some(PathBuf::from("/dev/vdc"))
        );
    }
}
