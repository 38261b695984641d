//! Simulated hosts for the fleet tests and the fleet benchmark: each host is
//! a real `portcullis::listener::serve` on a loopback port with a fake
//! backend (one volume, one right passphrase, a delay standing in for
//! cryptsetup), and once unlocked, after a boot delay, a "system" SSH server
//! on another port holding a different host key.
//!
//! Hosts run in shards: one thread with its own tokio runtime each, so a
//! test can stop a shard (its sockets close: the host "reboots" or goes
//! away) without touching the others. Test code only: fakes never ship in
//! the daemon.
#![allow(dead_code)]

use portcullis::authkeys::{fingerprint, AuthorizedKeys};
use portcullis::config::Limits;
use portcullis::protocol::{VolumeInfo, VolumeState};
use portcullis::secret::Passphrase;
use portcullis::unlock::{Attempt, Backend};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A deterministic test key: `role` and `n` pick it.
pub fn key(role: u8, n: u32) -> PrivateKey {
    let mut seed = [0x5au8; 32];
    seed[0] = role;
    seed[1..5].copy_from_slice(&n.to_le_bytes());
    PrivateKey::from(Ed25519Keypair::from_seed(&seed))
}

pub const ROLE_INITRAMFS: u8 = 1;
pub const ROLE_SYSTEM: u8 = 2;
pub const ROLE_CLIENT: u8 = 3;
pub const ROLE_OTHER: u8 = 4;

/// One volume that opens with one passphrase, after `delay`.
pub struct FakeBackend {
    right: Vec<u8>,
    delay: Duration,
    state: Mutex<(VolumeState, u32)>,
    pub attempts: Arc<AtomicU32>,
    /// Attempts begun (counted before the delay): a test can act while
    /// "cryptsetup" runs.
    pub started: Arc<AtomicU32>,
    on_open: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl FakeBackend {
    fn info(&self) -> VolumeInfo {
        let (state, tries) = *self.state.lock().unwrap();
        VolumeInfo {
            name: "root".into(),
            device: "/dev/fake".into(),
            backend: "fake".into(),
            state,
            tries_left: Some(tries),
        }
    }
}

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn status(&self) -> Vec<VolumeInfo> {
        vec![self.info()]
    }

    fn try_unlock(&self, pass: &Passphrase) -> Vec<(VolumeInfo, Attempt)> {
        let before = self.info();
        match before.state {
            VolumeState::Open => return vec![],
            VolumeState::Exhausted => return vec![(before, Attempt::NoTriesLeft)],
            _ => {}
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let ok = pass.expose() == self.right.as_slice();
        {
            let mut st = self.state.lock().unwrap();
            if ok {
                st.0 = VolumeState::Open;
            } else {
                st.1 = st.1.saturating_sub(1);
                if st.1 == 0 {
                    st.0 = VolumeState::Exhausted;
                }
            }
        }
        if ok {
            if let Some(tx) = self.on_open.lock().unwrap().take() {
                let _ = tx.send(());
            }
            vec![(before, Attempt::Opened)]
        } else {
            vec![(before, Attempt::WrongPassphrase)]
        }
    }
}

/// How one simulated host behaves.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Index: picks the host keys.
    pub n: u32,
    pub right: Vec<u8>,
    /// Time cryptsetup "takes".
    pub unlock_delay: Duration,
    /// Listener starts this late (the machine is still booting).
    pub start_delay: Duration,
    /// The system's sshd answers this long after the unlock.
    pub boot_delay: Duration,
    pub tries: u32,
    /// Start no system server at all.
    pub no_system: bool,
    /// Use this role's key for the system server (e.g. ROLE_OTHER).
    pub system_role: u8,
    /// Listen on these ports (0: pick one).
    pub port: u16,
    pub system_port: u16,
}

impl Spec {
    pub fn new(n: u32, right: &[u8]) -> Self {
        Spec {
            n,
            right: right.to_vec(),
            unlock_delay: Duration::ZERO,
            start_delay: Duration::ZERO,
            boot_delay: Duration::ZERO,
            tries: 5,
            no_system: false,
            system_role: ROLE_SYSTEM,
            port: 0,
            system_port: 0,
        }
    }
}

/// What the outside needs to know about a running host.
#[derive(Debug, Clone)]
pub struct Info {
    pub n: u32,
    pub port: u16,
    pub system_port: u16,
    pub fingerprint: String,
    pub system_fingerprint: String,
    pub attempts: Arc<AtomicU32>,
    pub started: Arc<AtomicU32>,
}

/// A thread with its own runtime; dropping it stops every host in it.
pub struct Shard {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub hosts: Vec<Info>,
}

impl Drop for Shard {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A loopback socket bound (port reserved) but not listening: connections
/// are refused until the host "boots" and calls `listen`. Holding it keeps
/// other simulated hosts from being handed the same port.
///
/// An ephemeral port is bound WITHOUT SO_REUSEADDR: with it, Linux may hand
/// the same port to two sockets that are bound but not listening, and two
/// simulated hosts of tests running in parallel answered for each other.
/// It is set right after binding, so that the accepted connections inherit
/// it and a "rebooted" host can bind its fixed port again over their
/// TIME_WAIT (the watch test).
fn reserve(port: u16) -> tokio::net::TcpSocket {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    if port != 0 {
        s.set_reuseaddr(true).unwrap();
    }
    s.bind(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .unwrap_or_else(|e| panic!("binding 127.0.0.1:{port}: {e}"));
    s.set_reuseaddr(true).unwrap();
    s
}

/// The client key every simulated host authorizes.
pub fn client_key() -> PrivateKey {
    key(ROLE_CLIENT, 0)
}

/// Writes the client key (0600) for the CLI to use.
pub fn write_client_key(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let text = client_key().to_openssh(LineEnding::LF).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
}

/// Starts `specs` in one shard.
pub fn start(specs: Vec<Spec>) -> Shard {
    let mut sockets = Vec::new();
    let infos: Vec<Info> = specs
        .iter()
        .map(|s| {
            let (l, sys) = (reserve(s.port), reserve(s.system_port));
            let port = l.local_addr().unwrap().port();
            let system_port = sys.local_addr().unwrap().port();
            sockets.push((l, sys));
            (s, port, system_port)
        })
        .map(|(s, port, system_port)| Info {
            n: s.n,
            port,
            system_port,
            fingerprint: fingerprint(key(ROLE_INITRAMFS, s.n).public_key()),
            system_fingerprint: fingerprint(key(ROLE_SYSTEM, s.n).public_key()),
            attempts: Arc::new(AtomicU32::new(0)),
            started: Arc::new(AtomicU32::new(0)),
        })
        .collect();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let run = infos.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            for ((spec, info), (listen_sock, system_sock)) in
                specs.into_iter().zip(run).zip(sockets)
            {
                // A host that starts at once listens before `start` returns:
                // a client run right after must not find the port refusing.
                let listen = if spec.start_delay.is_zero() {
                    match listen_sock.listen(1024) {
                        Ok(l) => Listen::Now(l),
                        Err(e) => {
                            eprintln!("sim host {}: listening on {}: {e}", spec.n, info.port);
                            continue;
                        }
                    }
                } else {
                    Listen::Later(listen_sock)
                };
                tokio::spawn(host(spec, info, (listen, system_sock)));
            }
            let _ = ready_tx.send(());
            let _ = stop_rx.await;
        });
        // Dropping the runtime drops every task and closes every socket.
        rt.shutdown_timeout(Duration::from_secs(1));
    });
    let _ = ready_rx.recv();
    Shard {
        stop: Some(stop_tx),
        thread: Some(thread),
        hosts: infos,
    }
}

/// Starts many hosts over `shards` threads.
pub fn start_many(specs: Vec<Spec>, shards: usize) -> Vec<Shard> {
    let per = specs.len().div_ceil(shards.max(1)).max(1);
    let mut out = Vec::new();
    let mut it = specs.into_iter().peekable();
    while it.peek().is_some() {
        out.push(start(it.by_ref().take(per).collect()));
    }
    out
}

/// The initramfs listener's socket: listening already, or at boot.
enum Listen {
    Now(tokio::net::TcpListener),
    Later(tokio::net::TcpSocket),
}

async fn host(spec: Spec, info: Info, socks: (Listen, tokio::net::TcpSocket)) {
    tokio::time::sleep(spec.start_delay).await;
    let (open_tx, open_rx) = tokio::sync::oneshot::channel();
    let backend = Arc::new(FakeBackend {
        right: spec.right.clone(),
        delay: spec.unlock_delay,
        state: Mutex::new((VolumeState::Pending, spec.tries)),
        attempts: info.attempts.clone(),
        started: info.started.clone(),
        on_open: Mutex::new(Some(open_tx)),
    });
    let keys = AuthorizedKeys::parse(&client_key().public_key().to_openssh().unwrap()).unwrap();
    let limits = Limits {
        max_sessions: 64,
        max_unauthenticated: 64,
        ..Limits::default()
    };
    let config = portcullis::listener::ssh_config(key(ROLE_INITRAMFS, spec.n), &limits);
    let (listen_sock, system_sock) = socks;
    let listener = match listen_sock {
        Listen::Now(l) => Ok(l),
        Listen::Later(s) => s.listen(1024),
    };
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sim host {}: listening on {}: {e}", spec.n, info.port);
            return;
        }
    };
    tokio::spawn(portcullis::listener::serve(
        vec![listener],
        config,
        backend,
        keys,
        limits,
    ));
    if spec.no_system || open_rx.await.is_err() {
        return;
    }
    tokio::time::sleep(spec.boot_delay).await;
    system(key(spec.system_role, spec.n), system_sock).await;
}

/// The booted system's sshd, as far as a key probe can tell: it completes
/// the key exchange with its own host key and refuses every login.
async fn system(host_key: PrivateKey, sock: tokio::net::TcpSocket) {
    let Ok(l) = sock.listen(1024) else {
        return;
    };
    let config = Arc::new(russh::server::Config {
        keys: vec![host_key],
        auth_rejection_time: Duration::from_millis(10),
        ..Default::default()
    });
    loop {
        let Ok((stream, _)) = l.accept().await else {
            continue;
        };
        let config = config.clone();
        tokio::spawn(async move {
            if let Ok(s) = russh::server::run_stream(config, stream, RefuseAll).await {
                let _ = s.await;
            }
        });
    }
}

struct RefuseAll;

impl russh::server::Handler for RefuseAll {
    type Error = russh::Error;
}

/// Writes an inventory for `hosts` into `dir`: one group `sim`, the client
/// key and a passphrase file holding `pass`. Returns its path.
pub fn write_inventory(dir: &Path, hosts: &[Info], pass: &[u8]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("client_key");
    write_client_key(&key);
    let pw = dir.join("passphrase");
    std::fs::write(&pw, pass).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut t = format!(
        "[defaults]\nidentity = \"{}\"\npassphrase = {{ file = \"{}\" }}\n\n[group.sim]\nhosts = [{}]\n",
        key.display(),
        pw.display(),
        hosts
            .iter()
            .map(|h| format!("\"h{:04}\"", h.n))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for h in hosts {
        t.push_str(&format!(
            "\n[host.h{:04}]\naddress = \"127.0.0.1\"\nport = {}\nfingerprint = \"{}\"\n\
             system-port = {}\nsystem-fingerprint = \"{}\"\n",
            h.n, h.port, h.fingerprint, h.system_port, h.system_fingerprint
        ));
    }
    let p = dir.join("inventory.toml");
    std::fs::write(&p, t).unwrap();
    p
}
