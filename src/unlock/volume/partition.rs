//! Partition identities read from the partition table itself (GPT entries,
//! or the MBR disk signature), for `PARTUUID=` and `PARTLABEL=` where no udev
//! made `/dev/disk/by-partuuid` (a busybox initramfs without the udev hook).
//! Pure parsing plus one sysfs walk; never writes anything.

use crate::sys::{read_head, Root};
use std::path::{Path, PathBuf};

/// One partition as the table describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartEntry {
    /// 1-based partition number, as the kernel numbers partitions.
    pub number: u32,
    /// Lowercase, as udev and blkid print it (GPT GUID, or `SSSSSSSS-NN` on MBR).
    pub uuid: String,
    /// GPT partition name; empty on MBR.
    pub label: String,
}

const GPT_SIGNATURE: &[u8] = b"EFI PART";
/// Sanity bounds: a GPT normally has 128 entries of 128 bytes.
const MAX_ENTRIES: u32 = 1024;
const MAX_ENTRY_SIZE: u32 = 4096;

fn u32_le(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn u64_le(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// GUID bytes as text: the first three fields are little-endian on disk.
fn guid_text(b: &[u8]) -> Option<String> {
    let b: &[u8; 16] = b.get(..16)?.try_into().ok()?;
    let hex = |s: &[u8]| s.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Some(format!(
        "{:08x}-{:04x}-{:04x}-{}-{}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        hex(&b[8..10]),
        hex(&b[10..16])
    ))
}

/// Parses the partition table in `disk`, the first bytes of a whole disk
/// (at least the entry array). `sector` is its logical block size.
pub fn parse_table(disk: &[u8], sector: usize) -> Vec<PartEntry> {
    parse_gpt(disk, sector).unwrap_or_else(|| parse_mbr(disk))
}

fn parse_gpt(disk: &[u8], sector: usize) -> Option<Vec<PartEntry>> {
    let hdr = disk.get(sector..sector + 92)?;
    if hdr.get(..8)? != GPT_SIGNATURE {
        return None;
    }
    let entries_lba = usize::try_from(u64_le(hdr, 72)?).ok()?;
    let count = u32_le(hdr, 80)?.min(MAX_ENTRIES);
    let size = u32_le(hdr, 84)?;
    if !(128..=MAX_ENTRY_SIZE).contains(&size) {
        return None;
    }
    let start = entries_lba.checked_mul(sector)?;
    let mut out = Vec::new();
    for i in 0..count {
        let at = start.checked_add(usize::try_from(i * size).ok()?)?;
        let Some(e) = disk.get(at..at + 128) else {
            break;
        };
        // An all-zero type GUID marks an unused entry.
        if e.get(..16)?.iter().all(|&b| b == 0) {
            continue;
        }
        let name: Vec<u16> = e
            .get(56..128)?
            .chunks_exact(2)
            .filter_map(|c| <[u8; 2]>::try_from(c).ok().map(u16::from_le_bytes))
            .take_while(|&c| c != 0)
            .collect();
        out.push(PartEntry {
            number: i + 1,
            uuid: guid_text(e.get(16..32)?)?,
            label: String::from_utf16_lossy(&name),
        });
    }
    Some(out)
}

/// MBR: PARTUUID is the disk signature and the partition number
/// (`SSSSSSSS-NN`), as blkid reports it. Primary partitions only.
fn parse_mbr(disk: &[u8]) -> Vec<PartEntry> {
    if disk.get(510..512) != Some(&[0x55, 0xaa]) {
        return vec![];
    }
    let Some(sig) = u32_le(disk, 440) else {
        return vec![];
    };
    (0..4u32)
        .filter(|i| {
            let at = 446 + 16 * (*i as usize);
            disk.get(at + 4).is_some_and(|&t| t != 0)
        })
        .map(|i| PartEntry {
            number: i + 1,
            uuid: format!("{sig:08x}-{:02x}", i + 1),
            label: String::new(),
        })
        .collect()
}

/// What to look for.
pub enum Want<'a> {
    Uuid(&'a str),
    Label(&'a str),
}

/// Finds the partition device (`/dev/NAME`) matching `want` by reading the
/// table of every whole disk in `/sys/class/block` and mapping entry numbers
/// to the disk's partitions (`/sys/class/block/DISK/*/partition`).
pub fn find(root: &Root, want: &Want) -> Option<PathBuf> {
    let mut disks: Vec<String> = std::fs::read_dir(root.join("/sys/class/block"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !root
                .join(Path::new("/sys/class/block").join(n).join("partition"))
                .exists()
        })
        .collect();
    disks.sort();
    disks
        .into_iter()
        .find_map(|disk| find_on(root, &disk, want))
}

fn find_on(root: &Root, disk: &str, want: &Want) -> Option<PathBuf> {
    let sys = root.join(Path::new("/sys/class/block").join(disk));
    let sector = std::fs::read_to_string(sys.join("queue/logical_block_size"))
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|s| (512..=4096).contains(s))
        .unwrap_or(512);
    // Header, then the entries (normally from LBA 2, 16 KiB).
    let head = read_head(
        &root.join(Path::new("/dev").join(disk)),
        sector * 2 + 128 * 1024,
    )
    .ok()?;
    let entry = parse_table(&head, sector)
        .into_iter()
        .find(|e| match want {
            Want::Uuid(u) => e.uuid.eq_ignore_ascii_case(u),
            Want::Label(l) => e.label == *l,
        })?;
    let mut parts: Vec<(String, u32)> = std::fs::read_dir(&sys)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = std::fs::read_to_string(e.path().join("partition")).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                n.trim().parse().ok()?,
            ))
        })
        .collect();
    parts.sort();
    parts
        .into_iter()
        .find(|(_, n)| *n == entry.number)
        .map(|(name, _)| PathBuf::from("/dev").join(name))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// A disk image with a GPT: entries at LBA 2, one entry per (guid bytes,
    /// name) at the given index.
    pub(crate) fn gpt_disk(entries: &[(usize, [u8; 16], &str)]) -> Vec<u8> {
        let mut d = vec![0u8; 512 * 40];
        d[510] = 0x55;
        d[511] = 0xaa;
        d[450] = 0xee; // protective MBR
        let h = &mut d[512..];
        h[..8].copy_from_slice(GPT_SIGNATURE);
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        for (i, guid, name) in entries {
            let e = &mut d[1024 + i * 128..1024 + (i + 1) * 128];
            e[..16].copy_from_slice(&[0x0f; 16]); // any non-zero type
            e[16..32].copy_from_slice(guid);
            for (j, c) in name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&c.to_le_bytes());
            }
        }
        d
    }

    /// The on-disk bytes of 0fc63daf-8483-4772-8e79-3d69d8477de4.
    pub(crate) const GUID: [u8; 16] = [
        0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d,
        0xe4,
    ];

    #[test]
    fn gpt_entries() {
        let d = gpt_disk(&[(1, GUID, "cryptroot")]);
        let t = parse_table(&d, 512);
        assert_eq!(
            t,
            vec![PartEntry {
                number: 2,
                uuid: "0fc63daf-8483-4772-8e79-3d69d8477de4".into(),
                label: "cryptroot".into()
            }]
        );
    }

    #[test]
    fn mbr_signature() {
        let mut d = vec![0u8; 1024];
        d[440..444].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
        d[446 + 4] = 0x83;
        d[446 + 16 + 4] = 0x83;
        d[510] = 0x55;
        d[511] = 0xaa;
        let t = parse_table(&d, 512);
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].uuid, "1234abcd-02");
        assert_eq!(t[1].number, 2);
    }

    #[test]
    fn garbage_is_no_table() {
        assert!(parse_table(&[], 512).is_empty());
        assert!(parse_table(&[0u8; 600], 512).is_empty());
        let mut d = gpt_disk(&[(0, GUID, "x")]);
        // Entry size out of bounds: refused, falls back to the (protective) MBR.
        d[512 + 84..512 + 88].copy_from_slice(&0u32.to_le_bytes());
        assert!(parse_table(&d, 512).iter().all(|e| e.label.is_empty()));
        // Truncated entry array: no panic.
        let d = gpt_disk(&[(0, GUID, "x")]);
        assert!(parse_table(&d[..1100], 512)
            .iter()
            .all(|e| e.label.is_empty()));
    }
}
