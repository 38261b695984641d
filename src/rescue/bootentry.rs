//! Which kernel, initrd and command line the main system boots: systemd-boot
//! (Boot Loader Specification) entries, GRUB's `grub.cfg` menu entries,
//! extlinux/syslinux configs, and the kernels lying in `/boot` with
//! `/etc/kernel/cmdline`. Paths are returned as written; resolving them
//! against the mounted system happens in [`super::kexec`]. Pure parsing.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde::Serialize;
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootEntry {
    /// Where it was found, e.g. "systemd-boot /boot/loader/entries/x.conf".
    pub source: String,
    pub title: String,
    /// Kernel path as the boot loader sees it.
    pub kernel: String,
    pub initrds: Vec<String>,
    pub cmdline: String,
    /// Why this entry cannot be kexec'ed as is (a UKI, an unexpanded
    /// variable in the command line).
    pub problem: Option<String>,
}

/// Natural order: "6.1.0-18" after "6.1.0-9".
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let digit = |i: usize| s.as_bytes().get(i).map(u8::is_ascii_digit);
        for i in 1..=s.len() {
            // A run ends at the end or where digit-ness changes.
            if i == s.len() || digit(i) != digit(i - 1) {
                if let Some(run) = s.get(start..i) {
                    out.push((digit(start) == Some(true), run));
                }
                start = i;
            }
        }
        out
    }
    if a.is_empty() || b.is_empty() {
        return a.cmp(b);
    }
    for (x, y) in chunks(a).into_iter().zip(chunks(b)) {
        let o = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then(x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// GRUB and BLS command lines may reference variables (`$kernelopts`,
/// `$vt_handoff`); they cannot be expanded here.
fn check_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find(|w| w.contains('$'))
        .map(|w| format!("the command line uses the boot loader variable {w}; pass --cmdline"))
}

/// One Boot Loader Specification entry file.
pub fn parse_bls(source: &str, text: &str) -> Option<BootEntry> {
    let (mut title, mut version, mut kernel, mut efi) = (None, None, None, None);
    let mut initrds = Vec::new();
    let mut options = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim().to_string();
        match key {
            "title" => title = Some(value),
            "version" => version = Some(value),
            "linux" => kernel = Some(value),
            "efi" => efi = Some(value),
            "initrd" => initrds.extend(value.split_whitespace().map(str::to_string)),
            "options" => options.push(value),
            _ => {}
        }
    }
    let cmdline = options.join(" ");
    let (kernel, problem) = match (kernel, efi) {
        (Some(k), _) => (k, check_cmdline(&cmdline)),
        (None, Some(e)) => (
            e,
            Some("a unified kernel image (efi line); kexec of UKIs is not supported here: pass --kernel/--initrd/--cmdline".into()),
        ),
        (None, None) => return None,
    };
    Some(BootEntry {
        source: format!("systemd-boot {source}"),
        title: title.or(version).unwrap_or_else(|| source.to_string()),
        kernel,
        initrds,
        cmdline,
        problem,
    })
}

/// Sorts BLS entries as systemd-boot does by default: newest version first.
pub fn sort_bls(entries: &mut [BootEntry]) {
    entries.sort_by(|a, b| version_cmp(&b.source, &a.source));
}

/// Splits a GRUB script line into words, honouring quotes.
fn grub_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut has = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                has = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('"') | None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    has = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if has {
                    words.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            (_, c) => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has {
        words.push(cur);
    }
    words
}

/// Menu entries of a `grub.cfg`, in menu order (the first is GRUB's default
/// unless `set default` says otherwise; `saved` cannot be known here).
pub fn parse_grub(source: &str, text: &str) -> Vec<BootEntry> {
    let mut out = Vec::new();
    let mut current: Option<BootEntry> = None;
    let mut depth = 0usize;
    let mut entry_depth = 0usize;
    for raw in text.lines() {
        let line = raw.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let words = grub_words(line);
        let Some(first) = words.first() else { continue };
        match first.as_str() {
            "menuentry" if current.is_none() => {
                current = Some(BootEntry {
                    source: format!("GRUB {source}"),
                    title: words.get(1).cloned().unwrap_or_default(),
                    kernel: String::new(),
                    initrds: vec![],
                    cmdline: String::new(),
                    problem: None,
                });
                entry_depth = depth;
            }
            "linux" | "linuxefi" | "linux16" => {
                if let Some(e) = current.as_mut() {
                    e.kernel = words.get(1).cloned().unwrap_or_default();
                    e.cmdline = words.get(2..).unwrap_or_default().join(" ");
                }
            }
            "initrd" | "initrdefi" | "initrd16" => {
                if let Some(e) = current.as_mut() {
                    e.initrds = words.get(1..).unwrap_or_default().to_vec();
                }
            }
            _ => {}
        }
        depth += line.matches('{').count();
        let closes = line.matches('}').count();
        depth = depth.saturating_sub(closes);
        if closes > 0 && depth <= entry_depth {
            if let Some(mut e) = current.take() {
                if !e.kernel.is_empty() {
                    e.problem = check_cmdline(&e.cmdline);
                    out.push(e);
                }
            }
        }
    }
    out
}

/// LABEL blocks of an extlinux/syslinux config, the DEFAULT one first.
pub fn parse_extlinux(source: &str, text: &str) -> Vec<BootEntry> {
    let mut out: Vec<BootEntry> = Vec::new();
    let mut default = None;
    let mut labels: Vec<String> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim();
        match key.to_ascii_lowercase().as_str() {
            "default" => default = Some(value.to_string()),
            "label" => {
                labels.push(value.to_string());
                out.push(BootEntry {
                    source: format!("extlinux {source}"),
                    title: value.to_string(),
                    kernel: String::new(),
                    initrds: vec![],
                    cmdline: String::new(),
                    problem: None,
                });
            }
            "kernel" | "linux" => {
                if let Some(e) = out.last_mut() {
                    e.kernel = value.to_string();
                }
            }
            "initrd" => {
                if let Some(e) = out.last_mut() {
                    e.initrds = value.split(',').map(str::to_string).collect();
                }
            }
            "append" => {
                if let Some(e) = out.last_mut() {
                    // `initrd=` in APPEND is syslinux's; the kernel never sees it.
                    let mut words = Vec::new();
                    for w in value.split_whitespace() {
                        match w.strip_prefix("initrd=") {
                            Some(i) => e.initrds.extend(i.split(',').map(str::to_string)),
                            None => words.push(w),
                        }
                    }
                    e.cmdline = words.join(" ");
                }
            }
            _ => {}
        }
    }
    let mut entries: Vec<(String, BootEntry)> = labels
        .into_iter()
        .zip(out)
        .filter(|(_, e)| !e.kernel.is_empty())
        .collect();
    if let Some(d) = default {
        if let Some(i) = entries.iter().position(|(l, _)| *l == d) {
            let e = entries.remove(i);
            entries.insert(0, e);
        }
    }
    entries.into_iter().map(|(_, e)| e).collect()
}

/// `/etc/kernel/cmdline`: one line, comments allowed.
pub fn parse_kernel_cmdline(text: &str) -> Option<String> {
    let words: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// Kernels found as files in the boot directory (names only), paired with
/// their initrd, newest first: Debian `vmlinuz-V` + `initrd.img-V`, Fedora
/// `vmlinuz-V` + `initramfs-V.img`, Arch `vmlinuz-linux` + `initramfs-linux.img`.
pub fn kernels_in_boot(names: &[String]) -> Vec<(String, Option<String>)> {
    let mut versions: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-"))
        .filter(|v| !v.is_empty() && !v.contains('/'))
        .collect();
    versions.sort_by(|a, b| version_cmp(b, a));
    versions
        .into_iter()
        .map(|v| {
            let initrd = [
                format!("initrd.img-{v}"),
                format!("initramfs-{v}.img"),
                format!("initrd-{v}"),
            ]
            .into_iter()
            .find(|c| names.contains(c));
            (format!("vmlinuz-{v}"), initrd)
        })
        .collect()
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

    #[test]
    fn versions() {
        assert_eq!(
            version_cmp("6.1.0-18-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(version_cmp("6.10", "6.9"), Ordering::Greater);
        assert_eq!(version_cmp("linux", "linux"), Ordering::Equal);
    }

    #[test]
    fn bls() {
        let e = parse_bls(
            "/boot/loader/entries/abc-6.8.conf",
            include_str!("fixtures/bls-fedora.conf"),
        )
        .unwrap();
        assert_eq!(e.kernel, "/vmlinuz-6.8.5-301.fc40.x86_64");
        assert_eq!(e.initrds, ["/initramfs-6.8.5-301.fc40.x86_64.img"]);
        assert_eq!(e.title, "Fedora Linux (6.8.5-301.fc40.x86_64) 40");
        assert_eq!(e.cmdline, "root=UUID=5b3e8a2c-1111-4c4c-9d9d-0123456789ab ro rootflags=subvol=root rd.luks.uuid=luks-7d0a6f0e rhgb quiet");
        assert!(e.problem.is_none());
        let v = parse_bls("x.conf", "title T\nlinux /k\noptions $kernelopts\n").unwrap();
        assert!(v.problem.unwrap().contains("$kernelopts"));
        let u = parse_bls("u.conf", "title U\nefi /EFI/Linux/uki.efi\n").unwrap();
        assert!(u.problem.unwrap().contains("unified kernel image"));
        assert!(parse_bls("n.conf", "title nothing\n").is_none());
        let mut all = vec![
            parse_bls("/e/a-6.1.9.conf", "linux /a").unwrap(),
            parse_bls("/e/a-6.1.10.conf", "linux /b").unwrap(),
        ];
        sort_bls(&mut all);
        assert_eq!(all[0].kernel, "/b");
    }

    #[test]
    fn grub_debian() {
        let e = parse_grub("/boot/grub/grub.cfg", include_str!("fixtures/grub.cfg"));
        let titles: Vec<_> = e.iter().map(|e| e.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Debian GNU/Linux",
                "Debian GNU/Linux, with Linux 6.1.0-18-amd64",
                "Debian GNU/Linux, with Linux 6.1.0-18-amd64 (recovery mode)",
                "Debian GNU/Linux, with Linux 6.1.0-9-amd64",
            ]
        );
        assert_eq!(e[0].kernel, "/@/boot/vmlinuz-6.1.0-18-amd64");
        assert_eq!(e[0].initrds, ["/@/boot/initrd.img-6.1.0-18-amd64"]);
        assert_eq!(
            e[0].cmdline,
            "root=/dev/mapper/root ro rootflags=subvol=@ quiet"
        );
        assert!(e[0].problem.is_none());
        assert!(e[3].problem.as_deref().unwrap().contains("$vt_handoff"));
    }

    #[test]
    fn extlinux() {
        let text = "PROMPT 0\nDEFAULT main\nLABEL old\n  KERNEL /vmlinuz.old\n  APPEND root=/dev/x\nLABEL main\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND console=ttyS0 root=/dev/mapper/root rootflags=subvol=@ ro\n";
        let e = parse_extlinux("/boot/extlinux/extlinux.conf", text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].title, "main");
        assert_eq!(e[0].kernel, "/vmlinuz");
        assert_eq!(e[0].initrds, ["/initrd.img"]);
        assert_eq!(
            e[0].cmdline,
            "console=ttyS0 root=/dev/mapper/root rootflags=subvol=@ ro"
        );
        let e = parse_extlinux("s", "label a\nkernel /k\nappend initrd=/i1,/i2 quiet\n");
        assert_eq!(e[0].initrds, ["/i1", "/i2"]);
        assert_eq!(e[0].cmdline, "quiet");
    }

    #[test]
    fn kernel_cmdline_and_boot_files() {
        assert_eq!(
            parse_kernel_cmdline("# comment\nroot=UUID=x ro\n quiet\n").as_deref(),
            Some("root=UUID=x ro quiet")
        );
        assert_eq!(parse_kernel_cmdline("\n"), None);
        let names: Vec<String> = [
            "config-6.1.0-9-amd64",
            "vmlinuz-6.1.0-9-amd64",
            "initrd.img-6.1.0-9-amd64",
            "vmlinuz-6.1.0-18-amd64",
            "initrd.img-6.1.0-18-amd64",
            "vmlinuz-linux",
            "initramfs-linux.img",
            "grub",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let k = kernels_in_boot(&names);
        assert_eq!(
            k[0],
            ("vmlinuz-linux".into(), Some("initramfs-linux.img".into()))
        );
        assert_eq!(k[1].0, "vmlinuz-6.1.0-18-amd64");
        assert_eq!(k[1].1.as_deref(), Some("initrd.img-6.1.0-18-amd64"));
        assert_eq!(k.len(), 3);
    }
}
