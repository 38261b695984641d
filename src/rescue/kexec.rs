//! Booting the main system's kernel straight from the rescue system: find
//! its kernel, initrd and command line (boot loader entries, or what the
//! user gives), choose the load method (`kexec -s`, i.e. kexec_file_load,
//! under lockdown or Secure Boot, where only signed kernels are accepted;
//! `kexec -c` otherwise), and plan the steps: build the combined initrd in a
//! ramfs (never swapped, never on disk), load, drop the ramfs, unmount and
//! close, execute. Pure planning; the remote reads use section boundaries.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::bootentry::{self, BootEntry};
use super::handover::{self, Flavour};
use super::plan::{Effect, Input, Step};
use super::shell::{self, join, quote, under};
use super::state::{sections, Facts, KEXEC_DIR};
use anyhow::{bail, Result};
use serde::Serialize;

const BOOT_FILES: &[&str] = &[
    "/boot/grub/grub.cfg",
    "/boot/grub2/grub.cfg",
    "/boot/extlinux/extlinux.conf",
    "/boot/syslinux/syslinux.cfg",
    "/boot/extlinux.conf",
    "/extlinux.conf",
    "/etc/kernel/cmdline",
    "/etc/mkinitcpio.conf",
];

/// Reads the boot configuration of the system mounted at `target`.
pub fn probe_command(b: &str, target: &str) -> String {
    let b = quote(b);
    let exists: Vec<String> = handover::PROBE_PATHS.iter().map(|p| quote(p)).collect();
    let files: Vec<String> = BOOT_FILES.iter().map(|p| quote(p)).collect();
    format!(
        "T={t}; for f in \"$T\"/boot/loader/entries/*.conf \"$T\"/efi/loader/entries/*.conf \"$T\"/boot/efi/loader/entries/*.conf; do \
         [ -f \"$f\" ] && {{ echo {b} bls \"${{f#\"$T\"}}\"; head -c 65536 \"$f\"; echo; }}; done; \
         for f in {files}; do [ -f \"$T$f\" ] && {{ echo {b} file \"$f\"; head -c 1048576 \"$T$f\"; echo; }}; done; \
         echo {b} boot; ls -1A \"$T/boot\" 2>/dev/null; \
         echo {b} exists; for f in {exists}; do [ -e \"$T$f\" ] && echo \"$f\"; done; true",
        t = quote(target),
        files = files.join(" "),
        exists = exists.join(" "),
    )
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BootConfig {
    pub entries: Vec<BootEntry>,
    pub kernel_cmdline: Option<String>,
    pub boot_files: Vec<String>,
    pub existing: Vec<String>,
    #[serde(skip)]
    pub mkinitcpio_conf: Option<String>,
}

pub fn parse_probe(out: &str, b: &str) -> BootConfig {
    let mut c = BootConfig::default();
    let mut bls = Vec::new();
    let mut grub = Vec::new();
    let mut ext = Vec::new();
    for (h, body) in sections(out, b) {
        let (kind, arg) = h.split_once(' ').unwrap_or((h, ""));
        match (kind, arg) {
            ("bls", path) => bls.extend(bootentry::parse_bls(path, &body)),
            ("file", p) if p.ends_with("grub.cfg") => grub.extend(bootentry::parse_grub(p, &body)),
            ("file", p) if p.contains("linux") => ext.extend(bootentry::parse_extlinux(p, &body)),
            ("file", "/etc/kernel/cmdline") => {
                c.kernel_cmdline = bootentry::parse_kernel_cmdline(&body)
            }
            ("file", "/etc/mkinitcpio.conf") => c.mkinitcpio_conf = Some(body),
            ("boot", _) => c.boot_files = body.lines().map(str::to_string).collect(),
            ("exists", _) => c.existing = body.lines().map(str::to_string).collect(),
            _ => {}
        }
    }
    bootentry::sort_bls(&mut bls);
    c.entries = bls.into_iter().chain(grub).chain(ext).collect();
    // Kernels lying in /boot, for systems whose boot loader config is
    // elsewhere (an ESP not mounted) or absent.
    for (k, i) in bootentry::kernels_in_boot(&c.boot_files) {
        let kernel = format!("/boot/{k}");
        if c.entries
            .iter()
            .any(|e| e.kernel.ends_with(&format!("/{k}")))
        {
            continue;
        }
        c.entries.push(BootEntry {
            source: "files in /boot".into(),
            title: k.clone(),
            kernel,
            initrds: i.into_iter().map(|i| format!("/boot/{i}")).collect(),
            cmdline: String::new(),
            problem: None,
        });
    }
    c
}

/// Where a boot loader path may be below the mounted system: relative to a
/// separate /boot, to the root, to the root with a btrfs subvolume prefix
/// (`/@/boot/…`), or to an ESP.
pub fn candidates(target: &str, loader_path: &str) -> Vec<String> {
    let p = loader_path.trim_start_matches('/');
    let mut v = vec![under(target, &format!("boot/{p}")), under(target, p)];
    if let Some((_, rest)) = p.split_once('/') {
        v.push(under(target, rest));
    }
    v.push(under(target, &format!("efi/{p}")));
    v.push(under(target, &format!("boot/efi/{p}")));
    v.dedup();
    v
}

/// Prints which of the candidate paths are regular files.
pub fn exists_command(paths: &[String]) -> String {
    let words: Vec<String> = paths.iter().map(|p| quote(p)).collect();
    format!(
        "for f in {}; do [ -f \"$f\" ] && printf '%s\\n' \"$f\"; done; true",
        words.join(" ")
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadMethod {
    /// kexec_file_load under lockdown or Secure Boot, else kexec_load.
    Auto,
    /// kexec -s (kexec_file_load: the kernel checks the signature).
    File,
    /// kexec -c (kexec_load: refused under lockdown).
    Classic,
}

/// kexec-tools flags: `-l` loads (without it kexec loads *and* reboots via
/// shutdown); `-s` forces kexec_file_load, `-c` kexec_load, so a failure
/// says which syscall refused instead of silently trying the other.
pub fn load_flag(m: LoadMethod, facts: &Facts) -> &'static str {
    match m {
        LoadMethod::File => "-s",
        LoadMethod::Classic => "-c",
        LoadMethod::Auto if facts.restricted_kexec() => "-s",
        LoadMethod::Auto => "-c",
    }
}

/// A command line to fall back on: the root from fstab. A space in either
/// value would add kernel parameters, a comma in the subvolume mount
/// options: such values are refused, not escaped.
pub fn synthesize_cmdline(root_spec: &str, subvol: Option<&str>) -> Result<String> {
    let root = shell::word("root device in fstab", root_spec)?;
    Ok(match subvol {
        Some(s) => format!("root={root} ro rootflags=subvol={}", shell::subvol_name(s)?),
        None => format!("root={root} ro"),
    })
}

/// What will be booted.
#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub entry: String,
    /// Rescue-side paths.
    pub kernel: String,
    pub initrd: Option<String>,
    pub cmdline: String,
}

/// The steps from a chosen kernel to the running main system.
pub struct KexecPlan {
    pub steps: Vec<Step>,
    pub notes: Vec<String>,
}

pub fn steps(
    choice: &Choice,
    flag: &str,
    handover: Option<Flavour>,
    facts: &Facts,
    unmount_and_close: Vec<Step>,
    load_only: bool,
) -> Result<KexecPlan> {
    let kernel = shell::path("kernel", &choice.kernel)?;
    if choice.cmdline.chars().any(char::is_control) {
        bail!("the kernel command line contains control characters");
    }
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let initrd = match (&choice.initrd, handover) {
        (Some(i), Some(f)) if f != Flavour::None => {
            let i = shell::path("initrd", i)?;
            if facts.mount_at(KEXEC_DIR).is_none() {
                steps.push(Step::new(
                    format!("make a RAM-only place for the combined initrd ({KEXEC_DIR}, ramfs: never swapped, never on disk)"),
                    format!(
                        "mkdir -p {d} && {}",
                        join(&["mount", "-t", "ramfs", "-o", "mode=0700", "portcullis-kexec", KEXEC_DIR]),
                        d = quote(KEXEC_DIR)
                    ),
                    Effect::Change,
                ));
            }
            let combined = format!("{KEXEC_DIR}/initrd");
            // The kernel only takes an uncompressed archive after a
            // compressed one at a 4-byte aligned offset: pad with zeros.
            steps.push(
                Step::new(
                    format!(
                        "append the key archive ({}) to a copy of the main initrd",
                        f.name()
                    ),
                    format!(
                        "umask 077 && cat {i} >{c} && truncate -s %4 {c} && cat >>{c}",
                        i = quote(&i),
                        c = quote(&combined)
                    ),
                    Effect::Change,
                )
                .with_stdin(Input::KeyArchive),
            );
            Some(combined)
        }
        (Some(i), _) => Some(shell::path("initrd", i)?),
        (None, _) => None,
    };
    let mut load = vec![
        "kexec".to_string(),
        flag.to_string(),
        "-l".to_string(),
        kernel.clone(),
    ];
    if let Some(i) = &initrd {
        load.push(format!("--initrd={i}"));
    }
    load.push(format!("--command-line={}", choice.cmdline));
    let mut load_step = Step::new(
        format!(
            "load {} ({})",
            kernel,
            if flag == "-s" {
                "kexec_file_load: signed kernels only"
            } else {
                "kexec_load"
            }
        ),
        join(&load),
        Effect::Boot,
    );
    if initrd.as_deref().is_some_and(|i| i.starts_with(KEXEC_DIR)) {
        // Wipe the ramfs whether or not the load worked.
        load_step.command = format!(
            "{}; rc=$?; rm -f {c}; umount {d}; exit $rc",
            load_step.command,
            c = quote(&format!("{KEXEC_DIR}/initrd")),
            d = quote(KEXEC_DIR)
        );
        load_step
            .what
            .push_str(", then drop the RAM copy (the key now lives only in the loaded image)");
    }
    steps.push(load_step);
    if load_only {
        notes.push(
            "--load-only: the kernel is loaded; boot it with `kexec -e` on the rescue system"
                .into(),
        );
        return Ok(KexecPlan { steps, notes });
    }
    steps.extend(unmount_and_close);
    let exec = if facts.systemd && facts.has("systemctl") {
        "systemctl kexec".to_string()
    } else {
        // Detached, so the command returns before the old kernel is gone.
        "(sleep 1; sync; kexec -e) </dev/null >/dev/null 2>&1 &".to_string()
    };
    let mut e = Step::new(
        "boot the loaded kernel (the SSH connection ends here)",
        exec,
        Effect::Boot,
    );
    e.may_disconnect = true;
    steps.push(e);
    Ok(KexecPlan { steps, notes })
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
    use crate::rescue::state::{parse_facts, tests::probe_output};

    fn facts(lockdown: &str) -> Facts {
        let b = "@@portcullis-k";
        let out = probe_output(b, "", "22 1 254:0 / / rw - ext4 /dev/vda rw\n")
            .replace("[none] integrity confidentiality", lockdown);
        parse_facts(&out, b)
    }

    #[test]
    fn boot_config_from_probe() {
        let b = "@@portcullis-z";
        let out = format!(
            "{b} file /boot/extlinux/extlinux.conf\nDEFAULT main\nLABEL main\n LINUX /vmlinuz\n INITRD /initrd.img\n APPEND root=/dev/mapper/root ro\n\
             {b} file /etc/kernel/cmdline\nroot=UUID=x ro quiet\n\
             {b} boot\nvmlinuz\ninitrd.img\nvmlinuz-6.1.0-9-cloud-amd64\ninitrd.img-6.1.0-9-cloud-amd64\nextlinux\n\
             {b} exists\n/etc/initramfs-tools/initramfs.conf\n"
        );
        let c = parse_probe(&out, b);
        assert_eq!(c.entries.len(), 2, "{:?}", c.entries);
        assert_eq!(c.entries[0].source, "extlinux /boot/extlinux/extlinux.conf");
        assert_eq!(c.entries[1].kernel, "/boot/vmlinuz-6.1.0-9-cloud-amd64");
        assert_eq!(
            c.entries[1].initrds,
            ["/boot/initrd.img-6.1.0-9-cloud-amd64"]
        );
        assert_eq!(c.kernel_cmdline.as_deref(), Some("root=UUID=x ro quiet"));
        assert_eq!(c.existing, ["/etc/initramfs-tools/initramfs.conf"]);
        let cmd = probe_command(b, "/mnt/portcullis");
        assert!(cmd.starts_with("T=/mnt/portcullis; "), "{cmd}");
    }

    #[test]
    fn path_candidates() {
        assert_eq!(
            candidates("/mnt/p", "/@/boot/vmlinuz-6.1"),
            [
                "/mnt/p/boot/@/boot/vmlinuz-6.1",
                "/mnt/p/@/boot/vmlinuz-6.1",
                "/mnt/p/boot/vmlinuz-6.1",
                "/mnt/p/efi/@/boot/vmlinuz-6.1",
                "/mnt/p/boot/efi/@/boot/vmlinuz-6.1",
            ]
        );
        assert_eq!(candidates("/mnt/p", "/vmlinuz")[0], "/mnt/p/boot/vmlinuz");
        let c = exists_command(&["/a b".into()]);
        assert_eq!(
            c,
            "for f in '/a b'; do [ -f \"$f\" ] && printf '%s\\n' \"$f\"; done; true"
        );
    }

    #[test]
    fn load_method_follows_lockdown() {
        assert_eq!(
            load_flag(LoadMethod::Auto, &facts("[none] integrity confidentiality")),
            "-c"
        );
        assert_eq!(
            load_flag(LoadMethod::Auto, &facts("none [integrity] confidentiality")),
            "-s"
        );
        assert_eq!(
            load_flag(
                LoadMethod::Classic,
                &facts("none [integrity] confidentiality")
            ),
            "-c"
        );
        assert_eq!(load_flag(LoadMethod::File, &facts("[none]")), "-s");
    }

    #[test]
    fn plan_with_handover() {
        let f = facts("[none]");
        let choice = Choice {
            entry: "extlinux main".into(),
            kernel: "/mnt/portcullis/boot/vmlinuz".into(),
            initrd: Some("/mnt/portcullis/boot/initrd.img".into()),
            cmdline: "console=ttyS0 root=/dev/mapper/root ro rootflags=subvol=@".into(),
        };
        let close = vec![Step::new(
            "unmount",
            "umount /mnt/portcullis",
            Effect::Change,
        )];
        let p = steps(
            &choice,
            "-c",
            Some(Flavour::InitramfsTools),
            &f,
            close,
            false,
        )
        .unwrap();
        let cmds: Vec<_> = p.steps.iter().map(|s| s.command.as_str()).collect();
        assert_eq!(
            cmds,
            [
                "mkdir -p /run/portcullis-rescue/kexec && mount -t ramfs -o mode=0700 portcullis-kexec /run/portcullis-rescue/kexec",
                "umask 077 && cat /mnt/portcullis/boot/initrd.img >/run/portcullis-rescue/kexec/initrd && truncate -s %4 /run/portcullis-rescue/kexec/initrd && cat >>/run/portcullis-rescue/kexec/initrd",
                "kexec -c -l /mnt/portcullis/boot/vmlinuz --initrd=/run/portcullis-rescue/kexec/initrd '--command-line=console=ttyS0 root=/dev/mapper/root ro rootflags=subvol=@'; rc=$?; rm -f /run/portcullis-rescue/kexec/initrd; umount /run/portcullis-rescue/kexec; exit $rc",
                "umount /mnt/portcullis",
                "(sleep 1; sync; kexec -e) </dev/null >/dev/null 2>&1 &",
            ]
        );
        assert_eq!(p.steps[1].stdin, Input::KeyArchive);
        assert!(p.steps.last().unwrap().may_disconnect);
        // No handover: the main initrd as is, no ramfs.
        let p = steps(&choice, "-s", None, &f, vec![], true).unwrap();
        assert_eq!(p.steps.len(), 1);
        assert_eq!(
            p.steps[0].command,
            "kexec -s -l /mnt/portcullis/boot/vmlinuz --initrd=/mnt/portcullis/boot/initrd.img '--command-line=console=ttyS0 root=/dev/mapper/root ro rootflags=subvol=@'"
        );
        let mut bad = choice.clone();
        bad.cmdline = "a\nb".into();
        assert!(steps(&bad, "-c", None, &f, vec![], false).is_err());
        assert_eq!(
            synthesize_cmdline("UUID=x", Some("@")).unwrap(),
            "root=UUID=x ro rootflags=subvol=@"
        );
        // Neither value may add kernel parameters or mount options.
        assert!(synthesize_cmdline("UUID=x", Some("@ init=/bin/sh")).is_err());
        assert!(synthesize_cmdline("UUID=x", Some("@,rw")).is_err());
        assert!(synthesize_cmdline("UUID=x init=/bin/sh", None).is_err());
    }
}
