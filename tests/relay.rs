//! The outbound relay against a real OpenSSH server (`/usr/sbin/sshd`, run
//! by the test on 127.0.0.1 with its own host key and config, the way
//! docs/relay.md sets a relay up): the listener logs in out, pins the
//! relay's host key, asks for the loopback forward; the admin runs the real
//! `portcullis unlock HOST:PORT --via relay`, which goes through the stock
//! `ssh -W` with the listener's own key pinned end to end.
//!
//! Needs root (sshd's privilege separation wants /run/sshd) and sshd
//! (`apt install openssh-server`); says so when skipped.

mod common;

use common::{FakeCryptsetup, RIGHT};
use portcullis::authkeys::{fingerprint, AuthorizedKeys};
use portcullis::config::Limits;
use portcullis::relay::RelaySettings;
use portcullis::sys::Root;
use portcullis::unlock::cryptsetup::Cryptsetup;
use portcullis::unlock::volume::{DeviceSpec, Volume};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

fn can_run_sshd() -> bool {
    if !Path::new(SSHD).exists() {
        eprintln!("skipped: no {SSHD} (apt install openssh-server)");
        return false;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: sshd needs root here (privilege separation)");
        return false;
    }
    std::fs::create_dir_all("/run/sshd").is_ok()
}

#[path = "support/free_port.rs"]
mod free_port;
use free_port::free_port;

fn keygen(path: &Path, comment: &str) -> String {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// A relay: a real sshd with two ports. The listener logs in on `port`,
/// where the `Match` block of docs/relay.md applies (here matched by port
/// rather than by user, so the test needs no system user); admins use
/// `admin_port`.
struct Relay {
    dir: PathBuf,
    port: u16,
    admin_port: u16,
    child: Child,
    host_fp: String,
}

impl Relay {
    /// `permit` is the forward port the listener's key may ask for.
    fn start(dir: &Path, permit: u16, listener_pub: &str, admin_pub: &str) -> Relay {
        let dir = dir.join("relay");
        std::fs::create_dir_all(&dir).unwrap();
        let hk = dir.join("host_key");
        if !hk.exists() {
            keygen(&hk, "relay-host");
        }
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let host_fp = fingerprint(&russh::keys::PublicKey::from_openssh(host_pub.trim()).unwrap());
        let (port, admin_port) = (free_port(), free_port());
        // The exact lines of docs/relay.md.
        std::fs::write(
            dir.join("authorized_keys"),
            format!(
                "restrict,port-forwarding,permitlisten=\"127.0.0.1:{permit}\",command=\"/bin/false\" {listener_pub}\n\
                 restrict,port-forwarding,permitopen=\"127.0.0.1:{permit}\" {admin_pub}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1:{port}\nListenAddress 127.0.0.1:{admin_port}\n\
                 HostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 LogLevel VERBOSE\n\
                 Match LocalPort {port}\n    AllowTcpForwarding remote\n    \
                 PermitListen 127.0.0.1:{permit}\n    X11Forwarding no\n    \
                 AllowAgentForwarding no\n    PermitTTY no\n    ForceCommand /bin/false\n    \
                 ClientAliveInterval 15\n    ClientAliveCountMax 3\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let mut relay = Relay {
            child: spawn_sshd(&dir),
            dir,
            port,
            admin_port,
            host_fp,
        };
        relay.wait_up();
        relay
    }

    fn wait_up(&mut self) {
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "sshd did not start: {}",
                self.log()
            );
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("sshd exited {st}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// Stops sshd and every session process it forked (those hold the
    /// forwarded port), as a relay reboot would.
    fn kill_all(&mut self) {
        let mut parent = std::collections::HashMap::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid …
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
            {
                parent.insert(pid, ppid);
            }
        }
        // Every descendant of the sshd this test started.
        let me = self.child.id();
        let mut tree = vec![me];
        let mut grew = true;
        while grew {
            grew = false;
            for (&pid, ppid) in &parent {
                if tree.contains(ppid) && !tree.contains(&pid) {
                    tree.push(pid);
                    grew = true;
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in tree.into_iter().skip(1) {
            // SAFETY: kill(2) on a process this test started (sshd's own).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }

    /// Starts it again on the same ports with the same host key.
    fn restart(&mut self) {
        self.child = spawn_sshd(&self.dir);
        self.wait_up();
    }

    /// A program called like ssh that knows the relay as `relay`: the
    /// admin's side, with the relay's key in its own known_hosts.
    fn admin_ssh(&self, admin_key: &Path) -> PathBuf {
        let d = &self.dir;
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{} {}", self.admin_port, host_pub),
        )
        .unwrap();
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host relay\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {}\n  \
                 IdentitiesOnly yes\n  UserKnownHostsFile {}/known_hosts\n  \
                 GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
                self.admin_port,
                admin_key.display(),
                d.display()
            ),
        )
        .unwrap();
        let w = d.join("ssh");
        std::fs::write(
            &w,
            format!("#!/bin/sh\nexec ssh -F {}/ssh_config \"$@\"\n", d.display()),
        )
        .unwrap();
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
        w
    }
}

fn spawn_sshd(dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("sshd.log"))
        .unwrap();
    Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The listener's side: its host key, the admin's key it accepts, its
/// relay key, and a recording fake cryptsetup.
struct Server {
    dir: tempfile::TempDir,
    host_fp: String,
    admin_key: PathBuf,
    admin_pub: String,
    /// The listener's authorized_keys line for the admin.
    ak_line: String,
    relay_key: PathBuf,
    relay_pub: String,
    stdins: Arc<Mutex<Vec<Vec<u8>>>>,
}

/// A relay sshd for `s` on a fresh forward port, and the admin's `ssh`
/// wrapper that reaches the listener through it.
fn relay_for(s: &Server) -> (u16, Relay, PathBuf) {
    let fwd = free_port();
    let relay = Relay::start(s.dir.path(), fwd, &s.relay_pub, &s.admin_pub);
    let ssh = relay.admin_ssh(&s.admin_key);
    (fwd, relay, ssh)
}

/// Waits until nothing answers on the relay's forward port, failing with
/// `what` after `within`.
async fn closes_within(fwd: u16, within: Duration, what: &str) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", fwd)).is_ok() {
        assert!(t.elapsed() < within, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn server() -> Server {
    server_with("")
}

/// What the listeners of this test binary logged (every test here serves
/// through the relay only). Process-global, so installed once.
fn listener_log() -> &'static Mutex<Vec<u8>> {
    #[derive(Clone)]
    struct Sink(&'static Mutex<Vec<u8>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static LOG: std::sync::OnceLock<&'static Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let log: &'static Mutex<Vec<u8>> = Box::leak(Box::default());
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(log))
            .with_ansi(false)
            .init();
        log
    })
}

/// `ak_options` prefixes the admin's authorized_keys line.
fn server_with(ak_options: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("dev")).unwrap();
    std::fs::write(p.join("dev/vda"), b"").unwrap();
    let host = portcullis::hostkey::generate(&p.join("host_key"), "listener").unwrap();
    let admin_pub = keygen(&p.join("admin"), "admin");
    let relay = portcullis::hostkey::generate(&p.join("relay_key"), "relay-login").unwrap();
    Server {
        host_fp: fingerprint(host.public_key()),
        admin_key: p.join("admin"),
        ak_line: format!("{ak_options} {admin_pub}").trim().to_string(),
        admin_pub,
        relay_key: p.join("relay_key"),
        relay_pub: relay.public_key().to_openssh().unwrap(),
        stdins: Arc::new(Mutex::new(vec![])),
        dir,
    }
}

impl Server {
    fn settings(&self, relay: &Relay, pin: &str, remote_port: u16) -> RelaySettings {
        let toml = format!(
            "[relay]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"root\"\nkey = \"{}\"\n\
             host-key-fingerprints = [\"{pin}\"]\nremote-port = {remote_port}\n",
            relay.port,
            self.relay_key.display()
        );
        portcullis::config::Settings::parse(&toml, Path::new("test.toml"))
            .unwrap()
            .relay
            .unwrap()
    }

    /// Runs the listener with the relay as its only way in.
    fn serve(
        &self,
        settings: RelaySettings,
        limits: Limits,
    ) -> tokio::task::JoinHandle<portcullis::error::Result<()>> {
        self.serve_killable(settings, limits).0
    }

    /// [`Server::serve`], with a handle that kills the listener at once,
    /// relay connection and all (as a crash or a reset would).
    fn serve_killable(
        &self,
        settings: RelaySettings,
        limits: Limits,
    ) -> (
        tokio::task::JoinHandle<portcullis::error::Result<()>>,
        impl FnOnce(),
    ) {
        let p = self.dir.path();
        let backend = Arc::new(Cryptsetup::new(
            FakeCryptsetup {
                root: p.to_path_buf(),
                stdins: self.stdins.clone(),
                argvs: Arc::new(Mutex::new(vec![])),
            },
            Root::new(p),
            "/sbin/cryptsetup".into(),
            vec![Volume {
                name: "root".into(),
                device: DeviceSpec::Path("/dev/vda".into()),
                options: Default::default(),
            }],
            5,
        ));
        let keys = AuthorizedKeys::parse(&self.ak_line).unwrap();
        let host = portcullis::hostkey::load(&p.join("host_key")).unwrap();
        let config = portcullis::listener::ssh_config(host, &limits);
        let key = portcullis::hostkey::load(&self.relay_key).unwrap();
        let (task, rx) = portcullis::relay::spawn(settings, key);
        let relay_task = task.abort_handle();
        let srv = tokio::spawn(async move {
            let r = portcullis::listener::serve_all(
                vec![],
                Some(rx),
                config,
                backend,
                keys,
                limits,
                std::future::pending(),
            )
            .await;
            task.abort();
            r
        });
        let serving = srv.abort_handle();
        let kill = move || {
            relay_task.abort();
            serving.abort();
        };
        (srv, kill)
    }

    /// `portcullis unlock NAME:PORT --via relay`, passphrase on stdin.
    fn unlock_via(&self, ssh: &Path, port: u16, pin: &str, pass: &[u8]) -> (i32, String) {
        use std::io::Write;
        let mut c = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["unlock", &format!("web1:{port}"), "--via", "relay"])
            .args([
                "--fingerprint",
                pin,
                "--no-agent",
                "--passphrase-stdin",
                "-i",
            ])
            .arg(&self.admin_key)
            .args(["--timeout", "20s"])
            .env("HOME", self.dir.path())
            .env("PORTCULLIS_SSH", ssh)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = c.stdin.take().unwrap();
        input.write_all(pass).unwrap();
        input.write_all(b"\n").unwrap();
        drop(input);
        let o = c.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code().unwrap_or(-1), text)
    }
}

/// Waits until the relay listens on `port` for the admins (the listener's
/// forward is in place), or `limit` passes.
async fn forwarded(port: u16, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The listener's relay session alone, for its error.
async fn relay_error(s: &Server, settings: &RelaySettings) -> String {
    let key = Arc::new(portcullis::hostkey::load(&s.relay_key).unwrap());
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        portcullis::relay::session(settings, &key, &tx),
    )
    .await
    .expect("the relay session neither failed nor ended");
    format!("{:#}", r.expect_err("the relay session should fail"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_through_the_relay_with_the_key_pinned_end_to_end() {
    if !can_run_sshd() {
        return;
    }
    let log = listener_log();
    let s = server();
    let (fwd, relay, ssh) = relay_for(&s);
    let srv = s.serve(s.settings(&relay, &relay.host_fp, fwd), Limits::default());
    assert!(
        forwarded(fwd, Duration::from_secs(15)).await,
        "no forward: {}",
        relay.log()
    );

    // The listener's key may listen there and nothing else: no shell, no
    // connection out of the relay (the Match block), no other port.
    let login = |extra: &[&str]| {
        Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-p", &relay.port.to_string(), "-i"])
            .arg(&s.relay_key)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = login(&[
        "-W",
        &format!("127.0.0.1:{}", relay.admin_port),
        "root@127.0.0.1",
    ]);
    assert!(
        !o.status.success(),
        "the relay key opened a connection out of the relay"
    );
    let o = login(&["root@127.0.0.1", "id"]);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("uid="),
        "the relay key ran a command"
    );
    let o = login(&[
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        &format!("127.0.0.1:{}:127.0.0.1:9", free_port()),
        "root@127.0.0.1",
    ]);
    assert!(
        !o.status.success(),
        "the relay key listened on another port"
    );

    // The relay carries the session; the listener's own key is checked.
    let wrong_pin = format!("SHA256:{}", "A".repeat(43));
    let (code, text) = tokio::task::block_in_place(|| s.unlock_via(&ssh, fwd, &wrong_pin, RIGHT));
    assert_eq!(code, 4, "{text}");
    assert!(
        s.stdins.lock().unwrap().is_empty(),
        "sent to an unpinned key"
    );

    // Stock OpenSSH through the relay with ProxyJump, the listener's key
    // pinned under an alias (docs/relay.md).
    let host_pub = portcullis::hostkey::load(&s.dir.path().join("host_key"))
        .unwrap()
        .public_key()
        .to_openssh()
        .unwrap();
    std::fs::write(
        s.dir.path().join("listener_known_hosts"),
        format!("web1-initramfs {host_pub}\n"),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(relay.dir.join("ssh_config")).unwrap();
    std::fs::write(
        relay.dir.join("ssh_config"),
        format!(
            "{cfg}Host web1-unlock\n  HostName 127.0.0.1\n  Port {fwd}\n  ProxyJump relay\n  \
             HostKeyAlias web1-initramfs\n  User root\n  IdentityFile {}\n  IdentitiesOnly yes\n  \
             UserKnownHostsFile {}/listener_known_hosts\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
            s.admin_key.display(),
            s.dir.path().display()
        ),
    )
    .unwrap();
    let o = Command::new("ssh")
        .arg("-F")
        .arg(relay.dir.join("ssh_config"))
        .args(["web1-unlock", "status"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("root"),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let started = Instant::now();
    let (code, text) = tokio::task::block_in_place(|| s.unlock_via(&ssh, fwd, &s.host_fp, RIGHT));
    eprintln!("unlock through the relay: {:?}", started.elapsed());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("unlocked: root"), "{text}");
    assert_eq!(*s.stdins.lock().unwrap(), vec![RIGHT.to_vec()]);
    // Unlocked: the listener stops, and the relay no longer listens.
    let r = tokio::time::timeout(Duration::from_secs(10), srv).await;
    assert!(matches!(r, Ok(Ok(Ok(())))), "{r:?}");
    closes_within(fwd, Duration::from_secs(10), "the relay still forwards").await;

    // The relay's loopback address must not read as a local login: every
    // connection here came through a relay, and each line says so.
    let log = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("peer=")).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("unlock request") && l.contains("Unlocked")),
        "{log}"
    );
    for l in &lines {
        assert!(l.contains(" (via relay)"), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_another_host_key_gets_no_login_and_no_forward() {
    if !can_run_sshd() {
        return;
    }
    let s = server();
    let (fwd, relay, ssh) = relay_for(&s);
    let other = format!("SHA256:{}", "B".repeat(43));
    let settings = s.settings(&relay, &other, fwd);
    let m = relay_error(&s, &settings).await;
    assert!(
        m.contains(&format!("host key {} is not the pinned one", relay.host_fp))
            && m.contains(&other)
            && m.contains("no login, no forward"),
        "{m}"
    );
    assert!(
        !relay.log().contains("Accepted publickey"),
        "logged in: {}",
        relay.log()
    );
    // The admin finds nothing there, says so, and sends nothing.
    let (code, text) = tokio::task::block_in_place(|| s.unlock_via(&ssh, fwd, &s.host_fp, RIGHT));
    assert_eq!(code, 6, "{text}");
    assert!(
        text.contains("via relay") && text.contains("nothing was sent"),
        "{text}"
    );
    assert!(s.stdins.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_refuses_the_forward_is_a_clear_error_on_both_sides() {
    if !can_run_sshd() {
        return;
    }
    let s = server();
    let (_permitted, relay, ssh) = relay_for(&s);
    // The listener asks for a port its authorized_keys line does not permit.
    let asked = free_port();
    let m = relay_error(&s, &s.settings(&relay, &relay.host_fp, asked)).await;
    assert!(
        m.contains(&format!("refused to listen on 127.0.0.1:{asked}"))
            && m.contains(&format!("permitlisten=\"127.0.0.1:{asked}\"")),
        "{m}"
    );
    let (code, text) = tokio::task::block_in_place(|| s.unlock_via(&ssh, asked, &s.host_fp, RIGHT));
    assert_eq!(code, 6, "{text}");
    assert!(text.contains("nothing was sent"), "{text}");
    assert!(s.stdins.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_after_the_relay_restarts() {
    if !can_run_sshd() {
        return;
    }
    let s = server();
    let (fwd, mut relay, ssh) = relay_for(&s);
    let _srv = s.serve(s.settings(&relay, &relay.host_fp, fwd), Limits::default());
    assert!(
        forwarded(fwd, Duration::from_secs(15)).await,
        "{}",
        relay.log()
    );
    relay.kill_all();
    closes_within(
        fwd,
        Duration::from_secs(5),
        "the forward outlived the relay",
    )
    .await;
    // Down for a while: the listener keeps trying (with backoff).
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.restart();
    let t = Instant::now();
    assert!(
        forwarded(fwd, portcullis::relay::BACKOFF.1 + Duration::from_secs(10)).await,
        "no reconnect: {}",
        relay.log()
    );
    eprintln!("forward back {:?} after the relay restarted", t.elapsed());
    let (code, text) = tokio::task::block_in_place(|| s.unlock_via(&ssh, fwd, &s.host_fp, RIGHT));
    assert_eq!(code, 0, "{text}");
}

/// A listener that dies (a reset, a crash) frees its port on the relay,
/// and the next one (the next boot) gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_listener_gets_the_port_after_one_died() {
    if !can_run_sshd() {
        return;
    }
    let s = server();
    let (fwd, relay, ssh) = relay_for(&s);
    let (_srv, kill) = s.serve_killable(s.settings(&relay, &relay.host_fp, fwd), Limits::default());
    assert!(
        forwarded(fwd, Duration::from_secs(15)).await,
        "{}",
        relay.log()
    );
    kill();
    closes_within(
        fwd,
        Duration::from_secs(10),
        "the relay kept the dead listener's port",
    )
    .await;
    let _srv = s.serve(s.settings(&relay, &relay.host_fp, fwd), Limits::default());
    assert!(
        forwarded(fwd, Duration::from_secs(15)).await,
        "{}",
        relay.log()
    );
    let (code, text) = tokio::task::block_in_place(|| s.unlock_via(&ssh, fwd, &s.host_fp, RIGHT));
    assert_eq!(code, 0, "{text}");
}

/// Connections through the relay take slots in the same admission table as
/// TCP ones: silent ones are evicted, and the admin still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_connections_count_against_the_listener_limits() {
    if !can_run_sshd() {
        return;
    }
    let s = server();
    let (fwd, relay, ssh) = relay_for(&s);
    let limits = Limits {
        max_unauthenticated: 4,
        ..Limits::default()
    };
    let _srv = s.serve(s.settings(&relay, &relay.host_fp, fwd), limits);
    assert!(
        forwarded(fwd, Duration::from_secs(15)).await,
        "{}",
        relay.log()
    );
    // Silent connections on the relay's port (any local user there could).
    let silent: Vec<std::net::TcpStream> = (0..6)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", fwd)).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // One source (the relay's loopback) holds at most a quarter of the
    // slots: all but the newest were closed.
    let mut closed = 0;
    for mut c in silent {
        use std::io::Read;
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 256];
        let mut seen = Vec::new();
        loop {
            match c.read(&mut buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
    }
    assert!(
        closed >= 5,
        "only {closed} of 6 silent relayed connections were closed"
    );
    let (code, text) = tokio::task::block_in_place(|| s.unlock_via(&ssh, fwd, &s.host_fp, RIGHT));
    assert_eq!(code, 0, "{text}");
}

/// The address of a relayed connection is the relay's word: a key limited
/// with `from=` is refused through the relay, even from the address the
/// relay reports (127.0.0.1 here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_restricted_keys_are_refused_through_the_relay() {
    if !can_run_sshd() {
        return;
    }
    let s = server_with("from=\"127.0.0.1\"");
    let (fwd, relay, ssh) = relay_for(&s);
    let _srv = s.serve(s.settings(&relay, &relay.host_fp, fwd), Limits::default());
    assert!(
        forwarded(fwd, Duration::from_secs(15)).await,
        "{}",
        relay.log()
    );
    let (code, text) = tokio::task::block_in_place(|| s.unlock_via(&ssh, fwd, &s.host_fp, RIGHT));
    assert_eq!(code, 5, "{text}");
    assert!(s.stdins.lock().unwrap().is_empty());
}

/// `--via` mistakes are usage errors (exit 1) before any passphrase is
/// asked or any ssh is run: port 22 (the relay's own sshd), a relay that
/// would be an ssh option, and `--via` on `rescue`, which is not for it.
#[test]
fn via_mistakes_are_usage_errors() {
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            // Would fail loudly if it ever ran.
            .env("PORTCULLIS_SSH", "/nonexistent/ssh")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    for target in ["web1:22", "127.0.0.1"] {
        let (code, err) = run(&["unlock", target, "--via", "relay", "--passphrase-stdin"]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("with --via, give the port the listener asked the relay for"),
            "{err}"
        );
        assert!(!err.contains("/nonexistent/ssh"), "{err}");
    }
    let (code, err) = run(&["status", "web1:2201", "--via=-oProxyCommand=touch /tmp/x"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not a relay for ssh"), "{err}");
    let (code, err) = run(&["rescue", "inspect", "10.0.0.1", "--via", "relay"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--via"), "{err}");
}
