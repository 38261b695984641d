//! `portcullis preflight`'s command-line contract, through the real binary:
//! exit codes, the checklist, the fleet table, the JSON keys, the
//! workstation checks (`pin`, `client-key`) and what ssh is asked to do.
//!
//! Two kinds of cases. Logic: a fake `ssh` first on PATH records its
//! arguments and answers with fixture reports written here from the JSON
//! contract (src/preflight/report.rs), or with OpenSSH's own error texts.
//! Loopback: the stock OpenSSH client against a real `sshd` on 127.0.0.1
//! (run by the test with its own config and keys), whose
//! `portcullis-preflight` is a script printing a fixture report; it proves
//! the host-key checking (known_hosts, and the inventory's
//! `system-fingerprint`) and the remote command's quoting. The real
//! server check against a real image is the VM test's.

use portcullis::authkeys::fingerprint;
use russh::keys::PublicKey;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis"))
}

struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn json(&self) -> Vec<serde_json::Value> {
        self.out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A new ed25519 key pair at `path` (and `path.pub`); returns the public
/// key's line and fingerprint.
fn keygen(path: &Path) -> (String, String) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ann@desk", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success());
    let mut pubfile = path.as_os_str().to_owned();
    pubfile.push(".pub");
    let line = std::fs::read_to_string(PathBuf::from(pubfile)).unwrap();
    let line = line.trim().to_string();
    let fp = fingerprint(&PublicKey::from_openssh(&line).unwrap());
    (line, fp)
}

/// A report as `portcullis-preflight --json` prints it, written by hand
/// from the contract so a renamed field breaks this test.
fn report_json(host_fp: &str, auth_fp: &str, nic: &str) -> String {
    let (verdict, nic_check) = match nic {
        "fail" => (
            "fail",
            r#"{"id":"nic-driver","status":"fail","summary":"virtio_net (the NIC of the default route) is not in the image","fix":"add virtio_net to /etc/initramfs-tools/modules and run update-initramfs -u"}"#,
        ),
        _ => (
            "pass",
            r#"{"id":"nic-driver","status":"pass","summary":"virtio_net is in the image"}"#,
        ),
    };
    format!(
        r#"{{"format":1,"verdict":"{verdict}","images":[{{"image":"/boot/initrd.img-6.1.0-28-amd64","kernel":"6.1.0-28-amd64","host-keys":["{host_fp}"],"authorized-keys":[{{"fingerprint":"{auth_fp}","algorithm":"ssh-ed25519","comment":"ann@desk"}}],"checks":[{{"id":"listener","status":"pass","summary":"portcullisd 0.1.0"}},{nic_check}]}}]}}"#
    )
}

/// A HOME with a client key (~/.ssh/id_ed25519), an image host key, a
/// fake ssh and an inventory.
struct World {
    dir: tempfile::TempDir,
    fakebin: PathBuf,
    answers: PathBuf,
    client_fp: String,
    host_line: String,
    host_fp: String,
    inv: PathBuf,
}

const FAKE_SSH: &str = r#"#!/bin/sh
# A fake ssh: records its arguments, answers from files named after the host
# (the argument before the remote command).
for a in "$@"; do host=$cmd; cmd=$a; done
printf '%s\n' "$@" > "$FAKE_SSH_DIR/$host.args"
[ -f "$FAKE_SSH_DIR/$host.err" ] && cat "$FAKE_SSH_DIR/$host.err" >&2
[ -f "$FAKE_SSH_DIR/$host.out" ] && cat "$FAKE_SSH_DIR/$host.out"
exit "$(cat "$FAKE_SSH_DIR/$host.code" 2>/dev/null || echo 255)"
"#;

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join(".ssh");
        std::fs::create_dir(&ssh).unwrap();
        let (_, client_fp) = keygen(&ssh.join("id_ed25519"));
        let (host_line, host_fp) = keygen(&dir.path().join("host_key"));
        let fakebin = dir.path().join("fakebin");
        std::fs::create_dir(&fakebin).unwrap();
        write_exec(&fakebin.join("ssh"), FAKE_SSH);
        let answers = dir.path().join("answers");
        std::fs::create_dir(&answers).unwrap();
        let inv = dir.path().join("inventory.toml");
        std::fs::write(
            &inv,
            format!(
                "[group.web]\nhosts = [\"web1\", \"web2\", \"web3\"]\n\
                 [host.web1]\naddress = \"192.0.2.11\"\nport = 2222\nfingerprint = \"{host_fp}\"\n\
                 [host.web2]\naddress = \"192.0.2.12\"\nsystem-address = \"198.51.100.12\"\nsystem-port = 2200\n\
                 [host.web3]\naddress = \"192.0.2.13\"\n"
            ),
        )
        .unwrap();
        World {
            dir,
            fakebin,
            answers,
            client_fp,
            host_line,
            host_fp,
            inv,
        }
    }

    /// What the fake ssh answers for `host`.
    fn answer(&self, host: &str, code: i32, out: &str, err: &str) {
        std::fs::write(self.answers.join(format!("{host}.code")), code.to_string()).unwrap();
        std::fs::write(self.answers.join(format!("{host}.out")), out).unwrap();
        std::fs::write(self.answers.join(format!("{host}.err")), err).unwrap();
    }

    fn args_of(&self, host: &str) -> Vec<String> {
        std::fs::read_to_string(self.answers.join(format!("{host}.args")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Pins the image's host key for `host_id` in portcullis's known_hosts.
    fn pin(&self, host_id: &str, line: &str) {
        let d = self.dir.path().join(".config/portcullis");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("known_hosts"), format!("{host_id} {line}\n")).unwrap();
    }

    fn run(&self, args: &[&str]) -> Run {
        let path = format!(
            "{}:{}",
            self.fakebin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let o = Command::new(bin())
            .arg("preflight")
            .args(args)
            .env("HOME", self.dir.path())
            .env("PATH", path)
            .env("FAKE_SSH_DIR", &self.answers)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("XDG_CONFIG_HOME")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

fn line_with<'a>(text: &'a str, word: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().any(|w| w == word))
        .unwrap_or_else(|| panic!("no line with {word:?} in:\n{text}"))
}

#[test]
fn one_host_gives_its_checklist_and_the_verdicts_exit_code() {
    let w = World::new();
    let ok = report_json(&w.host_fp, &w.client_fp, "pass");
    // Pinned in portcullis's known_hosts, key in the image: pass, 0.
    w.pin("192.0.2.1", &w.host_line);
    w.answer("192.0.2.1", 0, &ok, "");
    let r = w.run(&["192.0.2.1"]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(line_with(&r.out, "pin").contains("ok"), "{}", r.out);
    assert!(line_with(&r.out, "client-key").contains("ok"), "{}", r.out);
    assert!(
        r.out
            .trim_end()
            .ends_with("verdict: ok: remote unlock should work after the next reboot"),
        "{}",
        r.out
    );
    // ssh: strict host-key checking, batch mode, the check as one word.
    let a = w.args_of("192.0.2.1");
    let joined = a.join(" ");
    assert!(joined.contains("-o BatchMode=yes"), "{joined}");
    assert!(joined.contains("-o StrictHostKeyChecking=yes"), "{joined}");
    assert!(joined.contains("-p 22 -- 192.0.2.1 sh -c"), "{joined}");
    assert!(
        !joined.contains(" -l "),
        "no login given: ssh's own: {joined}"
    );
    assert!(
        a.last().unwrap().contains("portcullis-preflight"),
        "{joined}"
    );

    // Nothing pinned for the listener: a warning that names the fix, 15.
    std::fs::remove_file(w.dir.path().join(".config/portcullis/known_hosts")).unwrap();
    let r = w.run(&["ops@192.0.2.1"]);
    assert_eq!(r.code, 15, "{}{}", r.out, r.err);
    assert!(line_with(&r.out, "pin").contains("WARN"), "{}", r.out);
    assert!(
        r.out.contains(&format!("--fingerprint {}", w.host_fp)),
        "{}",
        r.out
    );
    assert!(
        r.out
            .contains("verdict: WARN: nothing fails, but 1 check(s) warn"),
        "{}",
        r.out
    );
    assert!(w.args_of("192.0.2.1").join(" ").contains("-l ops --"));

    // A different key pinned: fail, 14, with the re-pin fix.
    let other = w.dir.path().join("other");
    let (other_line, _) = keygen(&other);
    w.pin("192.0.2.1", &other_line);
    let r = w.run(&["192.0.2.1", "-l", "admin"]);
    assert_eq!(r.code, 14, "{}{}", r.out, r.err);
    assert!(line_with(&r.out, "pin").contains("FAIL"), "{}", r.out);
    assert!(r.out.contains("HOST KEY CHANGED"), "{}", r.out);
    assert!(r.out.contains("known-hosts pin 192.0.2.1"), "{}", r.out);
    assert!(
        r.out.contains("verdict: FAIL: remote unlock will fail"),
        "{}",
        r.out
    );
    assert!(w.args_of("192.0.2.1").join(" ").contains("-l admin --"));
}

#[test]
fn the_client_key_and_the_servers_own_failures_decide_too() {
    let w = World::new();
    w.pin("192.0.2.1", &w.host_line);
    // The image lists someone else's key.
    let (_, stranger) = keygen(&w.dir.path().join("stranger"));
    w.answer(
        "192.0.2.1",
        0,
        &report_json(&w.host_fp, &stranger, "pass"),
        "",
    );
    let r = w.run(&["192.0.2.1"]);
    assert_eq!(r.code, 14, "{}{}", r.out, r.err);
    let l = line_with(&r.out, "client-key");
    assert!(l.contains("FAIL") && l.contains(&w.client_fp), "{l}");
    assert!(r.out.contains("fix: add your public key"), "{}", r.out);
    // -i with that key: pass.
    let r = w.run(&[
        "192.0.2.1",
        "-i",
        &w.dir.path().join("stranger").display().to_string(),
    ]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    // The server's own failure, with its fix, exit 14 (what it exited).
    w.answer(
        "192.0.2.1",
        14,
        &report_json(&w.host_fp, &w.client_fp, "fail"),
        "",
    );
    let r = w.run(&["192.0.2.1"]);
    assert_eq!(r.code, 14, "{}{}", r.out, r.err);
    assert!(line_with(&r.out, "nic-driver").contains("FAIL"));
    assert!(r
        .out
        .contains("fix: add virtio_net to /etc/initramfs-tools/modules"));
    // --image is handed on, quoted; a relative one is refused before ssh.
    w.answer(
        "192.0.2.1",
        0,
        &report_json(&w.host_fp, &w.client_fp, "pass"),
        "",
    );
    let r = w.run(&["192.0.2.1", "--image", "/boot/initrd.img-6.1 old"]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let cmd = w.args_of("192.0.2.1").last().cloned().unwrap();
    assert!(
        cmd.contains("--image") && cmd.contains("initrd.img-6.1 old"),
        "{cmd}"
    );
    // --ssh-config goes to ssh too; -o options come after portcullis's.
    let cfg = w.dir.path().join("my_ssh_config");
    std::fs::write(&cfg, "Host *\n  User ops\n").unwrap();
    let cfg_s = cfg.display().to_string();
    let r = w.run(&[
        "192.0.2.1",
        "--ssh-config",
        &cfg_s,
        "-o",
        "ProxyJump=bastion",
    ]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let a = w.args_of("192.0.2.1").join(" ");
    assert!(
        a.contains(&format!("-o ProxyJump=bastion -F {cfg_s} -p 22")),
        "{a}"
    );
    std::fs::remove_file(w.answers.join("192.0.2.1.args")).unwrap();
    let r = w.run(&["192.0.2.1", "--image", "boot/x"]);
    assert_eq!(r.code, 1);
    assert!(
        r.err.starts_with("error: ") && r.err.contains("absolute"),
        "{}",
        r.err
    );
    assert!(
        w.args_of("192.0.2.1").is_empty(),
        "ssh ran for a usage error"
    );
}

#[test]
fn ssh_failures_are_one_line_and_the_single_host_codes() {
    let w = World::new();
    let cases: &[(i32, &str, i32, &str)] = &[
        (
            255,
            "No ED25519 host key is known for 192.0.2.1 and you have requested strict checking.\r\nHost key verification failed.\r\n",
            3,
            "not in ~/.ssh/known_hosts",
        ),
        (
            255,
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\nHost key verification failed.\r\n",
            4,
            "not the one known for it",
        ),
        (255, "root@192.0.2.1: Permission denied (publickey).\r\n", 5, "refused the login"),
        (
            255,
            "ssh: connect to host 192.0.2.1 port 22: Connection refused\r\n",
            6,
            "Connection refused",
        ),
        (127, "portcullis-preflight: not found\n", 1, "install (or upgrade) portcullis-initramfs on 192.0.2.1"),
        (1, "sudo: a password is required\n", 1, "NOPASSWD"),
        (1, "error: /boot/initrd.img: \x1b[31mnot a cpio archive\n", 1, "not a cpio archive"),
    ];
    for (code, err, want, says) in cases {
        w.answer("192.0.2.1", *code, "", err);
        let r = w.run(&["192.0.2.1"]);
        assert_eq!(r.code, *want, "{err}: {}", r.err);
        assert_eq!(r.err.lines().count(), 1, "{}", r.err);
        assert!(r.err.starts_with("error: 192.0.2.1: "), "{}", r.err);
        assert!(r.err.contains(says), "{}", r.err);
        assert!(
            !r.err.contains('\x1b'),
            "escape passed through: {:?}",
            r.err
        );
        assert!(r.out.is_empty(), "{}", r.out);
        let r = w.run(&["192.0.2.1", "--json"]);
        let rec = r.json();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0]["exit-code"], *want);
        assert!(rec[0]["detail"].as_str().unwrap().contains(says));
    }
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn several_hosts_give_a_table_and_the_fleet_exit_code() {
    let w = World::new();
    let inv = w.inv.display().to_string();
    // web1 (pinned in the inventory): pass; web2: server failure; web3 down.
    w.answer(
        "192.0.2.11",
        0,
        &report_json(&w.host_fp, &w.client_fp, "pass"),
        "",
    );
    w.answer(
        "198.51.100.12",
        14,
        &report_json(&w.host_fp, &w.client_fp, "fail"),
        "",
    );
    w.answer(
        "192.0.2.13",
        255,
        "",
        "ssh: connect to host 192.0.2.13 port 22: No route to host\r\n",
    );
    let r = w.run(&["web", "--inventory", &inv]);
    assert_eq!(r.code, 14, "{}{}", r.out, r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert!(lines[0].starts_with("HOST"), "{}", r.out);
    assert!(lines[1].starts_with("web1  pass"), "{}", r.out);
    assert!(
        lines[2].starts_with("web2  fail") && lines[2].contains("nic-driver, pin"),
        "{}",
        r.out
    );
    assert!(lines[3].starts_with("web3  unreachable") && lines[3].contains("No route to host"));
    assert_eq!(lines[4], "3 hosts: 1 pass, 1 fail, 1 unreachable");
    // The system's address and port from the inventory, not the listener's.
    let a = w.args_of("198.51.100.12").join(" ");
    assert!(a.contains("-p 2200 -- 198.51.100.12 "), "{a}");
    assert!(w
        .args_of("192.0.2.11")
        .join(" ")
        .contains("-p 22 -- 192.0.2.11 "));
    // JSON: one record per host, the same keys as for one host.
    let r = w.run(&["web", "--inventory", &inv, "--json"]);
    assert_eq!(r.code, 14);
    let recs = r.json();
    assert_eq!(recs.len(), 3);
    let with_report: BTreeSet<String> = ["host", "target", "outcome", "exit-code", "report"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(keys(&recs[0]), with_report);
    assert_eq!(recs[0]["outcome"], "pass");
    assert_eq!(recs[1]["report"]["verdict"], "fail");
    let checks = recs[1]["report"]["images"][0]["checks"].as_array().unwrap();
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["listener", "nic-driver", "pin", "client-key"]);
    assert_eq!(recs[2]["outcome"], "unreachable");
    assert_eq!(recs[2]["exit-code"], 6);
    let one = w.run(&["web1", "--inventory", &inv, "--json"]);
    assert_eq!(one.code, 0, "{}", one.err);
    assert_eq!(keys(&one.json()[0]), with_report);
    // Unreachable but nothing failing: 11; warnings only: 15.
    w.answer(
        "198.51.100.12",
        0,
        &report_json(&w.host_fp, &w.client_fp, "pass"),
        "",
    );
    let r = w.run(&["web", "--inventory", &inv]);
    assert_eq!(r.code, 11, "{}", r.out);
    let r = w.run(&["web1", "web2", "--inventory", &inv]);
    assert_eq!(r.code, 15, "{}", r.out);
    assert!(r.out.contains("web2  warn"), "{}", r.out);
    // A typo of a group: a usage error before ssh runs.
    let r = w.run(&["wbe", "--inventory", &inv]);
    assert_eq!(r.code, 1);
    assert!(r.err.contains("not a group or host"), "{}", r.err);
}

/// The stock OpenSSH client against a real sshd on 127.0.0.1, started by
/// the test (root only: sshd must switch to the login user and needs
/// /run/sshd; skipped with a note otherwise).
#[test]
fn the_stock_ssh_client_against_a_real_sshd() {
    let Some(sshd) = Sshd::start() else {
        return;
    };
    let w = World::new();
    w.pin("127.0.0.1", &w.host_line);
    std::fs::write(
        sshd.dir.join("report.json"),
        report_json(&w.host_fp, &w.client_fp, "fail"),
    )
    .unwrap();
    // The real ssh, kept from this machine's own config and keys by the
    // ssh_config portcullis is given (--ssh-config goes to ssh as -F).
    let kh = sshd.dir.join("client_known_hosts");
    let cfg = sshd.dir.join("client_config");
    std::fs::write(
        &cfg,
        format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  \
             GlobalKnownHostsFile /dev/null\n",
            sshd.client_key.display(),
            kh.display()
        ),
    )
    .unwrap();
    let cfg_s = cfg.display().to_string();
    let port = sshd.port.to_string();
    let inv = w.dir.path().join("loop.toml");
    let run = |args: &[&str]| {
        let o = Command::new(bin())
            .arg("preflight")
            .args(args)
            .args(["--ssh-config", &cfg_s])
            .env("HOME", w.dir.path())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };
    // The system key unknown to ssh: refused, nothing run (exit 3).
    std::fs::write(&kh, "").unwrap();
    std::fs::write(
        &inv,
        format!("[host.lo]\naddress = \"127.0.0.1\"\nsystem-port = {port}\n"),
    )
    .unwrap();
    let inv_s = inv.display().to_string();
    let r = run(&["root@lo", "--inventory", &inv_s]);
    assert_eq!(r.code, 3, "{}{}", r.out, r.err);
    assert!(!sshd.ran(), "the check ran on an unverified host");
    // A different key on file: HOST KEY CHANGED (exit 4).
    std::fs::write(&kh, format!("[127.0.0.1]:{port} {}\n", w.host_line)).unwrap();
    let r = run(&["root@lo", "--inventory", &inv_s]);
    assert_eq!(r.code, 4, "{}{}", r.out, r.err);
    assert!(!sshd.ran());
    // The right key on file: the report comes back through the real ssh,
    // with the workstation checks (the image's key is pinned: pin ok).
    std::fs::write(&kh, format!("[127.0.0.1]:{port} {}\n", sshd.host_line)).unwrap();
    let r = run(&[
        "root@lo",
        "--inventory",
        &inv_s,
        "--image",
        "/boot/it's here",
    ]);
    assert_eq!(r.code, 14, "{}{}", r.out, r.err);
    assert!(
        line_with(&r.out, "nic-driver").contains("FAIL"),
        "{}",
        r.out
    );
    assert!(line_with(&r.out, "pin").contains("ok"), "{}", r.out);
    assert_eq!(sshd.args(), "--json|--image|/boot/it's here|");
    // The inventory pins the system key: ssh needs nothing on file, and
    // a wrong pin stops before ssh logs in.
    let (_, sys_fp) = {
        let fp = fingerprint(&PublicKey::from_openssh(&sshd.host_line).unwrap());
        ((), fp)
    };
    std::fs::write(
        &inv,
        format!(
            "[host.lo]\naddress = \"127.0.0.1\"\nsystem-port = {port}\nsystem-fingerprint = \"{sys_fp}\"\n"
        ),
    )
    .unwrap();
    std::fs::remove_file(sshd.dir.join("ran")).unwrap();
    // Nothing on file for ssh: only the pinned key lets it in.
    std::fs::write(&kh, "").unwrap();
    let r = run(&["root@lo", "--inventory", &inv_s]);
    assert_eq!(r.code, 14, "{}{}", r.out, r.err);
    assert!(sshd.ran());
    std::fs::remove_file(sshd.dir.join("ran")).unwrap();
    std::fs::write(
        &inv,
        format!(
            "[host.lo]\naddress = \"127.0.0.1\"\nsystem-port = {port}\nsystem-fingerprint = \"{}\"\n",
            w.host_fp
        ),
    )
    .unwrap();
    let r = run(&["root@lo", "--inventory", &inv_s]);
    assert_eq!(r.code, 4, "{}{}", r.out, r.err);
    assert!(r.err.contains("system-fingerprint"), "{}", r.err);
    assert!(!sshd.ran());

    // The real portcullis-preflight behind the real sshd, on a staging
    // tree: the JSON contract between the two binaries, end to end.
    let stage = sshd.dir.join("stage");
    let etc = stage.join("etc/portcullis");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(stage.join("usr/sbin")).unwrap();
    write_exec(
        &stage.join("usr/sbin/portcullisd"),
        &format!("\x7fELF portcullisd {}\n", env!("CARGO_PKG_VERSION")),
    );
    std::fs::write(etc.join("portcullisd.toml"), "listen = [\"0.0.0.0:22\"]\n").unwrap();
    let (image_key, image_fp) = keygen(&etc.join("host_key"));
    let mine = std::fs::read_to_string(w.dir.path().join(".ssh/id_ed25519.pub")).unwrap();
    std::fs::write(etc.join("authorized_keys"), mine).unwrap();
    let machine = sshd.dir.join("machine");
    std::fs::create_dir_all(machine.join("proc")).unwrap();
    std::fs::write(machine.join("proc/meminfo"), "MemTotal: 2048000 kB\n").unwrap();
    std::fs::write(machine.join("proc/cmdline"), "ro ip=dhcp\n").unwrap();
    write_exec(
        &sshd.dir.join("bin/portcullis-preflight"),
        &format!(
            "#!/bin/sh\nexec {} --dir {} --root {} \"$@\"\n",
            env!("CARGO_BIN_EXE_portcullis-preflight"),
            stage.display(),
            machine.display()
        ),
    );
    w.pin("127.0.0.1", &image_key);
    std::fs::write(
        &inv,
        format!(
            "[host.lo]\naddress = \"127.0.0.1\"\nsystem-port = {port}\nsystem-fingerprint = \"{sys_fp}\"\n"
        ),
    )
    .unwrap();
    let r = run(&["root@lo", "--inventory", &inv_s, "--json"]);
    let rec = r.json();
    assert_eq!(rec.len(), 1, "{}{}", r.out, r.err);
    let report = &rec[0]["report"];
    assert_eq!(report["format"], 1, "{}", r.out);
    let img = &report["images"][0];
    assert_eq!(img["host-keys"][0], image_fp.as_str(), "{}", r.out);
    assert_eq!(
        img["authorized-keys"][0]["fingerprint"],
        w.client_fp.as_str()
    );
    let status = |id: &str| {
        img["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["status"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {id} check in {}", r.out))
    };
    assert_eq!(status("listener"), "pass", "{}", r.out);
    assert_eq!(status("pin"), "pass", "{}", r.out);
    assert_eq!(status("client-key"), "pass", "{}", r.out);
    // The exit code is the verdict's, whatever the fixture machine lacks.
    let want = match report["verdict"].as_str().unwrap() {
        "pass" => 0,
        "warn" => 15,
        _ => 14,
    };
    assert_eq!(r.code, want, "{}", r.out);
    assert_eq!(rec[0]["exit-code"], want);
}

/// A private sshd on 127.0.0.1 whose only key is the test's, and whose
/// `portcullis-preflight` (first on the session's PATH) records its
/// arguments and prints `report.json`.
struct Sshd {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    child: std::process::Child,
    port: u16,
    client_key: PathBuf,
    host_line: String,
}

impl Sshd {
    fn start() -> Option<Sshd> {
        let root = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&root.stdout).trim() != "0"
            || !Path::new("/usr/sbin/sshd").exists()
        {
            eprintln!("not root or no /usr/sbin/sshd (openssh-server): loopback case skipped");
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (host_line, _) = keygen(&dir.join("ssh_host_ed25519_key"));
        let client_key = dir.join("client");
        let (client_line, _) = keygen(&client_key);
        std::fs::write(dir.join("authorized_keys"), format!("{client_line}\n")).unwrap();
        let bin = dir.join("bin");
        std::fs::create_dir(&bin).unwrap();
        write_exec(
            &bin.join("portcullis-preflight"),
            &format!(
                "#!/bin/sh\nprintf '%s|' \"$@\" > {d}/ran\ncat {d}/report.json\nexit 14\n",
                d = dir.display()
            ),
        );
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/ssh_host_ed25519_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nPidFile none\nSetEnv PATH={d}/bin:/usr/bin:/bin\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let sshd = Sshd {
            dir,
            _tmp: tmp,
            child,
            port,
            client_key,
            host_line,
        };
        // Wait until it listens (dropping it on a panic stops it).
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(sshd);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("sshd did not listen on 127.0.0.1:{port}");
    }

    fn ran(&self) -> bool {
        self.dir.join("ran").exists()
    }

    fn args(&self) -> String {
        std::fs::read_to_string(self.dir.join("ran")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
