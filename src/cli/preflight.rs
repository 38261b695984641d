//! `portcullis preflight`'s arguments (clap derive; doc comments are the
//! help text). A leaf like the rest of `cli`.

use super::{positive_duration, LookupArgs};
use crate::protocol::exit;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

const TARGET_HELP: &str = "HOST, HOST:PORT, USER@HOST, ssh://USER@HOST:PORT, an \
ssh_config alias, an inventory host or group, or `all`, named as for `unlock`. \
The check runs over the running system's SSH: the inventory's system-address \
and system-port (default: the listener's address, port 22), with the stock ssh; \
--ssh-config (or the inventory's ssh-config) is given to ssh as -F.";

/// Will remote unlock work after the next reboot? Runs the server's check
/// over its running system's SSH and adds what only this workstation knows.
#[derive(Debug, Args)]
#[command(after_help = exit::help(&[
    exit::UNLOCKED, exit::ERROR, exit::HOST_KEY_UNKNOWN, exit::HOST_KEY_CHANGED,
    exit::AUTH_REFUSED, exit::UNREACHABLE, exit::SOME_HOSTS_FAILED,
    exit::PREFLIGHT_FAIL, exit::PREFLIGHT_WARN,
]))]
pub struct PreflightArgs {
    #[arg(required = true, value_name = "TARGET", help = super::TARGET_SHORT, long_help = TARGET_HELP)]
    pub targets: Vec<String>,
    #[command(flatten)]
    pub lookup: LookupArgs,
    /// Login on the running system [default: USER@ in the target, else
    /// ssh's own: ssh_config's User or your name]. Not root: the check runs
    /// through `sudo -n`.
    #[arg(short = 'l', long = "login", value_name = "USER")]
    pub login: Option<String>,
    /// Private key file you unlock with (repeatable), checked against the
    /// image's authorized_keys [default: the inventory's, else ssh-agent and
    /// ~/.ssh/id_*, as unlock offers them].
    #[arg(short = 'i', long = "identity", value_name = "FILE")]
    pub identity: Vec<PathBuf>,
    /// Leave ssh-agent's keys out of the client-key check.
    #[arg(long)]
    pub no_agent: bool,
    /// Known-hosts file with the initramfs pins
    /// [default: ~/.config/portcullis/known_hosts].
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Check the image of every installed kernel, not only the default
    /// boot entry's.
    #[arg(long)]
    pub all_kernels: bool,
    /// Check this image file on the server instead of the default boot
    /// entry's.
    #[arg(long, value_name = "FILE", conflicts_with = "all_kernels")]
    pub image: Option<String>,
    /// More ssh options (repeatable), e.g. -o ProxyJump=bastion; they
    /// cannot turn host-key checking or batch mode off.
    #[arg(short = 'o', long = "ssh-option", value_name = "OPTION")]
    pub ssh_options: Vec<String>,
    /// Timeout for ssh's connection to the running system.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = positive_duration)]
    pub timeout: Duration,
    /// Hosts checked at once.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub parallel: u32,
    /// Print JSON (one object per host, the server's report inside)
    /// instead of the checklist.
    #[arg(long)]
    pub json: bool,
}
