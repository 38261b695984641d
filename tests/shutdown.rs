//! SIGTERM while an unlock runs: the listener stops accepting at once, lets
//! the unlock finish, delivers its reply, then exits. Its own test binary:
//! the signal goes to the whole process.

mod door;

use door::{SlowBackend, RIGHT};
use portcullis::client;
use portcullis::config::Limits;
use portcullis::protocol::Outcome;
use portcullis::secret::Passphrase;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_unlock_delivers_its_reply() {
    let kdf = Duration::from_secs(4);
    let backend = SlowBackend::new(kdf);
    let d = door::open_sigterm(backend.clone(), Limits::default()).await;
    let opts = d.options();
    let unlocking = tokio::spawn(async move {
        client::unlock(&opts, &Passphrase::new(RIGHT.to_vec()).unwrap()).await
    });
    let t0 = Instant::now();
    while backend.lock.try_lock().is_ok() {
        assert!(t0.elapsed() < kdf, "the unlock never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A real SIGTERM, as the initramfs sends before switch-root.
    // SAFETY: kill(2) on our own pid with a signal serve() handles; no
    // memory is involved.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
    // The port closes at once: nobody new gets in while we wind down.
    let t = Instant::now();
    while std::net::TcpStream::connect(d.addr).is_ok() {
        assert!(t.elapsed() < Duration::from_secs(2), "still accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The listener returns only after the unlock in flight completed and
    // its reply reached the client (in the real binary, returning ends
    // the process and every connection with it).
    tokio::time::timeout(kdf + Duration::from_secs(5), d.server)
        .await
        .expect("listener did not exit after delivering the reply")
        .unwrap()
        .unwrap();
    let exited = t0.elapsed();
    assert!(
        unlocking.is_finished(),
        "the listener returned before the reply was delivered"
    );
    let reply = unlocking.await.unwrap().unwrap();
    assert_eq!(reply.outcome, Outcome::Unlocked, "{reply:?}");
    // And soon after it: no fixed long drain once the reply is out.
    assert!(exited < kdf + Duration::from_secs(2), "{exited:?}");
}
