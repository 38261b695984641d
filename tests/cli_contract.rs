//! The client's command-line contract, through the real `portcullis` binary
//! against in-process listeners (fake backend), an inventory and an
//! ssh_config: for every way of naming a host, and for one host and for
//! several, the exit code, the first line of text output and the JSON
//! keys. Each case of issue 10's list has a test here; the examples in
//! README.md and docs/ are parsed by the real clap definition.

#[path = "support/fleet_sim.rs"]
mod sim;

#[path = "pty/mod.rs"]
mod pty;

use sim::Spec;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const RIGHT: &[u8] = b"correct horse battery staple";
const WRONG: &[u8] = b"not the passphrase\n";

/// The binary under test: this build's, or `PORTCULLIS_CONTRACT_BIN` (an
/// installed package, or an older build to show which cases it fails).
fn bin() -> PathBuf {
    std::env::var_os("PORTCULLIS_CONTRACT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_portcullis")))
}

/// What one run gave.
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn first_out(&self) -> &str {
        self.out.lines().next().unwrap_or_default()
    }
    fn first_err(&self) -> &str {
        self.err.lines().next().unwrap_or_default()
    }
    fn json(&self) -> Vec<serde_json::Value> {
        self.out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }
}

/// A private HOME with the client key, an inventory (group `sim` of all
/// hosts, group `solo` of h0000) and an ssh_config alias `box` for h0000.
struct World {
    dir: tempfile::TempDir,
    inv: PathBuf,
    key: PathBuf,
    ssh_config: PathBuf,
    port: u16,
}

impl World {
    fn new(hosts: &[sim::Info]) -> World {
        let dir = tempfile::tempdir().unwrap();
        let inv = sim::write_inventory(dir.path(), hosts, RIGHT);
        let mut text = std::fs::read_to_string(&inv).unwrap();
        text = text.replace(
            "[group.sim]",
            "[group.solo]\nhosts = [\"h0000\"]\n\n[group.sim]",
        );
        std::fs::write(&inv, text).unwrap();
        let port = hosts.first().map_or(1, |h| h.port);
        let ssh_config = dir.path().join("ssh_config");
        std::fs::write(
            &ssh_config,
            format!("Host box\n  HostName 127.0.0.1\n  Port {port}\n  User root\n"),
        )
        .unwrap();
        World {
            key: dir.path().join("client_key"),
            dir,
            inv,
            ssh_config,
            port,
        }
    }

    /// Runs the CLI with the world's HOME; `stdin` is piped in.
    fn run(&self, args: &[&str], stdin: &[u8]) -> Run {
        self.run_env(args, stdin, &[])
    }

    fn run_env(&self, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Run {
        let mut c = Command::new(bin());
        c.args(args)
            .env("HOME", self.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("XDG_CONFIG_HOME")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        {
            use std::io::Write;
            let mut i = child.stdin.take().unwrap();
            let _ = i.write_all(stdin);
        }
        let o = child.wait_with_output().unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// The options every live case passes: the world's inventory and
    /// ssh_config, its key, its own known_hosts, no agent.
    fn conn(&self) -> Vec<String> {
        let p = |p: &Path| p.display().to_string();
        vec![
            "--inventory".into(),
            p(&self.inv),
            "--ssh-config".into(),
            p(&self.ssh_config),
            "-i".into(),
            p(&self.key),
            "--no-agent".into(),
            "--known-hosts".into(),
            p(&self.dir.path().join("kh")),
            "--accept-new".into(),
            "--timeout".into(),
            "20s".into(),
        ]
    }

    fn live(&self, cmd: &str, target: &str, extra: &[&str], stdin: &[u8]) -> Run {
        let conn = self.conn();
        let mut args: Vec<&str> = vec![cmd, target];
        args.extend(conn.iter().map(String::as_str));
        args.extend(extra);
        self.run(&args, stdin)
    }

    /// Every way of naming h0000, with the label its text output uses.
    fn forms(&self) -> Vec<(String, String)> {
        let p = self.port;
        let addr = format!("127.0.0.1:{p}");
        vec![
            ("h0000".into(), format!("h0000 ({addr})")),
            ("solo".into(), format!("h0000 ({addr})")),
            ("box".into(), format!("box ({addr})")),
            (addr.clone(), addr.clone()),
            (format!("root@{addr}"), addr.clone()),
            (format!("ssh://root@{addr}"), addr.clone()),
        ]
    }
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(k: &[&str]) -> BTreeSet<String> {
    k.iter().map(|s| s.to_string()).collect()
}

/// One host, however named: the same single-host answer, exit code and
/// JSON keys; several: the fleet answer with the same record keys.
#[test]
fn every_target_form_gives_the_same_answer() {
    let shard = sim::start(vec![
        Spec {
            tries: 100,
            ..Spec::new(0, RIGHT)
        },
        Spec {
            tries: 100,
            ..Spec::new(1, RIGHT)
        },
    ]);
    let w = World::new(&shard.hosts);
    let status_keys = set(&["host", "target", "outcome", "exit-code", "volumes"]);
    let unlock_keys = set(&["host", "target", "outcome", "exit-code", "unlock", "detail"]);
    for (form, label) in w.forms() {
        // status, text: the volume table, exit 0.
        let r = w.live("status", &form, &[], b"");
        assert_eq!(r.code, 0, "status {form}: {}", r.err);
        assert!(
            r.first_out().starts_with("root "),
            "status {form}: {}",
            r.out
        );
        // status, JSON: one record.
        let r = w.live("status", &form, &["--json"], b"");
        assert_eq!(r.code, 0, "status --json {form}: {}", r.err);
        let rec = r.json();
        assert_eq!(rec.len(), 1, "{form}: {}", r.out);
        assert_eq!(keys(&rec[0]), status_keys, "{form}");
        assert_eq!(rec[0]["outcome"], "ok");
        // Volume keys in the order scripts grep for (tests/distro/run.sh).
        assert!(
            r.out
                .contains(r#""device":"/dev/fake","name":"root","state":"pending""#),
            "{}",
            r.out
        );
        // unlock with a wrong passphrase: exit 2 and one line, whatever
        // the form (it was 11 and a fleet table for aliases and names).
        let r = w.live("unlock", &form, &["--passphrase-stdin"], WRONG);
        assert_eq!(r.code, 2, "unlock {form}: {} {}", r.out, r.err);
        assert!(
            r.first_err()
                .starts_with(&format!("{label}: wrong passphrase (")),
            "unlock {form}: {}",
            r.err
        );
        let r = w.live("unlock", &form, &["--passphrase-stdin", "--json"], WRONG);
        assert_eq!(r.code, 2, "unlock --json {form}: {}", r.err);
        let rec = r.json();
        assert_eq!(rec.len(), 1);
        assert_eq!(keys(&rec[0]), unlock_keys, "{form}: {}", r.out);
        assert_eq!(rec[0]["outcome"], "wrong-passphrase");
        assert_eq!(rec[0]["exit-code"], 2);
    }

    // Several hosts: the fleet table; records with the same keys, and a
    // failed record carries no `unlocked-after`.
    let r = w.live("status", "sim", &["--json"], b"");
    assert_eq!(r.code, 0, "{}", r.err);
    let rec = r.json();
    assert_eq!(rec.len(), 2);
    assert!(rec.iter().all(|v| keys(v) == status_keys), "{}", r.out);
    let r = w.live("status", "sim", &[], b"");
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.first_out(), format!("h0000 (127.0.0.1:{}):", w.port));
    let r = w.live(
        "unlock",
        "sim",
        &["--passphrase-stdin", "--json", "--no-wait-up"],
        WRONG,
    );
    assert_eq!(r.code, 11, "{}", r.err);
    let rec = r.json();
    assert_eq!(rec.len(), 2);
    assert!(rec.iter().all(|v| keys(v) == unlock_keys), "{}", r.out);
    // Text: the table on stdout, and no progress there (stderr is a pipe:
    // no progress at all, no escape sequences).
    let r = w.live(
        "unlock",
        "sim",
        &["--passphrase-stdin", "--no-wait-up"],
        WRONG,
    );
    assert_eq!(r.code, 11, "{}", r.err);
    assert!(r.first_out().starts_with("HOST "), "{}", r.out);
    assert!(
        !r.out.contains('\x1b') && !r.err.contains('\x1b'),
        "{}",
        r.err
    );

    // The right passphrase, via an alias: exit 0, one line on stdout.
    let r = w.live("unlock", "box", &["--passphrase-stdin"], RIGHT);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(
        r.first_out(),
        format!("box (127.0.0.1:{}): unlocked: root; boot continues", w.port)
    );
}

/// Fleet progress goes to stderr, and only on a terminal: redrawn in place
/// on a capable one, plain lines with `TERM=dumb` or `NO_COLOR`; stdout
/// (a file here) gets the table alone.
#[test]
fn progress_is_on_a_terminal_stderr_only() {
    let shard = sim::start(vec![Spec::new(0, RIGHT), Spec::new(1, RIGHT)]);
    let w = World::new(&shard.hosts);
    for (i, env) in [
        vec![("TERM", "xterm")],
        vec![("TERM", "dumb")],
        vec![("TERM", "xterm"), ("NO_COLOR", "1")],
    ]
    .into_iter()
    .enumerate()
    {
        let out_path = w.dir.path().join(format!("out{i}"));
        let out = std::fs::File::create(&out_path).unwrap();
        let mut p = pty::Pty::open();
        let mut cmd = Command::new(bin());
        let conn = w.conn();
        cmd.args(["unlock", "sim", "--no-wait-up"])
            .args(&conn)
            .env("HOME", w.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("NO_COLOR")
            .envs(env.iter().copied());
        let mut child = p.spawn_with(
            &mut cmd,
            Stdio::null(),
            Stdio::from(out),
            Stdio::from(p.slave.try_clone().unwrap()),
        );
        let status = p.finish(&mut child, Duration::from_secs(60));
        while p.pump(Duration::from_millis(100)) {}
        let screen = String::from_utf8_lossy(&p.seen).into_owned();
        let table = std::fs::read_to_string(&out_path).unwrap();
        assert_eq!(status.code(), Some(0), "{env:?}: {screen} {table}");
        assert!(table.starts_with("HOST "), "{env:?}: {table:?}");
        assert!(
            !table.contains('\x1b') && !table.contains("waiting"),
            "{table:?}"
        );
        assert!(screen.contains("h0001"), "{env:?}: no progress: {screen:?}");
        if i == 0 {
            assert!(
                screen.contains("\x1b[K") && screen.contains("waiting,"),
                "{screen:?}"
            );
        } else {
            assert!(
                !screen.contains('\x1b') && !screen.contains("waiting,"),
                "{env:?}: {screen:?}"
            );
        }
    }
}

/// `status web1` with web1 in the default inventory (no --inventory).
#[test]
fn status_uses_the_default_inventory() {
    let shard = sim::start(vec![Spec::new(0, RIGHT)]);
    let w = World::new(&shard.hosts);
    let config = w.dir.path().join("config");
    std::fs::create_dir_all(config.join("portcullis")).unwrap();
    std::fs::copy(&w.inv, config.join("portcullis/inventory.toml")).unwrap();
    // `--wait 1h30m`: humantime; the host answers at once.
    let r = w.run_env(
        &["status", "h0000", "--no-agent", "--json", "--wait", "1h30m"],
        b"",
        &[("XDG_CONFIG_HOME", config.to_str().unwrap())],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.json()[0]["host"], "h0000");
}

/// A typo, port 0, `--wait HOST`, `--timeout 0`, a malformed fingerprint:
/// exit 1 with one line, and nothing is asked or sent.
#[test]
fn bad_input_fails_before_the_passphrase() {
    let w = World::new(&[sim::Info {
        n: 0,
        port: 9,
        system_port: 9,
        fingerprint: format!("SHA256:{}", "A".repeat(43)),
        system_fingerprint: format!("SHA256:{}", "B".repeat(43)),
        attempts: Default::default(),
        started: Default::default(),
    }]);
    let marker = w.dir.path().join("asked");
    let ask = format!("touch {}; echo pw", marker.display());
    let inv = w.inv.to_str().unwrap();
    for (args, want) in [
        (
            vec!["unlock", "webx", "--inventory", inv],
            "not a group or host",
        ),
        (
            vec!["unlock", "webx", "h0000", "--inventory", inv],
            "not a group or host",
        ),
        (vec!["unlock", "127.0.0.1:0", "--inventory", inv], "port 0"),
        (vec!["unlock", "--wait", "127.0.0.1:22"], "not a duration"),
        (vec!["unlock", "h0000", "--timeout", "0"], "more than zero"),
        (
            vec!["unlock", "h0000", "--fingerprint", "SHA256:abc"],
            "not a host key fingerprint",
        ),
        (vec!["status", "ssh://h:22/x"], "without a path"),
    ] {
        let mut a = args.clone();
        a.extend(["--passphrase-command", &ask]);
        if a[0] == "status" {
            a.truncate(a.len() - 2);
        }
        let r = w.run(&a, b"");
        assert_eq!(r.code, 1, "{a:?}: {}", r.err);
        assert!(r.err.contains(want), "{a:?}: {}", r.err);
        assert!(!marker.exists(), "{a:?} asked for the passphrase");
    }
}

/// Durations through humantime: `500ms` is accepted (`1h30m` is in
/// `status_uses_the_default_inventory`).
#[test]
fn durations_are_humantime() {
    let w = World::new(&[]);
    let r = w.run(
        &["status", "127.0.0.1:1", "--timeout", "500ms", "--no-agent"],
        b"",
    );
    assert_eq!(r.code, 6, "{}", r.err);
    assert!(r.first_err().contains("unreachable"), "{}", r.err);
}

/// `rescue` names its host through the same resolver: an ssh_config alias
/// (the default ~/.ssh/config) and USER@HOST:PORT work, a typo fails before
/// any connection.
#[test]
fn rescue_uses_the_same_resolver() {
    let w = World::new(&[]);
    std::fs::create_dir_all(w.dir.path().join(".ssh")).unwrap();
    std::fs::write(
        w.dir.path().join(".ssh/config"),
        "Host rbox\n  HostName 127.0.0.1\n  Port 1\n",
    )
    .unwrap();
    let fp = format!("SHA256:{}", "A".repeat(43));
    for host in ["rbox", "root@127.0.0.1:1", "ssh://root@127.0.0.1:1"] {
        let r = w.run(&["rescue", "inspect", host, "--fingerprint", &fp], b"");
        assert_eq!(r.code, 6, "{host}: {}", r.err);
        assert!(
            r.first_err().starts_with("error: 127.0.0.1:1: unreachable"),
            "{host}: {}",
            r.err
        );
    }
    let r = w.run(&["rescue", "inspect", "rboxx", "--fingerprint", &fp], b"");
    assert_eq!(r.code, 1, "{}", r.err);
    assert!(r.err.contains("not a group or host"), "{}", r.err);
}

/// The answer that used up the last try says so.
#[test]
fn last_try_says_it_was_the_last() {
    let shard = sim::start(vec![Spec {
        tries: 1,
        ..Spec::new(0, RIGHT)
    }]);
    let w = World::new(&shard.hosts);
    let r = w.live("unlock", "h0000", &["--passphrase-stdin"], WRONG);
    assert_eq!(r.code, 2, "{}", r.err);
    assert!(r.first_err().contains("last try"), "{}", r.err);
    let r = w.live("unlock", "h0000", &["--passphrase-stdin"], WRONG);
    assert_eq!(r.code, 10, "{}", r.err);
}

/// `portcullis completions SHELL` prints a script clap_complete made from
/// the real command line.
#[test]
fn completions() {
    let w = World::new(&[]);
    for (shell, want) in [
        ("bash", "_portcullis()"),
        ("zsh", "#compdef portcullis"),
        ("fish", "complete -c portcullis"),
    ] {
        let r = w.run(&["completions", shell], b"");
        assert_eq!(r.code, 0, "{shell}: {}", r.err);
        assert!(r.out.contains(want), "{shell}: {}", r.first_out());
        assert!(r.out.contains("inventory"), "{shell}");
    }
    assert_eq!(w.run(&["completions", "tcsh"], b"").code, 1);
}

/// The zsh and fish scripts really complete in those shells (bash's is
/// exercised by the package test): fish completes `portcullis un` to
/// `unlock`, zsh parses the file and autoloads `_portcullis`. `.ci/run`
/// installs both shells; without them this says so and checks nothing.
#[test]
fn zsh_and_fish_completions_work_in_the_real_shells() {
    let w = World::new(&[]);
    let dir = w.dir.path();
    let have = |s: &str| {
        Command::new(s)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have("fish") {
        let f = dir.join("portcullis.fish");
        std::fs::write(&f, w.run(&["completions", "fish"], b"").out).unwrap();
        let o = Command::new("fish")
            .args(["--no-config", "-c"])
            .arg(format!(
                "source {}; complete -C 'portcullis un'; complete -C 'portcullis known-hosts f'",
                f.display()
            ))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        let words: Vec<&str> = out.lines().filter_map(|l| l.split('\t').next()).collect();
        assert_eq!(words, ["unlock", "forget"], "fish: {out}");
    } else {
        eprintln!("fish is not installed: fish completion not checked");
    }
    if have("zsh") {
        let f = dir.join("_portcullis");
        std::fs::write(&f, w.run(&["completions", "zsh"], b"").out).unwrap();
        let o = Command::new("zsh")
            .args(["-f", "-c"])
            .arg(format!(
                "zsh -n {f} || exit 3; autoload -U compinit; fpath=({d} $fpath); \
                 compinit -u -d {d}/.zcompdump; whence -v _portcullis",
                f = f.display(),
                d = dir.display()
            ))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "zsh: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out.contains("_portcullis is an autoload shell function"),
            "zsh: {out}"
        );
    } else {
        eprintln!("zsh is not installed: zsh completion not checked");
    }
}

/// Every `portcullis …` example in README.md and docs/ parses with the
/// real clap definition (placeholders such as HOST and FP filled in).
#[test]
fn documented_examples_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
    }
    let fp = format!("SHA256:{}", "A".repeat(43));
    let mut checked = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut in_code = false;
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            let l = line.trim_start().trim_start_matches("$ ");
            if !in_code || !l.starts_with("portcullis ") {
                continue;
            }
            let l = l.split("  #").next().unwrap().trim();
            let l = l
                .replace("SHA256:…", &fp)
                .replace(" FP", &format!(" {fp}"))
                .replace("[GROUP|HOST…]", "");
            let args = shell_words(&l);
            if let Err(e) = portcullis::cli::command().try_get_matches_from(&args) {
                panic!("{}:{}: {l}\n{e}", f.display(), i + 1);
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} examples found");
}

/// The README's exit-code table lists exactly the codes the code defines,
/// and `--help` prints each with its meaning.
#[test]
fn exit_codes_agree_with_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let documented: BTreeSet<u8> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    let defined: BTreeSet<u8> = portcullis::protocol::exit::TABLE
        .iter()
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(documented, defined);
    let w = World::new(&[]);
    let help = w.run(&["--help"], b"");
    assert_eq!(help.code, 0);
    let flat = help.out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("13 passphrase sent, no answer"), "{flat}");
}

/// Splits a shell line on spaces, honouring single and double quotes
/// (enough for the docs' examples).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' | '\'' if quote.is_none() => {
                quote = Some(c);
                any = true;
            }
            c if quote == Some(c) => quote = None,
            ' ' if quote.is_none() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[test]
fn shell_words_split() {
    assert_eq!(
        shell_words(r#"a "b c"  d 'e "f' "#),
        ["a", "b c", "d", "e \"f"].map(String::from)
    );
}

/// A loopback TCP proxy to `port` for one connection; `cut` closes both
/// sides at once, as a dropped network or a dying listener would.
struct Proxy {
    port: u16,
    cut: std::sync::mpsc::Sender<()>,
}

fn proxy(port: u16) -> Proxy {
    use std::net::{Shutdown, TcpListener, TcpStream};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let local = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok((a, _)) = l.accept() else { return };
        let b = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let pump = |mut from: TcpStream, mut to: TcpStream| {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(Shutdown::Write);
            })
        };
        pump(a.try_clone().unwrap(), b.try_clone().unwrap());
        pump(b.try_clone().unwrap(), a.try_clone().unwrap());
        let _ = rx.recv();
        let _ = a.shutdown(Shutdown::Both);
        let _ = b.shutdown(Shutdown::Both);
    });
    Proxy {
        port: local,
        cut: tx,
    }
}

/// The connection drops while the passphrase is being tried: the client
/// must say the reply was lost (exit 13, "run status"), never
/// "unreachable", since the volume may have opened.
#[test]
fn a_reply_lost_after_the_passphrase_is_exit_13_not_unreachable() {
    let shard = sim::start(vec![Spec {
        unlock_delay: Duration::from_secs(5),
        ..Spec::new(0, RIGHT)
    }]);
    let w = World::new(&shard.hosts);
    let started = shard.hosts[0].started.clone();
    let p = proxy(w.port);
    let addr = format!("127.0.0.1:{}", p.port);
    let conn = w.conn();
    let mut args: Vec<&str> = vec!["unlock", &addr, "--passphrase-stdin"];
    args.extend(conn.iter().map(String::as_str));
    let mut child = Command::new(bin())
        .args(&args)
        .env("HOME", w.dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        i.write_all(RIGHT).unwrap();
        i.write_all(b"\n").unwrap();
    }
    // Cut the wire once "cryptsetup" runs: the passphrase has arrived.
    let t0 = std::time::Instant::now();
    while started.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no attempt started");
        std::thread::sleep(Duration::from_millis(20));
    }
    p.cut.send(()).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(13), "stderr: {err}");
    assert!(!err.contains("unreachable"), "stderr: {err}");
    assert!(
        err.contains("status"),
        "tells the admin what to do next: {err}"
    );
}
