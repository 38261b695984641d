//! Issue 11 D: one typed passphrase is the same bytes on every human path.
//! The same inputs go through each path, end to end, to a real listener
//! whose real cryptsetup backend drives a recording fake `cryptsetup`; the
//! test asserts which bytes reached it (or that the input was refused with
//! a message naming the problem and nothing reached it):
//!
//! - `prompt`: the real `portcullis` binary's prompt in a real pty;
//! - `stdin`: `portcullis unlock --passphrase-stdin`;
//! - `command`: `portcullis unlock --passphrase-command 'cat FILE'`;
//! - `ssh-unlock`: the stock `ssh HOST unlock` with the input on stdin;
//! - `pty`: the listener's interactive prompt (pty + shell) over SSH.
//!
//! Machine mode (`portcullis/1 unlock`) is verbatim; checked at the end.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;
mod pty;

use common::{start, Fixture};
use portcullis::config::Limits;
use portcullis::secret::Passphrase;
use pty::{find, Pty};
use russh::keys::PrivateKeyWithHashAlg;
use russh::ChannelMsg;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// What a path did with one input.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    /// These bytes reached cryptsetup (for every volume).
    Bytes(Vec<u8>),
    /// Refused before cryptsetup; the message contained this word.
    Refused(&'static str),
    /// Refused (or lost) without a message naming the problem.
    RefusedUnnamed,
}

struct Case {
    name: &'static str,
    input: Vec<u8>,
    want: Got,
}

fn cases() -> Vec<Case> {
    let b = |s: &[u8]| Got::Bytes(s.to_vec());
    let mut max = vec![b'm'; 1024];
    let mut over = vec![b'o'; 1025];
    let mut tail = b"short\n".to_vec();
    tail.extend(vec![b'x'; 3000]);
    tail.push(b'\n');
    let want_max = Got::Bytes(max.clone());
    max.push(b'\n');
    over.push(b'\n');
    vec![
        Case {
            name: "plain line",
            input: b"pass word\n".to_vec(),
            want: b(b"pass word"),
        },
        Case {
            name: "trailing CR (Enter)",
            input: b"pass word\r".to_vec(),
            want: b(b"pass word"),
        },
        Case {
            name: "CRLF",
            input: b"pass word\r\n".to_vec(),
            want: b(b"pass word"),
        },
        Case {
            name: "two lines",
            input: b"L1\nL2\n".to_vec(),
            want: b(b"L1"),
        },
        Case {
            name: "TAB",
            input: b"a\tb\n".to_vec(),
            want: b(b"a\tb"),
        },
        Case {
            name: "NUL",
            input: b"a\0b\n".to_vec(),
            want: Got::Refused("NUL"),
        },
        Case {
            name: "ESC (arrow key)",
            input: b"ab\x1b[Dc\n".to_vec(),
            want: Got::Refused("ESC"),
        },
        Case {
            name: "invalid UTF-8",
            input: b"\xff\xfe\xc3(\n".to_vec(),
            want: b(b"\xff\xfe\xc3("),
        },
        Case {
            name: "1024 bytes",
            input: max,
            want: want_max,
        },
        Case {
            name: "1025 bytes",
            input: over,
            want: Got::Refused("longer than 1024"),
        },
        Case {
            name: "long tail after the first line",
            input: tail,
            want: b(b"short"),
        },
    ]
}

/// What reached cryptsetup; for a refusal, whether the path's visible
/// output named the problem.
fn outcome(f: &Fixture, output: &[u8], want: &Got) -> Got {
    let stdins = f.stdins.lock().unwrap().clone();
    match stdins.first() {
        Some(first) => {
            assert!(
                stdins.iter().all(|s| s == first),
                "volumes got different bytes"
            );
            Got::Bytes(first.clone())
        }
        None => match want {
            Got::Refused(w) if find(output, w.as_bytes()).is_some() => Got::Refused(w),
            _ => Got::RefusedUnnamed,
        },
    }
}

/// What the blocking paths need of a fixture.
#[derive(Clone)]
struct Target {
    dir: PathBuf,
    addr: std::net::SocketAddr,
    host_fp: String,
    client_key: PathBuf,
}

impl Target {
    fn of(f: &Fixture) -> Target {
        Target {
            dir: f.dir.path().to_path_buf(),
            addr: f.addr,
            host_fp: f.host_fp.clone(),
            client_key: f.client_key.clone(),
        }
    }
}

fn client_cmd(f: &Target, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    c.env_clear()
        .env("HOME", &f.dir)
        .env("PATH", "/usr/bin:/bin")
        .args(["unlock", &format!("127.0.0.1:{}", f.addr.port())])
        .args(["--fingerprint", &f.host_fp, "--no-agent", "-i"])
        .arg(&f.client_key)
        .args(extra);
    c
}

fn run_piped(mut cmd: Command, stdin: &[u8]) -> Vec<u8> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut w = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    // A writer thread: a reader that stops early must not block the test.
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let mut all = out.stdout;
    all.extend_from_slice(&out.stderr);
    all
}

fn via_prompt(f: &Target, input: &[u8]) -> Vec<u8> {
    let mut t = Pty::open();
    let mut child = t.spawn(&mut client_cmd(f, &[]));
    t.expect(b"LUKS passphrase for ", 0, T);
    t.type_bytes(input);
    t.finish(&mut child, T);
    assert!(t.echo_on());
    t.seen
}

fn via_stdin(f: &Target, input: &[u8]) -> Vec<u8> {
    run_piped(client_cmd(f, &["--passphrase-stdin"]), input)
}

fn via_command(f: &Target, input: &[u8]) -> Vec<u8> {
    let file = f.dir.join("manager-output");
    std::fs::write(&file, input).unwrap();
    let cmd = format!("cat '{}'", file.display());
    run_piped(client_cmd(f, &["--passphrase-command", &cmd]), b"")
}

fn via_ssh_unlock(f: &Target, input: &[u8]) -> Vec<u8> {
    let kh = f.dir.join("ssh_known_hosts");
    let pubkey = std::fs::read_to_string(f.dir.join("host_key.pub")).unwrap();
    std::fs::write(&kh, format!("[127.0.0.1]:{} {pubkey}", f.addr.port())).unwrap();
    let mut cmd = Command::new("ssh");
    cmd.args(["-p", &f.addr.port().to_string()])
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args([
            "-o",
            "IdentityAgent=none",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .args(["-o", "LogLevel=ERROR"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .arg("-i")
        .arg(&f.client_key)
        .args(["root@127.0.0.1", "unlock"]);
    run_piped(cmd, input)
}

struct Trust(String);

impl russh::client::Handler for Trust {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(
            matches!(key, russh::keys::PublicKeyOrCertificate::PublicKey { key, .. }
            if portcullis::authkeys::fingerprint(key) == self.0),
        )
    }
}

/// The listener's interactive prompt, as a terminal client sends keys:
/// the input in one packet after the prompt shows.
async fn via_listener_pty(f: &Fixture, input: &[u8]) -> Vec<u8> {
    let config = Arc::new(russh::client::Config::default());
    let mut h = russh::client::connect(config, f.addr, Trust(f.host_fp.clone()))
        .await
        .unwrap();
    let key = russh::keys::load_secret_key(&f.client_key, None).unwrap();
    let auth = h
        .authenticate_publickey("root", PrivateKeyWithHashAlg::new(Arc::new(key), None))
        .await
        .unwrap();
    assert!(auth.success());
    let mut ch = h.channel_open_session().await.unwrap();
    ch.request_pty(false, "xterm", 80, 24, 0, 0, &[])
        .await
        .unwrap();
    ch.request_shell(false).await.unwrap();
    let mut seen = Vec::new();
    let mut sent = false;
    let answered = |s: &[u8]| {
        [&b"wrong passphrase"[..], b"unlocked", b"the passphrase "]
            .iter()
            .any(|w| find(s, w).is_some())
    };
    loop {
        let msg = tokio::time::timeout(T, ch.wait()).await.unwrap();
        match msg {
            Some(ChannelMsg::Data { data }) => seen.extend_from_slice(&data),
            Some(_) => {}
            None => break,
        }
        if !sent && find(&seen, b"Passphrase for").is_some() {
            ch.data_bytes(input.to_vec()).await.unwrap();
            sent = true;
        }
        // The answer, then the next prompt (or the end).
        if sent && answered(&seen) && seen.ends_with(b": ") {
            break;
        }
    }
    let _ = ch.close().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_input_same_bytes_on_every_human_path() {
    let paths = ["prompt", "stdin", "command", "ssh-unlock", "pty"];
    let mut table = String::new();
    let mut wrong = Vec::new();
    for case in cases() {
        table.push_str(&format!("{:32}", case.name));
        for path in paths {
            let f = start("", Limits::default()).await;
            let input = case.input.clone();
            let output = match path {
                "pty" => via_listener_pty(&f, &input).await,
                _ => {
                    let t = Target::of(&f);
                    tokio::task::spawn_blocking(move || match path {
                        "prompt" => via_prompt(&t, &input),
                        "stdin" => via_stdin(&t, &input),
                        "command" => via_command(&t, &input),
                        _ => via_ssh_unlock(&t, &input),
                    })
                    .await
                    .unwrap()
                }
            };
            let got = outcome(&f, &output, &case.want);
            table.push_str(&format!(
                " {path}={}",
                match &got {
                    Got::Bytes(b) if b.len() > 12 => format!("{}B", b.len()),
                    Got::Bytes(b) => format!("{:?}", String::from_utf8_lossy(b)),
                    Got::Refused(_) => "refused".into(),
                    Got::RefusedUnnamed => "REFUSED-UNNAMED".into(),
                }
            ));
            if got != case.want {
                wrong.push(format!(
                    "{} via {path}: got {got:?}, want {:?}; output {:?}",
                    case.name,
                    case.want,
                    String::from_utf8_lossy(&output)
                ));
            }
            f.server.abort();
        }
        table.push('\n');
    }
    eprintln!("{table}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_mode_stays_verbatim() {
    let f = start("", Limits::default()).await;
    let raw = b"a\tb\r\nc\0\x1b\n".to_vec();
    let pass = Passphrase::new(raw.clone()).unwrap();
    let r = portcullis::client::unlock(&f.options(), &pass)
        .await
        .unwrap();
    assert_eq!(r.outcome, portcullis::protocol::Outcome::WrongPassphrase);
    assert_eq!(f.stdins.lock().unwrap().clone(), vec![raw.clone(), raw]);
}
