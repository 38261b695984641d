//! `rescue chroot`: runs one command inside the mounted main system (with
//! /dev, /proc, /sys and /run bound in), e.g. `update-initramfs -u`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::{Details, Outcome};
use crate::protocol::exit;
use crate::rescue::plan;
use crate::rescue::remote::Remote;
use crate::rescue::report::ChrootReport;
use crate::rescue::run::{Secrets, Session};
use anyhow::{bail, Result};

pub async fn chroot<R: Remote>(s: &mut Session<'_, R>, argv: &[String]) -> Result<Outcome> {
    let facts = s.facts().await?;
    facts.require(&["chroot", "mount"])?;
    let target = s.s.target.clone();
    let Some(root) = facts.mount_at(&target) else {
        bail!("the main system is not mounted at {target}: run `portcullis rescue mount HOST` first (--rw to change files)");
    };
    let mut notes = Vec::new();
    if root.read_only() {
        notes.push(format!("{target} is mounted read-only: the command cannot change the main system (mount --rw allows it)"));
    }
    let mut steps = plan::chroot_bind_steps(&facts, &target)?;
    let mut c = plan::chroot_step(&target, argv)?;
    // The command's own failure is its result, reported below, not a
    // failed plan.
    c.keep_going = true;
    steps.push(c);
    let Some(outs) = s
        .run_plan(
            "run a command in the main system",
            &steps,
            &notes,
            &Secrets::default(),
        )
        .await?
    else {
        return Ok((exit::UNLOCKED, Details::dry_run()));
    };
    let last = outs.last().cloned().unwrap_or_default();
    let r = ChrootReport {
        exit_status: last.status,
        stdout: last.stdout_text(),
        stderr: last.stderr_text(),
    };
    if r.exit_status == Some(0) {
        return Ok((exit::UNLOCKED, Details::Chroot(r)));
    }
    eprintln!(
        "error: the command exited {}",
        r.exit_status
            .map_or("without status".into(), |c| c.to_string())
    );
    Ok((exit::ERROR, Details::Chroot(r)))
}
