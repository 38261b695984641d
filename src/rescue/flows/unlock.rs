//! `rescue unlock`: opens the locked LUKS devices (all, or those named)
//! under provisional `luks-UUID` names, then, once the main system's
//! crypttab can be read, reopens them under its names, so the main system's
//! fstab and a later kexec hand-over find them where they expect.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::{Details, Outcome, Pass, PassReader};
use crate::protocol::exit;
use crate::rescue::discover::{self, MainSystem};
use crate::rescue::lsblk::{Dev, Devices};
use crate::rescue::luks;
use crate::rescue::plan::{self, Step};
use crate::rescue::remote::{Output, Remote};
pub use crate::rescue::report::Unlocked;
use crate::rescue::run::{Secrets, Session};
use crate::rescue::state::Facts;
use anyhow::{bail, Result};

pub async fn unlock<R: Remote>(
    s: &mut Session<'_, R>,
    only: &[String],
    read_pass: PassReader<'_>,
) -> Result<Outcome> {
    let mut pass = Pass::new(read_pass);
    let u = unlock_inner(s, only, &mut pass).await?;
    drop(pass);
    if !s.s.dry_run {
        let f = s.facts().await?;
        let open = open_now(&f);
        s.say(&summary(&open, &u.wrong));
        if !open.is_empty() {
            s.say("next: `portcullis rescue mount HOST` (read-only), then `check`\n");
        }
    }
    Ok((exit_code(&u), Details::Unlock(u)))
}

/// Opens locked LUKS devices (all, or those named), then renames them to the
/// main system's crypttab names once its crypttab can be read. The
/// passphrase stays in `pass`, so a caller that goes on (kexec) can hand
/// it over without asking twice.
pub async fn unlock_inner<R: Remote>(
    s: &mut Session<'_, R>,
    only: &[String],
    pass: &mut Pass<'_>,
) -> Result<Unlocked> {
    let facts = s.facts().await?;
    facts.require(&["cryptsetup", "lsblk"])?;
    let Selection { to_open, already } = select(&facts.devices, only)?;
    let mut u = Unlocked::default();
    for (dev, mapping) in already {
        s.say(&format!("{dev} is already open as {mapping}\n"));
        u.already.push(dev);
    }
    if to_open.is_empty() {
        if u.already.is_empty() {
            s.note("no LUKS device found on the rescue system");
        }
        return Ok(u);
    }
    let (steps, notes) = open_plan(s, &facts, &to_open).await?;
    if s.s.dry_run {
        s.run_plan("unlock", &steps, &notes, &Secrets::default())
            .await?;
        return Ok(u);
    }
    let secrets = Secrets {
        passphrase: Some(pass.get()?),
        archive: None,
    };
    let outs = s
        .run_plan("unlock", &steps, &notes, &secrets)
        .await?
        .unwrap_or_default();
    let opened = record(s, &mut u, &to_open, &outs);
    if !opened.is_empty() {
        take_crypttab_names(s, &opened, &secrets).await?;
    }
    Ok(u)
}

/// The LUKS devices an unlock works on.
#[derive(Debug)]
struct Selection {
    to_open: Vec<Dev>,
    /// (device, the mapping it is open as).
    already: Vec<(String, String)>,
}

/// Splits the LUKS devices into those to open and those already open.
/// `only` (from `--device`) limits the choice; a name in it that is not a
/// LUKS device here is an error before anything runs.
fn select(devices: &[Dev], only: &[String]) -> Result<Selection> {
    for o in only {
        if devices.resolve(o).is_none_or(|d| !d.is_luks()) {
            bail!("--device {o}: no such LUKS device on the rescue system (see `portcullis rescue inspect`)");
        }
    }
    let chosen = |d: &Dev| {
        only.is_empty()
            || only
                .iter()
                .any(|o| devices.resolve(o).is_some_and(|x| x.path == d.path))
    };
    let mut to_open = Vec::new();
    let mut already = Vec::new();
    for d in devices.iter().filter(|d| d.is_luks() && chosen(d)) {
        match devices.mapping_of(&d.path) {
            Some(m) => already.push((d.path.clone(), m.path.clone())),
            None => to_open.push(d.clone()),
        }
    }
    Ok(Selection { to_open, already })
}

/// One `cryptsetup open` per device under its provisional name, with the
/// keyslot memory warnings as notes (a keyslot too big for this RAM fails
/// like a wrong passphrase).
async fn open_plan<R: Remote>(
    s: &mut Session<'_, R>,
    facts: &Facts,
    to_open: &[Dev],
) -> Result<(Vec<Step>, Vec<String>)> {
    let mut notes = Vec::new();
    let mut steps = Vec::new();
    for d in to_open {
        if let Some(h) = s.luks_dump(d).await? {
            notes.extend(luks::memory_warnings(&d.path, &h, facts.mem_available_kib));
        }
        steps.push(plan::open_step(d, &plan::default_name(d)?)?);
    }
    notes.push("then: each volume is reopened under its name in the main system's crypttab, once that can be read".into());
    Ok((steps, notes))
}

/// How one `cryptsetup open` ended.
#[derive(Debug, PartialEq, Eq)]
enum Opened {
    Yes,
    /// cryptsetup's exit 2: no keyslot opened with this passphrase.
    WrongPassphrase,
    Failed,
}

fn opened(status: Option<u32>) -> Opened {
    match status {
        Some(0) => Opened::Yes,
        Some(2) => Opened::WrongPassphrase,
        _ => Opened::Failed,
    }
}

/// Says and records each device's outcome; returns the devices opened.
fn record<R: Remote>(
    s: &Session<'_, R>,
    u: &mut Unlocked,
    to_open: &[Dev],
    outs: &[Output],
) -> Vec<Dev> {
    let mut done = Vec::new();
    for (d, o) in to_open.iter().zip(outs) {
        match opened(o.status) {
            Opened::Yes => {
                s.say(&format!("  {}: opened\n", d.path));
                u.opened.push(d.path.clone());
                done.push(d.clone());
            }
            Opened::WrongPassphrase => {
                s.say(&format!("  {}: wrong passphrase\n", d.path));
                u.wrong.push(d.path.clone());
            }
            Opened::Failed => {
                s.say(&format!("  {}: failed: {}\n", d.path, o.last_line()));
                u.failed.push(d.path.clone());
            }
        }
    }
    done
}

/// Phase 2: reopens the devices just opened under the main system's
/// crypttab names. Without a readable crypttab they keep `luks-UUID`,
/// which is said, not an error: the volumes are open either way.
async fn take_crypttab_names<R: Remote>(
    s: &mut Session<'_, R>,
    opened: &[Dev],
    secrets: &Secrets<'_>,
) -> Result<()> {
    let facts = s.facts().await?;
    let main = match s.main_system(&facts, None, None).await {
        Ok(m) => m,
        Err(e) => {
            s.note(format!("names stay luks-UUID: {e:#}"));
            return Ok(());
        }
    };
    let (renames, notes) = renames(&main, &facts, opened);
    for n in notes {
        s.note(n);
    }
    if !renames.is_empty() {
        s.run_plan("use the main system's volume names", &renames, &[], secrets)
            .await?;
    }
    Ok(())
}

/// The rename steps for the `opened` devices named in the main system's
/// crypttab, and a note for each one that must keep its name. A mapping in
/// use (mounted) is left alone; a name taken on the rescue system is not
/// stolen.
fn renames(main: &MainSystem, facts: &Facts, opened: &[Dev]) -> (Vec<Step>, Vec<String>) {
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    for e in &main.crypttab {
        let Some(luks) = discover::luks_device(e, &facts.devices) else {
            continue;
        };
        if !opened.iter().any(|d| d.path == luks.path) {
            continue;
        }
        let Some(m) = facts.devices.mapping_of(&luks.path) else {
            continue;
        };
        if m.name == e.name || !facts.device_mounted(&m.path).is_empty() {
            continue;
        }
        if facts.devices.iter().any(|d| d.name == e.name) {
            notes.push(format!(
                "{} keeps the name {}: {} is taken on the rescue system",
                luks.path, m.name, e.name
            ));
            continue;
        }
        match plan::rename_step(luks, &m.name, &e.name) {
            Ok(st) => steps.push(st),
            Err(err) => notes.push(format!("{}: keeps the name {}: {err:#}", luks.path, m.name)),
        }
    }
    (steps, notes)
}

/// "DEVICE as MAPPING" for every LUKS device open now.
fn open_now(f: &Facts) -> Vec<String> {
    f.devices
        .iter()
        .filter(|d| d.is_luks())
        .filter_map(|d| {
            f.devices
                .mapping_of(&d.path)
                .map(|m| format!("{} as {}", d.path, m.path))
        })
        .collect()
}

fn summary(open: &[String], wrong: &[String]) -> String {
    format!(
        "open: {}{}\n",
        if open.is_empty() {
            "nothing".to_string()
        } else {
            open.join(", ")
        },
        if wrong.is_empty() {
            String::new()
        } else {
            format!("; wrong passphrase for {}", wrong.join(", "))
        }
    )
}

/// Nothing opened: the failure says why (a failure before a wrong
/// passphrase, since it is not the passphrase's fault); something opened
/// but not all: partial.
fn exit_code(u: &Unlocked) -> u8 {
    if !u.failed.is_empty() && u.opened.is_empty() {
        exit::UNLOCK_FAILED
    } else if !u.wrong.is_empty() && u.opened.is_empty() {
        exit::WRONG_PASSPHRASE
    } else if !u.wrong.is_empty() || !u.failed.is_empty() {
        exit::PARTIAL
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
    use crate::rescue::flows::testkit::*;
    use crate::rescue::remote::fake::Fake;
    use crate::rescue::state::{parse_facts, tests::probe_output_with};

    #[tokio::test]
    async fn unlock_opens_then_takes_the_crypttab_name() {
        let provisional = format!("luks-{LUKS_UUID}");
        let mut fake = Fake::default();
        fake.on(
            "~lsblk -J",
            0,
            &probe_output_with("@@B", "", ROOT_ONLY, &lsblk(None)),
        );
        fake.on(
            "~lsblk -J",
            0,
            &probe_output_with(
                "@@B",
                &format!("{provisional}\n"),
                ROOT_ONLY,
                &lsblk(Some(&provisional)),
            ),
        );
        fake.on(
            "cryptsetup luksDump",
            0,
            include_str!("../fixtures/luksdump-luks2.txt"),
        );
        fake.on("cryptsetup open --key-file=- /dev/vdb2", 0, "");
        // Peeks: the btrfs holds the main system in @, /boot holds kernels.
        fake.on(
            "~/dev/mapper/luks-",
            0,
            &format!(
                "@@B subvols\nID 256 gen 9 top level 5 path @\n@@B root /@\n@@B fstab\n{}\n@@B crypttab\nroot UUID={LUKS_UUID} none luks\n@@B kernels\n",
                include_str!("../fixtures/fstab")
            ),
        );
        fake.on("~/dev/vdb1", 0, "@@B kernels\n/vmlinuz-6.1\n");
        fake.on("cryptsetup close", 0, "");
        let mut s = Session::new(&mut fake, settings());
        let (code, v) = unlock(&mut s, &[], &pass).await.unwrap();
        assert_eq!(code, exit::UNLOCKED, "{v:?}");
        drop(s);
        never_in_commands(&fake);
        let with_stdin: Vec<(&str, bool)> = fake
            .calls
            .iter()
            .filter(|c| c.1.is_some())
            .map(|c| (c.0.as_str(), c.1.as_deref() == Some(PASS)))
            .collect();
        assert_eq!(with_stdin.len(), 2, "{with_stdin:?}");
        assert!(with_stdin[0].0.starts_with(&format!(
            "cryptsetup open --key-file=- /dev/vdb2 {provisional} && "
        )));
        assert!(with_stdin[1].0.starts_with(&format!(
            "cryptsetup close {provisional} && cryptsetup open --key-file=- /dev/vdb2 root && "
        )));
        assert!(
            with_stdin.iter().all(|c| c.1),
            "stdin is the passphrase, exactly"
        );
    }

    fn facts(opened: &str, mapping: Option<&str>) -> Facts {
        let b = "@@portcullis-t";
        parse_facts(&probe_output_with(b, opened, ROOT_ONLY, &lsblk(mapping)), b)
    }

    #[test]
    fn select_splits_locked_from_open_and_refuses_unknown_devices() {
        let locked = facts("", None);
        let Selection { to_open, already } = select(&locked.devices, &[]).unwrap();
        assert_eq!(to_open.len(), 1);
        assert_eq!(to_open[0].path, "/dev/vdb2");
        assert!(already.is_empty());
        // Named by UUID, as `--device UUID=…` allows.
        let only = [format!("UUID={LUKS_UUID}")];
        assert_eq!(select(&locked.devices, &only).unwrap().to_open.len(), 1);
        let open = facts("root\n", Some("root"));
        let Selection { to_open, already } = select(&open.devices, &[]).unwrap();
        assert!(to_open.is_empty());
        assert_eq!(
            already,
            [("/dev/vdb2".to_string(), "/dev/mapper/root".to_string())]
        );
        // Not LUKS, or not there: an error naming the device and what to run.
        for bad in ["/dev/vdb1", "/dev/nope"] {
            let e = select(&locked.devices, &[bad.to_string()])
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("--device {bad}: no such LUKS device"))
                    && e.contains("rescue inspect"),
                "{e}"
            );
        }
    }

    fn main_with(crypttab: &str) -> MainSystem {
        MainSystem {
            device: "/dev/mapper/x".into(),
            fstype: "btrfs".into(),
            subvol: None,
            fstab: vec![],
            crypttab: crate::unlock::crypttab::parse(crypttab),
        }
    }

    #[test]
    fn renames_take_the_crypttab_name_unless_taken_or_mounted() {
        let provisional = format!("luks-{LUKS_UUID}");
        let f = facts(&format!("{provisional}\n"), Some(&provisional));
        let opened: Vec<Dev> = f.devices.iter().filter(|d| d.is_luks()).cloned().collect();
        let (steps, notes) = renames(
            &main_with(&format!("root UUID={LUKS_UUID} none luks\n")),
            &f,
            &opened,
        );
        assert_eq!(steps.len(), 1, "{notes:?}");
        assert!(steps[0]
            .command
            .starts_with(&format!("cryptsetup close {provisional} && ")));
        // Only what this run opened is renamed.
        let (steps, _) = renames(
            &main_with(&format!("root UUID={LUKS_UUID} none luks\n")),
            &f,
            &[],
        );
        assert!(steps.is_empty());
        // The crypttab name is already a device on the rescue system (its
        // own disk is called vda): keep ours, and say so.
        let (steps, notes) = renames(
            &main_with(&format!("vda UUID={LUKS_UUID} none luks\n")),
            &f,
            &opened,
        );
        assert!(steps.is_empty());
        assert_eq!(
            notes,
            [format!(
                "/dev/vdb2 keeps the name {provisional}: vda is taken on the rescue system"
            )]
        );
        // Already the crypttab name: nothing to do.
        let f = facts("root\n", Some("root"));
        let (steps, notes) = renames(
            &main_with(&format!("root UUID={LUKS_UUID} none luks\n")),
            &f,
            &opened,
        );
        assert!(steps.is_empty() && notes.is_empty());
    }

    #[test]
    fn exit_code_blames_failure_before_the_passphrase() {
        let u = |o: &[&str], w: &[&str], f: &[&str]| Unlocked {
            opened: o.iter().map(|s| s.to_string()).collect(),
            already: vec![],
            wrong: w.iter().map(|s| s.to_string()).collect(),
            failed: f.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(exit_code(&u(&[], &[], &[])), exit::UNLOCKED);
        assert_eq!(exit_code(&u(&["a"], &[], &[])), exit::UNLOCKED);
        assert_eq!(exit_code(&u(&[], &["a"], &[])), exit::WRONG_PASSPHRASE);
        assert_eq!(exit_code(&u(&[], &["a"], &["b"])), exit::UNLOCK_FAILED);
        assert_eq!(exit_code(&u(&["a"], &["b"], &[])), exit::PARTIAL);
        assert_eq!(exit_code(&u(&["a"], &[], &["b"])), exit::PARTIAL);
        assert_eq!(opened(Some(0)), Opened::Yes);
        assert_eq!(opened(Some(2)), Opened::WrongPassphrase);
        assert_eq!(opened(Some(1)), Opened::Failed);
        assert_eq!(opened(None), Opened::Failed);
    }

    #[test]
    fn summary_lists_what_is_open_and_what_was_refused() {
        assert_eq!(summary(&[], &[]), "open: nothing\n");
        assert_eq!(
            summary(&["/dev/a as /dev/mapper/a".into()], &["/dev/b".into()]),
            "open: /dev/a as /dev/mapper/a; wrong passphrase for /dev/b\n"
        );
    }
}
