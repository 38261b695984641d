//! Command plans: the exact remote command lines each rescue step runs, built
//! from gathered facts. Everything here is pure, so every plan is unit-tested
//! against fixtures; [`super::run`] prints a plan, asks when it must, and
//! executes it through the SSH seam.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::discover::{resolve, MainSystem};
use super::fstab::{self, rescue_options};
use super::lsblk::Dev;
use super::shell::{self, join, quote, under};
use super::state::{Facts, KEXEC_DIR, OPENED_FILE, PEEK_DIR, STATE_DIR};
use crate::text::clip;
use anyhow::{bail, Result};
use serde::Serialize;

/// What a step sends on the command's standard input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Input {
    None,
    /// The LUKS passphrase (never in the command line).
    Passphrase,
    /// The in-memory key archive for the main initramfs.
    KeyArchive,
}

/// How much a step changes. `Destructive` and `Boot` ask before running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    Read,
    Change,
    Destructive,
    Boot,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub what: String,
    pub command: String,
    pub stdin: Input,
    pub effect: Effect,
    /// Exit codes that are results rather than failures.
    #[serde(skip)]
    pub ok_codes: Vec<u32>,
    /// Go on with the next step even when this one fails (one volume's wrong
    /// passphrase must not stop the others).
    #[serde(skip)]
    pub keep_going: bool,
    /// Show the command's output live.
    #[serde(skip)]
    pub stream: bool,
    /// The connection may drop while this runs (kexec).
    #[serde(skip)]
    pub may_disconnect: bool,
}

impl Step {
    pub fn new(what: impl Into<String>, command: impl Into<String>, effect: Effect) -> Self {
        Step {
            what: what.into(),
            command: command.into(),
            stdin: Input::None,
            effect,
            ok_codes: vec![0],
            keep_going: false,
            stream: false,
            may_disconnect: false,
        }
    }

    pub fn with_stdin(mut self, i: Input) -> Self {
        self.stdin = i;
        self
    }
}

/// Prints a plan for people.
pub fn render(title: &str, steps: &[Step], notes: &[String]) -> String {
    let mut s = format!("plan: {title}\n");
    for n in notes {
        s.push_str(&format!("  note: {n}\n"));
    }
    if steps.is_empty() {
        s.push_str("  nothing to do\n");
    }
    for (i, st) in steps.iter().enumerate() {
        let tag = match (st.effect, st.stdin) {
            (Effect::Boot, _) => " [boots another kernel]",
            (Effect::Destructive, _) => " [may change the main system]",
            (_, Input::Passphrase) => " [passphrase on stdin]",
            (_, Input::KeyArchive) => " [key archive on stdin]",
            _ => "",
        };
        s.push_str(&format!(
            "  {}. {}{tag}\n     $ {}\n",
            i + 1,
            st.what,
            st.command
        ));
    }
    s
}

/// The mapper name unlock uses first; systemd's convention.
pub fn default_name(dev: &Dev) -> Result<String> {
    match &dev.uuid {
        Some(u) => shell::mapper_name(&format!("luks-{u}")),
        None => shell::mapper_name(&format!("luks-{}", dev.name)),
    }
}

fn record(name: &str) -> String {
    format!(
        "{{ mkdir -p {} && echo {} >>{}; }}",
        quote(STATE_DIR),
        quote(name),
        quote(OPENED_FILE)
    )
}

/// Opens a LUKS device; the passphrase goes on stdin (`--key-file=-` reads
/// it verbatim, no newline handling).
pub fn open_step(dev: &Dev, name: &str) -> Result<Step> {
    let name = shell::mapper_name(name)?;
    let path = shell::path("device", &dev.path)?;
    let mut s = Step::new(
        format!("open {path} as /dev/mapper/{name}"),
        format!(
            "{} && {}",
            join(&["cryptsetup", "open", "--key-file=-", &path, &name]),
            record(&name)
        ),
        Effect::Change,
    )
    .with_stdin(Input::Passphrase);
    s.keep_going = true;
    Ok(s)
}

/// Closes a mapping this tool opened under a provisional name and opens it
/// again under the main system's crypttab name, so tools run in a chroot
/// (update-initramfs, dracut) find the names they expect.
pub fn rename_step(dev: &Dev, old: &str, new: &str) -> Result<Step> {
    let old = shell::mapper_name(old)?;
    let new = shell::mapper_name(new)?;
    let path = shell::path("device", &dev.path)?;
    Ok(Step::new(
        format!("reopen {path} as /dev/mapper/{new}, the name in the main system's crypttab"),
        format!(
            "{} && {} && {}",
            join(&["cryptsetup", "close", &old]),
            join(&["cryptsetup", "open", "--key-file=-", &path, &new]),
            record(&new)
        ),
        Effect::Change,
    )
    .with_stdin(Input::Passphrase))
}

/// Checks the passphrase against a LUKS device without opening it.
pub fn test_passphrase_step(dev: &Dev) -> Result<Step> {
    let path = shell::path("device", &dev.path)?;
    let mut s = Step::new(
        format!("check that the passphrase opens {path}"),
        join(&[
            "cryptsetup",
            "open",
            "--test-passphrase",
            "--key-file=-",
            &path,
        ]),
        Effect::Read,
    )
    .with_stdin(Input::Passphrase);
    s.keep_going = true;
    Ok(s)
}

/// One filesystem of the main system as the rescue side will mount it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountItem {
    /// Mount point inside the main system ("/", "/boot").
    pub mountpoint: String,
    pub device: String,
    pub fstype: String,
    pub options: String,
}

/// The filesystems to mount, root first, from the main system's own fstab.
/// Warnings name entries that cannot be mounted here.
pub fn mount_items(
    main: &MainSystem,
    devices: &[Dev],
    rw: bool,
) -> Result<(Vec<MountItem>, Vec<String>)> {
    let mut items = Vec::new();
    let mut warnings = Vec::new();
    let root_entry = main.fstab.iter().find(|e| e.mountpoint == "/");
    let mut root_opts = match root_entry {
        Some(e) => rescue_options(e, rw),
        None => {
            warnings.push(
                "the main system's fstab has no / entry; mounting the root found by looking".into(),
            );
            if rw {
                "rw".into()
            } else {
                "ro".into()
            }
        }
    };
    if let Some(sv) = &main.subvol {
        let named =
            root_entry.is_some_and(|e| e.subvol().is_some() || e.option("subvolid").is_some());
        if !named {
            root_opts.push_str(&format!(",subvol={}", shell::subvol_name(sv)?));
        }
    }
    items.push(MountItem {
        mountpoint: "/".into(),
        device: main.device.clone(),
        fstype: main.fstype.clone(),
        options: root_opts,
    });
    let mut rest: Vec<&fstab::Entry> = main
        .fstab
        .iter()
        .filter(|e| e.mountpoint != "/" && e.is_local_fs())
        .collect();
    rest.sort_by_key(|e| e.mountpoint.matches('/').count());
    for e in rest {
        if e.has("noauto") && !e.is_essential() {
            warnings.push(format!("{} is noauto in fstab: not mounted", e.mountpoint));
            continue;
        }
        match resolve(&e.spec, devices, &main.crypttab) {
            Some(dev) => items.push(MountItem {
                mountpoint: e.mountpoint.clone(),
                device: dev,
                fstype: e.fstype.clone(),
                options: rescue_options(e, rw),
            }),
            None => warnings.push(format!(
                "{} ({}) not found on the rescue system (locked, LVM not active, or another disk): not mounted",
                e.mountpoint, e.spec
            )),
        }
    }
    Ok((items, warnings))
}

/// Mount steps for the items, skipping what is already mounted (idempotent)
/// and remounting read-write when asked.
pub fn mount_steps(
    items: &[MountItem],
    facts: &Facts,
    target: &str,
    rw: bool,
) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for it in items {
        let path = shell::path("mount point", &under(target, &it.mountpoint))?;
        let opts = shell::word("mount options", &it.options)?;
        if opts
            .split(',')
            .any(|o| o.starts_with("subvol=") && o.contains(' '))
        {
            bail!("subvolume name in {} is not usable", clip(&opts));
        }
        read_only_stays_read_only(&opts, rw)?;
        let device = shell::path("device", &it.device)?;
        if let Some(m) = facts.mount_at(&path) {
            if rw && m.read_only() {
                steps.push(Step::new(
                    format!("remount {path} read-write"),
                    join(&["mount", "-o", "remount,rw", &path]),
                    Effect::Change,
                ));
            }
            continue;
        }
        let mut mount = vec!["mount".to_string()];
        if it.fstype != "auto" {
            mount.extend(["-t".into(), shell::word("filesystem type", &it.fstype)?]);
        }
        mount.extend(["-o".into(), opts, device.clone(), path.clone()]);
        steps.push(Step::new(
            format!(
                "mount {} ({device}) on {path}{}",
                it.mountpoint,
                if rw { " read-write" } else { " read-only" }
            ),
            format!("mkdir -p {} && {}", quote(&path), join(&mount)),
            Effect::Change,
        ));
    }
    Ok(steps)
}

/// A read-only mount's option list starts with `ro` and has no later option
/// that undoes it (`rw`, or a quote that makes libmount join the text after
/// a comma into one value). Checked on the final string, whatever built it.
fn read_only_stays_read_only(opts: &str, rw: bool) -> Result<()> {
    if rw {
        return Ok(());
    }
    let mut words = opts.split(',');
    let first = words.next();
    if first != Some("ro") || words.any(|o| o == "rw" || o == "ro") || opts.contains(['"', '\\']) {
        bail!(
            "mount options {} would not keep the mount read-only; refusing (mount by hand \
             if the subvolume or option really needs these characters)",
            clip(opts)
        );
    }
    Ok(())
}

/// Binds the rescue system's /dev, /proc, /sys and /run into the target, as
/// update-initramfs, grub-install and friends need them.
pub fn chroot_bind_steps(facts: &Facts, target: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for (dir, cmd) in [
        ("dev", vec!["mount", "--rbind", "/dev"]),
        ("proc", vec!["mount", "-t", "proc", "proc"]),
        ("sys", vec!["mount", "--rbind", "/sys"]),
        ("run", vec!["mount", "--rbind", "/run"]),
    ] {
        let path = shell::path("mount point", &under(target, dir))?;
        if facts.mount_at(&path).is_some() {
            continue;
        }
        let mut words: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        words.push(path.clone());
        let mut command = join(&words);
        if cmd.get(1) == Some(&"--rbind") {
            // Unmounting the chroot later must not propagate to the rescue
            // system's own /dev and /sys.
            command = format!("{command} && {}", join(&["mount", "--make-rslave", &path]));
        }
        steps.push(Step::new(
            format!("provide /{dir} in the main system"),
            command,
            Effect::Change,
        ));
    }
    Ok(steps)
}

pub fn chroot_step(target: &str, argv: &[String]) -> Result<Step> {
    if argv.is_empty() {
        bail!("no command given: portcullis rescue chroot HOST -- COMMAND [ARGS...]");
    }
    let target = shell::path("target", target)?;
    let mut words = vec!["chroot".to_string(), target];
    words.extend(argv.iter().cloned());
    let mut s = Step::new(
        format!("run {} in the main system", argv.join(" ")),
        join(&words),
        Effect::Destructive,
    );
    s.stream = true;
    Ok(s)
}

/// Unmounts everything under the target (deepest first), the tool's own
/// temporary mounts, and closes the volumes this tool opened.
pub fn close_steps(facts: &Facts, target: &str, keep_open: bool) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let target = shell::path("target", target)?;
    let mut mounts = facts.mounts_under(&target);
    for extra in [PEEK_DIR, KEXEC_DIR] {
        mounts.extend(facts.mounts_under(extra));
    }
    let mut seen = Vec::new();
    for m in mounts {
        // One umount per mount: a path with two stacked mounts appears twice.
        let path = shell::path("mount point", &m.mountpoint)?;
        let n = seen.iter().filter(|p| **p == path).count();
        seen.push(path.clone());
        steps.push(Step::new(
            format!(
                "unmount {path}{}",
                if n > 0 { " (again: stacked mount)" } else { "" }
            ),
            join(&["umount", &path]),
            Effect::Change,
        ));
    }
    if keep_open {
        return Ok(steps);
    }
    let mut all_closed = true;
    for name in &facts.opened {
        let name = shell::mapper_name(name)?;
        let dev = format!("/dev/mapper/{name}");
        if !facts
            .devices
            .iter()
            .any(|d| d.path == dev && d.kind == "crypt")
        {
            continue;
        }
        all_closed = false;
        steps.push(Step::new(
            format!("close {dev}"),
            join(&["cryptsetup", "close", &name]),
            Effect::Change,
        ));
    }
    if !facts.opened.is_empty() || !all_closed {
        steps.push(Step::new(
            "forget what was opened",
            join(&["rm", "-f", OPENED_FILE]),
            Effect::Change,
        ));
    }
    Ok(steps)
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
    use crate::rescue::discover::MainSystem;
    use crate::rescue::state::{parse_facts, tests::probe_output, tests::MOUNTINFO};
    use crate::rescue::{fstab, lsblk};
    use crate::unlock::crypttab;

    fn facts(mountinfo: &str, opened: &str) -> Facts {
        let b = "@@portcullis-t";
        parse_facts(&probe_output(b, opened, mountinfo), b)
    }

    fn main() -> MainSystem {
        MainSystem {
            device: "/dev/mapper/root".into(),
            fstype: "btrfs".into(),
            subvol: Some("@".into()),
            fstab: fstab::parse(include_str!("fixtures/fstab")),
            crypttab: crypttab::parse("root UUID=7d0a6f0e-3333-4a4a-9f9f-0123456789ab none luks\n"),
        }
    }

    const ROOT_ONLY: &str = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n";

    #[test]
    fn unlock_commands_never_carry_the_passphrase() {
        let devs = lsblk::parse(include_str!("fixtures/lsblk.json")).unwrap();
        let luks = devs.iter().find(|d| d.is_luks()).unwrap();
        let name = default_name(luks).unwrap();
        assert_eq!(name, "luks-7d0a6f0e-3333-4a4a-9f9f-0123456789ab");
        let s = open_step(luks, &name).unwrap();
        assert_eq!(
            s.command,
            "cryptsetup open --key-file=- /dev/vdb2 luks-7d0a6f0e-3333-4a4a-9f9f-0123456789ab && \
             { mkdir -p /run/portcullis-rescue && echo luks-7d0a6f0e-3333-4a4a-9f9f-0123456789ab >>/run/portcullis-rescue/opened; }"
        );
        assert_eq!(s.stdin, Input::Passphrase);
        let r = rename_step(luks, &name, "root").unwrap();
        assert!(r.command.starts_with("cryptsetup close luks-7d0a6f0e-3333-4a4a-9f9f-0123456789ab && cryptsetup open --key-file=- /dev/vdb2 root && "));
        assert!(rename_step(luks, &name, "x;reboot").is_err());
        let t = test_passphrase_step(luks).unwrap();
        assert_eq!(
            t.command,
            "cryptsetup open --test-passphrase --key-file=- /dev/vdb2"
        );
    }

    #[test]
    fn mount_plan_follows_fstab() {
        let f = facts(ROOT_ONLY, "");
        let (items, warnings) = mount_items(&main(), &f.devices, false).unwrap();
        let mps: Vec<_> = items
            .iter()
            .map(|i| (i.mountpoint.as_str(), i.device.as_str(), i.options.as_str()))
            .collect();
        assert_eq!(
            mps,
            [
                ("/", "/dev/mapper/root", "ro,subvol=@,compress=zstd:1"),
                ("/home", "/dev/mapper/root", "ro,subvol=/@home"),
                ("/boot", "/dev/vdb1", "ro"),
            ]
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("/srv/my data is noauto"));
        let steps = mount_steps(&items, &f, "/mnt/portcullis", false).unwrap();
        let cmds: Vec<_> = steps.iter().map(|s| s.command.as_str()).collect();
        assert_eq!(
            cmds,
            [
                "mkdir -p /mnt/portcullis && mount -t btrfs -o ro,subvol=@,compress=zstd:1 /dev/mapper/root /mnt/portcullis",
                "mkdir -p /mnt/portcullis/home && mount -t btrfs -o ro,subvol=/@home /dev/mapper/root /mnt/portcullis/home",
                "mkdir -p /mnt/portcullis/boot && mount -t ext4 -o ro /dev/vdb1 /mnt/portcullis/boot",
            ]
        );
        // Twice: nothing to do. With --rw: remounts.
        let mounted = facts(MOUNTINFO, "");
        assert!(mount_steps(&items, &mounted, "/mnt/portcullis", false)
            .unwrap()
            .is_empty());
        let (rw_items, _) = mount_items(&main(), &mounted.devices, true).unwrap();
        let rw = mount_steps(&rw_items, &mounted, "/mnt/portcullis", true).unwrap();
        assert_eq!(rw.len(), 3);
        assert_eq!(rw[0].command, "mount -o remount,rw /mnt/portcullis");
    }

    #[test]
    fn root_without_subvol_option_gets_the_found_one() {
        let f = facts(ROOT_ONLY, "");
        let mut m = main();
        m.fstab = fstab::parse("UUID=5b3e8a2c-1111-4c4c-9d9d-0123456789ab / btrfs defaults 0 0\n");
        let (items, _) = mount_items(&m, &f.devices, false).unwrap();
        assert_eq!(items[0].options, "ro,subvol=@");
        let mut evil = items.clone();
        evil[0].options = "ro,subvol=a b".into();
        assert!(mount_steps(&evil, &f, "/mnt/p", false).is_err());
        // Read-only stays read-only whatever the option list says.
        for bad in [
            "ro,subvol=@,rw",
            "ro,subvol=\"@,rw\"",
            "rw,subvol=@",
            "ro,ro",
        ] {
            evil[0].options = bad.into();
            let e = format!("{:#}", mount_steps(&evil, &f, "/mnt/p", false).unwrap_err());
            assert!(e.contains("read-only"), "{bad}: {e}");
        }
        evil[0].options = "rw,subvol=@".into();
        assert!(mount_steps(&evil, &f, "/mnt/p", true).is_ok());
        evil[0].options = "ro".into();
        evil[0].mountpoint = "/../../etc".into();
        assert!(mount_steps(&evil, &f, "/mnt/p", false).is_err());
    }

    #[test]
    fn subvolume_names_cannot_add_mount_options() {
        // `ro,subvol=@,rw` used to mount the main system read-write.
        let f = facts(ROOT_ONLY, "");
        let mut m = main();
        m.fstab = fstab::parse("UUID=5b3e8a2c-1111-4c4c-9d9d-0123456789ab / btrfs defaults 0 0\n");
        for sv in ["@,rw", "@\"", "a b", "@\\,rw", "\u{1b}x", ""] {
            m.subvol = Some(sv.into());
            let e = format!("{:#}", mount_items(&m, &f.devices, false).unwrap_err());
            assert!(e.contains("subvolume name"), "{sv:?}: {e}");
        }
        m.subvol = Some("@root.snap-1".into());
        let (items, _) = mount_items(&m, &f.devices, false).unwrap();
        assert_eq!(items[0].options, "ro,subvol=@root.snap-1");
    }

    #[test]
    fn chroot_and_close() {
        let f = facts(MOUNTINFO, "root\nluks-gone\n");
        let binds = chroot_bind_steps(&f, "/mnt/portcullis").unwrap();
        let cmds: Vec<_> = binds.iter().map(|s| s.command.as_str()).collect();
        assert_eq!(
            cmds,
            [
                "mount -t proc proc /mnt/portcullis/proc",
                "mount --rbind /sys /mnt/portcullis/sys && mount --make-rslave /mnt/portcullis/sys",
                "mount --rbind /run /mnt/portcullis/run && mount --make-rslave /mnt/portcullis/run",
            ]
        );
        let c = chroot_step(
            "/mnt/portcullis",
            &[
                "sh".into(),
                "-c".into(),
                "echo $HOME; update-initramfs -u".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            c.command,
            "chroot /mnt/portcullis sh -c 'echo $HOME; update-initramfs -u'"
        );
        assert!(chroot_step("/mnt/p", &[]).is_err());
        let close = close_steps(&f, "/mnt/portcullis", false).unwrap();
        let cmds: Vec<_> = close.iter().map(|s| s.command.as_str()).collect();
        assert_eq!(
            cmds,
            [
                "umount /mnt/portcullis/dev/pts",
                "umount /mnt/portcullis/dev",
                "umount /mnt/portcullis/boot",
                "umount /mnt/portcullis/home",
                "umount /mnt/portcullis",
                "cryptsetup close root",
                "rm -f /run/portcullis-rescue/opened",
            ]
        );
        assert_eq!(close_steps(&f, "/mnt/portcullis", true).unwrap().len(), 5);
        // Nothing mounted, nothing recorded: nothing to do.
        assert!(close_steps(&facts(ROOT_ONLY, ""), "/mnt/portcullis", false)
            .unwrap()
            .is_empty());
        let text = render("close", &close, &["n".into()]);
        assert!(
            text.contains("  6. close /dev/mapper/root\n     $ cryptsetup close root\n"),
            "{text}"
        );
    }
}
