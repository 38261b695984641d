//! `[relay]` at image build time: `portcullisd check` validates the section
//! and the relay key (missing, unreadable, readable by others), names the
//! key in `--list-files`, and the hooks' shared library puts it with the
//! private keys every generator copies mode 0600.

#[path = "support/listener_bin.rs"]
mod listener_bin;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const LIB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/initramfs/common/portcullis-lib.sh"
);
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGzmd7Q2xTUCfkNPMnhbU2GXHfpjYs/jBdqoNlYzR+1j";

fn config() -> String {
    format!(
        "[[volume]]\nname = \"root\"\ndevice = \"/dev/vda2\"\n\n[relay]\nhost = \"192.0.2.7\"\n\
         user = \"unlock-web1\"\nkey = \"/etc/portcullis/relay_key\"\n\
         host-key-fingerprints = [\"SHA256:{}\"]\nremote-port = 2201\n",
        "A".repeat(43)
    )
}

/// An image tree with a host key, an admin key, the config and (when
/// `relay_key`) the relay key.
fn tree(relay_key: bool) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let etc = t.path().join("etc/portcullis");
    std::fs::create_dir_all(&etc).unwrap();
    portcullis::hostkey::generate(&etc.join("host_key"), "test").unwrap();
    if relay_key {
        portcullis::hostkey::generate(&etc.join("relay_key"), "relay").unwrap();
    }
    std::fs::write(etc.join("authorized_keys"), format!("{KEY}\n")).unwrap();
    std::fs::write(etc.join("portcullisd.toml"), config()).unwrap();
    t
}

fn check(t: &Path, extra: &[&str]) -> (i32, String, String) {
    let o = Command::new(listener_bin::portcullisd())
        .args([
            "check",
            "--config",
            "/etc/portcullis/portcullisd.toml",
            "--root",
        ])
        .arg(t)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn check_names_the_relay_and_its_key() {
    let t = tree(true);
    let (code, out, err) = check(t.path(), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "; relay unlock-web1@192.0.2.7:22 (listens on 127.0.0.1:2201 there; relay key SHA256:"
        ),
        "{out}"
    );
    let (code, out, err) = check(t.path(), &["--list-files"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "host-key /etc/portcullis/host_key\nauthorized-keys /etc/portcullis/authorized_keys\n\
         relay-key /etc/portcullis/relay_key\n"
    );
}

#[test]
fn a_missing_or_exposed_relay_key_fails_the_build() {
    let t = tree(false);
    let (code, _, err) = check(t.path(), &["--list-files"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("relay key /etc/portcullis/relay_key does not exist; create it with: portcullisd keygen /etc/portcullis/relay_key"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let t = tree(true);
    let key = t.path().join("etc/portcullis/relay_key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (code, _, err) = check(t.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "relay key /etc/portcullis/relay_key is readable by group or others; chmod 600 it"
        ),
        "{err}"
    );
    std::fs::write(&key, "not a key\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = check(t.path(), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("relay key /etc/portcullis/relay_key"), "{err}");
}

#[test]
fn a_bad_relay_section_fails_the_build() {
    let t = tree(true);
    let cfg = t.path().join("etc/portcullis/portcullisd.toml");
    std::fs::write(
        &cfg,
        config().replace("remote-port = 2201", "remote-port = 0"),
    )
    .unwrap();
    let (code, _, err) = check(t.path(), &[]);
    assert_eq!(code, 1);
    assert!(err.contains("relay.remote-port = 0"), "{err}");
    // No resolver at boot: a name fails the build, not the boot.
    std::fs::write(&cfg, config().replace("192.0.2.7", "relay.example.net")).unwrap();
    let (code, _, err) = check(t.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("relay.host = \"relay.example.net\": give the relay's IP address"),
        "{err}"
    );
    std::fs::write(
        &cfg,
        config().replace("host-key-fingerprints", "host-key-fingerprint"),
    )
    .unwrap();
    let (code, _, err) = check(t.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown field `host-key-fingerprint`"),
        "{err}"
    );
}

/// The hooks copy every line of PORTCULLIS_HOST_KEYS mode 0600: the relay
/// key is there, after the host keys, and PORTCULLIS_HOST_KEY stays the
/// host key.
#[test]
fn the_hooks_copy_the_relay_key_as_a_private_key() {
    let t = tree(true);
    let script = ". \"$LIB\"\nportcullis_config_files \"$1\" /etc/portcullis/portcullisd.toml \"$2\" || \
                  { echo \"failed: $PORTCULLIS_ERROR\"; exit 1; }\n\
                  echo \"first=[$PORTCULLIS_HOST_KEY] ak=[$PORTCULLIS_AUTHORIZED_KEYS]\"\n\
                  while IFS= read -r k; do echo \"copy [$k]\"; done <<KEYS\n$PORTCULLIS_HOST_KEYS\nKEYS";
    let o = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(listener_bin::portcullisd())
        .arg(t.path())
        .env("LIB", LIB)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        out,
        "first=[/etc/portcullis/host_key] ak=[/etc/portcullis/authorized_keys]\n\
         copy [/etc/portcullis/host_key]\ncopy [/etc/portcullis/relay_key]\n"
    );
}
