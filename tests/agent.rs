//! Authentication through a real ssh-agent (OpenSSH's), the way most admins
//! hold their keys. Its own test binary: it sets SSH_AUTH_SOCK.

mod common;

use common::{start, RIGHT};
use portcullis::client;
use portcullis::config::Limits;
use portcullis::protocol::Outcome;
use portcullis::secret::Passphrase;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_with_a_key_held_by_ssh_agent() {
    let f = start("", Limits::default()).await;
    let sock = f.dir.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent (openssh-client) is needed");
    for _ in 0..100 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let added = Command::new("ssh-add")
        .arg(&f.client_key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    // SAFETY of set_var: this test binary has this one test, and the
    // listener's threads do not read the environment.
    std::env::set_var("SSH_AUTH_SOCK", &sock);

    let mut opts = f.options();
    // No key file at all: only the agent can authenticate.
    opts.identity.files = vec![f.dir.path().join("does-not-exist")];
    opts.identity.agent = true;
    let r = client::unlock(&opts, &Passphrase::new(RIGHT.to_vec()).unwrap()).await;
    let _ = agent.kill();
    let _ = agent.wait();
    let r = r.unwrap();
    assert_eq!(r.outcome, Outcome::Unlocked);
}
