//! Shared fixtures for the in-process tests: a real listener on 127.0.0.1:0
//! with the real cryptsetup backend driving a recording fake `cryptsetup`
//! inside a temporary root, real host and client keys, and client options.
#![allow(dead_code)]

use portcullis::authkeys::{fingerprint, AuthorizedKeys};
use portcullis::client::{HostKeyPolicy, Identity, Options, Target};
use portcullis::config::Limits;
use portcullis::sys::{Output, Root, Runner};
use portcullis::unlock::cryptsetup::Cryptsetup;
use portcullis::unlock::volume::{DeviceSpec, Volume};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const RIGHT: &[u8] = b"the right passphrase 4711";

/// Stands in for cryptsetup: accepts RIGHT, records stdin, makes the mapper
/// node on success.
pub struct FakeCryptsetup {
    pub root: PathBuf,
    pub stdins: Arc<Mutex<Vec<Vec<u8>>>>,
    pub argvs: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Runner for FakeCryptsetup {
    fn run(&self, _p: &Path, args: &[String], stdin: Option<&[u8]>) -> std::io::Result<Output> {
        let stdin = stdin.unwrap_or_default().to_vec();
        self.argvs.lock().unwrap().push(args.to_vec());
        let ok = stdin == RIGHT;
        self.stdins.lock().unwrap().push(stdin);
        if ok {
            let name = args.last().cloned().unwrap_or_default();
            std::fs::create_dir_all(self.root.join("dev/mapper"))?;
            std::fs::write(self.root.join("dev/mapper").join(name), b"")?;
            Ok(Output {
                code: Some(0),
                ..Default::default()
            })
        } else {
            Ok(Output {
                code: Some(2),
                stderr: b"No key available with this passphrase.\n".to_vec(),
                ..Default::default()
            })
        }
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub addr: std::net::SocketAddr,
    pub host_fp: String,
    pub client_key: PathBuf,
    pub other_key: PathBuf,
    pub stdins: Arc<Mutex<Vec<Vec<u8>>>>,
    pub argvs: Arc<Mutex<Vec<Vec<String>>>>,
    pub server: tokio::task::JoinHandle<portcullis::error::Result<()>>,
}

/// Starts a listener guarding two volumes; `ak_options` prefixes the
/// authorized key line (e.g. `from="10.9.9.9"`).
pub async fn start(ak_options: &str, limits: Limits) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("dev")).unwrap();
    std::fs::write(p.join("dev/vda"), b"").unwrap();
    std::fs::write(p.join("dev/vdb"), b"").unwrap();
    let host = portcullis::hostkey::generate(&p.join("host_key"), "test-host").unwrap();
    let client = portcullis::hostkey::generate(&p.join("admin"), "admin").unwrap();
    portcullis::hostkey::generate(&p.join("intruder"), "intruder").unwrap();
    let line = format!(
        "{ak_options} {}\n",
        client.public_key().to_openssh().unwrap()
    );
    let keys = AuthorizedKeys::parse(line.trim_start()).unwrap();
    let stdins = Arc::new(Mutex::new(vec![]));
    let argvs = Arc::new(Mutex::new(vec![]));
    let runner = FakeCryptsetup {
        root: p.to_path_buf(),
        stdins: stdins.clone(),
        argvs: argvs.clone(),
    };
    let vols = vec![
        Volume {
            name: "root".into(),
            device: DeviceSpec::Path("/dev/vda".into()),
            options: Default::default(),
        },
        Volume {
            name: "data".into(),
            device: DeviceSpec::Path("/dev/vdb".into()),
            options: Default::default(),
        },
    ];
    let backend = Arc::new(Cryptsetup::new(
        runner,
        Root::new(p),
        "/sbin/cryptsetup".into(),
        vols,
        5,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let host_fp = fingerprint(host.public_key());
    let config = portcullis::listener::ssh_config(host, &limits);
    let server = tokio::spawn(portcullis::listener::serve(
        vec![listener],
        config,
        backend,
        keys,
        limits,
    ));
    Fixture {
        addr,
        host_fp,
        client_key: p.join("admin"),
        other_key: p.join("intruder"),
        stdins,
        argvs,
        server,
        dir,
    }
}

impl Fixture {
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
}
