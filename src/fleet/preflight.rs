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

use super::inventory::Host;
use super::resolve::{self, Lookup};
use crate::authkeys::fingerprint;
use crate::client::preflight::{client_key_check, offered_keys, pin_check, ClientKeys, Pins};
use crate::client::{known_hosts, probe, Identity, Target};
use crate::preflight::report::{Report, Status, FORMAT};
use crate::protocol::exit;
use crate::rescue::shell;
use crate::text;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

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

/// How long the check itself may take once connected (it unpacks images).
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// Most bytes read from the server's report: it is only a checklist.
const MAX_OUTPUT: u64 = 4 << 20;
/// The exit status the remote script uses for "portcullis-preflight is not
/// installed" (the shell's own for "command not found").
const NOT_INSTALLED: i32 = 127;

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

/// Why a host gave no report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: &'static str,
    pub code: u8,
    pub message: String,
}

fn failure(kind: &'static str, code: u8, message: String) -> Failure {
    Failure {
        kind,
        code,
        message,
    }
}

/// `USER` of `USER@…` / `ssh://USER@…` as typed.
fn typed_user(word: &str) -> Option<&str> {
    let rest = word.strip_prefix("ssh://").unwrap_or(word);
    rest.rsplit_once('@')
        .map(|(u, _)| u)
        .filter(|u| !u.is_empty())
}

/// The script run on the server (through the login shell, so wrapped in
/// `sh -c` whatever that shell is): finds `portcullis-preflight` also where
/// a non-root PATH does not look, and goes through `sudo -n` unless the
/// login is root (it reads LUKS headers and /boot).
pub fn remote_command(args: &[String]) -> String {
    let mut words = vec!["--json".to_string()];
    words.extend(args.iter().cloned());
    let args = shell::join(&words);
    let script = format!(
        "PATH=\"$PATH:/usr/local/sbin:/usr/sbin:/sbin\"; \
         p=$(command -v portcullis-preflight) || {{ echo 'portcullis-preflight: not found' >&2; exit {NOT_INSTALLED}; }}; \
         if [ \"$(id -u)\" = 0 ]; then exec \"$p\" {args}; else exec sudo -n \"$p\" {args}; fi"
    );
    format!("sh -c {}", shell::quote(&script))
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

/// How ssh is called besides the host: the ssh_config to use (`-F`, when
/// one was named), the admin's own `-o` options, the connect timeout.
#[derive(Debug, Clone, Default)]
pub struct SshSettings {
    pub config: Option<PathBuf>,
    pub options: Vec<String>,
    pub timeout: Duration,
}

/// ssh's arguments for `system`; `known_hosts` replaces ssh's files when
/// the inventory pins the system key. portcullis's own `-o` options come
/// first: ssh keeps the first value of an option, so the admin's cannot
/// turn host-key checking off.
pub fn ssh_args(
    system: &Target,
    login: Option<&str>,
    known_hosts: Option<&Path>,
    ssh: &SshSettings,
    command: &str,
) -> Vec<String> {
    let mut a: Vec<String> = [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ForwardAgent=no",
        "-o",
        "ForwardX11=no",
        "-o",
        "ClearAllForwardings=yes",
        "-o",
        "RequestTTY=no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push("-o".into());
    a.push(format!("ConnectTimeout={}", ssh.timeout.as_secs().max(1)));
    if let Some(kh) = known_hosts {
        a.push("-o".into());
        a.push(format!("UserKnownHostsFile={}", kh.display()));
        a.push("-o".into());
        a.push("GlobalKnownHostsFile=/dev/null".into());
    }
    for o in &ssh.options {
        a.push("-o".into());
        a.push(o.clone());
    }
    if let Some(f) = &ssh.config {
        a.push("-F".into());
        a.push(f.display().to_string());
    }
    a.push("-p".into());
    a.push(system.port.to_string());
    if let Some(u) = login {
        a.push("-l".into());
        a.push(u.into());
    }
    a.push("--".into());
    a.push(system.host.clone());
    a.push(command.into());
    a
}

/// The last line ssh or the check wrote on stderr that says something.
fn last_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no message")
        .to_string()
}

/// Turns what ssh returned into a report or a one-line reason. `name` is
/// the host as the admin named it, `system` where ssh went.
pub fn classify(
    name: &str,
    system: &Target,
    status: Option<i32>,
    stdout: &[u8],
    stderr: &str,
) -> Result<Report, Failure> {
    let says = |s: &str| stderr.contains(s);
    match status {
        Some(0 | 14 | 15) => match serde_json::from_slice::<Report>(stdout) {
            Ok(r) if r.format > FORMAT => Err(failure(
                "error",
                exit::ERROR,
                format!(
                    "{name}: portcullis-preflight there writes report format {}, newer than \
                     this client's {FORMAT}; update portcullis on this workstation",
                    r.format
                ),
            )),
            // Nothing checked is not a pass.
            Ok(r) if r.images.is_empty() => Err(failure(
                "error",
                exit::ERROR,
                format!("{name}: portcullis-preflight checked no image; run it there by hand"),
            )),
            Ok(r) => Ok(r),
            Err(e) => Err(failure(
                "error",
                exit::ERROR,
                format!(
                    "{name}: portcullis-preflight printed no readable report ({e}); update \
                     portcullis-initramfs on {name} to the version of this client"
                ),
            )),
        },
        Some(255)
            if says("REMOTE HOST IDENTIFICATION HAS CHANGED")
                || says("does not match the key pinned") =>
        {
            Err(failure(
                "host-key-changed",
                exit::HOST_KEY_CHANGED,
                format!(
                    "{name}: the running system's SSH host key at {system} is not the one \
                     known for it; nothing was checked. Check the key on the console, then \
                     fix ~/.ssh/known_hosts (or the inventory's system-fingerprint)"
                ),
            ))
        }
        Some(255) if says("host key is known for") || says("Host key verification failed") => {
            Err(failure(
                "host-key-unknown",
                exit::HOST_KEY_UNKNOWN,
                format!(
                    "{name}: the running system's SSH host key at {system} is not in \
                     ~/.ssh/known_hosts; connect once with ssh and check the key (or set \
                     the inventory's system-fingerprint)"
                ),
            ))
        }
        Some(255) if says("Permission denied") => Err(failure(
            "auth-refused",
            exit::AUTH_REFUSED,
            format!(
                "{name}: the running system at {system} refused the login ({}); log in as \
                 a user whose key it accepts (-l USER, or USER@{name})",
                text::line(&last_line(stderr))
            ),
        )),
        Some(255) => Err(failure(
            "unreachable",
            exit::UNREACHABLE,
            format!(
                "{name}: cannot reach the running system's SSH at {system}: {}",
                text::line(&last_line(stderr))
            ),
        )),
        Some(NOT_INSTALLED) => Err(failure(
            "not-installed",
            exit::ERROR,
            format!(
                "{name}: portcullis-preflight is not installed there; install (or upgrade) \
                 portcullis-initramfs on {name}"
            ),
        )),
        Some(_) if says("sudo:") && says("password") => Err(failure(
            "error",
            exit::ERROR,
            format!(
                "{name}: sudo asks for a password; log in as root (-l root) or let this \
                 user run portcullis-preflight with sudo without one (NOPASSWD)"
            ),
        )),
        Some(c) => Err(failure(
            "error",
            exit::ERROR,
            format!(
                "{name}: portcullis-preflight failed (exit {c}): {}",
                text::line(&last_line(stderr))
            ),
        )),
        None => Err(failure(
            "error",
            exit::ERROR,
            format!("{name}: ssh was killed by a signal"),
        )),
    }
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

/// A known-hosts file holding only the system key the inventory pins,
/// removed when dropped.
struct PinnedFile(PathBuf);

impl Drop for PinnedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Proves the system at `system` holds the pinned key and writes it where
/// ssh will look for it (ssh then checks the key itself, again).
async fn pinned_file(
    name: &str,
    system: &Target,
    pinned: &str,
    timeout: Duration,
) -> Result<PinnedFile, Failure> {
    let key = probe::host_key(system, timeout).await.map_err(|e| {
        failure(
            "unreachable",
            exit::UNREACHABLE,
            format!("{name}: cannot reach the running system's SSH: {e}"),
        )
    })?;
    let got = fingerprint(&key);
    if got != pinned {
        return Err(failure(
            "host-key-changed",
            exit::HOST_KEY_CHANGED,
            format!(
                "{name}: the running system at {system} offered {got}, which does not match \
                 the key pinned for it ({pinned}, the inventory's system-fingerprint); \
                 nothing was checked. Check the key on the console and fix the pin"
            ),
        ));
    }
    let write = || -> Result<PinnedFile> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "portcullis-preflight-{}-{n}.known_hosts",
            std::process::id()
        ));
        let line = known_hosts::pin_line(&known_hosts::host_id(&system.host, system.port), &key)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let file = PinnedFile(path);
        writeln!(f, "{line}").with_context(|| format!("writing {}", file.0.display()))?;
        Ok(file)
    };
    write().map_err(|e| failure("error", exit::ERROR, format!("{name}: {e:#}")))
}

/// Runs ssh and waits for it, within [`RUN_LIMIT`] past the connect
/// timeout.
async fn run_ssh(args: &[String], limit: Duration) -> Result<(Option<i32>, Vec<u8>, String)> {
    let mut child = tokio::process::Command::new("ssh")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow!("cannot run ssh (the OpenSSH client): {e}; install openssh-client"))?;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let work = async {
        let o = async {
            if let Some(s) = stdout {
                let _ = s.take(MAX_OUTPUT).read_to_end(&mut out).await;
            }
        };
        let e = async {
            if let Some(s) = stderr {
                let _ = s.take(MAX_OUTPUT).read_to_end(&mut err).await;
            }
        };
        tokio::join!(o, e);
        child.wait().await
    };
    let status = match tokio::time::timeout(limit, work).await {
        Ok(s) => s.context("waiting for ssh")?,
        Err(_) => bail!("no answer within {}", humantime::format_duration(limit)),
    };
    Ok((
        status.code(),
        out,
        String::from_utf8_lossy(&err).into_owned(),
    ))
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

/// The checklist of one report. (A stand-in, to be replaced by the
/// server binary's own renderer so both print the same.)
pub fn checklist(report: &Report) -> String {
    let mut out = String::new();
    for img in &report.images {
        let kernel = img
            .kernel
            .as_deref()
            .map(|k| format!(" (kernel {k})"))
            .unwrap_or_default();
        out.push_str(&format!("{}{kernel}\n", text::line(&img.image)));
        for c in &img.checks {
            let mark = match c.status {
                Status::Pass => "ok  ",
                Status::Skip => "skip",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!(
                "  {mark} {:<18} {}\n",
                text::line(&c.id),
                text::line(&c.summary)
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("       fix: {}\n", text::line(fix)));
            }
        }
    }
    out
}

/// Counts of failed and warning checks, e.g. `2 failed, 1 warning`.
fn counts(report: &Report) -> String {
    let n = |s: Status| {
        report
            .images
            .iter()
            .flat_map(|i| &i.checks)
            .filter(|c| c.status == s)
            .count()
    };
    let (f, w) = (n(Status::Fail), n(Status::Warn));
    let plural = |k: usize, word: &str| format!("{k} {word}{}", if k == 1 { "" } else { "s" });
    match (f, w) {
        (0, 0) => "every check passed".into(),
        (f, 0) => format!("{f} failed"),
        (0, w) => plural(w, "warning"),
        (f, w) => format!("{f} failed, {}", plural(w, "warning")),
    }
}

/// The verdict line of one host.
pub fn verdict(name: &str, report: &Report) -> String {
    let what = match report.verdict {
        Status::Pass | Status::Skip => "remote unlock should work after reboot",
        Status::Warn => "remote unlock should work after reboot, with warnings",
        Status::Fail => "REMOTE UNLOCK WILL FAIL after reboot",
    };
    format!("{name}: {what} ({})", counts(report))
}

/// The ids of the checks that did not pass, for the one-line fleet view.
fn not_passed(report: &Report) -> String {
    let mut ids: Vec<String> = Vec::new();
    for c in report.images.iter().flat_map(|i| &i.checks) {
        if matches!(c.status, Status::Fail | Status::Warn) && !ids.contains(&c.id) {
            ids.push(c.id.clone());
        }
    }
    ids.join(", ")
}

/// The fleet table: one line per host, then a summary.
pub fn table(records: &[Record]) -> String {
    let w = records
        .iter()
        .map(|r| r.host.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:<w$}  {:<16}  DETAIL\n", "HOST", "OUTCOME");
    for r in records {
        let detail = match &r.report {
            Some(rep) => match rep.verdict {
                Status::Pass | Status::Skip => counts(rep),
                _ => format!("{}: {}", counts(rep), not_passed(rep)),
            },
            None => r.detail.clone(),
        };
        out.push_str(&format!(
            "{:<w$}  {:<16}  {}\n",
            text::line(&r.host),
            r.outcome,
            text::line(&detail)
        ));
    }
    let mut tally: Vec<(&str, usize)> = Vec::new();
    for r in records {
        match tally.iter_mut().find(|(k, _)| *k == r.outcome) {
            Some((_, n)) => *n += 1,
            None => tally.push((r.outcome, 1)),
        }
    }
    let parts: Vec<String> = tally.iter().map(|(k, n)| format!("{n} {k}")).collect();
    out.push_str(&format!("{} hosts: {}\n", records.len(), parts.join(", ")));
    out
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
            Some(r) => {
                print!("{}", checklist(r));
                println!("{}", text::line(&verdict(&rec.host, r)));
            }
            None => eprintln!("error: {}", text::line(&rec.detail)),
        }
    }
    Ok(rec.exit_code)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::preflight::report::{AuthorizedKey, Check, ImageReport};

    const A: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn sys() -> Target {
        Target {
            host: "192.0.2.1".into(),
            port: 22,
        }
    }

    fn report(status: Status) -> Report {
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
    fn ssh_failures_become_one_clear_line() {
        let c = |code: i32, err: &str| classify("web1", &sys(), Some(code), b"", err).unwrap_err();
        let f = c(255, "No ED25519 host key is known for 192.0.2.1 and you have requested strict checking.\nHost key verification failed.\n");
        assert_eq!((f.kind, f.code), ("host-key-unknown", 3));
        let f = c(255, "@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.\n");
        assert_eq!((f.kind, f.code), ("host-key-changed", 4));
        let f = c(255, "root@192.0.2.1: Permission denied (publickey).\n");
        assert_eq!((f.kind, f.code), ("auth-refused", 5));
        assert!(f.message.contains("-l USER"), "{}", f.message);
        let f = c(
            255,
            "ssh: connect to host 192.0.2.1 port 22: Connection refused\n",
        );
        assert_eq!((f.kind, f.code), ("unreachable", 6));
        assert!(f.message.contains("Connection refused"));
        let f = c(127, "portcullis-preflight: not found\n");
        assert_eq!(f.kind, "not-installed");
        assert!(f
            .message
            .contains("install (or upgrade) portcullis-initramfs on web1"));
        let f = c(1, "sudo: a password is required\n");
        assert!(f.message.contains("NOPASSWD"), "{}", f.message);
        let f = c(1, "error: /boot/initrd.img: not a cpio archive\n\n");
        assert!(f.message.contains("not a cpio archive") && f.message.contains("exit 1"));
        let f = c(14, "");
        assert!(f.message.contains("no readable report"));
        let f = classify("web1", &sys(), None, b"", "").unwrap_err();
        assert_eq!(f.code, 1);
    }

    #[test]
    fn a_report_is_read_back_and_a_newer_format_refused() {
        let r = report(Status::Fail);
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(classify("w", &sys(), Some(14), &json, "").unwrap(), r);
        let mut newer = r.clone();
        newer.format = FORMAT + 1;
        let json = serde_json::to_vec(&newer).unwrap();
        let f = classify("w", &sys(), Some(14), &json, "").unwrap_err();
        assert!(f.message.contains("update portcullis on this workstation"));
        let empty = serde_json::to_vec(&Report::new(vec![])).unwrap();
        let f = classify("w", &sys(), Some(0), &empty, "").unwrap_err();
        assert!(f.message.contains("checked no image"), "{}", f.message);
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

    #[test]
    fn the_remote_command_is_one_quoted_shell_word_with_sudo_for_non_root() {
        let c = remote_command(&["--image".into(), "/boot/my image".into()]);
        assert!(c.starts_with("sh -c '"), "{c}");
        // Run it through a real shell with a fake portcullis-preflight and
        // a fake sudo: the arguments arrive intact.
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let script = |name: &str, body: &str| {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        script("portcullis-preflight", "printf '%s|' \"$@\"");
        script("sudo", "printf 'sudo|'; shift; exec \"$@\"");
        let want = "--json|--image|/boot/my image|";
        for (uid, expect) in [("0", want.to_string()), ("1000", format!("sudo|{want}"))] {
            // A fake `id`: both branches run whoever runs the test.
            script("id", &format!("echo {uid}"));
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&c)
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), expect, "uid {uid}");
        }
        // Not installed: the marker status (unless this machine has it).
        let installed = ["/usr/local/sbin", "/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join("portcullis-preflight").exists());
        if !installed {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&c)
                .env("PATH", "/nonexistent")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(NOT_INSTALLED));
            assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
        }
    }

    #[test]
    fn ssh_gets_strict_checking_and_the_login() {
        let a = ssh_args(
            &Target {
                host: "2001:db8::1".into(),
                port: 2200,
            },
            Some("ops"),
            Some(Path::new("/tmp/kh")),
            &SshSettings {
                config: Some("/home/a/cfg".into()),
                options: vec!["StrictHostKeyChecking=no".into()],
                timeout: Duration::from_secs(20),
            },
            "cmd",
        );
        let s = a.join(" ");
        assert!(
            s.contains("-o BatchMode=yes -o StrictHostKeyChecking=yes"),
            "{s}"
        );
        assert!(s.contains("UserKnownHostsFile=/tmp/kh"));
        // The admin's options come after ours: ssh keeps the first value.
        let ours = s.find("StrictHostKeyChecking=yes").unwrap();
        let theirs = s.find("StrictHostKeyChecking=no").unwrap();
        assert!(ours < theirs, "{s}");
        assert!(s.contains("-F /home/a/cfg -p 2200"), "{s}");
        assert!(s.ends_with("-p 2200 -l ops -- 2001:db8::1 cmd"), "{s}");
        assert_eq!(typed_user("ssh://ops@h:22"), Some("ops"));
        assert_eq!(typed_user("h"), None);
    }

    fn rec(host: &str, outcome: &'static str, st: Option<Status>) -> Record {
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
    fn fleet_exit_puts_a_failure_first_then_unchecked_hosts() {
        let pass = rec("a", "pass", Some(Status::Pass));
        let warn = rec("b", "warn", Some(Status::Warn));
        let fail = rec("c", "fail", Some(Status::Fail));
        let down = rec("d", "unreachable", None);
        assert_eq!(fleet_exit(&[pass.clone(), warn.clone()]), 15);
        assert_eq!(fleet_exit(&[pass.clone(), down.clone(), warn.clone()]), 11);
        assert_eq!(fleet_exit(&[down.clone(), fail.clone()]), 14);
        assert_eq!(fleet_exit(std::slice::from_ref(&pass)), 0);
        let t = table(&[pass, fail, down]);
        assert!(
            t.contains("c     fail              1 failed: nic-driver"),
            "{t}"
        );
        assert!(
            t.ends_with("3 hosts: 1 pass, 1 fail, 1 unreachable\n"),
            "{t}"
        );
    }
}
