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

/// The levels of the lines, sorted: the connection summary (WARN) and the
/// stop line (INFO) come in either order, as the summary's timer and the
/// SIGTERM race (seen under load).
fn levels(log: &str) -> Vec<&str> {
    let mut l: Vec<&str> = log.lines().map(|l| l.get(..5).unwrap_or(l)).collect();
    l.sort_unstable();
    l
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
