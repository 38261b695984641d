//! `rescue inspect`: everything read-only. The rescue system's limits, its
//! disks and LUKS headers, what the unmounted filesystems hold, and, when
//! the main system is mounted, its boot entries.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::{boot_config, Details, Outcome};
use crate::protocol::exit;
use crate::rescue::discover;
use crate::rescue::lsblk::{Dev, Devices};
use crate::rescue::luks;
use crate::rescue::remote::Remote;
use crate::rescue::report::{self, InspectReport, LuksDevice, RescueSystem};
use crate::rescue::run::Session;
use crate::rescue::state::Facts;
use anyhow::Result;

pub async fn inspect<R: Remote>(s: &mut Session<'_, R>) -> Result<Outcome> {
    let facts = s.facts().await?;
    let luks = luks_devices(s, &facts).await?;
    let peeks = s.peeks(&facts).await?;
    let target = s.s.target.clone();
    let mounted = facts.mount_at(&target).is_some();
    // The boot entries live in the main system's /boot: only read when it
    // is mounted where we expect it.
    let boot_entries = if mounted {
        Some(boot_config(s, &target).await?.entries)
    } else {
        None
    };
    let r = InspectReport {
        rescue: RescueSystem::of(&facts),
        devices: facts.devices.clone(),
        luks,
        main_system: discover::choose(&peeks, None, None).ok(),
        filesystems: peeks,
        mounted_at_target: mounted,
        boot_entries,
    };
    s.say(&report::table(&facts, &r, &target));
    Ok((exit::UNLOCKED, Details::Inspect(Box::new(r))))
}

/// Every LUKS device with its header (when cryptsetup can read it), its
/// mapping if open, and the keyslots this rescue system lacks memory for.
async fn luks_devices<R: Remote>(s: &mut Session<'_, R>, facts: &Facts) -> Result<Vec<LuksDevice>> {
    let devs: Vec<Dev> = facts
        .devices
        .iter()
        .filter(|d| d.is_luks())
        .cloned()
        .collect();
    let mut out = Vec::new();
    for d in devs {
        let header = if facts.has("cryptsetup") {
            s.luks_dump(&d).await?
        } else {
            None
        };
        out.push(LuksDevice {
            warnings: header
                .as_ref()
                .map(|h| luks::memory_warnings(&d.path, h, facts.mem_available_kib))
                .unwrap_or_default(),
            max_kdf_memory_kib: header.as_ref().and_then(luks::max_memory_kib),
            open_as: facts.devices.mapping_of(&d.path).map(|m| m.path.clone()),
            header,
            device: d.path,
        });
    }
    Ok(out)
}
