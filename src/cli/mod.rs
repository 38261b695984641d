//! The admin CLI's argument definitions (clap derive; doc comments are the
//! help text), and nothing else: a leaf. It imports nothing from the crate
//! but the exit-code table its help prints; the binary (`src/main.rs`)
//! turns these structs into the library's plain settings. [`command`] is
//! what man-page and completion generators use.

// Reads what the admin typed: no `unwrap`, `expect`, indexing or `panic`.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod preflight;
pub mod rescue;

use crate::protocol::exit;
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Unlock LUKS-encrypted servers waiting in their initramfs, over SSH.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, after_help = exit::help(&[]), max_term_width = 80)]
pub struct ClientCli {
    #[command(subcommand)]
    pub command: ClientCommand,
}

/// The client's whole command line, for generators (man pages,
/// completions) and for `portcullis completions`.
pub fn command() -> clap::Command {
    ClientCli::command()
}

const TARGET_HELP: &str = "HOST, HOST:PORT, [IPV6]:PORT, USER@HOST[:PORT], \
ssh://USER@HOST:PORT, an ssh_config alias, an inventory host or group, or \
`all`. One host gives the single-host answer and exit codes however it is \
named; several give one record per host and exit 11 when one failed (see \
docs/fleet.md).";

const TARGET_SHORT: &str = "Host, HOST:PORT, USER@HOST, alias, inventory host or group (--help)";

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Send the LUKS passphrase to one server, or to groups and hosts of an
    /// inventory in parallel (see docs/fleet.md).
    Unlock {
        #[arg(required = true, value_name = "TARGET", help = TARGET_SHORT, long_help = TARGET_HELP)]
        targets: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        via: ViaArgs,
        #[command(flatten)]
        pass: PassArgs,
        #[command(flatten)]
        lookup: LookupArgs,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Show what the server's initramfs is waiting to unlock.
    Status {
        #[arg(required = true, value_name = "TARGET", help = TARGET_SHORT, long_help = TARGET_HELP)]
        targets: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        via: ViaArgs,
        #[command(flatten)]
        lookup: LookupArgs,
    },
    /// Watch an inventory and unlock hosts waiting in their initramfs,
    /// unattended, with their command or file passphrase sources.
    Watch(WatchArgs),
    /// Will remote unlock work after the next reboot? Checks each server's
    /// boot image over its running system's SSH (see docs/preflight.md).
    ///
    /// The check on the server is its own command, `portcullis-preflight`
    /// (`man 8 portcullis-preflight`; this page is `man 1
    /// portcullis-preflight`).
    Preflight(preflight::PreflightArgs),
    /// Drive a clear-text rescue system over SSH: unlock, mount, check,
    /// chroot, kexec into the main system (see docs/rescue.md).
    Rescue(rescue::RescueArgs),
    /// List, pin or forget initramfs host keys in portcullis's known-hosts
    /// file (docs/rotation.md).
    #[command(subcommand)]
    KnownHosts(KnownHostsCommand),
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// `portcullis known-hosts …`: the pins of initramfs host keys.
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
        /// The initramfs listener: an inventory host, an ssh_config alias,
        /// HOST, HOST:PORT or [IPV6]:PORT.
        target: String,
        #[command(flatten)]
        lookup: LookupArgs,
        /// Expected fingerprint (SHA256:...); pins without asking on a match.
        #[arg(long, value_name = "SHA256:...", value_parser = fingerprint)]
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
        #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = positive_duration)]
        timeout: Duration,
    },
    /// Remove every pin for HOST[:PORT].
    Forget {
        /// An inventory host, an ssh_config alias, HOST, HOST:PORT or
        /// [IPV6]:PORT.
        target: String,
        #[command(flatten)]
        lookup: LookupArgs,
        #[command(flatten)]
        file: KnownHostsFile,
    },
}

/// The known-hosts file `known-hosts` works on.
#[derive(Debug, Args)]
pub struct KnownHostsFile {
    /// Known-hosts file for initramfs keys
    /// [default: ~/.config/portcullis/known_hosts].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
}

/// Shells `portcullis completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Where names are looked up.
#[derive(Debug, Args)]
pub struct LookupArgs {
    /// Inventory of hosts and groups
    /// [default: ~/.config/portcullis/inventory.toml if it exists].
    #[arg(long, value_name = "FILE")]
    pub inventory: Option<PathBuf>,
    /// ssh_config for aliases [default: the inventory's, or ~/.ssh/config].
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
}

/// Options for several hosts at once.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Hosts talked to at once (for 500 hosts in benches/fleet.sh, 128 is
    /// within 5% of 256's time at three quarters of its memory; 64 is 25%
    /// slower).
    #[arg(long, value_name = "N", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub parallel: u32,
    /// Do not wait for the systems to come up after unlocking.
    #[arg(long)]
    pub no_wait_up: bool,
    /// How long to wait for a system to answer after unlocking.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = positive_duration)]
    pub up_timeout: Duration,
}

/// Where the passphrase comes from [default: a prompt on the terminal].
#[derive(Debug, Args)]
pub struct PassArgs {
    /// Read the passphrase from standard input (one line).
    #[arg(long, conflicts_with_all = ["passphrase_command", "passphrase_file"])]
    pub passphrase_stdin: bool,
    /// Run this command (via sh -c) and use the first line it prints,
    /// e.g. "pass show servers/web1". With several hosts it replaces
    /// the inventory's passphrase sources.
    #[arg(long, value_name = "CMD", conflicts_with = "passphrase_file")]
    pub passphrase_command: Option<String>,
    /// Read the passphrase from this file (mode 0600, first line).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
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
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    pub interval: Duration,
    /// Wrong passphrases before a host is left alone until it reboots.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_wrong: u32,
    /// First pause after a failed attempt (doubles each time, up to 1h).
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = positive_duration)]
    pub backoff: Duration,
    /// How long approve-command may take to decide.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = positive_duration)]
    pub approve_timeout: Duration,
    /// Log the time until each system answers, up to this long.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = positive_duration)]
    pub up_timeout: Duration,
    /// Do not wait for the systems after unlocking.
    #[arg(long)]
    pub no_wait_up: bool,
    /// Hosts talked to at once.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub parallel: u32,
    /// Timeout for one connection attempt.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Do not use ssh-agent even when SSH_AUTH_SOCK is set.
    #[arg(long)]
    pub no_agent: bool,
}

/// The one set of SSH connection arguments (unlock, status, rescue).
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// Expected host key fingerprint (SHA256:...), as `ssh-keygen -lf`
    /// or `portcullisd keygen` prints it.
    #[arg(long, value_name = "SHA256:...", value_parser = fingerprint)]
    pub fingerprint: Option<String>,
    /// Known-hosts file for these keys
    /// [default: ~/.config/portcullis/known_hosts; rescue_known_hosts for
    /// rescue].
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
    /// User name to log in as [default: USER@ in the target, the
    /// inventory's or ssh_config's, else root].
    #[arg(short = 'l', long)]
    pub user: Option<String>,
    /// Keep retrying while the server does not answer (still booting) or
    /// is busy, for up to DURATION (e.g. --wait=10m, --wait 90s). The
    /// value is required, so a target after it is never taken for one.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    pub wait: Option<Duration>,
    /// Timeout for one connection attempt (more than zero).
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Print JSON (one object per host) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--via`, for the commands that talk to initramfs listeners (`unlock`,
/// `status`; not `rescue`, whose systems run a stock sshd).
#[derive(Debug, Args)]
pub struct ViaArgs {
    /// Reach the listener through its outbound relay: runs
    /// `ssh -W 127.0.0.1:PORT RELAY` (PORT from HOST:PORT, the listener's
    /// relay.remote-port) and checks HOST's pinned key end to end
    /// (docs/relay.md).
    #[arg(long, value_name = "[USER@]RELAY", value_parser = relay_name)]
    pub via: Option<String>,
}

/// Why a `--via` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a relay for ssh: write [USER@]HOST or an ssh_config Host alias")]
pub struct RelayNameError(String);

/// A relay destination handed to `ssh`: never an option (`-oProxyCommand=…`),
/// no spaces or control characters.
pub fn relay_name(s: &str) -> Result<String, RelayNameError> {
    let ok = !s.is_empty()
        && !s.starts_with('-')
        && s.len() <= 255
        && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(s.to_string())
    } else {
        Err(RelayNameError(s.chars().take(60).collect()))
    }
}

/// Why a duration on the command line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("{0:?} is not a duration (e.g. 90, 500ms, 90s, 10m, 1h30m)")]
    Malformed(String),
    #[error("{0:?}: must be more than zero")]
    Zero(String),
}

/// Parses `90` (seconds), `500ms`, `90s`, `10m`, `1h30m` (humantime).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let shown = || s.chars().take(40).collect::<String>();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| DurationError::Malformed(shown()));
    }
    humantime::parse_duration(s).map_err(|_| DurationError::Malformed(shown()))
}

/// A duration that is more than zero: a zero timeout or wait would only
/// fail at once with a confusing message.
pub fn positive_duration(s: &str) -> Result<Duration, DurationError> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(DurationError::Zero(s.chars().take(40).collect()));
    }
    Ok(d)
}

/// Why a `--fingerprint` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a host key fingerprint: expected SHA256: and 43 base64 \
     characters, as `ssh-keygen -lf` prints it"
)]
pub struct FingerprintError(String);

/// `SHA256:` and 43 unpadded base64 characters; anything else is a usage
/// error (exit 1), never a "host key changed".
pub fn fingerprint(s: &str) -> Result<String, FingerprintError> {
    let ok = s.strip_prefix("SHA256:").is_some_and(|b| {
        b.len() == 43
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
    });
    if ok {
        Ok(s.to_string())
    } else {
        Err(FingerprintError(s.chars().take(60).collect()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn clis_are_consistent() {
        ClientCli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(positive_duration("0"), Err(DurationError::Zero("0".into())));
        assert!(positive_duration("0s").is_err());
    }

    #[test]
    fn wait_never_swallows_a_target() {
        let p = |args: &[&str]| ClientCli::try_parse_from(args);
        // A host after --wait is not a duration: usage error, not a host.
        let e = p(&["portcullis", "status", "--wait", "web1"]).unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
        let ok = p(&["portcullis", "status", "--wait", "90s", "web1"]).unwrap();
        let ClientCommand::Status { targets, conn, .. } = ok.command else {
            unreachable!()
        };
        assert_eq!(targets, ["web1"]);
        assert_eq!(conn.wait, Some(Duration::from_secs(90)));
        assert!(p(&["portcullis", "status", "web1", "--timeout", "0"]).is_err());
    }

    #[test]
    fn fingerprints_are_checked_when_parsed() {
        assert!(fingerprint("SHA256:abc").is_err());
        let good = format!("SHA256:{}", "A".repeat(43));
        assert_eq!(fingerprint(&good).unwrap(), good);
    }

    #[test]
    fn help_lists_every_exit_code() {
        let help = command().render_long_help().to_string();
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for (code, meaning) in exit::TABLE {
            let want = format!("{code} {meaning}");
            assert!(flat.contains(&want), "{want:?} missing: {flat}");
        }
    }
}
