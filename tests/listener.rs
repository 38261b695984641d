//! In-process SSH: a real listener on loopback, the real client library and
//! the stock OpenSSH client, against a recording fake cryptsetup.

mod common;

use common::{start, RIGHT};
use portcullis::client::{self, ClientError, HostKeyPolicy};
use portcullis::config::Limits;
use portcullis::protocol::{Outcome, VolumeState};
use portcullis::secret::Passphrase;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pass(b: &[u8]) -> Passphrase {
    Passphrase::new(b.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_then_right_opens_both_volumes_and_listener_exits() {
    let f = start("", Limits::default()).await;
    let opts = f.options();
    let st = client::status(&opts).await.unwrap();
    assert_eq!(st.volumes.len(), 2);
    assert!(st
        .volumes
        .iter()
        .all(|v| v.state == VolumeState::Pending && v.tries_left == Some(5)));

    let r = client::unlock(&opts, &pass(b"nope")).await.unwrap();
    assert_eq!(r.outcome, Outcome::WrongPassphrase);
    assert!(r.volumes.iter().all(|v| v.tries_left == Some(4)), "{r:?}");

    let r = client::unlock(&opts, &pass(RIGHT)).await.unwrap();
    assert_eq!(r.outcome, Outcome::Unlocked);
    assert!(r.volumes.iter().all(|v| v.state == VolumeState::Open));
    // One passphrase went to both volumes, through stdin only.
    let stdins = f.stdins.lock().unwrap().clone();
    assert_eq!(
        stdins,
        vec![
            b"nope".to_vec(),
            b"nope".to_vec(),
            RIGHT.to_vec(),
            RIGHT.to_vec()
        ]
    );
    for argv in f.argvs.lock().unwrap().iter() {
        assert!(argv
            .iter()
            .all(|a| !a.contains("nope") && !a.as_bytes().windows(5).any(|w| w == &RIGHT[..5])));
    }
    // The listener stops and closes its port.
    tokio::time::timeout(Duration::from_secs(10), f.server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        std::net::TcpStream::connect(f.addr).is_err(),
        "port still open after unlock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_client_key_is_refused_and_nothing_runs() {
    let f = start("", Limits::default()).await;
    let mut opts = f.options();
    opts.identity.files = vec![f.other_key.clone()];
    let e = client::unlock(&opts, &pass(RIGHT)).await.unwrap_err();
    assert!(matches!(e, ClientError::AuthRefused(_)), "{e}");
    assert_eq!(e.exit_code(), 5);
    assert!(f.stdins.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_restriction_is_honoured() {
    let f = start("restrict,from=\"10.9.9.9\"", Limits::default()).await;
    let e = client::unlock(&f.options(), &pass(RIGHT))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::AuthRefused(_)), "{e}");
    let f = start("restrict,from=\"127.0.0.0/8,!10.0.0.1\"", Limits::default()).await;
    let r = client::unlock(&f.options(), &pass(RIGHT)).await.unwrap();
    assert_eq!(r.outcome, Outcome::Unlocked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_fails_closed_before_sending_anything() {
    let f = start("", Limits::default()).await;
    let mut opts = f.options();
    opts.host_key =
        HostKeyPolicy::Fingerprint("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    let e = client::unlock(&opts, &pass(RIGHT)).await.unwrap_err();
    assert!(matches!(e, ClientError::HostKeyChanged { .. }), "{e}");
    assert!(e.to_string().contains("HOST KEY CHANGED"));
    assert!(f.stdins.lock().unwrap().is_empty());

    // Known-hosts file with another key for this host:port.
    let kh = f.dir.path().join("kh");
    let other = std::fs::read_to_string(f.dir.path().join("intruder.pub")).unwrap();
    std::fs::write(&kh, format!("[127.0.0.1]:{} {other}", f.addr.port())).unwrap();
    opts.host_key = HostKeyPolicy::KnownHosts {
        path: kh.clone(),
        accept_new: false,
        ask: false,
    };
    let e = client::unlock(&opts, &pass(RIGHT)).await.unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(
        e.to_string().contains(&kh.display().to_string()),
        "says which file to fix: {e}"
    );

    // Unknown key, nobody to ask, not told to accept: refused, nothing sent.
    let kh2 = f.dir.path().join("kh2");
    opts.host_key = HostKeyPolicy::KnownHosts {
        path: kh2.clone(),
        accept_new: false,
        ask: false,
    };
    let e = client::unlock(&opts, &pass(RIGHT)).await.unwrap_err();
    assert!(matches!(e, ClientError::HostKeyUnknown { .. }), "{e}");
    assert_eq!(e.exit_code(), 3);
    assert!(
        e.to_string().contains(&f.host_fp),
        "shows the fingerprint: {e}"
    );
    assert!(!kh2.exists());
    assert!(f.stdins.lock().unwrap().is_empty());

    // First contact with --accept-new pins; the pin is then used.
    opts.host_key = HostKeyPolicy::KnownHosts {
        path: kh2.clone(),
        accept_new: true,
        ask: false,
    };
    client::status(&opts).await.unwrap();
    let pinned = std::fs::read_to_string(&kh2).unwrap();
    assert!(
        pinned.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", f.addr.port())),
        "{pinned}"
    );
    opts.host_key = HostKeyPolicy::KnownHosts {
        path: kh2,
        accept_new: false,
        ask: false,
    };
    client::status(&opts).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_wait() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let f = start("", Limits::default()).await;
    let mut opts = f.options();
    opts.target.port = port;
    let e = client::status(&opts).await.unwrap_err();
    assert!(matches!(e, ClientError::Unreachable(_)), "{e}");
    assert_eq!(e.exit_code(), 6);
    // --wait gives up at its deadline with the same error.
    opts.wait = Some(Duration::from_secs(3));
    let t = Instant::now();
    let e = client::status(&opts).await.unwrap_err();
    assert!(matches!(e, ClientError::Unreachable(_)));
    assert!(t.elapsed() >= Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_limits_and_login_grace() {
    let limits = Limits {
        max_unauthenticated: 1,
        login_grace: Duration::from_secs(2),
        ..Limits::default()
    };
    let f = start("", limits).await;
    // First connection holds the only unauthenticated slot: it gets a banner,
    // and sends its own, so it is no longer a mere idle socket.
    let mut c1 = std::net::TcpStream::connect(f.addr).unwrap();
    c1.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut banner = [0u8; 18];
    c1.read_exact(&mut banner).unwrap();
    assert_eq!(
        &banner, b"SSH-2.0-portcullis",
        "banner must not name the library or its version"
    );
    c1.write_all(b"SSH-2.0-x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The second is told "busy" and closed at once.
    let mut c2 = std::net::TcpStream::connect(f.addr).unwrap();
    c2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let _ = c2.read_to_end(&mut got);
    assert_eq!(
        got,
        portcullis::protocol::BUSY_LINE.as_bytes(),
        "second unauthenticated connection was not refused as busy"
    );
    // Our client says busy, not unreachable.
    let e = client::status(&f.options()).await.unwrap_err();
    assert!(matches!(e, ClientError::Busy(_)), "{e}");
    assert!(e.to_string().contains("--wait"), "{e}");
    // With --wait it gets in once the first is dropped at its login grace.
    let mut opts = f.options();
    opts.wait = Some(Duration::from_secs(10));
    let t = Instant::now();
    client::status(&opts).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let mut rest = Vec::new();
    let _ = c1.read_to_end(&mut rest);
    // A socket that never sends a banner is dropped after the banner grace
    // (here the shorter login grace).
    let t = Instant::now();
    let mut c3 = std::net::TcpStream::connect(f.addr).unwrap();
    c3.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c3.read_exact(&mut banner).unwrap();
    let _ = c3.read_to_end(&mut rest);
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

/// The stock OpenSSH client: the commands an admin types by hand.
fn ssh(
    f: &common::Fixture,
    key: &std::path::Path,
    extra: &[&str],
    stdin: &[u8],
) -> (i32, String, String) {
    let kh = f.dir.path().join("ssh_known_hosts");
    let pubkey = std::fs::read_to_string(f.dir.path().join("host_key.pub")).unwrap();
    std::fs::write(&kh, format!("[127.0.0.1]:{} {pubkey}", f.addr.port())).unwrap();
    let mut cmd = Command::new("ssh");
    cmd.args([
        "-p",
        &f.addr.port().to_string(),
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
    ])
    .args([
        "-o",
        "IdentityAgent=none",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "LogLevel=ERROR",
    ])
    .arg("-o")
    .arg(format!("UserKnownHostsFile={}", kh.display()))
    .arg("-i")
    .arg(key)
    .args(extra)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("the stock OpenSSH client `ssh` is needed (apt install openssh-client)");
    // The listener may refuse (and ssh exit) before all of stdin is taken.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_openssh_refusals_and_unlock() {
    let f = start("", Limits::default()).await;
    let key = f.client_key.clone();
    let (code, _, err) = ssh(
        &f,
        &key,
        &["-o", "PubkeyAuthentication=no", "root@127.0.0.1", "status"],
        b"",
    );
    assert_eq!(code, 255);
    assert!(err.contains("Permission denied (publickey)"), "{err}");
    let (code, _, err) = ssh(&f, &f.other_key.clone(), &["root@127.0.0.1", "status"], b"");
    assert_eq!(code, 255);
    assert!(err.contains("Permission denied (publickey)"), "{err}");
    let (code, _, err) = ssh(&f, &key, &["-T", "root@127.0.0.1"], b"");
    assert_eq!(code, 1);
    assert!(err.contains("no shell here"), "{err}");
    let (code, _, err) = ssh(&f, &key, &["root@127.0.0.1", "cat /etc/shadow"], b"");
    assert_eq!(code, 1);
    assert!(err.contains("unknown command"), "{err}");
    let (code, _, _) = ssh(&f, &key, &["-W", "127.0.0.1:22", "root@127.0.0.1"], b"");
    assert_eq!(code, 255, "direct-tcpip forwarding must be refused");
    let (code, _, err) = ssh(&f, &key, &["-s", "root@127.0.0.1", "sftp"], b"");
    assert_ne!(code, 0, "subsystem must be refused: {err}");
    // Oversized input is refused as such, and costs no try.
    let (code, _, err) = ssh(&f, &key, &["root@127.0.0.1", "unlock"], &vec![b'x'; 70_000]);
    assert_eq!(code, 1);
    assert!(err.contains("longer than"), "{err}");
    assert!(f.stdins.lock().unwrap().is_empty());
    let (code, out, _) = ssh(&f, &key, &["root@127.0.0.1", "status"], b"");
    assert_eq!(code, 0);
    assert!(out.contains("root") && out.contains("pending"), "{out}");
    // echo PASS | ssh host unlock
    let mut line = RIGHT.to_vec();
    line.push(b'\n');
    let (code, out, err) = ssh(&f, &key, &["root@127.0.0.1", "unlock"], &line);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("unlocked: root, data"), "{out}");
}
