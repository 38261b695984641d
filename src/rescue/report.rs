//! The `inspect` table for people. Pure formatting.

use super::discover::{MainSystem, Peek};
use super::kexec::BootConfig;
use super::lsblk::Dev;
use super::luks::Header;
use super::state::{self, Facts};

fn mib(kib: u64) -> String {
    format!("{} MiB", kib / 1024)
}

fn size(bytes: Option<u64>) -> String {
    match bytes {
        None => "-".into(),
        Some(b) if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        Some(b) => format!("{}M", b >> 20),
    }
}

pub type LuksRow = (Dev, Option<Header>, Option<String>, Vec<String>);

pub fn inspect(
    facts: &Facts,
    luks: &[LuksRow],
    peeks: &[Peek],
    main: Option<&MainSystem>,
    target: &str,
    boot: Option<&BootConfig>,
) -> String {
    let mut s = String::new();
    let missing: Vec<String> = state::TOOLS
        .iter()
        .filter(|t| !facts.has(t.0))
        .map(|t| format!("{} ({})", t.0, t.1))
        .collect();
    s.push_str(&format!(
        "rescue system: RAM {} total, {} available; lockdown {}; Secure Boot {}; swap {}\n",
        facts.mem_total_kib.map_or("?".into(), mib),
        facts.mem_available_kib.map_or("?".into(), mib),
        facts.lockdown.as_deref().unwrap_or("not reported"),
        facts
            .secure_boot
            .map_or("not reported", |b| if b { "on" } else { "off" }),
        if facts.swap_active {
            "active (tmpfs pages may reach disk)"
        } else {
            "none"
        },
    ));
    if missing.is_empty() {
        s.push_str("tools: all present\n");
    } else {
        s.push_str(&format!("tools missing: {}\n", missing.join(", ")));
    }
    s.push_str("\nDEVICE                 TYPE   FSTYPE        SIZE    LABEL       UUID                                  MOUNTED\n");
    for d in &facts.devices {
        s.push_str(&format!(
            "{:<22} {:<6} {:<13} {:<7} {:<11} {:<37} {}\n",
            d.path,
            d.kind,
            d.fstype.as_deref().unwrap_or("-"),
            size(d.size),
            d.label.as_deref().unwrap_or("-"),
            d.uuid.as_deref().unwrap_or("-"),
            d.mountpoint.as_deref().unwrap_or("-"),
        ));
    }
    for (d, h, open, warnings) in luks {
        s.push_str(&format!("\nLUKS {}: ", d.path));
        match h {
            None => s.push_str("header not readable (cryptsetup missing?)\n"),
            Some(h) => {
                s.push_str(&format!(
                    "LUKS{} {}, {}\n",
                    h.version,
                    h.cipher.as_deref().unwrap_or("?"),
                    match open {
                        Some(m) => format!("open as {m}"),
                        None => "locked".into(),
                    }
                ));
                for k in &h.keyslots {
                    let cost = match k.memory_kib {
                        Some(m) => format!(
                            "memory {}, time {}, threads {}",
                            mib(m),
                            k.time_cost.unwrap_or(0),
                            k.threads.unwrap_or(0)
                        ),
                        None => format!("{} iterations", k.iterations.unwrap_or(0)),
                    };
                    s.push_str(&format!("  keyslot {}: {} ({cost})\n", k.id, k.kdf));
                }
            }
        }
        for w in warnings {
            s.push_str(&format!("  WARNING: {w}\n"));
        }
    }
    if !peeks.is_empty() {
        s.push_str("\nfilesystems (looked at read-only):\n");
    }
    for p in peeks {
        s.push_str(&format!("  {} {}:", p.device, p.fstype));
        if let Some(e) = &p.error {
            s.push_str(&format!(" {e}\n"));
            continue;
        }
        if !p.subvols.is_empty() {
            s.push_str(&format!(" subvolumes {};", p.subvols.join(", ")));
        }
        for r in &p.roots {
            s.push_str(&format!(
                " a system root{};",
                if r.dir.is_empty() {
                    String::new()
                } else {
                    format!(" in {}", r.dir)
                }
            ));
        }
        if p.kernels.is_empty() {
            s.push_str(" no kernels\n");
        } else {
            s.push_str(&format!(" kernels {}\n", p.kernels.join(", ")));
        }
    }
    let locked = facts
        .devices
        .iter()
        .any(|d| d.is_luks() && !luks.iter().any(|l| l.0.path == d.path && l.2.is_some()));
    match (main, facts.mount_at(target)) {
        (_, Some(m)) => s.push_str(&format!(
            "\nmain system: mounted at {target} from {} ({})\n",
            m.source,
            if m.read_only() {
                "read-only"
            } else {
                "read-write"
            }
        )),
        (Some(m), None) => s.push_str(&format!(
            "\nmain system: {}{} ({} fstab entries); next: `portcullis rescue mount HOST`\n",
            m.device,
            m.subvol
                .as_ref()
                .map(|v| format!(" subvolume {v}"))
                .unwrap_or_default(),
            m.fstab.len()
        )),
        (None, None) if locked => {
            s.push_str("\nmain system: not visible yet; next: `portcullis rescue unlock HOST`\n")
        }
        (None, None) => s.push_str("\nmain system: no filesystem with an /etc/fstab found\n"),
    }
    if facts
        .devices
        .iter()
        .any(|d| d.fstype.as_deref() == Some("LVM2_member"))
    {
        s.push_str("LVM: volume groups are not activated by portcullis; run `vgchange -ay` on the rescue system, then mount\n");
    }
    if let Some(b) = boot {
        s.push_str("boot entries (for kexec --entry N):\n");
        for (i, e) in b.entries.iter().enumerate() {
            s.push_str(&format!(
                "  [{i}] {} ({}): {} {}{}\n",
                e.title,
                e.source,
                e.kernel,
                e.initrds.join(" "),
                e.problem
                    .as_ref()
                    .map(|p| format!(" — {p}"))
                    .unwrap_or_default()
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rescue::state::{parse_facts, tests::probe_output};

    #[test]
    fn table_mentions_the_essentials() {
        let b = "@@portcullis-r";
        let f = parse_facts(
            &probe_output(b, "", "22 1 254:0 / / rw - ext4 /dev/vda rw\n"),
            b,
        );
        let dev = f.devices.iter().find(|d| d.is_luks()).unwrap().clone();
        let h = crate::rescue::luks::parse(include_str!("fixtures/luksdump-luks2.txt"));
        let w = crate::rescue::luks::memory_warnings(
            "/dev/vdb2",
            h.as_ref().unwrap(),
            Some(512 * 1024),
        );
        let text = inspect(&f, &[(dev, h, None, w)], &[], None, "/mnt/portcullis", None);
        assert!(
            text.contains("RAM 976 MiB total, 781 MiB available"),
            "{text}"
        );
        assert!(
            text.contains("tools missing: xfs_repair (xfsprogs), fsck.vfat (dosfstools)"),
            "{text}"
        );
        assert!(
            text.contains("LUKS /dev/vdb2: LUKS2 aes-xts-plain64, locked"),
            "{text}"
        );
        assert!(
            text.contains("keyslot 0: argon2id (memory 64 MiB, time 4, threads 2)"),
            "{text}"
        );
        assert!(
            text.contains("WARNING: /dev/vdb2: keyslot 2 (argon2i) needs 1024 MiB"),
            "{text}"
        );
        assert!(
            text.contains("next: `portcullis rescue unlock HOST`"),
            "{text}"
        );
    }
}
