//! `rescue mount`: mounts the main system at the target the way its own
//! fstab says (read-only unless `--rw`).

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
use crate::rescue::report::MountReport;
use crate::rescue::run::{Secrets, Session};
use anyhow::Result;

pub async fn mount<R: Remote>(
    s: &mut Session<'_, R>,
    rw: bool,
    device: Option<&str>,
    subvol: Option<&str>,
) -> Result<Outcome> {
    let r = mount_inner(s, rw, device, subvol).await?;
    Ok((exit::UNLOCKED, Details::Mount(Box::new(r))))
}

/// Mounts the main system at the target following its fstab; what is
/// already mounted there stays (so `kexec` can call it unconditionally).
pub async fn mount_inner<R: Remote>(
    s: &mut Session<'_, R>,
    rw: bool,
    device: Option<&str>,
    subvol: Option<&str>,
) -> Result<MountReport> {
    let facts = s.facts().await?;
    facts.require(&["mount", "lsblk"])?;
    let main = s.main_system(&facts, device, subvol).await?;
    let (items, warnings) = plan::mount_items(&main, &facts.devices, rw)?;
    let target = s.s.target.clone();
    let steps = plan::mount_steps(&items, &facts, &target, rw)?;
    if steps.is_empty() {
        s.say(&format!("the main system is already mounted at {target}\n"));
    }
    s.run_plan(
        &format!("mount the main system at {target}"),
        &steps,
        &warnings,
        &Secrets::default(),
    )
    .await?;
    Ok(MountReport {
        target,
        main_system: main,
        mounts: items,
        warnings,
    })
}
