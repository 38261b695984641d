//! The outbound relay: for a server nobody can reach inbound (NAT, a home
//! router), the listener logs in *out* to an OpenSSH server the admin
//! controls, asks it to listen on its loopback port (`tcpip-forward`), and
//! serves every connection forwarded from there exactly as it serves a TCP
//! connection (the same admission table, limits and handler: see
//! [`crate::listener`]).
//!
//! Owns the `[relay]` config section, the relay's host-key pin (fail
//! closed: a relay whose key is not pinned gets no login and no forward),
//! and reconnecting with backoff. It never sees a passphrase: the relay
//! carries the admin's SSH session encrypted end to end, and the admin's
//! client pins this listener's own host key through it.
//!
//! Attacker-facing (the relay, and whoever answers at its address): no
//! `unwrap`, `expect`, indexing or `panic` here.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::error::{bail, Context, Result};
use crate::text::clip;
use russh::keys::PrivateKey;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

#[cfg(feature = "relay")]
mod client;
#[cfg(feature = "relay")]
pub use client::{pinned, session};

/// The address the relay listens on for us: its loopback only, so the
/// forwarded port is reachable from the relay machine alone.
pub const LISTEN_ON: &str = "127.0.0.1";
/// First and longest wait between attempts to reach the relay.
pub const BACKOFF: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(30));
/// Forwarded connections waiting for the listener to take them.
const QUEUE: usize = 16;

/// `[relay]` as written in the config file.
#[derive(Debug)]
pub struct RawRelay {
    host: String,
    port: Option<u16>,
    user: String,
    key: PathBuf,
    host_key_fingerprints: Vec<String>,
    remote_port: u16,
}

impl RawRelay {
    /// The keys `[relay]` may have.
    pub const KEYS: &'static [&'static str] = &[
        "host",
        "port",
        "user",
        "key",
        "host-key-fingerprints",
        "remote-port",
    ];

    /// Reads the section's keys (missing ones and wrong types are errors
    /// naming the line); [`RelaySettings::from_raw`] checks their values.
    pub(crate) fn read(f: &crate::config::fields::Fields<'_>) -> Result<Self> {
        let port = |key: &str| -> Result<Option<u16>> {
            Ok(f.int(key, 0, u16::MAX.into())?
                .and_then(|p| u16::try_from(p).ok()))
        };
        let pins = f
            .strs("host-key-fingerprints", "a list of SHA256:… fingerprints")?
            .ok_or_else(|| f.missing("host-key-fingerprints"))?;
        Ok(RawRelay {
            host: f.required_str("host")?.0.to_owned(),
            port: port("port")?,
            user: f.required_str("user")?.0.to_owned(),
            key: PathBuf::from(f.required_str("key")?.0),
            host_key_fingerprints: pins.into_iter().map(|(s, _)| s.to_owned()).collect(),
            remote_port: port("remote-port")?.ok_or_else(|| f.missing("remote-port"))?,
        })
    }
}

/// A validated `[relay]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// An address: most initramfs images have no DNS resolver, and
    /// resolving would cost the listener about 16 KB (zstd) for nothing.
    pub host: IpAddr,
    pub port: u16,
    pub user: String,
    /// The listener's own key for the relay login (not its host key).
    pub key: PathBuf,
    /// `SHA256:…` of the relay's host key(s); any other key is refused.
    pub fingerprints: Vec<String>,
    /// The port the relay listens on, on its loopback, for the admins.
    pub remote_port: u16,
}

impl RelaySettings {
    /// Validates the raw section; `file` is only used in messages.
    pub fn from_raw(file: &impl std::fmt::Display, raw: RawRelay) -> Result<Self> {
        let Ok(host) = raw.host.trim().parse::<IpAddr>() else {
            bail!(
                "{file}: relay.host = {}: give the relay's IP address (there is no DNS in the \
                 initramfs; `getent ahosts NAME` prints it)",
                clip(&raw.host)
            );
        };
        let port = raw.port.unwrap_or(22);
        if port == 0 {
            bail!("{file}: relay.port = 0: give the relay's SSH port (22)");
        }
        if !valid_user(&raw.user) {
            bail!(
                "{file}: relay.user = {}: a user name on the relay (letters, digits, '.', '_', '-')",
                clip(&raw.user)
            );
        }
        let key_shown = raw.key.display().to_string();
        if key_shown.chars().any(char::is_control) || !raw.key.is_absolute() {
            bail!(
                "{file}: relay.key = {}: give an absolute path without control characters",
                clip(&key_shown)
            );
        }
        if raw.key.as_os_str().len() > crate::text::MAX_PATH {
            bail!(
                "{file}: relay.key = {}: longer than {} bytes",
                clip(&key_shown),
                crate::text::MAX_PATH
            );
        }
        if raw.host_key_fingerprints.is_empty() {
            bail!(
                "{file}: relay.host-key-fingerprints = []: pin the relay's host key \
                 (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the relay)"
            );
        }
        for f in &raw.host_key_fingerprints {
            if !valid_fingerprint(f) {
                bail!(
                    "{file}: relay.host-key-fingerprints: {} is not a SHA256:… fingerprint \
                     (ssh-keygen -lf prints it)",
                    clip(f)
                );
            }
        }
        if raw.remote_port == 0 {
            bail!("{file}: relay.remote-port = 0: give the port the relay listens on for the admins (e.g. 2201)");
        }
        Ok(RelaySettings {
            host,
            port,
            user: raw.user,
            key: raw.key,
            fingerprints: raw.host_key_fingerprints,
            remote_port: raw.remote_port,
        })
    }

    /// Loads the relay key under `root`, so a missing, unreadable or
    /// group-readable key fails the image build. Returns its fingerprint.
    pub fn check_key(&self, root: &crate::sys::Root) -> Result<String> {
        let path = root.join(&self.key);
        if !path.exists() {
            bail!(
                "relay key {} does not exist; create it with: portcullisd keygen {} \
                 (and put {}.pub on the relay: docs/relay.md)",
                self.key.display(),
                self.key.display(),
                self.key.display()
            );
        }
        if crate::hostkey::world_or_group_readable(&path)? {
            bail!(
                "relay key {} is readable by group or others; chmod 600 it",
                path.display()
            );
        }
        let key = crate::hostkey::load(&path)
            .with_context(|| format!("relay key {}", self.key.display()))?;
        Ok(crate::authkeys::fingerprint(key.public_key()))
    }

    /// `user@host:port`, for messages.
    pub fn shown(&self) -> String {
        format!("{}@{}", self.user, SocketAddr::new(self.host, self.port))
    }
}

fn valid_user(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 32
        && !u.starts_with('-')
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_fingerprint(s: &str) -> bool {
    s.strip_prefix("SHA256:").is_some_and(|b| {
        b.len() == 43
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
    })
}

/// A connection the relay forwarded to us: its byte stream, and the address
/// the relay says it came from. That address is the relay's word: good for
/// logs and for the admission table, never for an authorized key's `from=`.
pub struct Relayed {
    pub stream: russh::ChannelStream<russh::client::Msg>,
    pub origin: SocketAddr,
}

/// Starts the relay task; forwarded connections arrive on the receiver.
/// The task stops when the receiver is dropped (the listener stopped) or
/// when the handle is aborted.
pub fn spawn(
    settings: RelaySettings,
    key: PrivateKey,
) -> (tokio::task::JoinHandle<()>, mpsc::Receiver<Relayed>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    #[cfg(feature = "relay")]
    let task = tokio::spawn(client::run(settings, std::sync::Arc::new(key), tx));
    // Unreachable: without the feature, config parsing refuses `[relay]`
    // (config::relay_built_in), so there are never settings to spawn with.
    #[cfg(not(feature = "relay"))]
    let task = tokio::spawn(async move { drop((settings, key, tx)) });
    (task, rx)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn raw(extra: &str) -> String {
        format!(
            "host = \"192.0.2.7\"\nuser = \"unlock\"\nkey = \"/etc/portcullis/relay_key\"\n\
             host-key-fingerprints = [\"SHA256:{}\"]\nremote-port = 2201\n{extra}",
            "A".repeat(43)
        )
    }

    fn parse(text: &str) -> Result<RelaySettings> {
        let t = crate::config::toml_subset::parse(text).map_err(|e| crate::err!("{e}"))?;
        let f = crate::config::fields::Fields::new(
            &"f.toml",
            "relay.".into(),
            "[relay]",
            &t,
            RawRelay::KEYS,
        )?;
        RelaySettings::from_raw(&"f.toml", RawRelay::read(&f)?)
    }

    #[test]
    fn a_full_section() {
        let s = parse(&raw("port = 2222\n")).unwrap();
        assert_eq!(s.port, 2222);
        assert_eq!(s.remote_port, 2201);
        assert_eq!(s.shown(), "unlock@192.0.2.7:2222");
        assert_eq!(parse(&raw("")).unwrap().port, 22);
    }

    #[test]
    fn mistakes_are_named() {
        let e = |text: &str| format!("{:#}", parse(text).unwrap_err());
        let m = e(&raw("").replace("192.0.2.7", "relay.example.net"));
        assert!(
            m.contains("relay.host = \"relay.example.net\": give the relay's IP address"),
            "{m}"
        );
        let v6 = parse(&raw("").replace("192.0.2.7", "2001:db8::7")).unwrap();
        assert_eq!(v6.shown(), "unlock@[2001:db8::7]:22");
        let m = e(&raw("").replace("unlock", "-oProxyCommand=x"));
        assert!(m.contains("relay.user"), "{m}");
        let m = e(&raw("").replace("/etc/portcullis/relay_key", "relay_key"));
        assert!(m.contains("relay.key") && m.contains("absolute"), "{m}");
        let m = e(&raw("").replace(&format!("SHA256:{}", "A".repeat(43)), "SHA256:short"));
        assert!(m.contains("not a SHA256"), "{m}");
        let m = e(&raw("").replace(&format!("\"SHA256:{}\"", "A".repeat(43)), ""));
        assert!(m.contains("pin the relay's host key"), "{m}");
        let m = e(&raw("").replace("2201", "0"));
        assert!(m.contains("relay.remote-port = 0"), "{m}");
        let m = e(&raw("remote-prot = 1\n"));
        assert!(m.contains("unknown field `remote-prot`"), "{m}");
        let m = e(&raw("").replace("remote-port = 2201\n", ""));
        assert!(m.contains("remote-port"), "{m}");
    }

    #[cfg(feature = "relay")]
    #[test]
    fn only_pinned_keys_pass() {
        let pins = vec![format!("SHA256:{}", "A".repeat(43))];
        assert!(pinned(&pins, &pins[0]));
        assert!(!pinned(&pins, &format!("SHA256:{}", "B".repeat(43))));
        assert!(!pinned(&[], &pins[0]));
    }
}
