//! The main system's `/etc/fstab`: which filesystems make up the system and
//! with which options (btrfs `subvol=`, a separate `/boot`). Pure parsing;
//! the mount plan is built in [`super::plan`].

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub spec: String,
    pub mountpoint: String,
    pub fstype: String,
    pub options: Vec<String>,
    pub passno: u32,
}

/// fstab and `/proc/self/mountinfo` escape spaces and other bytes as
/// `\040`-style octal; this undoes it.
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if let (b'\\', Some(&[x, y, z])) = (c, b.get(i + 1..i + 4)) {
            if [x, y, z].iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = (x - b'0') as u32 * 64 + (y - b'0') as u32 * 8 + (z - b'0') as u32;
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let spec = unescape(w.next()?);
            let mountpoint = unescape(w.next()?);
            let fstype = w.next()?.to_string();
            let options = w
                .next()
                .unwrap_or("defaults")
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect();
            let _freq = w.next();
            let passno = w.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            Some(Entry {
                spec,
                mountpoint,
                fstype,
                options,
                passno,
            })
        })
        .collect()
}

impl Entry {
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }

    pub fn has(&self, flag: &str) -> bool {
        self.options.iter().any(|o| o == flag)
    }

    /// A local filesystem that belongs to the installed system (not swap,
    /// not a pseudo or network filesystem, not a bind mount).
    pub fn is_local_fs(&self) -> bool {
        const LOCAL: &[&str] = &[
            "btrfs", "ext2", "ext3", "ext4", "xfs", "vfat", "f2fs", "auto",
        ];
        self.mountpoint.starts_with('/')
            && LOCAL.contains(&self.fstype.as_str())
            && !self.has("bind")
    }

    /// `/`, `/usr` and the boot partitions are needed to boot or to kexec,
    /// even when marked `noauto`.
    pub fn is_essential(&self) -> bool {
        matches!(
            self.mountpoint.as_str(),
            "/" | "/usr" | "/boot" | "/efi" | "/boot/efi"
        )
    }

    /// The btrfs subvolume path named in the options, without leading `/`.
    pub fn subvol(&self) -> Option<&str> {
        self.option("subvol").map(|s| s.trim_start_matches('/'))
    }
}

/// Mount options for the rescue side: the entry's own options minus those
/// that only mean something at boot, plus `ro` unless writing was asked for.
pub fn rescue_options(e: &Entry, rw: bool) -> String {
    let mut out: Vec<&str> = e
        .options
        .iter()
        .map(String::as_str)
        .filter(|o| {
            !matches!(
                *o,
                "defaults"
                    | "ro"
                    | "rw"
                    | "noauto"
                    | "auto"
                    | "nofail"
                    | "user"
                    | "users"
                    | "_netdev"
            ) && !o.starts_with("x-")
                && !o.starts_with("comment=")
        })
        .collect();
    out.insert(0, if rw { "rw" } else { "ro" });
    out.join(",")
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

    #[test]
    fn debian_btrfs_fstab() {
        let text = include_str!("fixtures/fstab");
        let e = parse(text);
        assert_eq!(e.len(), 5);
        assert_eq!(e[0].mountpoint, "/");
        assert_eq!(e[0].subvol(), Some("@"));
        assert_eq!(e[1].subvol(), Some("@home"));
        assert_eq!(e[2].mountpoint, "/boot");
        assert_eq!(e[2].passno, 2);
        assert!(e[2].is_essential() && e[2].is_local_fs());
        assert_eq!(e[3].fstype, "swap");
        assert!(!e[3].is_local_fs());
        assert_eq!(e[4].mountpoint, "/srv/my data");
        assert_eq!(rescue_options(&e[0], false), "ro,subvol=@,compress=zstd:1");
        assert_eq!(rescue_options(&e[4], true), "rw");
    }

    #[test]
    fn odd_lines() {
        let e = parse("  # only a comment\n/dev/sda1 / ext4\nbroken\n");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].options, ["defaults"]);
        assert_eq!(unescape(r"a\040b\134c"), r"a b\c");
        assert_eq!(unescape(r"tail\04"), r"tail\04");
    }
}
