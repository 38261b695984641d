//! Which volumes to unlock: device specs (`/dev/…`, `UUID=`, `LABEL=`), the
//! kernel command line (`cryptdevice=`, `rd.luks.name=`, `rd.luks.uuid=`),
//! and finding a device by reading LUKS headers, since a minimal initramfs
//! has no udev and so no `/dev/disk/by-uuid`.

use crate::sys::{read_head, Root};
use std::path::{Path, PathBuf};

/// How a volume's encrypted device is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    Path(PathBuf),
    Uuid(String),
    Label(String),
}

impl DeviceSpec {
    /// Parses `/dev/…`, `UUID=…` or `LABEL=…`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(u) = s.strip_prefix("UUID=") {
            let u = u.trim_matches('"').to_ascii_lowercase();
            if u.is_empty() || !u.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                return Err(format!("{s:?} is not a valid UUID"));
            }
            Ok(DeviceSpec::Uuid(u))
        } else if let Some(l) = s.strip_prefix("LABEL=") {
            let l = l.trim_matches('"');
            if l.is_empty() || l.len() > 47 {
                return Err(format!("{s:?}: a LUKS2 label has 1 to 47 bytes"));
            }
            Ok(DeviceSpec::Label(l.to_string()))
        } else if s.starts_with('/') {
            Ok(DeviceSpec::Path(PathBuf::from(s)))
        } else {
            Err(format!(
                "{s:?} is not a device: use an absolute path (/dev/vda2), UUID=… or LABEL=…"
            ))
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Path(p) => write!(f, "{}", p.display()),
            DeviceSpec::Uuid(u) => write!(f, "UUID={u}"),
            DeviceSpec::Label(l) => write!(f, "LABEL={l}"),
        }
    }
}

/// One volume to open: its device and the device-mapper name to give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    pub device: DeviceSpec,
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
        let parsed = if let Some(v) = word.strip_prefix("cryptdevice=") {
            // mkinitcpio: cryptdevice=device:dmname[:options]
            let mut parts = v.splitn(3, ':');
            let dev = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            DeviceSpec::parse(dev).map(|d| (d, name.to_string()))
        } else if let Some(v) = word.strip_prefix("rd.luks.name=") {
            // systemd: rd.luks.name=UUID=name
            match v.split_once('=') {
                Some((uuid, name)) => DeviceSpec::parse(&format!("UUID={}", strip_luks(uuid)))
                    .map(|d| (d, name.to_string())),
                None => Err(format!("{word:?}: expected rd.luks.name=UUID=NAME")),
            }
        } else if let Some(v) = word.strip_prefix("rd.luks.uuid=") {
            let uuid = strip_luks(v);
            DeviceSpec::parse(&format!("UUID={uuid}")).map(|d| (d, format!("luks-{uuid}")))
        } else {
            continue;
        };
        match parsed {
            Ok((device, name)) if valid_mapper_name(&name) => {
                if !vols.iter().any(|v| v.name == name) {
                    vols.push(Volume { name, device });
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

/// Finds the device node for `spec`. Paths are taken as given (if present);
/// UUID and LABEL are looked up in `/dev/disk/by-*` when udev made them, else
/// by reading the header of every block device in `/sys/class/block`.
/// Returns the path as the system sees it (without the root prefix).
pub fn resolve(root: &Root, spec: &DeviceSpec) -> Option<PathBuf> {
    let (dir, want) = match spec {
        DeviceSpec::Path(p) => return root.join(p).exists().then(|| p.clone()),
        DeviceSpec::Uuid(u) => ("/dev/disk/by-uuid", u.as_str()),
        DeviceSpec::Label(l) => ("/dev/disk/by-label", l.as_str()),
    };
    let link = Path::new(dir).join(want);
    if root.join(&link).exists() {
        return Some(link);
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
            DeviceSpec::Path(_) => false,
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
        assert!(DeviceSpec::parse("vda2")
            .unwrap_err()
            .contains("absolute path"));
        assert!(DeviceSpec::parse("UUID=zz").is_err());
        assert!(DeviceSpec::parse("PARTUUID=1234").is_err());
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
                    device: DeviceSpec::Uuid("1111-aa".into())
                },
                Volume {
                    name: "data".into(),
                    device: DeviceSpec::Uuid("2222".into())
                },
                Volume {
                    name: "luks-3333".into(),
                    device: DeviceSpec::Uuid("3333".into())
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
}
