//! The listener's log as a process shows it: `PORTCULLIS_LOG` and `-v`
//! reach the filter (a malformed value falls back to the standard one), and
//! every line on stderr has the `fmt` shape (`LEVEL message fields`). The
//! exact bytes are compared with tracing-subscriber in src/logging/tests.rs.

#[path = "support/free_port.rs"]
mod free_port;
#[path = "support/listener_bin.rs"]
mod listener_bin;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn image(dir: &Path, port: u16) -> std::path::PathBuf {
    let o = Command::new(listener_bin::portcullisd())
        .arg("keygen")
        .arg(dir.join("host_key"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Any valid key: nobody logs in.
    std::fs::copy(dir.join("host_key.pub"), dir.join("authorized_keys")).unwrap();
    listener_bin::never_opened_config(dir, port)
}

/// Starts the listener, opens and drops one TCP connection (a debug line),
/// stops it with SIGTERM and returns its stderr.
fn log_of(log: Option<&str>, verbose: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port::free_port();
    let config = image(dir.path(), port);
    let mut cmd = Command::new(listener_bin::portcullisd());
    if verbose {
        cmd.arg("-v");
    }
    cmd.arg("--config")
        .arg(&config)
        .env_remove("PORTCULLIS_LOG");
    if let Some(v) = log {
        cmd.env("PORTCULLIS_LOG", v);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(listener_bin::first_connection(&mut child, port));
    std::thread::sleep(Duration::from_millis(300));
    listener_bin::sigterm(child).1
}

fn levels(log: &str) -> Vec<&str> {
    log.lines().map(|l| l.get(..5).unwrap_or(l)).collect()
}

#[test]
fn portcullis_log_and_verbose_reach_the_filter() {
    let standard = log_of(None, false);
    assert!(
        standard.contains(" INFO listening on 127.0.0.1:"),
        "{standard}"
    );
    assert!(
        standard.contains(" WARN unauthenticated connections"),
        "{standard}"
    );
    assert!(!standard.contains("DEBUG "), "{standard}");
    for l in standard.lines() {
        assert!(
            [" INFO ", " WARN ", "ERROR "]
                .iter()
                .any(|p| l.starts_with(p)),
            "not a log line: {l:?}"
        );
    }

    let verbose = log_of(None, true);
    assert!(verbose.contains("DEBUG connection"), "{verbose}");
    let debug = log_of(Some("debug"), false);
    assert!(debug.contains("DEBUG connection"), "{debug}");

    let warn = log_of(Some("warn"), true);
    assert!(
        !warn.contains(" INFO ") && !warn.contains("DEBUG "),
        "{warn}"
    );
    assert!(warn.contains(" WARN unauthenticated connections"), "{warn}");

    // A value that does not parse is the standard filter (`-v` included),
    // not silence and not everything.
    for garbage in ["a=b=c", "portcullis=loud", "x[{y}=info"] {
        assert_eq!(
            levels(&log_of(Some(garbage), false)),
            levels(&standard),
            "{garbage}"
        );
        let v = log_of(Some(garbage), true);
        assert!(
            v.contains("DEBUG connection") && !v.contains("TRACE"),
            "{garbage}: {v}"
        );
    }
}

/// One unencrypted SSH packet around `payload`, padded to 8 bytes.
fn packet(payload: &[u8]) -> Vec<u8> {
    let mut pad = 8 - (5 + payload.len()) % 8;
    if pad < 4 {
        pad += 8;
    }
    let len = u32::try_from(1 + payload.len() + pad).unwrap();
    let mut p = len.to_be_bytes().to_vec();
    p.push(u8::try_from(pad).unwrap());
    p.extend_from_slice(payload);
    p.extend(std::iter::repeat_n(0, pad));
    p
}

/// A client's KEXINIT: curve25519 key exchange, ed25519 host key.
fn kexinit() -> Vec<u8> {
    let mut k = vec![20];
    k.extend_from_slice(&[7; 16]); // cookie
    for list in [
        "curve25519-sha256",
        "ssh-ed25519",
        "chacha20-poly1305@openssh.com",
        "chacha20-poly1305@openssh.com",
        "hmac-sha2-256",
        "hmac-sha2-256",
        "none",
        "none",
        "",
        "",
    ] {
        k.extend_from_slice(&u32::try_from(list.len()).unwrap().to_be_bytes());
        k.extend_from_slice(list.as_bytes());
    }
    k.push(0); // first_kex_packet_follows
    k.extend_from_slice(&[0; 4]); // reserved
    k
}

/// russh's own error records reach the listener's log (they were dropped:
/// no `log` logger was set), under the standard filter. A peer that breaks
/// the key exchange makes russh log "Unexpected kex message".
#[test]
fn russh_errors_reach_the_log() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port::free_port();
    let config = image(dir.path(), port);
    let mut child = listener_bin::start(&listener_bin::portcullisd(), &config);
    let mut conn = listener_bin::first_connection(&mut child, port);
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(b"SSH-2.0-hostile\r\n").unwrap();
    // KEXINIT, then a key-exchange message of the wrong kind where the
    // client's ECDH_INIT (30) must come: KEX_DH_GEX_REQUEST (34), whose
    // group exchange was not negotiated.
    conn.write_all(&packet(&kexinit())).unwrap();
    conn.write_all(&packet(&[34, 0, 0, 8, 0, 0, 0, 8, 0, 0, 0, 32, 0]))
        .unwrap();
    // The listener ends the connection: read to EOF (or an error).
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
    std::thread::sleep(Duration::from_millis(300));
    let err = listener_bin::sigterm(child).1;
    assert!(
        err.lines()
            .any(|l| l.starts_with("ERROR russh::server::kex: Unexpected kex message")),
        "{err}"
    );
}
