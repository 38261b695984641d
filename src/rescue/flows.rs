//! One function per `portcullis rescue` command: gather, plan, run. Each
//! returns the exit code and a JSON object with what it found and did; the
//! plans themselves come from the pure modules.

use super::check;
use super::discover::{self, MainSystem};
use super::handover::{self, Flavour};
use super::kexec::{self, BootConfig, Choice, LoadMethod};
use super::lsblk::{Dev, Devices};
use super::luks;
use super::plan::{self, Step};
use super::remote::Remote;
use super::run::{Secrets, Session, NEEDS_REPAIR};
use super::state::{self, Facts};
use crate::protocol::exit;
use crate::secret::Passphrase;
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};

/// Reads the passphrase when it is first needed.
pub type PassReader<'a> = &'a dyn Fn() -> Result<Passphrase>;

pub async fn inspect<R: Remote>(s: &mut Session<'_, R>) -> Result<(u8, Value)> {
    let facts = s.facts().await?;
    let mut luks_out = Vec::new();
    let luks_devs: Vec<Dev> = facts
        .devices
        .iter()
        .filter(|d| d.is_luks())
        .cloned()
        .collect();
    for d in &luks_devs {
        let header = if facts.has("cryptsetup") {
            s.luks_dump(d).await?
        } else {
            None
        };
        let warnings = header
            .as_ref()
            .map(|h| luks::memory_warnings(&d.path, h, facts.mem_available_kib))
            .unwrap_or_default();
        let open_as = facts.devices.mapping_of(&d.path).map(|m| m.path.clone());
        luks_out.push((d.clone(), header, open_as, warnings));
    }
    let peeks = s.peeks(&facts).await?;
    let target = s.s.target.clone();
    let boot = if facts.mount_at(&target).is_some() {
        Some(boot_config(s, &target).await?)
    } else {
        None
    };
    let main = discover::choose(&peeks, None, None).ok();
    let text = super::report::inspect(
        &facts,
        &luks_out,
        &peeks,
        main.as_ref(),
        &target,
        boot.as_ref(),
    );
    s.say(&text);
    let missing: Vec<&str> = state::TOOLS
        .iter()
        .map(|t| t.0)
        .filter(|t| !facts.has(t))
        .collect();
    let v = json!({
        "rescue": {
            "mem-total-kib": facts.mem_total_kib,
            "mem-available-kib": facts.mem_available_kib,
            "lockdown": facts.lockdown,
            "secure-boot": facts.secure_boot,
            "systemd": facts.systemd,
            "swap-active": facts.swap_active,
            "missing-tools": missing,
        },
        "devices": facts.devices,
        "luks": luks_out.iter().map(|(d, h, o, w)| json!({
            "device": d.path, "header": h, "open-as": o, "warnings": w,
            "max-kdf-memory-kib": h.as_ref().and_then(luks::max_memory_kib),
        })).collect::<Vec<_>>(),
        "filesystems": peeks,
        "main-system": main,
        "mounted-at-target": facts.mount_at(&target).is_some(),
        "boot-entries": boot.map(|b| b.entries),
    });
    Ok((exit::UNLOCKED, v))
}

pub async fn boot_config<R: Remote>(s: &mut Session<'_, R>, target: &str) -> Result<BootConfig> {
    let b = state::boundary()?;
    let out = s
        .read(
            "the main system's boot configuration",
            &kexec::probe_command(&b, target),
        )
        .await?;
    Ok(kexec::parse_probe(&out.stdout_text(), &b))
}

/// Result of an unlock: (opened now, already open, wrong passphrase, failed).
#[derive(Default, Debug)]
pub struct Unlocked {
    pub opened: Vec<String>,
    pub already: Vec<String>,
    pub wrong: Vec<String>,
    pub failed: Vec<String>,
}

/// Opens locked LUKS devices (all, or those named), then renames them to the
/// main system's crypttab names once its crypttab can be read.
pub async fn unlock_inner<R: Remote>(
    s: &mut Session<'_, R>,
    only: &[String],
    pass: &mut Option<Passphrase>,
    read_pass: PassReader<'_>,
) -> Result<Unlocked> {
    let facts = s.facts().await?;
    facts.require(&["cryptsetup", "lsblk"])?;
    let mut u = Unlocked::default();
    let mut to_open = Vec::new();
    for d in facts.devices.iter().filter(|d| d.is_luks()) {
        if !only.is_empty()
            && !only
                .iter()
                .any(|o| facts.devices.resolve(o).is_some_and(|x| x.path == d.path))
        {
            continue;
        }
        match facts.devices.mapping_of(&d.path) {
            Some(m) => {
                s.say(&format!("{} is already open as {}\n", d.path, m.path));
                u.already.push(d.path.clone());
            }
            None => to_open.push(d.clone()),
        }
    }
    for o in only {
        if facts.devices.resolve(o).is_none_or(|d| !d.is_luks()) {
            bail!("--device {o}: no such LUKS device on the rescue system (see `portcullis rescue inspect`)");
        }
    }
    if to_open.is_empty() {
        if u.already.is_empty() {
            s.note("no LUKS device found on the rescue system");
        }
        return Ok(u);
    }
    let mut notes = Vec::new();
    let mut steps = Vec::new();
    for d in &to_open {
        if let Some(h) = s.luks_dump(d).await? {
            notes.extend(luks::memory_warnings(&d.path, &h, facts.mem_available_kib));
        }
        steps.push(plan::open_step(d, &plan::default_name(d)?)?);
    }
    notes.push("then: each volume is reopened under its name in the main system's crypttab, once that can be read".into());
    if s.s.dry_run {
        s.run_plan("unlock", &steps, &notes, &Secrets::default())
            .await?;
        return Ok(u);
    }
    if pass.is_none() {
        *pass = Some(read_pass()?);
    }
    let secrets = Secrets {
        passphrase: pass.as_ref(),
        archive: None,
    };
    let outs = s
        .run_plan("unlock", &steps, &notes, &secrets)
        .await?
        .unwrap_or_default();
    let mut opened_devs = Vec::new();
    for (d, o) in to_open.iter().zip(&outs) {
        match o.status {
            Some(0) => {
                s.say(&format!("  {}: opened\n", d.path));
                u.opened.push(d.path.clone());
                opened_devs.push(d.clone());
            }
            Some(2) => {
                s.say(&format!("  {}: wrong passphrase\n", d.path));
                u.wrong.push(d.path.clone());
            }
            _ => {
                s.say(&format!("  {}: failed: {}\n", d.path, o.last_line()));
                u.failed.push(d.path.clone());
            }
        }
    }
    if opened_devs.is_empty() {
        return Ok(u);
    }
    // Phase 2: the main system's own names.
    let facts = s.facts().await?;
    let main = match s.main_system(&facts, None, None).await {
        Ok(m) => m,
        Err(e) => {
            s.note(format!("names stay luks-UUID: {e:#}"));
            return Ok(u);
        }
    };
    let mut renames = Vec::new();
    for e in &main.crypttab {
        let Some(luks) = discover::luks_device(e, &facts.devices) else {
            continue;
        };
        if !opened_devs.iter().any(|d| d.path == luks.path) {
            continue;
        }
        let Some(m) = facts.devices.mapping_of(&luks.path) else {
            continue;
        };
        if m.name == e.name || state_mounted(&facts, &m.path) {
            continue;
        }
        if facts.devices.iter().any(|d| d.name == e.name) {
            s.note(format!(
                "{} keeps the name {}: {} is taken on the rescue system",
                luks.path, m.name, e.name
            ));
            continue;
        }
        match plan::rename_step(luks, &m.name, &e.name) {
            Ok(st) => renames.push(st),
            Err(err) => s.note(format!("{}: keeps the name {}: {err:#}", luks.path, m.name)),
        }
    }
    if !renames.is_empty() {
        s.run_plan(
            "use the main system's volume names",
            &renames,
            &[],
            &secrets,
        )
        .await?;
    }
    Ok(u)
}

fn state_mounted(facts: &Facts, dev: &str) -> bool {
    !facts.device_mounted(dev).is_empty()
}

pub async fn unlock<R: Remote>(
    s: &mut Session<'_, R>,
    only: &[String],
    read_pass: PassReader<'_>,
) -> Result<(u8, Value)> {
    let mut pass = None;
    let u = unlock_inner(s, only, &mut pass, read_pass).await?;
    drop(pass);
    if !s.s.dry_run {
        let f = s.facts().await?;
        let open: Vec<String> = f
            .devices
            .iter()
            .filter(|d| d.is_luks())
            .filter_map(|d| {
                f.devices
                    .mapping_of(&d.path)
                    .map(|m| format!("{} as {}", d.path, m.path))
            })
            .collect();
        s.say(&format!(
            "open: {}{}\n",
            if open.is_empty() {
                "nothing".to_string()
            } else {
                open.join(", ")
            },
            if u.wrong.is_empty() {
                String::new()
            } else {
                format!("; wrong passphrase for {}", u.wrong.join(", "))
            }
        ));
        if !open.is_empty() {
            s.say("next: `portcullis rescue mount HOST` (read-only), then `check`\n");
        }
    }
    let code = if !u.failed.is_empty() && u.opened.is_empty() {
        exit::UNLOCK_FAILED
    } else if !u.wrong.is_empty() && u.opened.is_empty() {
        exit::WRONG_PASSPHRASE
    } else if !u.wrong.is_empty() || !u.failed.is_empty() {
        exit::PARTIAL
    } else {
        exit::UNLOCKED
    };
    Ok((
        code,
        json!({"opened": u.opened, "already-open": u.already, "wrong-passphrase": u.wrong, "failed": u.failed}),
    ))
}

/// Mounts the main system at the target following its fstab.
pub async fn mount_inner<R: Remote>(
    s: &mut Session<'_, R>,
    rw: bool,
    device: Option<&str>,
    subvol: Option<&str>,
) -> Result<Value> {
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
    Ok(json!({"target": target, "main-system": main, "mounts": items, "warnings": warnings}))
}

pub async fn mount<R: Remote>(
    s: &mut Session<'_, R>,
    rw: bool,
    device: Option<&str>,
    subvol: Option<&str>,
) -> Result<(u8, Value)> {
    let v = mount_inner(s, rw, device, subvol).await?;
    Ok((exit::UNLOCKED, v))
}

pub async fn check<R: Remote>(
    s: &mut Session<'_, R>,
    repair: bool,
    device: Option<&str>,
    subvol: Option<&str>,
) -> Result<(u8, Value)> {
    let facts = s.facts().await?;
    let main = s.main_system(&facts, device, subvol).await?;
    let (items, warnings) = plan::mount_items(&main, &facts.devices, false)?;
    let targets = check::targets(&items, &facts);
    let mut all = Vec::new();
    let mut per: Vec<(check::Target, Result<std::ops::Range<usize>, String>)> = Vec::new();
    for t in targets {
        match check::steps(&t, &facts, repair) {
            Ok(st) => {
                let r = all.len()..all.len() + st.len();
                all.extend(st);
                per.push((t, Ok(r)));
            }
            Err(why) => per.push((t, Err(why))),
        }
    }
    let mut notes = warnings;
    for (t, r) in &per {
        if let Err(why) = r {
            notes.push(format!("{} ({}): {why}", t.device, t.fstype));
        }
        if r.is_ok() && t.fstype == "btrfs" && t.mounted_at.is_none() && !repair {
            notes.push(format!(
                "{}: mount it to also read its error counters and scrub status",
                t.device
            ));
        }
        if r.is_ok() && t.mounted_rw && !repair {
            notes.push(format!(
                "{} is mounted read-write: a read-only check may report changes in flight",
                t.device
            ));
        }
    }
    let title = if repair {
        "repair filesystems"
    } else {
        "check filesystems (read-only)"
    };
    let Some(outs) = s.run_plan(title, &all, &notes, &Secrets::default()).await? else {
        return Ok((exit::UNLOCKED, json!({"dry-run": true})));
    };
    let texts: Vec<String> = outs
        .iter()
        .map(|o| format!("{}\n{}", o.stdout_text(), o.stderr_text()))
        .collect();
    let mut results = Vec::new();
    let mut code = exit::UNLOCKED;
    s.say("result:\n");
    for (t, r) in per {
        let verdict = match r {
            Err(why) => check::Verdict::NotChecked { why },
            Ok(range) => {
                let runs: Vec<check::Ran> = range
                    .filter_map(|j| {
                        Some(check::Ran {
                            step: all.get(j)?,
                            status: outs.get(j)?.status,
                            output: texts.get(j)?,
                        })
                    })
                    .collect();
                check::verdict(&runs, repair)
            }
        };
        match &verdict {
            check::Verdict::NeedsRepair { .. } => code = NEEDS_REPAIR,
            check::Verdict::Failed { .. } if code == exit::UNLOCKED => code = exit::ERROR,
            _ => {}
        }
        s.say(&format!(
            "  {} ({}: {}): {}\n",
            t.device,
            t.fstype,
            t.mountpoints.join(", "),
            verdict.describe()
        ));
        results.push(json!({"device": t.device, "fstype": t.fstype, "mountpoints": t.mountpoints, "result": verdict}));
    }
    if code == NEEDS_REPAIR && !repair {
        s.say("next: back up what you can (the filesystem is readable), then `close --keep-open` and `check --repair`\n");
    }
    Ok((code, json!({"filesystems": results})))
}

pub async fn chroot<R: Remote>(s: &mut Session<'_, R>, argv: &[String]) -> Result<(u8, Value)> {
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
        return Ok((exit::UNLOCKED, json!({"dry-run": true})));
    };
    let last = outs.last().cloned().unwrap_or_default();
    let v = json!({"exit-status": last.status, "stdout": last.stdout_text(), "stderr": last.stderr_text()});
    match last.status {
        Some(0) => Ok((exit::UNLOCKED, v)),
        st => {
            eprintln!(
                "error: the command exited {}",
                st.map_or("without status".into(), |c| c.to_string())
            );
            Ok((exit::ERROR, v))
        }
    }
}

pub async fn close<R: Remote>(s: &mut Session<'_, R>, keep_open: bool) -> Result<(u8, Value)> {
    let facts = s.facts().await?;
    let target = s.s.target.clone();
    let steps = plan::close_steps(&facts, &target, keep_open)?;
    if s.run_plan("unmount and close", &steps, &[], &Secrets::default())
        .await?
        .is_none()
    {
        return Ok((exit::UNLOCKED, json!({"dry-run": true})));
    }
    // Say what is left, from a fresh look.
    let after = s.facts().await?;
    let mounted: Vec<String> = after
        .mounts_under(&target)
        .iter()
        .map(|m| m.mountpoint.clone())
        .collect();
    let open: Vec<String> = after
        .opened
        .iter()
        .filter(|n| {
            after
                .devices
                .iter()
                .any(|d| d.kind == "crypt" && d.name == **n)
        })
        .cloned()
        .collect();
    if mounted.is_empty() && (open.is_empty() || keep_open) {
        s.say(&format!(
            "done: nothing mounted under {target}{}\n",
            if keep_open {
                "; volumes left open"
            } else {
                ", no volume of ours open"
            }
        ));
        Ok((exit::UNLOCKED, json!({"mounted": mounted, "open": open})))
    } else {
        eprintln!("error: still mounted: {mounted:?}; still open: {open:?}");
        Ok((exit::ERROR, json!({"mounted": mounted, "open": open})))
    }
}

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

fn pick_entry(
    cfg: &BootConfig,
    o: &KexecOptions,
) -> Result<(String, String, Option<String>, String)> {
    if let Some(k) = &o.kernel {
        let cmdline = o
            .cmdline
            .clone()
            .or_else(|| cfg.kernel_cmdline.clone())
            .unwrap_or_default();
        return Ok((
            "given on the command line".into(),
            k.clone(),
            o.initrd.clone(),
            cmdline,
        ));
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
    if let Some(p) = &e.problem {
        if o.cmdline.is_none() || p.contains("unified") {
            bail!("entry [{i}] {}: {p}; entries: {list}", e.title);
        }
    }
    let cmdline = o
        .cmdline
        .clone()
        .or_else(|| Some(e.cmdline.clone()).filter(|c| !c.is_empty()))
        .or_else(|| cfg.kernel_cmdline.clone())
        .unwrap_or_default();
    let initrd = o.initrd.clone().or_else(|| e.initrds.first().cloned());
    if e.initrds.len() > 1 && o.initrd.is_none() {
        bail!(
            "entry [{i}] has several initrds (microcode + main?): pass --initrd with the main one"
        );
    }
    Ok((
        format!("[{i}] {} ({})", e.title, e.source),
        e.kernel.clone(),
        initrd,
        cmdline,
    ))
}

async fn resolve_file<R: Remote>(
    s: &mut Session<'_, R>,
    target: &str,
    loader_path: &str,
    what: &str,
) -> Result<String> {
    let cands = kexec::candidates(target, loader_path);
    let out = s
        .read(
            &format!("where {what} {loader_path} is"),
            &kexec::exists_command(&cands),
        )
        .await?;
    let text = out.stdout_text();
    let found: Vec<&str> = text.lines().collect();
    cands
        .into_iter()
        .find(|c| found.contains(&c.as_str()))
        .ok_or_else(|| anyhow!("{what} {loader_path} not found under {target} (is /boot mounted?)"))
}

pub async fn kexec_flow<R: Remote>(
    s: &mut Session<'_, R>,
    o: &KexecOptions,
    read_pass: PassReader<'_>,
) -> Result<(u8, Value)> {
    let facts = s.facts().await?;
    facts.require(&["kexec", "mount", "umount"])?;
    let target = s.s.target.clone();
    let mut pass: Option<Passphrase> = None;
    // Unlock (if needed) and mount (read-only, if needed): both idempotent.
    let locked = facts
        .devices
        .iter()
        .any(|d| d.is_luks() && facts.devices.mapping_of(&d.path).is_none());
    if locked && facts.mount_at(&target).is_none() {
        unlock_inner(s, &[], &mut pass, read_pass).await?;
        if s.s.dry_run {
            s.say("dry run: mounting and the kexec steps follow once the volumes are open; `unlock` and `mount` first show the whole plan\n");
            return Ok((exit::UNLOCKED, json!({"dry-run": true})));
        }
    }
    if facts.mount_at(&target).is_none() {
        mount_inner(s, false, None, None).await?;
        if s.s.dry_run {
            s.say("dry run: the kexec plan needs the main system mounted; run `mount` first to see it in full\n");
            return Ok((exit::UNLOCKED, json!({"dry-run": true})));
        }
    }
    let facts = s.facts().await?;
    let main: MainSystem = s.main_system(&facts, None, None).await?;
    let cfg = boot_config(s, &target).await?;
    let (entry, k, i, mut cmdline) = pick_entry(&cfg, o)?;
    let kernel = resolve_file(s, &target, &k, "kernel").await?;
    let initrd = match &i {
        Some(p) => Some(resolve_file(s, &target, p, "initrd").await?),
        None => None,
    };
    if cmdline.is_empty() {
        let root = main
            .fstab
            .iter()
            .find(|e| e.mountpoint == "/")
            .map(|e| e.spec.clone());
        let root = root.ok_or_else(|| anyhow!("no command line in the entry, no /etc/kernel/cmdline, no / in fstab: pass --cmdline"))?;
        cmdline = kexec::synthesize_cmdline(&root, main.subvol.as_deref())?;
        s.note(format!(
            "no command line found; using one built from fstab: {cmdline}"
        ));
    }
    if let Some(a) = &o.append {
        cmdline = format!("{cmdline} {a}");
    }
    let choice = Choice {
        entry,
        kernel,
        initrd,
        cmdline,
    };
    let mut notes = vec![format!("booting {}", choice.entry)];
    let flag = kexec::load_flag(o.load_method, &facts);
    notes.push(match (flag, facts.restricted_kexec()) {
        ("-s", true) => {
            format!(
            "lockdown {} / Secure Boot {}: kexec_file_load (kexec -s), the kernel must be signed",
            facts.lockdown.as_deref().unwrap_or("?"),
            facts.secure_boot.map_or("unknown", |b| if b { "on" } else { "off" })
        )
        }
        ("-s", false) => "kexec_file_load (kexec -s), as asked".into(),
        (_, true) => {
            "kexec_load (kexec -c) as asked, although lockdown/Secure Boot is on: expect a refusal"
                .into()
        }
        _ => "no lockdown, no Secure Boot: kexec_load (kexec -c)".into(),
    });

    // Handover: which flavour, and which volumes the passphrase opens.
    let mut handover: Option<Flavour> = None;
    let mut volumes = Vec::new();
    let why_not: Option<String> = if o.no_handover {
        Some("--no-handover".into())
    } else if choice.initrd.is_none() {
        Some("the entry has no initrd to extend".into())
    } else {
        let flavour = match o.flavour {
            Some(f) => Ok(f),
            None => handover::detect(&cfg.existing, cfg.mkinitcpio_conf.as_deref()),
        };
        match flavour {
            Ok(Flavour::None) => Some("--initrd-flavour none".into()),
            Err(why) => Some(why),
            Ok(f) => {
                facts.require(&["cryptsetup", "truncate"])?;
                let cands: Vec<(crate::unlock::crypttab::Entry, Dev)> = main
                    .crypttab
                    .iter()
                    .filter_map(|e| {
                        discover::luks_device(e, &facts.devices).map(|d| (e.clone(), d.clone()))
                    })
                    .collect();
                if s.s.dry_run {
                    volumes = cands.iter().map(|(e, d)| hv(e, d)).collect();
                    s.note("dry run: assuming the passphrase opens every crypttab volume");
                } else if !cands.is_empty() {
                    if pass.is_none() {
                        pass = Some(read_pass()?);
                    }
                    let steps: Vec<Step> = cands
                        .iter()
                        .map(|(_, d)| plan::test_passphrase_step(d))
                        .collect::<Result<_>>()?;
                    let secrets = Secrets {
                        passphrase: pass.as_ref(),
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
                    for ((e, d), out) in cands.iter().zip(&outs) {
                        if out.status == Some(0) {
                            volumes.push(hv(e, d));
                        } else {
                            s.note(format!(
                                "{} ({}): the passphrase does not open it; it will ask after boot",
                                e.name, d.path
                            ));
                        }
                    }
                }
                if volumes.is_empty() {
                    Some(
                        "no volume of the main system's crypttab opens with this passphrase".into(),
                    )
                } else {
                    handover = Some(f);
                    None
                }
            }
        }
    };
    match (&why_not, handover) {
        (None, Some(f)) => notes.push(format!(
            "handover: the main initramfs ({}) gets {} in RAM and will not ask for {}",
            f.name(),
            handover::files(f, &volumes).join(", "),
            volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")
        )),
        (Some(why), _) => notes.push(format!(
            "handover impossible: {why}. The main system's initramfs WILL ASK for the passphrase again: on its console, or through its portcullisd listener (`portcullis unlock HOST`)"
        )),
        _ => {}
    }
    let archive = match (handover, &pass) {
        (Some(f), Some(p)) => Some(handover::archive(f, &volumes, p)?),
        _ => None,
    };
    drop(pass);
    let facts = s.facts().await?;
    let close = plan::close_steps(&facts, &target, false)?;
    let p = kexec::steps(&choice, flag, handover, &facts, close, o.load_only)?;
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
    if ran.is_some() && !o.load_only {
        s.say("kexec started: the main system is booting. Check it with `portcullis status HOST` (initramfs listener) or ssh.\n");
    }
    Ok((
        exit::UNLOCKED,
        json!({"choice": choice, "handover": handover, "handover-volumes": volumes, "handover-impossible": why_not, "load": flag}),
    ))
}

fn hv(e: &crate::unlock::crypttab::Entry, d: &Dev) -> handover::Volume {
    handover::Volume {
        name: e.name.clone(),
        source: e.source.clone(),
        options: e.options.clone(),
        luks_uuid: d.uuid.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rescue::cpio;
    use crate::rescue::remote::fake::Fake;
    use crate::rescue::remote::Remote;
    use crate::rescue::run::Settings;
    use crate::rescue::state::tests::{probe_output_with, MOUNTINFO};

    const PASS: &[u8] = b"correct horse battery";
    const LUKS_UUID: &str = "7d0a6f0e-3333-4a4a-9f9f-0123456789ab";

    fn settings() -> Settings {
        Settings {
            target: "/mnt/portcullis".into(),
            dry_run: false,
            yes: true,
            json: true,
            verbose: false,
            host: "rescue:22".into(),
        }
    }

    fn pass() -> Result<Passphrase> {
        Ok(Passphrase::new(PASS.to_vec()).unwrap())
    }

    /// The lsblk fixture with the LUKS device locked, or open under `name`.
    fn lsblk(mapping: Option<&str>) -> String {
        let mut v: Value = serde_json::from_str(include_str!("fixtures/lsblk.json")).unwrap();
        let part = &mut v["blockdevices"][1]["children"][1];
        match mapping {
            None => {
                part.as_object_mut().unwrap().remove("children");
            }
            Some(n) => {
                part["children"][0]["name"] = json!(n);
                part["children"][0]["path"] = json!(format!("/dev/mapper/{n}"));
            }
        }
        format!("{v}\n")
    }

    const ROOT_ONLY: &str = "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n";

    fn never_in_commands(fake: &Fake) {
        let secret = String::from_utf8_lossy(PASS);
        for (c, _) in &fake.calls {
            assert!(
                !c.contains(secret.as_ref()),
                "passphrase in a command line: {c}"
            );
        }
    }

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
            include_str!("fixtures/luksdump-luks2.txt"),
        );
        fake.on("cryptsetup open --key-file=- /dev/vdb2", 0, "");
        // Peeks: the btrfs holds the main system in @, /boot holds kernels.
        fake.on(
            "~/dev/mapper/luks-",
            0,
            &format!(
                "@@B subvols\nID 256 gen 9 top level 5 path @\n@@B root /@\n@@B fstab\n{}\n@@B crypttab\nroot UUID={LUKS_UUID} none luks\n@@B kernels\n",
                include_str!("fixtures/fstab")
            ),
        );
        fake.on("~/dev/vdb1", 0, "@@B kernels\n/vmlinuz-6.1\n");
        fake.on("cryptsetup close", 0, "");
        let mut s = Session::new(&mut fake, settings());
        let (code, v) = unlock(&mut s, &[], &pass).await.unwrap();
        assert_eq!(code, exit::UNLOCKED, "{v}");
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
                include_str!("fixtures/fstab")
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
        let o = KexecOptions {
            entry: None,
            kernel: None,
            initrd: None,
            cmdline: None,
            append: Some("quiet".into()),
            flavour: None,
            no_handover: false,
            load_method: LoadMethod::Auto,
            load_only: false,
        };
        let mut s = Session::new(&mut fake, settings());
        let (code, v) = kexec_flow(&mut s, &o, &pass).await.unwrap();
        assert_eq!(code, exit::UNLOCKED);
        assert_eq!(v["handover"], json!("initramfs-tools"));
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

    // --- snapshots: every flow's exit code and JSON report, as printed ---

    /// A rescue system with the main system open as `root` and mounted at
    /// the target; `extra` rules come before the catch-all (exit 0, no output).
    fn mounted(extra: &[(&str, u32, &str)]) -> Fake {
        let mut fake = Fake::default();
        for (p, c, o) in extra {
            fake.on(p, *c, o);
        }
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
                include_str!("fixtures/fstab")
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
            "cryptsetup luksDump",
            0,
            include_str!("fixtures/luksdump-luks2.txt"),
        );
        fake.on(
            "for f in",
            0,
            "/mnt/portcullis/boot/vmlinuz\n/mnt/portcullis/boot/initrd.img\n",
        );
        fake.on("", 0, "");
        fake
    }

    /// Compares the report, plans and notes with `fixtures/flows/NAME.json`; `PORTCULLIS_BLESS=1`
    /// writes it instead (review the diff before committing).
    fn snapshot<R: Remote>(name: &str, code: u8, details: Value, s: &Session<'_, R>) {
        let got =
            json!({"exit-code": code, "details": details, "plans": s.plans, "notes": s.notes});
        let path = format!(
            "{}/src/rescue/fixtures/flows/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        if std::env::var_os("PORTCULLIS_BLESS").is_some() {
            std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
            std::fs::write(&path, format!("{:#}\n", got)).unwrap();
            return;
        }
        let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(got, want, "{name}: got {got:#}");
    }

    fn kexec_options() -> KexecOptions {
        KexecOptions {
            entry: None,
            kernel: None,
            initrd: None,
            cmdline: None,
            append: Some("quiet".into()),
            flavour: None,
            no_handover: false,
            load_method: LoadMethod::Auto,
            load_only: false,
        }
    }

    #[tokio::test]
    async fn reports_keep_their_shape() {
        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = inspect(&mut s).await.unwrap();
        snapshot("inspect", c, v, &s);

        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = unlock(&mut s, &[], &pass).await.unwrap();
        snapshot("unlock-already-open", c, v, &s);

        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = mount(&mut s, false, None, None).await.unwrap();
        snapshot("mount", c, v, &s);

        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = check(&mut s, false, None, None).await.unwrap();
        snapshot("check", c, v, &s);

        let mut dry = settings();
        dry.dry_run = true;
        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, dry.clone());
        let (c, v) = check(&mut s, false, None, None).await.unwrap();
        snapshot("check-dry-run", c, v, &s);

        let mut fake = mounted(&[("~ls -l", 3, "total 0\n")]);
        let argv = ["ls".to_string(), "-l".to_string()];
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = chroot(&mut s, &argv).await.unwrap();
        snapshot("chroot-fails", c, v, &s);

        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = close(&mut s, true).await.unwrap();
        snapshot("close-still-mounted", c, v, &s);

        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = kexec_flow(&mut s, &kexec_options(), &pass).await.unwrap();
        snapshot("kexec", c, v, &s);

        let mut o = kexec_options();
        o.no_handover = true;
        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = kexec_flow(&mut s, &o, &pass).await.unwrap();
        snapshot("kexec-no-handover", c, v, &s);

        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, dry);
        let (c, v) = kexec_flow(&mut s, &kexec_options(), &pass).await.unwrap();
        snapshot("kexec-dry-run", c, v, &s);
    }
}
