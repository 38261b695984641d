//! `rescue kexec`: boots the main system's own kernel straight from the
//! rescue system, without firmware or boot loader. Unlocks and mounts
//! first when needed (both idempotent), picks the boot entry, decides the
//! passphrase hand-over (so the main initramfs does not ask again), then
//! unmounts, closes and boots.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::{boot_config, mount_inner, unlock_inner, Details, Outcome, Pass, PassReader};
use crate::protocol::exit;
use crate::rescue::discover::{self, MainSystem};
use crate::rescue::handover::{self, Flavour, Handover, Volume};
use crate::rescue::kexec::{self as boot, BootConfig, Choice, LoadMethod};
use crate::rescue::lsblk::{Dev, Devices};
use crate::rescue::plan::{self, Step};
use crate::rescue::remote::Remote;
use crate::rescue::report::KexecReport;
use crate::rescue::run::{Secrets, Session};
use crate::rescue::state::Facts;
use anyhow::{anyhow, bail, Result};
use zeroize::Zeroizing;

#[derive(Debug, Clone)]
pub struct KexecOptions {
    pub entry: Option<usize>,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub cmdline: Option<String>,
    pub append: Option<String>,
    pub flavour: Option<Flavour>,
    pub no_handover: bool,
    pub load_method: LoadMethod,
    pub load_only: bool,
}

pub async fn kexec_flow<R: Remote>(
    s: &mut Session<'_, R>,
    o: &KexecOptions,
    read_pass: PassReader<'_>,
) -> Result<Outcome> {
    let facts = s.facts().await?;
    facts.require(&["kexec", "mount", "umount"])?;
    let mut pass = Pass::new(read_pass);
    if !ensure_mounted(s, &facts, &mut pass).await? {
        return Ok((exit::UNLOCKED, Details::dry_run()));
    }
    let facts = s.facts().await?;
    let main = s.main_system(&facts, None, None).await?;
    let target = s.s.target.clone();
    let cfg = boot_config(s, &target).await?;
    let choice = choose(s, &cfg, &main, o).await?;
    let flag = boot::load_flag(o.load_method, &facts);
    let mut notes = vec![format!("booting {}", choice.entry), load_note(flag, &facts)];
    let handover = hand_over(s, &facts, &main, &cfg, &choice, o, &mut pass).await?;
    notes.push(handover.note());
    let archive = match (&handover, pass.if_read()) {
        (Handover::To { flavour, volumes }, Some(p)) => {
            Some(handover::archive(*flavour, volumes, p)?)
        }
        _ => None,
    };
    // The archive holds the key from here on; the passphrase is not
    // needed any more.
    drop(pass);
    boot_it(
        s,
        &choice,
        flag,
        handover.flavour(),
        notes,
        archive,
        o.load_only,
    )
    .await?;
    let r = KexecReport {
        choice,
        handover: handover.flavour(),
        handover_volumes: handover.volumes().to_vec(),
        handover_impossible: handover.why_not().map(String::from),
        load: flag,
    };
    Ok((exit::UNLOCKED, Details::Kexec(Box::new(r))))
}

/// Unlocks (if something is locked) and mounts read-only (if the target is
/// empty). `false`: a dry run stops here, since the rest of the plan
/// depends on what the volumes hold.
async fn ensure_mounted<R: Remote>(
    s: &mut Session<'_, R>,
    facts: &Facts,
    pass: &mut Pass<'_>,
) -> Result<bool> {
    let target = s.s.target.clone();
    let mounted = facts.mount_at(&target).is_some();
    let locked = facts
        .devices
        .iter()
        .any(|d| d.is_luks() && facts.devices.mapping_of(&d.path).is_none());
    if locked && !mounted {
        unlock_inner(s, &[], pass).await?;
        if s.s.dry_run {
            s.say("dry run: mounting and the kexec steps follow once the volumes are open; `unlock` and `mount` first show the whole plan\n");
            return Ok(false);
        }
    }
    if !mounted {
        mount_inner(s, false, None, None).await?;
        if s.s.dry_run {
            s.say("dry run: the kexec plan needs the main system mounted; run `mount` first to see it in full\n");
            return Ok(false);
        }
    }
    Ok(true)
}

/// The kernel, initrd and command line to boot, as paths on the rescue
/// system.
async fn choose<R: Remote>(
    s: &mut Session<'_, R>,
    cfg: &BootConfig,
    main: &MainSystem,
    o: &KexecOptions,
) -> Result<Choice> {
    let target = s.s.target.clone();
    let p = pick_entry(cfg, o)?;
    let kernel = resolve_file(s, &target, &p.kernel, "kernel").await?;
    let initrd = match &p.initrd {
        Some(i) => Some(resolve_file(s, &target, i, "initrd").await?),
        None => None,
    };
    let mut cmdline = p.cmdline;
    if cmdline.is_empty() {
        cmdline = cmdline_from_fstab(main)?;
        s.note(format!(
            "no command line found; using one built from fstab: {cmdline}"
        ));
    }
    if let Some(a) = &o.append {
        cmdline = format!("{cmdline} {a}");
    }
    Ok(Choice {
        entry: p.entry,
        kernel,
        initrd,
        cmdline,
    })
}

/// A boot entry as the boot loader names its files (relative to /boot or
/// the ESP), before they are found under the target.
#[derive(Debug, PartialEq, Eq)]
struct Picked {
    /// How the plan names it: "[0] Debian (bls …)" or "given on the
    /// command line".
    entry: String,
    kernel: String,
    initrd: Option<String>,
    /// Empty when neither the entry nor /etc/kernel/cmdline has one.
    cmdline: String,
}

/// `--kernel` wins over the entries; otherwise entry `--entry` (default 0),
/// refused when it cannot be booted by kexec or is ambiguous.
fn pick_entry(cfg: &BootConfig, o: &KexecOptions) -> Result<Picked> {
    if let Some(k) = &o.kernel {
        return Ok(Picked {
            entry: "given on the command line".into(),
            kernel: k.clone(),
            initrd: o.initrd.clone(),
            cmdline: o
                .cmdline
                .clone()
                .or_else(|| cfg.kernel_cmdline.clone())
                .unwrap_or_default(),
        });
    }
    if cfg.entries.is_empty() {
        bail!("no boot loader entry and no kernel found in the main system's /boot: pass --kernel, --initrd and --cmdline");
    }
    let list = cfg
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| format!("[{i}] {} ({})", e.title, e.source))
        .collect::<Vec<_>>()
        .join(", ");
    let i = o.entry.unwrap_or(0);
    let e = cfg
        .entries
        .get(i)
        .ok_or_else(|| anyhow!("--entry {i}: there are only {list}"))?;
    // A problem the admin can work around with --cmdline is no reason to
    // refuse; a unified kernel image cannot be split by us at all.
    if let Some(p) = &e.problem {
        if o.cmdline.is_none() || p.contains("unified") {
            bail!("entry [{i}] {}: {p}; entries: {list}", e.title);
        }
    }
    if e.initrds.len() > 1 && o.initrd.is_none() {
        bail!(
            "entry [{i}] has several initrds (microcode + main?): pass --initrd with the main one"
        );
    }
    Ok(Picked {
        entry: format!("[{i}] {} ({})", e.title, e.source),
        kernel: e.kernel.clone(),
        initrd: o.initrd.clone().or_else(|| e.initrds.first().cloned()),
        cmdline: o
            .cmdline
            .clone()
            .or_else(|| Some(e.cmdline.clone()).filter(|c| !c.is_empty()))
            .or_else(|| cfg.kernel_cmdline.clone())
            .unwrap_or_default(),
    })
}

/// Finds a boot loader path under the target: loaders name files relative
/// to /boot or the ESP, and which one is only known by looking.
async fn resolve_file<R: Remote>(
    s: &mut Session<'_, R>,
    target: &str,
    loader_path: &str,
    what: &str,
) -> Result<String> {
    let cands = boot::candidates(target, loader_path);
    let out = s
        .read(
            &format!("where {what} {loader_path} is"),
            &boot::exists_command(&cands),
        )
        .await?;
    let text = out.stdout_text();
    let found: Vec<&str> = text.lines().collect();
    cands
        .into_iter()
        .find(|c| found.contains(&c.as_str()))
        .ok_or_else(|| anyhow!("{what} {loader_path} not found under {target} (is /boot mounted?)"))
}

/// A command line for an entry that has none: the root from fstab.
fn cmdline_from_fstab(main: &MainSystem) -> Result<String> {
    let root = main
        .fstab
        .iter()
        .find(|e| e.mountpoint == "/")
        .map(|e| e.spec.clone())
        .ok_or_else(|| anyhow!("no command line in the entry, no /etc/kernel/cmdline, no / in fstab: pass --cmdline"))?;
    boot::synthesize_cmdline(&root, main.subvol.as_deref())
}

/// Which kexec system call, and why: under lockdown or Secure Boot only
/// kexec_file_load with a signed kernel is allowed.
fn load_note(flag: &str, facts: &Facts) -> String {
    match (flag, facts.restricted_kexec()) {
        ("-s", true) => format!(
            "lockdown {} / Secure Boot {}: kexec_file_load (kexec -s), the kernel must be signed",
            facts.lockdown.as_deref().unwrap_or("?"),
            facts
                .secure_boot
                .map_or("unknown", |b| if b { "on" } else { "off" })
        ),
        ("-s", false) => "kexec_file_load (kexec -s), as asked".into(),
        (_, true) => {
            "kexec_load (kexec -c) as asked, although lockdown/Secure Boot is on: expect a refusal"
                .into()
        }
        _ => "no lockdown, no Secure Boot: kexec_load (kexec -c)".into(),
    }
}

/// Whether the passphrase goes to the main initramfs, and for which
/// volumes: [`handover::decide`] rules on the flavour, then the passphrase
/// is tried on the crypttab volumes.
async fn hand_over<R: Remote>(
    s: &mut Session<'_, R>,
    facts: &Facts,
    main: &MainSystem,
    cfg: &BootConfig,
    choice: &Choice,
    o: &KexecOptions,
    pass: &mut Pass<'_>,
) -> Result<Handover> {
    let decided = handover::decide(
        o.no_handover,
        choice.initrd.is_some(),
        o.flavour,
        &cfg.existing,
        cfg.mkinitcpio_conf.as_deref(),
    );
    match decided {
        Err(why) => Ok(Handover::Impossible(why.to_string())),
        Ok(f) => {
            // Building the combined initrd needs both, on the rescue side.
            facts.require(&["cryptsetup", "truncate"])?;
            let volumes = volumes_to_hand_over(s, facts, main, pass).await?;
            Ok(Handover::with(f, volumes))
        }
    }
}

/// The main system's crypttab volumes that this passphrase opens (tested
/// with `cryptsetup open --test-passphrase`, which opens nothing). One it
/// does not open is left to ask after boot. A dry run assumes all.
async fn volumes_to_hand_over<R: Remote>(
    s: &mut Session<'_, R>,
    facts: &Facts,
    main: &MainSystem,
    pass: &mut Pass<'_>,
) -> Result<Vec<Volume>> {
    let cands: Vec<(Volume, &Dev)> = main
        .crypttab
        .iter()
        .filter_map(|e| discover::luks_device(e, &facts.devices).map(|d| (Volume::new(e, d), d)))
        .collect();
    if s.s.dry_run {
        s.note("dry run: assuming the passphrase opens every crypttab volume");
        return Ok(cands.into_iter().map(|c| c.0).collect());
    }
    if cands.is_empty() {
        return Ok(vec![]);
    }
    let steps: Vec<Step> = cands
        .iter()
        .map(|(_, d)| plan::test_passphrase_step(d))
        .collect::<Result<_>>()?;
    let secrets = Secrets {
        passphrase: Some(pass.get()?),
        archive: None,
    };
    let outs = s
        .run_plan(
            "check the passphrase for the handover",
            &steps,
            &[],
            &secrets,
        )
        .await?
        .unwrap_or_default();
    let mut volumes = Vec::new();
    for ((v, d), out) in cands.into_iter().zip(&outs) {
        if out.status == Some(0) {
            volumes.push(v);
        } else {
            s.note(format!(
                "{} ({}): the passphrase does not open it; it will ask after boot",
                v.name, d.path
            ));
        }
    }
    Ok(volumes)
}

/// Unmounts, closes and boots (or only loads, with `--load-only`). The key
/// archive goes to the step that builds the combined initrd, on stdin.
async fn boot_it<R: Remote>(
    s: &mut Session<'_, R>,
    choice: &Choice,
    flag: &str,
    handover: Option<Flavour>,
    mut notes: Vec<String>,
    archive: Option<Zeroizing<Vec<u8>>>,
    load_only: bool,
) -> Result<()> {
    let target = s.s.target.clone();
    let facts = s.facts().await?;
    let close = plan::close_steps(&facts, &target, false)?;
    let p = boot::steps(choice, flag, handover, &facts, close, load_only)?;
    notes.extend(p.notes);
    let secrets = Secrets {
        passphrase: None,
        archive: archive.as_deref().map(|a| a.as_slice()),
    };
    let ran = s
        .run_plan(
            "boot the main system with kexec",
            &p.steps,
            &notes,
            &secrets,
        )
        .await?;
    drop(archive);
    if ran.is_some() && !load_only {
        s.say("kexec started: the main system is booting. Check it with `portcullis status HOST` (initramfs listener) or ssh.\n");
    }
    Ok(())
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
    use crate::rescue::bootentry::BootEntry;
    use crate::rescue::cpio;
    use crate::rescue::flows::testkit::*;
    use crate::rescue::remote::fake::Fake;
    use crate::rescue::state::tests::{probe_output_with, MOUNTINFO};

    #[tokio::test]
    async fn kexec_hands_the_key_over_in_an_archive_on_stdin() {
        let mut fake = Fake::default();
        fake.on(
            "~lsblk -J",
            0,
            &probe_output_with("@@B", "root\n", MOUNTINFO, &lsblk(Some("root"))),
        );
        fake.on(
            "~/etc/crypttab",
            0,
            &format!(
                "@@B fstab\n{}\n@@B crypttab\nroot UUID={LUKS_UUID} none luks,discard\n",
                include_str!("../fixtures/fstab")
            ),
        );
        fake.on(
            "~loader/entries",
            0,
            "@@B file /boot/extlinux/extlinux.conf\nDEFAULT main\nLABEL main\n LINUX /vmlinuz\n INITRD /initrd.img\n \
             APPEND root=/dev/mapper/root ro rootflags=subvol=@\n@@B boot\nvmlinuz\ninitrd.img\n\
             @@B exists\n/usr/share/initramfs-tools/hooks/cryptroot\n",
        );
        fake.on(
            "for f in",
            0,
            "/mnt/portcullis/boot/vmlinuz\n/mnt/portcullis/boot/initrd.img\n",
        );
        fake.on("cryptsetup open --test-passphrase", 0, "");
        for step in [
            "mkdir -p /run/portcullis-rescue/kexec",
            "umask 077",
            "kexec -c -l",
            "umount",
            "cryptsetup close",
            "rm -f",
            "(sleep 1",
        ] {
            fake.on(step, 0, "");
        }
        let o = kexec_options();
        let mut s = Session::new(&mut fake, settings());
        let (code, v) = kexec_flow(&mut s, &o, &pass).await.unwrap();
        assert_eq!(code, exit::UNLOCKED);
        let Details::Kexec(r) = v else {
            panic!("{v:?}")
        };
        assert_eq!(r.handover, Some(Flavour::InitramfsTools));
        assert_eq!(r.handover_volumes.len(), 1);
        drop(s);
        never_in_commands(&fake);
        let cmds = fake.commands();
        let load = cmds.iter().find(|c| c.starts_with("kexec")).unwrap();
        assert!(
            load.starts_with(
                "kexec -c -l /mnt/portcullis/boot/vmlinuz --initrd=/run/portcullis-rescue/kexec/initrd \
                 '--command-line=root=/dev/mapper/root ro rootflags=subvol=@ quiet'; rc=$?; rm -f"
            ),
            "{load}"
        );
        // Unmount everything, close, then boot: in that order, boot last.
        let tail: Vec<&str> = cmds.iter().rev().take(8).rev().copied().collect();
        assert_eq!(
            tail.last().copied(),
            Some("(sleep 1; sync; kexec -e) </dev/null >/dev/null 2>&1 &")
        );
        assert!(tail.contains(&"cryptsetup close root"), "{tail:?}");
        let close_at = cmds
            .iter()
            .position(|c| *c == "cryptsetup close root")
            .unwrap();
        let last_umount = cmds
            .iter()
            .rposition(|c| c.starts_with("umount /mnt/portcullis"))
            .unwrap();
        assert!(last_umount < close_at);
        // The passphrase went to the check, the archive to the initrd step.
        let test = fake
            .calls
            .iter()
            .find(|c| c.0.starts_with("cryptsetup open --test-passphrase"))
            .unwrap();
        assert_eq!(test.1.as_deref(), Some(PASS));
        let append = fake
            .calls
            .iter()
            .find(|c| c.0.starts_with("umask 077"))
            .unwrap();
        let files = cpio::list(append.1.as_deref().unwrap()).unwrap();
        let key = files
            .iter()
            .find(|f| f.0 == "cryptroot/keyfiles/root.key")
            .unwrap();
        assert_eq!(key.2, PASS);
        let tab = files.iter().find(|f| f.0 == "cryptroot/crypttab").unwrap();
        assert!(String::from_utf8_lossy(&tab.2).contains(&format!(
            "root UUID={LUKS_UUID} /cryptroot/keyfiles/root.key luks,discard\n"
        )));
    }

    #[tokio::test]
    async fn missing_kexec_is_named_before_anything_runs() {
        let mut fake = Fake::default();
        let probe = probe_output_with("@@B", "", ROOT_ONLY, &lsblk(None)).replace("kexec\n", "");
        fake.on("~lsblk -J", 0, &probe);
        let o = KexecOptions {
            entry: None,
            kernel: None,
            initrd: None,
            cmdline: None,
            append: None,
            flavour: None,
            no_handover: false,
            load_method: LoadMethod::Auto,
            load_only: false,
        };
        let mut s = Session::new(&mut fake, settings());
        let e = kexec_flow(&mut s, &o, &pass).await.unwrap_err().to_string();
        assert!(e.contains("lacks `kexec` (package kexec-tools)"), "{e}");
        drop(s);
        assert_eq!(fake.calls.len(), 1, "only the read-only probe ran");
    }

    fn entry(title: &str, initrds: &[&str], cmdline: &str, problem: Option<&str>) -> BootEntry {
        BootEntry {
            title: title.into(),
            source: "bls x.conf".into(),
            kernel: "/vmlinuz".into(),
            initrds: initrds.iter().map(|s| s.to_string()).collect(),
            cmdline: cmdline.into(),
            problem: problem.map(String::from),
        }
    }

    fn options() -> KexecOptions {
        KexecOptions {
            append: None,
            ..kexec_options()
        }
    }

    #[test]
    fn pick_entry_prefers_the_command_line_then_the_entry() {
        let cfg = BootConfig {
            entries: vec![
                entry("a", &["/initrd.img"], "root=/dev/x", None),
                entry("b", &["/ucode.img", "/initrd.img"], "", None),
                entry("uki", &[], "", Some("a unified kernel image")),
            ],
            kernel_cmdline: Some("from /etc/kernel/cmdline".into()),
            ..Default::default()
        };
        let p = pick_entry(&cfg, &options()).unwrap();
        assert_eq!(
            p,
            Picked {
                entry: "[0] a (bls x.conf)".into(),
                kernel: "/vmlinuz".into(),
                initrd: Some("/initrd.img".into()),
                cmdline: "root=/dev/x".into(),
            }
        );
        // --kernel: the entries are not consulted; the command line falls
        // back to /etc/kernel/cmdline.
        let o = KexecOptions {
            kernel: Some("/k".into()),
            ..options()
        };
        let p = pick_entry(&cfg, &o).unwrap();
        assert_eq!(p.entry, "given on the command line");
        assert_eq!(p.cmdline, "from /etc/kernel/cmdline");
        assert_eq!(p.initrd, None);
        // Two initrds: which one is the main one is the admin's call.
        let o = KexecOptions {
            entry: Some(1),
            ..options()
        };
        let e = pick_entry(&cfg, &o).unwrap_err().to_string();
        assert!(e.contains("pass --initrd with the main one"), "{e}");
        let o = KexecOptions {
            entry: Some(1),
            initrd: Some("/initrd.img".into()),
            ..options()
        };
        assert_eq!(
            pick_entry(&cfg, &o).unwrap().cmdline,
            "from /etc/kernel/cmdline"
        );
        // A unified image is refused even with --cmdline.
        let o = KexecOptions {
            entry: Some(2),
            cmdline: Some("x".into()),
            ..options()
        };
        let e = pick_entry(&cfg, &o).unwrap_err().to_string();
        assert!(
            e.starts_with("entry [2] uki: a unified kernel image"),
            "{e}"
        );
        // Out of range: the error lists what there is.
        let o = KexecOptions {
            entry: Some(7),
            ..options()
        };
        let e = pick_entry(&cfg, &o).unwrap_err().to_string();
        assert!(
            e.starts_with("--entry 7: there are only [0] a (bls x.conf), [1] b"),
            "{e}"
        );
        let e = pick_entry(&BootConfig::default(), &options())
            .unwrap_err()
            .to_string();
        assert!(e.contains("pass --kernel, --initrd and --cmdline"), "{e}");
    }

    #[test]
    fn a_missing_command_line_is_built_from_the_fstab_root() {
        let mut main = MainSystem {
            device: "/dev/mapper/root".into(),
            fstype: "btrfs".into(),
            subvol: Some("@".into()),
            fstab: crate::rescue::fstab::parse(include_str!("../fixtures/fstab")),
            crypttab: vec![],
        };
        assert_eq!(
            cmdline_from_fstab(&main).unwrap(),
            "root=/dev/mapper/root ro rootflags=subvol=@"
        );
        main.fstab.retain(|e| e.mountpoint != "/");
        let e = cmdline_from_fstab(&main).unwrap_err().to_string();
        assert!(e.ends_with("no / in fstab: pass --cmdline"), "{e}");
    }

    #[test]
    fn load_note_warns_when_lockdown_will_refuse() {
        let b = "@@portcullis-t";
        let plain = crate::rescue::state::parse_facts(
            &probe_output_with(b, "", MOUNTINFO, &lsblk(None)),
            b,
        );
        assert_eq!(
            load_note("-c", &plain),
            "no lockdown, no Secure Boot: kexec_load (kexec -c)"
        );
        assert_eq!(
            load_note("-s", &plain),
            "kexec_file_load (kexec -s), as asked"
        );
        let locked = crate::rescue::state::parse_facts(
            &probe_output_with(b, "", MOUNTINFO, &lsblk(None)).replace(
                "[none] integrity confidentiality",
                "none [integrity] confidentiality",
            ),
            b,
        );
        assert!(locked.restricted_kexec());
        assert!(load_note("-c", &locked).ends_with("expect a refusal"));
        assert!(load_note("-s", &locked).starts_with("lockdown integrity / Secure Boot unknown"));
    }

    #[tokio::test]
    async fn a_volume_the_passphrase_does_not_open_is_left_to_ask() {
        let mut fake = mounted(&[("cryptsetup open --test-passphrase", 2, "")]);
        let mut s = Session::new(&mut fake, settings());
        let (code, v) = kexec_flow(&mut s, &kexec_options(), &pass).await.unwrap();
        assert_eq!(code, exit::UNLOCKED);
        let Details::Kexec(r) = v else {
            panic!("{v:?}")
        };
        assert_eq!(r.handover, None);
        assert_eq!(
            r.handover_impossible.as_deref(),
            Some("no volume of the main system's crypttab opens with this passphrase")
        );
        assert!(
            s.notes
                .iter()
                .any(|n| n.contains("root (/dev/vdb2): the passphrase does not open it")),
            "{:?}",
            s.notes
        );
        drop(s);
        // No archive: the initrd is booted as it is.
        assert!(fake.calls.iter().all(|c| !c.0.starts_with("umask 077")));
    }
}
