//! `rescue check`: checks every filesystem of the main system's fstab
//! (read-only, or repairs with `--repair`) and gives one verdict each. The
//! exit code says whether anything needs repair.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::{Details, Outcome};
use crate::protocol::exit;
use crate::rescue::check::{self as fsck, Ran, Target, Verdict};
use crate::rescue::plan::{self, Step};
use crate::rescue::remote::{Output, Remote};
use crate::rescue::report::{CheckReport, Checked};
use crate::rescue::run::{Secrets, Session, NEEDS_REPAIR};
use crate::rescue::state::Facts;
use anyhow::Result;
use std::ops::Range;

pub async fn check<R: Remote>(
    s: &mut Session<'_, R>,
    repair: bool,
    device: Option<&str>,
    subvol: Option<&str>,
) -> Result<Outcome> {
    let facts = s.facts().await?;
    let main = s.main_system(&facts, device, subvol).await?;
    let (items, warnings) = plan::mount_items(&main, &facts.devices, false)?;
    let (all, planned) = plan_checks(fsck::targets(&items, &facts), &facts, repair);
    let mut notes = warnings;
    notes.extend(notes_for(&planned, repair));
    let title = if repair {
        "repair filesystems"
    } else {
        "check filesystems (read-only)"
    };
    let Some(outs) = s.run_plan(title, &all, &notes, &Secrets::default()).await? else {
        return Ok((exit::UNLOCKED, Details::dry_run()));
    };
    let results = verdicts(planned, &all, &outs, repair);
    s.say("result:\n");
    for c in &results {
        s.say(&format!(
            "  {} ({}: {}): {}\n",
            c.device,
            c.fstype,
            c.mountpoints.join(", "),
            c.result.describe()
        ));
    }
    let code = exit_code(&results);
    if code == NEEDS_REPAIR && !repair {
        s.say("next: back up what you can (the filesystem is readable), then `close --keep-open` and `check --repair`\n");
    }
    Ok((
        code,
        Details::Check(CheckReport {
            filesystems: results,
        }),
    ))
}

/// One filesystem and its steps in the combined plan, or why it cannot be
/// checked here (no tool, unknown type).
struct Planned {
    target: Target,
    steps: Result<Range<usize>, String>,
}

/// All filesystems' steps as one plan (shown and confirmed once), each
/// filesystem remembering its slice of it.
fn plan_checks(targets: Vec<Target>, facts: &Facts, repair: bool) -> (Vec<Step>, Vec<Planned>) {
    let mut all = Vec::new();
    let mut planned = Vec::new();
    for target in targets {
        let steps = fsck::steps(&target, facts, repair).map(|st| {
            let r = all.len()..all.len() + st.len();
            all.extend(st);
            r
        });
        planned.push(Planned { target, steps });
    }
    (all, planned)
}

/// What the admin should know before a check runs: what is skipped, and
/// what a read-only check cannot see or may misreport.
fn notes_for(planned: &[Planned], repair: bool) -> Vec<String> {
    let mut notes = Vec::new();
    for Planned { target: t, steps } in planned {
        if let Err(why) = steps {
            notes.push(format!("{} ({}): {why}", t.device, t.fstype));
        }
        if steps.is_ok() && t.fstype == "btrfs" && t.mounted_at.is_none() && !repair {
            notes.push(format!(
                "{}: mount it to also read its error counters and scrub status",
                t.device
            ));
        }
        if steps.is_ok() && t.mounted_rw && !repair {
            notes.push(format!(
                "{} is mounted read-write: a read-only check may report changes in flight",
                t.device
            ));
        }
    }
    notes
}

/// Each filesystem's verdict from the outputs of its slice of the plan.
fn verdicts(planned: Vec<Planned>, all: &[Step], outs: &[Output], repair: bool) -> Vec<Checked> {
    let texts: Vec<String> = outs
        .iter()
        .map(|o| format!("{}\n{}", o.stdout_text(), o.stderr_text()))
        .collect();
    planned
        .into_iter()
        .map(|Planned { target: t, steps }| {
            let result = match steps {
                Err(why) => Verdict::NotChecked { why },
                Ok(range) => {
                    let runs: Vec<Ran> = range
                        .filter_map(|j| {
                            Some(Ran {
                                step: all.get(j)?,
                                status: outs.get(j)?.status,
                                output: texts.get(j)?,
                            })
                        })
                        .collect();
                    fsck::verdict(&runs, repair)
                }
            };
            Checked {
                device: t.device,
                fstype: t.fstype,
                mountpoints: t.mountpoints,
                result,
            }
        })
        .collect()
}

/// Needs repair wins over a failed check: it is the one that asks for
/// action on the data.
fn exit_code(results: &[Checked]) -> u8 {
    let any = |f: fn(&Verdict) -> bool| results.iter().any(|c| f(&c.result));
    if any(|v| matches!(v, Verdict::NeedsRepair { .. })) {
        NEEDS_REPAIR
    } else if any(|v| matches!(v, Verdict::Failed { .. })) {
        exit::ERROR
    } else {
        exit::UNLOCKED
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
    use crate::rescue::flows::testkit::lsblk;
    use crate::rescue::state::{parse_facts, tests::probe_output_with, tests::MOUNTINFO};

    fn target(device: &str, fstype: &str, mounted_at: Option<&str>, rw: bool) -> Target {
        Target {
            device: device.into(),
            fstype: fstype.into(),
            mountpoints: vec!["/".into()],
            mounted_at: mounted_at.map(String::from),
            mounted_rw: rw,
        }
    }

    fn checked(result: Verdict) -> Checked {
        Checked {
            device: "/dev/x".into(),
            fstype: "ext4".into(),
            mountpoints: vec![],
            result,
        }
    }

    #[test]
    fn needs_repair_wins_over_a_failed_check() {
        let failed = || checked(Verdict::Failed { why: "gone".into() });
        let needs = || checked(Verdict::NeedsRepair { problems: vec![] });
        assert_eq!(exit_code(&[]), exit::UNLOCKED);
        assert_eq!(exit_code(&[checked(Verdict::Clean)]), exit::UNLOCKED);
        assert_eq!(exit_code(&[failed()]), exit::ERROR);
        assert_eq!(exit_code(&[failed(), needs()]), NEEDS_REPAIR);
        assert_eq!(exit_code(&[needs(), failed()]), NEEDS_REPAIR);
    }

    #[test]
    fn each_filesystem_gets_its_own_slice_of_the_plan_and_its_notes() {
        let b = "@@portcullis-t";
        let facts = parse_facts(
            &probe_output_with(b, "root\n", MOUNTINFO, &lsblk(Some("root"))),
            b,
        );
        let (all, planned) = plan_checks(
            vec![
                target("/dev/vdb1", "ext4", None, false),
                target("/dev/sdz1", "ntfs", None, false),
                target("/dev/mapper/root", "btrfs", None, false),
            ],
            &facts,
            false,
        );
        let ranges: Vec<_> = planned.iter().map(|p| p.steps.clone()).collect();
        assert_eq!(ranges[0], Ok(0..1));
        assert!(ranges[1].is_err());
        assert_eq!(ranges[2].as_ref().unwrap().start, 1);
        assert_eq!(ranges[2].as_ref().unwrap().end, all.len());
        let notes = notes_for(&planned, false);
        assert!(notes[0].starts_with("/dev/sdz1 (ntfs): "), "{notes:?}");
        assert_eq!(
            notes[1],
            "/dev/mapper/root: mount it to also read its error counters and scrub status"
        );
        // A verdict per filesystem, the unplanned one "not checked".
        let outs = vec![
            Output {
                status: Some(0),
                ..Default::default()
            };
            all.len()
        ];
        let v = verdicts(planned, &all, &outs, false);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].result, Verdict::Clean);
        assert!(matches!(v[1].result, Verdict::NotChecked { .. }));
        // Mounted read-write: a read-only check is warned about, a repair
        // is not (it unmounts first or refuses).
        let rw = [Planned {
            target: target("/dev/vdb1", "ext4", Some("/mnt/portcullis/boot"), true),
            steps: Ok(0..1),
        }];
        assert_eq!(notes_for(&rw, false).len(), 1);
        assert!(notes_for(&rw, true).is_empty());
    }
}
