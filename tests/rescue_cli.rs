//! `portcullis rescue` command-line contract: exit codes and one-line errors
//! for the cases that need no rescue system (the VM test covers the rest).

use std::process::Command;

/// A well-formed fingerprint no test server has (a malformed one is a
/// usage error before any connection).
const FP: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn rescue(args: &[&str]) -> (i32, String, String) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("rescue")
        .args(args)
        .env("HOME", home.path())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unreachable_rescue_system_is_exit_6() {
    // Port 1 on loopback: refused at once.
    let (code, _, err) = rescue(&[
        "inspect",
        "127.0.0.1:1",
        "--fingerprint",
        FP,
        "--timeout",
        "5s",
    ]);
    assert_eq!(code, 6, "{err}");
    assert!(err.starts_with("error: 127.0.0.1:1: unreachable:"), "{err}");
    let (code, out, _) = rescue(&["close", "127.0.0.1:1", "--fingerprint", FP, "--json"]);
    assert_eq!(code, 6);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["outcome"], "unreachable");
    assert_eq!(v["command"], "close");
}

#[test]
fn bad_arguments_fail_before_connecting() {
    let (code, _, err) = rescue(&["inspect", "127.0.0.1:1", "--fingerprint", "MD5:aa"]);
    assert_eq!(code, 1);
    assert!(err.contains("expected SHA256:"), "{err}");
    let (code, _, err) = rescue(&["mount", "127.0.0.1:1", "--fingerprint", FP, "--target", "/"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--target must not be the rescue system's root"),
        "{err}"
    );
    let (code, _, err) = rescue(&[
        "mount",
        "127.0.0.1:1",
        "--fingerprint",
        FP,
        "--target",
        "/mnt/../etc",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("contains '..'"), "{err}");
    // chroot needs a command after `--`: a usage error, exit 1 (not 2,
    // which means "wrong passphrase").
    let (code, _, err) = rescue(&["chroot", "127.0.0.1:1"]);
    assert_eq!(code, 1, "{err}");
}
