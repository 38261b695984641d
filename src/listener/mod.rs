//! The SSH listener: accepts connections, authenticates by public key only,
//! serves `unlock`, `status`, the machine mode and an interactive prompt, and
//! stops once every volume is open. It does not know which unlock backend is
//! underneath: every unlock goes through [`crate::unlock::Gate`].
//!
//! Before authentication a connection is only a slot in the admission table
//! ([`admission`]); refusals are counted and logged as one summary line per
//! interval, never one line per connection.
//!
//! Attacker-facing: no `unwrap`, `expect`, indexing or `panic` here.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod admission;
pub mod bind;
pub mod cut;
pub mod terminal;

use crate::authkeys::{fingerprint, AuthorizedKeys};
use crate::config::Limits;
use crate::error::Result;
use crate::protocol::{self, exit, Command, Outcome, StatusReply, UnlockReply, VolumeState};
use crate::secret::{Passphrase, SecretBuf, SecretError};
use crate::unlock::{Backend, Gate};
use admission::{Decision, Ended, Policy, Source, Table};
use russh::keys::PrivateKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet, SshId};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use terminal::{Key, LineEditor};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Identification string: no library or version to fingerprint.
const SERVER_ID: &str = "SSH-2.0-portcullis";
/// Wrong answers allowed in one interactive session before it is closed.
const SESSION_TRIES: u32 = 3;
/// Channels one connection may have open at a time.
const MAX_CHANNELS: usize = 4;
/// How long finished sessions get to flush their last reply before exit.
const DRAIN: Duration = Duration::from_secs(3);
/// On SIGTERM, how long an unlock already running may take to finish and
/// send its reply before the listener exits anyway. cryptsetup with argon2
/// takes seconds per volume; 30 s stays well inside systemd's stop timeout.
pub const UNLOCK_DRAIN: Duration = Duration::from_secs(30);
/// A connection must send its SSH version line within this time (or the
/// login grace time, if shorter). Real clients send it at once.
pub const BANNER_GRACE: Duration = Duration::from_secs(5);
/// Refusals and pre-authentication failures are logged as one summary line
/// per interval.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(5);
/// Refused public keys logged one by one per summary interval (to help an
/// admin whose key is wrong); beyond that they are only counted.
const KEY_REFUSALS_LOGGED: u32 = 3;
/// Longest attacker-chosen text (user name, subsystem) put into a log line.
const SHOWN: usize = 32;

/// Closes an admitted connection that the admission table evicted.
type Evict = oneshot::Sender<()>;

/// Everything the connections share.
pub struct Shared {
    pub gate: Gate,
    pub keys: AuthorizedKeys,
    pub limits: Limits,
    /// Fired when an unlock leaves nothing pending.
    done: tokio::sync::Notify,
    admission: Mutex<Table<Evict>>,
    key_refusals_logged: std::sync::atomic::AtomicU32,
    sessions: Arc<Semaphore>,
    /// Counter for the random early drop rolls.
    rolls: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Attacker-chosen text, bounded and escaped, for a log line.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(SHOWN).flat_map(char::escape_debug).collect();
    if s.chars().nth(SHOWN).is_some() {
        out.push('…');
    }
    out
}

impl Shared {
    /// A number in `0..100`, unpredictable enough for the early drop.
    fn roll(&self) -> u32 {
        use std::hash::BuildHasher;
        let n = self.rolls.fetch_add(1, Ordering::Relaxed);
        (std::collections::hash_map::RandomState::new().hash_one(n) % 100) as u32
    }

    fn ended(&self, why: Ended, peer: Peer) {
        lock(&self.admission).ended(why, Source::of(peer.addr.ip()));
    }
}

/// A connection's address as its log lines show it. Through the relay it
/// is the relay's word (usually 127.0.0.1, the relay's own loopback), so
/// the line says so rather than look like a local login.
#[derive(Clone, Copy)]
struct Peer {
    addr: SocketAddr,
    relayed: bool,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.relayed {
            write!(f, "{} (via relay)", self.addr)
        } else {
            write!(f, "{}", self.addr)
        }
    }
}

/// Builds russh's server configuration from one host key and our limits.
pub fn ssh_config(host_key: PrivateKey, limits: &Limits) -> russh::server::Config {
    ssh_config_with_keys(vec![host_key], limits)
}

/// [`ssh_config`] with several host keys, at most one per algorithm
/// ([`crate::hostkey::load_all`]): russh offers each key's algorithms and
/// the client's preference picks which key signs.
pub fn ssh_config_with_keys(host_keys: Vec<PrivateKey>, limits: &Limits) -> russh::server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    russh::server::Config {
        server_id: SshId::Standard(SERVER_ID.into()),
        methods,
        keys: host_keys,
        max_auth_attempts: limits.auth_attempts as usize,
        auth_rejection_time: Duration::from_secs(1),
        // OpenSSH starts with a `none` probe; don't make every login wait.
        auth_rejection_time_initial: Some(Duration::ZERO),
        // russh's inactivity timer restarts on any packet, and OpenSSH
        // answers our keepalives: it would never fire. The connection task
        // times out on the client's channel activity instead, and keepalives
        // only find dead peers.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}

/// Resolves when SIGTERM arrives: the initramfs stops us with it before
/// switch-root. Registered now, so a SIGTERM sent from here on is seen.
fn sigterm() -> impl std::future::Future<Output = ()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
}

/// Serves on `listeners` until every volume is open or SIGTERM arrives
/// (both return `Ok`).
pub async fn serve(
    listeners: Vec<TcpListener>,
    config: russh::server::Config,
    backend: Arc<dyn Backend>,
    keys: AuthorizedKeys,
    limits: Limits,
) -> Result<()> {
    serve_until(listeners, config, backend, keys, limits, sigterm()).await
}

/// [`serve`], also serving the connections an outbound relay forwards
/// ([`crate::relay`]) through the same admission table, limits and
/// handler as TCP connections.
pub async fn serve_relayed(
    listeners: Vec<TcpListener>,
    relayed: mpsc::Receiver<crate::relay::Relayed>,
    config: russh::server::Config,
    backend: Arc<dyn Backend>,
    keys: AuthorizedKeys,
    limits: Limits,
) -> Result<()> {
    let terminated = sigterm();
    serve_all(
        listeners,
        Some(relayed),
        config,
        backend,
        keys,
        limits,
        terminated,
    )
    .await
}

/// [`serve`], stopping when `stop` completes instead of on SIGTERM: stop
/// accepting, let an unlock in flight finish and send its reply (up to
/// [`UNLOCK_DRAIN`]), give the other sessions [`DRAIN`], return `Ok`.
pub async fn serve_until(
    listeners: Vec<TcpListener>,
    config: russh::server::Config,
    backend: Arc<dyn Backend>,
    keys: AuthorizedKeys,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    serve_all(listeners, None, config, backend, keys, limits, stop).await
}

/// [`serve_until`], with the relay's connections when there is a relay.
pub async fn serve_all(
    listeners: Vec<TcpListener>,
    mut relayed: Option<mpsc::Receiver<crate::relay::Relayed>>,
    config: russh::server::Config,
    backend: Arc<dyn Backend>,
    keys: AuthorizedKeys,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let shared = Arc::new(Shared {
        gate: Gate::new(backend),
        keys,
        done: tokio::sync::Notify::new(),
        admission: Mutex::new(Table::new(Policy::from_max(limits.max_unauthenticated))),
        key_refusals_logged: 0.into(),
        sessions: Arc::new(Semaphore::new(limits.max_sessions as usize)),
        rolls: AtomicU64::new(0),
        limits,
    });
    let config = Arc::new(config);
    let (tx, mut rx) = mpsc::channel::<(TcpStream, SocketAddr)>(16);
    let mut acceptors = Vec::new();
    for l in listeners {
        let tx = tx.clone();
        acceptors.push(tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok(conn) => {
                        if tx.send(conn).await.is_err() {
                            return;
                        }
                    }
                    // Out of fds and the like: log, pause, keep serving.
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }));
    }
    drop(tx);
    tokio::pin!(stop);
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    let mut summary = tokio::time::interval(SUMMARY_EVERY);
    let mut stopped = false;
    let mut tcp_done = false;
    loop {
        tokio::select! {
            conn = rx.recv(), if !tcp_done => match conn {
                Some((stream, peer)) => accept_tcp(&shared, &config, stream, peer),
                // No TCP listener (a relay alone has none): keep on with
                // the relay, if there is one.
                None => {
                    tcp_done = true;
                    if relayed.is_none() {
                        break;
                    }
                }
            },
            r = next_relayed(&mut relayed) => match r {
                Some(r) => {
                    let (stream, flag) = cut::Cuttable::new(r.stream);
                    // The address is the relay's word: `from=` never sees it.
                    accept(
                        &shared,
                        &config,
                        Box::new(stream),
                        Cutter::Flag(flag),
                        r.origin,
                        None,
                    );
                }
                // The relay task ended; TCP goes on (if there is any).
                None => {
                    relayed = None;
                    if tcp_done {
                        break;
                    }
                }
            },
            _ = shared.done.notified() => break,
            // Volumes can also be opened from elsewhere (the console). The
            // gate answers at once even while a KDF runs.
            _ = poll.tick() => if all_open(&shared).await { break },
            _ = summary.tick() => log_summary(&shared),
            _ = &mut stop => {
                stopped = true;
                break;
            }
        }
    }
    // Close the ports now, not when the runtime gets round to it: a client
    // must see "refused" once we said we are done.
    for a in &acceptors {
        a.abort();
    }
    for a in acceptors {
        let _ = a.await;
    }
    drop(rx);
    // Closes the relay's queue: the relay task sees it and stops.
    drop(relayed);
    if stopped {
        tracing::info!("stopping; finishing the replies in flight");
        // An unlock that is running may open the volume: its reply must
        // reach the admin, or they retry against an open volume.
        let deadline = Instant::now() + UNLOCK_DRAIN;
        if shared.gate.in_flight() {
            tracing::info!(
                "an unlock is running; waiting up to {}s for it",
                UNLOCK_DRAIN.as_secs()
            );
        }
        while shared.gate.in_flight() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        tracing::info!("every volume is open; closing the listener");
    }
    let total = shared.limits.max_sessions as usize;
    let deadline = Instant::now() + DRAIN;
    while shared.sessions.available_permits() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    log_summary(&shared);
    Ok(())
}

fn log_summary(shared: &Shared) {
    shared.key_refusals_logged.store(0, Ordering::Relaxed);
    if let Some(line) = lock(&shared.admission).take_summary() {
        tracing::warn!("{line}");
    }
}

async fn all_open(shared: &Arc<Shared>) -> bool {
    let s = shared.clone();
    tokio::task::spawn_blocking(move || s.gate.all_open())
        .await
        .unwrap_or(false)
}

/// Milliseconds since `base`, for lock-free activity stamps.
fn stamp(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Splits an accepted socket into the stream russh gets and a duplicate
/// that can shut it down. `None` when out of file descriptors.
fn with_cutter(stream: TcpStream) -> Option<(TcpStream, std::net::TcpStream)> {
    let std = stream.into_std().ok()?;
    let cut = std.try_clone().ok()?;
    let stream = TcpStream::from_std(std).ok()?;
    Some((stream, cut))
}

/// Removes a connection from the admission table when its task ends,
/// however it ends.
struct Slot {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.shared.admission).release(self.id);
    }
}

/// The next connection from the relay; never, without a relay.
async fn next_relayed(
    r: &mut Option<mpsc::Receiver<crate::relay::Relayed>>,
) -> Option<crate::relay::Relayed> {
    match r {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// How to cut a connection whatever russh is doing: a session stalled in
/// key exchange never reads the disconnect request.
enum Cutter {
    /// A second handle on the TCP socket.
    Socket(std::net::TcpStream),
    /// A relayed channel: its stream fails from now on, so the session ends
    /// and the channel closes.
    Flag(Arc<cut::Flag>),
}

impl Cutter {
    fn cut(&self) {
        match self {
            Cutter::Socket(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Cutter::Flag(f) => f.cut(),
        }
    }
}

fn accept_tcp(
    shared: &Arc<Shared>,
    config: &Arc<russh::server::Config>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    // Small request/reply packets: without this every reply waits for the
    // peer's delayed ACK (about 40 ms). russh sets it only in its own
    // accept loop.
    let _ = stream.set_nodelay(true);
    let Some((stream, cut)) = with_cutter(stream) else {
        tracing::debug!(%peer, "could not duplicate the socket; dropped");
        return;
    };
    accept(
        shared,
        config,
        Box::new(stream),
        Cutter::Socket(cut),
        peer,
        Some(peer.ip()),
    );
}

/// A connection's byte stream, TCP or relayed. One boxed type rather than
/// a type parameter: [`accept`] and russh's session code under it are then
/// compiled once, not once per kind of stream (about 6 KB zstd of the
/// listener); a call through the box costs nothing next to the crypto.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

/// Admits (or refuses) one connection and runs its session. `from_ip` is
/// the address an authorized key's `from=` is checked against: `None` for a
/// relayed connection, whose address nobody can vouch for, so keys with
/// `from=` are refused there.
fn accept(
    shared: &Arc<Shared>,
    config: &Arc<russh::server::Config>,
    stream: Box<dyn Stream>,
    cut: Cutter,
    peer: SocketAddr,
    from_ip: Option<IpAddr>,
) {
    let (evict, mut evicted) = oneshot::channel::<()>();
    let roll = shared.roll();
    let decision = lock(&shared.admission).decide(Source::of(peer.ip()), roll, evict);
    let id = match decision {
        Decision::Refuse(_) => {
            // Counted for the summary line. Say "busy" so the client does
            // not report an unreachable host.
            match cut {
                // The send buffer is empty, so this never blocks; it goes
                // through the plain socket because tokio's `try_write` waits
                // for a readiness event that a fresh socket has not had yet.
                Cutter::Socket(s) => {
                    let _ = std::io::Write::write(&mut &s, protocol::BUSY_LINE.as_bytes());
                }
                Cutter::Flag(_) => {
                    let mut stream = stream;
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            let _ = stream.write_all(protocol::BUSY_LINE.as_bytes()).await;
                            let _ = stream.shutdown().await;
                        })
                        .await;
                    });
                }
            }
            return;
        }
        Decision::Admit { id, evicted } => {
            if let Some(e) = evicted {
                let _ = e.send(());
            }
            id
        }
    };
    let peer = Peer {
        addr: peer,
        relayed: from_ip.is_none(),
    };
    let authed = Arc::new(AtomicBool::new(false));
    let base = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let handler = Conn {
        shared: shared.clone(),
        peer,
        from_ip,
        authed: authed.clone(),
        admission_id: Some(id),
        session_permit: None,
        pty_allowed: false,
        channels: HashMap::new(),
        activity: activity.clone(),
        base,
    };
    let grace = shared.limits.login_grace;
    let idle = shared.limits.idle_timeout;
    let config = config.clone();
    let shared = shared.clone();
    tokio::spawn(async move {
        let _slot = Slot {
            shared: shared.clone(),
            id,
        };
        let login_deadline = base + grace;
        let banner_deadline = base + grace.min(BANNER_GRACE);
        let started = tokio::select! {
            r = tokio::time::timeout_at(banner_deadline, russh::server::run_stream(config, stream, handler)) => r,
            // Replaced by a newer connection (counted by the table).
            _ = &mut evicted => return,
        };
        let mut session = match started {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, "connection ended during handshake: {e:#}");
                shared.ended(Ended::Handshake, peer);
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "no SSH banner within the grace time; dropped");
                shared.ended(Ended::NoBanner, peer);
                return;
            }
        };
        lock(&shared.admission).talking(id);
        let handle = session.handle();
        // Says why, if russh can, then cuts the socket either way.
        let bye = |why: &'static str| {
            let h = handle.clone();
            let cut = &cut;
            async move {
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    h.disconnect(russh::Disconnect::ByApplication, why.into(), String::new()),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                cut.cut();
            }
        };
        // `evicted` fires Ok when the table evicts us, Err when it let us go
        // (authenticated): from then on it no longer matters.
        let mut watching_eviction = true;
        let mut next_idle_check = base + idle;
        loop {
            let authenticated = authed.load(Ordering::SeqCst);
            tokio::select! {
                r = &mut session => {
                    if !authed.load(Ordering::SeqCst) {
                        // Key exchange failed, or the client gave up before
                        // authenticating: counted, not logged one by one.
                        shared.ended(Ended::Handshake, peer);
                    }
                    return log_end(peer, r, authed.load(Ordering::SeqCst));
                }
                _ = tokio::time::sleep_until(login_deadline), if !authenticated => {
                    if !authed.load(Ordering::SeqCst) {
                        tracing::debug!(%peer, "login grace time over; disconnecting");
                        shared.ended(Ended::LoginGrace, peer);
                        bye("login grace time over").await;
                        return log_end(peer, session.await, false);
                    }
                }
                k = &mut evicted, if watching_eviction => match k {
                    Ok(()) => {
                        bye("busy").await;
                        return log_end(peer, session.await, false);
                    }
                    Err(_) => watching_eviction = false,
                },
                _ = tokio::time::sleep_until(next_idle_check), if authenticated => {
                    let last = base + Duration::from_millis(activity.load(Ordering::SeqCst));
                    if Instant::now() >= last + idle {
                        tracing::info!(%peer, "idle for {}s; disconnecting", idle.as_secs());
                        bye("idle timeout").await;
                        return log_end(peer, session.await, true);
                    }
                    next_idle_check = last + idle;
                }
            }
        }
    });
}

/// Logs the end of a session. Before authentication anybody can cause it,
/// so it goes to debug only (the summary line counts it).
fn log_end(peer: Peer, r: Result<(), crate::error::Error>, authenticated: bool) {
    match r {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        // A client closing its socket after the reply is the normal end.
        Err(e) if format!("{e:#}").contains("early eof") => {
            tracing::debug!(%peer, "connection closed by the client")
        }
        Err(e) if authenticated => tracing::info!(%peer, "connection closed: {e:#}"),
        Err(e) => tracing::debug!(%peer, "connection closed before authentication: {e:#}"),
    }
}

/// What a channel is doing.
enum Mode {
    /// Opened, no request yet.
    Idle,
    /// `unlock` (human: one line) or `portcullis/1 unlock` (machine: to EOF).
    Unlock { machine: bool, buf: SecretBuf },
    /// `ssh -t host`: prompts and a line editor.
    Interactive { editor: LineEditor, tries: u32 },
    /// Reply sent; ignore further input.
    Finished,
}

struct Chan {
    mode: Mode,
    pty: bool,
}

/// One connection.
struct Conn {
    shared: Arc<Shared>,
    peer: Peer,
    /// What `from=` is checked against (`None` through the relay).
    from_ip: Option<IpAddr>,
    authed: Arc<AtomicBool>,
    /// Slot in the admission table, released on authentication.
    admission_id: Option<u64>,
    /// Taken on authentication: `max-sessions` counts authenticated ones.
    session_permit: Option<OwnedSemaphorePermit>,
    pty_allowed: bool,
    channels: HashMap<ChannelId, Chan>,
    /// Milliseconds after `base` of the client's last channel activity.
    activity: Arc<AtomicU64>,
    base: Instant,
}

fn reject() -> Auth {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    Auth::Reject {
        proceed_with_methods: Some(methods),
        partial_success: false,
    }
}

impl Conn {
    /// The client did something on a channel: the idle timer restarts.
    fn active(&self) {
        self.activity.store(stamp(self.base), Ordering::SeqCst);
    }

    /// Ends a channel: optional stdout/stderr text, exit status, EOF, close.
    /// The channel no longer counts towards [`MAX_CHANNELS`]: russh does not
    /// call `channel_close` for a close we started.
    fn finish(&mut self, ch: ChannelId, s: &mut Session, out: &[u8], err: &[u8], code: u8) {
        self.channels.remove(&ch);
        self.active();
        if !out.is_empty() {
            let _ = s.data(ch, out.to_vec());
        }
        if !err.is_empty() {
            let _ = s.extended_data(ch, 1, err.to_vec());
        }
        let _ = s.exit_status_request(ch, u32::from(code));
        let _ = s.eof(ch);
        let _ = s.close(ch);
    }

    /// Runs the backend off the async threads. Never sees the passphrase in
    /// a log line: only the outcome is logged.
    async fn run_unlock(&self, pass: Passphrase) -> UnlockReply {
        let shared = self.shared.clone();
        let peer = self.peer;
        let reply = tokio::task::spawn_blocking(move || {
            let r = shared.gate.unlock(&pass);
            drop(pass);
            r
        })
        .await
        .unwrap_or_else(|_| UnlockReply {
            version: protocol::VERSION,
            outcome: Outcome::Failed,
            volumes: vec![],
            message: Some("internal error in the unlock backend".into()),
        });
        tracing::info!(%peer, outcome = ?reply.outcome, "unlock request");
        if reply.outcome == Outcome::Unlocked || all_open(&self.shared).await {
            self.shared.done.notify_one();
        }
        reply
    }

    async fn status(&self) -> Vec<protocol::VolumeInfo> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.gate.status())
            .await
            .unwrap_or_default()
    }

    /// Completes an exec `unlock` once its passphrase has arrived.
    async fn exec_unlock(&mut self, ch: ChannelId, machine: bool, s: &mut Session) {
        let pass = match self.channels.get_mut(&ch).map(|c| &mut c.mode) {
            Some(Mode::Unlock { buf, .. }) => buf.take(!machine),
            _ => return,
        };
        if let Some(c) = self.channels.get_mut(&ch) {
            c.mode = Mode::Finished;
        }
        let pass = match pass {
            Ok(p) => p,
            Err(e) => return self.refuse_input(ch, machine, e, s),
        };
        let reply = self.run_unlock(pass).await;
        let code = reply.outcome.exit_code();
        if machine {
            self.finish(ch, s, &protocol::encode_line(&reply), b"", code);
        } else {
            let text = format!("{}\n", protocol::describe_unlock(&reply));
            let (out, err) = if code == exit::UNLOCKED {
                (text.into_bytes(), Vec::new())
            } else {
                (Vec::new(), text.into_bytes())
            };
            self.finish(ch, s, &out, &err, code);
        }
    }

    fn refuse_input(&mut self, ch: ChannelId, machine: bool, e: SecretError, s: &mut Session) {
        let msg = format!("error: {e}");
        if machine {
            let r = protocol::ErrorReply {
                version: protocol::VERSION,
                error: msg,
            };
            self.finish(ch, s, &protocol::encode_line(&r), b"", exit::ERROR);
        } else {
            self.finish(ch, s, b"", format!("{msg}\n").as_bytes(), exit::ERROR);
        }
    }

    async fn prompt(&mut self, ch: ChannelId, s: &mut Session) {
        let vols = self.status().await;
        // A volume another session is unlocking right now may still need
        // this passphrase: the gate queues ours behind it.
        let pending: Vec<String> = vols
            .iter()
            .filter(|v| matches!(v.state, VolumeState::Pending | VolumeState::Unlocking))
            .map(|v| format!("{} ({})", v.name, v.device))
            .collect();
        if pending.is_empty() {
            let all_open = !vols.is_empty() && vols.iter().all(|v| v.state == VolumeState::Open);
            // Same codes as exec `unlock` gets for the same state, decided
            // from the state, not from the text.
            let (text, code) = if all_open {
                (
                    "Nothing to unlock: every volume is open.\r\n".to_string(),
                    exit::NOTHING_TO_UNLOCK,
                )
            } else {
                let text = format!(
                    "Nothing can be unlocked now:\r\n{}",
                    protocol::describe_status(&vols).replace('\n', "\r\n")
                );
                if vols.iter().any(|v| v.state == VolumeState::Exhausted) {
                    (text, exit::NO_TRIES_LEFT)
                } else {
                    (text, exit::UNLOCK_FAILED)
                }
            };
            return self.finish(ch, s, text.as_bytes(), b"", code);
        }
        let text = format!("Passphrase for {}: ", pending.join(", "));
        let _ = s.data(ch, text.into_bytes());
    }

    async fn interactive_key(&mut self, ch: ChannelId, data: &[u8], s: &mut Session) {
        let (key, tries) = match self.channels.get_mut(&ch).map(|c| &mut c.mode) {
            Some(Mode::Interactive { editor, tries }) => (editor.feed(data), *tries),
            _ => return,
        };
        let pass = match key {
            None => return,
            Some(Key::Cancel) => {
                return self.finish(ch, s, b"^C\r\nCancelled.\r\n", b"", exit::ERROR)
            }
            Some(Key::Line(Err(e))) => {
                let _ = s.data(ch, format!("\r\n{e}.\r\n").into_bytes());
                return self.prompt(ch, s).await;
            }
            Some(Key::Line(Ok(p))) => p,
        };
        let _ = s.data(ch, b"\r\nUnlocking...\r\n".to_vec());
        let reply = self.run_unlock(pass).await;
        let line = format!("{}\r\n", protocol::describe_unlock(&reply));
        let tries = tries + 1;
        match reply.outcome {
            Outcome::WrongPassphrase | Outcome::Partial if tries < SESSION_TRIES => {
                if let Some(Mode::Interactive { tries: t, .. }) =
                    self.channels.get_mut(&ch).map(|c| &mut c.mode)
                {
                    *t = tries;
                }
                let _ = s.data(ch, line.into_bytes());
                self.prompt(ch, s).await;
            }
            o => self.finish(ch, s, line.as_bytes(), b"", o.exit_code()),
        }
    }
}

impl russh::server::Handler for Conn {
    type Error = crate::error::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(reject())
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        // Counted for the summary line; one line each would let anybody
        // flood the journal.
        tracing::debug!(peer = %self.peer, user = %shown(user), "password authentication refused");
        self.shared.ended(Ended::AuthRefused, self.peer);
        Ok(reject())
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        _response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        Ok(reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Only listed keys get to sign; `from=` is checked again after.
        if self
            .shared
            .keys
            .allows(offer.public_key, self.from_ip)
            .is_some()
        {
            Ok(Auth::Accept)
        } else {
            Ok(reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let fp = fingerprint(key.public_key);
        match self.shared.keys.allows(key.public_key, self.from_ip) {
            Some(entry) => {
                tracing::info!(peer = %self.peer, user = %shown(user), key = %fp, comment = %entry.comment, "accepted public key");
                self.pty_allowed = entry.pty;
                Ok(Auth::Accept)
            }
            None => {
                self.shared.ended(Ended::AuthRefused, self.peer);
                let n = self
                    .shared
                    .key_refusals_logged
                    .fetch_add(1, Ordering::Relaxed);
                if n < KEY_REFUSALS_LOGGED {
                    tracing::warn!(peer = %self.peer, user = %shown(user), key = %fp, "refused public key: not in authorized_keys (or from= does not match)");
                }
                Ok(reject())
            }
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        let Ok(permit) = self.shared.sessions.clone().try_acquire_owned() else {
            tracing::warn!(peer = %self.peer, "authenticated, but max-sessions are in use; disconnecting");
            crate::bail!("too many sessions");
        };
        self.session_permit = Some(permit);
        if let Some(id) = self.admission_id.take() {
            lock(&self.shared.admission).release(id);
        }
        self.active();
        self.authed.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.len() >= MAX_CHANNELS {
            drop(reply);
            return Ok(());
        }
        self.active();
        // We use the handler callbacks, not the channel's stream: drop it so
        // its queue never fills up and stalls the session.
        let id = channel.id();
        drop(channel);
        self.channels.insert(
            id,
            Chan {
                mode: Mode::Idle,
                pty: false,
            },
        );
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(&mut self, ch: ChannelId, _s: &mut Session) -> Result<(), Self::Error> {
        self.channels.remove(&ch);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        ch: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pw: u32,
        _ph: u32,
        _modes: &[(russh::Pty, u32)],
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get_mut(&ch) {
            Some(c) if self.pty_allowed => {
                c.pty = true;
                let _ = s.channel_success(ch);
            }
            _ => {
                let _ = s.channel_failure(ch);
            }
        }
        Ok(())
    }

    async fn shell_request(&mut self, ch: ChannelId, s: &mut Session) -> Result<(), Self::Error> {
        self.active();
        let Some(c) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        let _ = s.channel_success(ch);
        if !c.pty {
            let text = if self.pty_allowed {
                "portcullisd: no shell here. Use `ssh -t HOST` for a passphrase prompt, \
                 or the commands unlock, status, help.\n"
            } else {
                "portcullisd: this key may not open a terminal (restrict/no-pty); \
                 use `echo PASS | ssh HOST unlock` or `portcullis unlock`.\n"
            };
            self.finish(ch, s, b"", text.as_bytes(), exit::ERROR);
            return Ok(());
        }
        c.mode = Mode::Interactive {
            editor: LineEditor::default(),
            tries: 0,
        };
        let _ = s.data(
            ch,
            b"portcullis: remote unlock. Ctrl-C to leave.\r\n".to_vec(),
        );
        self.prompt(ch, s).await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        ch: ChannelId,
        data: &[u8],
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.channels.contains_key(&ch) {
            return Ok(());
        }
        self.active();
        let _ = s.channel_success(ch);
        let cmd = protocol::parse_command(data);
        // Never the text of a refused command: it may be a passphrase.
        tracing::info!(peer = %self.peer, command = %protocol::describe_request(data, &cmd), "exec request");
        match cmd {
            Err(e) => self.finish(ch, s, b"", format!("error: {e}\n").as_bytes(), exit::ERROR),
            Ok(Command::Help) => self.finish(ch, s, HELP.as_bytes(), b"", exit::UNLOCKED),
            Ok(Command::Status) => {
                let text = protocol::describe_status(&self.status().await);
                self.finish(ch, s, text.as_bytes(), b"", exit::UNLOCKED);
            }
            Ok(Command::MachineStatus) => {
                let reply = StatusReply {
                    version: protocol::VERSION,
                    volumes: self.status().await,
                };
                self.finish(ch, s, &protocol::encode_line(&reply), b"", exit::UNLOCKED);
            }
            Ok(c @ (Command::Unlock | Command::MachineUnlock)) => {
                if let Some(chan) = self.channels.get_mut(&ch) {
                    chan.mode = Mode::Unlock {
                        machine: c == Command::MachineUnlock,
                        buf: SecretBuf::default(),
                    };
                }
            }
        }
        Ok(())
    }

    async fn data(
        &mut self,
        ch: ChannelId,
        data: &[u8],
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        self.active();
        let (machine, line_done, overflow) = match self.channels.get_mut(&ch).map(|c| &mut c.mode) {
            // Machine mode keeps every byte to EOF; a human `unlock` keeps
            // the first line only, so a long tail cannot overflow it.
            Some(Mode::Unlock { machine, buf }) => {
                let line_done = if *machine {
                    buf.push(data);
                    false
                } else {
                    buf.push_line(data)
                };
                (*machine, line_done, buf.overflowed())
            }
            Some(Mode::Interactive { .. }) => {
                self.interactive_key(ch, data, s).await;
                return Ok(());
            }
            _ => return Ok(()),
        };
        if overflow {
            if let Some(Mode::Unlock { buf, .. }) = self.channels.get_mut(&ch).map(|c| &mut c.mode)
            {
                buf.clear();
            }
            self.refuse_input(ch, machine, SecretError::TooLong, s);
        } else if line_done {
            self.exec_unlock(ch, machine, s).await;
        }
        Ok(())
    }

    async fn channel_eof(&mut self, ch: ChannelId, s: &mut Session) -> Result<(), Self::Error> {
        self.active();
        if let Some(Mode::Unlock { machine, .. }) = self.channels.get(&ch).map(|c| &c.mode) {
            let machine = *machine;
            self.exec_unlock(ch, machine, s).await;
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        ch: ChannelId,
        _k: &str,
        _v: &str,
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        let _ = s.channel_failure(ch);
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        ch: ChannelId,
        name: &str,
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        tracing::warn!(peer = %self.peer, subsystem = %shown(name), "subsystem refused");
        let _ = s.channel_failure(ch);
        Ok(())
    }

    async fn x11_request(
        &mut self,
        ch: ChannelId,
        _single: bool,
        _proto: &str,
        _cookie: &str,
        _screen: u32,
        s: &mut Session,
    ) -> Result<(), Self::Error> {
        let _ = s.channel_failure(ch);
        Ok(())
    }

    async fn agent_request(
        &mut self,
        _ch: ChannelId,
        _s: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        _a: &str,
        _p: &mut u32,
        _s: &mut Session,
    ) -> Result<bool, Self::Error> {
        tracing::warn!(peer = %self.peer, "port forwarding refused");
        Ok(false)
    }
}

const HELP: &str = "portcullisd: remote LUKS unlock. Commands:\n  \
unlock   read a passphrase from stdin (echo PASS | ssh HOST unlock)\n  \
status   list volumes waiting to be unlocked\n  \
help     this text\nOr `ssh -t HOST` for a prompt.\n";
