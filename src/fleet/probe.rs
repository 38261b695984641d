//! Asking an SSH server which host key it holds, without logging in: the key
//! exchange runs up to the host-key check (russh verifies the server's
//! signature first, so the key is proven, not just claimed), then we hang up.
//!
//! Used to tell the initramfs listener from the booted system on the same
//! address, and to notice when the system is up.

use crate::authkeys::fingerprint;
use crate::client::Target;
use russh::keys::PublicKey;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

    /// Pins for `target` in an OpenSSH known_hosts file (hashed names and
    /// `[host]:port` handled by russh); `None` when it lists none. The system
    /// key belongs there, while initramfs keys live in portcullis's own file.
    pub fn from_known_hosts(path: &std::path::Path, target: &Target) -> Option<Self> {
        let keys =
            russh::keys::known_hosts::known_host_keys_path(&target.host, target.port, path).ok()?;
        let fingerprints: Vec<String> = keys.iter().map(|(_, k)| fingerprint(k)).collect();
        (!fingerprints.is_empty()).then(|| SystemPins {
            fingerprints,
            from: path.display().to_string(),
        })
    }
}

/// The russh handler: remembers the (signature-checked) key and refuses to
/// go further.
struct Grab(Arc<Mutex<Option<PublicKey>>>);

impl russh::client::Handler for Grab {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        if let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
        }
        Ok(false)
    }
}

/// Connects to `target` and returns the host key it proves it holds.
/// `Err` carries why nothing answered (refused, timeout, not SSH).
pub async fn host_key(target: &Target, timeout: Duration) -> Result<PublicKey, String> {
    let slot = Arc::new(Mutex::new(None));
    let config = Arc::new(russh::client::Config {
        inactivity_timeout: Some(timeout),
        ..Default::default()
    });
    let handler = Grab(slot.clone());
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("{target}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        // Always an error: the handler refuses every key once it has it.
        let r = russh::client::connect_stream(config, tcp, handler).await;
        let got = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (got, r) {
            (Some(k), _) => Ok(k),
            (None, Err(e)) => Err(format!("{target}: SSH handshake failed: {e}")),
            (None, Ok(_)) => Err(format!("{target}: the server offered no plain host key")),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("{target}: timed out after {timeout:?}")),
    }
}
