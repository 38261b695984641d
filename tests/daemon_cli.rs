//! `portcullisd keygen` and `portcullisd check` command-line contract: which
//! files are written or refused, exit codes, and errors that stay one short
//! line whatever the input.

#[path = "support/listener_bin.rs"]
mod listener_bin;

use std::path::Path;
use std::process::Command;

fn portcullisd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(listener_bin::portcullisd())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keygen_refuses_a_public_key_path() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("x.pub");
    let (code, out, err) = portcullisd(&["keygen", s(&p)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("ends in .pub"), "{err}");
    assert!(!p.exists());
}

#[test]
fn keygen_keeps_existing_files_unless_forced() {
    let t = tempfile::tempdir().unwrap();
    let key = t.path().join("x.key");
    let other_pub = t.path().join("x.pub");
    std::fs::write(&other_pub, "ssh-ed25519 AAAA other\n").unwrap();
    let (code, fp, err) = portcullisd(&["keygen", s(&key)]);
    assert_eq!(code, 0, "{err}");
    assert!(fp.starts_with("SHA256:"), "{fp}");
    assert_eq!(
        std::fs::read_to_string(&other_pub).unwrap(),
        "ssh-ed25519 AAAA other\n"
    );
    let key_pub = t.path().join("x.key.pub");
    let public = std::fs::read_to_string(&key_pub).unwrap();
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    let private = std::fs::read(&key).unwrap();

    // Again: refused, both files as they were, and the way out is named.
    let (code, _, err) = portcullisd(&["keygen", s(&key)]);
    assert_eq!(code, 1);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert!(err.lines().all(|l| l.len() < 300), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), private);
    assert_eq!(std::fs::read_to_string(&key_pub).unwrap(), public);

    // A stray public file alone also stops it, before the key is written.
    let lone = t.path().join("y");
    std::fs::write(t.path().join("y.pub"), "keep me\n").unwrap();
    let (code, _, err) = portcullisd(&["keygen", s(&lone)]);
    assert_eq!(code, 1);
    assert!(err.contains("y.pub already exists"), "{err}");
    assert!(!lone.exists());

    let (code, fp2, err) = portcullisd(&["keygen", "--force", s(&key)]);
    assert_eq!(code, 0, "{err}");
    assert_ne!(fp, fp2);
    assert_ne!(std::fs::read_to_string(&key_pub).unwrap(), public);
}

/// An image tree with a host key, the given authorized_keys and config.
fn tree(authorized_keys: &str, config: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let etc = t.path().join("etc/portcullis");
    std::fs::create_dir_all(&etc).unwrap();
    portcullis::hostkey::generate(&etc.join("host_key"), "test").unwrap();
    std::fs::write(etc.join("authorized_keys"), authorized_keys).unwrap();
    std::fs::write(etc.join("portcullisd.toml"), config).unwrap();
    t
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGzmd7Q2xTUCfkNPMnhbU2GXHfpjYs/jBdqoNlYzR+1j";
const CONFIG: &str = "[[volume]]\nname = \"root\"\ndevice = \"/dev/vda2\"\n";

fn check(t: &tempfile::TempDir) -> (i32, String, String) {
    portcullisd(&[
        "check",
        "--root",
        s(t.path()),
        "--config",
        "/etc/portcullis/portcullisd.toml",
    ])
}

#[test]
fn check_accepts_addresses_and_refuses_host_names_in_from() {
    let t = tree(
        &format!("from=\"10.0.0.0/8,192.168.1.*,!10.6.6.6\" {KEY}\n"),
        CONFIG,
    );
    let (code, out, err) = check(&t);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok;"), "{out}");
    for pattern in ["localhost", "*.example.com"] {
        let t = tree(&format!("from=\"{pattern}\" {KEY}\n"), CONFIG);
        let (code, _, err) = check(&t);
        assert_eq!(code, 1);
        assert!(
            err.contains("line 1: from= pattern") && err.contains("is a host name"),
            "{err}"
        );
    }
}

#[test]
fn check_errors_stay_short_on_huge_input() {
    // A 1 MiB option name used to give 2 MB of stderr.
    let huge = "o".repeat(1 << 20);
    let t = tree(&format!("{huge} {KEY}\n"), CONFIG);
    let (code, _, err) = check(&t);
    assert_eq!(code, 1);
    assert!(err.len() < 2000, "{} bytes of stderr", err.len());
    assert!(err.contains("(1048576 bytes)"), "{}", &err[..200]);
    let t = tree(&format!("{KEY}\n"), &format!("{huge} = 1\n{CONFIG}"));
    let (code, _, err) = check(&t);
    assert_eq!(code, 1);
    assert!(err.len() < 2000, "{} bytes of stderr", err.len());
    assert!(err.contains("unknown field"), "{}", &err[..200]);
}
