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
use std::process::{Command, Output};
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
}

/// Its help is the full build's without `keygen` and `check`, and says
/// where they are; asked for their help, it says so first.
#[test]
fn help_leaves_out_keygen_and_check_and_says_where_they_are() {
    const NOT_HERE: &str = "keygen and check are not in this build of portcullisd (the initramfs\n\
        listener); run them with the full portcullisd on the installed system.\n";
    let text = |o: Output| {
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap()
    };
    let full = text(run(&portcullisd(), &["--help"]));
    let boot = text(run(&portcullisd_initramfs(), &["--help"]));
    assert!(boot.ends_with(&format!("\n{NOT_HERE}")), "{boot}");
    assert!(
        !boot.contains("  keygen ") && !boot.contains("  check "),
        "{boot}"
    );
    assert!(
        boot.contains("  run ") && boot.contains("  help "),
        "{boot}"
    );
    // Every other line is the full build's, in order.
    let kept: Vec<&str> = full
        .lines()
        .filter(|l| {
            !l.starts_with("  keygen ")
                && !l.starts_with("  check ")
                && !l.starts_with("          when building")
        })
        .collect();
    let head = boot.strip_suffix(&format!("\n{NOT_HERE}")).unwrap();
    assert_eq!(head.lines().collect::<Vec<_>>(), kept);
    for args in [
        &["keygen", "--help"][..],
        &["help", "check"],
        &["check", "-h"],
    ] {
        let full = text(run(&portcullisd(), args));
        let boot = text(run(&portcullisd_initramfs(), args));
        assert_eq!(boot, format!("{NOT_HERE}\n{full}"), "{args:?}");
    }
    for args in [&["run", "--help"][..], &["help", "run"]] {
        assert_eq!(
            run(&portcullisd_initramfs(), args).stdout,
            run(&portcullisd(), args).stdout,
            "{args:?}"
        );
    }
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
    let mut child = listener_bin::start(&portcullisd_initramfs(), &config);
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
