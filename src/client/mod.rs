//! The admin's side: connect to a listener, verify its host key (failing
//! closed), authenticate with the agent or key files, and run `unlock` or
//! `status` in machine mode. It never touches local disks except its own
//! known-hosts file.

pub mod known_hosts;
pub mod passphrase;
pub mod pins;
pub mod preflight;
pub mod probe;
pub mod relayed;
pub mod report;
pub mod settings;
pub mod tty;

use crate::authkeys::fingerprint;
use crate::protocol::{self, exit, StatusReply, UnlockReply};
use crate::secret::Passphrase;
use anyhow::{anyhow, Context, Result};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, Disconnect};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes we accept from a listener's reply: a hostile server must not
/// make us allocate without bound.
const MAX_REPLY: usize = 1 << 20;

/// `HOST[:PORT]` or `[V6]:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// Why a `HOST[:PORT]` was refused; each says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0:?} is not HOST, HOST:PORT or [IPV6]:PORT")]
    Malformed(String),
    #[error("{0:?}: port 0 cannot be connected to; write the listener's port (1-65535)")]
    PortZero(String),
}

impl Target {
    pub fn parse(s: &str) -> Result<Self, TargetError> {
        let t = Self::parse_any_port(s)?;
        if t.port == 0 {
            return Err(TargetError::PortZero(crate::text::clip_plain(s)));
        }
        Ok(t)
    }

    fn parse_any_port(s: &str) -> Result<Self, TargetError> {
        let bad = || TargetError::Malformed(crate::text::clip_plain(s));
        if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => 22,
                None => return Err(bad()),
            };
            if host.is_empty() {
                return Err(bad());
            }
            return Ok(Target {
                host: host.into(),
                port,
            });
        }
        match s.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => {
                if h.is_empty() {
                    return Err(bad());
                }
                Ok(Target {
                    host: h.into(),
                    port: p.parse().map_err(|_| bad())?,
                })
            }
            _ if s.is_empty() => Err(bad()),
            _ => Ok(Target {
                host: s.into(),
                port: 22,
            }),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How the initramfs host key is verified. There is no "accept anything".
#[derive(Debug, Clone)]
pub enum HostKeyPolicy {
    /// Exactly this `SHA256:…` fingerprint (`--fingerprint` where there is
    /// no known-hosts file at all, so nothing can revoke it).
    Fingerprint(String),
    /// Any of these fingerprints: an inventory lists the old and the new
    /// key while a host key is rotated. A key `@revoked` in `revoked_in`
    /// (portcullis's known-hosts file, when there is one) is refused even
    /// when listed.
    Fingerprints {
        fingerprints: Vec<String>,
        revoked_in: Option<PathBuf>,
    },
    /// Exactly this fingerprint, given by the admin (`--fingerprint`); a
    /// match is pinned in `known_hosts` (replacing older pins for the
    /// host), so the next run needs no flag. A key revoked there is refused.
    Confirm {
        fingerprint: String,
        known_hosts: PathBuf,
    },
    /// portcullis's known-hosts file. Unknown keys are shown and asked about
    /// on a terminal when `ask` is set, pinned without asking with
    /// `accept_new`, else refused. Fleet runs clear `ask`: many hosts asking
    /// at once on one terminal would garble the questions.
    KnownHosts {
        path: PathBuf,
        accept_new: bool,
        ask: bool,
    },
}

/// Errors the caller tells apart by exit code.
#[derive(Debug)]
pub enum ClientError {
    HostKeyUnknown {
        fingerprint: String,
        hint: String,
    },
    HostKeyChanged {
        expected: String,
        got: String,
        hint: String,
    },
    /// The offered key is marked `@revoked` in a known-hosts file.
    HostKeyRevoked {
        fingerprint: String,
        file: String,
        line: usize,
    },
    AuthRefused(String),
    Unreachable(String),
    /// The listener is up but refuses new connections for now (its
    /// pre-authentication table is full: a flood, or many admins at once).
    Busy(String),
    /// The passphrase left, but no answer came back: it may or may not
    /// have opened the volumes. Never "unreachable": retrying blindly
    /// could burn a try.
    ReplyLost(String),
    /// The server proved it holds one of the booted system's keys (see
    /// [`unlock_unless_up`]): the system is up, nothing was sent.
    SystemUp {
        fingerprint: String,
    },
    Other(anyhow::Error),
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::HostKeyUnknown { .. } => exit::HOST_KEY_UNKNOWN,
            ClientError::HostKeyChanged { .. } | ClientError::HostKeyRevoked { .. } => {
                exit::HOST_KEY_CHANGED
            }
            ClientError::AuthRefused(_) => exit::AUTH_REFUSED,
            // Busy is "could not get in now", like unreachable.
            ClientError::Unreachable(_) | ClientError::Busy(_) => exit::UNREACHABLE,
            ClientError::ReplyLost(_) => exit::REPLY_LOST,
            // Nothing left to unlock, as `already-up` says.
            ClientError::SystemUp { .. } => exit::UNLOCKED,
            ClientError::Other(_) => exit::ERROR,
        }
    }

    /// Short machine name for `--json`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::HostKeyUnknown { .. } => "host-key-unknown",
            ClientError::HostKeyChanged { .. } => "host-key-changed",
            ClientError::HostKeyRevoked { .. } => "host-key-revoked",
            ClientError::AuthRefused(_) => "auth-refused",
            ClientError::Unreachable(_) => "unreachable",
            ClientError::Busy(_) => "busy",
            ClientError::ReplyLost(_) => "reply-lost",
            ClientError::SystemUp { .. } => "already-up",
            ClientError::Other(_) => "error",
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::HostKeyUnknown { fingerprint, hint } => {
                write!(f, "host key {fingerprint} is not pinned; {hint}")
            }
            ClientError::HostKeyChanged {
                expected,
                got,
                hint,
            } => write!(
                f,
                "HOST KEY CHANGED: expected {expected}, server offered {got}. Refusing to send a \
                 passphrase. If the initramfs was rebuilt with a new key, check the new \
                 fingerprint on the server's console (portcullisd keygen printed it), then {hint}"
            ),
            ClientError::HostKeyRevoked {
                fingerprint,
                file,
                line,
            } => write!(
                f,
                "HOST KEY REVOKED: the server offered {fingerprint}, which {file} line {line} \
                 marks @revoked. Refusing to send a passphrase. Rebuild the initramfs with a new \
                 host key (docs/rotation.md)"
            ),
            ClientError::AuthRefused(m) => write!(f, "authentication refused: {m}"),
            ClientError::Unreachable(m) => write!(f, "unreachable: {m}"),
            ClientError::Busy(m) => write!(
                f,
                "busy: {m}: the listener is up but refuses new connections for now \
                 (too many unauthenticated connections; a flood?); retry, or use --wait"
            ),
            ClientError::ReplyLost(m) => write!(
                f,
                "the passphrase was sent but no answer came back ({m}); run \
                 `portcullis status` on the host to see whether the volumes opened \
                 before sending it again"
            ),
            ClientError::SystemUp { fingerprint } => write!(
                f,
                "the booted system answered with its pinned key {fingerprint}; nothing to unlock"
            ),
            ClientError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<anyhow::Error> for ClientError {
    fn from(e: anyhow::Error) -> Self {
        ClientError::Other(e)
    }
}

/// Where the client's own key comes from.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Try ssh-agent (when `SSH_AUTH_SOCK` is set) before key files.
    pub agent: bool,
    /// Key files; empty means the usual `~/.ssh/id_*`.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub target: Target,
    pub user: String,
    pub host_key: HostKeyPolicy,
    pub identity: Identity,
    pub connect_timeout: Duration,
    /// Keep retrying an unreachable listener this long.
    pub wait: Option<Duration>,
    /// Reach the listener through this relay (`ssh -W`): see [`relayed`].
    pub via: Option<String>,
}

/// The russh client handler: only checks the host key.
pub(crate) struct Checker {
    policy: HostKeyPolicy,
    host_id: String,
    /// Why the key was refused, for a precise error after connect fails.
    verdict: Arc<Mutex<Option<ClientError>>>,
    /// Time spent waiting for the human's answer, which `--timeout` must
    /// not count.
    asking: Arc<Mutex<AskClock>>,
    /// Fingerprints of the booted system's keys: a server proving one is
    /// the system, not the listener, and is refused before the policy
    /// (which could pin it with `--accept-new`) and before any login.
    system_keys: Arc<[String]>,
    /// The fingerprint of the key the policy accepted.
    accepted: Arc<Mutex<Option<String>>>,
}

/// How long the host-key question has kept the human busy.
#[derive(Debug, Default, Clone, Copy)]
struct AskClock {
    since: Option<Instant>,
    spent: Duration,
}

impl AskClock {
    /// Time asking so far, including a question still open.
    fn asked(&self, now: Instant) -> Duration {
        self.spent + self.since.map_or(Duration::ZERO, |t| now.duration_since(t))
    }
}

/// Whether a connection attempt that started `elapsed` ago is out of time,
/// not counting the time spent asking the human; never while asking.
fn out_of_time(elapsed: Duration, clock: AskClock, now: Instant, timeout: Duration) -> bool {
    clock.since.is_none() && elapsed.saturating_sub(clock.asked(now)) >= timeout
}

/// Asks the host-key question; tests replace the terminal.
#[cfg(not(test))]
fn ask_human(host_id: &str, fp: &str) -> Result<bool> {
    ask_terminal(host_id, fp)
}

#[cfg(test)]
fn ask_human(_host_id: &str, _fp: &str) -> Result<bool> {
    // A slow human who says yes.
    std::thread::sleep(tests::SLOW_HUMAN);
    Ok(true)
}

/// The file whose `@revoked` lines the policy obeys: every policy with a
/// known-hosts file, so a revoked key is refused whatever pinned it.
fn revocations(policy: &HostKeyPolicy) -> Option<&std::path::Path> {
    match policy {
        HostKeyPolicy::Fingerprint(_) => None,
        HostKeyPolicy::Fingerprints { revoked_in, .. } => revoked_in.as_deref(),
        HostKeyPolicy::Confirm { known_hosts, .. } => Some(known_hosts),
        HostKeyPolicy::KnownHosts { path, .. } => Some(path),
    }
}

impl Checker {
    fn decide(&self, key: &PublicKey) -> Result<(), ClientError> {
        let got = fingerprint(key);
        // Revocation first, whichever policy would accept the key.
        if let Some(path) = revocations(&self.policy) {
            if let Some(line) = known_hosts::revoked(&known_hosts::parse_file(path)?, key) {
                return Err(ClientError::HostKeyRevoked {
                    fingerprint: got,
                    file: path.display().to_string(),
                    line,
                });
            }
        }
        let changed = |expected: String, hint: &str| ClientError::HostKeyChanged {
            expected,
            got: got.clone(),
            hint: hint.into(),
        };
        match &self.policy {
            HostKeyPolicy::Fingerprint(want) if *want == got => Ok(()),
            HostKeyPolicy::Fingerprint(want) => {
                Err(changed(want.clone(), "pass the new --fingerprint"))
            }
            HostKeyPolicy::Fingerprints {
                fingerprints: want, ..
            } if want.contains(&got) => Ok(()),
            HostKeyPolicy::Fingerprints {
                fingerprints: want, ..
            } => Err(changed(
                want.join(" or "),
                "add the new fingerprint to the host's `fingerprint` list in the inventory",
            )),
            HostKeyPolicy::Confirm {
                fingerprint: want, ..
            } if *want != got => Err(changed(
                want.clone(),
                "pass the new --fingerprint (or check the one you gave)",
            )),
            HostKeyPolicy::Confirm { known_hosts, .. } => self.pin_confirmed(known_hosts, key),
            HostKeyPolicy::KnownHosts {
                path,
                accept_new,
                ask,
            } => {
                let hint = format!(
                    "run `portcullis known-hosts forget {}` (file {}) and connect again to re-pin, \
                     or pin the new key with --fingerprint",
                    self.host_id,
                    path.display()
                );
                match known_hosts::check_file(path, &self.host_id, key)? {
                    known_hosts::Verdict::Match => Ok(()),
                    known_hosts::Verdict::Revoked { line } => Err(ClientError::HostKeyRevoked {
                        fingerprint: got,
                        file: path.display().to_string(),
                        line,
                    }),
                    known_hosts::Verdict::Changed { pinned, line } => {
                        Err(ClientError::HostKeyChanged {
                            expected: pinned,
                            got,
                            hint: format!("{hint} (line {line})"),
                        })
                    }
                    known_hosts::Verdict::Unknown => {
                        let ok = *accept_new || (*ask && self.ask(&got)?);
                        if !ok {
                            return Err(ClientError::HostKeyUnknown {
                                fingerprint: got,
                                hint: format!(
                                    "compare it with the fingerprint `portcullisd keygen` printed, then pin it \
                                     with --fingerprint {}, or run on a terminal to be asked, or --accept-new",
                                    fingerprint(key)
                                ),
                            });
                        }
                        known_hosts::add(path, &self.host_id, key)?;
                        eprintln!("pinned {} for {} in {}", got, self.host_id, path.display());
                        Ok(())
                    }
                }
            }
        }
    }

    /// The admin named this key with `--fingerprint`: pin it (unless the
    /// file revokes it), so later runs need no flag.
    fn pin_confirmed(&self, path: &std::path::Path, key: &PublicKey) -> Result<(), ClientError> {
        let got = fingerprint(key);
        match known_hosts::check_file(path, &self.host_id, key)? {
            known_hosts::Verdict::Match => Ok(()),
            known_hosts::Verdict::Revoked { line } => Err(ClientError::HostKeyRevoked {
                fingerprint: got,
                file: path.display().to_string(),
                line,
            }),
            known_hosts::Verdict::Unknown => {
                known_hosts::add(path, &self.host_id, key)?;
                eprintln!("pinned {got} for {} in {}", self.host_id, path.display());
                Ok(())
            }
            known_hosts::Verdict::Changed { pinned, .. } => {
                known_hosts::replace(path, &self.host_id, key)?;
                eprintln!(
                    "pinned {got} for {} in {}, replacing {pinned}",
                    self.host_id,
                    path.display()
                );
                Ok(())
            }
        }
    }
}

impl Checker {
    /// Asks the human with the connect timeout paused.
    fn ask(&self, fp: &str) -> Result<bool> {
        lock(&self.asking).since = Some(Instant::now());
        let answer = ask_human(&self.host_id, fp);
        let mut c = lock(&self.asking);
        c.spent = c.asked(Instant::now());
        c.since = None;
        answer
    }
}

/// Asks on the controlling terminal (not stdin, which may carry the
/// passphrase). No terminal: the answer is no.
#[cfg_attr(test, allow(dead_code))]
fn ask_terminal(host_id: &str, fp: &str) -> Result<bool> {
    // Typeahead is flushed before the question: a passphrase typed early
    // must not become the answer, nor stay on the screen.
    let question = format!(
        "{host_id} is not known yet.\nIts host key fingerprint is {fp}.\n\
         Compare it with the fingerprint you expect (for an initramfs, what \
         `portcullisd keygen` printed). Pin it? [yes/no] "
    );
    let answer = tty::ask_yes_no(&question)
        .map_err(|e| anyhow!("asking whether to pin the host key of {host_id}: {e}"))?;
    Ok(answer.unwrap_or(false))
}

impl russh::client::Handler for Checker {
    type Error = anyhow::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *lock(&self.verdict) = Some(ClientError::Other(anyhow!(
                "host certificates are not supported"
            )));
            return Ok(false);
        };
        let got = fingerprint(key);
        if self.system_keys.contains(&got) {
            *lock(&self.verdict) = Some(ClientError::SystemUp { fingerprint: got });
            return Ok(false);
        }
        // The known-hosts check may prompt; keep it off the async threads.
        let this = Checker {
            policy: self.policy.clone(),
            host_id: self.host_id.clone(),
            verdict: self.verdict.clone(),
            asking: self.asking.clone(),
            system_keys: self.system_keys.clone(),
            accepted: self.accepted.clone(),
        };
        let key = key.clone();
        let r = tokio::task::spawn_blocking(move || this.decide(&key))
            .await
            .map_err(|e| anyhow!("host key check: {e}"))?;
        match r {
            Ok(()) => {
                *lock(&self.accepted) = Some(got);
                Ok(true)
            }
            Err(e) => {
                *lock(&self.verdict) = Some(e);
                Ok(false)
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Conn = russh::client::Handle<Checker>;

/// First and longest pause between tries at a busy listener. Short at
/// first: a slot frees as soon as a flood connection is replaced.
const BUSY_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// Connects, verifies the host key and authenticates; retries an
/// unreachable listener, and a busy one with backoff, while `wait` lasts.
pub(crate) async fn connect(opts: &Options) -> Result<Conn, ClientError> {
    Ok(connect_unless_up(opts, &[]).await?.0)
}

/// [`connect`], refusing a server that proves it holds one of
/// `system_keys` ([`ClientError::SystemUp`]); also returns the fingerprint
/// of the listener key the policy accepted.
async fn connect_unless_up(
    opts: &Options,
    system_keys: &[String],
) -> Result<(Conn, String), ClientError> {
    let system_keys: Arc<[String]> = system_keys.into();
    let deadline = opts.wait.map(|w| Instant::now() + w);
    let mut announced = false;
    let mut busy_announced = false;
    let mut backoff = BUSY_BACKOFF.0;
    loop {
        let in_time = deadline.is_some_and(|d| Instant::now() < d);
        match connect_once(opts, &system_keys).await {
            Err(ClientError::Unreachable(m)) if in_time => {
                if !announced {
                    eprintln!("{}: not answering yet ({m}); waiting", opts.target);
                    announced = true;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(ClientError::Busy(_)) if in_time => {
                if !busy_announced {
                    eprintln!("{}: server busy, retrying", opts.target);
                    busy_announced = true;
                }
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(BUSY_BACKOFF.1);
            }
            r => return r,
        }
    }
}

/// Between half and all of `d`, so many clients do not retry in step.
fn jitter(d: Duration) -> Duration {
    use std::hash::BuildHasher;
    let r = std::collections::hash_map::RandomState::new().hash_one(Instant::now()) % 1000;
    d / 2 + d / 2 * u32::try_from(r).unwrap_or(0) / 1000
}

/// The client's socket, keeping a copy of the first bytes the server sent:
/// a listener that refuses a connection says so in a line before its SSH
/// version (`protocol::BUSY_LINE`), which russh skips.
struct Sniff<S> {
    inner: S,
    first: Arc<Mutex<Vec<u8>>>,
}

const SNIFF_LEN: usize = 64;

impl<S: AsyncRead + Unpin> AsyncRead for Sniff<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let mut first = lock(&self.first);
        if first.len() < SNIFF_LEN {
            let new = buf.filled().get(before..).unwrap_or_default();
            let room = SNIFF_LEN - first.len();
            first.extend(new.iter().take(room));
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniff<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the SSH session runs over: a TCP socket, or `ssh -W`'s pipes.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// Whether the server's first bytes were the busy line.
fn said_busy(first: &[u8]) -> bool {
    let line = protocol::BUSY_LINE.trim_end().as_bytes();
    first.starts_with(line)
}

/// russh's host-key algorithms, with those of the keys pinned for `host_id`
/// in the known-hosts file first (as OpenSSH orders HostKeyAlgorithms by
/// known_hosts): a listener serving an old and a new key of different types
/// then shows the one this client pinned. Fingerprints carry no type, so the
/// other policies keep russh's order; an unreadable file is left to the
/// host-key check, which reports it.
fn host_key_preference(policy: &HostKeyPolicy, host_id: &str) -> russh::Preferred {
    let default = russh::Preferred::default();
    let HostKeyPolicy::KnownHosts { path, .. } = policy else {
        return default;
    };
    let Ok(text) = known_hosts::read(path) else {
        return default;
    };
    let Ok(lines) = known_hosts::parse(&text) else {
        return default;
    };
    let pinned: Vec<Algorithm> = known_hosts::keys_for(&lines, host_id)
        .into_iter()
        .map(|(_, k)| k.algorithm())
        .collect();
    // Every RSA key signs with every rsa-sha2 variant.
    let is_pinned = |a: &Algorithm| {
        pinned
            .iter()
            .any(|p| p == a || matches!((p, a), (Algorithm::Rsa { .. }, Algorithm::Rsa { .. })))
    };
    let (first, rest): (Vec<Algorithm>, Vec<Algorithm>) =
        default.key.iter().cloned().partition(|a| is_pinned(a));
    russh::Preferred {
        key: first.into_iter().chain(rest).collect::<Vec<_>>().into(),
        ..default
    }
}

async fn connect_once(
    opts: &Options,
    system_keys: &Arc<[String]>,
) -> Result<(Conn, String), ClientError> {
    let verdict = Arc::new(Mutex::new(None));
    let accepted = Arc::new(Mutex::new(None));
    let asking = Arc::new(Mutex::new(AskClock::default()));
    let host_id = known_hosts::host_id(&opts.target.host, opts.target.port);
    let preferred = host_key_preference(&opts.host_key, &host_id);
    let checker = Checker {
        policy: opts.host_key.clone(),
        host_id,
        verdict: verdict.clone(),
        asking: asking.clone(),
        system_keys: system_keys.clone(),
        accepted: accepted.clone(),
    };
    let config = Arc::new(russh::client::Config {
        inactivity_timeout: Some(Duration::from_secs(120)),
        preferred,
        ..Default::default()
    });
    let addr = (opts.target.host.as_str(), opts.target.port);
    let target = opts.target.to_string();
    let connecting = async {
        let mut relay_exit = None;
        let transport: Box<dyn Transport> = match &opts.via {
            None => {
                let tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| ClientError::Unreachable(format!("{target}: {e}")))?;
                // Requests and replies are small: do not wait for delayed ACKs.
                let _ = tcp.set_nodelay(true);
                Box::new(tcp)
            }
            Some(relay) => {
                let (stream, exited) = relayed::spawn(relay, opts.target.port)
                    .map_err(|e| ClientError::Other(anyhow!("{e:#}")))?;
                relay_exit = Some(exited);
                Box::new(stream)
            }
        };
        let first = Arc::new(Mutex::new(Vec::new()));
        let stream = Sniff {
            inner: transport,
            first: first.clone(),
        };
        match russh::client::connect_stream(config, stream, checker).await {
            Ok(conn) => Ok(conn),
            Err(e) => {
                if said_busy(&lock(&first)) {
                    return Err(ClientError::Busy(target.clone()));
                }
                if let Some(why) = lock(&verdict).take() {
                    return Err(why);
                }
                Err(match (relay_exit, &opts.via) {
                    (Some(exited), Some(relay)) => ClientError::Unreachable(
                        relayed::failure(&target, relay, opts.target.port, exited).await,
                    ),
                    _ => ClientError::Unreachable(format!("{target}: SSH handshake failed: {e:#}")),
                })
            }
        }
    };
    // `--timeout` counts the network, not the human answering the
    // host-key question.
    tokio::pin!(connecting);
    let started = Instant::now();
    let mut conn = loop {
        tokio::select! {
            r = &mut connecting => break r?,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                let clock = *lock(&asking);
                if out_of_time(started.elapsed(), clock, Instant::now(), opts.connect_timeout) {
                    return Err(ClientError::Unreachable(format!(
                        "{target}: timed out after {} (--timeout)",
                        humantime::format_duration(opts.connect_timeout)
                    )));
                }
            }
        }
    };
    authenticate(&mut conn, opts).await?;
    // Set whenever russh went past the host-key check.
    let accepted = lock(&accepted)
        .take()
        .ok_or_else(|| ClientError::Other(anyhow!("internal error: no host key was checked")))?;
    Ok((conn, accepted))
}

async fn authenticate(conn: &mut Conn, opts: &Options) -> Result<(), ClientError> {
    let mut tried = Vec::new();
    if opts.identity.agent && std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match russh::keys::agent::client::AgentClient::connect_env().await {
            Ok(mut agent) => {
                let ids = agent.request_identities().await.unwrap_or_default();
                for id in ids {
                    let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = id else {
                        continue;
                    };
                    let hash = rsa_hash(conn, &key).await;
                    let r = conn
                        .authenticate_publickey_with(&opts.user, key.clone(), hash, &mut agent)
                        .await;
                    match r {
                        Ok(r) if r.success() => return Ok(()),
                        _ if conn.is_closed() && tried.len() < AUTH_TRIES_BEFORE_CUT => {
                            return Err(closed_during_auth(opts))
                        }
                        _ => tried.push(format!("agent key {}", fingerprint(&key))),
                    }
                }
            }
            Err(e) => eprintln!("warning: ssh-agent at SSH_AUTH_SOCK not usable: {e}"),
        }
    }
    let files = if opts.identity.files.is_empty() {
        default_identities()
    } else {
        opts.identity.files.clone()
    };
    for path in files {
        let explicit = !opts.identity.files.is_empty();
        let key = match load_identity(&path) {
            Ok(k) => k,
            Err(e) if explicit => return Err(ClientError::Other(e)),
            Err(_) => continue,
        };
        let hash = rsa_hash(conn, key.public_key()).await;
        let r = conn
            .authenticate_publickey(&opts.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(|e| ClientError::Unreachable(format!("during authentication: {e}")))?;
        if r.success() {
            return Ok(());
        }
        if conn.is_closed() && tried.len() < AUTH_TRIES_BEFORE_CUT {
            return Err(closed_during_auth(opts));
        }
        tried.push(path.display().to_string());
    }
    let _ = conn.disconnect(Disconnect::ByApplication, "", "").await;
    Err(ClientError::AuthRefused(if tried.is_empty() {
        "no key to offer: start ssh-agent with your key, or pass -i KEYFILE".into()
    } else {
        format!(
            "the listener accepted none of: {}; add the public key to the initramfs authorized_keys and rebuild it",
            tried.join(", ")
        )
    }))
}

/// A listener also cuts a client that used up its authentication attempts
/// (`auth-attempts`, 6 by default, like OpenSSH): after this many refused
/// keys a cut connection means "refused", not "busy".
const AUTH_TRIES_BEFORE_CUT: usize = 5;

/// russh reports a connection the listener cut during authentication as a
/// refused key. A busy listener does that to connections it must make room
/// for: say busy, so `--wait` tries again, rather than "key refused".
fn closed_during_auth(opts: &Options) -> ClientError {
    ClientError::Busy(format!(
        "{}: the listener closed the connection during authentication",
        opts.target
    ))
}

async fn rsa_hash(conn: &Conn, key: &PublicKey) -> Option<HashAlg> {
    if matches!(key.algorithm(), russh::keys::Algorithm::Rsa { .. }) {
        conn.best_supported_rsa_hash()
            .await
            .ok()
            .flatten()
            .flatten()
    } else {
        None
    }
}

fn default_identities() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME") else {
        return vec![];
    };
    let ssh = PathBuf::from(home).join(".ssh");
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|n| ssh.join(n))
        .filter(|p| p.exists())
        .collect()
}

/// Loads a key file, asking for its passphrase when it is encrypted.
fn load_identity(path: &std::path::Path) -> Result<PrivateKey> {
    match russh::keys::load_secret_key(path, None) {
        Ok(k) => Ok(k),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let pw = tty::read_secret(&format!("Enter passphrase for key {}: ", path.display()))
                .map_err(|e| match e {
                    tty::TtyError::NoTerminal => anyhow!(
                        "key {} is encrypted and there is no terminal to ask on; load it into ssh-agent",
                        path.display()
                    ),
                    e => anyhow!("reading the passphrase for key {}: {e}", path.display()),
                })?;
            let pw = std::str::from_utf8(pw.expose()).map_err(|_| {
                anyhow!(
                    "the passphrase for key {} is not valid UTF-8, which key files cannot use; type it again",
                    path.display()
                )
            })?;
            russh::keys::load_secret_key(path, Some(pw))
                .with_context(|| format!("decrypting key {}", path.display()))
        }
        Err(e) => Err(anyhow!("loading key {}: {e}", path.display())),
    }
}

/// Why [`exec`] failed: before anything secret left, or after.
enum ExecError {
    /// Nothing was sent yet (the session or the command was refused).
    Before(anyhow::Error),
    /// The passphrase (if any) was sent; the answer is missing.
    After(anyhow::Error),
}

impl ExecError {
    /// Before the passphrase: the listener could not be used (unreachable).
    /// After it: the reply is lost, which must not read as "unreachable".
    fn into_client(self, sent_secret: bool) -> ClientError {
        match self {
            ExecError::After(e) if sent_secret => ClientError::ReplyLost(format!("{e:#}")),
            ExecError::Before(e) | ExecError::After(e) => {
                ClientError::Unreachable(format!("{e:#}"))
            }
        }
    }
}

/// Runs one exec command; sends `stdin` then EOF; returns stdout and status.
async fn exec(
    conn: &Conn,
    command: &str,
    stdin: Option<&Passphrase>,
) -> Result<(Vec<u8>, Option<u32>), ExecError> {
    let mut ch = conn
        .channel_open_session()
        .await
        .context("opening a session on the listener")
        .map_err(ExecError::Before)?;
    ch.exec(true, command)
        .await
        .context("sending the command")
        .map_err(ExecError::Before)?;
    if let Some(p) = stdin {
        // From here on the passphrase may have reached the server.
        ch.data(p.expose())
            .await
            .context("sending the passphrase")
            .map_err(ExecError::After)?;
    }
    ch.eof()
        .await
        .context("sending EOF")
        .map_err(ExecError::After)?;
    let mut out = Vec::new();
    let mut status = None;
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                if out.len() + data.len() > MAX_REPLY {
                    return Err(ExecError::After(anyhow!(
                        "the listener sent more than {MAX_REPLY} bytes; giving up"
                    )));
                }
                out.extend_from_slice(&data);
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    if out.is_empty() && stdin.is_some() {
        return Err(ExecError::After(anyhow!(
            "the connection closed before the listener answered"
        )));
    }
    Ok((out, status))
}

fn parse_reply<T: serde::de::DeserializeOwned>(out: &[u8]) -> Result<T> {
    let line = out.split(|&b| b == b'\n').next().unwrap_or_default();
    serde_json::from_slice(line).map_err(|_| {
        let shown: String = String::from_utf8_lossy(line).chars().take(200).collect();
        match serde_json::from_slice::<protocol::ErrorReply>(line) {
            Ok(e) => anyhow!("the listener refused: {}", e.error),
            Err(_) => anyhow!(
                "the listener's reply is not portcullis protocol {} ({shown:?}); is this a portcullisd?",
                protocol::VERSION
            ),
        }
    })
}

/// Sends the passphrase; returns the listener's answer.
#[tracing::instrument(skip_all)]
pub async fn unlock(opts: &Options, pass: &Passphrase) -> Result<UnlockReply, ClientError> {
    Ok(unlock_unless_up(opts, pass, &[]).await?.0)
}

/// [`unlock`] for a host whose booted system may already answer at the
/// listener's address: a server proving one of `system_keys` gets
/// [`ClientError::SystemUp`] and nothing. One connection does what a key
/// probe and then an unlock did (a fleet's hosts cost one key exchange
/// less each). Also returns the fingerprint of the listener's key.
pub async fn unlock_unless_up(
    opts: &Options,
    pass: &Passphrase,
    system_keys: &[String],
) -> Result<(UnlockReply, String), ClientError> {
    let (conn, listener_key) = connect_unless_up(opts, system_keys).await?;
    let (out, _) = exec(&conn, &protocol::machine_command("unlock"), Some(pass))
        .await
        .map_err(|e| e.into_client(true))?;
    let _ = conn.disconnect(Disconnect::ByApplication, "", "").await;
    Ok((parse_reply(&out)?, listener_key))
}

pub async fn status(opts: &Options) -> Result<StatusReply, ClientError> {
    let conn = connect(opts).await?;
    let (out, _) = exec(&conn, &protocol::machine_command("status"), None)
        .await
        .map_err(|e| e.into_client(false))?;
    let _ = conn.disconnect(Disconnect::ByApplication, "", "").await;
    Ok(parse_reply(&out)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// How long the stand-in human takes to answer the host-key question.
    pub(crate) const SLOW_HUMAN: Duration = Duration::from_millis(1500);

    struct OneVolume;

    impl crate::unlock::Backend for OneVolume {
        fn name(&self) -> &'static str {
            "test"
        }
        fn status(&self) -> Vec<protocol::VolumeInfo> {
            vec![protocol::VolumeInfo {
                name: "root".into(),
                device: "/dev/vda".into(),
                backend: "test".into(),
                state: protocol::VolumeState::Pending,
                tries_left: None,
            }]
        }
        fn try_unlock(
            &self,
            _p: &Passphrase,
        ) -> Vec<(protocol::VolumeInfo, crate::unlock::Attempt)> {
            vec![]
        }
    }

    #[test]
    fn timeout_pauses_while_asking() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let asking = AskClock {
            since: Some(t0),
            spent: Duration::ZERO,
        };
        assert!(!out_of_time(s(100), asking, t0 + s(100), s(1)));
        let answered = AskClock {
            since: None,
            spent: s(99),
        };
        assert!(!out_of_time(
            s(99) + Duration::from_millis(500),
            answered,
            t0,
            s(1)
        ));
        assert!(out_of_time(s(100), answered, t0, s(1)));
    }

    /// The known-hosts file's pinned key types go first; other hosts'
    /// pins, fingerprint policies and a missing file keep russh's order.
    #[test]
    fn pinned_key_types_are_preferred() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kh");
        let ec = PrivateKey::random(
            &mut russh::keys::key::safe_rng(),
            Algorithm::Ecdsa {
                curve: russh::keys::EcdsaCurve::NistP384,
            },
        )
        .unwrap();
        known_hosts::add(&path, "[web1]:2222", ec.public_key()).unwrap();
        let policy = HostKeyPolicy::KnownHosts {
            path: path.clone(),
            accept_new: false,
            ask: false,
        };
        let default = russh::Preferred::default().key.to_vec();
        let got = host_key_preference(&policy, "[web1]:2222").key.to_vec();
        assert_eq!(got.first(), Some(&ec.algorithm()));
        assert_eq!(got.len(), default.len());
        assert_eq!(host_key_preference(&policy, "web2").key.to_vec(), default);
        let fps = HostKeyPolicy::Fingerprints {
            fingerprints: vec![fingerprint(ec.public_key())],
            revoked_in: Some(path.clone()),
        };
        assert_eq!(
            host_key_preference(&fps, "[web1]:2222").key.to_vec(),
            default
        );
        let gone = HostKeyPolicy::KnownHosts {
            path: dir.path().join("gone"),
            accept_new: false,
            ask: false,
        };
        assert_eq!(
            host_key_preference(&gone, "[web1]:2222").key.to_vec(),
            default
        );
        // An RSA pin puts every rsa-sha2 variant first, in russh's order.
        let rsa = PublicKey::from_openssh(RSA_PUB).unwrap();
        known_hosts::add(&path, "[web3]:2222", &rsa).unwrap();
        let got = host_key_preference(&policy, "[web3]:2222").key.to_vec();
        let rsa_first: Vec<Algorithm> = default
            .iter()
            .filter(|a| matches!(a, Algorithm::Rsa { .. }))
            .cloned()
            .collect();
        assert_eq!(rsa_first.len(), 3);
        assert_eq!(got.get(..3), Some(&rsa_first[..]));
    }

    /// A 3072-bit RSA public key (`portcullisd keygen --type rsa`).
    const RSA_PUB: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQC94QSBwE6PxTqqy5otxP4iiLE1MXX8TzXtBkUD+Yj99rr5bG8+FEt6jyVPK0wkwtULtYAv6rhKUBrz2lE+Ia/9c2VVLijrgyedaJxxfdGWY2ypJLiffa8T46QvFgQ/mAbQq9bGY6tOlygcDjFITBxaYH9PGwfVvT4nppZmgj96NA3FK7LpEZLCWwahu1k1jtFQq2guqHXtcJzJ4G07Y2W69q9VXDTtJROKck8DtUzEsMQIVeTecqS9VE8XB56bAyB7D7e1bBFbAy7xXs+6j3aMljhmqWTKu1+/uful+5XMScMIv8UJcThH1nSePOjlTre0+HCW3LShtcdse6ALEo4syf7t6gx4FHDMQIFQDldtnvvQGOkfaTrRMtOrSDj0eUW/c1luW2aUQ0bZNrDBip78ia35+tBpocEh6rFnaGR810gnfZVvH6Fp1vrjdY90Deab3SbBRuKnPTOkgFHYn/PAyNqxTwuXZrhjwqO1rvE47IgnChTpyJY35uuoNnQysVU=";

    /// A human who takes longer than `--timeout` to answer the host-key
    /// question still gets connected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn host_key_question_runs_outside_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let host = crate::hostkey::generate(&dir.path().join("host"), "host").unwrap();
        let admin = crate::hostkey::generate(&dir.path().join("admin"), "admin").unwrap();
        let keys =
            crate::authkeys::AuthorizedKeys::parse(&admin.public_key().to_openssh().unwrap())
                .unwrap();
        let limits = crate::config::Limits::default();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let config = crate::listener::ssh_config(host, &limits);
        tokio::spawn(crate::listener::serve_until(
            vec![l],
            config,
            Arc::new(OneVolume),
            keys,
            limits,
            std::future::pending(),
        ));
        let kh = dir.path().join("known_hosts");
        let opts = Options {
            target: Target {
                host: "127.0.0.1".into(),
                port,
            },
            user: "root".into(),
            host_key: HostKeyPolicy::KnownHosts {
                path: kh.clone(),
                accept_new: false,
                ask: true,
            },
            identity: Identity {
                agent: false,
                files: vec![dir.path().join("admin")],
            },
            connect_timeout: SLOW_HUMAN / 3,
            wait: None,
            via: None,
        };
        let t = Instant::now();
        let st = status(&opts).await.unwrap();
        assert!(t.elapsed() >= SLOW_HUMAN);
        assert_eq!(st.volumes.len(), 1);
        assert!(std::fs::read_to_string(&kh)
            .unwrap()
            .contains("ssh-ed25519"));
    }

    /// Once the passphrase may have left, a failure is "reply lost" (13),
    /// never "unreachable" (6), so no one retries it as if nothing was sent.
    #[test]
    fn errors_after_sending_are_not_unreachable() {
        let after = ExecError::After(anyhow!("connection reset")).into_client(true);
        assert!(matches!(after, ClientError::ReplyLost(_)), "{after}");
        assert_eq!(after.exit_code(), exit::REPLY_LOST);
        assert_eq!(after.kind(), "reply-lost");
        assert!(after.to_string().contains("status"), "{after}");
        let before = ExecError::Before(anyhow!("session refused")).into_client(true);
        assert_eq!(before.exit_code(), exit::UNREACHABLE);
        // `status` sends nothing secret: a lost reply there is unreachable.
        let status = ExecError::After(anyhow!("reset")).into_client(false);
        assert_eq!(status.exit_code(), exit::UNREACHABLE);
    }

    #[test]
    fn targets() {
        let t = |s: &str| Target::parse(s).unwrap();
        assert_eq!(
            t("web1"),
            Target {
                host: "web1".into(),
                port: 22
            }
        );
        assert_eq!(
            t("web1:2222"),
            Target {
                host: "web1".into(),
                port: 2222
            }
        );
        assert_eq!(
            t("[::1]:2222"),
            Target {
                host: "::1".into(),
                port: 2222
            }
        );
        assert_eq!(
            t("::1"),
            Target {
                host: "::1".into(),
                port: 22
            }
        );
        assert_eq!(t("[::1]").port, 22);
        assert!(Target::parse("web1:x").is_err());
        // Port 0 is never a listener: refused before any connection.
        assert_eq!(
            Target::parse("web1:0"),
            Err(TargetError::PortZero("web1:0".into()))
        );
        assert!(Target::parse("[::1]:0").is_err());
        assert!(Target::parse(":22").is_err());
        assert!(Target::parse("").is_err());
        assert_eq!(t("[::1]:2").to_string(), "[::1]:2");
    }
}
