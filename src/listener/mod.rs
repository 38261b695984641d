//! The SSH listener: accepts connections, authenticates by public key only,
//! serves `unlock`, `status`, the machine mode and an interactive prompt, and
//! stops once every volume is open. It does not know which unlock backend is
//! underneath.
//!
//! Attacker-facing: no `unwrap`, `expect`, indexing or `panic` here.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod terminal;

use crate::authkeys::{fingerprint, AuthorizedKeys};
use crate::config::Limits;
use crate::protocol::{self, exit, Command, Outcome, StatusReply, UnlockReply, VolumeState};
use crate::secret::{Passphrase, SecretBuf, SecretError};
use crate::unlock::Backend;
use anyhow::Result;
use russh::keys::PrivateKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, MethodKind, MethodSet, SshId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use terminal::{Key, LineEditor};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Identification string: no library or version to fingerprint.
const SERVER_ID: &str = "SSH-2.0-portcullis";
/// Wrong answers allowed in one interactive session before it is closed.
const SESSION_TRIES: u32 = 3;
/// Channels one connection may open.
const MAX_CHANNELS: usize = 4;
/// How long finished sessions get to flush their last reply before exit.
const DRAIN: Duration = Duration::from_secs(3);

/// Everything the connections share.
pub struct Shared {
    pub backend: Arc<dyn Backend>,
    pub keys: AuthorizedKeys,
    pub limits: Limits,
    /// Fired when an unlock leaves nothing pending.
    done: tokio::sync::Notify,
    unauthenticated: Arc<Semaphore>,
    sessions: Arc<Semaphore>,
}

/// Builds russh's server configuration from our limits.
pub fn ssh_config(host_key: PrivateKey, limits: &Limits) -> russh::server::Config {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    russh::server::Config {
        server_id: SshId::Standard(SERVER_ID.into()),
        methods,
        keys: vec![host_key],
        max_auth_attempts: limits.auth_attempts as usize,
        auth_rejection_time: Duration::from_secs(1),
        // OpenSSH starts with a `none` probe; don't make every login wait.
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(limits.idle_timeout),
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}

/// Serves on `listeners` until every volume is open (returns `Ok`), or an
/// accept error that is not about one connection.
pub async fn serve(
    listeners: Vec<TcpListener>,
    config: russh::server::Config,
    backend: Arc<dyn Backend>,
    keys: AuthorizedKeys,
    limits: Limits,
) -> Result<()> {
    let shared = Arc::new(Shared {
        backend,
        keys,
        done: tokio::sync::Notify::new(),
        unauthenticated: Arc::new(Semaphore::new(limits.max_unauthenticated as usize)),
        sessions: Arc::new(Semaphore::new(limits.max_sessions as usize)),
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
    // The initramfs stops us with SIGTERM before switch-root, possibly while
    // a reply is on its way (the volume just opened): stop accepting, let the
    // sessions in flight finish (DRAIN), then exit 0.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(terminated);
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    let mut stopped = false;
    loop {
        tokio::select! {
            conn = rx.recv() => match conn {
                Some((stream, peer)) => accept(&shared, &config, stream, peer),
                None => break,
            },
            _ = shared.done.notified() => break,
            // Volumes can also be opened from elsewhere (the console).
            _ = poll.tick() => if all_open(&shared).await { break },
            _ = &mut terminated => {
                stopped = true;
                break;
            }
        }
    }
    for a in acceptors {
        a.abort();
    }
    drop(rx);
    if stopped {
        tracing::info!("stopped (SIGTERM); finishing the replies in flight");
    } else {
        tracing::info!("every volume is open; closing the listener");
    }
    let total = shared.limits.max_sessions as usize;
    let deadline = tokio::time::Instant::now() + DRAIN;
    while shared.sessions.available_permits() < total && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn all_open(shared: &Arc<Shared>) -> bool {
    let b = shared.backend.clone();
    tokio::task::spawn_blocking(move || b.all_open())
        .await
        .unwrap_or(false)
}

fn accept(
    shared: &Arc<Shared>,
    config: &Arc<russh::server::Config>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let Ok(session_permit) = shared.sessions.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "refused connection: too many sessions");
        return;
    };
    let Ok(unauth_permit) = shared.unauthenticated.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "refused connection: too many unauthenticated connections");
        return;
    };
    let authed = Arc::new(AtomicBool::new(false));
    let handler = Conn {
        shared: shared.clone(),
        peer,
        authed: authed.clone(),
        unauth_permit: Some(unauth_permit),
        pty_allowed: false,
        channels: HashMap::new(),
    };
    let grace = shared.limits.login_grace;
    let config = config.clone();
    tokio::spawn(async move {
        let _permit = session_permit;
        let deadline = tokio::time::Instant::now() + grace;
        let started =
            tokio::time::timeout_at(deadline, russh::server::run_stream(config, stream, handler))
                .await;
        let mut session = match started {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(%peer, "connection ended during handshake: {e:#}");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "login grace time over during handshake; dropped");
                return;
            }
        };
        let handle = session.handle();
        tokio::select! {
            r = &mut session => log_end(peer, r),
            _ = tokio::time::sleep_until(deadline) => {
                if !authed.load(Ordering::SeqCst) {
                    tracing::info!(%peer, "login grace time over; disconnecting");
                    let _ = handle
                        .disconnect(russh::Disconnect::ByApplication, "login grace time over".into(), String::new())
                        .await;
                }
                log_end(peer, session.await);
            }
        }
    });
}

fn log_end(peer: SocketAddr, r: Result<(), anyhow::Error>) {
    match r {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        // A client closing its socket after the reply is the normal end.
        Err(e) if format!("{e:#}").contains("early eof") => {
            tracing::debug!(%peer, "connection closed by the client")
        }
        Err(e) => tracing::info!(%peer, "connection closed: {e:#}"),
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
    peer: SocketAddr,
    authed: Arc<AtomicBool>,
    /// Released on successful authentication.
    unauth_permit: Option<OwnedSemaphorePermit>,
    pty_allowed: bool,
    channels: HashMap<ChannelId, Chan>,
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
    /// Ends a channel: optional stdout/stderr text, exit status, EOF, close.
    fn finish(&mut self, ch: ChannelId, s: &mut Session, out: &[u8], err: &[u8], code: u8) {
        if let Some(c) = self.channels.get_mut(&ch) {
            c.mode = Mode::Finished;
        }
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
        let backend = self.shared.backend.clone();
        let peer = self.peer;
        let reply = tokio::task::spawn_blocking(move || {
            let r = crate::unlock::unlock(backend.as_ref(), &pass);
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
        if reply.outcome == Outcome::Unlocked || self.shared.backend.all_open() {
            self.shared.done.notify_one();
        }
        reply
    }

    async fn status(&self) -> Vec<protocol::VolumeInfo> {
        let b = self.shared.backend.clone();
        tokio::task::spawn_blocking(move || b.status())
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
        let pending: Vec<String> = vols
            .iter()
            .filter(|v| v.state == VolumeState::Pending)
            .map(|v| format!("{} ({})", v.name, v.device))
            .collect();
        if pending.is_empty() {
            let text = if vols.iter().all(|v| v.state == VolumeState::Open) && !vols.is_empty() {
                "Nothing to unlock: every volume is open.\r\n".to_string()
            } else {
                format!(
                    "Nothing can be unlocked now:\r\n{}",
                    protocol::describe_status(&vols).replace('\n', "\r\n")
                )
            };
            let code = if text.starts_with("Nothing to") {
                exit::NOTHING_TO_UNLOCK
            } else {
                exit::UNLOCK_FAILED
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
    type Error = anyhow::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(reject())
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        tracing::warn!(peer = %self.peer, user, "password authentication refused");
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
            .allows(offer.public_key, Some(self.peer.ip()))
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
        match self
            .shared
            .keys
            .allows(key.public_key, Some(self.peer.ip()))
        {
            Some(entry) => {
                tracing::info!(peer = %self.peer, user, key = %fp, comment = %entry.comment, "accepted public key");
                self.pty_allowed = entry.pty;
                Ok(Auth::Accept)
            }
            None => {
                tracing::warn!(peer = %self.peer, user, key = %fp, "refused public key: not in authorized_keys (or from= does not match)");
                Ok(reject())
            }
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.authed.store(true, Ordering::SeqCst);
        self.unauth_permit = None;
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
        let _ = s.channel_success(ch);
        let cmd = protocol::parse_command(data);
        tracing::info!(peer = %self.peer, command = ?cmd, "exec request");
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
        tracing::warn!(peer = %self.peer, subsystem = name, "subsystem refused");
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
