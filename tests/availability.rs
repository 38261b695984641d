//! The listener keeps serving while an unlock runs, and its limits do what
//! they say: idle timeout on the client's channel activity, channels
//! reclaimed, one exit code for "no tries left", refused commands never
//! echoed, replies not held back by delayed ACKs.

mod door;

use door::{exec, SlowBackend, RIGHT};
use portcullis::client;
use portcullis::config::Limits;
use portcullis::protocol::{exit, Outcome, VolumeState};
use portcullis::secret::Passphrase;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pass(b: &[u8]) -> Passphrase {
    Passphrase::new(b.to_vec()).unwrap()
}

fn never() -> std::future::Pending<()> {
    std::future::pending()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_new_connections_are_served_while_a_kdf_runs() {
    let kdf = Duration::from_secs(4);
    let backend = SlowBackend::new(kdf);
    let d = door::open(backend.clone(), Limits::default(), never()).await;
    let opts = d.options();
    let o = opts.clone();
    let t0 = Instant::now();
    let first = tokio::spawn(async move { client::unlock(&o, &pass(b"wrong")).await });
    let o = opts.clone();
    let second = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        client::unlock(&o, &pass(RIGHT)).await
    });
    // Wait until the first attempt is inside the backend.
    while backend.lock.try_lock().is_ok() {
        assert!(t0.elapsed() < kdf, "the unlock never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A new connection gets its banner, and status answers, at once.
    let t = Instant::now();
    let mut raw = std::net::TcpStream::connect(d.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut banner = [0u8; 8];
    raw.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    let st = client::status(&opts).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "status waited {:?} for the KDF",
        t.elapsed()
    );
    assert_eq!(st.volumes[0].state, VolumeState::Unlocking, "{st:?}");
    // Both unlocks get their replies, one after the other (one gate).
    let r1 = first.await.unwrap().unwrap();
    let r2 = second.await.unwrap().unwrap();
    assert_eq!(r1.outcome, Outcome::WrongPassphrase);
    assert_eq!(r2.outcome, Outcome::Unlocked);
    assert!(t0.elapsed() >= kdf * 2, "the two unlocks overlapped");
    tokio::time::timeout(Duration::from_secs(10), d.server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_closed_by_the_server_are_reclaimed() {
    let d = door::open(SlowBackend::new(Duration::ZERO), Limits::default(), never()).await;
    let h = d.raw(russh::client::Config::default()).await;
    // Four at a time, not four in total.
    for i in 0..10 {
        let (out, code) = exec(&h, "status", b"").await;
        assert_eq!(
            code,
            Some(0),
            "request {i}: {}",
            String::from_utf8_lossy(&out)
        );
        assert!(String::from_utf8_lossy(&out).contains("pending"));
    }
}

/// OpenSSH answers keepalives: traffic that is not channel data must not
/// keep a session alive past `idle-timeout-secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_ignores_keepalives() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let d = door::open(SlowBackend::new(Duration::ZERO), limits, never()).await;
    let config = russh::client::Config {
        keepalive_interval: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let h = d.raw(config).await;
    // Activity on a channel restarts the clock.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(exec(&h, "status", b"").await.1, Some(0));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!h.is_closed(), "closed though the client was active");
    let t = Instant::now();
    while !h.is_closed() {
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "keepalives kept an idle session open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commands_are_not_echoed() {
    let d = door::open(SlowBackend::new(Duration::ZERO), Limits::default(), never()).await;
    let h = d.raw(russh::client::Config::default()).await;
    let (out, code) = exec(&h, "unlock hunter2-secret", b"").await;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, Some(u32::from(exit::ERROR)));
    assert!(!out.contains("hunter2"), "{out}");
    assert!(out.contains("takes no arguments"), "{out}");
    let big = "x".repeat(100_000);
    let (out, _) = exec(&h, &big, b"").await;
    assert!(out.len() < 300, "{} bytes of error", out.len());
}

/// The stock OpenSSH client with a terminal, and exec `unlock`, report
/// "no tries left" with the same exit status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tries_left_is_one_exit_code_for_pty_and_exec() {
    let backend = SlowBackend::new(Duration::ZERO);
    backend
        .tries
        .store(backend.max_tries, std::sync::atomic::Ordering::SeqCst);
    let d = door::open(backend, Limits::default(), never()).await;
    let h = d.raw(russh::client::Config::default()).await;
    let (_, code) = exec(&h, "unlock", b"x\n").await;
    assert_eq!(code, Some(u32::from(exit::NO_TRIES_LEFT)));
    let kh = d.dir.path().join("ssh_known_hosts");
    let pubkey = std::fs::read_to_string(d.dir.path().join("host_key.pub")).unwrap();
    std::fs::write(&kh, format!("[127.0.0.1]:{} {pubkey}", d.addr.port())).unwrap();
    let out = Command::new("ssh")
        .args(["-tt", "-p", &d.addr.port().to_string()])
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args([
            "-o",
            "IdentityAgent=none",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .args(["-o", "LogLevel=ERROR"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .arg("-i")
        .arg(&d.client_key)
        .arg("root@127.0.0.1")
        .stdin(Stdio::null())
        .output()
        .expect("the stock OpenSSH client `ssh` is needed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no tries left"), "{text}");
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit::NO_TRIES_LEFT)),
        "{text}"
    );
}

/// With Nagle on, a reply written after a pause (the unlock runs off the
/// session) waits for the client's delayed ACK of the earlier packet: about
/// 40 ms on Linux. Compare unlock round trips on one connection with
/// `status` round trips (answered at once, no stall possible) measured in
/// the same run: the bound comes from the run, not from the clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_not_held_for_delayed_acks() {
    let backend = std::sync::Arc::new(SlowBackend {
        delay: Duration::ZERO,
        lock: std::sync::Mutex::new(()),
        open: false.into(),
        tries: 0.into(),
        max_tries: 1000,
    });
    let d = door::open(backend, Limits::default(), never()).await;
    // The client side must not stall either: this test is about the server.
    let config = russh::client::Config {
        nodelay: true,
        ..Default::default()
    };
    let h = d.raw(config).await;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let mut status = Vec::new();
    let mut unlock = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        assert_eq!(exec(&h, "status", b"").await.1, Some(0));
        status.push(t.elapsed());
        let t = Instant::now();
        let (_, code) = exec(&h, "portcullis/1 unlock", b"wrong").await;
        assert_eq!(code, Some(u32::from(exit::WRONG_PASSPHRASE)));
        unlock.push(t.elapsed());
    }
    let (status, unlock) = (median(status), median(unlock));
    eprintln!("median round trip: status {status:?}, unlock {unlock:?}");
    assert!(
        unlock < status * 10,
        "unlock replies take {unlock:?} against {status:?} for status: a delayed-ACK stall"
    );
}

/// `max-sessions` counts sessions at a time: finished ones give their slot
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_sessions_free_their_slot() {
    let limits = Limits {
        max_sessions: 2,
        ..Limits::default()
    };
    let d = door::open(SlowBackend::new(Duration::ZERO), limits, never()).await;
    for i in 0..6 {
        if let Err(e) = client::status(&d.options()).await {
            panic!("status {i}: {e}");
        }
    }
}
