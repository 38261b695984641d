//! Issue 15: terminal prompts in a real pseudo-terminal. The real
//! `portcullis` binary asks for a passphrase; the test types it the moment
//! the prompt appears and checks that it never shows on the screen, many
//! times over (the race is timing-dependent), that echo comes back after
//! Ctrl-C, SIGTERM and SIGHUP at the prompt, and that typeahead from before
//! the prompt is discarded. The listener's own pty prompt gets the same
//! check through the stock `ssh -tt`.
//!
//! `PORTCULLIS_TEST_BIN` runs the client checks against another build of
//! `portcullis` (used once to show the old prompt failing).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;
mod pty;

use common::{start, RIGHT};
use portcullis::config::Limits;
use pty::{find, Pty};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const PROMPT: &[u8] = b"LUKS passphrase for ";
const RUNS: usize = 50;
const T: Duration = Duration::from_secs(20);

fn client_bin() -> PathBuf {
    std::env::var_os("PORTCULLIS_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_portcullis").into())
}

/// `portcullis unlock TARGET` with no agent, no home keys, in `home`.
fn client(home: &std::path::Path, target: &str, extra: &[&str]) -> Command {
    let mut c = Command::new(client_bin());
    c.env_clear()
        .current_dir(home)
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .env("TERM", "dumb")
        .args(["unlock", target, "--no-agent", "--timeout", "5s"])
        .args(extra);
    c
}

/// Typed the instant the prompt shows, 50 times: the passphrase must never
/// be on the screen. The target is a closed port: the passphrase is read
/// before connecting, and nothing else matters here.
#[test]
fn client_prompt_never_shows_what_is_typed() {
    let home = tempfile::tempdir().unwrap();
    let mut leaks = Vec::new();
    for i in 0..RUNS {
        let secret = format!("typed-secret-{i:03}");
        let mut t = Pty::open();
        let mut child = t.spawn(&mut client(
            home.path(),
            "127.0.0.1:1",
            &[
                "--fingerprint",
                "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ],
        ));
        let at = t.expect(PROMPT, 0, T);
        // No delay: write as soon as the prompt's first bytes are seen.
        t.type_bytes(format!("{secret}\r").as_bytes());
        let st = t.finish(&mut child, T);
        if find(&t.seen, secret.as_bytes()).is_some() {
            leaks.push(i);
        }
        assert!(
            find(&t.seen[at..], b"unreachable").is_some(),
            "run {i}: {st:?} {:?}",
            String::from_utf8_lossy(&t.seen)
        );
        assert!(t.echo_on(), "run {i}: echo left off");
    }
    eprintln!("passphrase visible in {} of {RUNS} runs", leaks.len());
    assert!(leaks.is_empty(), "passphrase echoed in runs {leaks:?}");
}

/// Ctrl-C, SIGTERM, SIGHUP and SIGQUIT at the prompt: the process ends of
/// the signal, and the terminal is back in its saved mode (echo and line
/// editing on).
#[test]
fn echo_is_restored_when_the_prompt_is_interrupted() {
    let home = tempfile::tempdir().unwrap();
    for how in ["ctrl-c", "SIGTERM", "SIGHUP", "SIGQUIT"] {
        let mut t = Pty::open();
        assert!(t.echo_on() && t.canonical());
        let mut child = t.spawn(&mut client(
            home.path(),
            "127.0.0.1:1",
            &[
                "--fingerprint",
                "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ],
        ));
        t.expect(PROMPT, 0, T);
        // Half a passphrase typed, then the interruption.
        t.type_bytes(b"half-typ");
        std::thread::sleep(Duration::from_millis(100));
        assert!(!t.echo_on(), "{how}: echo is off at the prompt");
        let sig = match how {
            "ctrl-c" => {
                t.type_bytes(b"\x03");
                libc::SIGINT
            }
            "SIGTERM" => kill(&child, libc::SIGTERM),
            "SIGHUP" => kill(&child, libc::SIGHUP),
            _ => kill(&child, libc::SIGQUIT),
        };
        let st = t.finish_what(how, &mut child, T);
        assert_eq!(st.signal(), Some(sig), "{how}: {st:?}");
        assert!(t.echo_on(), "{how}: echo left off");
        assert!(t.canonical(), "{how}: line editing left off");
        assert!(find(&t.seen, b"half-typ").is_none(), "{how}");
    }
}

/// A signal the program was started with ignored (`nohup`: SIGHUP) stays
/// ignored at the prompt: the prompt waits on, echo still off, and Ctrl-C
/// still ends it with the terminal restored. This is also why the harness
/// resets the terminal signals before the test above: inherited from a
/// shell that ignores them, they would leave the program waiting.
#[test]
fn an_ignored_signal_stays_ignored_at_the_prompt() {
    let home = tempfile::tempdir().unwrap();
    let mut t = Pty::open();
    let s = || Stdio::from(t.slave.try_clone().unwrap());
    let mut child = t.spawn_ignoring(
        &mut client(
            home.path(),
            "127.0.0.1:1",
            &[
                "--fingerprint",
                "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ],
        ),
        s(),
        s(),
        s(),
        &[libc::SIGHUP],
    );
    t.expect(PROMPT, 0, T);
    kill(&child, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP was ignored");
    assert!(!t.echo_on(), "still at the prompt, echo off");
    t.type_bytes(b"\x03");
    let st = t.finish_what("ctrl-c after an ignored SIGHUP", &mut child, T);
    assert_eq!(st.signal(), Some(libc::SIGINT), "{st:?}");
    assert!(t.echo_on() && t.canonical(), "terminal restored");
}

fn kill(child: &std::process::Child, sig: libc::c_int) -> libc::c_int {
    // SAFETY: signals a child we started and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
    sig
}

/// Typeahead from before the prompt is discarded: only what is typed after
/// the prompt reaches cryptsetup; bytes after Enter are discarded too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typeahead_before_the_prompt_is_discarded() {
    let f = start("", Limits::default()).await;
    let home = tempfile::tempdir().unwrap();
    let target = format!("127.0.0.1:{}", f.addr.port());
    let key = f.client_key.display().to_string();
    let fp = f.host_fp.clone();
    let seen = tokio::task::spawn_blocking(move || {
        let mut t = Pty::open();
        // Typed before the program even runs: the terminal echoes it (echo
        // is on), and it must not become the passphrase.
        t.type_bytes(b"early-typeahead\r");
        let mut child = t.spawn(&mut client(
            home.path(),
            &target,
            &["--fingerprint", &fp, "-i", &key],
        ));
        t.expect(PROMPT, 0, T);
        let mut line = RIGHT.to_vec();
        line.extend_from_slice(b"\rpasted second line\r");
        t.type_bytes(&line);
        let st = t.finish(&mut child, T);
        assert_eq!(st.code(), Some(0), "{:?}", String::from_utf8_lossy(&t.seen));
        t.seen
    })
    .await
    .unwrap();
    assert!(find(&seen, RIGHT).is_none());
    assert_eq!(
        f.stdins.lock().unwrap().clone(),
        vec![RIGHT.to_vec(), RIGHT.to_vec()]
    );
}

/// The stock OpenSSH client in a real terminal (`ssh -tt`) against the
/// listener's pty prompt, typed as soon as "Passphrase for" shows, 50 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_pty_prompt_never_shows_what_is_typed() {
    let mut leaks = Vec::new();
    let mut i = 0;
    while i < RUNS {
        // Each wrong answer costs a try (5 per volume per boot).
        let f = start("", Limits::default()).await;
        let kh = f.dir.path().join("ssh_known_hosts");
        let pubkey = std::fs::read_to_string(f.dir.path().join("host_key.pub")).unwrap();
        std::fs::write(&kh, format!("[127.0.0.1]:{} {pubkey}", f.addr.port())).unwrap();
        for _ in 0..4 {
            if i == RUNS {
                break;
            }
            let mut cmd = Command::new("ssh");
            cmd.args(["-tt", "-p", &f.addr.port().to_string()])
                .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
                .args([
                    "-o",
                    "IdentityAgent=none",
                    "-o",
                    "StrictHostKeyChecking=yes",
                ])
                .args(["-o", "LogLevel=ERROR", "-e", "none"])
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", kh.display()))
                .arg("-i")
                .arg(&f.client_key)
                .arg("root@127.0.0.1");
            let secret = format!("typed-secret-{i:03}");
            let leaked = tokio::task::spawn_blocking(move || {
                let mut t = Pty::open();
                let mut child = t.spawn(&mut cmd);
                let at = t.expect(b"Passphrase for", 0, T);
                t.type_bytes(format!("{secret}\r").as_bytes());
                t.expect(b"wrong passphrase", at, T);
                t.type_bytes(b"\x03");
                t.finish(&mut child, T);
                find(&t.seen, secret.as_bytes()).is_some()
            })
            .await
            .unwrap();
            if leaked {
                leaks.push(i);
            }
            i += 1;
        }
    }
    eprintln!(
        "passphrase visible in {} of {RUNS} ssh -tt runs",
        leaks.len()
    );
    assert!(leaks.is_empty(), "passphrase echoed in runs {leaks:?}");
}

/// The prompt is on the terminal even when stdin and stdout are not: the
/// passphrase typed there reaches cryptsetup, and stdout gets the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_works_with_stdout_redirected() {
    let f = start("", Limits::default()).await;
    let home = tempfile::tempdir().unwrap();
    let target = format!("127.0.0.1:{}", f.addr.port());
    let key = f.client_key.display().to_string();
    let fp = f.host_fp.clone();
    let out = home.path().join("stdout");
    let out2 = out.clone();
    let hp = home.path().to_path_buf();
    let seen = tokio::task::spawn_blocking(move || {
        let mut t = Pty::open();
        let mut cmd = client(&hp, &target, &["--fingerprint", &fp, "-i", &key]);
        let file = std::fs::File::create(&out2).unwrap();
        let mut child = t.spawn_with(&mut cmd, Stdio::null(), file.into(), Stdio::null());
        t.expect(PROMPT, 0, T);
        let mut line = RIGHT.to_vec();
        line.push(b'\r');
        t.type_bytes(&line);
        let st = t.finish(&mut child, T);
        assert_eq!(st.code(), Some(0), "{:?}", String::from_utf8_lossy(&t.seen));
        t.seen
    })
    .await
    .unwrap();
    assert!(find(&seen, RIGHT).is_none());
    let printed = std::fs::read_to_string(&out).unwrap();
    assert!(printed.contains("unlocked: root, data"), "{printed}");
    assert_eq!(f.stdins.lock().unwrap().len(), 2);
}

/// The host-key question discards keys typed before it was shown: an early
/// "yes" must not pin a key nobody looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_question_ignores_typeahead() {
    let f = start("", Limits::default()).await;
    let home = tempfile::tempdir().unwrap();
    let kh = f.dir.path().join("pins");
    let target = format!("127.0.0.1:{}", f.addr.port());
    let key = f.client_key.display().to_string();
    let khs = kh.display().to_string();
    tokio::task::spawn_blocking(move || {
        for (early, answer, code) in [("yes\r", "no\r", 3), ("no\r", "yes\r", 0)] {
            let mut t = Pty::open();
            t.type_bytes(early.as_bytes());
            let mut c = Command::new(client_bin());
            c.env_clear()
                .current_dir(home.path())
                .env("HOME", home.path())
                .args(["status", &target, "--no-agent", "-i", &key])
                .args(["--known-hosts", &khs]);
            let mut child = t.spawn(&mut c);
            t.expect(b"Pin it? [yes/no] ", 0, T);
            t.type_bytes(answer.as_bytes());
            let st = t.finish(&mut child, T);
            assert_eq!(
                st.code(),
                Some(code),
                "early {early:?}, answer {answer:?}: {:?}",
                String::from_utf8_lossy(&t.seen)
            );
        }
    })
    .await
    .unwrap();
    let pins = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(pins.lines().count(), 1, "{pins}");
}

/// An encrypted key file's passphrase is asked on the terminal the same way
/// (echo off, raw bytes: TAB kept). The key is not authorized, so a right
/// passphrase ends in "authentication refused" (5) and a wrong one in
/// "decrypting key" (1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_file_passphrase_prompt() {
    let f = start("", Limits::default()).await;
    let home = tempfile::tempdir().unwrap();
    let key = home.path().join("enc_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "key pass\tword", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (openssh-client) is needed");
    assert!(st.success());
    let target = format!("127.0.0.1:{}", f.addr.port());
    let fp = f.host_fp.clone();
    tokio::task::spawn_blocking(move || {
        for (typed, code) in [(&b"key pass\tword\r"[..], 5), (b"wrong\r", 1)] {
            let mut t = Pty::open();
            let ks = key.display().to_string();
            let mut child = t.spawn(&mut client(
                home.path(),
                &target,
                &[
                    "--fingerprint",
                    &fp,
                    "-i",
                    &ks,
                    "--passphrase-command",
                    "echo luks",
                ],
            ));
            let at = t.expect(b"Enter passphrase for key ", 0, T);
            t.type_bytes(typed);
            let st = t.finish(&mut child, T);
            let shown = String::from_utf8_lossy(&t.seen[at..]).into_owned();
            assert_eq!(st.code(), Some(code), "{shown}");
            assert!(
                !shown.contains("pass\tword") && !shown.contains("wrong"),
                "{shown}"
            );
            assert!(t.echo_on());
        }
    })
    .await
    .unwrap();
}
