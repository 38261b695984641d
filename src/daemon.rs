//! Wiring of the listener process: settings, host key, authorized keys, the
//! volume list (config plus kernel command line), the backend, the sockets.

use crate::authkeys::{fingerprint, AuthorizedKeys};
use crate::config::{BackendKind, Settings};
use crate::error::{Context, Result};
use crate::sys::{Root, SystemRunner};
use crate::unlock::cryptsetup::Cryptsetup;
use crate::unlock::volume::{self, Volume};
use crate::unlock::{askpass, systemd, Backend};
use std::path::Path;
use std::sync::Arc;

/// Configured volumes first; command-line volumes add names not yet used.
pub fn volumes(settings: &Settings, root: &Root) -> Vec<Volume> {
    let mut vols = settings.volumes.clone();
    if settings.volumes_from_cmdline {
        let cmdline = std::fs::read_to_string(root.join("/proc/cmdline")).unwrap_or_default();
        let (extra, warnings) = volume::from_cmdline(&cmdline);
        for w in warnings {
            tracing::warn!("{w}");
        }
        for v in extra {
            if !vols.iter().any(|o| o.name == v.name) {
                vols.push(v);
            }
        }
    }
    vols
}

/// Resolves `auto`: a systemd initrd has ask-password requests; a Debian
/// initramfs has askpass; anything else gets cryptsetup run directly.
pub fn detect(kind: BackendKind, root: &Root) -> BackendKind {
    match kind {
        BackendKind::Auto if systemd::detect(root) => BackendKind::Systemd,
        BackendKind::Auto if askpass::detect(root) => BackendKind::Askpass,
        BackendKind::Auto => BackendKind::Cryptsetup,
        k => k,
    }
}

pub fn backend(settings: &Settings, root: &Root) -> Result<Arc<dyn Backend>> {
    let kind = detect(settings.backend, root);
    tracing::info!("unlock backend: {kind:?}");
    match kind {
        BackendKind::Systemd => Ok(Arc::new(systemd::SystemdAgent::new(root.clone()))),
        BackendKind::Askpass => Ok(Arc::new(askpass::Askpass::new(root.clone()))),
        BackendKind::Auto | BackendKind::Cryptsetup => {
            let vols = volumes(settings, root);
            if vols.is_empty() {
                crate::bail!(
                    "no volume to unlock: add a [[volume]] to the config or cryptdevice=/rd.luks.name= to the kernel command line"
                );
            }
            Ok(Arc::new(Cryptsetup::new(
                SystemRunner,
                root.clone(),
                settings.cryptsetup.clone(),
                vols,
                settings.max_tries,
            )))
        }
    }
}

/// Runs the listener until every volume is open.
pub fn run(config: &Path, root: &Root) -> Result<()> {
    let settings = Settings::load(config)?;
    let host_keys = settings.load_host_keys(root)?;
    let ak_path = root.join(&settings.authorized_keys);
    let keys = AuthorizedKeys::parse(
        &std::fs::read_to_string(&ak_path)
            .with_context(|| format!("reading authorized keys {}", ak_path.display()))?,
    )
    .map_err(|e| crate::err!("{}: {e}", ak_path.display()))?;
    if keys.keys.is_empty() {
        crate::bail!("{}: no keys; nobody could log in", ak_path.display());
    }
    let backend = backend(&settings, root)?;
    if backend.all_open() {
        tracing::info!("every volume is already open; nothing to do");
        return Ok(());
    }
    let fp = host_keys
        .iter()
        .map(|k| fingerprint(k.public_key()))
        .collect::<Vec<_>>()
        .join(" ");
    let config = crate::listener::ssh_config_with_keys(host_keys, &settings.limits);
    // Read now: a relay key that cannot be loaded is a boot error, as a
    // host key is.
    let relay = match &settings.relay {
        Some(r) => {
            let path = root.join(&r.key);
            let key = crate::hostkey::load(&path)
                .with_context(|| format!("relay key {}", path.display()))?;
            Some((r.clone(), key))
        }
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = rt.block_on(async {
        // Every address that can be bound is served: one that fails at
        // boot (IPv6 disabled with ipv6.disable=1, an address not there)
        // must not take the others, and with them remote unlock, down.
        // Only when nothing can be bound is it an error.
        let mut listeners = Vec::new();
        let mut failed = Vec::new();
        for addr in &settings.listen {
            let v6_only = crate::listener::bind::v6_only(*addr, &settings.listen);
            match crate::listener::bind::listen(*addr, v6_only)
                .and_then(tokio::net::TcpListener::from_std)
            {
                Ok(l) => listeners.push(l),
                Err(e) => {
                    tracing::warn!("cannot listen on {addr}: {e}; serving the other addresses");
                    failed.push(format!("{addr}: {e}"));
                }
            }
        }
        if listeners.is_empty() && relay.is_none() {
            crate::bail!("cannot listen on any address ({})", failed.join("; "));
        }
        for v in backend.status() {
            tracing::info!(volume = %v.name, device = %v.device, state = ?v.state, "waiting for a passphrase");
        }
        tracing::info!(
            "listening on {}; host key {fp}",
            listeners
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let limits = settings.limits.clone();
        match relay {
            Some((r, key)) => {
                tracing::info!("relay {}: connecting", r.shown());
                let (task, relayed) = crate::relay::spawn(r, key);
                let served =
                    crate::listener::serve_relayed(listeners, relayed, config, backend, keys, limits)
                        .await;
                // Gone with the listener: the relay frees its port at once.
                task.abort();
                served
            }
            None => crate::listener::serve(listeners, config, backend, keys, limits).await,
        }
    });
    // serve() returns once replies in flight went out (or their bound
    // passed); do not wait on a backend call that is still stuck.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    served
}
