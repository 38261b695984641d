//! What each `portcullis rescue` command reports: the typed `details`
//! object that `--json` prints (its key names are a contract, pinned by
//! `fixtures/flows/*.json`), and the `inspect` table for people. Pure.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::bootentry::BootEntry;
use super::check::Verdict;
use super::discover::{MainSystem, Peek};
use super::handover::{Flavour, Volume};
use super::kexec::Choice;
use super::lsblk::Dev;
use super::luks::Header;
use super::plan::MountItem;
use super::state::{self, Facts};
use serde::Serialize;

/// A flow's report. Untagged: each variant prints as its own object, so
/// the JSON is what the command names it, with no wrapper.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Details {
    Inspect(Box<InspectReport>),
    Unlock(Unlocked),
    Mount(Box<MountReport>),
    Check(CheckReport),
    Chroot(ChrootReport),
    Close(CloseReport),
    Kexec(Box<KexecReport>),
    DryRun(DryRun),
}

impl Details {
    /// A `--dry-run` that stopped before anything ran.
    pub fn dry_run() -> Self {
        Details::DryRun(DryRun { dry_run: true })
    }
}

#[derive(Debug, Serialize)]
pub struct DryRun {
    #[serde(rename = "dry-run")]
    pub dry_run: bool,
}

/// `inspect`: the rescue system, its disks, and what the main system looks
/// like from there.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InspectReport {
    pub rescue: RescueSystem,
    pub devices: Vec<Dev>,
    pub luks: Vec<LuksDevice>,
    /// Unmounted filesystems, looked at read-only.
    pub filesystems: Vec<Peek>,
    pub main_system: Option<MainSystem>,
    pub mounted_at_target: bool,
    /// `None` when the main system is not mounted (its /boot is unread).
    pub boot_entries: Option<Vec<BootEntry>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RescueSystem {
    pub mem_total_kib: Option<u64>,
    pub mem_available_kib: Option<u64>,
    pub lockdown: Option<String>,
    pub secure_boot: Option<bool>,
    pub systemd: bool,
    pub swap_active: bool,
    pub missing_tools: Vec<&'static str>,
}

impl RescueSystem {
    pub fn of(facts: &Facts) -> Self {
        RescueSystem {
            mem_total_kib: facts.mem_total_kib,
            mem_available_kib: facts.mem_available_kib,
            lockdown: facts.lockdown.clone(),
            secure_boot: facts.secure_boot,
            systemd: facts.systemd,
            swap_active: facts.swap_active,
            missing_tools: state::TOOLS
                .iter()
                .map(|t| t.0)
                .filter(|t| !facts.has(t))
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LuksDevice {
    pub device: String,
    /// `None` when cryptsetup is missing or the header does not parse.
    pub header: Option<Header>,
    /// The mapping it is open as, if it is.
    pub open_as: Option<String>,
    pub warnings: Vec<String>,
    /// The largest keyslot memory cost: what opening it may need.
    pub max_kdf_memory_kib: Option<u64>,
}

/// `unlock` (and the unlock part of `kexec`): device paths by outcome.
#[derive(Debug, Default, Serialize)]
pub struct Unlocked {
    pub opened: Vec<String>,
    #[serde(rename = "already-open")]
    pub already: Vec<String>,
    #[serde(rename = "wrong-passphrase")]
    pub wrong: Vec<String>,
    pub failed: Vec<String>,
}

/// `mount`: where, what, and what was left out.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MountReport {
    pub target: String,
    pub main_system: MainSystem,
    pub mounts: Vec<MountItem>,
    pub warnings: Vec<String>,
}

/// `check`: one verdict per filesystem.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub filesystems: Vec<Checked>,
}

#[derive(Debug, Serialize)]
pub struct Checked {
    pub device: String,
    pub fstype: String,
    pub mountpoints: Vec<String>,
    pub result: Verdict,
}

/// `chroot`: the command's status and output.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ChrootReport {
    pub exit_status: Option<u32>,
    pub stdout: String,
    pub stderr: String,
}

/// `close`: what is still mounted under the target and still open.
#[derive(Debug, Serialize)]
pub struct CloseReport {
    pub mounted: Vec<String>,
    pub open: Vec<String>,
}

/// `kexec`: what boots, and whether the passphrase goes along.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct KexecReport {
    pub choice: Choice,
    pub handover: Option<Flavour>,
    pub handover_volumes: Vec<Volume>,
    pub handover_impossible: Option<String>,
    /// kexec's load flag: `-s` (kexec_file_load) or `-c` (kexec_load).
    pub load: &'static str,
}

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

/// The `inspect` table for people: one section per concern, in the order
/// an admin reads them (what the rescue system can do, its disks, the LUKS
/// headers, what the filesystems hold, where the main system is, how it
/// boots).
pub fn table(facts: &Facts, r: &InspectReport, target: &str) -> String {
    let mut s = rescue_section(facts);
    s.push_str(&devices_section(&r.devices));
    for l in &r.luks {
        s.push_str(&luks_section(l));
    }
    s.push_str(&peeks_section(&r.filesystems));
    s.push_str(&main_section(facts, r, target));
    if let Some(entries) = &r.boot_entries {
        s.push_str(&boot_section(entries));
    }
    s
}

fn rescue_section(facts: &Facts) -> String {
    let missing: Vec<String> = state::TOOLS
        .iter()
        .filter(|t| !facts.has(t.0))
        .map(|t| format!("{} ({})", t.0, t.1))
        .collect();
    let mut s = format!(
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
    );
    if missing.is_empty() {
        s.push_str("tools: all present\n");
    } else {
        s.push_str(&format!("tools missing: {}\n", missing.join(", ")));
    }
    s
}

fn devices_section(devices: &[Dev]) -> String {
    let mut s = String::from("\nDEVICE                 TYPE   FSTYPE        SIZE    LABEL       UUID                                  MOUNTED\n");
    for d in devices {
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
    s
}

fn luks_section(l: &LuksDevice) -> String {
    let mut s = format!("\nLUKS {}: ", l.device);
    match &l.header {
        None => s.push_str("header not readable (cryptsetup missing?)\n"),
        Some(h) => {
            s.push_str(&format!(
                "LUKS{} {}, {}\n",
                h.version,
                h.cipher.as_deref().unwrap_or("?"),
                match &l.open_as {
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
    for w in &l.warnings {
        s.push_str(&format!("  WARNING: {w}\n"));
    }
    s
}

fn peeks_section(peeks: &[Peek]) -> String {
    let mut s = String::new();
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
    s
}

/// Where the main system is, and the next command to get further.
fn main_section(facts: &Facts, r: &InspectReport, target: &str) -> String {
    let locked = facts.devices.iter().any(|d| {
        d.is_luks()
            && !r
                .luks
                .iter()
                .any(|l| l.device == d.path && l.open_as.is_some())
    });
    let mut s = match (&r.main_system, facts.mount_at(target)) {
        (_, Some(m)) => format!(
            "\nmain system: mounted at {target} from {} ({})\n",
            m.source,
            if m.read_only() {
                "read-only"
            } else {
                "read-write"
            }
        ),
        (Some(m), None) => format!(
            "\nmain system: {}{} ({} fstab entries); next: `portcullis rescue mount HOST`\n",
            m.device,
            m.subvol
                .as_ref()
                .map(|v| format!(" subvolume {v}"))
                .unwrap_or_default(),
            m.fstab.len()
        ),
        (None, None) if locked => {
            "\nmain system: not visible yet; next: `portcullis rescue unlock HOST`\n".into()
        }
        (None, None) => "\nmain system: no filesystem with an /etc/fstab found\n".into(),
    };
    // portcullis does not activate LVM: say so rather than show nothing.
    if facts
        .devices
        .iter()
        .any(|d| d.fstype.as_deref() == Some("LVM2_member"))
    {
        s.push_str("LVM: volume groups are not activated by portcullis; run `vgchange -ay` on the rescue system, then mount\n");
    }
    s
}

fn boot_section(entries: &[BootEntry]) -> String {
    let mut s = String::from("boot entries (for kexec --entry N):\n");
    for (i, e) in entries.iter().enumerate() {
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
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
        let r = InspectReport {
            rescue: RescueSystem::of(&f),
            devices: f.devices.clone(),
            luks: vec![LuksDevice {
                device: dev.path,
                max_kdf_memory_kib: h.as_ref().and_then(crate::rescue::luks::max_memory_kib),
                header: h,
                open_as: None,
                warnings: w,
            }],
            filesystems: vec![],
            main_system: None,
            mounted_at_target: false,
            boot_entries: None,
        };
        let text = table(&f, &r, "/mnt/portcullis");
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
