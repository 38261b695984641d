//! Unlocking many hosts at once: one tokio task per host, a semaphore
//! bounding how many talk to the network at a time, and a report per host.
//! One host failing never stops the others.
//!
//! Per host: connect to the listener (retrying while the host is still
//! booting) and send the passphrase once in that same connection, then
//! wait until the real system answers with its own, separately pinned key. The passphrase is never re-sent after it left:
//! a lost reply is reported, not retried, since a retry of a wrong
//! passphrase would burn one of the host's tries.

use super::probe::{self, SystemPins};
use crate::authkeys::fingerprint;
use crate::client::{self, ClientError, Options, Target};
use crate::protocol::{exit, Outcome, UnlockReply};
use crate::secret::Passphrase;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

/// One host to unlock.
pub struct Plan {
    pub name: String,
    pub opts: Options,
    /// Where and how to recognise the booted system; `None`: do not wait.
    pub system: Option<(Target, SystemPins)>,
    pub pass: Arc<Passphrase>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Hosts talked to at once.
    pub parallel: usize,
    /// Keep trying a listener that does not answer this long (`None`: once).
    pub listener_wait: Option<Duration>,
    /// Wait for the system after unlocking (`None`: `--no-wait-up`).
    pub up_timeout: Option<Duration>,
    /// Longest pause between two tries of the same host. Tries start at
    /// [`FIRST_POLL`] and back off to this, so a host that comes up quickly
    /// is seen within a fraction of a second and a slow one is not hammered.
    pub poll: Duration,
}

/// First pause between two tries of the same host.
pub const FIRST_POLL: Duration = Duration::from_millis(100);

/// The pause after `cur`: doubled, at most `max` (and never below `FIRST_POLL`
/// unless `max` is smaller).
pub fn next_poll(cur: Duration, max: Duration) -> Duration {
    (cur * 2).clamp(FIRST_POLL.min(max), max)
}

/// Where a host is, for the live display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Waiting for a turn or for the listener to answer.
    Waiting,
    /// Passphrase sent, waiting for the reply.
    Unlocking,
    /// Unlocked; waiting for the system's SSH server.
    Booting,
    /// Finished well (set by the display from the report).
    Done,
    /// Finished badly (set by the display from the report).
    Failed,
}

/// How one host ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostOutcome {
    /// Unlocked, and the system answered with its pinned key.
    Up,
    /// The system answered with its pinned key before we unlocked anything.
    AlreadyUp,
    /// Unlocked; not waited for (`--no-wait-up`, or no system key pinned).
    Unlocked,
    /// The listener had nothing waiting (opened from elsewhere).
    NothingToUnlock,
    WrongPassphrase,
    Partial,
    NoTriesLeft,
    UnlockFailed,
    HostKeyUnknown,
    HostKeyChanged,
    /// The key is marked `@revoked` in the known-hosts file.
    HostKeyRevoked,
    AuthRefused,
    Unreachable,
    Error,
    /// Unlocked, but the system answered with a key that is neither pinned
    /// nor the initramfs's.
    SystemKeyChanged,
    /// Unlocked, but the system did not answer in time.
    UpTimeout,
    /// The passphrase was sent but no answer came back.
    ReplyLost,
}

impl HostOutcome {
    pub fn success(self) -> bool {
        matches!(
            self,
            HostOutcome::Up
                | HostOutcome::AlreadyUp
                | HostOutcome::Unlocked
                | HostOutcome::NothingToUnlock
        )
    }

    /// The exit code the single-host command would give.
    pub fn exit_code(self) -> u8 {
        match self {
            HostOutcome::Up
            | HostOutcome::AlreadyUp
            | HostOutcome::Unlocked
            | HostOutcome::NothingToUnlock => exit::UNLOCKED,
            HostOutcome::WrongPassphrase => exit::WRONG_PASSPHRASE,
            HostOutcome::Partial => exit::PARTIAL,
            HostOutcome::NoTriesLeft => exit::NO_TRIES_LEFT,
            HostOutcome::UnlockFailed => exit::UNLOCK_FAILED,
            HostOutcome::HostKeyUnknown => exit::HOST_KEY_UNKNOWN,
            HostOutcome::HostKeyChanged
            | HostOutcome::HostKeyRevoked
            | HostOutcome::SystemKeyChanged => exit::HOST_KEY_CHANGED,
            HostOutcome::AuthRefused => exit::AUTH_REFUSED,
            HostOutcome::Unreachable | HostOutcome::UpTimeout => exit::UNREACHABLE,
            HostOutcome::ReplyLost => exit::REPLY_LOST,
            HostOutcome::Error => exit::ERROR,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            HostOutcome::Up => "up",
            HostOutcome::AlreadyUp => "already-up",
            HostOutcome::Unlocked => "unlocked",
            HostOutcome::NothingToUnlock => "nothing-to-unlock",
            HostOutcome::WrongPassphrase => "wrong-passphrase",
            HostOutcome::Partial => "partial",
            HostOutcome::NoTriesLeft => "no-tries-left",
            HostOutcome::UnlockFailed => "unlock-failed",
            HostOutcome::HostKeyUnknown => "host-key-unknown",
            HostOutcome::HostKeyChanged => "host-key-changed",
            HostOutcome::HostKeyRevoked => "host-key-revoked",
            HostOutcome::AuthRefused => "auth-refused",
            HostOutcome::Unreachable => "unreachable",
            HostOutcome::Error => "error",
            HostOutcome::SystemKeyChanged => "system-key-changed",
            HostOutcome::UpTimeout => "up-timeout",
            HostOutcome::ReplyLost => "reply-lost",
        }
    }

    fn from_unlock(o: Outcome) -> Self {
        match o {
            Outcome::Unlocked => HostOutcome::Unlocked,
            Outcome::NothingToUnlock => HostOutcome::NothingToUnlock,
            Outcome::Partial => HostOutcome::Partial,
            Outcome::WrongPassphrase => HostOutcome::WrongPassphrase,
            Outcome::NoTriesLeft => HostOutcome::NoTriesLeft,
            Outcome::Failed => HostOutcome::UnlockFailed,
        }
    }

    fn from_error(e: &ClientError) -> Self {
        match e {
            ClientError::HostKeyUnknown { .. } => HostOutcome::HostKeyUnknown,
            ClientError::HostKeyChanged { .. } => HostOutcome::HostKeyChanged,
            // The same name the single-host JSON gives (`host-key-revoked`).
            ClientError::HostKeyRevoked { .. } => HostOutcome::HostKeyRevoked,
            ClientError::AuthRefused(_) => HostOutcome::AuthRefused,
            ClientError::Unreachable(_) | ClientError::Busy(_) => HostOutcome::Unreachable,
            ClientError::ReplyLost(_) => HostOutcome::ReplyLost,
            ClientError::SystemUp { .. } => HostOutcome::AlreadyUp,
            ClientError::Other(_) => HostOutcome::Error,
        }
    }
}

/// The result for one host. Holds no secret: the passphrase stays in its
/// `Arc` and never reaches a report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    pub host: String,
    pub target: String,
    pub outcome: HostOutcome,
    pub exit_code: u8,
    /// The listener's reply, when the passphrase was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlock: Option<UnlockReply>,
    /// Seconds from the start of the run until the unlock reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlocked_after: Option<f64>,
    /// Seconds from the unlock reply until the system answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_up: Option<f64>,
    /// What went wrong, or a note on success; empty when nothing to say.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Report {
    /// The record of a single-host unlock: the same schema as a fleet
    /// host's, with the single-host exit code (7 for nothing to unlock).
    pub fn single(name: &str, target: &Target, result: Result<UnlockReply, ClientError>) -> Report {
        let (outcome, exit_code, detail, unlock) = match result {
            Ok(reply) => (
                HostOutcome::from_unlock(reply.outcome),
                reply.outcome.exit_code(),
                crate::protocol::describe_unlock(&reply),
                Some(reply),
            ),
            Err(e) => (
                HostOutcome::from_error(&e),
                e.exit_code(),
                e.to_string(),
                None,
            ),
        };
        Report {
            host: name.to_string(),
            target: target.to_string(),
            outcome,
            exit_code,
            unlock,
            unlocked_after: None,
            time_to_up: None,
            detail,
        }
    }
}

/// A change the display shows: host `index` entered `phase`.
#[derive(Debug, Clone)]
pub enum Event {
    Phase { index: usize, phase: Phase },
    Finished { index: usize, report: Box<Report> },
}

/// Unlocks every planned host; reports come back in plan order. Progress
/// goes to `events` when given (the receiver may be dropped at any time).
pub async fn run(
    plans: Vec<Plan>,
    settings: &Settings,
    events: Option<mpsc::UnboundedSender<Event>>,
) -> Vec<Report> {
    let sem = Arc::new(Semaphore::new(settings.parallel.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(plans.len());
    for (index, plan) in plans.into_iter().enumerate() {
        let sem = sem.clone();
        let settings = settings.clone();
        let events = events.clone();
        let name = plan.name.clone();
        let target = plan.opts.target.to_string();
        let task = tokio::spawn(async move {
            let tell = |phase| {
                if let Some(tx) = &events {
                    let _ = tx.send(Event::Phase { index, phase });
                }
            };
            let report = one(&plan, &settings, &sem, start, &tell).await;
            if let Some(tx) = &events {
                let _ = tx.send(Event::Finished {
                    index,
                    report: Box::new(report.clone()),
                });
            }
            report
        });
        tasks.push((name, target, task));
    }
    let mut reports = Vec::with_capacity(tasks.len());
    for (host, target, t) in tasks {
        reports.push(t.await.unwrap_or_else(|e| Report {
            host,
            target,
            outcome: HostOutcome::Error,
            exit_code: exit::ERROR,
            unlock: None,
            unlocked_after: None,
            time_to_up: None,
            detail: format!("internal error: {e}"),
        }));
    }
    reports
}

fn report(plan: &Plan, outcome: HostOutcome, detail: String) -> Report {
    Report {
        host: plan.name.clone(),
        target: plan.opts.target.to_string(),
        outcome,
        exit_code: outcome.exit_code(),
        unlock: None,
        unlocked_after: None,
        time_to_up: None,
        detail,
    }
}

/// What answered at an address.
pub(super) enum Seen {
    Key(russh::keys::PublicKey),
    Nothing(String),
}

pub(super) async fn look(sem: &Semaphore, target: &Target, timeout: Duration) -> Seen {
    let _turn = sem.acquire().await;
    match probe::host_key(target, timeout).await {
        Ok(k) => Seen::Key(k),
        Err(e) => Seen::Nothing(e.to_string()),
    }
}

async fn one(
    plan: &Plan,
    s: &Settings,
    sem: &Semaphore,
    start: Instant,
    tell: &impl Fn(Phase),
) -> Report {
    tell(Phase::Waiting);
    let timeout = plan.opts.connect_timeout;
    let deadline = s.listener_wait.map(|w| Instant::now() + w);
    let mut pause = FIRST_POLL.min(s.poll);
    // A server at the listener's address proving a system key means the
    // system is up: the client refuses it before the host-key policy and
    // before any login, so nothing is pinned and nothing is sent.
    let system_keys: &[String] = plan
        .system
        .as_ref()
        .map_or(&[], |(_, p)| p.fingerprints.as_slice());
    // 1. and 2. in one connection (the host may still be booting): verify
    // the pinned initramfs key (fail closed), authenticate, send the
    // passphrase once. A key probe first would cost every host (and every
    // listener) a second key exchange.
    let (reply, initramfs_fp) = loop {
        let r = {
            let _turn = sem.acquire().await;
            tell(Phase::Unlocking);
            client::unlock_unless_up(&plan.opts, &plan.pass, system_keys).await
        };
        match r {
            Ok(r) => break r,
            Err(ClientError::SystemUp { .. }) => {
                return report(
                    plan,
                    HostOutcome::AlreadyUp,
                    "the system answered with its pinned key; nothing to unlock".into(),
                );
            }
            // Nothing was sent: the listener could not be used yet.
            Err(ClientError::Unreachable(why) | ClientError::Busy(why)) => {
                tell(Phase::Waiting);
                // The listener may be gone because the system is up on
                // another address or port.
                if let Some((sys, pins)) = &plan.system {
                    if *sys != plan.opts.target {
                        if let Seen::Key(k) = look(sem, sys, timeout).await {
                            if pins.matches(&k) {
                                return report(
                                    plan,
                                    HostOutcome::AlreadyUp,
                                    format!("the system answered at {sys} with its pinned key"),
                                );
                            }
                        }
                    }
                }
                if deadline.is_some_and(|d| Instant::now() + pause < d) {
                    tokio::time::sleep(pause).await;
                    pause = next_poll(pause, s.poll);
                    continue;
                }
                return report(plan, HostOutcome::Unreachable, why);
            }
            Err(ClientError::HostKeyUnknown { fingerprint, .. }) => {
                // The single-host hint (--fingerprint, a terminal) does not
                // fit a fleet: say where the pin goes instead.
                return report(
                    plan,
                    HostOutcome::HostKeyUnknown,
                    format!(
                        "initramfs key {fingerprint} is not pinned: compare it with what \
                         `portcullisd keygen` printed, then add fingerprint = \"{fingerprint}\" \
                         to this host in the inventory (or run once with --accept-new)"
                    ),
                );
            }
            Err(e) => {
                return report(plan, HostOutcome::from_error(&e), e.to_string());
            }
        }
    };
    let unlocked_at = Instant::now();
    let mut r = report(plan, HostOutcome::from_unlock(reply.outcome), String::new());
    r.detail = crate::protocol::describe_unlock(&reply);
    r.unlock = Some(reply);
    if !r.outcome.success() {
        // Nothing was unlocked: no `unlocked-after` on a failed record.
        return r;
    }
    r.unlocked_after = Some(unlocked_at.duration_since(start).as_secs_f64());

    // 3. Wait for the system.
    let Some(up_timeout) = s.up_timeout else {
        return r;
    };
    let Some((sys, pins)) = &plan.system else {
        r.detail = format!(
            "{}; not waiting for the system: no system-fingerprint pinned and none in known_hosts",
            r.detail
        );
        return r;
    };
    tell(Phase::Booting);
    match wait_for_system(
        sys,
        pins,
        std::slice::from_ref(&initramfs_fp),
        unlocked_at,
        up_timeout,
        s.poll,
        timeout,
        sem,
    )
    .await
    {
        Ok(d) => {
            r.outcome = HostOutcome::Up;
            r.time_to_up = Some(d.as_secs_f64());
        }
        Err((outcome, detail)) => {
            r.outcome = outcome;
            r.detail = detail;
        }
    }
    r.exit_code = r.outcome.exit_code();
    r
}

/// Polls `sys` until it proves it holds a pinned system key; returns the
/// time since `since`. The initramfs key on the same address means "still
/// booting" (a listener draining on a shared port); any other key is a
/// failure, never "up".
#[allow(clippy::too_many_arguments)]
pub(super) async fn wait_for_system(
    sys: &Target,
    pins: &SystemPins,
    initramfs_fps: &[String],
    since: Instant,
    up_timeout: Duration,
    poll: Duration,
    timeout: Duration,
    sem: &Semaphore,
) -> Result<Duration, (HostOutcome, String)> {
    let deadline = since + up_timeout;
    let mut pause = FIRST_POLL.min(poll);
    loop {
        match look(sem, sys, timeout).await {
            Seen::Key(k) if pins.matches(&k) => return Ok(since.elapsed()),
            Seen::Key(k) if initramfs_fps.contains(&fingerprint(&k)) => {}
            Seen::Key(k) => {
                return Err((
                    HostOutcome::SystemKeyChanged,
                    format!(
                        "unlocked, but {sys} answered with {} {}, which is neither the pinned \
                         system key (from {}) nor the initramfs key; not trusting it. If the \
                         system's key was regenerated, check it on the console and update the pin",
                        k.algorithm(),
                        fingerprint(&k),
                        pins.from
                    ),
                ))
            }
            Seen::Nothing(_) => {}
        }
        if Instant::now() + pause >= deadline {
            return Err((
                HostOutcome::UpTimeout,
                format!("unlocked, but the system did not answer at {sys} within {up_timeout:?}"),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = next_poll(pause, poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_from_a_fraction_of_a_second() {
        let max = Duration::from_secs(1);
        let mut p = FIRST_POLL.min(max);
        let mut seen = vec![p];
        for _ in 0..6 {
            p = next_poll(p, max);
            seen.push(p);
        }
        let ms: Vec<u128> = seen.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000, 1000]);
        // A configured maximum below the first pause is honoured.
        let tiny = Duration::from_millis(20);
        assert_eq!(next_poll(FIRST_POLL.min(tiny), tiny), tiny);
    }
}
