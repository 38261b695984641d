//! The block devices of the rescue system, from `lsblk -J`: a flat list with
//! each device's parent, so "the open mapping of this LUKS partition" and
//! "the device with this UUID" are simple look-ups. Pure parsing.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use anyhow::{Context, Result};
use serde_json::Value;

/// The command whose output [`parse`] reads.
pub const COMMAND: &str =
    "lsblk -J -b -o NAME,PATH,TYPE,FSTYPE,UUID,PARTUUID,LABEL,PARTLABEL,SIZE,MOUNTPOINT";

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Dev {
    pub name: String,
    pub path: String,
    /// disk, part, crypt, lvm, loop, rom…
    #[serde(rename = "type")]
    pub kind: String,
    pub fstype: Option<String>,
    pub uuid: Option<String>,
    pub partuuid: Option<String>,
    pub label: Option<String>,
    pub partlabel: Option<String>,
    pub size: Option<u64>,
    pub mountpoint: Option<String>,
    /// Path of the device this one sits on (a crypt mapping's partition).
    pub parent: Option<String>,
}

impl Dev {
    pub fn is_luks(&self) -> bool {
        self.fstype.as_deref() == Some("crypto_LUKS")
    }
}

/// lsblk prints numbers as strings in some versions and as numbers in others.
fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn walk(v: &Value, parent: Option<&str>, out: &mut Vec<Dev>) {
    let name = text(v, "name").unwrap_or_default();
    let path = text(v, "path").unwrap_or_else(|| format!("/dev/{name}"));
    let dev = Dev {
        name,
        path: path.clone(),
        kind: text(v, "type").unwrap_or_default(),
        fstype: text(v, "fstype"),
        uuid: text(v, "uuid"),
        partuuid: text(v, "partuuid"),
        label: text(v, "label"),
        partlabel: text(v, "partlabel"),
        size: text(v, "size").and_then(|s| s.parse().ok()),
        mountpoint: text(v, "mountpoint"),
        parent: parent.map(str::to_string),
    };
    // The same device shows up under every parent (RAID members, multipath):
    // keep the first. A path that is not absolute or has control characters
    // is no device: it could only reach a command as an option (`-…`) or
    // confuse the printed plan.
    let plausible = path.starts_with('/') && !path.chars().any(char::is_control);
    if plausible && !out.iter().any(|d| d.path == dev.path) {
        out.push(dev);
    }
    if let Some(Value::Array(children)) = v.get("children") {
        for c in children {
            walk(c, Some(&path), out);
        }
    }
}

pub fn parse(json: &str) -> Result<Vec<Dev>> {
    let v: Value = serde_json::from_str(json).context("parsing lsblk -J output")?;
    let mut out = Vec::new();
    if let Some(Value::Array(devs)) = v.get("blockdevices") {
        for d in devs {
            walk(d, None, &mut out);
        }
    }
    Ok(out)
}

/// Look-ups over the device list.
pub trait Devices {
    fn by_path(&self, path: &str) -> Option<&Dev>;
    fn children_of(&self, path: &str) -> Vec<&Dev>;
    /// Resolves `UUID=…`, `LABEL=…`, `PARTUUID=…`, `PARTLABEL=…`,
    /// `/dev/disk/by-*/…` and plain device paths.
    fn resolve(&self, spec: &str) -> Option<&Dev>;
    /// The open crypt mapping on top of a LUKS device, if any.
    fn mapping_of(&self, luks_path: &str) -> Option<&Dev>;
}

impl Devices for [Dev] {
    fn by_path(&self, path: &str) -> Option<&Dev> {
        self.iter().find(|d| d.path == path)
    }

    fn children_of(&self, path: &str) -> Vec<&Dev> {
        self.iter()
            .filter(|d| d.parent.as_deref() == Some(path))
            .collect()
    }

    fn resolve(&self, spec: &str) -> Option<&Dev> {
        let spec = spec.trim_matches('"');
        let by = |f: fn(&Dev) -> Option<&String>, v: &str| {
            // A btrfs spanning devices shares one UUID; its first device is
            // the one to mount.
            self.iter()
                .find(|d| f(d).is_some_and(|x| x.eq_ignore_ascii_case(v)))
        };
        if let Some(v) = spec.strip_prefix("UUID=") {
            return by(|d| d.uuid.as_ref(), v);
        }
        if let Some(v) = spec.strip_prefix("LABEL=") {
            return by(|d| d.label.as_ref(), v);
        }
        if let Some(v) = spec.strip_prefix("PARTUUID=") {
            return by(|d| d.partuuid.as_ref(), v);
        }
        if let Some(v) = spec.strip_prefix("PARTLABEL=") {
            return by(|d| d.partlabel.as_ref(), v);
        }
        for (prefix, f) in [
            (
                "/dev/disk/by-uuid/",
                (|d: &Dev| d.uuid.as_ref()) as fn(&Dev) -> Option<&String>,
            ),
            ("/dev/disk/by-label/", |d: &Dev| d.label.as_ref()),
            ("/dev/disk/by-partuuid/", |d: &Dev| d.partuuid.as_ref()),
            ("/dev/disk/by-partlabel/", |d: &Dev| d.partlabel.as_ref()),
        ] {
            if let Some(v) = spec.strip_prefix(prefix) {
                return by(f, v);
            }
        }
        self.by_path(spec)
    }

    fn mapping_of(&self, luks_path: &str) -> Option<&Dev> {
        self.children_of(luks_path)
            .into_iter()
            .find(|d| d.kind == "crypt")
    }
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

    pub const FIXTURE: &str = include_str!("fixtures/lsblk.json");

    #[test]
    fn parses_tree_and_resolves() {
        let devs = parse(FIXTURE).unwrap();
        let names: Vec<_> = devs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["vda", "vdb", "vdb1", "vdb2", "root"]);
        let luks = devs.by_path("/dev/vdb2").unwrap();
        assert!(luks.is_luks());
        assert_eq!(luks.size, Some(263192576));
        let m = devs.mapping_of("/dev/vdb2").unwrap();
        assert_eq!(m.path, "/dev/mapper/root");
        assert_eq!(m.fstype.as_deref(), Some("btrfs"));
        assert_eq!(
            devs.resolve("UUID=5b3e8a2c-1111-4c4c-9d9d-0123456789ab")
                .unwrap()
                .path,
            "/dev/mapper/root"
        );
        assert_eq!(devs.resolve("LABEL=boot").unwrap().path, "/dev/vdb1");
        assert_eq!(
            devs.resolve("/dev/disk/by-uuid/1c1e9a47-2222-4b4b-8e8e-0123456789ab")
                .unwrap()
                .path,
            "/dev/vdb1"
        );
        assert_eq!(
            devs.resolve("/dev/vda").unwrap().mountpoint.as_deref(),
            Some("/")
        );
        assert!(devs.resolve("UUID=nope").is_none());
    }

    #[test]
    fn numbers_as_strings_and_garbage() {
        let devs =
            parse(r#"{"blockdevices":[{"name":"sda","size":"1024","type":"disk"}]}"#).unwrap();
        assert_eq!(devs[0].size, Some(1024));
        assert_eq!(devs[0].path, "/dev/sda");
        assert!(parse("lsblk: command not found").is_err());
    }

    #[test]
    fn implausible_paths_are_dropped() {
        // A hostile rescue system's lsblk could name a device `-…`, which a
        // command would read as an option.
        let devs = parse(
            r#"{"blockdevices":[
               {"name":"x","path":"--header=/tmp/evil","type":"disk","fstype":"crypto_LUKS"},
               {"name":"y","path":"/dev/y\u001b[2J","type":"disk"},
               {"name":"vda","path":"/dev/vda","type":"disk"}]}"#,
        )
        .unwrap();
        let paths: Vec<_> = devs.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["/dev/vda"]);
    }
}
