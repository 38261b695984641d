//! Runs unlocks (wrong and right passphrase, client library and stock ssh)
//! with every log level of every crate captured, then searches all of it for
//! the passphrases. Its own test binary: the log capture is process-global.

mod common;

use common::{start, RIGHT};
use portcullis::client;
use portcullis::config::Limits;
use portcullis::protocol::Outcome;
use portcullis::secret::Passphrase;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

const WRONG: &[u8] = b"a wrong passphrase 0815";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passphrase_never_logged_or_shown() {
    let cap = Capture::default();
    let sink = cap.clone();
    // The listener's own subscriber and formatter (src/logging), at TRACE
    // for every crate: what it would write is what is searched.
    tracing::subscriber::set_global_default(portcullis::logging::subscriber_with_sink(
        "trace",
        move |line| sink.0.lock().unwrap().extend_from_slice(line),
    ))
    .unwrap();
    // russh logs through the `log` crate: bring those records in too.
    tracing_log::LogTracer::init().unwrap();

    let f = start("", Limits::default()).await;
    let opts = f.options();
    let wrong = Passphrase::new(WRONG.to_vec()).unwrap();
    let right = Passphrase::new(RIGHT.to_vec()).unwrap();
    let r1 = client::unlock(&opts, &wrong).await.unwrap();
    assert_eq!(r1.outcome, Outcome::WrongPassphrase);
    let r2 = client::unlock(&opts, &right).await.unwrap();
    assert_eq!(r2.outcome, Outcome::Unlocked);
    let _ = f.server.await;

    // Everything a user or an operator could see.
    let mut seen = cap.0.lock().unwrap().clone();
    assert!(
        seen.len() > 1000,
        "capture is suspiciously small: the test would prove nothing"
    );
    for shown in [
        format!("{wrong:?}"),
        format!("{right:?}"),
        format!("{r1:?}"),
        format!("{r2:?}"),
        portcullis::protocol::describe_unlock(&r1),
        format!("{opts:?}"),
    ] {
        seen.extend_from_slice(shown.as_bytes());
    }
    for secret in [WRONG, RIGHT] {
        assert!(
            !seen.windows(secret.len()).any(|w| w == secret),
            "passphrase {:?} found in logs or output",
            String::from_utf8_lossy(secret)
        );
    }
    // The log really covered the unlock (so the search above means something).
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("unlock attempt"),
        "no unlock in the captured log"
    );
    assert!(text.contains("WrongPassphrase") && text.contains("Opened"));
    assert!(
        text.contains("russh"),
        "russh's own debug/trace records were not captured"
    );
}
