//! `portcullis-preflight` as the build-time hooks and admins run it: a
//! fixture staging tree (`--dir`) checked against a fixture machine
//! (`--root`: /proc, /sys, /dev with a LUKS2 header), through the real
//! binary. Exit codes, the checklist, the fixes and the JSON contract.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

const KERNEL: &str = "6.1.0-test";
const UUID: &str = "5b1c3e0a-1111-4222-8333-944455556666";
const STATIC_IP: &str = "ip=10.0.2.15::10.0.2.2:255.255.255.0::ens3:off";
const AK: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGzmd7Q2xTUCfkNPMnhbU2GXHfpjYs/jBdqoNlYzR+1j admin@ws\n";

fn write(base: &Path, rel: &str, data: &[u8], mode: u32) {
    let p = base.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A LUKS2 header as cryptsetup writes it, as far as preflight reads it:
/// magic, version, header size, UUID, and the JSON area with one argon2id
/// keyslot of `memory_kib`.
fn luks2_header(memory_kib: u64) -> Vec<u8> {
    let mut h = vec![0u8; 16384];
    h[..6].copy_from_slice(b"LUKS\xba\xbe");
    h[6..8].copy_from_slice(&2u16.to_be_bytes());
    h[8..16].copy_from_slice(&16384u64.to_be_bytes());
    h[168..168 + UUID.len()].copy_from_slice(UUID.as_bytes());
    let json = format!(
        r#"{{"keyslots":{{"0":{{"type":"luks2","kdf":{{"type":"argon2id","time":4,"memory":{memory_kib},"cpus":1}}}}}}}}"#
    );
    h[4096..4096 + json.len()].copy_from_slice(json.as_bytes());
    h
}

/// An initramfs-tools staging tree with everything remote unlock needs.
fn stage(dir: &Path) {
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("host_key");
    portcullis::hostkey::generate(&key, "t").unwrap();
    write(
        dir,
        "usr/sbin/portcullisd",
        format!("\x7fELF portcullisd {}\n", env!("CARGO_PKG_VERSION")).as_bytes(),
        0o755,
    );
    write(
        dir,
        "etc/portcullis/portcullisd.toml",
        b"listen = [\"0.0.0.0:22\"]\n",
        0o644,
    );
    write(
        dir,
        "etc/portcullis/host_key",
        &std::fs::read(&key).unwrap(),
        0o600,
    );
    write(dir, "etc/portcullis/authorized_keys", AK.as_bytes(), 0o644);
    write(dir, "scripts/functions", b"", 0o644);
    write(dir, "conf/initramfs.conf", b"MODULES=most\n", 0o644);
    write(dir, "lib/cryptsetup/askpass", b"", 0o755);
    write(dir, "scripts/local-top/cryptroot", b"", 0o755);
    write(
        dir,
        "cryptroot/crypttab",
        format!("vda2_crypt UUID={UUID} none luks\n").as_bytes(),
        0o644,
    );
    let m = format!("lib/modules/{KERNEL}/kernel/drivers");
    write(dir, &format!("{m}/md/dm-crypt.ko.zst"), b"", 0o644);
    write(dir, &format!("{m}/md/dm-mod.ko.zst"), b"", 0o644);
    write(dir, &format!("{m}/net/virtio_net.ko.zst"), b"", 0o644);
}

/// The machine: 2 GiB of RAM, a default route on ens3 (virtio_net), one
/// LUKS2 device.
fn machine(root: &Path, memory_kib: u64) {
    write(
        root,
        "proc/meminfo",
        b"MemTotal:        2048000 kB\n",
        0o644,
    );
    write(
        root,
        "proc/cmdline",
        format!("ro {STATIC_IP}\n").as_bytes(),
        0o644,
    );
    write(
        root,
        "proc/net/route",
        b"Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
          ens3\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
        0o644,
    );
    let dev = root.join("sys/class/net/ens3/device/driver");
    std::fs::create_dir_all(&dev).unwrap();
    symlink("../../../../module/virtio_net", dev.join("module")).unwrap();
    std::fs::create_dir_all(root.join("sys/class/block/vda2")).unwrap();
    write(root, "dev/vda2", &luks2_header(memory_kib), 0o600);
}

fn preflight(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis-preflight"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct Fixture {
    stage: tempfile::TempDir,
    root: tempfile::TempDir,
}

impl Fixture {
    fn new(memory_kib: u64) -> Fixture {
        let f = Fixture {
            stage: tempfile::tempdir().unwrap(),
            root: tempfile::tempdir().unwrap(),
        };
        stage(f.stage.path());
        machine(f.root.path(), memory_kib);
        f
    }

    fn run(&self, extra: &[&str]) -> Output {
        let (s, r) = (
            self.stage.path().to_str().unwrap(),
            self.root.path().to_str().unwrap(),
        );
        let mut args = vec!["--dir", s, "--root", r, "--kernel", KERNEL];
        args.extend_from_slice(extra);
        preflight(&args)
    }
}

#[test]
fn a_good_image_passes_with_exit_0() {
    let f = Fixture::new(65536);
    let o = f.run(&[]);
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for id in [
        "listener",
        "config",
        "authorized-keys",
        "host-key",
        "volumes",
        "dm-crypt",
        "backend",
        "argon2-memory",
        "conflicting-hooks",
        "network-config",
        "nic-driver",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("  ok    {id} "))),
            "{id} should pass:\n{out}"
        );
    }
    // No addresses to compare under a fixture root: said, not failed.
    assert!(out.contains("  skip  static-ip "), "{out}");
    assert!(out.contains("authorized key: SHA256:"), "{out}");
    assert!(out.ends_with("verdict: ok: remote unlock should work after the next reboot\n"));
}

#[test]
fn a_missing_nic_driver_fails_with_exit_14_and_the_fix() {
    let f = Fixture::new(65536);
    std::fs::remove_file(f.stage.path().join(format!(
        "lib/modules/{KERNEL}/kernel/drivers/net/virtio_net.ko.zst"
    )))
    .unwrap();
    let o = f.run(&[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(14), "{out}");
    assert!(
        out.contains("FAIL  nic-driver         ens3 carries the default route, but its driver virtio_net is not in the image"),
        "{out}"
    );
    assert!(
        out.contains("fix: add virtio_net to /etc/initramfs-tools/modules, then run update-initramfs -u -k 6.1.0-test"),
        "{out}"
    );
    assert!(out.contains("verdict: FAIL"), "{out}");
}

#[test]
fn warnings_only_exit_15() {
    let f = Fixture::new(65536);
    let o = f.run(&["--cmdline", "ro quiet"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(15), "{out}");
    assert!(out.contains("WARN  network-config"), "{out}");
}

#[test]
fn argon2_memory_above_the_ram_fails() {
    let f = Fixture::new(4 << 20);
    let o = f.run(&["--only", "argon2-memory"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(14), "{out}");
    assert!(
        out.contains(
            "/dev/vda2 keyslot 0 (argon2id) needs 4096 MiB, the initramfs has 2000 MiB of RAM"
        ),
        "{out}"
    );
}

#[test]
fn build_time_checks_as_json() {
    let f = Fixture::new(65536);
    let o = f.run(&["--only", "network,conflicts", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: portcullis::preflight::report::Report = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report.format, 1);
    let ids: Vec<&str> = report.images[0]
        .checks
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "conflicting-hooks",
            "network-config",
            "nic-driver",
            "static-ip"
        ]
    );
    assert_eq!(report.images[0].kernel.as_deref(), Some(KERNEL));
    // The running kernel's command line stands in for the new entry's.
    assert_eq!(
        report.images[0].cmdline.as_deref(),
        Some(format!("ro {STATIC_IP}").as_str())
    );
}

#[test]
fn errors_are_one_line_and_exit_1() {
    let o = preflight(&["--image", "/nonexistent/initrd.img"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("portcullis-preflight: error: cannot read /nonexistent/initrd.img: ")
            && err.contains("name an existing image with --image FILE"),
        "{err}"
    );
    let f = Fixture::new(65536);
    let o = f.run(&["--only", "netwrk"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(
            "portcullis-preflight: error: --only: unknown check \"netwrk\"; choose from"
        ),
        "{err}"
    );
    // No boot entry at all: one line, naming --image once.
    let empty = tempfile::tempdir().unwrap();
    let o = preflight(&["--root", empty.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("--image").count(), 1, "{err}");
    let o = preflight(&["--image", "a", "--dir", "b"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_default_boot_entry_without_an_initramfs_fails_with_exit_14() {
    let root = tempfile::tempdir().unwrap();
    machine(root.path(), 65536);
    let cfg = b"menuentry 'bare' {\n linux /vmlinuz-6.1 root=/dev/sda1\n}\n";
    write(root.path(), "boot/grub/grub.cfg", cfg, 0o644);
    write(root.path(), "boot/vmlinuz-6.1", b"k", 0o644);
    let o = preflight(&["--root", root.path().to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(14),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("loads no initramfs"), "{out}");
    assert!(out.contains("fix the boot loader configuration"), "{out}");
    // No boot entry at all stays a usage error (exit 1).
    let empty = tempfile::tempdir().unwrap();
    let o = preflight(&["--root", empty.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

/// The staging tree packed as a generator packs it (newc cpio, gzip by the
/// real tool), behind an uncompressed early (microcode) archive.
fn pack(stage: &Path, out: &Path) {
    fn walk(base: &Path, dir: &Path, a: &mut portcullis::rescue::cpio::Archive) {
        let mut items: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        items.sort();
        for p in items {
            let rel = p.strip_prefix(base).unwrap().to_str().unwrap().to_string();
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            if p.is_dir() {
                a.dir(&rel, mode);
                walk(base, &p, a);
            } else {
                a.file(&rel, mode, &std::fs::read(&p).unwrap());
            }
        }
    }
    let mut main = portcullis::rescue::cpio::Archive::default();
    walk(stage, stage, &mut main);
    let cpio = main.finish();
    let mut gz = Command::new("gzip")
        .args(["-c", "-9"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    {
        use std::io::Write;
        gz.stdin.take().unwrap().write_all(&cpio).unwrap();
    }
    let gz = gz.wait_with_output().unwrap();
    assert!(gz.status.success());
    let mut early = portcullis::rescue::cpio::Archive::default();
    early.dir("kernel", 0o755);
    early.file("kernel/x86/microcode/GenuineIntel.bin", 0o644, b"ucode");
    let mut image = early.finish().to_vec();
    image.extend_from_slice(&gz.stdout);
    std::fs::write(out, image).unwrap();
}

#[test]
fn an_image_file_reads_like_its_staging_tree() {
    let f = Fixture::new(65536);
    let boot = tempfile::tempdir().unwrap();
    let img = boot.path().join(format!("initrd.img-{KERNEL}"));
    pack(f.stage.path(), &img);
    let r = f.root.path().to_str().unwrap();
    // The kernel release comes from the file name.
    let o = preflight(&["--image", img.to_str().unwrap(), "--root", r, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let report: portcullis::preflight::report::Report = serde_json::from_slice(&o.stdout).unwrap();
    let i = &report.images[0];
    assert_eq!(i.kernel.as_deref(), Some(KERNEL));
    assert_eq!(i.checks.len(), 12);
    assert_eq!(i.authorized_keys.len(), 1);
    // Broken on purpose: the image is cut short.
    let bytes = std::fs::read(&img).unwrap();
    std::fs::write(&img, &bytes[..bytes.len() / 2]).unwrap();
    let o = preflight(&["--image", img.to_str().unwrap(), "--root", r]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// The boot entries of the fixture machine: two installed kernels, no boot
/// loader menu. `good` gets a packed image, the other a truncated one.
fn two_kernels(f: &Fixture) {
    let boot = f.root.path().join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    for k in [KERNEL, "6.0.0-old"] {
        std::fs::write(boot.join(format!("vmlinuz-{k}")), b"kernel").unwrap();
    }
    pack(f.stage.path(), &boot.join(format!("initrd.img-{KERNEL}")));
    let good = std::fs::read(boot.join(format!("initrd.img-{KERNEL}"))).unwrap();
    // The gzip stream cut short.
    std::fs::write(boot.join("initrd.img-6.0.0-old"), &good[..good.len() - 16]).unwrap();
    symlink(
        format!("boot/vmlinuz-{KERNEL}"),
        f.root.path().join("vmlinuz"),
    )
    .unwrap();
}

#[test]
fn the_default_entry_and_every_kernel() {
    let f = Fixture::new(65536);
    two_kernels(&f);
    let r = f.root.path().to_str().unwrap();
    let o = preflight(&["--root", r]);
    let out = text(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.starts_with(&format!("/boot/initrd.img-{KERNEL} (kernel {KERNEL})\n")),
        "{out}"
    );
    // Every kernel: the unreadable image of the old one fails its own line.
    let o = preflight(&["--root", r, "--all-kernels"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(14), "{out}");
    assert!(
        out.contains(&format!("/boot/initrd.img-{KERNEL} (kernel {KERNEL})\n")),
        "{out}"
    );
    assert!(
        out.contains("/boot/initrd.img-6.0.0-old (kernel 6.0.0-old)\n"),
        "{out}"
    );
    assert!(out.contains("  FAIL  image  "), "{out}");
    assert!(
        out.contains("fix: rebuild it (update-initramfs -u -k 6.0.0-old"),
        "{out}"
    );
}

/// With no boot entry for the image, `/etc/kernel/cmdline` is the line it
/// boots with. Only without it is the running system's line used, and a
/// network failure judged on that guess is a warning that says so (a chroot
/// build would otherwise judge the build machine's own line).
#[test]
fn etc_kernel_cmdline_before_the_running_systems_line() {
    let f = Fixture::new(65536);
    write(f.root.path(), "proc/cmdline", b"ro ip=off\n", 0o644);
    let o = f.run(&["--only", "network-config"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(15), "{out}");
    assert!(out.contains("running system's command line"), "{out}");

    write(f.root.path(), "etc/kernel/cmdline", b"ro ip=off\n", 0o644);
    let o = f.run(&["--only", "network-config"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(14), "{out}");
    assert!(!out.contains("running system's"), "{out}");

    write(f.root.path(), "etc/kernel/cmdline", b"ro ip=dhcp\n", 0o644);
    let o = f.run(&["--only", "network-config"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Two commands share the name: the server's `portcullis-preflight(8)` and
/// the client's `portcullis preflight`, whose git-style page is
/// `portcullis-preflight(1)`. `man portcullis-preflight` opens section 1
/// first, so each page names the other.
#[test]
fn both_preflight_pages_point_at_each_other() {
    // Help wraps at the terminal's width: compare words, not lines.
    let words = |o: &Output| text(o).split_whitespace().collect::<Vec<_>>().join(" ");
    let server = words(&preflight(&["--help"]));
    assert!(
        server.contains("portcullis preflight HOST")
            && server.contains("man 1 portcullis-preflight"),
        "{server}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["preflight", "--help"])
        .output()
        .unwrap();
    let client = words(&o);
    assert!(
        client.contains("`portcullis-preflight`") && client.contains("man 8 portcullis-preflight"),
        "{client}"
    );
}
