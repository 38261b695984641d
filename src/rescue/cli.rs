//! `portcullis rescue …`: the clap definitions and the glue from arguments
//! to [`super::flows`]. Connection options mirror `portcullis unlock`'s; the
//! rescue system's host key is pinned in its own known-hosts file, apart
//! from the initramfs keys of the same addresses.

use super::flows::{self, KexecOptions};
use super::handover::Flavour;
use super::kexec::LoadMethod;
use super::remote::Ssh;
use super::run::{Session, Settings};
use crate::cli::parse_duration;
use crate::client::{passphrase, ClientError, HostKeyPolicy, Identity, Options, Target};
use crate::protocol::exit;
use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Drive a clear-text rescue system over SSH: unlock, mount, check, chroot,
/// kexec into the main system (see docs/rescue.md).
#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 done, 1 error, 2 wrong passphrase, 3 host key unknown, \
4 host key changed, 5 auth refused, 6 unreachable, 8 unlock failed, 9 partly unlocked, \
12 check: a filesystem needs repair."
)]
pub struct RescueArgs {
    #[command(subcommand)]
    pub command: RescueCommand,
}

#[derive(Debug, Subcommand)]
pub enum RescueCommand {
    /// Block devices, LUKS headers (KDF memory vs RAM), filesystems, btrfs
    /// subvolumes, kernels, missing tools. Changes nothing.
    Inspect {
        #[command(flatten)]
        common: Common,
    },
    /// Open the LUKS volumes (passphrase on cryptsetup's stdin), named as in
    /// the main system's crypttab.
    Unlock {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        pass: PassArgs,
        /// Only this LUKS device (repeatable; path, UUID=… or LABEL=…).
        #[arg(long = "device", value_name = "DEV")]
        devices: Vec<String>,
    },
    /// Mount the main system at --target following its own fstab,
    /// read-only unless --rw.
    Mount {
        #[command(flatten)]
        common: Common,
        /// Mount read-write (needed to change files from a chroot).
        #[arg(long)]
        rw: bool,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Check the main system's filesystems read-only; --repair fixes them
    /// (unmounted only, asks first).
    Check {
        #[command(flatten)]
        common: Common,
        /// Repair instead of only checking.
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Run a command inside the mounted main system, with /dev, /proc, /sys
    /// and /run bound (asks first).
    Chroot {
        #[command(flatten)]
        common: Common,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Boot the main system's kernel without a reboot, handing the key to
    /// its initramfs in RAM so it does not ask again (asks first).
    Kexec(KexecArgs),
    /// Unmount everything under --target and close the volumes unlock
    /// opened, in order.
    Close {
        #[command(flatten)]
        common: Common,
        /// Unmount only; leave the volumes open (for check --repair).
        #[arg(long)]
        keep_open: bool,
    },
}

#[derive(Debug, Args)]
pub struct KexecArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub pass: PassArgs,
    /// Boot entry number as `inspect` lists them [default: the first].
    #[arg(long, value_name = "N")]
    pub entry: Option<usize>,
    /// Kernel path inside the main system, instead of a boot entry.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<String>,
    /// Initrd path inside the main system (with --kernel, or to override).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<String>,
    /// Kernel command line instead of the entry's.
    #[arg(long, value_name = "ARGS")]
    pub cmdline: Option<String>,
    /// Extra kernel arguments appended to the command line.
    #[arg(long, value_name = "ARGS")]
    pub append: Option<String>,
    /// How the main initramfs takes a key file [default: detected].
    #[arg(long, value_enum, value_name = "FLAVOUR")]
    pub initrd_flavour: Option<Flavour>,
    /// Do not hand the key over: the main system will ask again.
    #[arg(long)]
    pub no_handover: bool,
    /// kexec_file_load (file) or kexec_load (classic).
    #[arg(long, value_enum, default_value = "auto")]
    pub load_method: LoadMethod,
    /// Load the kernel but do not boot it.
    #[arg(long)]
    pub load_only: bool,
}

#[derive(Debug, Args)]
pub struct RootArgs {
    /// The main system's root device, when several candidates exist.
    #[arg(long, value_name = "DEV")]
    pub root_device: Option<String>,
    /// Its btrfs subvolume (e.g. @).
    #[arg(long, value_name = "NAME")]
    pub subvol: Option<String>,
}

#[derive(Debug, Args)]
pub struct PassArgs {
    /// Read the passphrase from standard input (one line).
    #[arg(long, conflicts_with = "passphrase_command")]
    pub passphrase_stdin: bool,
    /// Run this command (via sh -c) and use the first line it prints.
    #[arg(long, value_name = "CMD")]
    pub passphrase_command: Option<String>,
}

impl PassArgs {
    fn source(&self) -> passphrase::Source {
        match (&self.passphrase_command, self.passphrase_stdin) {
            (Some(c), _) => passphrase::Source::Command(c.clone()),
            (None, true) => passphrase::Source::Stdin,
            (None, false) => passphrase::Source::Prompt,
        }
    }
}

#[derive(Debug, Args)]
pub struct Common {
    /// HOST, HOST:PORT or [IPV6]:PORT of the rescue system's SSH server.
    pub host: String,
    /// Where the main system is mounted on the rescue system.
    #[arg(long, value_name = "DIR", default_value = "/mnt/portcullis")]
    pub target: String,
    /// Print the plan, change nothing (read-only queries still run).
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before steps that write or boot.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Print one JSON object on stdout (plans go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Also show the read-only commands used to look around.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Expected host key fingerprint (SHA256:...) of the rescue system.
    #[arg(long, value_name = "SHA256:...")]
    pub fingerprint: Option<String>,
    /// Known-hosts file for rescue systems
    /// [default: ~/.config/portcullis/rescue_known_hosts].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Pin an unknown host key without asking (first contact only).
    #[arg(long)]
    pub accept_new: bool,
    /// Private key file (repeatable); default: ssh-agent, then ~/.ssh/id_*.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,
    /// Do not use ssh-agent even when SSH_AUTH_SOCK is set.
    #[arg(long)]
    pub no_agent: bool,
    /// User to log in as (rescue work needs root).
    #[arg(short = 'l', long, default_value = "root")]
    pub user: String,
    /// Keep retrying while the rescue system does not answer yet, for up to
    /// DURATION (e.g. 90s, 10m).
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "10m",
          value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Timeout for one connection attempt.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// The rescue systems' own pins: the same address usually also has an
/// initramfs key pinned in known_hosts, and the two must not collide.
fn default_known_hosts() -> Option<PathBuf> {
    crate::client::known_hosts::default_path().map(|p| p.with_file_name("rescue_known_hosts"))
}

impl Common {
    fn options(&self) -> Result<Options> {
        let target = Target::parse(&self.host)?;
        let host_key = match &self.fingerprint {
            Some(fp) if fp.starts_with("SHA256:") => HostKeyPolicy::Fingerprint(fp.clone()),
            Some(fp) => {
                anyhow::bail!(
                    "--fingerprint {}: expected SHA256:… as ssh-keygen -lf prints it",
                    crate::text::clip(fp)
                )
            }
            None => HostKeyPolicy::KnownHosts {
                path: match &self.known_hosts {
                    Some(p) => p.clone(),
                    None => default_known_hosts().ok_or_else(|| {
                        anyhow!("HOME is not set: pass --known-hosts FILE or --fingerprint")
                    })?,
                },
                accept_new: self.accept_new,
                ask: true,
            },
        };
        Ok(Options {
            target,
            user: self.user.clone(),
            host_key,
            identity: Identity {
                agent: !self.no_agent,
                files: self.identity.clone(),
            },
            connect_timeout: self.timeout,
            wait: self.wait,
        })
    }

    fn settings(&self, host: String) -> Result<Settings> {
        let trimmed = self.target.trim_end_matches('/');
        if trimmed.is_empty() {
            anyhow::bail!("--target must not be the rescue system's root");
        }
        let target = super::shell::path("--target", trimmed)?;
        Ok(Settings {
            target,
            dry_run: self.dry_run,
            yes: self.yes,
            json: self.json,
            verbose: self.verbose,
            host,
        })
    }
}

fn common(c: &RescueCommand) -> &Common {
    match c {
        RescueCommand::Inspect { common }
        | RescueCommand::Unlock { common, .. }
        | RescueCommand::Mount { common, .. }
        | RescueCommand::Check { common, .. }
        | RescueCommand::Chroot { common, .. }
        | RescueCommand::Close { common, .. } => common,
        RescueCommand::Kexec(k) => &k.common,
    }
}

fn name(c: &RescueCommand) -> &'static str {
    match c {
        RescueCommand::Inspect { .. } => "inspect",
        RescueCommand::Unlock { .. } => "unlock",
        RescueCommand::Mount { .. } => "mount",
        RescueCommand::Check { .. } => "check",
        RescueCommand::Chroot { .. } => "chroot",
        RescueCommand::Kexec(_) => "kexec",
        RescueCommand::Close { .. } => "close",
    }
}

fn report(host: &str, cmd: &str, json: bool, e: &ClientError) -> u8 {
    if json {
        let v = serde_json::json!({
            "target": host, "command": cmd, "outcome": e.kind(),
            "error": e.to_string(), "exit-code": e.exit_code(),
        });
        println!("{v}");
    } else {
        eprintln!("error: {}", crate::text::line(&format!("{host}: {e}")));
    }
    e.exit_code()
}

/// Runs `portcullis rescue …`; returns the exit code.
pub async fn run(args: RescueArgs) -> u8 {
    let c = common(&args.command);
    let cmd = name(&args.command);
    let json = c.json;
    let (opts, settings) = match c.options().and_then(|o| {
        let s = c.settings(o.target.to_string())?;
        Ok((o, s))
    }) {
        Ok(x) => x,
        Err(e) => return report(&c.host, cmd, json, &ClientError::Other(e)),
    };
    let host = settings.host.clone();
    let mut ssh = match Ssh::connect(&opts).await {
        Ok(s) => s,
        Err(e) => return report(&host, cmd, json, &e),
    };
    let pass_source = match &args.command {
        RescueCommand::Unlock { pass, .. } => Some(pass.source()),
        RescueCommand::Kexec(k) => Some(k.pass.source()),
        _ => None,
    };
    let what = host.clone();
    let read_pass = move || match &pass_source {
        Some(src) => passphrase::read(src, &format!("{what} (rescue)")),
        None => Err(anyhow!("internal: this command takes no passphrase")),
    };
    let mut session = Session::new(&mut ssh, settings);
    let result = match &args.command {
        RescueCommand::Inspect { .. } => flows::inspect(&mut session).await,
        RescueCommand::Unlock { devices, .. } => {
            flows::unlock(&mut session, devices, &read_pass).await
        }
        RescueCommand::Mount { rw, root, .. } => {
            flows::mount(
                &mut session,
                *rw,
                root.root_device.as_deref(),
                root.subvol.as_deref(),
            )
            .await
        }
        RescueCommand::Check { repair, root, .. } => {
            flows::check(
                &mut session,
                *repair,
                root.root_device.as_deref(),
                root.subvol.as_deref(),
            )
            .await
        }
        RescueCommand::Chroot { command, .. } => flows::chroot(&mut session, command).await,
        RescueCommand::Close { keep_open, .. } => flows::close(&mut session, *keep_open).await,
        RescueCommand::Kexec(k) => {
            let o = KexecOptions {
                entry: k.entry,
                kernel: k.kernel.clone(),
                initrd: k.initrd.clone(),
                cmdline: k.cmdline.clone(),
                append: k.append.clone(),
                flavour: k.initrd_flavour,
                no_handover: k.no_handover,
                load_method: k.load_method,
                load_only: k.load_only,
            };
            flows::kexec_flow(&mut session, &o, &read_pass).await
        }
    };
    let (code, details) = match result {
        Ok(r) => r,
        Err(e) => {
            let code = exit::ERROR;
            if json {
                let v = serde_json::json!({
                    "target": host, "command": cmd, "outcome": "error", "error": format!("{e:#}"),
                    "plans": session.plans, "executed": session.executed, "notes": session.notes,
                    "exit-code": code,
                });
                println!("{v}");
            } else {
                eprintln!("error: {}", crate::text::line(&format!("{host}: {e:#}")));
            }
            drop(session);
            ssh.close().await;
            return code;
        }
    };
    if json {
        let v = serde_json::json!({
            "target": host, "command": cmd, "outcome": if code == 0 { "ok" } else { "problem" },
            "details": details, "plans": session.plans, "executed": session.executed,
            "notes": session.notes, "exit-code": code,
        });
        println!("{v}");
    }
    drop(session);
    ssh.close().await;
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        c: RescueCommand,
    }

    #[test]
    fn parses() {
        use clap::CommandFactory;
        T::command().debug_assert();
        let t = T::try_parse_from([
            "t",
            "chroot",
            "rescue:2222",
            "--yes",
            "--",
            "update-initramfs",
            "-u",
        ])
        .unwrap();
        let RescueCommand::Chroot { common, command } = t.c else {
            panic!()
        };
        assert_eq!(common.host, "rescue:2222");
        assert!(common.yes);
        assert_eq!(command, ["update-initramfs", "-u"]);
        let t = T::try_parse_from([
            "t",
            "kexec",
            "h",
            "--initrd-flavour",
            "initramfs-tools",
            "--load-method",
            "file",
        ])
        .unwrap();
        let RescueCommand::Kexec(k) = t.c else {
            panic!()
        };
        assert_eq!(k.initrd_flavour, Some(Flavour::InitramfsTools));
        assert_eq!(k.load_method, LoadMethod::File);
        assert!(T::try_parse_from(["t", "chroot", "h"]).is_err());
        let c = Common {
            target: "/".into(),
            ..common_for("h")
        };
        assert!(c.settings("h".into()).is_err());
        assert_eq!(
            common_for("h").settings("h".into()).unwrap().target,
            "/mnt/portcullis"
        );
    }

    fn common_for(host: &str) -> Common {
        let t = T::try_parse_from(["t", "inspect", host]).unwrap();
        let RescueCommand::Inspect { common } = t.c else {
            panic!()
        };
        common
    }
}
