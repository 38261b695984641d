//! Asking an SSH server which host key it holds, without logging in: the key
//! exchange runs up to the host-key check (russh verifies the server's
//! signature first, so the key is proven, not just claimed), then we hang up.
//!
//! Used to tell the initramfs listener from the booted system on the same
//! address, and to notice when the system is up.

use crate::authkeys::fingerprint;
use crate::client::{known_hosts, Target};
use russh::keys::PublicKey;

/// Keys accepted as "the booted system", with where the pins came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemPins {
    pub fingerprints: Vec<String>,
    /// `system-fingerprint` or a known_hosts path, for messages.
    pub from: String,
}

impl SystemPins {
    pub fn matches(&self, key: &PublicKey) -> bool {
        let fp = fingerprint(key);
        self.fingerprints.contains(&fp)
    }

    /// Pins for `target` in an OpenSSH known_hosts file (hashed `|1|` names,
    /// `host` for port 22 and `[host]:port`, as ssh writes them); `None`
    /// when it lists none or the file cannot be read. Keys marked
    /// `@revoked` are left out, so a revoked system key never matches. The
    /// system key belongs there, while initramfs keys live in portcullis's
    /// own file.
    pub fn from_known_hosts(path: &std::path::Path, target: &Target) -> Option<Self> {
        let text = known_hosts::read(path).ok()?;
        let lines = known_hosts::parse(&text).ok()?;
        let id = known_hosts::host_id(&target.host, target.port);
        let fingerprints: Vec<String> = known_hosts::keys_for(&lines, &id)
            .iter()
            .filter(|(_, k)| known_hosts::revoked(&lines, k).is_none())
            .map(|(_, k)| fingerprint(k))
            .collect();
        (!fingerprints.is_empty()).then(|| SystemPins {
            fingerprints,
            from: path.display().to_string(),
        })
    }
}

/// Connects to `target` and returns the host key it proves it holds (kept
/// in the client module, which `known-hosts pin` uses too).
pub use crate::client::probe::host_key;
