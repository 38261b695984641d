//! The initramfs build of the listener (`portcullisd-initramfs`, which the
//! image hooks copy in as /usr/sbin/portcullisd): the same version text as
//! the full `portcullisd` (the hooks and preflight compare it), the same
//! listener, and `keygen` and `check` refused in one line that says where
//! to run them, touching nothing.

#[path = "support/free_port.rs"]
mod free_port;
#[path = "support/listener_bin.rs"]
mod listener_bin;

use listener_bin::{portcullisd, portcullisd_initramfs};
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn run(bin: &std::path::Path, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().unwrap()
}

#[test]
fn same_version_and_usage_errors_as_the_full_build() {
    let full = run(&portcullisd(), &["--version"]);
    let boot = run(&portcullisd_initramfs(), &["--version"]);
    assert!(boot.status.success());
    assert_eq!(boot.stdout, full.stdout);
    assert!(String::from_utf8_lossy(&boot.stdout).starts_with("portcullisd "));
    let full = run(&portcullisd(), &["--no-such-option"]);
    let boot = run(&portcullisd_initramfs(), &["--no-such-option"]);
    assert_eq!(boot.status.code(), Some(1));
    assert_eq!(boot.stderr, full.stderr);
    let boot = run(&portcullisd_initramfs(), &["--help"]);
    assert!(boot.status.success());
    assert_eq!(boot.stdout, run(&portcullisd(), &["--help"]).stdout);
}

#[test]
fn keygen_and_check_are_refused_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("host_key");
    let config = listener_bin::never_opened_config(dir.path(), 22);
    for (name, args) in [
        ("keygen", vec!["keygen", key.to_str().unwrap()]),
        ("check", vec!["check", "--config", config.to_str().unwrap()]),
    ] {
        let o = run(&portcullisd_initramfs(), &args);
        assert_eq!(o.status.code(), Some(1), "{name}");
        let err = String::from_utf8(o.stderr).unwrap();
        assert_eq!(
            err,
            format!(
                "portcullisd: error: {name} is not in the initramfs build of portcullisd, \
                 which only listens; run `portcullisd {name}` on the installed system\n"
            )
        );
        assert!(o.stdout.is_empty(), "{name}");
    }
    assert!(!key.exists() && !dir.path().join("host_key.pub").exists());
}

/// It listens and speaks SSH, and SIGTERM ends it cleanly.
#[test]
fn it_listens_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &portcullisd(),
        &["keygen", dir.path().join("host_key").to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::copy(
        dir.path().join("host_key.pub"),
        dir.path().join("authorized_keys"),
    )
    .unwrap();
    let port = free_port::free_port();
    let config = listener_bin::never_opened_config(dir.path(), port);
    let mut child = Command::new(portcullisd_initramfs())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut conn = listener_bin::first_connection(&mut child, port);
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut banner = [0u8; 8];
    conn.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-");
    drop(conn);
    let (status, err) = listener_bin::sigterm(child);
    assert!(status.success(), "exit {status:?}: {err}");
    assert!(err.contains("listening on 127.0.0.1:"), "{err}");
}
