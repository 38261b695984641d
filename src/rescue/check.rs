//! Filesystem checks, read-only unless repair is asked for: `e2fsck -n`,
//! `btrfs check --readonly` plus device error counters and scrub status,
//! `xfs_repair -n`, `fsck.vfat -n`. Builds the steps and turns their output
//! into "clean" or "needs repair: …". Pure.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::plan::{Effect, MountItem, Step};
use super::shell::{self, join};
use super::state::Facts;
use serde::Serialize;

/// One filesystem to check (a btrfs mounted twice is checked once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub device: String,
    pub fstype: String,
    /// Where the main system mounts it ("/, /home").
    pub mountpoints: Vec<String>,
    /// Where it is mounted on the rescue system right now.
    pub mounted_at: Option<String>,
    pub mounted_rw: bool,
}

pub fn targets(items: &[MountItem], facts: &Facts) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for it in items {
        if let Some(t) = out.iter_mut().find(|t| t.device == it.device) {
            t.mountpoints.push(it.mountpoint.clone());
            continue;
        }
        let mounted = facts.device_mounted(&it.device);
        out.push(Target {
            device: it.device.clone(),
            fstype: it.fstype.clone(),
            mountpoints: vec![it.mountpoint.clone()],
            mounted_at: mounted.first().map(|m| m.mountpoint.clone()),
            mounted_rw: mounted.iter().any(|m| !m.read_only()),
        });
    }
    out
}

/// The tool a filesystem type needs.
pub fn tool_for(fstype: &str) -> Option<&'static str> {
    match fstype {
        "ext2" | "ext3" | "ext4" => Some("e2fsck"),
        "btrfs" => Some("btrfs"),
        "xfs" => Some("xfs_repair"),
        "vfat" => Some("fsck.vfat"),
        _ => None,
    }
}

/// Steps for one filesystem, or why it is not checked.
pub fn steps(t: &Target, facts: &Facts, repair: bool) -> Result<Vec<Step>, String> {
    let Some(tool) = tool_for(&t.fstype) else {
        return Err(format!("no checker for {} here", t.fstype));
    };
    if !facts.has(tool) {
        return Err(format!(
            "not checked: the rescue system lacks `{tool}` (package {})",
            super::state::package_of(tool)
        ));
    }
    let dev = shell::path("device", &t.device).map_err(|e| e.to_string())?;
    if repair && t.mounted_at.is_some() {
        return Err(format!(
            "mounted at {}: a repair needs it unmounted; run `portcullis rescue close HOST --keep-open` first",
            t.mounted_at.as_deref().unwrap_or("?")
        ));
    }
    let mk = |what: String, words: &[&str], ok: &[u32], effect: Effect| {
        let mut s = Step::new(what, join(words), effect);
        s.ok_codes = ok.to_vec();
        s.keep_going = true;
        s
    };
    let mut v = Vec::new();
    match (t.fstype.as_str(), repair) {
        ("ext2" | "ext3" | "ext4", false) => v.push(mk(
            format!("check {dev} ({}) read-only", t.fstype),
            &["e2fsck", "-n", "-f", &dev],
            &[0, 4],
            Effect::Read,
        )),
        ("ext2" | "ext3" | "ext4", true) => v.push(mk(
            format!("repair {dev} ({})", t.fstype),
            &["e2fsck", "-f", "-y", &dev],
            &[0, 1, 2, 4],
            Effect::Destructive,
        )),
        ("btrfs", false) => {
            let mut words = vec!["btrfs", "check", "--readonly"];
            if t.mounted_at.is_some() {
                // Read-only check of a mounted filesystem: btrfs wants --force.
                words.push("--force");
            }
            words.push(&dev);
            v.push(mk(
                format!("check {dev} (btrfs) read-only"),
                &words,
                &[0, 1],
                Effect::Read,
            ));
            if let Some(mp) = &t.mounted_at {
                let mp = shell::path("mount point", mp).map_err(|e| e.to_string())?;
                v.push(mk(
                    format!("read the error counters of {dev}"),
                    &["btrfs", "device", "stats", "-c", &mp],
                    &[0, 64],
                    Effect::Read,
                ));
                v.push(mk(
                    format!("read the last scrub's result on {dev}"),
                    &["btrfs", "scrub", "status", &mp],
                    &[0, 1, 2],
                    Effect::Read,
                ));
            }
        }
        ("btrfs", true) => v.push(mk(
            format!("repair {dev} (btrfs check --repair: last resort, have a backup)"),
            &["btrfs", "check", "--repair", "--force", &dev],
            &[0, 1],
            Effect::Destructive,
        )),
        ("xfs", false) => v.push(mk(
            format!("check {dev} (xfs) read-only"),
            &["xfs_repair", "-n", &dev],
            &[0, 1],
            Effect::Read,
        )),
        ("xfs", true) => v.push(mk(
            format!("repair {dev} (xfs)"),
            &["xfs_repair", &dev],
            &[0],
            Effect::Destructive,
        )),
        ("vfat", false) => v.push(mk(
            format!("check {dev} (vfat) read-only"),
            &["fsck.vfat", "-n", &dev],
            &[0, 1],
            Effect::Read,
        )),
        ("vfat", true) => v.push(mk(
            format!("repair {dev} (vfat)"),
            &["fsck.vfat", "-a", &dev],
            &[0, 1],
            Effect::Destructive,
        )),
        _ => return Err(format!("no checker for {}", t.fstype)),
    }
    Ok(v)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    Clean,
    NeedsRepair { problems: Vec<String> },
    Repaired { notes: Vec<String> },
    NotChecked { why: String },
    Failed { why: String },
}

impl Verdict {
    pub fn describe(&self) -> String {
        match self {
            Verdict::Clean => "clean".into(),
            Verdict::NeedsRepair { problems } => format!("needs repair: {}", problems.join("; ")),
            Verdict::Repaired { notes } if notes.is_empty() => "repaired".into(),
            Verdict::Repaired { notes } => format!("repaired: {}", notes.join("; ")),
            Verdict::NotChecked { why } => why.clone(),
            Verdict::Failed { why } => format!("check failed: {why}"),
        }
    }
}

/// Lines that say what is wrong, at most five.
fn problem_lines(text: &str) -> Vec<String> {
    const WORDS: &[&str] = &[
        "error",
        "corrupt",
        "fix?",
        "fix<y>",
        "mismatch",
        "wrong",
        "invalid",
        "bad ",
        "should be",
        "unattached",
        "not found",
        "damaged",
        "inconsisten",
        "clear?",
    ];
    const CLEAN: &[&str] = &[
        "no error found",
        "found 0 errors",
        "error summary: no errors",
        "0 errors",
    ];
    text.lines()
        .map(str::trim)
        .filter(|l| {
            let low = l.to_ascii_lowercase();
            WORDS.iter().any(|w| low.contains(w)) && !CLEAN.iter().any(|c| low.contains(c))
        })
        .take(5)
        .map(|l| l.chars().take(160).collect())
        .collect()
}

/// One executed check step: its command words, exit status and output.
pub struct Ran<'a> {
    pub step: &'a Step,
    pub status: Option<u32>,
    pub output: &'a str,
}

pub fn verdict(runs: &[Ran], repair: bool) -> Verdict {
    let mut problems = Vec::new();
    for r in runs {
        let cmd = r.step.command.as_str();
        let Some(code) = r.status else {
            return Verdict::Failed {
                why: format!("`{cmd}` ended without a status"),
            };
        };
        if !r.step.ok_codes.contains(&code) {
            let last = r
                .output
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Verdict::Failed {
                why: format!("`{cmd}` exited {code}: {}", last.trim()),
            };
        }
        if cmd.starts_with("btrfs device stats") {
            if code == 64 {
                problems.extend(
                    r.output
                        .lines()
                        .filter(|l| l.split_whitespace().last().is_some_and(|v| v != "0"))
                        .map(|l| {
                            format!(
                                "device error counter {}",
                                l.split_whitespace().collect::<Vec<_>>().join(" ")
                            )
                        })
                        .take(5),
                );
            }
            continue;
        }
        if cmd.starts_with("btrfs scrub status") {
            problems.extend(
                r.output
                    .lines()
                    .filter(|l| {
                        let low = l.to_ascii_lowercase();
                        low.contains("error summary:") && !low.contains("no errors found")
                    })
                    .map(|l| format!("last scrub: {}", l.trim())),
            );
            continue;
        }
        let found = match (repair, cmd.split_whitespace().next().unwrap_or("")) {
            (false, _) => code != 0,
            (true, "e2fsck") => code >= 4,
            (true, _) => code != 0,
        };
        if found {
            let mut lines = problem_lines(r.output);
            if lines.is_empty() {
                lines.push(format!("`{cmd}` exited {code}"));
            }
            problems.extend(lines);
        }
    }
    match (problems.is_empty(), repair) {
        (true, false) => Verdict::Clean,
        (true, true) => Verdict::Repaired { notes: vec![] },
        (false, _) => Verdict::NeedsRepair { problems },
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
    use crate::rescue::state::{parse_facts, tests::probe_output, tests::MOUNTINFO};

    fn facts() -> Facts {
        let b = "@@portcullis-c";
        parse_facts(&probe_output(b, "", MOUNTINFO), b)
    }

    fn items() -> Vec<MountItem> {
        let it = |mp: &str, dev: &str, t: &str| MountItem {
            mountpoint: mp.into(),
            device: dev.into(),
            fstype: t.into(),
            options: "ro".into(),
        };
        vec![
            it("/", "/dev/mapper/root", "btrfs"),
            it("/home", "/dev/mapper/root", "btrfs"),
            it("/boot", "/dev/vdb1", "ext4"),
            it("/efi", "/dev/vdb9", "vfat"),
        ]
    }

    #[test]
    fn plans() {
        let f = facts();
        let t = targets(&items(), &f);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].mountpoints, ["/", "/home"]);
        assert_eq!(t[0].mounted_at.as_deref(), Some("/mnt/portcullis"));
        let s = steps(&t[0], &f, false).unwrap();
        let cmds: Vec<_> = s.iter().map(|s| s.command.as_str()).collect();
        assert_eq!(
            cmds,
            [
                "btrfs check --readonly --force /dev/mapper/root",
                "btrfs device stats -c /mnt/portcullis",
                "btrfs scrub status /mnt/portcullis",
            ]
        );
        assert_eq!(
            steps(&t[1], &f, false).unwrap()[0].command,
            "e2fsck -n -f /dev/vdb1"
        );
        assert!(steps(&t[2], &f, false)
            .unwrap_err()
            .contains("`fsck.vfat` (package dosfstools)"));
        assert!(steps(&t[1], &f, true)
            .unwrap_err()
            .contains("close HOST --keep-open"));
        let mut unmounted = t[1].clone();
        unmounted.mounted_at = None;
        let r = steps(&unmounted, &f, true).unwrap();
        assert_eq!(r[0].command, "e2fsck -f -y /dev/vdb1");
        assert_eq!(r[0].effect, Effect::Destructive);
    }

    #[test]
    fn verdicts() {
        let f = facts();
        let t = targets(&items(), &f);
        let e2 = &steps(&t[1], &f, false).unwrap()[0];
        let clean = "Pass 1: Checking inodes, blocks, and sizes\nboot: 12/12288 files (0.0% non-contiguous)\n";
        assert_eq!(
            verdict(
                &[Ran {
                    step: e2,
                    status: Some(0),
                    output: clean
                }],
                false
            ),
            Verdict::Clean
        );
        let bad = include_str!("fixtures/e2fsck-damaged.txt");
        let v = verdict(
            &[Ran {
                step: e2,
                status: Some(4),
                output: bad,
            }],
            false,
        );
        let Verdict::NeedsRepair { problems } = &v else {
            panic!("{v:?}")
        };
        assert!(
            problems[0].contains("Inode 12 ref count is 5, should be 1."),
            "{problems:?}"
        );
        assert!(v.describe().starts_with("needs repair: "));
        let failed = verdict(
            &[Ran {
                step: e2,
                status: Some(8),
                output: "e2fsck: No such file or directory while trying to open /dev/vdb1\n",
            }],
            false,
        );
        assert!(matches!(failed, Verdict::Failed { .. }), "{failed:?}");

        let b = steps(&t[0], &f, false).unwrap();
        let ok = [
            Ran {
                step: &b[0],
                status: Some(0),
                output: "[1/7] checking root items\nfound 1234 bytes used, no error found\n",
            },
            Ran {
                step: &b[1],
                status: Some(0),
                output: "[/dev/mapper/root].write_io_errs    0\n",
            },
            Ran {
                step: &b[2],
                status: Some(0),
                output: "UUID: x\n\tno stats available\n",
            },
        ];
        assert_eq!(verdict(&ok, false), Verdict::Clean);
        let errs = [
            Ran { step: &b[0], status: Some(1), output: "[2/7] checking extents\nref mismatch on [30425088 16384] extent item 0, found 1\nERROR: errors found in extent allocation tree or chunk allocation\nfound 1 errors\n" },
            Ran { step: &b[1], status: Some(64), output: "[/dev/mapper/root].write_io_errs    0\n[/dev/mapper/root].corruption_errs  3\n" },
            Ran { step: &b[2], status: Some(0), output: "Error summary:    csum=3\n" },
        ];
        let Verdict::NeedsRepair { problems } = verdict(&errs, false) else {
            panic!()
        };
        assert!(
            problems.iter().any(|p| p.contains("ref mismatch")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("corruption_errs 3")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("last scrub: Error summary:    csum=3")),
            "{problems:?}"
        );

        let mut unmounted = t[1].clone();
        unmounted.mounted_at = None;
        let r = steps(&unmounted, &f, true).unwrap();
        assert!(matches!(
            verdict(
                &[Ran {
                    step: &r[0],
                    status: Some(1),
                    output: "FIXED"
                }],
                true
            ),
            Verdict::Repaired { .. }
        ));
    }
}
