//! `argon2-memory`: each LUKS2 keyslot's argon2 memory cost against the RAM
//! the initramfs will have. A keyslot that needs more memory than can be
//! allocated fails exactly like a wrong passphrase, at every try.
//!
//! The rule (docs/preflight.md): fail when a keyslot needs more than the
//! machine's RAM less the unpacked image (which lives in RAM too); warn
//! when it needs more than half the RAM (the kernel, udev and the
//! listener need the rest, and a second volume may be opened in parallel).
//! The initramfs boots on this machine, so this machine's `MemTotal` is
//! the RAM it will see.

use super::volumes::{find, image_volumes, none};
use super::{fail, pass, skip, warn, Ctx};
use crate::preflight::report::Check;

const ID: &str = "argon2-memory";

pub fn argon2_memory(ctx: &Ctx<'_>) -> Check {
    let devs = ctx.system.luks_devices();
    if devs.is_empty() {
        return none(ID);
    }
    let Some(ram) = ctx.system.mem_total_kib() else {
        return warn(
            ID,
            "cannot read MemTotal from /proc/meminfo",
            "run preflight on the server the image boots",
        );
    };
    // The image's volumes when they are found here, else every device.
    let mut chosen: Vec<_> = image_volumes(ctx)
        .iter()
        .filter_map(|v| find(ctx, &devs, &v.device))
        .collect();
    if chosen.is_empty() {
        chosen = devs.iter().collect();
    }
    chosen.dedup_by(|a, b| a.path == b.path);
    let image_kib = ctx
        .image
        .entries()
        .map(|(_, e)| e.data.len() as u64)
        .sum::<u64>()
        / 1024;
    let hard = ram.saturating_sub(image_kib);
    let mut worst: Option<Check> = None;
    let mut slots = 0;
    for d in &chosen {
        for s in &d.keyslots {
            let Some(need) = s.memory_kib else { continue };
            slots += 1;
            let what = format!(
                "{} keyslot {} ({}) needs {} MiB, the initramfs has {} MiB of RAM",
                d.path.display(),
                s.id,
                s.kdf,
                need / 1024,
                ram / 1024
            );
            let fix = format!(
                "lower it: cryptsetup luksConvertKey {} --key-slot {} --pbkdf-memory {}",
                d.path.display(),
                s.id,
                (ram / 4).clamp(32 * 1024, 1024 * 1024)
            );
            if need > hard {
                // luksConvertKey would have to open this slot, which is what
                // this machine cannot do: replace the slot instead.
                let fix = format!(
                    "replace it: cryptsetup luksAddKey {dev} --pbkdf-memory {mem} (with another slot's passphrase), then cryptsetup luksKillSlot {dev} {id}; or luksConvertKey it on a machine with more RAM",
                    dev = d.path.display(),
                    mem = (ram / 4).clamp(32 * 1024, 1024 * 1024),
                    id = s.id,
                );
                return fail(
                    ID,
                    format!("{what}: opening it fails like a wrong passphrase"),
                    fix,
                );
            }
            if need > ram / 2 && worst.is_none() {
                worst = Some(warn(ID, format!("{what}: more than half"), fix));
            }
        }
    }
    if let Some(w) = worst {
        return w;
    }
    if slots == 0 {
        return skip(ID, "no argon2 keyslot (LUKS1 or pbkdf2)");
    }
    pass(
        ID,
        format!(
            "{slots} argon2 keyslot(s), each within half of {} MiB",
            ram / 1024
        ),
    )
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::field_reassign_with_default
)]
mod tests {
    use super::super::fixture::check;
    use super::super::volumes::tests::dev;
    use crate::preflight::image::Image;
    use crate::preflight::report::Status;
    use crate::preflight::system::fake::FakeSystem;

    fn sys(mem_mib: u64, need_mib: u64) -> FakeSystem {
        let mut s = FakeSystem::default();
        s.mem_kib = Some(mem_mib * 1024);
        s.luks = vec![dev("/dev/vda2", "aaaa-1", need_mib * 1024)];
        s
    }

    #[test]
    fn passes_within_half_the_ram() {
        let c = check("argon2-memory", &Image::default(), &sys(2048, 1024), "");
        assert_eq!(c.status, Status::Pass, "{c:?}");
    }

    #[test]
    fn warns_above_half_and_fails_above_the_ram() {
        let c = check("argon2-memory", &Image::default(), &sys(2048, 1100), "");
        assert_eq!(c.status, Status::Warn, "{c:?}");
        let c = check("argon2-memory", &Image::default(), &sys(512, 1024), "");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert_eq!(
            c.summary,
            "/dev/vda2 keyslot 0 (argon2id) needs 1024 MiB, the initramfs has 512 MiB of RAM: opening it fails like a wrong passphrase"
        );
        assert_eq!(
            c.fix.unwrap(),
            "replace it: cryptsetup luksAddKey /dev/vda2 --pbkdf-memory 131072 (with another slot's passphrase), then cryptsetup luksKillSlot /dev/vda2 0; or luksConvertKey it on a machine with more RAM"
        );
        let c = check("argon2-memory", &Image::default(), &sys(2048, 1100), "");
        assert!(
            c.fix
                .unwrap()
                .starts_with("lower it: cryptsetup luksConvertKey /dev/vda2 --key-slot 0"),
            "a slot that fits can be converted in place"
        );
    }

    #[test]
    fn skips_without_devices_or_argon2() {
        let c = check(
            "argon2-memory",
            &Image::default(),
            &FakeSystem::default(),
            "",
        );
        assert_eq!(c.status, Status::Skip);
        let mut s = sys(512, 1);
        s.luks[0].keyslots[0].memory_kib = None;
        assert_eq!(
            check("argon2-memory", &Image::default(), &s, "").status,
            Status::Skip
        );
    }
}
