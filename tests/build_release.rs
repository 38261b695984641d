//! `tests/build-release.sh` installs nothing and changes no toolchain: with
//! pieces missing it names each with the command that gets it and exits 1,
//! and never runs `apt-get`, `sudo` or `rustup`. The script runs against a
//! PATH of fakes: a `rustc` whose sysroot holds only the targets a case
//! gives it, recording `apt-get`/`sudo`/`rustup`, and no C compiler unless
//! a case adds one; real `bash`, `env`, `sed`, `dirname` and the other
//! basic tools a build script may use (`mkdir`, `cp`, `grep`, `id`, `timeout`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// `targets`: the Rust standard libraries the fake sysroot holds.
    fn new(targets: &[&str]) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for tool in [
            "bash", "env", "sed", "dirname", "mkdir", "cp", "grep", "id", "timeout",
        ] {
            let real = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("no {tool} in /usr/bin or /bin"));
            std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
        }
        let sysroot = dir.path().join("sysroot");
        for t in targets {
            std::fs::create_dir_all(sysroot.join("lib/rustlib").join(t).join("lib")).unwrap();
        }
        let s = Sandbox { dir };
        s.script(
            "rustc",
            &format!(
                "case $1 in -vV) echo 'host: x86_64-unknown-linux-gnu' ;; \
                 --print) echo '{}' ;; *) exit 1 ;; esac",
                sysroot.display()
            ),
        );
        let record = |tool: &str| format!("echo {tool} \"$@\" >>\"${{0%/*}}/../called\"");
        for tool in ["apt-get", "sudo", "cargo"] {
            s.script(tool, &record(tool));
        }
        // Asking rustup what is installed changes nothing; anything else would.
        s.script(
            "rustup",
            &format!(
                "[ \"$1 $2\" = 'component list' ] && exit 0\n{}",
                record("rustup")
            ),
        );
        s
    }

    fn script(&self, name: &str, body: &str) {
        let p = self.dir.path().join("bin").join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Runs the script with `args`; exit code and stderr.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/build-release.sh");
        let out = Command::new(self.dir.path().join("bin/bash"))
            .arg(script)
            .args(args)
            .env_clear()
            .env("PATH", self.dir.path().join("bin"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let called = std::fs::read_to_string(self.dir.path().join("called")).unwrap_or_default();
        assert_eq!(called, "", "the script ran these; it must install nothing");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn native_build_names_the_musl_target_and_musl_gcc() {
    let (code, err) = Sandbox::new(&[]).run(&[], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot build x86_64-unknown-linux-musl; missing:"),
        "{err}"
    );
    assert!(
        err.contains("rustup target add x86_64-unknown-linux-musl"),
        "{err}"
    );
    assert!(err.contains("apt-get install musl-tools"), "{err}");
    assert!(err.contains("PORTCULLIS_NO_MUSL=1"), "{err}");
}

#[test]
fn aarch64_build_names_the_target_and_the_cross_compiler() {
    let (code, err) =
        Sandbox::new(&["x86_64-unknown-linux-musl"]).run(&["aarch64-unknown-linux-musl"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("rustup target add aarch64-unknown-linux-musl"),
        "{err}"
    );
    assert!(
        err.contains("apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"),
        "{err}"
    );
    assert!(!err.contains("musl-tools"), "{err}");
}

#[test]
fn aarch64_compiler_without_headers_is_named() {
    let s = Sandbox::new(&["aarch64-unknown-linux-musl"]);
    // A compiler that cannot find string.h, as without libc6-dev-arm64-cross.
    s.script(
        "aarch64-linux-gnu-gcc",
        "echo 'fatal error: string.h: No such file' >&2; exit 1",
    );
    let (code, err) = s.run(&["aarch64-unknown-linux-musl"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "C library headers for aarch64-linux-gnu-gcc: apt-get install libc6-dev-arm64-cross"
        ),
        "{err}"
    );
    assert!(!err.contains("rustup target add"), "{err}");
}

#[test]
fn unknown_target_and_extra_arguments_are_refused() {
    let s = Sandbox::new(&[]);
    let (code, err) = s.run(&["riscv64gc-unknown-linux-musl"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unsupported target riscv64gc-unknown-linux-musl"),
        "{err}"
    );
    let (code, err) = s.run(&["a", "b"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("one argument at most"), "{err}");
}

#[test]
fn small_build_needs_nightly_and_says_so() {
    let s = Sandbox::new(&["x86_64-unknown-linux-musl"]);
    s.script("musl-gcc", "exit 0");
    let (code, err) = s.run(&[], &[("PORTCULLIS_SMALL", "1")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("rustup toolchain install nightly --component rust-src"),
        "{err}"
    );
}
