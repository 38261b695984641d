//! The build-time preflight hooks (`initramfs/common/preflight-hook.sh`,
//! initramfs-tools' post-update hook, mkinitcpio's post hook, and the call
//! dracut's module makes), run by a real /bin/sh against a fake
//! `portcullis-preflight` that records its arguments and exits as told:
//! the verdict line for each exit code, the checklist shown on warn and
//! fail, silence when the tool or the config is missing, and never a
//! failed build. The real tool on a real image is the VM test's.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

struct Bed {
    dir: tempfile::TempDir,
}

struct Out {
    code: i32,
    err: String,
    args: String,
}

impl Bed {
    /// A fake portcullis-preflight that prints a checklist line and exits
    /// `code`, and an existing config.
    fn new(code: i32) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("portcullis-preflight");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nprintf '%s|' \"$@\" > \"$(dirname \"$0\")/args\"\n\
                 echo '  FAIL  nic-driver  virtio_net is not in the image'\n\
                 echo 'verdict: from the tool'\nexit {code}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("portcullisd.toml"), "").unwrap();
        Bed { dir }
    }

    /// Runs `hook` (a path in the repo) with `args` and `env`.
    fn run(&self, hook: &str, args: &[&str], env: &[(&str, &str)]) -> Out {
        let d = self.dir.path();
        let o = Command::new("/bin/sh")
            .arg(repo(hook))
            .args(args)
            .env(
                "PORTCULLIS_PREFLIGHT_HOOK",
                repo("initramfs/common/preflight-hook.sh"),
            )
            .env("PORTCULLIS_PREFLIGHT", d.join("portcullis-preflight"))
            .env("PORTCULLIS_CONFIG", d.join("portcullisd.toml"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
            args: std::fs::read_to_string(d.join("args")).unwrap_or_default(),
        }
    }
}

const TOOLS: &str = "initramfs/initramfs-tools/post-update.d/portcullis";
const CPIO: &str = "initramfs/mkinitcpio/post/portcullis";
const IMG: &str = "/boot/initrd.img-6.1.0-28-amd64";

#[test]
fn initramfs_tools_prints_the_verdict_and_never_fails_the_build() {
    let want = [
        (
            0,
            "I: portcullis: preflight of /boot/initrd.img-6.1.0-28-amd64: network and unlock-hook checks passed",
        ),
        (
            15,
            "W: portcullis: preflight of /boot/initrd.img-6.1.0-28-amd64: WARNINGS: remote unlock should work, but read the warnings above before rebooting",
        ),
        (
            14,
            "W: portcullis: REMOTE UNLOCK WILL FAIL after the next reboot with /boot/initrd.img-6.1.0-28-amd64: fix the failed checks above, then rebuild the image",
        ),
        (
            1,
            "W: portcullis: preflight could not check /boot/initrd.img-6.1.0-28-amd64 (exit 1): see above, or run portcullis-preflight by hand",
        ),
    ];
    for (code, line) in want {
        let b = Bed::new(code);
        let o = b.run(TOOLS, &["6.1.0-28-amd64", IMG], &[]);
        assert_eq!(o.code, 0, "exit {code}: {}", o.err);
        assert_eq!(o.err.lines().last(), Some(line), "exit {code}: {}", o.err);
        assert_eq!(
            o.args,
            format!(
                "--only|conflicting-hooks,network-config,nic-driver,static-ip|--image|{IMG}|--kernel|6.1.0-28-amd64|"
            )
        );
        // The tool's checklist is shown when something is wrong, prefixed.
        let shown = o
            .err
            .contains("W: portcullis:   FAIL  nic-driver  virtio_net is not in the image");
        assert_eq!(shown, code != 0, "exit {code}: {}", o.err);
    }
}

#[test]
fn silent_without_the_tool_or_the_config_or_an_image() {
    let b = Bed::new(14);
    let missing = b.dir.path().join("none");
    let m = missing.to_str().unwrap();
    for env in [
        [("PORTCULLIS_PREFLIGHT", m)],
        [("PORTCULLIS_CONFIG", m)],
        [("PORTCULLIS_PREFLIGHT_HOOK", m)],
    ] {
        let o = b.run(TOOLS, &["6.1", IMG], &env);
        assert_eq!(
            (o.code, o.err.as_str(), o.args.as_str()),
            (0, "", ""),
            "{env:?}"
        );
    }
    let o = b.run(TOOLS, &[], &[]);
    assert_eq!((o.code, o.err.as_str()), (0, ""));
}

#[test]
fn mkinitcpio_checks_the_initramfs_not_the_kernel_or_the_uki() {
    let b = Bed::new(14);
    let o = b.run(
        CPIO,
        &[
            "/boot/vmlinuz-linux",
            "/boot/initramfs-linux.img",
            "/efi/linux.efi",
        ],
        &[("KERNELVERSION", "6.6.1-arch1-1")],
    );
    assert_eq!(o.code, 0, "{}", o.err);
    assert_eq!(
        o.args,
        "--only|listener,conflicting-hooks,network-config,nic-driver,static-ip|\
         --image|/boot/initramfs-linux.img|--kernel|6.6.1-arch1-1|"
    );
    assert!(o
        .err
        .contains("REMOTE UNLOCK WILL FAIL after the next reboot with /boot/initramfs-linux.img"));
    // No KERNELVERSION: no --kernel.
    let o = b.run(
        CPIO,
        &["/boot/vmlinuz-linux", "/boot/initramfs-linux.img"],
        &[],
    );
    assert!(
        o.args.ends_with("--image|/boot/initramfs-linux.img|"),
        "{}",
        o.args
    );
}

/// What dracut's module-setup.sh runs at the end of install(), on its
/// staging tree.
#[test]
fn dracut_checks_the_staging_tree() {
    let b = Bed::new(0);
    let d = b.dir.path();
    let script = d.join("dracut-call.sh");
    std::fs::write(
        &script,
        ". \"$PORTCULLIS_PREFLIGHT_HOOK\"\nkernel=6.1.0-28-amd64\ninitdir=/var/tmp/dracut.X/initramfs\n\
         portcullis_preflight_build \"the image for $kernel (dracut staging tree)\" \
         --only \"$PORTCULLIS_BUILD_CHECKS\" --dir \"$initdir\" --kernel \"$kernel\"\n",
    )
    .unwrap();
    let o = Command::new("/bin/sh")
        .arg(&script)
        .env(
            "PORTCULLIS_PREFLIGHT_HOOK",
            repo("initramfs/common/preflight-hook.sh"),
        )
        .env("PORTCULLIS_PREFLIGHT", d.join("portcullis-preflight"))
        .env("PORTCULLIS_CONFIG", d.join("portcullisd.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success());
    assert_eq!(
        err.trim_end(),
        "I: portcullis: preflight of the image for 6.1.0-28-amd64 (dracut staging tree): network and unlock-hook checks passed"
    );
    let args = std::fs::read_to_string(d.join("args")).unwrap();
    assert!(
        args.ends_with("--dir|/var/tmp/dracut.X/initramfs|--kernel|6.1.0-28-amd64|"),
        "{args}"
    );
    // The module itself makes that call.
    let module =
        std::fs::read_to_string(repo("initramfs/dracut/95portcullis/module-setup.sh")).unwrap();
    assert!(module
        .contains("--only \"$PORTCULLIS_BUILD_CHECKS\" --dir \"$initdir\" --kernel \"$kernel\""));
}
