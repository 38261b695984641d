//! Boot Loader Specification type #1 entries (`loader/entries/*.conf`),
//! as systemd-boot and Fedora's GRUB (`blscfg`) read them: the fields,
//! systemd-boot's sort order and `loader.conf`'s `default` glob. Pure
//! parsing: no file access.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::rescue::bootentry::version_cmp;
use std::cmp::Ordering;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bls {
    /// The file name (`abc-6.8.5.conf`).
    pub file: String,
    pub title: Option<String>,
    pub version: Option<String>,
    pub sort_key: Option<String>,
    pub machine_id: Option<String>,
    pub linux: Option<String>,
    /// `efi` (a unified kernel image: its initrd is inside the PE file).
    pub efi: Option<String>,
    pub initrds: Vec<String>,
    /// Every `options` line, joined with spaces.
    pub options: String,
}

impl Bls {
    /// The id: the file name without `.conf` and without a boot counter
    /// (`+3-0`), as GRUB's blscfg names entries for `saved_entry`.
    pub fn id(&self) -> &str {
        let stem = self.file.strip_suffix(".conf").unwrap_or(&self.file);
        match stem.rsplit_once('+') {
            Some((base, counter))
                if !counter.is_empty()
                    && counter.chars().all(|c| c.is_ascii_digit() || c == '-') =>
            {
                base
            }
            _ => stem,
        }
    }
}

pub fn parse(file: &str, text: &str) -> Bls {
    let mut e = Bls {
        file: file.to_string(),
        ..Bls::default()
    };
    let mut options = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim().to_string();
        match key {
            "title" => e.title = Some(value),
            "version" => e.version = Some(value),
            "sort-key" => e.sort_key = Some(value),
            "machine-id" => e.machine_id = Some(value),
            "linux" => e.linux = Some(value),
            "efi" => e.efi = Some(value),
            "initrd" => e
                .initrds
                .extend(value.split_whitespace().map(str::to_string)),
            "options" => options.push(value),
            _ => {}
        }
    }
    e.options = options.join(" ");
    e
}

/// systemd-boot's menu order: entries with a `sort-key` first, by it,
/// then machine id, then version, newest first; the rest by file name,
/// newest first.
pub fn sort_sdboot(entries: &mut [Bls]) {
    entries.sort_by(|a, b| match (&a.sort_key, &b.sort_key) {
        (Some(x), Some(y)) => x
            .cmp(y)
            .then_with(|| a.machine_id.cmp(&b.machine_id))
            .then_with(|| {
                version_cmp(
                    b.version.as_deref().unwrap_or_default(),
                    a.version.as_deref().unwrap_or_default(),
                )
            })
            .then_with(|| version_cmp(&b.file, &a.file)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => version_cmp(&b.file, &a.file),
    });
}

/// GRUB's blscfg order: by version (else file name), newest first.
pub fn sort_grub(entries: &mut [Bls]) {
    entries.sort_by(|a, b| {
        let key = |e: &Bls| e.version.clone().unwrap_or_else(|| e.id().to_string());
        version_cmp(&key(b), &key(a)).then_with(|| version_cmp(&b.file, &a.file))
    });
}

/// `loader.conf`'s `default` value, if any.
pub fn loader_default(loader_conf: &str) -> Option<String> {
    loader_conf
        .lines()
        .map(str::trim)
        .filter_map(|l| l.split_once(char::is_whitespace))
        .filter(|(k, _)| *k == "default")
        .map(|(_, v)| v.trim().to_string())
        .next_back()
}

/// Whether `pattern` (a glob: `*`, `?`, `[…]` kept literal) names
/// `entry`: its file name, with or without `.conf`.
/// systemd-boot compares case-folded.
pub fn matches(pattern: &str, entry: &Bls) -> bool {
    let pattern = pattern.to_lowercase();
    let file = entry.file.to_lowercase();
    let stem = file.strip_suffix(".conf").unwrap_or(&file);
    let id = entry.id().to_lowercase();
    [file.as_str(), stem, id.as_str()]
        .iter()
        .any(|name| glob(pattern.as_bytes(), name.as_bytes()))
}

/// `*` and `?` globbing, iterative (no recursion on hostile patterns).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == name.get(n) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .unwrap_or_default()
        .iter()
        .all(|&c| c == b'*')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_ids() {
        let e = parse(
            "4f3c-6.8.5-301.fc40.x86_64+2-1.conf",
            "title Fedora Linux (6.8.5-301.fc40.x86_64) 40\nversion 6.8.5-301.fc40.x86_64\n\
             linux /vmlinuz-6.8.5-301.fc40.x86_64\ninitrd /intel-ucode.img\ninitrd /initramfs-6.8.5-301.fc40.x86_64.img\n\
             options root=UUID=x ro\noptions rd.neednet=1\n# comment\ngrub_class fedora\n",
        );
        assert_eq!(e.id(), "4f3c-6.8.5-301.fc40.x86_64");
        assert_eq!(
            e.initrds,
            ["/intel-ucode.img", "/initramfs-6.8.5-301.fc40.x86_64.img"]
        );
        assert_eq!(e.options, "root=UUID=x ro rd.neednet=1");
        assert_eq!(e.version.as_deref(), Some("6.8.5-301.fc40.x86_64"));
        assert_eq!(parse("a.conf", "").id(), "a");
    }

    /// systemd's own case (src/test/test-bootspec.c).
    #[test]
    fn sdboot_order_as_systemd_tests_it() {
        let files = [
            ("a-10.conf", "version 10\nmachine-id dd\n"),
            ("a-5.conf", "version 5\nmachine-id dd\n"),
            ("b.conf", "version 3\nmachine-id b7\n"),
            ("c.conf", "sort-key xxxx\nversion 5\nmachine-id 30\n"),
            ("cx.conf", "sort-key xxxx\nversion 10\nmachine-id 30\n"),
            ("d.conf", "sort-key kkkk\nversion 100\nmachine-id 81\n"),
        ];
        let mut all: Vec<Bls> = files.iter().map(|(f, t)| parse(f, t)).collect();
        sort_sdboot(&mut all);
        let order: Vec<&str> = all.iter().map(|e| e.file.as_str()).collect();
        assert_eq!(
            order,
            [
                "d.conf",
                "cx.conf",
                "c.conf",
                "b.conf",
                "a-10.conf",
                "a-5.conf"
            ]
        );
    }

    #[test]
    fn sdboot_order() {
        let mk = |file: &str, key: Option<&str>, version: &str| Bls {
            file: file.into(),
            sort_key: key.map(Into::into),
            version: Some(version.into()),
            ..Bls::default()
        };
        let mut all = vec![
            mk("old.conf", None, "1"),
            mk("arch-6.9.conf", Some("arch"), "6.9"),
            mk("arch-6.10.conf", Some("arch"), "6.10"),
            mk("new-2.conf", None, "2"),
            mk("debian.conf", Some("debian"), "6.1"),
        ];
        sort_sdboot(&mut all);
        let files: Vec<&str> = all.iter().map(|e| e.file.as_str()).collect();
        assert_eq!(
            files,
            [
                "arch-6.10.conf",
                "arch-6.9.conf",
                "debian.conf",
                "old.conf",
                "new-2.conf"
            ]
        );
    }

    #[test]
    fn default_globs() {
        assert_eq!(
            loader_default("timeout 3\ndefault arch-*\n#default x\n").as_deref(),
            Some("arch-*")
        );
        assert_eq!(loader_default("timeout 3\n"), None);
        let e = parse("arch-linux.conf", "");
        assert!(matches("arch-*", &e));
        assert!(matches("arch-linux.conf", &e));
        assert!(matches("arch-linux", &e));
        assert!(matches("*linu?", &e));
        assert!(!matches("debian*", &e));
        assert!(!matches("", &e));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
    }
}
