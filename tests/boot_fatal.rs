//! Configurations and invocations that used to pass `portcullisd check` and
//! then fail at boot or mislead the admin (issue 8, item 6), run against the
//! real binary: both address families on one port, each error printed once,
//! no kernel-log writes from `keygen`/`check`, build errors naming the
//! admin's files, a relative `--config`, and the `--list-files` answer the
//! image hooks copy from (item 5).

#[path = "support/listener_bin.rs"]
mod listener_bin;

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn portcullisd() -> Command {
    let mut c = Command::new(listener_bin::portcullisd());
    c.env_remove("PORTCULLIS_LOG").stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    portcullisd().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGzmd7Q2xTUCfkNPMnhbU2GXHfpjYs/jBdqoNlYzR+1j";

/// A listener config in `dir` (host key, authorized keys, one volume that
/// is never opened) with these listen addresses.
fn config(dir: &Path, listen: &[String]) -> std::path::PathBuf {
    let key = dir.join("host_key");
    if !key.exists() {
        portcullis::hostkey::generate(&key, "test").unwrap();
        std::fs::write(dir.join("authorized_keys"), format!("{KEY}\n")).unwrap();
    }
    let listen: Vec<String> = listen.iter().map(|a| format!("\"{a}\"")).collect();
    let path = dir.join("portcullisd.toml");
    std::fs::write(
        &path,
        format!(
            "listen = [{}]\nhost-key = \"{d}/host_key\"\n\
             authorized-keys = \"{d}/authorized_keys\"\nbackend = \"cryptsetup\"\n\
             cryptsetup = \"/bin/false\"\nvolumes-from-cmdline = false\n\
             [[volume]]\nname = \"never-opened\"\ndevice = \"/dev/null\"\n",
            listen.join(", "),
            d = dir.display()
        ),
    )
    .unwrap();
    path
}

/// Runs the real listener on `cfg` until `answers()` holds (30 s at most),
/// then stops it: whether it answered, and what it wrote on stderr. A
/// listener that exits by itself fails the test with its stderr.
fn serve_until(cfg: &Path, answers: impl Fn() -> bool) -> (bool, String) {
    let mut child = portcullisd()
        .args(["--config", s(cfg)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let answered = loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("listener exited with {status}: {err}");
        }
        if answers() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (answered, text(&out.stderr))
}

fn ipv6_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// `listen = ["0.0.0.0:P", "[::]:P"]`: the listener starts and answers on
/// both families (it died with "Address in use" when `[::]` was dual-stack).
#[test]
fn both_wildcards_on_one_port_start_and_answer() {
    if !ipv6_available() {
        eprintln!("skipped: no IPv6 here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        dir.path(),
        &[format!("0.0.0.0:{port}"), format!("[::]:{port}")],
    );
    let o = run(&["check", "--config", s(&cfg)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (answered, _) = serve_until(&cfg, || {
        let v4 = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        let v6 = std::net::TcpStream::connect(("::1", port)).is_ok();
        v4 && v6
    });
    assert!(
        answered,
        "the listener did not answer on both 127.0.0.1 and ::1"
    );
}

/// An address that cannot be bound at boot (here: its port is taken; on a
/// server, `ipv6.disable=1` under `[::]:22`) must not take the others down:
/// the listener serves what it could bind and says what it could not. It
/// used to exit, leaving the server with no remote unlock at all.
#[test]
fn one_unbindable_address_leaves_the_others_served() {
    let dir = tempfile::tempdir().unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Held for the whole test: the listener cannot have it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let cfg = config(
        dir.path(),
        &[
            format!("127.0.0.1:{taken_port}"),
            format!("127.0.0.1:{free}"),
        ],
    );
    let (answered, err) = serve_until(&cfg, || {
        std::net::TcpStream::connect(("127.0.0.1", free)).is_ok()
    });
    assert!(answered, "no answer on the bindable address: {err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{taken_port}")),
        "the failed address is named: {err}"
    );
    drop(taken);
}

/// Port 0 (any free port) passes the parser (tests use it) but `check`,
/// which the hooks run, refuses it: at boot no client would find it.
#[test]
fn check_refuses_port_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &["0.0.0.0:0".to_string()]);
    let o = run(&["check", "--config", s(&cfg)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("port 0") && err.lines().count() == 1, "{err}");
}

/// What the listener could not bind at boot is refused by `check`.
#[test]
fn check_refuses_listen_addresses_that_cannot_all_be_bound() {
    let dir = tempfile::tempdir().unwrap();
    for (listen, want) in [
        (["0.0.0.0:22", "10.0.0.1:22"], "overlap"),
        (["[::]:22", "[::]:22"], "listed twice"),
    ] {
        let listen: Vec<String> = listen.iter().map(|a| a.to_string()).collect();
        let cfg = config(dir.path(), &listen);
        let o = run(&["check", "--config", s(&cfg)]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{listen:?}: {err}");
        assert!(err.contains(want), "{listen:?}: {err}");
    }
}

/// The error a command ends with appears once on stderr, in the listener
/// (`run`) as in `check` and `keygen` (the listener printed it twice: once
/// logged, once as the final error).
#[test]
fn every_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let taken = dir.path().join("k.pub");
    for args in [
        vec!["--config", s(&missing)],
        vec!["run", "--config", s(&missing)],
        vec!["check", "--config", s(&missing)],
        vec!["keygen", s(&taken)],
        vec!["--bogus"],
    ] {
        let o = run(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}:\n{err}");
        assert!(err.starts_with("portcullisd: error: "), "{args:?}: {err}");
    }
}

/// Reads the kernel log records written from now on.
struct KernelLog(std::fs::File);

impl KernelLog {
    /// `None` where /dev/kmsg cannot be read (not root, a container).
    fn from_now() -> Option<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .ok()?;
        f.seek(SeekFrom::End(0)).ok()?;
        Some(KernelLog(f))
    }

    fn records(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.push(text(&buf[..n])),
                // EPIPE: records were overwritten; carry on with the next.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break,
            }
        }
        out
    }
}

/// `keygen` and `check` run on the admin's machine: nothing of them goes
/// into its kernel log. The listener's own error does (the control that
/// shows this test can see a write).
#[test]
fn keygen_and_check_leave_the_kernel_log_alone() {
    let Some(mut kmsg) = KernelLog::from_now() else {
        eprintln!("skipped: /dev/kmsg is not readable here");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let marker = s(dir.path());
    let cfg = config(dir.path(), &["127.0.0.1:22".into()]);
    let missing = dir.path().join("missing.toml");
    let runs: [&[&str]; 4] = [
        &["keygen", &format!("{marker}/new_key")],
        &["keygen", &format!("{marker}/bad.pub")],
        &["check", "--config", s(&cfg)],
        &["check", "-v", "--config", s(&missing)],
    ];
    for args in runs {
        let o = run(args);
        // Where there is something to say, it names the folder.
        assert!(
            o.status.success() || text(&o.stderr).contains(marker),
            "{args:?} does not name {marker}: the test would miss its log lines"
        );
    }
    let from_tools: Vec<String> = kmsg
        .records()
        .into_iter()
        .filter(|r| r.contains(marker))
        .collect();
    assert!(
        from_tools.is_empty(),
        "keygen/check wrote to the kernel log: {from_tools:?}"
    );

    let o = run(&["--config", s(&missing)]);
    assert_eq!(o.status.code(), Some(1));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while seen.is_empty() && Instant::now() < deadline {
        seen = kmsg
            .records()
            .into_iter()
            .filter(|r| r.contains(marker))
            .collect();
        std::thread::sleep(Duration::from_millis(20));
    }
    if seen.is_empty() {
        eprintln!("skipped: the listener cannot write to /dev/kmsg here either");
        return;
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    // As an error: priority 3 (the kernel adds the user facility, 1 << 3).
    let prio: u32 = seen[0].split(',').next().unwrap().parse().unwrap();
    assert_eq!(prio & 7, 3, "{seen:?}");
}

/// An image tree as a hook leaves it: the admin's paths under `root`.
fn image_tree(host_key_line: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let etc = t.path().join("etc/portcullis");
    std::fs::create_dir_all(&etc).unwrap();
    portcullis::hostkey::generate(&etc.join("custom_key"), "test").unwrap();
    std::fs::write(etc.join("authorized_keys"), format!("{KEY}\n")).unwrap();
    std::fs::write(
        etc.join("portcullisd.toml"),
        format!("{host_key_line}\n[[volume]]\nname = \"root\"\ndevice = \"/dev/vda2\"\n"),
    )
    .unwrap();
    t
}

fn check_image(root: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "check",
        "--root",
        s(root),
        "--config",
        "/etc/portcullis/portcullisd.toml",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// Errors of a check against an image being built name the admin's files
/// (`/etc/portcullis/…`), not the temporary tree that is gone by the time
/// the admin reads the build log.
#[test]
fn build_errors_name_the_admins_files() {
    let t = image_tree("host-key = \"/etc/portcullis/custom_key\"\nmax-trys = 3");
    let root = s(t.path());
    let o = check_image(t.path(), &[]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("portcullisd: error: /etc/portcullis/portcullisd.toml (line 2): "),
        "{err}"
    );
    assert!(!err.contains(root), "{err}");

    let t = image_tree("host-key = \"/etc/portcullis/custom_key\"");
    let root = s(t.path());
    std::fs::remove_file(t.path().join("etc/portcullis/authorized_keys")).unwrap();
    let err = text(&check_image(t.path(), &[]).stderr);
    assert!(
        err.contains("authorized keys /etc/portcullis/authorized_keys does not exist; put")
            && !err.contains(root),
        "{err}"
    );
    std::fs::remove_file(t.path().join("etc/portcullis/custom_key")).unwrap();
    let err = text(&check_image(t.path(), &[]).stderr);
    assert!(
        err.contains("host key /etc/portcullis/custom_key does not exist; create it once with: portcullisd keygen /etc/portcullis/custom_key")
            && !err.contains(root),
        "{err}"
    );
    std::fs::remove_file(t.path().join("etc/portcullis/portcullisd.toml")).unwrap();
    let err = text(&check_image(t.path(), &[]).stderr);
    assert!(
        err.contains("reading config /etc/portcullis/portcullisd.toml") && !err.contains(root),
        "{err}"
    );
}

/// `--config FILE` with a relative FILE reads it from the working
/// directory (it was looked up under `/`).
#[test]
fn a_relative_config_is_read_from_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    config(dir.path(), &["127.0.0.1:22".into()]);
    for args in [
        &["check", "--config", "portcullisd.toml"][..],
        &["check", "-c", "./portcullisd.toml"],
        &["check", "--root", "/", "--config", "portcullisd.toml"],
    ] {
        let o = portcullisd()
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stdout).contains("portcullisd.toml: ok;"));
    }
    // The listener too: it fails on the volume, not on finding the file.
    let o = portcullisd()
        .args(["--config", "nothere.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        text(&o.stderr).contains("reading config nothere.toml"),
        "{}",
        text(&o.stderr)
    );
}

/// What the hooks copy: the files the config names, as TOML reads it (a
/// single-quoted literal string too; the hooks' sed read only "…").
#[test]
fn list_files_names_what_the_image_needs() {
    let t = image_tree("host-key = '/etc/portcullis/custom_key'");
    let o = check_image(t.path(), &["--list-files"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "host-key /etc/portcullis/custom_key\nauthorized-keys /etc/portcullis/authorized_keys\n"
    );
    assert_eq!(text(&o.stderr), "");
    // Still a full check: a broken file fails it.
    std::fs::write(t.path().join("etc/portcullis/authorized_keys"), "").unwrap();
    let o = check_image(t.path(), &["--list-files"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert!(text(&o.stderr).contains("no keys"), "{}", text(&o.stderr));
    // Lines a shell `read` takes apart at the first space.
    let t = image_tree("host-key = \"/etc/portcullis/custom_key\"");
    std::fs::rename(
        t.path().join("etc/portcullis/authorized_keys"),
        t.path().join("etc/portcullis/admin keys"),
    )
    .unwrap();
    let cfg = t.path().join("etc/portcullis/portcullisd.toml");
    let mut c = std::fs::read_to_string(&cfg).unwrap();
    c.insert_str(0, "authorized-keys = \"/etc/portcullis/admin keys\"\n");
    std::fs::write(&cfg, c).unwrap();
    let o = check_image(t.path(), &["--list-files"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let lines: Vec<String> = BufReader::new(&o.stdout[..])
        .lines()
        .map(|l| l.unwrap())
        .collect();
    assert_eq!(lines[1], "authorized-keys /etc/portcullis/admin keys");
}
