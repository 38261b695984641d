//! Runs what the command line asked for: listen, make a host key, or check
//! a config (and the files it names) the way an image hook does.

use crate::args::{Args, Command};
use portcullis::error::{Context, Result};
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
        Command::Check { root, list_files } => check(&args.config, &root, list_files)
            .map_err(|e| portcullis::error::Error::msg(as_image_paths(&format!("{e:#}"), &root))),
        Command::Run => portcullis::daemon::run(&args.config, &portcullis::sys::Root::default()),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            portcullis::logging::final_error(&format!("{e:#}"));
            1
        }
    }
}

/// `msg` with the paths under `root` (the temporary tree of an image being
/// built) written as the image sees them, which are the admin's paths: the
/// hooks copy each file to the same place. An error naming
/// `/var/tmp/mkinitramfs_Xa1b2/etc/portcullis/host_key` sends the admin
/// looking for a file that is gone by the time they read it.
fn as_image_paths(msg: &str, root: &Path) -> String {
    let prefix = root.to_string_lossy();
    let prefix = prefix.trim_end_matches('/');
    // A relative root ("--root .") would also match inside relative paths.
    if prefix.is_empty() || !root.is_absolute() {
        return msg.to_string();
    }
    msg.replace(&format!("{prefix}/"), "/")
}

fn check(config: &Path, root: &Path, list_files: bool) -> Result<()> {
    let root = portcullis::sys::Root::new(root);
    // A relative --config is a file in the working directory, as for any
    // command; an absolute one is looked up in the tree being checked.
    let path = if config.is_absolute() {
        root.join(config)
    } else {
        config.to_path_buf()
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let settings = portcullis::config::Settings::parse(&text, config)?;
    // Port 0 (any free port) is for tests; in an image it would listen
    // where no client looks.
    if let Some(a) = settings.listen.iter().find(|a| a.port() == 0) {
        portcullis::bail!(
            "{}: listen = \"{a}\": port 0 picks a random port at boot; give a port (22)",
            config.display()
        );
    }
    let report = settings.check_files(&root)?;
    for key in &settings.host_keys {
        let key_path = root.join(key);
        if portcullis::hostkey::world_or_group_readable(&key_path)? {
            portcullis::bail!(
                "host key {} is readable by group or others; chmod 600 it",
                key_path.display()
            );
        }
    }
    if list_files {
        // What the hooks copy, each to the same path in the image. The
        // config refuses control characters in paths, so one per line.
        // Every host key, one line each (a key-type migration serves two).
        let files = settings
            .host_keys
            .iter()
            .map(|p| ("host-key", p))
            .chain([("authorized-keys", &settings.authorized_keys)])
            .chain(settings.relay.as_ref().map(|r| ("relay-key", &r.key)));
        for (kind, p) in files {
            let p = p
                .to_str()
                .with_context(|| format!("{kind} {} is not UTF-8; rename it", p.display()))?;
            println!("{kind} {p}");
        }
        return Ok(());
    }
    if report.cryptsetup_missing {
        eprintln!(
            "portcullisd: note: no cryptsetup at {}: fine where systemd or Debian's askpass \
             asks for the passphrase, but the cryptsetup backend would fail",
            settings.cryptsetup.display()
        );
    }
    // The path as the image sees it, not the temporary build directory.
    let relay = match (&settings.relay, &report.relay_key) {
        (Some(r), Some(fp)) => format!(
            "; relay {} (listens on 127.0.0.1:{} there; relay key {fp})",
            r.shown(),
            r.remote_port
        ),
        _ => String::new(),
    };
    println!(
        "{}: ok; host key {}; {} authorized key(s); {} volume(s) configured{}{relay}",
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

#[cfg(test)]
mod tests {
    use super::as_image_paths;
    use std::path::Path;

    #[test]
    fn image_paths_in_messages() {
        let m = "reading host key /var/tmp/mkinitramfs_Xa1/etc/portcullis/host_key: gone";
        for root in ["/var/tmp/mkinitramfs_Xa1", "/var/tmp/mkinitramfs_Xa1/"] {
            assert_eq!(
                as_image_paths(m, Path::new(root)),
                "reading host key /etc/portcullis/host_key: gone"
            );
        }
        assert_eq!(as_image_paths(m, Path::new("/")), m);
        let rel = "reading config ./portcullisd.toml: gone";
        assert_eq!(as_image_paths(rel, Path::new(".")), rel);
    }
}
