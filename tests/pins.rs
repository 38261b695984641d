//! Pinning end to end (issue 10 item 2): the real `portcullis` binary and
//! the stock OpenSSH client against a real listener on 127.0.0.1, with
//! known_hosts files written by portcullis and hashed by the real
//! `ssh-keygen -H`.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod common;
#[path = "support/listener_bin.rs"]
mod listener_bin;

use common::{start, Fixture};
use portcullis::authkeys::fingerprint;
use portcullis::client::{self, ClientError, HostKeyPolicy, Target};
use portcullis::config::Limits;
use portcullis::fleet::probe::SystemPins;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A fingerprint of no key in these tests.
const OTHER: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The CLI without a terminal (its own session: nobody to ask), a private
/// HOME and no agent.
fn portcullis(f: &Fixture, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    c.args(args)
        .env("HOME", f.dir.path())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe; it only detaches the child from
    // our controlling terminal, so "no terminal" is what the test sees.
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    c.output().unwrap()
}

/// An inventory-style pin list with no known-hosts file.
fn fps(fingerprints: Vec<String>) -> HostKeyPolicy {
    HostKeyPolicy::Fingerprints {
        fingerprints,
        revoked_in: None,
    }
}

fn target(f: &Fixture) -> String {
    format!("127.0.0.1:{}", f.addr.port())
}

fn kh(f: &Fixture) -> PathBuf {
    f.dir.path().join("pins")
}

/// `status` with the fixture's admin key and pins file, plus `extra`.
fn status(f: &Fixture, extra: &[&str]) -> Output {
    let t = target(f);
    let key = f.client_key.display().to_string();
    let khs = kh(f).display().to_string();
    let mut args = vec![
        "status",
        &t,
        "-i",
        &key,
        "--no-agent",
        "--known-hosts",
        &khs,
    ];
    args.extend_from_slice(extra);
    portcullis(f, &args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// The stock `ssh` client running `status`, trusting only `known_hosts`.
fn openssh_status(f: &Fixture, known_hosts: &Path) -> Output {
    openssh_status_at(f, f.addr.port(), known_hosts)
}

/// [`openssh_status`] against the listener on `port`.
fn openssh_status_at(f: &Fixture, port: u16, known_hosts: &Path) -> Output {
    Command::new("ssh")
        .args(["-p", &port.to_string()])
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
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
            "GlobalKnownHostsFile=/dev/null",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-i")
        .arg(&f.client_key)
        .args(["root@127.0.0.1", "status"])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// README: `status HOST --fingerprint SHA256:…` pins the key, so the next
/// run needs no flag (it used to exit 3, "not pinned").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_flag_pins_on_a_match() {
    let f = start("", Limits::default()).await;
    let o = status(&f, &["--fingerprint", &f.host_fp]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("pinned {}", f.host_fp)),
        "{}",
        stderr(&o)
    );
    let pins = std::fs::read_to_string(kh(&f)).unwrap();
    assert!(
        pins.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", f.addr.port())),
        "{pins}"
    );
    let o = status(&f, &[]);
    assert_eq!(
        code(&o),
        0,
        "second run without --fingerprint: {}",
        stderr(&o)
    );
    // The stock client reads the same file.
    let o = openssh_status(&f, &kh(&f));
    assert_eq!(code(&o), 0, "ssh: {}", stderr(&o));
}

/// `SHA256:abc` is a typo, not an attack: exit 1 and a usage message (it
/// used to be "HOST KEY CHANGED", exit 4). Nothing is pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_fingerprint_is_a_usage_error() {
    let f = start("", Limits::default()).await;
    let o = status(&f, &["--fingerprint", "SHA256:abc"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let e = stderr(&o);
    // One line says it all (clap adds its "try '--help'" hint below).
    let first = e.lines().next().unwrap_or_default();
    assert!(
        first.contains("SHA256:abc") && first.contains("43 base64 characters"),
        "{e}"
    );
    assert!(!e.contains("CHANGED"), "{e}");
    assert!(!kh(&f).exists());
    let o = portcullis(
        &f,
        &["known-hosts", "pin", &target(&f), "--fingerprint", "MD5:aa"],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
}

/// A well-formed but wrong fingerprint is a changed key, and the pin stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fingerprint_keeps_the_pin() {
    let f = start("", Limits::default()).await;
    assert_eq!(code(&status(&f, &["--fingerprint", &f.host_fp])), 0);
    let before = std::fs::read_to_string(kh(&f)).unwrap();
    let o = status(&f, &["--fingerprint", OTHER]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("HOST KEY CHANGED"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(kh(&f)).unwrap(), before);
}

/// The hint of a changed key says "pass the new --fingerprint": doing so
/// replaces the old pin (a rebuilt image), and the next run needs no flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_replaces_an_old_pin() {
    let f = start("", Limits::default()).await;
    let old = portcullis::hostkey::generate(&f.dir.path().join("old_key"), "old").unwrap();
    let old_line = old.public_key().to_openssh().unwrap();
    std::fs::write(
        kh(&f),
        format!(
            "# mine\n[127.0.0.1]:{} {old_line}\nother {old_line}\n",
            f.addr.port()
        ),
    )
    .unwrap();
    let o = status(&f, &[]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("--fingerprint"), "{}", stderr(&o));
    let o = status(&f, &["--fingerprint", &f.host_fp]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("replacing {}", fingerprint(old.public_key()))),
        "{e}"
    );
    let pins = std::fs::read_to_string(kh(&f)).unwrap();
    let pubkey = std::fs::read_to_string(f.dir.path().join("host_key.pub")).unwrap();
    // The key as the server sent it: type and base64, no comment.
    let bare = pubkey
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(
        pins,
        format!(
            "# mine\nother {old_line}\n[127.0.0.1]:{} {bare}\n",
            f.addr.port()
        )
    );
    assert_eq!(code(&status(&f, &[])), 0);
}

/// `known-hosts pin|list|forget` on a real listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_commands() {
    let f = start("", Limits::default()).await;
    let t = target(&f);
    let khs = kh(&f).display().to_string();
    let kh_args = ["--known-hosts", khs.as_str()];
    // No terminal and no fingerprint: nobody confirmed the key.
    let o = portcullis(&f, &[&["known-hosts", "pin", &t][..], &kh_args].concat());
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains(&f.host_fp), "{}", stderr(&o));
    assert!(!kh(&f).exists());
    // Fetched from the listener and checked against --fingerprint.
    let o = portcullis(
        &f,
        &[
            &["known-hosts", "pin", &t, "--fingerprint", &f.host_fp][..],
            &kh_args,
        ]
        .concat(),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        format!(
            "pinned {} for [127.0.0.1]:{} in {khs}",
            f.host_fp,
            f.addr.port()
        )
    );
    assert_eq!(code(&status(&f, &[])), 0);
    let o = portcullis(&f, &[&["known-hosts", "list"][..], &kh_args].concat());
    assert_eq!(code(&o), 0);
    assert_eq!(
        stdout(&o),
        format!("   1  [127.0.0.1]:{}  {}\n", f.addr.port(), f.host_fp)
    );
    // A wrong expectation pins nothing.
    let o = portcullis(
        &f,
        &[
            &["known-hosts", "pin", &t, "--fingerprint", OTHER][..],
            &kh_args,
        ]
        .concat(),
    );
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let o = portcullis(&f, &[&["known-hosts", "forget", &t][..], &kh_args].concat());
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).starts_with("forgot 1 pin(s)"), "{}", stdout(&o));
    let o = status(&f, &[]);
    assert_eq!(code(&o), 3, "forgotten: {}", stderr(&o));
    let o = portcullis(&f, &[&["known-hosts", "forget", &t][..], &kh_args].concat());
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("no pin for"), "{}", stderr(&o));
    // From the .pub file keygen wrote, without contacting anyone.
    let pubfile = f.dir.path().join("host_key.pub").display().to_string();
    let o = portcullis(
        &f,
        &[
            &["known-hosts", "pin", "web9.invalid", "--key", &pubfile][..],
            &kh_args,
        ]
        .concat(),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Written `host` for port 22, as OpenSSH writes it.
    let pins = std::fs::read_to_string(kh(&f)).unwrap();
    assert!(pins.starts_with("web9.invalid ssh-ed25519 "), "{pins}");
}

/// A key marked `@revoked` is refused, even when pinned and even when the
/// admin names it with --fingerprint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_is_refused() {
    let f = start("", Limits::default()).await;
    let pubkey = std::fs::read_to_string(f.dir.path().join("host_key.pub")).unwrap();
    std::fs::write(
        kh(&f),
        format!("[127.0.0.1]:{} {pubkey}@revoked * {pubkey}", f.addr.port()),
    )
    .unwrap();
    for extra in [&[][..], &["--fingerprint", f.host_fp.as_str()][..]] {
        let o = status(&f, extra);
        assert_eq!(code(&o), 4, "{}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("HOST KEY REVOKED") && e.contains("line 2"),
            "{e}"
        );
    }
    // OpenSSH agrees.
    let o = openssh_status(&f, &kh(&f));
    assert_ne!(code(&o), 0);
}

/// Inventory pins obey `@revoked` in portcullis's default known-hosts
/// file, as docs/rotation.md promises: a listed key revoked there is
/// refused (exit 4, host-key-revoked) by unlock and by watch's policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_pins_obey_revocations() {
    use std::os::unix::fs::PermissionsExt;
    let f = start("", Limits::default()).await;
    let pubkey = std::fs::read_to_string(f.dir.path().join("host_key.pub")).unwrap();
    let pass = f.dir.path().join("pass");
    std::fs::write(&pass, "x").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let inv = f.dir.path().join("inventory.toml");
    std::fs::write(
        &inv,
        format!(
            "[host.box]\naddress = \"127.0.0.1\"\nport = {}\nfingerprint = [\"{OTHER}\", \"{}\"]\n\
             identity = \"{}\"\npassphrase = {{ file = \"{}\" }}\n",
            f.addr.port(),
            f.host_fp,
            f.client_key.display(),
            pass.display()
        ),
    )
    .unwrap();
    let inv = inv.display().to_string();
    // Not revoked: the listed key is accepted.
    let o = portcullis(&f, &["status", "--inventory", &inv, "box", "--no-agent"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    // Revoked (tab-separated, as OpenSSH allows) in the default file.
    let default = f.dir.path().join(".config/portcullis/known_hosts");
    std::fs::create_dir_all(default.parent().unwrap()).unwrap();
    std::fs::write(&default, format!("# rotated\n@revoked\t*\t{pubkey}")).unwrap();
    let o = portcullis(&f, &["unlock", "--inventory", &inv, "box", "--no-agent"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("HOST KEY REVOKED") && e.contains("line 2"),
        "{e}"
    );
    let o = portcullis(
        &f,
        &["unlock", "--inventory", &inv, "box", "--no-agent", "--json"],
    );
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    // The record names it as the single-host JSON does (exit 4).
    let out = stdout(&o);
    assert!(
        out.contains("\"exit-code\":4")
            && out.contains("\"outcome\":\"host-key-revoked\"")
            && out.contains("HOST KEY REVOKED"),
        "{out}"
    );
    // watch's policy: the same list, the same file.
    let mut opts = f.options();
    opts.host_key = HostKeyPolicy::Fingerprints {
        fingerprints: vec![OTHER.into(), f.host_fp.clone()],
        revoked_in: Some(default.clone()),
    };
    match client::status(&opts).await {
        Err(ClientError::HostKeyRevoked { line, .. }) => assert_eq!(line, 2),
        r => panic!("{r:?}"),
    }
    // A revocation that does not parse refuses too, naming file and line.
    std::fs::write(&default, "@revoked * ssh-ed25519 AAAA!!\n").unwrap();
    let o = portcullis(&f, &["status", "--inventory", &inv, "box", "--no-agent"]);
    assert_ne!(code(&o), 0);
    let e = stderr(&o);
    assert!(
        e.contains("line 1") && e.contains(&default.display().to_string()),
        "{e}"
    );
}

/// `known-hosts pin|forget` name hosts as `status` does: an inventory host
/// or an ssh_config alias is pinned under its listener's id, so the client
/// finds the pin; `NAME:PORT` with an inventory NAME is refused; a host a
/// pattern line pins is not claimed forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_and_forget_use_the_shared_resolver() {
    let f = start("", Limits::default()).await;
    let port = f.addr.port();
    let inv = f.dir.path().join("inventory.toml");
    let cfg = f.dir.path().join("ssh_config");
    std::fs::write(
        &inv,
        format!(
            "[defaults]\nidentity = \"{}\"\n[host.box]\naddress = \"127.0.0.1\"\nport = {port}\n",
            f.client_key.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &cfg,
        format!("Host alias1\n  HostName 127.0.0.1\n  Port {port}\n"),
    )
    .unwrap();
    let (inv, cfg) = (inv.display().to_string(), cfg.display().to_string());
    let khs = kh(&f).display().to_string();
    let key = f.dir.path().join("host_key.pub").display().to_string();
    let look = ["--inventory", inv.as_str(), "--ssh-config", cfg.as_str()];
    let kh_args = ["--known-hosts", khs.as_str()];
    let run = |args: &[&str]| {
        let mut a: Vec<&str> = args.to_vec();
        a.extend_from_slice(&look);
        a.extend_from_slice(&kh_args);
        portcullis(&f, &a)
    };
    let id = format!("[127.0.0.1]:{port}");
    let o = run(&["known-hosts", "pin", "box", "--key", &key]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("for {id} in")),
        "{}",
        stdout(&o)
    );
    assert!(std::fs::read_to_string(kh(&f))
        .unwrap()
        .starts_with(&format!("{id} ")));
    // The client finds that pin for the inventory host and for the alias.
    for name in ["box", "alias1"] {
        let o = run(&[
            "status",
            name,
            "--no-agent",
            "-i",
            &f.client_key.display().to_string(),
        ]);
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
    }
    let o = run(&["known-hosts", "forget", "alias1"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        format!("forgot 1 pin(s) for {id} in {khs}")
    );
    // NAME:PORT with an inventory NAME: refused, not a DNS name.
    for t in ["box:2200", "alias1:2200"] {
        let o = run(&["status", t]);
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("is named in") && e.contains("ADDRESS:2200"),
            "{e}"
        );
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        let o = run(&["known-hosts", "forget", t]);
        assert_eq!(code(&o), 1, "{}", stderr(&o));
    }
    // A pattern line pins the host: forget and pin refuse, file untouched.
    let pub_line = std::fs::read_to_string(&key).unwrap();
    let text = format!("[127.0.0.1]:* {pub_line}");
    std::fs::write(kh(&f), &text).unwrap();
    for args in [
        &["known-hosts", "forget", "box"][..],
        &["known-hosts", "pin", "box", "--key", &key][..],
    ] {
        let o = run(args);
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        assert_eq!(
            stderr(&o).trim(),
            format!("error: {khs} line 1 pins {id} through pattern [127.0.0.1]:*; edit it by hand")
        );
        assert_eq!(std::fs::read_to_string(kh(&f)).unwrap(), text);
    }
}

/// Hashes a known_hosts file in place with the real ssh-keygen.
fn hash(path: &Path) {
    let o = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.lines().all(|l| l.starts_with("|1|")), "{text}");
}

/// Hashed names (Debian's default) are found, for the listener's pins and
/// for the running system's key in ~/.ssh/known_hosts; port 22 under the
/// plain name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_known_hosts() {
    let f = start("", Limits::default()).await;
    let pubkey = std::fs::read_to_string(f.dir.path().join("host_key.pub")).unwrap();
    let sys = portcullis::hostkey::generate(&f.dir.path().join("sys_key"), "sys").unwrap();
    let sys_line = sys.public_key().to_openssh().unwrap();
    std::fs::write(
        kh(&f),
        format!(
            "[127.0.0.1]:{} {pubkey}web1.example.net {sys_line}\n[db1.example.net]:2222 {sys_line}\n",
            f.addr.port()
        ),
    )
    .unwrap();
    hash(&kh(&f));
    let o = status(&f, &[]);
    assert_eq!(code(&o), 0, "hashed pin: {}", stderr(&o));
    let sys_fp = fingerprint(sys.public_key());
    for (host, port) in [("web1.example.net", 22), ("db1.example.net", 2222)] {
        let t = Target {
            host: host.into(),
            port,
        };
        let pins = SystemPins::from_known_hosts(&kh(&f), &t).unwrap();
        assert_eq!(pins.fingerprints, vec![sys_fp.clone()], "{host}:{port}");
    }
    let t = Target {
        host: "web1.example.net".into(),
        port: 2222,
    };
    assert_eq!(SystemPins::from_known_hosts(&kh(&f), &t), None);
    // A revoked system key is no pin.
    let mut text = std::fs::read_to_string(kh(&f)).unwrap();
    text.push_str(&format!("@revoked * {sys_line}\n"));
    std::fs::write(kh(&f), text).unwrap();
    let t = Target {
        host: "web1.example.net".into(),
        port: 22,
    };
    assert_eq!(SystemPins::from_known_hosts(&kh(&f), &t), None);
}

/// Rotation overlap on the client: two pins for one host (the inventory's
/// list, or `pin --add`) accept the listener whichever key it has, and so
/// does OpenSSH with the same file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pins_accept_either_key() {
    let f = start("", Limits::default()).await;
    let mut opts = f.options();
    opts.host_key = fps(vec![OTHER.into(), f.host_fp.clone()]);
    client::status(&opts).await.unwrap();
    opts.host_key = fps(vec![OTHER.into()]);
    match client::status(&opts).await {
        Err(ClientError::HostKeyChanged { expected, .. }) => assert_eq!(expected, OTHER),
        r => panic!("{r:?}"),
    }
    // known_hosts: the next key pinned beside the current one.
    let next = portcullis::hostkey::generate(&f.dir.path().join("next_key"), "next").unwrap();
    let t = target(&f);
    let khs = kh(&f).display().to_string();
    for (key, add) in [("host_key.pub", false), ("next_key.pub", true)] {
        let file = f.dir.path().join(key).display().to_string();
        let mut args = vec![
            "known-hosts",
            "pin",
            &t,
            "--key",
            &file,
            "--known-hosts",
            &khs,
        ];
        if add {
            args.push("--add");
        }
        let o = portcullis(&f, &args);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let o = portcullis(
        &f,
        &["known-hosts", "list", "--known-hosts", &khs, "--json"],
    );
    let fps: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["fingerprint"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(fps, vec![f.host_fp.clone(), fingerprint(next.public_key())]);
    assert_eq!(code(&status(&f, &[])), 0);
    assert_eq!(code(&openssh_status(&f, &kh(&f))), 0);
}

/// Why a same-type overlap lives on the client: an SSH server signs the key
/// exchange with one host key per algorithm, so a listener given two
/// ed25519 keys only ever shows the first (russh picks the first key of the
/// negotiated algorithm), and `check` refuses such a config. If this
/// changes, docs/rotation.md can offer a server-side overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_shows_one_key_per_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = portcullis::hostkey::generate(&dir.path().join("k1"), "k1").unwrap();
    let k2 = portcullis::hostkey::generate(&dir.path().join("k2"), "k2").unwrap();
    let (fp1, fp2) = (fingerprint(k1.public_key()), fingerprint(k2.public_key()));
    let f = start("", Limits::default()).await;
    let t = serve_keys(&f, vec![k1, k2]).await;
    let seen = portcullis::fleet::probe::host_key(&t, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(fingerprint(&seen), fp1);
    assert_ne!(fingerprint(&seen), fp2);
}

/// A listener on 127.0.0.1 serving `keys`, with the fixture's admin key
/// authorized.
async fn serve_keys(f: &Fixture, keys: Vec<russh::keys::PrivateKey>) -> Target {
    let config = portcullis::listener::ssh_config_with_keys(keys, &Limits::default());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let t = Target {
        host: "127.0.0.1".into(),
        port: l.local_addr().unwrap().port(),
    };
    let admins = portcullis::authkeys::AuthorizedKeys::parse(
        &std::fs::read_to_string(f.dir.path().join("admin.pub")).unwrap(),
    )
    .unwrap();
    tokio::spawn(portcullis::listener::serve(
        vec![l],
        config,
        std::sync::Arc::new(NoVolumes),
        admins,
        Limits::default(),
    ));
    t
}

/// A key-type migration with overlap (docs/rotation.md): the config lists
/// an ed25519 and an ECDSA key, the listener serves both, and a client
/// pinned to either connects without a question: portcullis offers its
/// pinned key's algorithm first (it used to negotiate ed25519 and report
/// HOST KEY CHANGED to a client pinned to the ECDSA key), and so does
/// OpenSSH from its known_hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_serves_an_old_and_a_new_key_type() {
    use portcullis::hostkey::{generate_typed, KeyType};
    let f = start("", Limits::default()).await;
    let d = f.dir.path();
    generate_typed(&d.join("ed"), "ed", false, KeyType::Ed25519).unwrap();
    generate_typed(&d.join("ec"), "ec", false, KeyType::Ecdsa).unwrap();
    let conf = format!(
        "host-key = [\"{}\", \"{}\"]\n",
        d.join("ed").display(),
        d.join("ec").display()
    );
    let settings =
        portcullis::config::Settings::parse(&conf, Path::new("/etc/portcullis/portcullisd.toml"))
            .unwrap();
    let keys = settings
        .load_host_keys(&portcullis::sys::Root::default())
        .unwrap();
    let (ed_fp, ec_fp) = (
        fingerprint(keys[0].public_key()),
        fingerprint(keys[1].public_key()),
    );
    let t = serve_keys(&f, keys).await;
    let target = format!("127.0.0.1:{}", t.port);
    let key = f.client_key.display().to_string();
    for name in ["ec", "ed"] {
        // portcullis, pinned to this key only.
        let pins = d.join(format!("pins-{name}"));
        let pins_s = pins.display().to_string();
        let pubkey = d.join(format!("{name}.pub")).display().to_string();
        let o = portcullis(
            &f,
            &[
                "known-hosts",
                "pin",
                &target,
                "--key",
                &pubkey,
                "--known-hosts",
                &pins_s,
            ],
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let o = portcullis(
            &f,
            &[
                "status",
                &target,
                "-i",
                &key,
                "--no-agent",
                "--known-hosts",
                &pins_s,
            ],
        );
        assert_eq!(code(&o), 0, "pinned to {name}: {}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&pins).unwrap().lines().count(), 1);
        // OpenSSH, with a known_hosts holding this key only.
        let kh_line = format!(
            "[127.0.0.1]:{} {}",
            t.port,
            std::fs::read_to_string(d.join(format!("{name}.pub"))).unwrap()
        );
        let khf = d.join(format!("openssh-{name}"));
        std::fs::write(&khf, kh_line).unwrap();
        let o = openssh_status_at(&f, t.port, &khf);
        assert_eq!(code(&o), 0, "OpenSSH pinned to {name}: {}", stderr(&o));
    }
    // Inventory fingerprints carry no key type: the default order shows the
    // ed25519 key, so a list holding only the ECDSA fingerprint is a change.
    let mut opts = f.options();
    opts.target = t.clone();
    opts.host_key = fps(vec![ed_fp.clone()]);
    client::status(&opts).await.unwrap();
    opts.host_key = fps(vec![ec_fp.clone(), ed_fp.clone()]);
    client::status(&opts).await.unwrap();
    opts.host_key = fps(vec![ec_fp.clone()]);
    match client::status(&opts).await {
        Err(ClientError::HostKeyChanged { got, .. }) => assert_eq!(got, ed_fp),
        r => panic!("{r:?}"),
    }
}

struct NoVolumes;

impl portcullis::unlock::Backend for NoVolumes {
    fn name(&self) -> &'static str {
        "none"
    }
    fn status(&self) -> Vec<portcullis::protocol::VolumeInfo> {
        vec![]
    }
    fn try_unlock(
        &self,
        _p: &portcullis::secret::Passphrase,
    ) -> Vec<(
        portcullis::protocol::VolumeInfo,
        portcullis::unlock::Attempt,
    )> {
        vec![]
    }
}

/// `portcullisd keygen --type ecdsa` and `check` on an image tree: two key
/// types are listed with their fingerprints; two ed25519 keys are refused
/// with both files named.
#[test]
fn check_serves_one_key_per_type() {
    let t = tempfile::tempdir().unwrap();
    let etc = t.path().join("etc/portcullis");
    std::fs::create_dir_all(&etc).unwrap();
    let pd = |args: &[&str]| {
        let o = Command::new(listener_bin::portcullisd())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (code(&o), stdout(&o), stderr(&o))
    };
    let path = |n: &str| etc.join(n).display().to_string();
    let mut fps = vec![];
    for (name, ty) in [("ed", "ed25519"), ("ec", "ecdsa"), ("ed2", "ed25519")] {
        let (c, out, err) = pd(&["keygen", "--type", ty, &path(name)]);
        assert_eq!(c, 0, "{err}");
        fps.push(out.trim().to_string());
    }
    assert!(std::fs::read_to_string(path("ec.pub"))
        .unwrap()
        .starts_with("ecdsa-sha2-nistp256 "));
    let admin = portcullis::hostkey::generate(&t.path().join("admin"), "a").unwrap();
    std::fs::write(
        etc.join("authorized_keys"),
        admin.public_key().to_openssh().unwrap(),
    )
    .unwrap();
    let check = |keys: &str| {
        std::fs::write(
            etc.join("portcullisd.toml"),
            format!("host-key = [{keys}]\n"),
        )
        .unwrap();
        pd(&[
            "check",
            "--root",
            t.path().to_str().unwrap(),
            "--config",
            "/etc/portcullis/portcullisd.toml",
        ])
    };
    let (c, out, err) = check(r#""/etc/portcullis/ed", "/etc/portcullis/ec""#);
    assert_eq!(c, 0, "{err}");
    assert!(
        out.contains(&format!(
            "host key {} (ssh-ed25519), {} (ecdsa-sha2-nistp256);",
            fps[0], fps[1]
        )),
        "{out}"
    );
    // What the hooks copy: every host key, one line each.
    let o = Command::new(listener_bin::portcullisd())
        .args([
            "check",
            "--list-files",
            "--root",
            t.path().to_str().unwrap(),
        ])
        .args(["--config", "/etc/portcullis/portcullisd.toml"])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o),
        "host-key /etc/portcullis/ed\nhost-key /etc/portcullis/ec\n\
         authorized-keys /etc/portcullis/authorized_keys\n",
        "{}",
        stderr(&o)
    );
    let (c, _, err) = check(r#""/etc/portcullis/ed", "/etc/portcullis/ec", "/etc/portcullis/ed2""#);
    assert_eq!(c, 1);
    assert!(
        err.contains("host keys /etc/portcullis/ed and /etc/portcullis/ed2 are both ssh-ed25519"),
        "{err}"
    );
    let (c, _, err) = check(r#""/etc/portcullis/ed", "/etc/portcullis/gone""#);
    assert_eq!(c, 1);
    assert!(err.contains("/etc/portcullis/gone"), "{err}");
}
