//! Asking an SSH server which host key it holds, without logging in: the
//! key exchange runs up to the host-key check (russh verifies the server's
//! signature first, so the key is proven, not just claimed), then we hang
//! up. Used by `known-hosts pin` and by the fleet code to tell the initramfs
//! listener from the booted system.

use super::Target;
use russh::keys::PublicKey;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
