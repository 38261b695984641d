//! Which images to check and with what: `--dir` (a staging tree), `--image`
//! (one file), `--all-kernels` (every boot entry) or, by default, the
//! default boot entry's image; the kernel release and command line from
//! the options, else the boot entry, else the running system.

use crate::cli::PreflightCli;
use anyhow::{anyhow, Result};
use portcullis::preflight::boot::{self, BootEntry};
use portcullis::preflight::checks::{self, fail, Selection, Target};
use portcullis::preflight::image::{Image, ImageError};
use portcullis::preflight::report::{ImageReport, Report};
use portcullis::preflight::system::{RealSystem, System};
use portcullis::sys::{Root, SystemRunner};
use std::path::{Path, PathBuf};

pub fn run(args: &PreflightCli) -> Result<Report> {
    let only = match &args.only {
        Some(list) => Selection::parse(list).map_err(|e| anyhow!(e))?,
        None => Selection::default(),
    };
    let root = Root::new(&args.root);
    let system = RealSystem::new(root.clone(), Box::new(SystemRunner));
    let one = |image: &Image, name: String, entry: Option<&BootEntry>| {
        let kernel = args
            .kernel
            .clone()
            .or_else(|| entry.and_then(|e| e.kernel.clone()))
            .or_else(|| kernel_from_name(&name));
        // The command line: --cmdline, else the boot entry's own, else
        // /etc/kernel/cmdline (kernel-install, UKIs; also what an image
        // named with --image and matching no entry will boot with), else
        // the running system's, which is only a guess (see
        // soften_guessed_cmdline).
        let own = entry.filter(|e| !e.source.ends_with("(/proc/cmdline)"));
        let (cmdline, guessed) = if let Some(c) = &args.cmdline {
            (Some(c.clone()), false)
        } else if let Some(e) = own {
            (Some(e.cmdline.clone()), false)
        } else if let Some(c) = kernel_cmdline(&system) {
            (Some(c), false)
        } else {
            (
                entry
                    .map(|e| e.cmdline.clone())
                    .or_else(|| system.cmdline()),
                true,
            )
        };
        let target = Target {
            image,
            name,
            kernel,
            cmdline,
        };
        let mut report = checks::run(&target, &system, &only);
        if guessed {
            checks::soften_guessed_cmdline(&mut report);
        }
        report
    };
    if let Some(dir) = &args.dir {
        let image = Image::from_dir(dir).map_err(|e| {
            anyhow!("{e}; give --dir the generator's staging directory (its DESTDIR)")
        })?;
        let entries = boot::entries(root.join("/").as_path()).unwrap_or_default();
        let entry = args
            .kernel
            .as_ref()
            .and_then(|k| entries.iter().find(|e| e.kernel.as_ref() == Some(k)));
        let name = dir.display().to_string();
        return Ok(Report::new(vec![one(&image, name, entry)]));
    }
    if let Some(file) = &args.image {
        let image = Image::open(file).map_err(|e| unreadable(&e))?;
        let entries = boot::entries(root.join("/").as_path()).unwrap_or_default();
        let entry = entries
            .iter()
            .find(|e| same_file(&e.image_under(&args.root), file));
        return Ok(Report::new(vec![one(
            &image,
            file.display().to_string(),
            entry,
        )]));
    }
    let entries = match boot::entries(root.join("/").as_path()) {
        Ok(entries) => entries,
        // A default entry without an initramfs is a finding: exit 14.
        Err(boot::BootError::NoImage(why)) => {
            let (summary, fix) = why.split_once("; ").unwrap_or((why.as_str(), ""));
            return Ok(Report::new(vec![ImageReport {
                image: "(the default boot entry)".into(),
                kernel: None,
                cmdline: None,
                host_keys: Vec::new(),
                authorized_keys: Vec::new(),
                checks: vec![fail("image", summary.to_string(), fix.to_string())],
            }]));
        }
        // Its errors already say to name the image with --image.
        Err(e) => return Err(anyhow!("{e}")),
    };
    let chosen: Vec<&BootEntry> = if args.all_kernels {
        let mut seen: Vec<&PathBuf> = Vec::new();
        entries
            .iter()
            .filter(|e| {
                let new = !seen.contains(&&e.image);
                seen.push(&e.image);
                new
            })
            .collect()
    } else {
        entries.first().into_iter().collect()
    };
    if chosen.is_empty() {
        return Err(anyhow!(
            "no boot entry found; name the image with --image FILE"
        ));
    }
    let mut images: Vec<ImageReport> = Vec::new();
    for entry in chosen {
        let name = entry.image.display().to_string();
        match Image::open(&entry.image_under(&args.root)) {
            Ok(image) => images.push(one(&image, name, Some(entry))),
            // One image of many that cannot be read fails its own line.
            Err(e) if args.all_kernels => images.push(ImageReport {
                image: name,
                kernel: entry.kernel.clone(),
                cmdline: Some(entry.cmdline.clone()),
                host_keys: Vec::new(),
                authorized_keys: Vec::new(),
                checks: vec![fail("image", e.to_string(), rebuild_hint(entry))],
            }),
            Err(e) => return Err(unreadable(&e)),
        }
    }
    Ok(Report::new(images))
}

/// `/etc/kernel/cmdline` of the system, on one line; `None` when absent
/// or empty.
fn kernel_cmdline(system: &RealSystem) -> Option<String> {
    let bytes = system.read_file(Path::new("/etc/kernel/cmdline"))?;
    let line = String::from_utf8_lossy(&bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!line.is_empty()).then_some(line)
}

fn unreadable(e: &ImageError) -> anyhow::Error {
    match e {
        ImageError::Io { .. } => {
            anyhow!("{e}; name an existing image with --image FILE, or rebuild it")
        }
        ImageError::Format(_) => anyhow!("{e}"),
    }
}

fn rebuild_hint(entry: &BootEntry) -> String {
    match &entry.kernel {
        Some(k) => format!(
            "rebuild it (update-initramfs -u -k {k}, dracut -f --kver {k} or mkinitcpio -P)"
        ),
        None => {
            "rebuild it (update-initramfs -u -k all, dracut -f --regenerate-all or mkinitcpio -P)"
                .into()
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// `6.1.0-18-amd64` from `initrd.img-6.1.0-18-amd64`,
/// `initramfs-6.8.9-300.fc40.x86_64.img`; `None` for `initramfs-linux.img`.
fn kernel_from_name(name: &str) -> Option<String> {
    let file = Path::new(name).file_name()?.to_str()?;
    let rest = ["initrd.img-", "initramfs-", "initrd-"]
        .iter()
        .find_map(|p| file.strip_prefix(p))?;
    let rel = rest.strip_suffix(".img").unwrap_or(rest);
    rel.starts_with(|c: char| c.is_ascii_digit())
        .then(|| rel.to_string())
}

#[cfg(test)]
mod tests {
    use super::kernel_from_name;

    #[test]
    fn kernel_release_from_the_file_name() {
        assert_eq!(
            kernel_from_name("/boot/initrd.img-6.1.0-18-amd64").as_deref(),
            Some("6.1.0-18-amd64")
        );
        assert_eq!(
            kernel_from_name("/boot/initramfs-6.8.9-300.fc40.x86_64.img").as_deref(),
            Some("6.8.9-300.fc40.x86_64")
        );
        assert_eq!(kernel_from_name("/boot/initramfs-linux.img"), None);
    }

    #[test]
    fn the_command_line_definition_is_sound() {
        use clap::CommandFactory;
        crate::cli::PreflightCli::command().debug_assert();
    }
}
