//! Runs what the command line asked for: listen, make a host key, or check
//! a config (and the files it names) the way an image hook does.

use crate::args::{Args, Command};
use anyhow::Result;
use std::path::Path;

/// Runs the command; returns the process exit code.
pub fn run(args: Args) -> u8 {
    let result = match args.command {
        Command::Keygen {
            file,
            force,
            key_type,
        } => portcullis::hostkey::generate_typed(&file, "portcullis-initramfs", force, key_type)
            .map(|k| {
                println!("{}", portcullis::authkeys::fingerprint(k.public_key()));
            })
            .map_err(|e| e.context("keygen")),
        Command::Check { root } => check(&args.config, &root),
        Command::Run => portcullis::daemon::run(&args.config, &portcullis::sys::Root::default()),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("portcullisd: error: {e:#}");
            1
        }
    }
}

fn check(config: &Path, root: &Path) -> Result<()> {
    let root = portcullis::sys::Root::new(root);
    let path = root.join(config);
    let settings = portcullis::config::Settings::load(&path)?;
    let report = settings.check_files(&root)?;
    for key in &settings.host_keys {
        let key_path = root.join(key);
        if portcullis::hostkey::world_or_group_readable(&key_path)? {
            anyhow::bail!(
                "host key {} is readable by group or others; chmod 600 it",
                key_path.display()
            );
        }
    }
    if report.cryptsetup_missing {
        eprintln!(
            "portcullisd: note: no cryptsetup at {}: fine where systemd or Debian's askpass \
             asks for the passphrase, but the cryptsetup backend would fail",
            settings.cryptsetup.display()
        );
    }
    // The path as the image sees it, not the temporary build directory.
    println!(
        "{}: ok; host key {}; {} authorized key(s); {} volume(s) configured{}",
        config.display(),
        report.fingerprint,
        report.keys,
        settings.volumes.len(),
        if settings.volumes_from_cmdline {
            " (+ kernel command line)"
        } else {
            ""
        }
    );
    Ok(())
}
