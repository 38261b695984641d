//! Fleet runs against many in-process listeners (fake backend), through the
//! real `portcullis` binary and through the library: mixed outcomes, the
//! single-host path kept as it was, ssh_config aliases, inventory errors,
//! and `watch` (approval, backoff, giving up until a reboot).

#[path = "support/fleet_sim.rs"]
mod sim;

use portcullis::client::{HostKeyPolicy, Identity, Options, Target};
use portcullis::fleet::probe::SystemPins;
use portcullis::fleet::run::{self, HostOutcome, Plan};
use portcullis::fleet::secrets::Source;
use portcullis::fleet::watch;
use portcullis::secret::Passphrase;
use sim::{Spec, ROLE_OTHER};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RIGHT: &[u8] = b"correct horse battery staple";

/// The CLI with a private HOME (no agent, no user config leaking in).
fn portcullis(home: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    c.args(args)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut i = child.stdin.take().unwrap();
        let _ = i.write_all(stdin);
    }
    child.wait_with_output().unwrap()
}

fn records(out: &Output) -> BTreeMap<String, serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            (v["host"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

#[test]
fn mixed_inventory_gives_a_correct_outcome_per_host() {
    let dir = tempfile::tempdir().unwrap();
    let ok = Spec {
        boot_delay: Duration::from_millis(300),
        ..Spec::new(0, RIGHT)
    };
    let wrong = Spec::new(1, b"another passphrase");
    let changed_key = Spec::new(3, RIGHT);
    let slow = Spec {
        start_delay: Duration::from_secs(2),
        boot_delay: Duration::from_secs(1),
        ..Spec::new(4, RIGHT)
    };
    let sys_changed = Spec {
        system_role: ROLE_OTHER,
        ..Spec::new(5, RIGHT)
    };
    let shard = sim::start(vec![ok, wrong, changed_key, slow, sys_changed]);
    let mut hosts = shard.hosts.clone();
    // h0002: nothing ever listens there. The port stays bound (not
    // listening: connections are refused) for the whole test, so no other
    // test running in parallel can be handed it and answer there.
    let gone = tokio::net::TcpSocket::new_v4().unwrap();
    gone.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let gone_port = gone.local_addr().unwrap().port();
    hosts.insert(
        2,
        sim::Info {
            n: 2,
            port: gone_port,
            system_port: gone_port,
            ..hosts[0].clone()
        },
    );
    // h0003 is pinned to a key it does not have.
    hosts[3].fingerprint = portcullis::authkeys::fingerprint(sim::key(ROLE_OTHER, 3).public_key());
    let inv = sim::write_inventory(dir.path(), &hosts, RIGHT);
    let started = Instant::now();
    let out = portcullis(
        dir.path(),
        &[
            "unlock",
            "--inventory",
            inv.to_str().unwrap(),
            "sim",
            "--json",
            "--no-agent",
            "--wait",
            "10s",
            "--timeout",
            "8s",
            "--up-timeout",
            "20s",
            "--parallel",
            "3",
        ],
        b"",
    );
    let rec = records(&out);
    let got: BTreeMap<&str, &str> = rec
        .iter()
        .map(|(h, v)| (h.as_str(), v["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        BTreeMap::from([
            ("h0000", "up"),
            ("h0001", "wrong-passphrase"),
            ("h0002", "unreachable"),
            ("h0003", "host-key-changed"),
            ("h0004", "up"),
            ("h0005", "system-key-changed"),
        ]),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(11));
    assert_eq!(rec["h0000"]["exit-code"], 0);
    assert_eq!(rec["h0001"]["exit-code"], 2);
    assert_eq!(rec["h0003"]["exit-code"], 4);
    assert!(rec["h0000"]["time-to-up"].as_f64().unwrap() >= 0.3);
    assert!(rec["h0004"]["unlocked-after"].as_f64().unwrap() >= 2.0);
    assert_eq!(rec["h0001"]["unlock"]["volumes"][0]["tries-left"], 4);
    // One failing host never held up the others: well under the sum of waits.
    assert!(started.elapsed() < Duration::from_secs(30));
    // The wrong host got exactly one try; the changed-key host none.
    let h = &shard.hosts;
    assert_eq!(h[1].attempts.load(Ordering::SeqCst), 1);
    assert_eq!(h[2].attempts.load(Ordering::SeqCst), 0);
    let all = [&out.stdout[..], &out.stderr[..]].concat();
    assert!(!all.windows(RIGHT.len()).any(|w| w == RIGHT));
}

#[test]
fn text_mode_prints_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let shard = sim::start(vec![Spec::new(10, RIGHT), Spec::new(11, b"nope")]);
    let inv = sim::write_inventory(dir.path(), &shard.hosts, RIGHT);
    let out = portcullis(
        dir.path(),
        &[
            "unlock",
            "--inventory",
            inv.to_str().unwrap(),
            "h0010",
            "h0011",
            "--no-agent",
            "--no-wait-up",
        ],
        b"",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("HOST   OUTCOME"), "{text}");
    assert!(lines[1].starts_with("h0010  unlocked"), "{text}");
    assert!(lines[2].starts_with("h0011  wrong-passphrase"), "{text}");
    assert_eq!(lines[3], "2 hosts: 1 unlocked, 1 wrong-passphrase");
    assert_eq!(out.status.code(), Some(11));
}

#[test]
fn one_plain_target_keeps_the_single_host_behaviour() {
    let dir = tempfile::tempdir().unwrap();
    let shard = sim::start(vec![Spec::new(20, RIGHT)]);
    let h = &shard.hosts[0];
    // A default inventory exists, and must not change anything.
    let inv = sim::write_inventory(dir.path(), &shard.hosts, b"unused");
    let cfg = dir.path().join(".config/portcullis");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::copy(&inv, cfg.join("inventory.toml")).unwrap();
    let key = dir.path().join("client_key");
    let target = format!("127.0.0.1:{}", h.port);
    let target_id = format!("[127.0.0.1]:{}", h.port);
    let base = [
        "unlock",
        target.as_str(),
        "--fingerprint",
        h.fingerprint.as_str(),
        "--no-agent",
        "-i",
        key.to_str().unwrap(),
        "--passphrase-stdin",
    ];
    let out = portcullis(dir.path(), &base, b"wrong\n");
    assert_eq!(out.status.code(), Some(2));
    // --fingerprint pins the key on a match (issue 10), then the reply.
    let pinned = format!("pinned {} for {target_id} in ", h.fingerprint);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&pinned), "{err}");
    assert!(
        err.ends_with(&format!("\n{target}: wrong passphrase (4 tries left)\n")),
        "{err}"
    );
    let out = portcullis(dir.path(), &base, &[RIGHT, b"\n"].concat());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{target}: unlocked: root; boot continues\n")
    );
}

#[test]
fn ssh_config_aliases_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let shard = sim::start(vec![Spec::new(30, RIGHT), Spec::new(31, RIGHT)]);
    let key = dir.path().join("client_key");
    sim::write_client_key(&key);
    std::fs::create_dir_all(dir.path().join(".ssh")).unwrap();
    let mut cfg = String::new();
    for h in &shard.hosts {
        cfg.push_str(&format!(
            "Host sim{}-unlock\n  HostName 127.0.0.1\n  Port {}\n",
            h.n, h.port
        ));
    }
    cfg.push_str(&format!("Host *\n  IdentityFile {}\n", key.display()));
    std::fs::write(dir.path().join(".ssh/config"), cfg).unwrap();
    let kh = dir.path().join("pins");
    // Unpinned keys are refused in a fleet run (no questions asked, since
    // many hosts would ask at once), and nothing is sent.
    let out = portcullis(
        dir.path(),
        &[
            "unlock",
            "sim30-unlock",
            "sim31-unlock",
            "--no-agent",
            "--known-hosts",
            kh.to_str().unwrap(),
            "--passphrase-stdin",
            "--json",
        ],
        RIGHT,
    );
    let rec = records(&out);
    assert_eq!(
        rec["sim30-unlock"]["outcome"], "host-key-unknown",
        "{rec:?}"
    );
    assert_eq!(rec["sim31-unlock"]["exit-code"], 3);
    assert!(rec["sim30-unlock"]["detail"]
        .as_str()
        .unwrap()
        .contains("add fingerprint = \"SHA256:"));
    assert_eq!(out.status.code(), Some(11));
    assert!(!kh.exists());
    assert_eq!(shard.hosts[0].attempts.load(Ordering::SeqCst), 0);
    let out = portcullis(
        dir.path(),
        &[
            "unlock",
            "sim30-unlock",
            "sim31-unlock",
            "--no-agent",
            "--known-hosts",
            kh.to_str().unwrap(),
            "--accept-new",
            "--passphrase-stdin",
            "--json",
        ],
        RIGHT,
    );
    let rec = records(&out);
    assert_eq!(
        rec["sim30-unlock"]["outcome"],
        "unlocked",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rec["sim31-unlock"]["outcome"], "unlocked");
    // Not waited for: the system key is pinned nowhere.
    assert!(rec["sim30-unlock"]["detail"]
        .as_str()
        .unwrap()
        .contains("not waiting for the system"));
    assert_eq!(out.status.code(), Some(0));
    // --accept-new pinned both initramfs keys in portcullis's file.
    let pins = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(pins.lines().count(), 2, "{pins}");
    // An unknown name is refused before anything is sent.
    let out = portcullis(
        dir.path(),
        &[
            "unlock",
            "sim30-unlock",
            "typo-unlock",
            "--passphrase-stdin",
        ],
        RIGHT,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"typo-unlock\" is not a group or host") && err.contains(".ssh/config"),
        "{err}"
    );
}

#[test]
fn bad_inventory_is_refused_with_file_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv.toml");
    std::fs::write(
        &inv,
        "[host.web1]\naddress = \"192.0.2.1\"\nfingerprint = \"SHA256:nope\"\n",
    )
    .unwrap();
    let out = portcullis(
        dir.path(),
        &["unlock", "--inventory", inv.to_str().unwrap(), "all"],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: {}: host.web1.fingerprint = \"SHA256:nope\": expected SHA256:… (43 base64 \
             characters) as `ssh-keygen -lf KEY.pub` prints it\n",
            inv.display()
        )
    );
    // watch refuses prompt sources and unpinned hosts up front.
    std::fs::write(&inv, "[host.web1]\naddress = \"192.0.2.1\"\n").unwrap();
    let out = portcullis(
        dir.path(),
        &["watch", "--inventory", inv.to_str().unwrap()],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("host.web1: watch needs the initramfs key pinned"),
        "{err}"
    );
}

fn plan(h: &sim::Info, key: &Path, pass: &Arc<Passphrase>) -> Plan {
    Plan {
        name: format!("h{:04}", h.n),
        opts: options(h, key),
        system: Some((
            Target {
                host: "127.0.0.1".into(),
                port: h.system_port,
            },
            SystemPins {
                fingerprints: vec![h.system_fingerprint.clone()],
                from: "test".into(),
            },
        )),
        pass: pass.clone(),
    }
}

fn options(h: &sim::Info, key: &Path) -> Options {
    Options {
        target: Target {
            host: "127.0.0.1".into(),
            port: h.port,
        },
        user: "root".into(),
        host_key: HostKeyPolicy::Fingerprint(h.fingerprint.clone()),
        identity: Identity {
            agent: false,
            files: vec![key.to_path_buf()],
        },
        connect_timeout: Duration::from_secs(10),
        wait: None,
        via: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_listeners_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client_key");
    sim::write_client_key(&key);
    let specs: Vec<Spec> = (100..200)
        .map(|n| {
            let right: &[u8] = if n % 10 == 3 { b"different" } else { RIGHT };
            Spec {
                unlock_delay: Duration::from_millis(50),
                ..Spec::new(n, right)
            }
        })
        .collect();
    let shards = sim::start_many(specs, 4);
    let pass = Arc::new(Passphrase::new(RIGHT.to_vec()).unwrap());
    let plans: Vec<Plan> = shards
        .iter()
        .flat_map(|s| &s.hosts)
        .map(|h| plan(h, &key, &pass))
        .collect();
    let settings = run::Settings {
        parallel: 16,
        listener_wait: None,
        up_timeout: Some(Duration::from_secs(30)),
        poll: Duration::from_millis(200),
    };
    let reports = run::run(plans, &settings, None).await;
    assert_eq!(reports.len(), 100);
    for r in &reports {
        let n: u32 = r.host[1..].parse().unwrap();
        let want = if n % 10 == 3 {
            HostOutcome::WrongPassphrase
        } else {
            HostOutcome::Up
        };
        assert_eq!(r.outcome, want, "{r:?}");
    }
    // The passphrase was shared, never copied: only our Arc is left.
    assert_eq!(Arc::strong_count(&pass), 1);
}

/// A TCP relay on loopback in front of `port` that counts the connections
/// it forwards: how many times the client came to a listener.
async fn counting_relay(port: u16) -> (u16, Arc<std::sync::atomic::AtomicU32>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_port = l.local_addr().unwrap().port();
    let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = l.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (relay_port, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_costs_one_listener_connection() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client_key");
    sim::write_client_key(&key);
    let shard = sim::start(vec![Spec::new(300, RIGHT)]);
    let host = &shard.hosts[0];
    let (relay_port, count) = counting_relay(host.port).await;
    let pass = Arc::new(Passphrase::new(RIGHT.to_vec()).unwrap());
    let mut p = plan(host, &key, &pass);
    p.opts.target.port = relay_port;
    let settings = run::Settings {
        parallel: 4,
        listener_wait: None,
        up_timeout: Some(Duration::from_secs(30)),
        poll: Duration::from_millis(200),
    };
    let reports = run::run(vec![p], &settings, None).await;
    assert_eq!(reports[0].outcome, HostOutcome::Up, "{:?}", reports[0]);
    // The passphrase went in the connection that checked the key: no key
    // probe first (a second key exchange for every host and listener).
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(host.attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_already_up_at_the_listeners_address_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client_key");
    sim::write_client_key(&key);
    let shard = sim::start(vec![Spec::new(301, RIGHT)]);
    let host = &shard.hosts[0];
    let pass = Arc::new(Passphrase::new(RIGHT.to_vec()).unwrap());
    let settings = run::Settings {
        parallel: 4,
        listener_wait: None,
        up_timeout: Some(Duration::from_secs(30)),
        poll: Duration::from_millis(200),
    };
    let first = run::run(vec![plan(host, &key, &pass)], &settings, None).await;
    assert_eq!(first[0].outcome, HostOutcome::Up, "{:?}", first[0]);
    // Now the system's sshd answers where the listener was (one port for
    // both, as on most hosts): already up, the passphrase not sent, and
    // with --accept-new the system's key is not pinned as the listener's.
    let kh = dir.path().join("known_hosts");
    for policy in [
        HostKeyPolicy::Fingerprint(host.fingerprint.clone()),
        HostKeyPolicy::KnownHosts {
            path: kh.clone(),
            accept_new: true,
            ask: false,
        },
    ] {
        let mut p = plan(host, &key, &pass);
        p.opts.target.port = host.system_port;
        p.opts.host_key = policy;
        let again = run::run(vec![p], &settings, None).await;
        assert_eq!(again[0].outcome, HostOutcome::AlreadyUp, "{:?}", again[0]);
        assert!(again[0].unlock.is_none());
    }
    assert_eq!(host.attempts.load(Ordering::SeqCst), 1);
    assert!(!kh.exists() || std::fs::read_to_string(&kh).unwrap().trim().is_empty());
}

fn watch_settings() -> watch::Settings {
    watch::Settings {
        interval: Duration::from_millis(200),
        max_wrong: 2,
        backoff: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        approve_command: None,
        approve_timeout: Duration::from_secs(5),
        up_timeout: Some(Duration::from_secs(10)),
        parallel: 4,
    }
}

fn watched(h: &sim::Info, key: &Path, source: Source) -> watch::Watched {
    watch::Watched {
        name: format!("h{:04}", h.n),
        opts: options(h, key),
        fingerprints: vec![h.fingerprint.clone()],
        source,
        system: Some((
            Target {
                host: "127.0.0.1".into(),
                port: h.system_port,
            },
            SystemPins {
                fingerprints: vec![h.system_fingerprint.clone()],
                from: "test".into(),
            },
        )),
    }
}

async fn until(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_unlocks_an_approved_host_that_appears() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client_key");
    sim::write_client_key(&key);
    let shard = sim::start(vec![
        Spec {
            start_delay: Duration::from_millis(700),
            ..Spec::new(40, RIGHT)
        },
        Spec::new(41, RIGHT),
    ]);
    let (a, b) = (shard.hosts[0].clone(), shard.hosts[1].clone());
    let source = Source::Command(format!("printf '%s' '{}'", String::from_utf8_lossy(RIGHT)));
    let log = dir.path().join("approvals");
    let settings = watch::Settings {
        // Approves h0040 only, and records what it was asked.
        approve_command: Some(format!(
            "echo \"$PORTCULLIS_HOST $PORTCULLIS_ATTEMPT\" >> {}; test \"$PORTCULLIS_HOST\" = h0040",
            log.display()
        )),
        ..watch_settings()
    };
    let hosts = vec![watched(&a, &key, source.clone()), watched(&b, &key, source)];
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(watch::run(hosts, settings, async {
        let _ = stop_rx.await;
    }));
    until("h0040 unlocked", Duration::from_secs(15), || {
        a.attempts.load(Ordering::SeqCst) == 1
    })
    .await;
    // h0041 was asked about (more than once, with backoff) and never unlocked.
    until("h0041 asked twice", Duration::from_secs(15), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("h0041")
            .count()
            >= 2
    })
    .await;
    assert_eq!(b.attempts.load(Ordering::SeqCst), 0);
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let asked = std::fs::read_to_string(&log).unwrap();
    assert!(asked.contains("h0040 1\n"), "{asked}");
    assert!(
        asked.contains("h0041 1\n") && asked.contains("h0041 2\n"),
        "{asked}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_gives_up_on_wrong_answers_until_the_host_reboots() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("client_key");
    sim::write_client_key(&key);
    let shard = sim::start(vec![Spec::new(50, RIGHT)]);
    let h = shard.hosts[0].clone();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "an old passphrase\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let hosts = vec![watched(&h, &key, Source::File(pw.clone()))];
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(watch::run(hosts, watch_settings(), async {
        let _ = stop_rx.await;
    }));
    until("two wrong answers", Duration::from_secs(10), || {
        h.attempts.load(Ordering::SeqCst) == 2
    })
    .await;
    // The admin fixes the file, but watch stays away: this boot is given up.
    std::fs::write(&pw, RIGHT).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.attempts.load(Ordering::SeqCst), 2);
    // Reboot: the host goes away, then its initramfs is back, same key and
    // port. Watch notices the new boot and unlocks it.
    drop(shard);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = sim::start(vec![Spec {
        port: h.port,
        system_port: h.system_port,
        ..Spec::new(50, RIGHT)
    }]);
    let h2 = again.hosts[0].clone();
    until("unlocked after the reboot", Duration::from_secs(10), || {
        h2.attempts.load(Ordering::SeqCst) == 1
    })
    .await;
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}
