//! `rescue close`: unmounts everything under the target and closes the
//! volumes we opened (or leaves them open with `--keep-open`), then says
//! what is left from a fresh look rather than trusting the plan.

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
use crate::rescue::report::CloseReport;
use crate::rescue::run::{Secrets, Session};
use crate::rescue::state::Facts;
use anyhow::Result;

pub async fn close<R: Remote>(s: &mut Session<'_, R>, keep_open: bool) -> Result<Outcome> {
    let facts = s.facts().await?;
    let target = s.s.target.clone();
    let steps = plan::close_steps(&facts, &target, keep_open)?;
    if s.run_plan("unmount and close", &steps, &[], &Secrets::default())
        .await?
        .is_none()
    {
        return Ok((exit::UNLOCKED, Details::dry_run()));
    }
    let r = leftovers(&s.facts().await?, &target);
    if r.mounted.is_empty() && (r.open.is_empty() || keep_open) {
        s.say(&format!(
            "done: nothing mounted under {target}{}\n",
            if keep_open {
                "; volumes left open"
            } else {
                ", no volume of ours open"
            }
        ));
        Ok((exit::UNLOCKED, Details::Close(r)))
    } else {
        eprintln!(
            "error: still mounted: {:?}; still open: {:?}",
            r.mounted, r.open
        );
        Ok((exit::ERROR, Details::Close(r)))
    }
}

/// What is still mounted under the target, and which of the mappings
/// `unlock` opened (its record in /run/portcullis-rescue/opened) still
/// exist: mappings the admin opened by hand are not ours to report.
fn leftovers(after: &Facts, target: &str) -> CloseReport {
    CloseReport {
        mounted: after
            .mounts_under(target)
            .iter()
            .map(|m| m.mountpoint.clone())
            .collect(),
        open: after
            .opened
            .iter()
            .filter(|n| {
                after
                    .devices
                    .iter()
                    .any(|d| d.kind == "crypt" && d.name == **n)
            })
            .cloned()
            .collect(),
    }
}
