//! The `portcullisd` binary's contract: help, version, usage errors (one
//! line, exit 1), `keygen`, `check`, and a real listener process that an
//! RSA admin key (made by OpenSSH's ssh-keygen) can log in to with stock
//! `ssh` and with our client. `PORTCULLISD_BIN` points the tests at another
//! build of the listener (e.g. the "small" release build).

#[path = "support/listener_bin.rs"]
mod listener_bin;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    listener_bin::portcullisd()
}

fn daemon(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("PORTCULLIS_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_and_version_go_to_stdout_with_status_0() {
    let o = daemon(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = text(&o.stdout);
    for word in [
        "run",
        "keygen",
        "check",
        "--config",
        "--verbose",
        "--version",
    ] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
    assert!(help.lines().all(|l| l.chars().count() <= 80), "{help}");
    let o = daemon(&["check", "--help"]);
    assert!(text(&o.stdout).contains("--root <DIR>"));
    let o = daemon(&["-V"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        text(&o.stdout),
        format!("portcullisd {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn usage_errors_are_one_line_with_status_1() {
    let huge = "y".repeat(100_000); // under Linux's 128 KiB per argument
    for args in [
        vec!["--bogus"],
        vec!["frobnicate"],
        vec!["keygen"],
        vec!["check", "--root"],
        vec!["--config"],
        vec!["-v", "-v"],
        vec![huge.as_str()],
    ] {
        let o = daemon(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:.40?}: {err}");
        assert!(o.stdout.is_empty(), "{args:.40?}");
        assert_eq!(err.lines().count(), 1, "{args:.40?}: {err}");
        assert!(err.starts_with("portcullisd: error: "), "{err}");
        assert!(err.len() < 200, "{err}");
    }
}

/// A config for a listener on 127.0.0.1:`port` guarding one volume that is
/// never opened, with `admin_pub` as the only authorized key.
fn image(dir: &Path, port: u16, admin_pub: &Path) -> PathBuf {
    let o = daemon(&["keygen", dir.join("host_key").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("SHA256:"));
    std::fs::copy(admin_pub, dir.join("authorized_keys")).unwrap();
    listener_bin::never_opened_config(dir, port)
}

fn ssh_keygen(args: &[&str]) {
    let o = Command::new("ssh-keygen").args(args).output().unwrap();
    assert!(o.status.success(), "ssh-keygen: {}", text(&o.stderr));
}

#[test]
fn check_accepts_a_good_image_and_refuses_a_readable_host_key() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin");
    ssh_keygen(&[
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        admin.to_str().unwrap(),
    ]);
    let config = image(dir.path(), 22, &admin.with_extension("pub"));
    let o = daemon(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains(": ok; host key SHA256:"),
        "{}",
        text(&o.stdout)
    );
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("host_key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let o = daemon(&["check", "-c", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("chmod 600"), "{}", text(&o.stderr));
}

/// Kills the listener when the test ends, however it ends.
struct Listener(std::process::Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[path = "support/free_port.rs"]
mod free_port;
use free_port::free_port;

/// Starts the real listener process and waits until it accepts.
fn listen(config: &Path, port: u16) -> Listener {
    let child = Command::new(bin())
        .args(["--config", config.to_str().unwrap()])
        .env_remove("PORTCULLIS_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut l = Listener(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = l.0.try_wait() {
            let mut err = String::new();
            for line in BufReader::new(l.0.stderr.take().unwrap()).lines() {
                err.push_str(&line.unwrap());
            }
            panic!("listener exited with {status}: {err}");
        }
        assert!(Instant::now() < deadline, "listener never accepted");
        std::thread::sleep(Duration::from_millis(20));
    }
    l
}

#[test]
fn rsa_admin_key_logs_in_with_openssh_and_with_our_client() {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin_rsa");
    ssh_keygen(&[
        "-q",
        "-t",
        "rsa",
        "-b",
        "2048",
        "-N",
        "",
        "-f",
        admin.to_str().unwrap(),
    ]);
    let port = free_port();
    let config = image(dir.path(), port, &admin.with_extension("pub"));
    let _listener = listen(&config, port);

    // Stock OpenSSH with the RSA key (rsa-sha2-256/512 signatures).
    let kh = dir.path().join("known_hosts");
    let host_pub = std::fs::read_to_string(dir.path().join("host_key.pub")).unwrap();
    std::fs::write(&kh, format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
    let o = Command::new("ssh")
        .args([
            "-p",
            &port.to_string(),
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
        ])
        .args([
            "-o",
            "LogLevel=ERROR",
            "-o",
            "PubkeyAcceptedAlgorithms=rsa-sha2-512,rsa-sha2-256",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .arg("-i")
        .arg(&admin)
        .args(["root@127.0.0.1", "status"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "ssh: {}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("never-opened"),
        "{}",
        text(&o.stdout)
    );

    // Our client with the same key file.
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(dir.path().join("host_key.pub"))
        .output()
        .unwrap();
    let fp = text(&fp.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["status", &format!("127.0.0.1:{port}"), "--no-agent"])
        .args(["--fingerprint", &fp, "--identity"])
        .arg(&admin)
        .env("HOME", dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "portcullis: {}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("never-opened"),
        "{}",
        text(&o.stdout)
    );
}
