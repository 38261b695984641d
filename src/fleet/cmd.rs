//! The client's commands (`unlock`, `status`, `watch`) as library entry
//! points taking plain settings: every target goes through the one
//! resolver ([`super::resolve`]); one host gets the single-host output and
//! exit codes however it was named, several get the fleet run and table.
//! A host's JSON record has the same schema either way.

use super::inventory::{self, Host};
use super::probe::SystemPins;
use super::report;
use super::resolve::{self, Lookup};
use super::run::{self, Plan, Report};
use super::secrets::{self, PassSpec, Scope, Source};
use super::watch;
use crate::client::report::ErrorReport;
use crate::client::settings::Connection;
use crate::client::{self, passphrase, HostKeyPolicy, Identity, Options};
use crate::protocol::{self, exit, VolumeInfo};
use crate::text;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `portcullis unlock TARGET…`.
#[derive(Debug, Clone)]
pub struct UnlockSettings {
    pub targets: Vec<String>,
    pub lookup: Lookup,
    pub conn: Connection,
    /// From the command line; `None`: each host's own (a prompt unless
    /// the inventory says otherwise).
    pub source: Option<Source>,
    /// Hosts talked to at once (several hosts).
    pub parallel: usize,
    /// Wait for the systems after unlocking (several hosts); `None`: no.
    pub up_timeout: Option<Duration>,
}

/// `portcullis status TARGET…`.
#[derive(Debug, Clone)]
pub struct StatusSettings {
    pub targets: Vec<String>,
    pub lookup: Lookup,
    pub conn: Connection,
}

/// `portcullis watch`.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub targets: Vec<String>,
    pub inventory: Option<PathBuf>,
    pub interval: Duration,
    pub max_wrong: u32,
    pub backoff: Duration,
    pub approve_timeout: Duration,
    pub up_timeout: Option<Duration>,
    pub parallel: usize,
    pub timeout: Duration,
    pub agent: bool,
}

/// Prints an error that stopped a command before any host was tried (bad
/// target, inventory, passphrase source); returns exit 1. The one error
/// printer for such errors, shared with rescue.
pub fn setup_error(targets: &[String], json: bool, e: &anyhow::Error) -> u8 {
    ErrorReport {
        target: &targets.join(" "),
        command: None,
        outcome: "error",
        message: format!("{e:#}"),
        exit_code: exit::ERROR,
        text_names_target: false,
        extra: vec![],
    }
    .print(json)
}

/// How a host is named in text output: its name, and the address when
/// that says more.
fn label(h: &Host) -> String {
    let addr = h.listener.to_string();
    if h.name == addr {
        addr
    } else {
        format!("{} ({addr})", h.name)
    }
}

/// watch's host-key policy: the inventory's pins, and the `@revoked` lines
/// of portcullis's known-hosts file (watch takes no --known-hosts).
fn watch_policy(fingerprints: &[String]) -> HostKeyPolicy {
    HostKeyPolicy::Fingerprints {
        fingerprints: fingerprints.to_vec(),
        revoked_in: crate::client::known_hosts::default_path(),
    }
}

/// Client options for one host.
fn options(h: &Host, conn: &Connection, ask: bool) -> Result<Options> {
    Ok(conn.options(
        h.listener.clone(),
        &h.user,
        &h.identity,
        &h.fingerprints,
        "known_hosts",
        ask,
    )?)
}

/// `portcullis unlock`: returns the exit code.
pub async fn unlock(s: &UnlockSettings) -> u8 {
    let r = match resolve::resolve(&s.targets, &s.lookup) {
        Ok(r) => r,
        Err(e) => return setup_error(&s.targets, s.conn.json, &e),
    };
    let result = match r.hosts.as_slice() {
        [] => Err(anyhow!("no hosts selected")),
        [one] => unlock_one(one, s).await,
        _ => unlock_many(r.hosts, s).await,
    };
    result.unwrap_or_else(|e| setup_error(&s.targets, s.conn.json, &e))
}

/// One host, however named: a prompt may ask about its key, output is one
/// line (or one JSON record) and the exit code is the outcome's.
async fn unlock_one(h: &Host, s: &UnlockSettings) -> Result<u8> {
    let opts = options(h, &s.conn, true)?;
    let source = s
        .source
        .clone()
        .unwrap_or_else(|| h.passphrase.source.clone());
    let label = label(h);
    // Ask first, so `--wait` can run unattended once the passphrase is typed.
    let pass = passphrase::read(&source, &label)?;
    let result = client::unlock(&opts, &pass).await;
    drop(pass);
    let rep = Report::single(&h.name, &opts.target, result);
    if s.conn.json {
        println!("{}", report::json_line(&rep));
    } else if rep.exit_code == exit::UNLOCKED {
        println!("{}", text::line(&format!("{label}: {}", rep.detail)));
    } else if rep.unlock.is_some() {
        eprintln!("{}", text::line(&format!("{label}: {}", rep.detail)));
    } else {
        eprintln!("error: {}", text::line(&format!("{label}: {}", rep.detail)));
    }
    Ok(rep.exit_code)
}

async fn unlock_many(mut hosts: Vec<Host>, s: &UnlockSettings) -> Result<u8> {
    if s.conn.fingerprint.is_some() {
        bail!(
            "--fingerprint pins one listener; for inventory hosts write \
             fingerprint = \"SHA256:…\" in their [host.NAME]"
        );
    }
    // Command-line settings win over the inventory's.
    for h in &mut hosts {
        if let Some(src) = &s.source {
            h.passphrase = PassSpec {
                source: src.clone(),
                scope: Scope::CommandLine,
            };
        }
    }
    let plans_opts: Vec<Options> = hosts
        .iter()
        .map(|h| options(h, &s.conn, false))
        .collect::<Result<_>>()?;
    check_identities(
        &plans_opts
            .iter()
            .map(|o| o.identity.files.clone())
            .collect::<Vec<_>>(),
        s.conn.agent,
    )?;
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
        .zip(plans_opts)
        .map(|((h, pass), mut opts)| {
            // The fleet runner waits for listeners itself, quietly.
            opts.wait = None;
            Plan {
                name: h.name.clone(),
                opts,
                system: system_pins(h).map(|p| (h.system.clone(), p)),
                pass,
            }
        })
        .collect();
    let settings = run::Settings {
        parallel: s.parallel,
        listener_wait: s.conn.wait,
        up_timeout: s.up_timeout,
        poll: Duration::from_secs(1),
    };
    let mode = report::mode(s.conn.json);
    let names: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let display = tokio::spawn(report::show(rx, names, mode));
    let reports = run::run(plans, &settings, Some(tx)).await;
    let _ = display.await;
    if !s.conn.json {
        print!("{}", report::table(&reports));
    }
    Ok(if reports.iter().all(|r| r.outcome.success()) {
        exit::UNLOCKED
    } else {
        exit::SOME_HOSTS_FAILED
    })
}

/// One host's `status` record; the same schema for one host or several.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StatusRecord {
    pub host: String,
    pub target: String,
    /// `ok`, or the error's kind (`unreachable`, `host-key-changed`, …).
    pub outcome: &'static str,
    pub exit_code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<VolumeInfo>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

async fn status_of(h: Host, opts: Options) -> StatusRecord {
    let target = opts.target.to_string();
    match client::status(&opts).await {
        Ok(st) => StatusRecord {
            host: h.name,
            target,
            outcome: "ok",
            exit_code: exit::UNLOCKED,
            volumes: Some(st.volumes),
            detail: String::new(),
        },
        Err(e) => StatusRecord {
            host: h.name,
            target,
            outcome: e.kind(),
            exit_code: e.exit_code(),
            volumes: None,
            detail: e.to_string(),
        },
    }
}

/// `portcullis status`: returns the exit code.
pub async fn status(s: &StatusSettings) -> u8 {
    status_inner(s)
        .await
        .unwrap_or_else(|e| setup_error(&s.targets, s.conn.json, &e))
}

async fn status_inner(s: &StatusSettings) -> Result<u8> {
    let hosts = resolve::resolve(&s.targets, &s.lookup)?.hosts;
    if hosts.is_empty() {
        bail!("no hosts selected");
    }
    let many = hosts.len() > 1;
    if many && s.conn.fingerprint.is_some() {
        bail!("--fingerprint names one host's key; give one target with it");
    }
    let labels: Vec<String> = hosts.iter().map(label).collect();
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for h in hosts {
        // Several hosts: no questions on the terminal, like a fleet run.
        let opts = options(&h, &s.conn, !many)?;
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _turn = sem.acquire().await;
            status_of(h, opts).await
        }));
    }
    let mut worst = exit::UNLOCKED;
    for (t, label) in tasks.into_iter().zip(labels) {
        let rec = t.await.context("internal error: a status task failed")?;
        if rec.exit_code != exit::UNLOCKED {
            worst = if many {
                exit::SOME_HOSTS_FAILED
            } else {
                rec.exit_code
            };
        }
        if s.conn.json {
            // Through a `Value`: keys sorted, as `status --json` always
            // printed them (scripts grep `"device":…,"name":…,"state":…`).
            let line = serde_json::to_value(&rec).map_or_else(|_| "{}".into(), |v| v.to_string());
            println!("{line}");
            continue;
        }
        match &rec.volumes {
            Some(v) => {
                if many {
                    println!("{}:", text::line(&label));
                }
                print!("{}", text::block(&protocol::describe_status(v)));
            }
            None => eprintln!("error: {}", text::line(&format!("{label}: {}", rec.detail))),
        }
    }
    Ok(worst)
}

/// `portcullis watch`: runs until SIGINT/SIGTERM; returns the exit code.
pub async fn watch(args: &WatchSettings) -> u8 {
    match watch_inner(args).await {
        Ok(()) => exit::UNLOCKED,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {}", text::line(&format!("{e:#}")));
            exit::ERROR
        }
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

/// Refuses encrypted key files that nothing can unlock: each host would
/// ask for the key's passphrase on its own, hundreds of prompts at once.
fn check_identities(identities: &[Vec<PathBuf>], agent: bool) -> Result<()> {
    let agent = agent && std::env::var_os("SSH_AUTH_SOCK").is_some();
    // Hosts without identities use the client's defaults, ~/.ssh/id_*.
    let defaults: Vec<PathBuf> = if identities.iter().any(Vec::is_empty) {
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
    for p in identities.iter().flatten().chain(&defaults) {
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

async fn watch_inner(args: &WatchSettings) -> Result<()> {
    let path = match &args.inventory {
        Some(p) => p.clone(),
        None => inventory::default_path()
            .filter(|p| p.exists())
            .ok_or_else(|| anyhow!("watch needs an inventory: pass --inventory FILE"))?,
    };
    let targets = if args.targets.is_empty() {
        vec![inventory::ALL.to_string()]
    } else {
        args.targets.clone()
    };
    let lookup = Lookup {
        inventory: Some(path.clone()),
        ssh_config: None,
        default_inventory: false,
    };
    let resolve::Resolution {
        inventory: inv,
        hosts,
    } = resolve::resolve(&targets, &lookup)?;
    if hosts.is_empty() {
        bail!("{}: no hosts to watch", path.display());
    }
    inv.check_unattended(&hosts)?;
    let agent = args.agent;
    check_identities(
        &hosts.iter().map(|h| h.identity.clone()).collect::<Vec<_>>(),
        agent,
    )?;
    let watched: Vec<watch::Watched> = hosts
        .iter()
        .map(|h| {
            let fingerprints = h.fingerprints.clone();
            watch::Watched {
                name: h.name.clone(),
                opts: Options {
                    target: h.listener.clone(),
                    user: h.user.clone(),
                    host_key: watch_policy(&fingerprints),
                    identity: Identity {
                        agent,
                        files: h.identity.clone(),
                    },
                    connect_timeout: args.timeout,
                    wait: None,
                    via: None,
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
        up_timeout: args.up_timeout,
        parallel: args.parallel,
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    /// watch has no --known-hosts: its inventory pins obey the `@revoked`
    /// lines of portcullis's default known-hosts file.
    #[test]
    fn watch_obeys_the_default_revocations() {
        let fp = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string();
        match watch_policy(std::slice::from_ref(&fp)) {
            HostKeyPolicy::Fingerprints {
                fingerprints,
                revoked_in,
            } => {
                assert_eq!(fingerprints, vec![fp]);
                assert!(revoked_in.is_some());
                assert_eq!(revoked_in, crate::client::known_hosts::default_path());
            }
            p => panic!("{p:?}"),
        }
    }
}
