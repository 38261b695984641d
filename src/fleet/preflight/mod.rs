//! `portcullis preflight TARGET…`: will remote unlock work after the next
//! reboot? For each host it runs the server's own check
//! (`portcullis-preflight --json`) over the RUNNING system's SSH with the
//! stock OpenSSH client, reads the report back, and adds what only this
//! workstation knows (`pin`, `client-key`: [`crate::client::preflight`]).
//!
//! The system's host key is OpenSSH's business: `BatchMode=yes` and
//! `StrictHostKeyChecking=yes` make ssh refuse an unknown or changed key
//! from `~/.ssh/known_hosts`. When the inventory pins the system's key
//! (`system-fingerprint`), the key is first proven against that pin and
//! ssh is given a known-hosts file holding exactly that key, so it fails
//! closed either way. Nothing secret is sent: the command line holds only
//! the check's own options.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod output;
mod ssh;

pub use output::table;
pub use ssh::{classify, remote_command, ssh_args, Failure, SshSettings};

use super::inventory::Host;
use super::resolve::{self, Lookup};
use crate::client::preflight::{client_key_check, offered_keys, pin_check, ClientKeys, Pins};
use crate::client::{known_hosts, Identity, Target};
use crate::preflight::report::{Report, Status};
use crate::protocol::exit;
use crate::rescue::shell;
use crate::text;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use ssh::{failure, pinned_file, run_ssh, RUN_LIMIT};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `portcullis preflight`, as plain values.
#[derive(Debug, Clone)]
pub struct Settings {
    pub targets: Vec<String>,
    pub lookup: Lookup,
    /// `-l`: the login on the running system; `None`: `USER@` in the
    /// target, else ssh's own choice (ssh_config `User`, or your name).
    pub login: Option<String>,
    /// `-i`: the keys unlock would use; empty: the inventory's, else
    /// ssh-agent and `~/.ssh/id_*`.
    pub identity: Vec<PathBuf>,
    pub agent: bool,
    /// portcullis's known-hosts file (initramfs pins); `None`: the default.
    pub known_hosts: Option<PathBuf>,
    /// Handed on to `portcullis-preflight`: every kernel's image.
    pub all_kernels: bool,
    /// Handed on to `portcullis-preflight`: this image (an absolute path on
    /// the server).
    pub image: Option<String>,
    /// `-o`: more `ssh -o` options (after portcullis's own, which win).
    pub ssh_options: Vec<String>,
    /// ssh's `ConnectTimeout`.
    pub timeout: Duration,
    pub parallel: usize,
    pub json: bool,
}

/// One host's result; the same keys for one host or several.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Record {
    pub host: String,
    /// The running system's SSH server ssh was pointed at.
    pub target: String,
    /// `pass`, `warn` or `fail` (the report's verdict), or why there is no
    /// report: `unreachable`, `host-key-unknown`, `host-key-changed`,
    /// `auth-refused`, `not-installed`, `error`.
    pub outcome: &'static str,
    pub exit_code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// `USER` of `USER@…` / `ssh://USER@…` as typed.
fn typed_user(word: &str) -> Option<&str> {
    let rest = word.strip_prefix("ssh://").unwrap_or(word);
    rest.rsplit_once('@')
        .map(|(u, _)| u)
        .filter(|u| !u.is_empty())
}

/// The options `portcullis-preflight` gets besides `--json`.
fn remote_args(s: &Settings) -> Result<Vec<String>, Failure> {
    let mut a = Vec::new();
    if s.all_kernels {
        a.push("--all-kernels".to_string());
    }
    if let Some(i) = &s.image {
        let p = shell::path("--image", i)
            .map_err(|e| failure("error", exit::ERROR, format!("{e:#}")))?;
        a.extend(["--image".to_string(), p]);
    }
    Ok(a)
}

/// Adds `pin` and `client-key` to every image of the report.
pub fn add_workstation_checks(
    report: Report,
    pins: &Pins,
    listener: &Target,
    name: &str,
    keys: &ClientKeys,
) -> Report {
    let images = report
        .images
        .into_iter()
        .map(|mut img| {
            img.checks
                .push(pin_check(&img.host_keys, pins, listener, name));
            img.checks.push(client_key_check(
                &img.authorized_keys,
                &keys.offered,
                &keys.problems,
            ));
            img
        })
        .collect();
    Report::new(images)
}

/// What a host needs besides its inventory entry.
struct Job {
    host: Host,
    ssh: Arc<SshSettings>,
    login: Option<String>,
    pins: Pins,
    keys: Arc<ClientKeys>,
}

async fn check_host(job: Job, s: Arc<Settings>) -> Record {
    let h = &job.host;
    let result = async {
        let pinned = match &h.system_fingerprint {
            Some(fp) => Some(pinned_file(&h.name, &h.system, fp, s.timeout).await?),
            None => None,
        };
        let args = ssh_args(
            &h.system,
            job.login.as_deref(),
            pinned.as_ref().map(|p| p.0.as_path()),
            &job.ssh,
            &remote_command(&remote_args(&s)?),
        );
        let (code, out, err) = run_ssh(&args, s.timeout + RUN_LIMIT)
            .await
            .map_err(|e| failure("error", exit::ERROR, format!("{}: {e:#}", h.name)))?;
        let report = classify(&h.name, &h.system, code, &out, &err)?;
        Ok::<_, Failure>(add_workstation_checks(
            report,
            &job.pins,
            &h.listener,
            &h.name,
            &job.keys,
        ))
    }
    .await;
    let target = h.system.to_string();
    match result {
        Ok(r) => Record {
            host: h.name.clone(),
            target,
            outcome: match r.verdict {
                Status::Pass | Status::Skip => "pass",
                Status::Warn => "warn",
                Status::Fail => "fail",
            },
            exit_code: r.exit_code(),
            report: Some(r),
            detail: String::new(),
        },
        Err(f) => Record {
            host: h.name.clone(),
            target,
            outcome: f.kind,
            exit_code: f.code,
            report: None,
            detail: f.message,
        },
    }
}

/// Every host named, each once, with the login typed for it.
fn hosts(s: &Settings) -> Result<Vec<(Host, Option<String>)>> {
    let mut out: Vec<(Host, Option<String>)> = Vec::new();
    for word in &s.targets {
        let found = resolve::resolve(std::slice::from_ref(word), &s.lookup)?.hosts;
        for h in found {
            if !out.iter().any(|(o, _)| o.name == h.name) {
                let login = s
                    .login
                    .clone()
                    .or_else(|| typed_user(word).map(str::to_string));
                out.push((h, login));
            }
        }
    }
    if out.is_empty() {
        bail!("no hosts selected");
    }
    Ok(out)
}

/// The exit code for several hosts: 14 when one would fail (the one thing
/// that must not be missed), else 11 when one could not be checked (it
/// may be failing), else 15 for warnings, else 0.
pub fn fleet_exit(records: &[Record]) -> u8 {
    let any = |f: &dyn Fn(&Record) -> bool| records.iter().any(f);
    if any(&|r| r.outcome == "fail") {
        exit::PREFLIGHT_FAIL
    } else if any(&|r| r.report.is_none()) {
        exit::SOME_HOSTS_FAILED
    } else if any(&|r| r.outcome == "warn") {
        exit::PREFLIGHT_WARN
    } else {
        exit::UNLOCKED
    }
}

/// `portcullis preflight`: returns the exit code.
pub async fn preflight(s: Settings) -> u8 {
    match run(s.clone()).await {
        Ok(code) => code,
        Err(e) => super::cmd::setup_error(&s.targets, s.json, &e),
    }
}

async fn run(s: Settings) -> Result<u8> {
    // A bad --image is a usage error before anything is run.
    remote_args(&s).map_err(|f| anyhow!("{}", f.message))?;
    let hosts = hosts(&s)?;
    let inv = resolve::load(&s.lookup)?;
    let inventory = inv.describe_source();
    // The ssh_config portcullis was pointed at (--ssh-config, the
    // inventory's ssh-config) is ssh's too; the default one ssh finds itself.
    let config = s.lookup.ssh_config.clone().or_else(|| {
        inv.ssh_config_path()
            .filter(|p| Some(*p) != super::ssh_config::SshConfig::default_path().as_deref())
            .map(Path::to_path_buf)
    });
    let ssh = Arc::new(SshSettings {
        config,
        options: s.ssh_options.clone(),
        timeout: s.timeout,
    });
    let kh = s.known_hosts.clone().or_else(known_hosts::default_path);
    // The keys offered, once per set of key files.
    let mut offered: HashMap<Vec<PathBuf>, Arc<ClientKeys>> = HashMap::new();
    let mut jobs = Vec::new();
    for (host, login) in hosts {
        let files = if s.identity.is_empty() {
            host.identity.clone()
        } else {
            s.identity.clone()
        };
        let keys = match offered.get(&files) {
            Some(k) => k.clone(),
            None => {
                let k = Arc::new(
                    offered_keys(&Identity {
                        agent: s.agent,
                        files: files.clone(),
                    })
                    .await,
                );
                offered.insert(files, k.clone());
                k
            }
        };
        let pins = Pins::lookup(
            &host.fingerprints,
            &format!("{inventory} host.{}", host.name),
            kh.as_deref(),
            &host.listener,
        )?;
        jobs.push(Job {
            host,
            ssh: ssh.clone(),
            login,
            pins,
            keys,
        });
    }
    let many = jobs.len() > 1;
    let s = Arc::new(s);
    let sem = Arc::new(tokio::sync::Semaphore::new(s.parallel.max(1)));
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let (s, sem) = (s.clone(), sem.clone());
            tokio::spawn(async move {
                let _turn = sem.acquire().await;
                check_host(job, s).await
            })
        })
        .collect();
    let mut records = Vec::new();
    for t in tasks {
        let rec = t.await.context("internal error: a preflight task failed")?;
        if s.json {
            let line = serde_json::to_string(&rec).unwrap_or_else(|_| "{}".into());
            println!("{line}");
        }
        records.push(rec);
    }
    if many {
        if !s.json {
            print!("{}", table(&records));
        }
        return Ok(fleet_exit(&records));
    }
    let Some(rec) = records.first() else {
        bail!("no hosts selected");
    };
    if !s.json {
        match &rec.report {
            // The same checklist the server prints, the workstation's
            // checks included.
            Some(r) => print!("{}", crate::preflight::text::render(r)),
            None => eprintln!("error: {}", text::line(&rec.detail)),
        }
    }
    Ok(rec.exit_code)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::*;
    use crate::preflight::report::{AuthorizedKey, Check, ImageReport};

    const A: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn sys() -> Target {
        Target {
            host: "192.0.2.1".into(),
            port: 22,
        }
    }

    pub(crate) fn report(status: Status) -> Report {
        Report::new(vec![ImageReport {
            image: "/boot/initrd.img-6.1".into(),
            kernel: Some("6.1".into()),
            cmdline: None,
            host_keys: vec![A.into()],
            authorized_keys: vec![AuthorizedKey {
                fingerprint: A.into(),
                algorithm: "ssh-ed25519".into(),
                comment: String::new(),
            }],
            checks: vec![Check {
                id: "nic-driver".into(),
                status,
                summary: "virtio_net".into(),
                fix: (status != Status::Pass).then(|| "add it".into()),
            }],
        }])
    }

    #[test]
    fn workstation_checks_join_every_image_and_the_verdict() {
        let pins = Pins {
            fingerprints: vec![],
            revoked: vec![],
            from: "x".into(),
        };
        let mine = ClientKeys {
            offered: vec![crate::client::preflight::Offered {
                fingerprint: A.into(),
                from: "ssh-agent".into(),
            }],
            problems: vec![],
        };
        let r = add_workstation_checks(report(Status::Pass), &pins, &sys(), "web1", &mine);
        let ids: Vec<&str> = r.images[0].checks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["nic-driver", "pin", "client-key"]);
        // Not pinned: a warning decides the verdict.
        assert_eq!((r.verdict, r.exit_code()), (Status::Warn, 15));
        let none = ClientKeys::default();
        let r = add_workstation_checks(report(Status::Pass), &pins, &sys(), "web1", &none);
        assert_eq!(r.exit_code(), 14);
    }

    pub(crate) fn rec(host: &str, outcome: &'static str, st: Option<Status>) -> Record {
        Record {
            host: host.into(),
            target: "t".into(),
            outcome,
            exit_code: 0,
            report: st.map(report),
            detail: "d".into(),
        }
    }

    #[test]
    fn typed_users_are_found() {
        assert_eq!(typed_user("ssh://ops@h:22"), Some("ops"));
        assert_eq!(typed_user("ops@web"), Some("ops"));
        assert_eq!(typed_user("h"), None);
    }

    #[test]
    fn fleet_exit_puts_a_failure_first_then_unchecked_hosts() {
        let pass = rec("a", "pass", Some(Status::Pass));
        let warn = rec("b", "warn", Some(Status::Warn));
        let fail = rec("c", "fail", Some(Status::Fail));
        let down = rec("d", "unreachable", None);
        assert_eq!(fleet_exit(&[pass.clone(), warn.clone()]), 15);
        assert_eq!(fleet_exit(&[pass.clone(), down.clone(), warn.clone()]), 11);
        assert_eq!(fleet_exit(&[down.clone(), fail.clone()]), 14);
        assert_eq!(fleet_exit(std::slice::from_ref(&pass)), 0);
    }
}
