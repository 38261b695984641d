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

/// Why no host key was learnt; each names the target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// TCP connect failed (refused, unreachable, no such host).
    #[error("{target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("{target}: SSH handshake failed: {reason}")]
    Handshake { target: String, reason: String },
    #[error("{target}: the server offered no plain host key")]
    NoPlainKey { target: String },
    #[error("{target}: timed out after {after:?}")]
    Timeout { target: String, after: Duration },
}

/// Connects to `target` and returns the host key it proves it holds.
/// `Err` carries why nothing answered (refused, timeout, not SSH).
pub async fn host_key(target: &Target, timeout: Duration) -> Result<PublicKey, ProbeError> {
    let slot = Arc::new(Mutex::new(None));
    let config = Arc::new(russh::client::Config {
        inactivity_timeout: Some(timeout),
        ..Default::default()
    });
    let handler = Grab(slot.clone());
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| ProbeError::Connect {
                target: target.to_string(),
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        // Always an error: the handler refuses every key once it has it.
        let r = russh::client::connect_stream(config, tcp, handler).await;
        let got = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (got, r) {
            (Some(k), _) => Ok(k),
            (None, Err(e)) => Err(ProbeError::Handshake {
                target: target.to_string(),
                reason: e.to_string(),
            }),
            (None, Ok(_)) => Err(ProbeError::NoPlainKey {
                target: target.to_string(),
            }),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::Timeout {
            target: target.to_string(),
            after: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error_naming_the_target() {
        // A port just freed: nothing listens there.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let t = Target {
            host: "127.0.0.1".into(),
            port,
        };
        let e = host_key(&t, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(&e, ProbeError::Connect { target, .. } if *target == t.to_string()));
        assert!(
            e.to_string().starts_with(&format!("127.0.0.1:{port}: ")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_server_that_is_not_ssh_fails_the_handshake() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        // Accepts, then hangs up without a banner.
        tokio::spawn(async move {
            let _ = l.accept().await;
        });
        let t = Target {
            host: "127.0.0.1".into(),
            port,
        };
        let e = host_key(&t, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, ProbeError::Handshake { .. }), "{e:?}");
        assert!(e.to_string().contains(": SSH handshake failed: "), "{e}");
    }
}
