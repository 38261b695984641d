//! Which initramfs will boot, and with which kernel command line: the
//! default entry of GRUB or of systemd-boot/BLS, or every installed
//! kernel's. Every path is read under a root prefix, so tests run on
//! fixture trees.
//!
//! The boot loader that booted this system comes first: systemd-boot when
//! its `LoaderInfo` EFI variable is there, else GRUB. Its default entry is
//! the first entry returned and the only one with `default` set; the other
//! entries follow in menu order, one per image, and then every installed
//! kernel whose image no menu entry loads. Without any boot loader
//! configuration the installed kernels stand alone, and the one Debian's
//! `/vmlinuz` link names (else the newest) is taken as the default.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod bls;
mod grub;

use crate::rescue::bootentry::{kernels_in_boot, parse_kernel_cmdline};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One boot entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootEntry {
    /// The kernel release (`6.1.0-18-amd64`), when known.
    pub kernel: Option<String>,
    /// The initramfs image, as a path on the running system
    /// (`/boot/initrd.img-6.1.0-18-amd64`); open it with
    /// [`BootEntry::image_under`].
    pub image: PathBuf,
    /// Every initrd the entry loads, in order, `image` last. More than one
    /// means an early microcode image in front; the boot loader loads them
    /// back to back and the kernel unpacks them as one.
    pub initrds: Vec<PathBuf>,
    /// The kernel command line the entry boots with.
    pub cmdline: String,
    /// Whether the boot loader boots this entry by default.
    pub default: bool,
    /// Where it was found. The first word says how: `grub` (a `grub.cfg`
    /// menu entry), `bls` (a Boot Loader Specification entry that GRUB's
    /// `blscfg` reads, as on Fedora), `systemd-boot`, or
    /// `installed-kernels` (a kernel in `/boot`, with the command line of
    /// `/etc/kernel/cmdline` or else of the running system); the rest
    /// names the file and entry.
    pub source: String,
}

impl BootEntry {
    /// `image` under the root prefix the entry was found under.
    pub fn image_under(&self, root: &Path) -> PathBuf {
        under(root, &self.image.to_string_lossy())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{0}")]
    NotFound(String),
    /// The default entry boots no initramfs preflight can read: a finding
    /// about the machine (a FAIL), not a usage error.
    #[error("{0}")]
    NoImage(String),
}

/// Every boot entry found under `root`, the default one first.
pub fn entries(root: &Path) -> Result<Vec<BootEntry>, BootError> {
    let r = Root(root);
    let grub = grub_entries(&r)?;
    let sdboot = sdboot_entries(&r)?;
    let loaders = if r.efivar("LoaderInfo").is_some() {
        [sdboot, grub]
    } else {
        [grub, sdboot]
    };
    let mut out: Vec<BootEntry> = Vec::new();
    for entry in loaders.into_iter().flatten() {
        push_new(&mut out, entry);
    }
    let from_loader = !out.is_empty();
    for (i, e) in out.iter_mut().enumerate() {
        e.default = e.default && i == 0;
    }
    for entry in installed_kernels(&r, !from_loader) {
        push_new(&mut out, entry);
    }
    if out.is_empty() {
        return Err(BootError::NotFound(format!(
            "no boot entry under {}: no GRUB menu entry with an initrd (boot/grub/grub.cfg), \
             no systemd-boot entry (loader/entries) and no kernel with an initramfs in /boot; \
             name the image with --image",
            root.display()
        )));
    }
    Ok(out)
}

/// Adds `entry` unless an entry already boots the same image.
fn push_new(out: &mut Vec<BootEntry>, entry: BootEntry) {
    if !out.iter().any(|e| e.image == entry.image) {
        out.push(entry);
    }
}

fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Reads files under the root prefix. Unreadable means absent: the boot
/// loader could not read them either.
struct Root<'a>(&'a Path);

impl Root<'_> {
    fn read(&self, rel: &str) -> Option<String> {
        let bytes = std::fs::read(under(self.0, rel)).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn is_file(&self, rel: &str) -> bool {
        under(self.0, rel).is_file()
    }

    fn is_dir(&self, rel: &str) -> bool {
        under(self.0, rel).is_dir()
    }

    /// File names in a directory, sorted.
    fn list(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(under(self.0, rel))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A systemd-boot EFI variable (`LoaderEntryDefault`): four bytes of
    /// attributes, then a NUL-terminated UTF-16LE string.
    fn efivar(&self, name: &str) -> Option<String> {
        const LOADER_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
        let path = under(
            self.0,
            &format!("sys/firmware/efi/efivars/{name}-{LOADER_GUID}"),
        );
        let bytes = std::fs::read(path).ok()?;
        let units: Vec<u16> = bytes
            .get(4..)?
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .take_while(|&u| u != 0)
            .collect();
        Some(String::from_utf16_lossy(&units))
    }

    /// Where `path`, as a boot loader config writes it, lies on this
    /// system: tried under each of `bases` (the partitions it may be
    /// relative to, `""` for the root), dropping leading components one
    /// by one (a btrfs subvolume: `/@/boot/vmlinuz`). As written when
    /// nothing exists.
    fn locate(&self, bases: &[&str], path: &str) -> String {
        // `(hd0,gpt2)/vmlinuz` or `($root)/vmlinuz`: the device is ours.
        let path = match path.strip_prefix('(').and_then(|p| p.split_once(')')) {
            Some((_, rest)) => rest,
            None => path,
        };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for skip in 0..parts.len() {
            let tail = parts.get(skip..).unwrap_or_default().join("/");
            for base in bases {
                let candidate = if base.is_empty() {
                    tail.clone()
                } else {
                    format!("{base}/{tail}")
                };
                if self.is_file(&candidate) {
                    return format!("/{candidate}");
                }
            }
        }
        format!("/{}", parts.join("/"))
    }

    /// The release of a kernel file name: `vmlinuz-6.1.0-18-amd64`, or
    /// Arch's `vmlinuz-linux` through `usr/lib/modules/*/pkgbase`.
    fn release(&self, kernel_path: &str) -> Option<String> {
        let name = kernel_path.rsplit('/').next()?;
        let name = name
            .strip_prefix("vmlinuz-")
            .or_else(|| name.strip_prefix("vmlinux-"))?;
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            return Some(name.to_string());
        }
        self.list("usr/lib/modules").into_iter().find(|dir| {
            self.read(&format!("usr/lib/modules/{dir}/pkgbase"))
                .is_some_and(|p| p.trim() == name)
        })
    }
}

/// Words joined by single spaces.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The error for a default entry that loads no initramfs we can read.
fn no_image(what: &str, file: &str, why: &str) -> BootError {
    BootError::NoImage(format!(
        "the default boot entry '{what}' ({file}) {why}; fix the boot loader \
         configuration or name the image with --image"
    ))
}

// -------------------------------------------------------------------- GRUB

fn grub_entries(r: &Root) -> Result<Vec<BootEntry>, BootError> {
    // The menu is in /boot/grub (Debian) or /boot/grub2 (Fedora, SUSE);
    // older Fedora kept it on the ESP. The ESP's grub.cfg on Debian is a
    // stub that only loads /boot's: a file without a menu is passed over.
    let esp: Vec<String> = r
        .list("boot/efi/EFI")
        .into_iter()
        .map(|d| format!("boot/efi/EFI/{d}"))
        .collect();
    let dirs = ["boot/grub".to_string(), "boot/grub2".to_string()]
        .into_iter()
        .chain(esp);
    let Some((dir, mut config)) = dirs
        .filter_map(|d| {
            r.read(&format!("{d}/grub.cfg"))
                .map(|t| (d, grub::parse(&t)))
        })
        .find(|(_, c)| !c.menu.is_empty())
    else {
        return Ok(Vec::new());
    };
    let cfg_file = format!("/{dir}/grub.cfg");
    let env = r
        .read(&format!("{dir}/grubenv"))
        .map(|t| grub::parse_env(&t))
        .unwrap_or_default();
    // grubenv is loaded first; the config's own `set`s are mostly guarded
    // by "if not set yet" (Fedora's kernelopts), so grubenv wins.
    let mut vars = config.vars.clone();
    vars.extend(env.clone());

    // Fedora: `blscfg` puts the BLS entries into the menu where it runs.
    let mut bls_sources: HashMap<String, String> = HashMap::new();
    if config.menu.contains(&grub::Item::Bls) {
        let mut found: Vec<bls::Bls> = r
            .list("boot/loader/entries")
            .into_iter()
            .filter(|f| f.ends_with(".conf"))
            .filter_map(|f| {
                r.read(&format!("boot/loader/entries/{f}"))
                    .map(|t| bls::parse(&f, &t))
            })
            .collect();
        bls::sort_grub(&mut found);
        let items: Vec<grub::Item> = found
            .into_iter()
            .map(|b| {
                bls_sources.insert(
                    b.id().to_string(),
                    format!("bls /boot/loader/entries/{}", b.file),
                );
                grub::Item::Entry(grub::MenuEntry {
                    title: b.title.clone().unwrap_or_else(|| b.id().to_string()),
                    id: Some(b.id().to_string()),
                    linux: b.linux.clone(),
                    args: b.options.split_whitespace().map(str::to_string).collect(),
                    initrds: b.initrds.clone(),
                })
            })
            .collect();
        let mut menu = Vec::new();
        for item in config.menu {
            if item == grub::Item::Bls {
                menu.extend(items.iter().cloned());
            } else {
                menu.push(item);
            }
        }
        config.menu = menu;
    }

    let choice = grub::default_choice(&config, &env);
    // GRUB boots entry 0 when the choice names nothing.
    let default = grub::select(&config.menu, &choice).or_else(|| grub::select(&config.menu, "0"));
    let source = |e: &grub::MenuEntry| {
        e.id.as_ref()
            .and_then(|id| bls_sources.get(id).cloned())
            .unwrap_or_else(|| format!("grub {cfg_file}"))
            + &format!(" '{}'", e.title)
    };
    let mut out = Vec::new();
    if let Some(d) = default {
        if d.linux.is_none() {
            return Err(no_image(&d.title, &cfg_file, "boots no Linux kernel"));
        }
        if d.initrds.is_empty() {
            return Err(no_image(
                &d.title,
                &cfg_file,
                "loads no initramfs, so nothing can unlock the disk at boot",
            ));
        }
    }
    let all = grub::flatten(&config.menu);
    let ordered = default
        .into_iter()
        .chain(all.into_iter().filter(|e| Some(*e) != default));
    for (i, e) in ordered.enumerate() {
        let Some(linux) = &e.linux else { continue };
        if e.initrds.is_empty() {
            continue;
        }
        // Fedora's `$tuned_initrd` may expand to nothing.
        let initrds: Vec<PathBuf> = e
            .initrds
            .iter()
            .map(|p| grub::expand(p, &vars))
            .filter(|p| !p.trim().is_empty())
            .map(|p| PathBuf::from(r.locate(&["", "boot"], &p)))
            .collect();
        let Some(image) = initrds.last().cloned() else {
            continue;
        };
        out.push(BootEntry {
            kernel: r.release(linux).or_else(|| release_from_image(&image)),
            image,
            initrds,
            cmdline: squash(&grub::expand(&e.args.join(" "), &vars)),
            default: i == 0 && default.is_some(),
            source: source(e),
        });
    }
    Ok(out)
}

/// `initrd.img-REL`, `initramfs-REL.img`, `initrd-REL`: REL.
fn release_from_image(image: &Path) -> Option<String> {
    let name = image.file_name()?.to_str()?;
    let rel = name
        .strip_prefix("initrd.img-")
        .or_else(|| {
            name.strip_prefix("initramfs-")
                .and_then(|n| n.strip_suffix(".img"))
        })
        .or_else(|| name.strip_prefix("initrd-"))?;
    rel.starts_with(|c: char| c.is_ascii_digit())
        .then(|| rel.to_string())
}

// ------------------------------------------------------------ systemd-boot

/// Where systemd-boot's ESP or XBOOTLDR partition may be mounted.
const SDBOOT_DIRS: [&str; 3] = ["efi", "boot", "boot/efi"];

fn sdboot_entries(r: &Root) -> Result<Vec<BootEntry>, BootError> {
    let present = r.efivar("LoaderInfo").is_some()
        || SDBOOT_DIRS.iter().any(|d| {
            r.is_file(&format!("{d}/loader/loader.conf")) || r.is_dir(&format!("{d}/EFI/systemd"))
        });
    if !present {
        return Ok(Vec::new());
    }
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut found: Vec<(bls::Bls, &str)> = Vec::new();
    for dir in SDBOOT_DIRS {
        let entries_dir = format!("{dir}/loader/entries");
        // /boot/efi and /efi may be one mount seen twice.
        let Ok(real) = under(r.0, &entries_dir).canonicalize() else {
            continue;
        };
        if seen.contains(&real) {
            continue;
        }
        seen.push(real);
        for f in r.list(&entries_dir) {
            if !f.ends_with(".conf") {
                continue;
            }
            if let Some(text) = r.read(&format!("{entries_dir}/{f}")) {
                found.push((bls::parse(&f, &text), dir));
            }
        }
    }
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let mut list: Vec<bls::Bls> = found.iter().map(|(b, _)| b.clone()).collect();
    bls::sort_sdboot(&mut list);
    let dir_of = |b: &bls::Bls| {
        found
            .iter()
            .find(|(f, _)| f.file == b.file)
            .map_or("boot", |(_, d)| *d)
    };

    // systemd-boot's order of choice: a one-shot entry, the EFI variable
    // `bootctl set-default` writes, loader.conf's `default` (`@saved`:
    // the last booted), else the first entry.
    let conf_default = SDBOOT_DIRS
        .iter()
        .find_map(|d| r.read(&format!("{d}/loader/loader.conf")))
        .and_then(|t| bls::loader_default(&t));
    let conf_default = match conf_default.as_deref() {
        Some("@saved") => r.efivar("LoaderEntryLastBooted"),
        _ => conf_default,
    };
    let choices = [
        r.efivar("LoaderEntryOneShot"),
        r.efivar("LoaderEntryDefault"),
        conf_default,
    ];
    let default_index = choices
        .iter()
        .flatten()
        .find_map(|pattern| list.iter().position(|b| bls::matches(pattern, b)))
        .unwrap_or(0);
    if let Some(d) = list.get(default_index) {
        let file = format!("/{}/loader/entries/{}", dir_of(d), d.file);
        let title = d.title.clone().unwrap_or_else(|| d.id().to_string());
        if d.linux.is_none() && d.efi.is_some() {
            return Err(no_image(
                &title,
                &file,
                "boots a unified kernel image, whose initramfs preflight cannot read",
            ));
        }
        if d.initrds.is_empty() {
            return Err(no_image(
                &title,
                &file,
                "loads no initramfs, so nothing can unlock the disk at boot",
            ));
        }
    }
    let order =
        std::iter::once(default_index).chain((0..list.len()).filter(|&i| i != default_index));
    let mut out = Vec::new();
    for i in order {
        let Some(b) = list.get(i) else { continue };
        let (Some(linux), Some(_)) = (&b.linux, b.initrds.last()) else {
            continue;
        };
        let dir = dir_of(b);
        // Paths are relative to the partition the entry lies on.
        let bases = [dir, "", "boot"];
        let initrds: Vec<PathBuf> = b
            .initrds
            .iter()
            .map(|p| PathBuf::from(r.locate(&bases, p)))
            .collect();
        let Some(image) = initrds.last().cloned() else {
            continue;
        };
        out.push(BootEntry {
            kernel: b
                .version
                .clone()
                .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
                .or_else(|| r.release(linux))
                .or_else(|| release_from_image(&image)),
            image,
            initrds,
            cmdline: squash(&b.options),
            default: i == default_index,
            source: format!(
                "systemd-boot /{dir}/loader/entries/{} '{}'",
                b.file,
                b.title.as_deref().unwrap_or(b.id())
            ),
        });
    }
    Ok(out)
}

// -------------------------------------------------------- installed kernels

/// Every kernel in /boot with its initramfs, newest first; with
/// `pick_default`, the one `/vmlinuz` names (else the newest) is the
/// default.
fn installed_kernels(r: &Root, pick_default: bool) -> Vec<BootEntry> {
    let names = r.list("boot");
    let (cmdline, whence) = match r
        .read("etc/kernel/cmdline")
        .and_then(|t| parse_kernel_cmdline(&t))
    {
        Some(c) => (c, "command line from /etc/kernel/cmdline"),
        None => match r.read("proc/cmdline") {
            Some(c) => (
                squash(&c),
                "command line of the running system (/proc/cmdline)",
            ),
            None => (String::new(), "no command line known"),
        },
    };
    // Debian's /vmlinuz (or /boot/vmlinuz) names the default kernel.
    let linked = ["vmlinuz", "boot/vmlinuz"].iter().find_map(|l| {
        let target = std::fs::read_link(under(r.0, l)).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    });
    let mut out: Vec<BootEntry> = kernels_in_boot(&names)
        .into_iter()
        .filter_map(|(kernel, initrd)| {
            let initrd = initrd?;
            let image = PathBuf::from(format!("/boot/{initrd}"));
            Some(BootEntry {
                kernel: r.release(&kernel),
                initrds: vec![image.clone()],
                image,
                cmdline: cmdline.clone(),
                default: linked.as_deref() == Some(kernel.as_str()),
                source: format!("installed-kernels /boot/{kernel}, {whence}"),
            })
        })
        .collect();
    if let Some(i) = out.iter().position(|e| e.default) {
        let e = out.remove(i);
        out.insert(0, e);
    }
    for (i, e) in out.iter_mut().enumerate() {
        e.default = pick_default && i == 0;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    /// A fixture tree: (path, content); a content starting with `->` is a
    /// symlink.
    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            match content.strip_prefix("->") {
                Some(target) => std::os::unix::fs::symlink(target, &p).unwrap(),
                None => std::fs::write(&p, content).unwrap(),
            }
        }
        dir
    }

    /// A systemd-boot EFI variable as efivarfs shows it: attributes,
    /// then NUL-terminated UTF-16LE.
    fn write_efivar(root: &Path, name: &str, value: &str) {
        let dir = root.join("sys/firmware/efi/efivars");
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = vec![7u8, 0, 0, 0];
        for u in value.encode_utf16().chain([0]) {
            bytes.extend(u.to_le_bytes());
        }
        std::fs::write(
            dir.join(format!("{name}-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f")),
            bytes,
        )
        .unwrap();
    }

    const DEBIAN_GRUB: &str = include_str!("boot/testdata/grub-debian12.cfg");

    /// Debian 12 with a separate /boot: grub.cfg paths are relative to it.
    fn debian() -> tempfile::TempDir {
        tree(&[
            ("boot/grub/grub.cfg", DEBIAN_GRUB),
            ("boot/grub/grubenv", "# GRUB Environment Block\n#####\n"),
            ("boot/vmlinuz-6.1.0-18-amd64", "k"),
            ("boot/initrd.img-6.1.0-18-amd64", "i"),
            ("boot/vmlinuz-6.1.0-17-amd64", "k"),
            ("boot/initrd.img-6.1.0-17-amd64", "i"),
            ("boot/vmlinuz-6.1.0-9-amd64", "k"),
            ("boot/initrd.img-6.1.0-9-amd64", "i"),
            (
                "proc/cmdline",
                "BOOT_IMAGE=/vmlinuz-6.1.0-18-amd64 root=/dev/mapper/vg-root ro\n",
            ),
        ])
    }

    #[test]
    fn grub_default_first_one_entry_per_image_then_other_kernels() {
        let root = debian();
        let e = entries(root.path()).unwrap();
        let images: Vec<_> = e.iter().map(|e| e.image.to_str().unwrap()).collect();
        assert_eq!(
            images,
            [
                "/boot/initrd.img-6.1.0-18-amd64",
                "/boot/initrd.img-6.1.0-17-amd64",
                "/boot/initrd.img-6.1.0-9-amd64",
            ]
        );
        assert_eq!(
            e[0],
            BootEntry {
                kernel: Some("6.1.0-18-amd64".into()),
                image: "/boot/initrd.img-6.1.0-18-amd64".into(),
                initrds: vec!["/boot/initrd.img-6.1.0-18-amd64".into()],
                cmdline: "root=/dev/mapper/vg-root ro ip=192.0.2.10::192.0.2.1:255.255.255.0::eth0:none quiet".into(),
                default: true,
                source: "grub /boot/grub/grub.cfg 'Debian GNU/Linux'".into(),
            }
        );
        assert!(!e[1].default && !e[2].default);
        assert!(e[1].source.starts_with("grub "), "{}", e[1].source);
        assert_eq!(
            e[2].source,
            "installed-kernels /boot/vmlinuz-6.1.0-9-amd64, command line of the running system (/proc/cmdline)"
        );
        assert_eq!(
            e[2].cmdline,
            "BOOT_IMAGE=/vmlinuz-6.1.0-18-amd64 root=/dev/mapper/vg-root ro"
        );
        assert_eq!(
            e[0].image_under(root.path()),
            root.path().join("boot/initrd.img-6.1.0-18-amd64")
        );
    }

    #[test]
    fn grub_saved_and_one_time_entries() {
        let root = debian();
        let cfg = DEBIAN_GRUB.replace("set default=\"0\"", "set default=\"${saved_entry}\"");
        std::fs::write(root.path().join("boot/grub/grub.cfg"), cfg).unwrap();
        let env = |text: &str| {
            std::fs::write(root.path().join("boot/grub/grubenv"), text).unwrap();
        };
        env("# GRUB Environment Block\nsaved_entry=gnulinux-advanced-0e7d6b6a-5c7e-4a8e-9f0a-1234567890ab>gnulinux-6.1.0-17-amd64-advanced-0e7d6b6a-5c7e-4a8e-9f0a-1234567890ab\n###\n");
        let e = entries(root.path()).unwrap();
        assert_eq!(e[0].kernel.as_deref(), Some("6.1.0-17-amd64"));
        assert!(e[0].default);
        assert_eq!(e[1].kernel.as_deref(), Some("6.1.0-18-amd64"));
        // grub-reboot: the next boot only, but that is the one we check.
        env("# GRUB Environment Block\nsaved_entry=1>2\nnext_entry=1>0\n###\n");
        let e = entries(root.path()).unwrap();
        assert_eq!(e[0].kernel.as_deref(), Some("6.1.0-18-amd64"));
        // A saved entry that no longer exists: GRUB boots entry 0.
        env("# GRUB Environment Block\nsaved_entry=gone\n###\n");
        assert_eq!(
            entries(root.path()).unwrap()[0].kernel.as_deref(),
            Some("6.1.0-18-amd64")
        );
    }

    #[test]
    fn grub_paths_on_the_root_partition_and_subvolumes() {
        let cfg = "set default=0\nmenuentry 'x' {\n linux /@/boot/vmlinuz-6.1.0-18-amd64 root=UUID=r ro rootflags=subvol=@\n initrd /@/boot/intel-ucode.img /@/boot/initrd.img-6.1.0-18-amd64\n}\n";
        let root = tree(&[
            ("boot/grub/grub.cfg", cfg),
            ("boot/vmlinuz-6.1.0-18-amd64", "k"),
            ("boot/intel-ucode.img", "u"),
            ("boot/initrd.img-6.1.0-18-amd64", "i"),
        ]);
        let e = entries(root.path()).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].image, Path::new("/boot/initrd.img-6.1.0-18-amd64"));
        assert_eq!(
            e[0].initrds,
            [
                PathBuf::from("/boot/intel-ucode.img"),
                "/boot/initrd.img-6.1.0-18-amd64".into()
            ]
        );
        assert_eq!(e[0].cmdline, "root=UUID=r ro rootflags=subvol=@");
    }

    #[test]
    fn grub_menu_on_the_esp_and_stubs_passed_over() {
        let stub = "search.fs_uuid 3d5f7a9b root hd0,gpt2\nset prefix=($root)'/grub'\nconfigfile $prefix/grub.cfg\n";
        let menu = "menuentry 'old fedora' {\n linuxefi /vmlinuz-5.8.15-301.fc33.x86_64 root=UUID=x\n initrdefi /initramfs-5.8.15-301.fc33.x86_64.img\n}\n";
        let root = tree(&[
            ("boot/efi/EFI/debian/grub.cfg", stub),
            ("boot/efi/EFI/fedora/grub.cfg", menu),
            ("boot/efi/EFI/fedora/grubenv", "# GRUB Environment Block\n"),
            ("boot/vmlinuz-5.8.15-301.fc33.x86_64", "k"),
            ("boot/initramfs-5.8.15-301.fc33.x86_64.img", "i"),
        ]);
        let e = entries(root.path()).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kernel.as_deref(), Some("5.8.15-301.fc33.x86_64"));
        assert_eq!(
            e[0].source,
            "grub /boot/efi/EFI/fedora/grub.cfg 'old fedora'"
        );
        assert_eq!(
            e[0].image,
            Path::new("/boot/initramfs-5.8.15-301.fc33.x86_64.img")
        );
    }

    #[test]
    fn grub_default_without_an_initramfs_is_an_error() {
        let cfg = "menuentry 'bare' {\n linux /vmlinuz-6.1 root=/dev/sda1\n}\n";
        let root = tree(&[("boot/grub/grub.cfg", cfg), ("boot/vmlinuz-6.1", "k")]);
        let e = entries(root.path()).unwrap_err().to_string();
        assert_eq!(
            e,
            "the default boot entry 'bare' (/boot/grub/grub.cfg) loads no initramfs, so nothing \
             can unlock the disk at boot; fix the boot loader configuration or name the image with --image"
        );
    }

    #[test]
    fn fedora_grub_with_bls_entries() {
        let grubcfg = "set default=\"${saved_entry}\"\nif [ -z \"${kernelopts}\" ]; then\n  set kernelopts=\"root=UUID=x ro\"\nfi\ninsmod blscfg\nblscfg\nmenuentry 'UEFI Firmware Settings' $menuentry_id_option 'uefi-firmware' {\n fwsetup\n}\n";
        let mid = "4f3c0d2e";
        let entry = |v: &str| {
            format!(
                "title Fedora Linux ({v}) 40\nversion {v}\nlinux /vmlinuz-{v}\ninitrd /initramfs-{v}.img $tuned_initrd\noptions $kernelopts rd.neednet=1 ip=dhcp\ngrub_users $grub_users\n"
            )
        };
        let (a, b) = ("6.8.5-301.fc40.x86_64", "6.10.3-200.fc40.x86_64");
        let root = tree(&[
            ("boot/grub2/grub.cfg", grubcfg),
            (
                "boot/grub2/grubenv",
                &format!("# GRUB Environment Block\nsaved_entry={mid}-{a}\nkernelopts=root=UUID=y ro rhgb\n####\n"),
            ),
            (&format!("boot/loader/entries/{mid}-{a}.conf"), &entry(a)),
            (&format!("boot/loader/entries/{mid}-{b}.conf"), &entry(b)),
            (&format!("boot/vmlinuz-{a}"), "k"),
            (&format!("boot/initramfs-{a}.img"), "i"),
            (&format!("boot/vmlinuz-{b}"), "k"),
            (&format!("boot/initramfs-{b}.img"), "i"),
        ]);
        let e = entries(root.path()).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].kernel.as_deref(), Some(a));
        assert!(e[0].default);
        assert_eq!(
            e[0].image,
            PathBuf::from(format!("/boot/initramfs-{a}.img"))
        );
        assert_eq!(e[0].cmdline, "root=UUID=y ro rhgb rd.neednet=1 ip=dhcp");
        assert_eq!(
            e[0].source,
            format!("bls /boot/loader/entries/{mid}-{a}.conf 'Fedora Linux ({a}) 40'")
        );
        assert_eq!(e[1].kernel.as_deref(), Some(b));
        // No saved entry: the newest BLS entry is GRUB's entry 0.
        std::fs::write(
            root.path().join("boot/grub2/grubenv"),
            "# GRUB Environment Block\n",
        )
        .unwrap();
        let e = entries(root.path()).unwrap();
        assert_eq!(e[0].kernel.as_deref(), Some(b));
        assert_eq!(e[0].cmdline, "root=UUID=x ro rd.neednet=1 ip=dhcp");
    }

    /// Arch with systemd-boot on /efi (ESP) and the kernels in /boot
    /// (XBOOTLDR), as `bootctl install` and kernel-install lay it out.
    fn arch() -> tempfile::TempDir {
        tree(&[
            ("efi/loader/loader.conf", "timeout 3\n#default x\n"),
            ("efi/EFI/systemd/systemd-bootx64.efi", "efi"),
            (
                "boot/loader/entries/arch-main.conf",
                "title Arch Linux\nlinux /vmlinuz-linux\ninitrd /intel-ucode.img\ninitrd /initramfs-linux.img\noptions root=/dev/mapper/root rw ip=dhcp\n",
            ),
            (
                "boot/loader/entries/arch-lts.conf",
                "title Arch Linux LTS\nlinux /vmlinuz-linux-lts\ninitrd /initramfs-linux-lts.img\noptions root=/dev/mapper/root rw\n",
            ),
            (
                "efi/loader/entries/0-uki.conf",
                "title UKI\nefi /EFI/Linux/arch.efi\n",
            ),
            ("boot/vmlinuz-linux", "k"),
            ("boot/intel-ucode.img", "u"),
            ("boot/initramfs-linux.img", "i"),
            ("boot/initramfs-linux-fallback.img", "i"),
            ("boot/vmlinuz-linux-lts", "k"),
            ("boot/initramfs-linux-lts.img", "i"),
            ("usr/lib/modules/6.10.3-arch1-1/pkgbase", "linux\n"),
            ("usr/lib/modules/6.6.44-1-lts/pkgbase", "linux-lts\n"),
            ("etc/kernel/cmdline", "root=/dev/mapper/root rw\n"),
        ])
    }

    #[test]
    fn systemd_boot_sort_order_default_and_efi_variables() {
        let root = arch();
        let e = entries(root.path()).unwrap();
        // No default set: the first in systemd-boot's order (no sort
        // keys: file names, highest first).
        assert_eq!(e[0].kernel.as_deref(), Some("6.10.3-arch1-1"));
        assert!(e[0].default);
        assert_eq!(
            e[0].source,
            "systemd-boot /boot/loader/entries/arch-main.conf 'Arch Linux'"
        );
        assert_eq!(
            e[0].initrds,
            [
                PathBuf::from("/boot/intel-ucode.img"),
                "/boot/initramfs-linux.img".into()
            ]
        );
        assert_eq!(e[0].image, Path::new("/boot/initramfs-linux.img"));
        assert_eq!(e[0].cmdline, "root=/dev/mapper/root rw ip=dhcp");
        assert_eq!(e[1].kernel.as_deref(), Some("6.6.44-1-lts"));
        assert!(!e[1].default);
        assert_eq!(e.len(), 2, "the UKI has no initramfs to read: {e:#?}");

        let kernel = || entries(root.path()).unwrap()[0].kernel.clone().unwrap();
        std::fs::write(
            root.path().join("efi/loader/loader.conf"),
            "timeout 3\ndefault Arch-LTS*\n",
        )
        .unwrap();
        assert_eq!(kernel(), "6.6.44-1-lts");
        // `bootctl set-default` beats loader.conf; a one-shot beats both.
        write_efivar(root.path(), "LoaderEntryDefault", "arch-main.conf");
        assert_eq!(kernel(), "6.10.3-arch1-1");
        write_efivar(root.path(), "LoaderEntryOneShot", "arch-lts.conf");
        assert_eq!(kernel(), "6.6.44-1-lts");
        // A default UKI: its initramfs is inside the EFI binary.
        write_efivar(root.path(), "LoaderEntryOneShot", "0-uki.conf");
        let err = entries(root.path()).unwrap_err().to_string();
        assert!(
            err.contains("'UKI' (/efi/loader/entries/0-uki.conf) boots a unified kernel image"),
            "{err}"
        );
    }

    #[test]
    fn the_loader_that_booted_comes_first() {
        let root = arch();
        let grubcfg = "menuentry 'grub arch' {\n linux /vmlinuz-linux root=/dev/x\n initrd /initramfs-linux-fallback.img\n}\n";
        std::fs::create_dir_all(root.path().join("boot/grub")).unwrap();
        std::fs::write(root.path().join("boot/grub/grub.cfg"), grubcfg).unwrap();
        let e = entries(root.path()).unwrap();
        assert!(e[0].source.starts_with("grub "), "{}", e[0].source);
        assert_eq!(e.iter().filter(|e| e.default).count(), 1);
        write_efivar(root.path(), "LoaderInfo", "systemd-boot 256");
        let e = entries(root.path()).unwrap();
        assert!(e[0].source.starts_with("systemd-boot "), "{}", e[0].source);
        assert!(e[0].default);
        assert!(e.iter().skip(1).all(|e| !e.default));
        assert!(e.iter().any(|e| e.source.starts_with("grub ")));
    }

    #[test]
    fn installed_kernels_alone() {
        let root = tree(&[
            ("boot/vmlinuz-6.1.0-17-amd64", "k"),
            ("boot/initrd.img-6.1.0-17-amd64", "i"),
            ("boot/vmlinuz-6.1.0-18-amd64", "k"),
            ("boot/initrd.img-6.1.0-18-amd64", "i"),
            ("boot/vmlinuz-6.1.0-19-amd64", "k"),
            ("vmlinuz", "->boot/vmlinuz-6.1.0-18-amd64"),
            ("proc/cmdline", "root=/dev/vda1 ro console=ttyS0 \n"),
        ]);
        let e = entries(root.path()).unwrap();
        // 6.1.0-19 has no initramfs; /vmlinuz names the default.
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].kernel.as_deref(), Some("6.1.0-18-amd64"));
        assert!(e[0].default && !e[1].default);
        assert_eq!(e[0].cmdline, "root=/dev/vda1 ro console=ttyS0");
        assert!(e[0]
            .source
            .ends_with("command line of the running system (/proc/cmdline)"));
        std::fs::remove_file(root.path().join("vmlinuz")).unwrap();
        std::fs::create_dir_all(root.path().join("etc/kernel")).unwrap();
        std::fs::write(
            root.path().join("etc/kernel/cmdline"),
            "# c\nroot=/dev/vda1 ip=dhcp\n",
        )
        .unwrap();
        let e = entries(root.path()).unwrap();
        assert_eq!(
            e[0].kernel.as_deref(),
            Some("6.1.0-18-amd64"),
            "the newest with an image"
        );
        assert_eq!(e[0].cmdline, "root=/dev/vda1 ip=dhcp");
        assert!(e[0]
            .source
            .ends_with("command line from /etc/kernel/cmdline"));
    }

    /// A real system tree, when `PORTCULLIS_PREFLIGHT_ROOT` names one (a
    /// distro test's root): its entries are printed
    /// (`cargo test --lib real_root -- --nocapture`).
    #[test]
    fn real_root() {
        let Some(root) = std::env::var_os("PORTCULLIS_PREFLIGHT_ROOT") else {
            return;
        };
        let found = entries(Path::new(&root)).unwrap_or_else(|e| panic!("{e}"));
        for e in &found {
            println!("{e:?}");
        }
        assert_eq!(found.iter().filter(|e| e.default).count(), 1);
    }

    #[test]
    fn nothing_found_says_what_was_looked_for() {
        let root = tree(&[("etc/hostname", "x")]);
        let e = entries(root.path()).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "no boot entry under {}: no GRUB menu entry",
                root.path().display()
            )),
            "{e}"
        );
        assert!(e.ends_with("name the image with --image"), "{e}");
    }
}
