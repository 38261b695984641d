//! The one set of SSH connection settings every client command takes
//! (`unlock`, `status`, `watch`, `rescue`), as plain values: the command
//! line fills it in the binary, the library never sees clap. Turning it
//! into [`Options`] for one target happens here and nowhere else.

use super::{known_hosts, HostKeyPolicy, Identity, Options, Target};
use std::path::PathBuf;
use std::time::Duration;

/// Connection settings as the admin gave them.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `--fingerprint`: this exact key (already checked to be well formed).
    pub fingerprint: Option<String>,
    /// `--known-hosts`: `None` means the command's default file.
    pub known_hosts: Option<PathBuf>,
    /// Pin an unknown key without asking.
    pub accept_new: bool,
    /// `-i`: key files; empty means ssh-agent, then `~/.ssh/id_*`.
    pub identity: Vec<PathBuf>,
    /// Use ssh-agent when `SSH_AUTH_SOCK` is set.
    pub agent: bool,
    /// `-l`: `None` means the inventory's, ssh_config's, or root.
    pub user: Option<String>,
    /// Keep retrying an unreachable or busy listener this long.
    pub wait: Option<Duration>,
    /// One connection attempt's timeout (never zero).
    pub timeout: Duration,
    /// One JSON record per host on stdout instead of text.
    pub json: bool,
    /// `--via [USER@]RELAY`: reach the listener through its outbound relay
    /// (`ssh -W 127.0.0.1:PORT RELAY`, docs/relay.md).
    pub via: Option<String>,
}

/// Why settings could not become [`Options`].
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("HOME is not set: pass --known-hosts FILE or --fingerprint")]
    NoHome,
    #[error(
        "{0}: with --via, give the port the listener asked the relay for: \
         HOST:PORT with PORT its relay.remote-port (port 22 is the relay's own SSH)"
    )]
    ViaNeedsPort(String),
}

impl Connection {
    /// The known-hosts file: `--known-hosts`, else `default_name` beside
    /// portcullis's own known_hosts (`known_hosts`, `rescue_known_hosts`).
    pub fn known_hosts_path(&self, default_name: &str) -> Result<PathBuf, SettingsError> {
        match &self.known_hosts {
            Some(p) => Ok(p.clone()),
            None => known_hosts::default_path()
                .map(|p| p.with_file_name(default_name))
                .ok_or(SettingsError::NoHome),
        }
    }

    /// Options for one target. `pinned` are the fingerprints from the
    /// inventory (several while a key is rotated); `--fingerprint` wins over
    /// them, and a key that matches it is pinned in the known-hosts file so
    /// the next run needs no flag. `ask` allows the host-key
    /// question on a terminal (one host at a time only).
    pub fn options(
        &self,
        target: Target,
        user: &str,
        identity: &[PathBuf],
        pinned: &[String],
        known_hosts_name: &str,
        ask: bool,
    ) -> Result<Options, SettingsError> {
        // Port 22 through the relay is the relay's own sshd: its key must
        // never be offered for pinning as the listener's.
        if self.via.is_some() && target.port == 22 {
            return Err(SettingsError::ViaNeedsPort(target.to_string()));
        }
        let host_key = match (&self.fingerprint, pinned) {
            (Some(fp), _) => match self.known_hosts_path(known_hosts_name) {
                Ok(path) => HostKeyPolicy::Confirm {
                    fingerprint: fp.clone(),
                    known_hosts: path,
                },
                // No file to pin into: check the key, pin nothing.
                Err(_) => HostKeyPolicy::Fingerprint(fp.clone()),
            },
            (None, []) => HostKeyPolicy::KnownHosts {
                path: self.known_hosts_path(known_hosts_name)?,
                accept_new: self.accept_new,
                ask,
            },
            // The file is read only for its `@revoked` lines.
            (None, fps) => HostKeyPolicy::Fingerprints {
                fingerprints: fps.to_vec(),
                revoked_in: self.known_hosts_path(known_hosts_name).ok(),
            },
        };
        Ok(Options {
            target,
            user: self.user.clone().unwrap_or_else(|| user.to_string()),
            host_key,
            identity: Identity {
                agent: self.agent,
                files: if self.identity.is_empty() {
                    identity.to_vec()
                } else {
                    self.identity.clone()
                },
            },
            connect_timeout: self.timeout,
            wait: self.wait,
            via: self.via.clone(),
        })
    }
}
