//! Benchmark helper (run by `benches/listener.sh`): how much time portcullis
//! adds to an unlock on loopback, beyond cryptsetup's own work.
//!
//! A real LUKS2 file, the real listener and client in one process; the
//! backend runs the real `cryptsetup open --test-passphrase` (the host has
//! no device-mapper to really open it) and times it. Prints one line per run
//! and min/median/max. Usage: unlock_overhead LUKS_FILE PASSPHRASE_FILE [RUNS]

use portcullis::authkeys::AuthorizedKeys;
use portcullis::client::{self, HostKeyPolicy, Identity, Options, Target};
use portcullis::config::Limits;
use portcullis::secret::Passphrase;
use portcullis::sys::{Output, Root, Runner, SystemRunner};
use portcullis::unlock::cryptsetup::Cryptsetup;
use portcullis::unlock::volume::{DeviceSpec, Volume};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs the real cryptsetup in test mode, records how long it took, and
/// creates the mapper node in the fake root on success.
struct TimedCryptsetup {
    luks: PathBuf,
    root: PathBuf,
    spent: Arc<Mutex<Duration>>,
}

impl Runner for TimedCryptsetup {
    fn run(&self, _p: &Path, args: &[String], stdin: Option<&[u8]>) -> std::io::Result<Output> {
        let name = args.last().cloned().unwrap_or_default();
        let real_args: Vec<String> = vec![
            "open".into(),
            "--test-passphrase".into(),
            "--type".into(),
            "luks".into(),
            "--key-file=-".into(),
            self.luks.display().to_string(),
        ];
        let t = Instant::now();
        let out = SystemRunner.run(Path::new("/sbin/cryptsetup"), &real_args, stdin)?;
        *self.spent.lock().unwrap() += t.elapsed();
        if out.success() {
            std::fs::create_dir_all(self.root.join("dev/mapper"))?;
            std::fs::write(self.root.join("dev/mapper").join(name), b"")?;
        }
        Ok(out)
    }
}

/// `min/median/max ms` of the runs.
fn spread(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    format!(
        "{:.1}/{:.1}/{:.1} ms",
        ms(&v[0]),
        ms(&v[v.len() / 2]),
        ms(&v[v.len() - 1])
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let luks = PathBuf::from(&args[1]);
    let pass_bytes = std::fs::read(&args[2])?;
    let runs: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(5);
    let (mut totals, mut crypts, mut overheads) = (vec![], vec![], vec![]);
    for i in 0..runs {
        let dir = tempfile::tempdir()?;
        let p = dir.path();
        std::fs::create_dir_all(p.join("dev"))?;
        std::fs::write(p.join("dev/vda"), b"")?;
        let host = portcullis::hostkey::generate(&p.join("host_key"), "bench")?;
        let admin = portcullis::hostkey::generate(&p.join("admin"), "admin")?;
        let keys =
            AuthorizedKeys::parse(&admin.public_key().to_openssh()?).map_err(anyhow::Error::msg)?;
        let spent = Arc::new(Mutex::new(Duration::ZERO));
        let runner = TimedCryptsetup {
            luks: luks.clone(),
            root: p.into(),
            spent: spent.clone(),
        };
        let vols = vec![Volume {
            name: "root".into(),
            device: DeviceSpec::Path("/dev/vda".into()),
            options: Default::default(),
        }];
        let backend = Arc::new(Cryptsetup::new(
            runner,
            Root::new(p),
            "/sbin/cryptsetup".into(),
            vols,
            5,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let fp = portcullis::authkeys::fingerprint(host.public_key());
        let config = portcullis::listener::ssh_config(host, &Limits::default());
        let server = tokio::spawn(portcullis::listener::serve(
            vec![listener],
            config,
            backend,
            keys,
            Limits::default(),
        ));
        let opts = Options {
            target: Target {
                host: "127.0.0.1".into(),
                port,
            },
            user: "root".into(),
            host_key: HostKeyPolicy::Fingerprint(fp),
            identity: Identity {
                agent: false,
                files: vec![p.join("admin")],
            },
            connect_timeout: Duration::from_secs(30),
            wait: None,
            via: None,
        };
        let pass = Passphrase::new(pass_bytes.clone()).map_err(anyhow::Error::msg)?;
        let t = Instant::now();
        let reply = client::unlock(&opts, &pass)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let total = t.elapsed();
        anyhow::ensure!(
            reply.outcome == portcullis::protocol::Outcome::Unlocked,
            "unlock failed: {reply:?}"
        );
        let crypt = *spent.lock().unwrap();
        println!(
            "run {}: client start to unlocked {:.1} ms, cryptsetup {:.1} ms, portcullis overhead {:.1} ms",
            i + 1,
            total.as_secs_f64() * 1e3,
            crypt.as_secs_f64() * 1e3,
            (total - crypt).as_secs_f64() * 1e3
        );
        totals.push(total);
        crypts.push(crypt);
        overheads.push(total - crypt);
        let _ = server.await;
    }
    println!(
        "min/median/max over {runs} runs: client start to unlocked {}, cryptsetup {}, overhead {}",
        spread(totals),
        spread(crypts),
        spread(overheads)
    );
    Ok(())
}
