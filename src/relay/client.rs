//! The relay's SSH client: logs in to the relay, pins its host key, asks
//! for the forward and hands each forwarded channel to the listener;
//! reconnects with backoff. Compiled with the `relay` feature only (the
//! default): it is most of what the relay adds to the listener (about 54 KB
//! zstd), which a size-focused build (`--no-default-features`) leaves out.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::{RelaySettings, Relayed, BACKOFF, LISTEN_ON};
use crate::error::{bail, Context, Result};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A session that lasted this long was healthy: the next wait starts short.
const HEALTHY: Duration = Duration::from_secs(60);
/// Resolving, connecting and the SSH handshake, each.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Reconnects until the listener stops, waiting [`BACKOFF`] between tries.
pub(super) async fn run(settings: RelaySettings, key: Arc<PrivateKey>, tx: mpsc::Sender<Relayed>) {
    let mut wait = BACKOFF.0;
    let relay = settings.shown();
    loop {
        let started = tokio::time::Instant::now();
        match session(&settings, &key, &tx).await {
            Ok(()) => tracing::warn!("relay {relay}: connection lost; reconnecting"),
            Err(e) => tracing::warn!("relay {relay}: {e:#}; retrying in {}s", wait.as_secs()),
        }
        if tx.is_closed() {
            return;
        }
        if started.elapsed() >= HEALTHY {
            wait = BACKOFF.0;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(BACKOFF.1);
    }
}

/// One login at the relay: connect, check its host key against the pins,
/// authenticate, ask for the forward, then hand over forwarded connections
/// until the connection ends (`Ok`). Every failure before that is an `Err`
/// saying what to fix. [`spawn`] runs this again and again.
pub async fn session(
    s: &RelaySettings,
    key: &Arc<PrivateKey>,
    tx: &mpsc::Sender<Relayed>,
) -> Result<()> {
    let tcp = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio::net::TcpStream::connect(SocketAddr::new(s.host, s.port)),
    )
    .await
    .map_err(|_| crate::err!("connecting: timed out (network not up yet?)"))?
    .context("connecting")?;
    let _ = tcp.set_nodelay(true);
    let verdict = Arc::new(Mutex::new(None));
    let (closed_tx, closed_rx) = oneshot::channel();
    let handler = RelayClient {
        pins: s.fingerprints.clone(),
        verdict: verdict.clone(),
        remote_port: s.remote_port,
        tx: tx.clone(),
        _closed: closed_tx,
    };
    let config = Arc::new(russh::client::Config {
        // Finds a relay that went away without a word (a reboot, a cut
        // link), so the next attempt starts soon.
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    });
    let handshake = tokio::time::timeout(
        STEP_TIMEOUT,
        russh::client::connect_stream(config, tcp, handler),
    )
    .await
    .map_err(|_| crate::err!("SSH handshake: timed out"))?;
    let mut h = match handshake {
        Ok(h) => h,
        Err(e) => {
            if let Some(why) = lock(&verdict).take() {
                bail!("{why}; no login, no forward");
            }
            return Err(e.context("SSH handshake"));
        }
    };
    let hash = if key.algorithm().is_rsa() {
        h.best_supported_rsa_hash().await.ok().flatten().flatten()
    } else {
        None
    };
    let fp = crate::authkeys::fingerprint(key.public_key());
    let auth = h
        .authenticate_publickey(
            s.user.clone(),
            PrivateKeyWithHashAlg::new(key.clone(), hash),
        )
        .await
        .context("authenticating")?;
    if !auth.success() {
        bail!(
            "the relay refused our key {fp} for user {}: put {}.pub in that user's \
             authorized_keys on the relay, with the restrictions of docs/relay.md",
            s.user,
            s.key.display()
        );
    }
    if let Err(e) = h.tcpip_forward(LISTEN_ON, u32::from(s.remote_port)).await {
        let _ = h.disconnect(russh::Disconnect::ByApplication, "", "").await;
        bail!(
            "the relay refused to listen on {LISTEN_ON}:{} for us ({e}): its authorized_keys \
             line for our key must say permitlisten=\"{LISTEN_ON}:{}\", and no other session \
             may hold that port",
            s.remote_port,
            s.remote_port
        );
    }
    tracing::info!(
        "relay {}: listening on {LISTEN_ON}:{} there for admins (portcullis unlock HOST:{} --via RELAY)",
        s.shown(),
        s.remote_port,
        s.remote_port
    );
    // The handler (and its sender) goes when the connection ends.
    let _ = closed_rx.await;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The russh client handler for the relay login.
struct RelayClient {
    pins: Vec<String>,
    /// Why the relay's host key was refused, for the error.
    verdict: Arc<Mutex<Option<String>>>,
    remote_port: u16,
    tx: mpsc::Sender<Relayed>,
    /// Dropped with the handler, when the connection ends.
    _closed: oneshot::Sender<()>,
}

/// Whether the relay's key `fp` is one of the pins.
pub fn pinned(pins: &[String], fp: &str) -> bool {
    pins.iter().any(|p| p == fp)
}

impl russh::client::Handler for RelayClient {
    type Error = crate::error::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *lock(&self.verdict) =
                Some("the relay offered a host certificate; pin its plain host key".into());
            return Ok(false);
        };
        let fp = crate::authkeys::fingerprint(key);
        if pinned(&self.pins, &fp) {
            return Ok(true);
        }
        *lock(&self.verdict) = Some(format!(
            "the relay's host key {fp} is not the pinned one ({}): another machine at the relay's \
             address, or its key changed (then update relay.host-key-fingerprints and rebuild the image)",
            self.pins.join(", ")
        ));
        Ok(false)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<russh::client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: russh::client::ChannelOpenHandle,
        _session: &mut russh::client::Session,
    ) -> Result<(), Self::Error> {
        // Only the forward we asked for; anything else the relay opens is
        // refused (dropping `reply` rejects it).
        if connected_port != u32::from(self.remote_port) {
            tracing::warn!(
                "relay opened a channel for {}:{connected_port}, which we did not ask for; refused",
                crate::text::clip_plain(connected_address)
            );
            return Ok(());
        }
        let origin = SocketAddr::new(
            originator_address
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            u16::try_from(originator_port).unwrap_or(0),
        );
        // A full queue means the listener is far behind: refuse rather than
        // wait, as a full accept backlog would.
        let Ok(permit) = self.tx.try_reserve() else {
            return Ok(());
        };
        reply.accept().await;
        permit.send(Relayed {
            stream: channel.into_stream(),
            origin,
        });
        Ok(())
    }
}
