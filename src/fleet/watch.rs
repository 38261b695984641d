//! `portcullis watch`: unattended unlocking. Every host is polled on its own
//! schedule; when its initramfs listener answers with the pinned key and has
//! a volume waiting, the configured approval (if any) is asked, the
//! passphrase is read from its source (a command or a file, never a prompt),
//! sent once, and the outcome logged.
//!
//! It never loops on a wrong passphrase: each failure doubles the wait
//! before the next attempt, and after `max_wrong` wrong answers the host is
//! left alone until it reboots (its listener seen again after being
//! unreachable or after the system was up). It never accepts a key it was
//! not told: inventory pins are required.

use super::probe::SystemPins;
use super::run::{look, wait_for_system, Seen};
use super::secrets::{self, Source};
use crate::authkeys::fingerprint;
use crate::client::{self, ClientError, Options, Target};
use crate::protocol::{Outcome, VolumeState};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// One host under watch.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub opts: Options,
    /// The pinned initramfs keys, any of which is accepted (required:
    /// watch never learns keys).
    pub fingerprints: Vec<String>,
    pub source: Source,
    pub system: Option<(Target, SystemPins)>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Time between two looks at the same host.
    pub interval: Duration,
    /// Wrong answers before a host is left alone until it reboots.
    pub max_wrong: u32,
    /// First pause after a failed attempt; doubled each time.
    pub backoff: Duration,
    /// Longest pause between attempts.
    pub backoff_max: Duration,
    /// `approve-command`, run via `sh -c` before each unlock.
    pub approve_command: Option<String>,
    pub approve_timeout: Duration,
    /// Log the time until the system answers (when pinned); `None`: don't.
    pub up_timeout: Option<Duration>,
    /// Hosts talked to at once.
    pub parallel: usize,
}

/// What the last look at a host found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Last {
    Never,
    Initramfs,
    /// Nothing answered.
    Down,
    /// The system (or any key other than the initramfs's) answered.
    NotInitramfs(String),
}

/// How an attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Unlocked,
    Wrong,
    /// The listener will not try again this boot.
    NoTriesLeft,
    /// Anything else (approval refused, source failed, server error…).
    Failed,
}

/// The per-host retry policy; pure so it can be tested without a network.
#[derive(Debug, Clone)]
pub struct HostState {
    pub last: Last,
    pub wrong: u32,
    /// Consecutive failed attempts; drives the backoff.
    pub failures: u32,
    pub retry_at: Option<Instant>,
    /// Left alone until the next boot.
    pub given_up: bool,
}

impl Default for HostState {
    fn default() -> Self {
        HostState {
            last: Last::Never,
            wrong: 0,
            failures: 0,
            retry_at: None,
            given_up: false,
        }
    }
}

impl HostState {
    /// Records what answered. Returns true when the initramfs is back after
    /// the host was down or up: a new boot, which clears the counters.
    pub fn observe(&mut self, seen: Last) -> bool {
        let new_boot =
            seen == Last::Initramfs && matches!(self.last, Last::Down | Last::NotInitramfs(_));
        if new_boot {
            self.wrong = 0;
            self.failures = 0;
            self.retry_at = None;
            self.given_up = false;
        }
        self.last = seen;
        new_boot
    }

    pub fn may_try(&self, now: Instant) -> bool {
        !self.given_up && self.retry_at.is_none_or(|t| now >= t)
    }

    /// Records an attempt; returns the pause before the next one (`None`
    /// when there is none: success, or given up).
    pub fn record(&mut self, a: Attempt, now: Instant, s: &Settings) -> Option<Duration> {
        match a {
            Attempt::Unlocked => {
                self.wrong = 0;
                self.failures = 0;
                self.retry_at = None;
                return None;
            }
            Attempt::NoTriesLeft => {
                self.given_up = true;
                return None;
            }
            Attempt::Wrong => {
                self.wrong += 1;
                if self.wrong >= s.max_wrong {
                    self.given_up = true;
                    return None;
                }
            }
            Attempt::Failed => {}
        }
        self.failures += 1;
        let factor = 1u32 << self.failures.saturating_sub(1).min(20);
        let pause = s.backoff.saturating_mul(factor).min(s.backoff_max);
        self.retry_at = Some(now + pause);
        Some(pause)
    }
}

/// Watches every host until `stop` completes.
pub async fn run(
    hosts: Vec<Watched>,
    settings: Settings,
    stop: impl std::future::Future<Output = ()>,
) {
    let settings = Arc::new(settings);
    let sem = Arc::new(Semaphore::new(settings.parallel.max(1)));
    let n = hosts.len().max(1) as u32;
    tracing::info!(
        hosts = hosts.len(),
        interval = ?settings.interval,
        approval = settings.approve_command.is_some(),
        "watching"
    );
    let mut tasks = tokio::task::JoinSet::new();
    for (i, h) in hosts.into_iter().enumerate() {
        // Spread the first looks over one interval so a large fleet is not
        // polled in one burst.
        let offset = settings.interval / n * i as u32;
        let (settings, sem) = (settings.clone(), sem.clone());
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            watch_host(h, settings, sem).await
        });
    }
    stop.await;
    tasks.abort_all();
    tracing::info!("watch stopped");
}

async fn watch_host(h: Watched, s: Arc<Settings>, sem: Arc<Semaphore>) {
    let mut st = HostState::default();
    let host = h.name.as_str();
    let timeout = h.opts.connect_timeout;
    loop {
        let seen = match look(&sem, &h.opts.target, timeout).await {
            Seen::Nothing(why) => {
                if st.last != Last::Down {
                    tracing::info!(host, "initramfs listener not answering ({why})");
                }
                Last::Down
            }
            Seen::Key(k) if h.fingerprints.contains(&fingerprint(&k)) => Last::Initramfs,
            Seen::Key(k) => {
                let fp = fingerprint(&k);
                if st.last != Last::NotInitramfs(fp.clone()) {
                    match &h.system {
                        Some((_, pins)) if pins.matches(&k) => {
                            tracing::info!(host, "the system is up (pinned system key)")
                        }
                        _ => tracing::warn!(
                            host,
                            key = %fp,
                            "{} answered with a key that is not the pinned initramfs key; \
                             sending nothing. If this is the booted system, pin it as \
                             system-fingerprint",
                            h.opts.target
                        ),
                    }
                }
                Last::NotInitramfs(fp)
            }
        };
        let initramfs = seen == Last::Initramfs;
        if st.observe(seen) {
            tracing::info!(
                host,
                "initramfs back after being down: a new boot; counters reset"
            );
        }
        if initramfs && st.given_up {
            tracing::debug!(host, "left alone until it reboots");
        } else if initramfs && st.may_try(Instant::now()) {
            attempt(&h, &s, &sem, &mut st).await;
        }
        tokio::time::sleep(s.interval).await;
    }
}

/// Asks for approval (if configured); `Ok(true)` when the command exited 0.
async fn approve(cmd: &str, h: &Watched, attempt: u32, timeout: Duration) -> anyhow::Result<bool> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("PORTCULLIS_HOST", &h.name)
        .env("PORTCULLIS_TARGET", h.opts.target.to_string())
        // Space-separated when a key is being rotated.
        .env("PORTCULLIS_FINGERPRINT", h.fingerprints.join(" "))
        .env("PORTCULLIS_ATTEMPT", attempt.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("running approve-command {cmd:?}: {e}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) => Ok(st.success()),
        Ok(Err(e)) => Err(anyhow::anyhow!("waiting for approve-command {cmd:?}: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            Err(anyhow::anyhow!(
                "approve-command {cmd:?} gave no answer within {timeout:?}"
            ))
        }
    }
}

/// One try at a host whose listener answered with the pinned key.
async fn attempt(h: &Watched, s: &Settings, sem: &Semaphore, st: &mut HostState) {
    let host = h.name.as_str();
    let fail = |st: &mut HostState, a: Attempt, why: &str| match st.record(a, Instant::now(), s) {
        Some(pause) => tracing::warn!(host, "{why}; next attempt in {pause:?}"),
        None if st.given_up => {
            tracing::error!(host, "{why}; giving up on this host until it reboots")
        }
        None => {}
    };
    let status = {
        let _turn = sem.acquire().await;
        client::status(&h.opts).await
    };
    let volumes = match status {
        Ok(s) => s.volumes,
        Err(e @ ClientError::HostKeyChanged { .. }) => {
            tracing::error!(host, "{e}");
            return fail(st, Attempt::Failed, "host key changed");
        }
        Err(e) => return fail(st, Attempt::Failed, &format!("status failed: {e}")),
    };
    let pending: Vec<&str> = volumes
        .iter()
        .filter(|v| v.state == VolumeState::Pending)
        .map(|v| v.name.as_str())
        .collect();
    if pending.is_empty() {
        if volumes.iter().any(|v| v.state == VolumeState::Exhausted) {
            return fail(st, Attempt::NoTriesLeft, "no tries left on the listener");
        }
        tracing::debug!(host, "listener up, nothing waiting");
        return;
    }
    let n = st.failures + 1;
    tracing::info!(host, volumes = %pending.join(","), attempt = n, "waiting for a passphrase");
    if let Some(cmd) = &s.approve_command {
        tracing::info!(host, "asking approve-command");
        match approve(cmd, h, n, s.approve_timeout).await {
            Ok(true) => tracing::info!(host, "approved"),
            Ok(false) => return fail(st, Attempt::Failed, "approve-command said no"),
            Err(e) => return fail(st, Attempt::Failed, &format!("{e:#}")),
        }
    }
    // Read for this attempt only; dropped (and wiped) right after.
    let source = h.source.clone();
    let name = h.name.clone();
    let pass = match tokio::task::spawn_blocking(move || secrets::read(&source, &name)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            return fail(
                st,
                Attempt::Failed,
                &format!("reading the passphrase: {e:#}"),
            )
        }
        Err(e) => return fail(st, Attempt::Failed, &format!("reading the passphrase: {e}")),
    };
    tracing::info!(host, "sending the passphrase");
    let reply = {
        let _turn = sem.acquire().await;
        client::unlock(&h.opts, &pass).await
    };
    drop(pass);
    let unlocked_at = Instant::now();
    let reply = match reply {
        Ok(r) => r,
        Err(e) => return fail(st, Attempt::Failed, &format!("unlock failed: {e}")),
    };
    let what = crate::protocol::describe_unlock(&reply);
    match reply.outcome {
        Outcome::Unlocked | Outcome::NothingToUnlock => {
            tracing::info!(host, "{what}");
            st.record(Attempt::Unlocked, Instant::now(), s);
        }
        Outcome::WrongPassphrase | Outcome::Partial => {
            let why = format!("{what} (wrong answer {} of {})", st.wrong + 1, s.max_wrong);
            return fail(st, Attempt::Wrong, &why);
        }
        Outcome::NoTriesLeft => return fail(st, Attempt::NoTriesLeft, &what),
        Outcome::Failed => return fail(st, Attempt::Failed, &what),
    }
    if let (Some(up), Some((sys, pins))) = (s.up_timeout, &h.system) {
        // The pinned initramfs key on the system's address means "still
        // booting" (the listener draining on a shared port).
        let poll = Duration::from_secs(2);
        let timeout = h.opts.connect_timeout;
        match wait_for_system(
            sys,
            pins,
            &h.fingerprints,
            unlocked_at,
            up,
            poll,
            timeout,
            sem,
        )
        .await
        {
            Ok(d) => tracing::info!(host, time_to_up = ?d, "the system is up"),
            Err((o, detail)) => tracing::error!(host, outcome = o.name(), "{detail}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            interval: Duration::from_secs(30),
            max_wrong: 3,
            backoff: Duration::from_secs(60),
            backoff_max: Duration::from_secs(3600),
            approve_command: None,
            approve_timeout: Duration::from_secs(60),
            up_timeout: None,
            parallel: 1,
        }
    }

    #[test]
    fn backs_off_then_gives_up_until_a_new_boot() {
        let s = settings();
        let t0 = Instant::now();
        let mut st = HostState::default();
        assert!(!st.observe(Last::Initramfs), "first sight is not a reboot");
        assert!(st.may_try(t0));
        assert_eq!(
            st.record(Attempt::Wrong, t0, &s),
            Some(Duration::from_secs(60))
        );
        assert!(!st.may_try(t0 + Duration::from_secs(59)));
        assert!(st.may_try(t0 + Duration::from_secs(60)));
        assert_eq!(
            st.record(Attempt::Failed, t0, &s),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            st.record(Attempt::Wrong, t0, &s),
            Some(Duration::from_secs(240))
        );
        // Third wrong answer: left alone, however long we wait.
        assert_eq!(st.record(Attempt::Wrong, t0, &s), None);
        assert!(st.given_up);
        assert!(!st.may_try(t0 + Duration::from_secs(86400)));
        // Still in the same boot: nothing changes.
        assert!(!st.observe(Last::Initramfs));
        assert!(st.given_up);
        // Gone, then back: a new boot.
        st.observe(Last::Down);
        assert!(st.observe(Last::Initramfs));
        assert!(!st.given_up && st.wrong == 0 && st.may_try(t0));
        // Seeing the system up also marks a boot boundary.
        st.record(Attempt::NoTriesLeft, t0, &s);
        assert!(st.given_up);
        st.observe(Last::NotInitramfs("SHA256:sys".into()));
        assert!(st.observe(Last::Initramfs));
        assert!(!st.given_up);
    }

    #[test]
    fn backoff_is_capped_and_reset_by_success() {
        let s = Settings {
            max_wrong: 100,
            ..settings()
        };
        let t0 = Instant::now();
        let mut st = HostState::default();
        let mut last = None;
        for _ in 0..40 {
            last = st.record(Attempt::Failed, t0, &s);
        }
        assert_eq!(last, Some(Duration::from_secs(3600)));
        assert_eq!(st.record(Attempt::Unlocked, t0, &s), None);
        assert_eq!(st.failures, 0);
        assert!(st.may_try(t0));
    }
}
