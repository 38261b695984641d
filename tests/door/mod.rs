//! Fixtures for the listener's availability tests: a real listener on
//! loopback in front of a backend whose unlock takes as long as a slow KDF,
//! real host and client keys, a raw russh client for channel-level checks.
#![allow(dead_code)]

use portcullis::authkeys::{fingerprint, AuthorizedKeys};
use portcullis::client::{HostKeyPolicy, Identity, Options, Target};
use portcullis::config::Limits;
use portcullis::protocol::{VolumeInfo, VolumeState};
use portcullis::secret::Passphrase;
use portcullis::unlock::{Attempt, Backend};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const RIGHT: &[u8] = b"the right passphrase 4711";

/// One volume; `try_unlock` takes `delay` (a KDF), opens on RIGHT. Like
/// the cryptsetup backend, it holds its lock for the whole attempt, so a
/// `status` that reaches it during an unlock waits.
pub struct SlowBackend {
    pub delay: Duration,
    pub lock: std::sync::Mutex<()>,
    pub open: AtomicBool,
    pub tries: AtomicUsize,
    pub max_tries: usize,
}

impl SlowBackend {
    pub fn new(delay: Duration) -> Arc<Self> {
        Arc::new(SlowBackend {
            delay,
            lock: std::sync::Mutex::new(()),
            open: false.into(),
            tries: 0.into(),
            max_tries: 5,
        })
    }
}

impl Backend for SlowBackend {
    fn name(&self) -> &'static str {
        "slow"
    }
    fn status(&self) -> Vec<VolumeInfo> {
        let _l = self.lock.lock().unwrap();
        self.state()
    }
    fn try_unlock(&self, pass: &Passphrase) -> Vec<(VolumeInfo, Attempt)> {
        let _l = self.lock.lock().unwrap();
        let before = self.state().remove(0);
        match before.state {
            VolumeState::Open => return vec![],
            VolumeState::Exhausted => return vec![(before, Attempt::NoTriesLeft)],
            _ => {}
        }
        std::thread::sleep(self.delay);
        if pass.expose() == RIGHT {
            self.open.store(true, Ordering::SeqCst);
            vec![(before, Attempt::Opened)]
        } else {
            self.tries.fetch_add(1, Ordering::SeqCst);
            vec![(before, Attempt::WrongPassphrase)]
        }
    }
}

impl SlowBackend {
    fn state(&self) -> Vec<VolumeInfo> {
        let used = self.tries.load(Ordering::SeqCst);
        let state = if self.open.load(Ordering::SeqCst) {
            VolumeState::Open
        } else if used >= self.max_tries {
            VolumeState::Exhausted
        } else {
            VolumeState::Pending
        };
        vec![VolumeInfo {
            name: "root".into(),
            device: "/dev/vda".into(),
            backend: "slow".into(),
            state,
            tries_left: Some(self.max_tries.saturating_sub(used) as u32),
        }]
    }
}

pub struct Door {
    pub dir: tempfile::TempDir,
    pub addr: std::net::SocketAddr,
    pub host_fp: String,
    pub client_key: PathBuf,
    pub server: tokio::task::JoinHandle<portcullis::error::Result<()>>,
}

/// Starts a listener in front of `backend`, stopping when `stop` completes.
pub async fn open(
    backend: Arc<dyn Backend>,
    limits: Limits,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Door {
    open_with(backend, limits, Some(stop)).await
}

/// Starts a listener that stops on a real SIGTERM (`listener::serve`).
pub async fn open_sigterm(backend: Arc<dyn Backend>, limits: Limits) -> Door {
    open_with(backend, limits, None::<std::future::Pending<()>>).await
}

async fn open_with(
    backend: Arc<dyn Backend>,
    limits: Limits,
    stop: Option<impl Future<Output = ()> + Send + 'static>,
) -> Door {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let host = portcullis::hostkey::generate(&p.join("host_key"), "test-host").unwrap();
    let client = portcullis::hostkey::generate(&p.join("admin"), "admin").unwrap();
    let keys = AuthorizedKeys::parse(&client.public_key().to_openssh().unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let host_fp = fingerprint(host.public_key());
    let config = portcullis::listener::ssh_config(host, &limits);
    let server = match stop {
        Some(stop) => tokio::spawn(portcullis::listener::serve_until(
            vec![listener],
            config,
            backend,
            keys,
            limits,
            stop,
        )),
        None => tokio::spawn(portcullis::listener::serve(
            vec![listener],
            config,
            backend,
            keys,
            limits,
        )),
    };
    Door {
        addr,
        host_fp,
        client_key: p.join("admin"),
        server,
        dir,
    }
}

impl Door {
    pub fn options(&self) -> Options {
        Options {
            target: Target {
                host: "127.0.0.1".into(),
                port: self.addr.port(),
            },
            user: "root".into(),
            host_key: HostKeyPolicy::Fingerprint(self.host_fp.clone()),
            identity: Identity {
                agent: false,
                files: vec![self.client_key.clone()],
            },
            connect_timeout: Duration::from_secs(10),
            wait: None,
            via: None,
        }
    }

    /// A raw russh client session, authenticated, for channel-level tests.
    pub async fn raw(&self, config: russh::client::Config) -> russh::client::Handle<Pinned> {
        let mut h =
            russh::client::connect(Arc::new(config), self.addr, Pinned(self.host_fp.clone()))
                .await
                .unwrap();
        let key = russh::keys::load_secret_key(&self.client_key, None).unwrap();
        let r = h
            .authenticate_publickey(
                "root",
                russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), None),
            )
            .await
            .unwrap();
        assert!(r.success());
        h
    }
}

/// Accepts exactly the listener's host key.
pub struct Pinned(pub String);

impl russh::client::Handler for Pinned {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                fingerprint(key) == self.0
            }
            _ => false,
        })
    }
}

/// Runs one exec request on `h`; returns stdout+stderr and the exit status.
pub async fn exec(
    h: &russh::client::Handle<Pinned>,
    cmd: &str,
    stdin: &[u8],
) -> (Vec<u8>, Option<u32>) {
    let mut ch = h.channel_open_session().await.unwrap();
    ch.exec(true, cmd).await.unwrap();
    if !stdin.is_empty() {
        ch.data(stdin).await.unwrap();
    }
    ch.eof().await.unwrap();
    let mut out = Vec::new();
    let mut code = None;
    while let Some(msg) = ch.wait().await {
        match msg {
            russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
            russh::ChannelMsg::ExtendedData { data, .. } => out.extend_from_slice(&data),
            russh::ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
            russh::ChannelMsg::Close => break,
            _ => {}
        }
    }
    (out, code)
}
