//! Command-line definitions for the admin's CLI (clap derive; doc comments
//! are the help text) and the code that runs each command. Its `main` only
//! parses, sets up logging and calls [`run_client`]. The listener's command
//! line lives beside its binary, in `src/bin/portcullisd/`.

use crate::client::{self, passphrase, ClientError, HostKeyPolicy, Identity, Options, Target};
use crate::protocol::{self, exit, Outcome};
use crate::text;
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Unlock LUKS-encrypted servers waiting in their initramfs, over SSH.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, after_help = EXIT_CODES, max_term_width = 80)]
pub struct ClientCli {
    #[command(subcommand)]
    pub command: ClientCommand,
}

const EXIT_CODES: &str = "Exit codes: 0 unlocked, 1 error, 2 wrong passphrase, \
3 host key unknown, 4 host key changed, 5 auth refused, 6 unreachable/timeout, \
7 nothing to unlock, 8 unlock failed on the server, 9 partly unlocked, \
10 no tries left, 11 (several hosts) one or more hosts failed.";

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Send the LUKS passphrase to one server, or to groups and hosts of an
    /// inventory in parallel (see docs/fleet.md).
    Unlock {
        /// HOST[:PORT] of one listener; or inventory groups and hosts,
        /// ssh_config aliases, `all`.
        #[arg(required = true, value_name = "TARGET")]
        targets: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
        /// Read the passphrase from standard input (one line).
        #[arg(long, conflicts_with = "passphrase_command")]
        passphrase_stdin: bool,
        /// Run this command (via sh -c) and use the first line it prints,
        /// e.g. "pass show servers/web1". With several hosts it replaces
        /// the inventory's passphrase sources.
        #[arg(long, value_name = "CMD")]
        passphrase_command: Option<String>,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Show what the server's initramfs is waiting to unlock.
    Status {
        /// HOST, HOST:PORT or [IPV6]:PORT of the initramfs listener.
        target: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Watch an inventory and unlock hosts waiting in their initramfs,
    /// unattended, with their command or file passphrase sources.
    Watch(WatchArgs),
    /// Drive a clear-text rescue system over SSH: unlock, mount, check,
    /// chroot, kexec into the main system (see docs/rescue.md).
    Rescue(crate::rescue::cli::RescueArgs),
    /// List, pin or forget initramfs host keys in portcullis's known-hosts
    /// file (docs/rotation.md).
    #[command(subcommand)]
    KnownHosts(KnownHostsCommand),
}

#[derive(Debug, Subcommand)]
pub enum KnownHostsCommand {
    /// Show every pin: line, host names, fingerprint.
    List {
        #[command(flatten)]
        file: KnownHostsFile,
        /// Print one JSON object per pin.
        #[arg(long)]
        json: bool,
    },
    /// Pin the key a listener offers (after you confirm it, or when it has
    /// --fingerprint), or the key in a .pub file, for HOST[:PORT].
    Pin {
        /// HOST, HOST:PORT or [IPV6]:PORT of the initramfs listener.
        target: String,
        /// Expected fingerprint (SHA256:...); pins without asking on a match.
        #[arg(long, value_name = "SHA256:...")]
        fingerprint: Option<String>,
        /// Pin the key in this public-key file (host_key.pub from
        /// `portcullisd keygen`) without contacting the listener.
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Keep the host's other pins (overlap while a key is rotated);
        /// by default the new key replaces them.
        #[arg(long)]
        add: bool,
        #[command(flatten)]
        file: KnownHostsFile,
        /// Timeout for contacting the listener.
        #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Remove every pin for HOST[:PORT].
    Forget {
        /// HOST, HOST:PORT or [IPV6]:PORT.
        target: String,
        #[command(flatten)]
        file: KnownHostsFile,
    },
}

#[derive(Debug, Args)]
pub struct KnownHostsFile {
    /// Known-hosts file for initramfs keys
    /// [default: ~/.config/portcullis/known_hosts].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
}

/// Options for several hosts at once.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Inventory of hosts and groups
    /// [default: ~/.config/portcullis/inventory.toml if it exists].
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// ssh_config for aliases [default: the inventory's, or ~/.ssh/config].
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Hosts talked to at once (128 was fastest for 500 hosts in
    /// benches/fleet.sh; memory grows with it).
    #[arg(long, value_name = "N", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub parallel: u32,
    /// Do not wait for the systems to come up after unlocking.
    #[arg(long)]
    pub no_wait_up: bool,
    /// How long to wait for a system to answer after unlocking.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub up_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Groups or hosts to watch [default: all].
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Inventory of hosts and groups
    /// [default: ~/.config/portcullis/inventory.toml].
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// Time between two looks at the same host.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Wrong passphrases before a host is left alone until it reboots.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_wrong: u32,
    /// First pause after a failed attempt (doubles each time, up to 1h).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = parse_duration)]
    pub backoff: Duration,
    /// How long approve-command may take to decide.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub approve_timeout: Duration,
    /// Log the time until each system answers, up to this long.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub up_timeout: Duration,
    /// Do not wait for the systems after unlocking.
    #[arg(long)]
    pub no_wait_up: bool,
    /// Hosts talked to at once.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub parallel: u32,
    /// Timeout for one connection attempt.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Do not use ssh-agent even when SSH_AUTH_SOCK is set.
    #[arg(long)]
    pub no_agent: bool,
}

#[derive(Debug, Args)]
pub struct ConnArgs {
    /// Expected host key fingerprint (SHA256:...) of the initramfs listener.
    #[arg(long, value_name = "SHA256:...")]
    pub fingerprint: Option<String>,
    /// Known-hosts file for initramfs keys
    /// [default: ~/.config/portcullis/known_hosts].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Pin an unknown host key without asking (first contact only; a
    /// changed key is always refused).
    #[arg(long)]
    pub accept_new: bool,
    /// Private key file (repeatable); default: ssh-agent, then ~/.ssh/id_*.
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,
    /// Do not use ssh-agent even when SSH_AUTH_SOCK is set.
    #[arg(long)]
    pub no_agent: bool,
    /// User name to log in as (the listener accepts any; keys decide)
    /// [default: root, or the inventory's].
    #[arg(short = 'l', long)]
    pub user: Option<String>,
    /// Keep retrying while the listener does not answer (server still
    /// booting) or is busy, for up to DURATION (e.g. 300, 90s, 10m).
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "10m",
          value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Timeout for one connection attempt.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print JSON (one object per host) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses `90`, `90s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is not a duration (e.g. 30, 90s, 10m, 1h)"))
}

impl ConnArgs {
    fn options(&self, target: &str) -> Result<Options> {
        let target = Target::parse(target)?;
        let known_hosts = self
            .known_hosts
            .clone()
            .or_else(client::known_hosts::default_path);
        let host_key = match (&self.fingerprint, known_hosts) {
            (Some(fp), _) if !crate::fleet::inventory::valid_fingerprint(fp) => anyhow::bail!(
                "--fingerprint {}: expected SHA256: and 43 base64 characters, as \
                 `portcullisd keygen` or `ssh-keygen -lf KEY.pub` prints it",
                crate::text::clip(fp)
            ),
            // A match is pinned, so the next run needs no flag.
            (Some(fp), Some(path)) => HostKeyPolicy::Confirm {
                fingerprint: fp.clone(),
                known_hosts: path,
            },
            (Some(fp), None) => HostKeyPolicy::Fingerprint(fp.clone()),
            (None, Some(path)) => HostKeyPolicy::KnownHosts {
                path,
                accept_new: self.accept_new,
                ask: true,
            },
            (None, None) => {
                anyhow::bail!("HOME is not set: pass --known-hosts FILE or --fingerprint")
            }
        };
        Ok(Options {
            target,
            user: self.user.clone().unwrap_or_else(|| "root".into()),
            host_key,
            identity: Identity {
                agent: !self.no_agent,
                files: self.identity.clone(),
            },
            connect_timeout: self.timeout,
            wait: self.wait,
        })
    }
}

/// Prints a failure (text or JSON) and returns its exit code.
pub(crate) fn report_error(target: &str, json: bool, e: &ClientError) -> u8 {
    if json {
        let v = serde_json::json!({
            "target": target,
            "outcome": e.kind(),
            "error": e.to_string(),
            "exit-code": e.exit_code(),
        });
        println!("{v}");
    } else {
        // Errors can quote the server (its messages, a bad reply).
        eprintln!("error: {}", text::line(&format!("{target}: {e}")));
    }
    e.exit_code()
}

/// Runs the admin CLI; returns the process exit code.
pub fn run_client(cli: ClientCli) -> u8 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return exit::ERROR;
        }
    };
    rt.block_on(async move {
        match cli.command {
            ClientCommand::Unlock {
                targets,
                conn,
                passphrase_stdin,
                passphrase_command,
                fleet,
            } => {
                let source = match (passphrase_stdin, passphrase_command) {
                    (_, Some(c)) => passphrase::Source::Command(c),
                    (true, None) => passphrase::Source::Stdin,
                    (false, None) => passphrase::Source::Prompt,
                };
                match crate::fleet::cmd::route(&targets, &fleet) {
                    Ok(crate::fleet::cmd::Route::One(target)) => {
                        cmd_unlock(&target, &conn, &source).await
                    }
                    Ok(crate::fleet::cmd::Route::Many(inv)) => {
                        crate::fleet::cmd::unlock(&inv, &targets, &conn, &source, &fleet).await
                    }
                    Err(e) => crate::fleet::cmd::setup_error(&targets, conn.json, &e),
                }
            }
            ClientCommand::Status { target, conn } => cmd_status(&target, &conn).await,
            ClientCommand::Watch(args) => crate::fleet::cmd::watch(&args).await,
            ClientCommand::Rescue(args) => crate::rescue::cli::run(args).await,
            ClientCommand::KnownHosts(c) => cmd_known_hosts(c).await,
        }
    })
}

/// `known-hosts list|pin|forget`: bodies in [`client::pins`].
async fn cmd_known_hosts(c: KnownHostsCommand) -> u8 {
    let file = match &c {
        KnownHostsCommand::List { file, .. }
        | KnownHostsCommand::Pin { file, .. }
        | KnownHostsCommand::Forget { file, .. } => file.known_hosts.clone(),
    };
    let Some(path) = file.or_else(client::known_hosts::default_path) else {
        eprintln!("error: HOME is not set: pass --known-hosts FILE");
        return exit::ERROR;
    };
    let r = match c {
        KnownHostsCommand::List { json, .. } => client::pins::list(&path, json)
            .map(|t| t.trim_end().to_string())
            .map_err(ClientError::Other),
        KnownHostsCommand::Forget { target, .. } => Target::parse(&target)
            .and_then(|t| client::pins::forget(&path, &t))
            .map_err(ClientError::Other),
        KnownHostsCommand::Pin {
            target,
            fingerprint,
            key,
            add,
            timeout,
            ..
        } => match (Target::parse(&target), &fingerprint) {
            (Err(e), _) => Err(ClientError::Other(e)),
            (_, Some(fp)) if !crate::fleet::inventory::valid_fingerprint(fp) => {
                Err(ClientError::Other(anyhow::anyhow!(
                    "--fingerprint {}: expected SHA256: and 43 base64 characters, as \
                     `portcullisd keygen` or `ssh-keygen -lf KEY.pub` prints it",
                    crate::text::clip(fp)
                )))
            }
            (Ok(t), _) => {
                let req = client::pins::PinRequest {
                    target: t,
                    known_hosts: path,
                    fingerprint,
                    key_file: key,
                    keep: if add {
                        client::pins::Keep::Add
                    } else {
                        client::pins::Keep::Replace
                    },
                    timeout,
                };
                client::pins::pin(&req).await
            }
        },
    };
    match r {
        Ok(text) => {
            if !text.is_empty() {
                println!("{}", text);
            }
            exit::UNLOCKED
        }
        Err(e) => {
            eprintln!("error: {}", text::line(&e.to_string()));
            e.exit_code()
        }
    }
}

async fn cmd_unlock(target: &str, conn: &ConnArgs, source: &passphrase::Source) -> u8 {
    let opts = match conn.options(target) {
        Ok(o) => o,
        Err(e) => return report_error(target, conn.json, &ClientError::Other(e)),
    };
    let target = opts.target.to_string();
    // Ask first, so `--wait` can run unattended once the passphrase is typed.
    let pass = match passphrase::read(source, &target) {
        Ok(p) => p,
        Err(e) => return report_error(&target, conn.json, &ClientError::Other(e)),
    };
    let reply = match client::unlock(&opts, &pass).await {
        Ok(r) => r,
        Err(e) => return report_error(&target, conn.json, &e),
    };
    drop(pass);
    let code = reply.outcome.exit_code();
    if conn.json {
        let v = serde_json::json!({
            "target": target,
            "outcome": reply.outcome,
            "volumes": reply.volumes,
            "message": reply.message,
            "exit-code": code,
        });
        println!("{v}");
    } else if reply.outcome == Outcome::Unlocked {
        println!("{}", unlock_line(&target, &reply));
    } else {
        eprintln!("{}", unlock_line(&target, &reply));
    }
    code
}

/// The human line for an unlock reply; volume names and the message come
/// from the server, so control characters are shown escaped.
fn unlock_line(target: &str, reply: &protocol::UnlockReply) -> String {
    text::line(&format!("{target}: {}", protocol::describe_unlock(reply))).into_owned()
}

/// The human status table, terminal-safe like [`unlock_line`].
fn status_text(volumes: &[protocol::VolumeInfo]) -> String {
    text::block(&protocol::describe_status(volumes)).into_owned()
}

async fn cmd_status(target: &str, conn: &ConnArgs) -> u8 {
    let opts = match conn.options(target) {
        Ok(o) => o,
        Err(e) => return report_error(target, conn.json, &ClientError::Other(e)),
    };
    let target = opts.target.to_string();
    match client::status(&opts).await {
        Ok(s) => {
            if conn.json {
                let v = serde_json::json!({ "target": target, "volumes": s.volumes });
                println!("{v}");
            } else {
                print!("{}", status_text(&s.volumes));
            }
            exit::UNLOCKED
        }
        Err(e) => report_error(&target, conn.json, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clis_are_consistent() {
        ClientCli::command().debug_assert();
    }

    #[test]
    fn server_text_is_shown_escaped() {
        let vol = |name: &str| protocol::VolumeInfo {
            name: name.into(),
            device: "/dev/vda2\x1b[8m".into(),
            backend: "cryptsetup".into(),
            state: protocol::VolumeState::Open,
            tries_left: None,
        };
        let reply = protocol::UnlockReply {
            version: 1,
            outcome: Outcome::Unlocked,
            volumes: vec![vol("root\x1b]0;pwned\x07")],
            message: Some("bye\x1b[2J".into()),
        };
        let l = unlock_line("h:22", &reply);
        assert!(!l.contains('\x1b') && !l.contains('\x07'), "{l:?}");
        assert!(l.contains("root\\x1b]0;pwned\\x07"), "{l}");
        let s = status_text(&[vol("data\u{9b}2J")]);
        assert!(!s.contains('\x1b') && !s.contains('\u{9b}'), "{s:?}");
        assert!(s.contains("data\\x9b2J") && s.ends_with('\n'), "{s}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("m").is_err());
    }
}
