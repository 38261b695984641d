//! The library every generator's hooks share (`initramfs/common/
//! portcullis-lib.sh`, `/usr/lib/portcullis/lib.sh` in the images), run by
//! a real POSIX shell (dash here; busybox ash at boot): asking the listener
//! which files to copy, stopping the listener with its children, telling a
//! zombie from a live process, and flushing a real interface. The stop and
//! flush cases need root (a private mount and network namespace through
//! `unshare`) and say so when skipped.

#[path = "support/listener_bin.rs"]
mod listener_bin;

use std::path::Path;
use std::process::{Command, Output};

const LIB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/initramfs/common/portcullis-lib.sh"
);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `script` run by /bin/sh after sourcing the library, with `args` as $1….
fn sh(script: &str, args: &[&str]) -> Output {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!(". \"$LIB\"\n{script}"))
        .arg("sh")
        .args(args)
        .env("LIB", LIB)
        .output()
        .unwrap()
}

/// The same, as root in private mount and network namespaces with a fresh
/// /run; `None` where that is not possible.
fn sh_isolated(script: &str) -> Option<Output> {
    let probe = Command::new("unshare")
        .args(["-m", "-n", "true"])
        .output()
        .ok()?;
    if !probe.status.success() {
        return None;
    }
    Some(
        Command::new("unshare")
            .args(["-m", "-n", "/bin/sh", "-c"])
            .arg(format!(
                "mount -t tmpfs tmpfs /run || exit 99\nmount -t sysfs sysfs /sys || exit 99\nmkdir -p /run/portcullis\n. \"$LIB\"\n{script}"
            ))
            .env("LIB", LIB)
            .output()
            .unwrap(),
    )
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGzmd7Q2xTUCfkNPMnhbU2GXHfpjYs/jBdqoNlYzR+1j";

#[test]
fn config_files_come_from_the_listener() {
    let t = tempfile::tempdir().unwrap();
    let etc = t.path().join("etc/portcullis");
    std::fs::create_dir_all(&etc).unwrap();
    portcullis::hostkey::generate(&etc.join("custom key"), "test").unwrap();
    std::fs::write(etc.join("admins"), format!("{KEY}\n")).unwrap();
    let cfg = etc.join("portcullisd.toml");
    // Single quotes (a TOML literal string): the sed the hooks used missed it.
    std::fs::write(
        &cfg,
        "host-key = '/etc/portcullis/custom key'\nauthorized-keys = \"/etc/portcullis/admins\"\n",
    )
    .unwrap();
    let pd = listener_bin::portcullisd();
    let pd = pd.to_str().unwrap();
    let root = t.path().to_str().unwrap();
    let script = "portcullis_config_files \"$1\" /etc/portcullis/portcullisd.toml \"$2\" || \
                  { echo \"failed: $PORTCULLIS_ERROR\"; exit 1; }\n\
                  echo \"key=[$PORTCULLIS_HOST_KEY] ak=[$PORTCULLIS_AUTHORIZED_KEYS]\"";
    let o = sh(script, &[pd, root]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "key=[/etc/portcullis/custom key] ak=[/etc/portcullis/admins]\n"
    );

    // Two host keys (a key-type migration): both listed, one a line.
    portcullis::hostkey::generate_typed(
        &etc.join("ecdsa key"),
        "test",
        false,
        portcullis::hostkey::KeyType::Ecdsa,
    )
    .unwrap();
    std::fs::write(
        &cfg,
        "host-key = ['/etc/portcullis/custom key', '/etc/portcullis/ecdsa key']\n\
         authorized-keys = \"/etc/portcullis/admins\"\n",
    )
    .unwrap();
    let two = format!(
        "{script}\nwhile IFS= read -r k; do echo \"copy [$k]\"; done <<KEYS\n$PORTCULLIS_HOST_KEYS\nKEYS"
    );
    let o = sh(&two, &[pd, root]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "key=[/etc/portcullis/custom key] ak=[/etc/portcullis/admins]\n\
         copy [/etc/portcullis/custom key]\ncopy [/etc/portcullis/ecdsa key]\n"
    );

    // A broken config: the listener's one-line error, naming the admin's file.
    std::fs::write(
        &cfg,
        "host-key = '/etc/portcullis/custom key'\nmax-trys = 3\n",
    )
    .unwrap();
    let o = sh(script, &[pd, root]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o.stdout);
    assert!(
        out.starts_with("failed: portcullisd: error: /etc/portcullis/portcullisd.toml (line 2): unknown field `max-trys`"),
        "{out}"
    );
    assert!(!out.contains(root), "{out}");

    // A listener that lists nothing (an older one): refused, not guessed.
    let o = sh(script, &["/bin/true", root]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stdout).contains("named no host key"),
        "{}",
        text(&o.stdout)
    );
}

/// The listener an image gets: the initramfs build beside the library when
/// installed, else PORTCULLISD, or what PORTCULLISD_INITRAMFS names; a
/// version that differs from PORTCULLISD's fails the build in one line.
#[test]
fn the_image_gets_the_initramfs_build_of_the_same_version() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    let install = |from: &Path, to: &str| {
        let dest = root.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from, &dest).unwrap();
    };
    install(&listener_bin::portcullisd(), "/usr/sbin/portcullisd");
    let script = "PORTCULLISD_INITRAMFS=$3\n\
                  portcullis_image_listener /usr/sbin/portcullisd \"$1\"; rc=$?\n\
                  echo \"rc=$rc image=[$PORTCULLIS_IMAGE_LISTENER] error=[$PORTCULLIS_ERROR]\"";
    let r = root.to_str().unwrap();
    let picked = |explicit: &str| text(&sh(script, &[r, "", explicit]).stdout);
    // Not installed: the full build goes in, as before.
    assert_eq!(picked(""), "rc=0 image=[/usr/sbin/portcullisd] error=[]\n");
    install(
        &listener_bin::portcullisd_initramfs(),
        "/usr/lib/portcullis/portcullisd-initramfs",
    );
    assert_eq!(
        picked(""),
        "rc=0 image=[/usr/lib/portcullis/portcullisd-initramfs] error=[]\n"
    );
    // The admin's choice wins, and is held to the same version.
    install(&listener_bin::portcullisd(), "/opt/custom/portcullisd");
    assert_eq!(
        picked("/opt/custom/portcullisd"),
        "rc=0 image=[/opt/custom/portcullisd] error=[]\n"
    );
    let old = root.join("usr/lib/portcullis/portcullisd-initramfs");
    std::fs::remove_file(&old).unwrap();
    std::fs::write(&old, "#!/bin/sh\necho portcullisd 0.0.1\n").unwrap();
    std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = picked("");
    let want = format!(
        "rc=1 image=[/usr/lib/portcullis/portcullisd-initramfs] error=[the listener for the \
         image (/usr/lib/portcullis/portcullisd-initramfs: portcullisd 0.0.1) is not the \
         installed /usr/sbin/portcullisd (portcullisd {}): reinstall portcullis-initramfs, or \
         set PORTCULLISD_INITRAMFS= in /etc/portcullis/initramfs.conf]\n",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(out, want);
}

#[test]
fn a_zombie_is_not_alive() {
    // The `sleep 0.01` child is never reaped: its parent exec'd `sleep 3`.
    let mut parent = Command::new("/bin/sh")
        .args(["-c", "sleep 0.01 & echo $! >\"$0\"; exec sleep 3"])
        .arg(std::env::temp_dir().join(format!("zombie-{}", std::process::id())))
        .spawn()
        .unwrap();
    let pidfile = std::env::temp_dir().join(format!("zombie-{}", std::process::id()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let zombie = loop {
        if let Ok(p) = std::fs::read_to_string(&pidfile) {
            let p = p.trim().to_string();
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            if status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
            {
                break p;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no zombie appeared");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let alive = |pid: &str| sh("portcullis_alive \"$1\"", &[pid]).status.success();
    assert!(!alive(&zombie), "a zombie counted as alive");
    assert!(alive(&parent.id().to_string()));
    assert!(!alive("999999999"));
    parent.kill().unwrap();
    parent.wait().unwrap();
    let _ = std::fs::remove_file(pidfile);
}

#[test]
fn stop_ends_the_listener_and_its_children() {
    // A "listener" whose child waits (as ipconfig or udhcpc do), pid in
    // /run/portcullis/pid; stop must end both, quickly, and drop the file.
    let script = "sh -c 'sleep 1000 & echo $! >/run/child; wait' &\n\
                  echo $! >/run/portcullis/pid\n\
                  listener=$!\n\
                  i=0; while [ ! -s /run/child ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done\n\
                  read -r child </run/child\n\
                  portcullis_alive \"$child\" || { echo 'child not running'; exit 1; }\n\
                  start=$(date +%s)\n\
                  portcullis_stop\n\
                  end=$(date +%s)\n\
                  wait\n\
                  portcullis_alive \"$listener\" && echo 'listener alive'\n\
                  portcullis_alive \"$child\" && echo 'child alive'\n\
                  [ -e /run/portcullis/pid ] && echo 'pid file left'\n\
                  [ $((end - start)) -le 5 ] || echo \"took $((end - start)) s\"\n\
                  echo done";
    let Some(o) = sh_isolated(script) else {
        eprintln!("skipped: needs root for unshare -m -n");
        return;
    };
    assert_eq!(text(&o.stdout), "done\n", "{}", text(&o.stderr));
    // No pid file: nothing to do, and no error.
    let o = sh_isolated("portcullis_stop && echo ok").unwrap();
    assert_eq!(text(&o.stdout), "ok\n");
}

#[test]
fn flush_deconfigures_a_real_interface() {
    if !Path::new("/usr/sbin/ip").exists() && !Path::new("/sbin/ip").exists() {
        eprintln!("skipped: no ip command");
        return;
    }
    let script = "ip link add pc0 type veth peer name pc1 || exit 98\n\
                  ip link set pc0 up && ip link set pc1 up\n\
                  ip address add 10.77.0.2/24 dev pc0\n\
                  ip route add default via 10.77.0.1 dev pc0\n\
                  portcullis_flush pc0 nosuchif || echo 'flush failed'\n\
                  ip -o address show dev pc0 | grep -q inet && echo 'address left'\n\
                  ip route show dev pc0 | grep -q . && echo 'route left'\n\
                  ip -o link show dev pc0 | grep -q '[<,]UP[,>]' && echo 'link up'\n\
                  echo done";
    let Some(o) = sh_isolated(script) else {
        eprintln!("skipped: needs root for unshare -m -n");
        return;
    };
    if o.status.code() == Some(98) {
        eprintln!("skipped: cannot create a veth pair here");
        return;
    }
    assert_eq!(text(&o.stdout), "done\n", "{}", text(&o.stderr));
}
