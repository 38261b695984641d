//! The glue between the command line and the fleet modules: which targets
//! take the single-host path, building per-host client options, reading the
//! passphrases, printing, and the exit code.

use super::inventory::{self, Host, Inventory};
use super::probe::SystemPins;
use super::report::{self, Mode};
use super::run::{self, Plan};
use super::secrets::{self, PassSpec, Scope, Source};
use super::watch;
use crate::cli::{ConnArgs, FleetArgs, WatchArgs};
use crate::client::{self, passphrase, HostKeyPolicy, Identity, Options};
use crate::protocol::exit;
use anyhow::{anyhow, bail, Context, Result};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Which path an `unlock` takes.
#[derive(Debug)]
pub enum Route {
    /// One listener, exactly as before inventories existed (same output,
    /// same exit codes).
    One(String),
    /// Inventory names, aliases or several targets.
    Many(Box<Inventory>),
}

fn plain(t: &str) -> bool {
    t.contains([':', '[']) || t.parse::<std::net::IpAddr>().is_ok()
}

/// Loads the inventory named on the command line, else the default one if
/// it exists, else an empty one (aliases and HOST:PORT still work).
fn load_inventory(explicit: Option<&Path>, ssh_config: Option<&Path>) -> Result<Inventory> {
    let mut inv = match explicit {
        Some(p) => Inventory::load(p)?,
        None => match inventory::default_path().filter(|p| p.exists()) {
            Some(p) => Inventory::load(&p)?,
            None => Inventory::empty(),
        },
    };
    if let Some(p) = ssh_config {
        if !p.exists() {
            bail!("--ssh-config {}: no such file", p.display());
        }
        inv.set_ssh_config(p.to_path_buf());
    }
    Ok(inv)
}

/// A single `HOST[:PORT]` that no inventory or alias claims keeps the
/// single-host behaviour; everything else is a fleet run.
pub fn route(targets: &[String], args: &FleetArgs) -> Result<Route> {
    if let [one] = targets {
        if plain(one) {
            return Ok(Route::One(one.clone()));
        }
    }
    let inv = load_inventory(args.inventory.as_deref(), args.ssh_config.as_deref())?;
    if let [one] = targets {
        if !inv.knows(one) && !inv.is_alias(one)? {
            return Ok(Route::One(one.clone()));
        }
    }
    Ok(Route::Many(Box::new(inv)))
}

fn known_hosts_path(conn_path: Option<&Path>) -> Result<PathBuf> {
    match conn_path {
        Some(p) => Ok(p.to_path_buf()),
        None => client::known_hosts::default_path()
            .ok_or_else(|| anyhow!("HOME is not set: pass --known-hosts FILE")),
    }
}

/// The system's pins: the inventory's, else the user's OpenSSH known_hosts.
fn system_pins(h: &Host) -> Option<SystemPins> {
    if let Some(fp) = &h.system_fingerprint {
        return Some(SystemPins {
            fingerprints: vec![fp.clone()],
            from: format!("host.{}.system-fingerprint", h.name),
        });
    }
    let kh = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh/known_hosts"))?;
    SystemPins::from_known_hosts(&kh, &h.system)
}

/// Client options for one host.
fn options(h: &Host, conn: &ConnArgs, known_hosts: &Path, agent: bool) -> Options {
    Options {
        target: h.listener.clone(),
        user: h.user.clone(),
        host_key: match h.fingerprints.as_slice() {
            [] => HostKeyPolicy::KnownHosts {
                path: known_hosts.to_path_buf(),
                accept_new: conn.accept_new,
                ask: false,
            },
            fps => HostKeyPolicy::Fingerprints(fps.to_vec()),
        },
        identity: Identity {
            agent,
            files: h.identity.clone(),
        },
        connect_timeout: conn.timeout,
        // The fleet runner waits for listeners itself, quietly.
        wait: None,
    }
}

/// Refuses encrypted key files that nothing can unlock: each host would
/// ask for the key's passphrase on its own, hundreds of prompts at once.
fn check_identities(hosts: &[Host], agent: bool) -> Result<()> {
    let agent = agent && std::env::var_os("SSH_AUTH_SOCK").is_some();
    // Hosts without identities use the client's defaults, ~/.ssh/id_*.
    let defaults: Vec<PathBuf> = if hosts.iter().any(|h| h.identity.is_empty()) {
        std::env::var_os("HOME")
            .map(|h| {
                ["id_ed25519", "id_ecdsa", "id_rsa"]
                    .iter()
                    .map(|n| PathBuf::from(&h).join(".ssh").join(n))
                    .filter(|p| p.exists())
                    .collect()
            })
            .unwrap_or_default()
    } else {
        vec![]
    };
    let mut seen: Vec<&PathBuf> = Vec::new();
    for p in hosts.iter().flat_map(|h| &h.identity).chain(&defaults) {
        if seen.contains(&p) {
            continue;
        }
        seen.push(p);
        match russh::keys::load_secret_key(p, None) {
            Ok(_) => {}
            Err(russh::keys::Error::KeyIsEncrypted) if agent => {}
            Err(russh::keys::Error::KeyIsEncrypted) => bail!(
                "identity {} is encrypted; for many hosts, load it into ssh-agent \
                 (ssh-add {}) instead of being asked once per host",
                p.display(),
                p.display()
            ),
            Err(e) => bail!("loading identity {}: {e}", p.display()),
        }
    }
    Ok(())
}

/// `portcullis unlock GROUP|HOST…`: returns the exit code.
pub async fn unlock(
    inv: &Inventory,
    targets: &[String],
    conn: &ConnArgs,
    cli_source: &passphrase::Source,
    args: &FleetArgs,
) -> u8 {
    match unlock_inner(inv, targets, conn, cli_source, args).await {
        Ok(code) => code,
        Err(e) => setup_error(targets, conn.json, &e),
    }
}

/// Prints an error that stopped a run before any host was tried (bad
/// inventory, unknown name, passphrase source failing); returns exit 1.
pub fn setup_error(targets: &[String], json: bool, e: &anyhow::Error) -> u8 {
    if json {
        let v = serde_json::json!({
            "target": targets.join(" "),
            "outcome": "error",
            "error": format!("{e:#}"),
            "exit-code": exit::ERROR,
        });
        println!("{v}");
    } else {
        eprintln!("error: {}", crate::text::line(&format!("{e:#}")));
    }
    exit::ERROR
}

async fn unlock_inner(
    inv: &Inventory,
    targets: &[String],
    conn: &ConnArgs,
    cli_source: &passphrase::Source,
    args: &FleetArgs,
) -> Result<u8> {
    if conn.fingerprint.is_some() {
        bail!(
            "--fingerprint pins one listener; for inventory hosts write \
             fingerprint = \"SHA256:…\" in their [host.NAME]"
        );
    }
    let mut hosts = inv.resolve(targets)?;
    if hosts.is_empty() {
        bail!("no hosts selected");
    }
    // Command-line settings win over the inventory's.
    let cli_pass = match cli_source {
        passphrase::Source::Prompt => None,
        passphrase::Source::Stdin => Some(Source::Stdin),
        passphrase::Source::Command(c) => Some(Source::Command(c.clone())),
    };
    for h in &mut hosts {
        if let Some(u) = &conn.user {
            h.user = u.clone();
        }
        if !conn.identity.is_empty() {
            h.identity = conn.identity.clone();
        }
        if let Some(s) = &cli_pass {
            h.passphrase = PassSpec {
                source: s.clone(),
                scope: Scope::CommandLine,
            };
        }
    }
    let agent = !conn.no_agent;
    check_identities(&hosts, agent)?;
    let known_hosts = known_hosts_path(conn.known_hosts.as_deref())?;
    // Every passphrase is read before the first connection, so prompts
    // never mix with the live display.
    let specs: Vec<(&str, &PassSpec)> = hosts
        .iter()
        .map(|h| (h.name.as_str(), &h.passphrase))
        .collect();
    let passes = secrets::gather(&specs)?;
    let plans: Vec<Plan> = hosts
        .iter()
        .zip(passes)
        .map(|(h, pass)| Plan {
            name: h.name.clone(),
            opts: options(h, conn, &known_hosts, agent),
            system: system_pins(h).map(|p| (h.system.clone(), p)),
            pass,
        })
        .collect();
    let settings = run::Settings {
        parallel: args.parallel as usize,
        listener_wait: conn.wait,
        up_timeout: (!args.no_wait_up).then_some(args.up_timeout),
        poll: std::time::Duration::from_secs(1),
    };
    let mode = if conn.json {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Live
    } else {
        Mode::Quiet
    };
    let names: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let display = tokio::spawn(report::show(rx, names, mode));
    let reports = run::run(plans, &settings, Some(tx)).await;
    let _ = display.await;
    if !conn.json {
        print!("{}", report::table(&reports));
    }
    Ok(if reports.iter().all(|r| r.outcome.success()) {
        exit::UNLOCKED
    } else {
        exit::SOME_HOSTS_FAILED
    })
}

/// `portcullis watch`: runs until SIGINT/SIGTERM; returns the exit code.
pub async fn watch(args: &WatchArgs) -> u8 {
    match watch_inner(args).await {
        Ok(()) => exit::UNLOCKED,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {}", crate::text::line(&format!("{e:#}")));
            exit::ERROR
        }
    }
}

async fn watch_inner(args: &WatchArgs) -> Result<()> {
    let path = match &args.inventory {
        Some(p) => p.clone(),
        None => inventory::default_path()
            .filter(|p| p.exists())
            .ok_or_else(|| anyhow!("watch needs an inventory: pass --inventory FILE"))?,
    };
    let inv = Inventory::load(&path)?;
    let targets = if args.targets.is_empty() {
        vec![inventory::ALL.to_string()]
    } else {
        args.targets.clone()
    };
    let hosts = inv.resolve(&targets)?;
    if hosts.is_empty() {
        bail!("{}: no hosts to watch", path.display());
    }
    inv.check_unattended(&hosts)?;
    let agent = !args.no_agent;
    check_identities(&hosts, agent)?;
    let watched: Vec<watch::Watched> = hosts
        .iter()
        .map(|h| {
            let fingerprints = h.fingerprints.clone();
            watch::Watched {
                name: h.name.clone(),
                opts: Options {
                    target: h.listener.clone(),
                    user: h.user.clone(),
                    host_key: HostKeyPolicy::Fingerprints(fingerprints.clone()),
                    identity: Identity {
                        agent,
                        files: h.identity.clone(),
                    },
                    connect_timeout: args.timeout,
                    wait: None,
                },
                fingerprints,
                source: h.passphrase.source.clone(),
                system: h.system_fingerprint.as_ref().map(|fp| {
                    (
                        h.system.clone(),
                        SystemPins {
                            fingerprints: vec![fp.clone()],
                            from: format!("host.{}.system-fingerprint", h.name),
                        },
                    )
                }),
            }
        })
        .collect();
    let settings = watch::Settings {
        interval: args.interval,
        max_wrong: args.max_wrong,
        backoff: args.backoff,
        backoff_max: std::time::Duration::from_secs(3600),
        approve_command: inv.approve_command.clone(),
        approve_timeout: args.approve_timeout,
        up_timeout: (!args.no_wait_up).then_some(args.up_timeout),
        parallel: args.parallel as usize,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    watch::run(watched, settings, stop).await;
    Ok(())
}
