//! How `portcullis preflight` talks to one server: the stock OpenSSH
//! client with strict host-key checking (and, when the inventory pins the
//! system's key, a known-hosts file holding exactly that key), the script
//! that finds and runs `portcullis-preflight` there, and what ssh's exit
//! status and messages mean, each turned into one line that says what to do.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::authkeys::fingerprint;
use crate::client::{known_hosts, probe, Target};
use crate::preflight::report::{Report, FORMAT};
use crate::protocol::exit;
use crate::rescue::shell;
use crate::text;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How long the check itself may take once connected (it unpacks images).
pub(super) const RUN_LIMIT: Duration = Duration::from_secs(300);
/// Most bytes read from the server's report: it is only a checklist.
const MAX_OUTPUT: u64 = 4 << 20;
/// The exit status the remote script uses for "portcullis-preflight is not
/// installed" (the shell's own for "command not found").
const NOT_INSTALLED: i32 = 127;

/// Why a host gave no report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: &'static str,
    pub code: u8,
    pub message: String,
}

pub(super) fn failure(kind: &'static str, code: u8, message: String) -> Failure {
    Failure {
        kind,
        code,
        message,
    }
}

/// The script run on the server (through the login shell, so wrapped in
/// `sh -c` whatever that shell is): finds `portcullis-preflight` also where
/// a non-root PATH does not look, and goes through `sudo -n` unless the
/// login is root (it reads LUKS headers and /boot).
pub fn remote_command(args: &[String]) -> String {
    let mut words = vec!["--json".to_string()];
    words.extend(args.iter().cloned());
    let args = shell::join(&words);
    let script = format!(
        "PATH=\"$PATH:/usr/local/sbin:/usr/sbin:/sbin\"; \
         p=$(command -v portcullis-preflight) || {{ echo \"portcullis-preflight: not found\" >&2; exit {NOT_INSTALLED}; }}; \
         if [ \"$(id -u)\" = 0 ]; then exec \"$p\" {args}; else exec sudo -n \"$p\" {args}; fi"
    );
    format!("sh -c {}", shell::quote(&script))
}

/// How ssh is called besides the host: the ssh_config to use (`-F`, when
/// one was named), the admin's own `-o` options, the connect timeout.
#[derive(Debug, Clone, Default)]
pub struct SshSettings {
    pub config: Option<PathBuf>,
    pub options: Vec<String>,
    pub timeout: Duration,
}

/// ssh's arguments for `system`; `known_hosts` replaces ssh's files when
/// the inventory pins the system key. portcullis's own `-o` options come
/// first: ssh keeps the first value of an option, so the admin's cannot
/// turn host-key checking off.
pub fn ssh_args(
    system: &Target,
    login: Option<&str>,
    known_hosts: Option<&Path>,
    ssh: &SshSettings,
    command: &str,
) -> Vec<String> {
    let mut a: Vec<String> = [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ForwardAgent=no",
        "-o",
        "ForwardX11=no",
        "-o",
        "ClearAllForwardings=yes",
        "-o",
        "RequestTTY=no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push("-o".into());
    a.push(format!("ConnectTimeout={}", ssh.timeout.as_secs().max(1)));
    if let Some(kh) = known_hosts {
        a.push("-o".into());
        a.push(format!("UserKnownHostsFile={}", kh.display()));
        a.push("-o".into());
        a.push("GlobalKnownHostsFile=/dev/null".into());
    }
    for o in &ssh.options {
        a.push("-o".into());
        a.push(o.clone());
    }
    if let Some(f) = &ssh.config {
        a.push("-F".into());
        a.push(f.display().to_string());
    }
    a.push("-p".into());
    a.push(system.port.to_string());
    if let Some(u) = login {
        a.push("-l".into());
        a.push(u.into());
    }
    a.push("--".into());
    a.push(system.host.clone());
    a.push(command.into());
    a
}

/// The last line ssh or the check wrote on stderr that says something.
fn last_line(stderr: &str) -> String {
    stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("no message")
        .to_string()
}

/// Turns what ssh returned into a report or a one-line reason. `name` is
/// the host as the admin named it, `system` where ssh went.
pub fn classify(
    name: &str,
    system: &Target,
    status: Option<i32>,
    stdout: &[u8],
    stderr: &str,
) -> Result<Report, Failure> {
    let says = |s: &str| stderr.contains(s);
    match status {
        Some(0 | 14 | 15) => match serde_json::from_slice::<Report>(stdout) {
            Ok(r) if r.format > FORMAT => Err(failure(
                "error",
                exit::ERROR,
                format!(
                    "{name}: portcullis-preflight there writes report format {}, newer than \
                     this client's {FORMAT}; update portcullis on this workstation",
                    r.format
                ),
            )),
            // Nothing checked is not a pass.
            Ok(r) if r.images.is_empty() => Err(failure(
                "error",
                exit::ERROR,
                format!("{name}: portcullis-preflight checked no image; run it there by hand"),
            )),
            Ok(r) => Ok(r),
            Err(e) => Err(failure(
                "error",
                exit::ERROR,
                format!(
                    "{name}: portcullis-preflight printed no readable report ({e}); update \
                     portcullis-initramfs on {name} to the version of this client"
                ),
            )),
        },
        Some(255)
            if says("REMOTE HOST IDENTIFICATION HAS CHANGED")
                || says("does not match the key pinned") =>
        {
            Err(failure(
                "host-key-changed",
                exit::HOST_KEY_CHANGED,
                format!(
                    "{name}: the running system's SSH host key at {system} is not the one \
                     known for it; nothing was checked. Check the key on the console, then \
                     fix ~/.ssh/known_hosts (or the inventory's system-fingerprint)"
                ),
            ))
        }
        Some(255) if says("host key is known for") || says("Host key verification failed") => {
            Err(failure(
                "host-key-unknown",
                exit::HOST_KEY_UNKNOWN,
                format!(
                    "{name}: the running system's SSH host key at {system} is not in \
                     ~/.ssh/known_hosts; connect once with ssh and check the key (or set \
                     the inventory's system-fingerprint)"
                ),
            ))
        }
        Some(255) if says("Permission denied") => Err(failure(
            "auth-refused",
            exit::AUTH_REFUSED,
            format!(
                "{name}: the running system at {system} refused the login ({}); log in as \
                 a user whose key it accepts (-l USER, or USER@{name})",
                text::line(&last_line(stderr))
            ),
        )),
        Some(255) => Err(failure(
            "unreachable",
            exit::UNREACHABLE,
            format!(
                "{name}: cannot reach the running system's SSH at {system}: {}",
                text::line(&last_line(stderr))
            ),
        )),
        Some(NOT_INSTALLED) => Err(failure(
            "not-installed",
            exit::ERROR,
            format!(
                "{name}: portcullis-preflight is not installed there; install (or upgrade) \
                 portcullis-initramfs on {name}"
            ),
        )),
        Some(_) if says("sudo:") && says("password") => Err(failure(
            "error",
            exit::ERROR,
            format!(
                "{name}: sudo asks for a password; log in as root (-l root) or let this \
                 user run portcullis-preflight with sudo without one (NOPASSWD)"
            ),
        )),
        Some(c) => Err(failure(
            "error",
            exit::ERROR,
            format!(
                "{name}: portcullis-preflight failed (exit {c}): {}",
                text::line(&last_line(stderr))
            ),
        )),
        None => Err(failure(
            "error",
            exit::ERROR,
            format!("{name}: ssh was killed by a signal"),
        )),
    }
}

/// A known-hosts file holding only the system key the inventory pins,
/// removed when dropped.
pub(super) struct PinnedFile(pub(super) PathBuf);

impl Drop for PinnedFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Proves the system at `system` holds the pinned key and writes it where
/// ssh will look for it (ssh then checks the key itself, again).
pub(super) async fn pinned_file(
    name: &str,
    system: &Target,
    pinned: &str,
    timeout: Duration,
) -> Result<PinnedFile, Failure> {
    let key = probe::host_key(system, timeout).await.map_err(|e| {
        failure(
            "unreachable",
            exit::UNREACHABLE,
            format!("{name}: cannot reach the running system's SSH: {e}"),
        )
    })?;
    let got = fingerprint(&key);
    if got != pinned {
        return Err(failure(
            "host-key-changed",
            exit::HOST_KEY_CHANGED,
            format!(
                "{name}: the running system at {system} offered {got}, which does not match \
                 the key pinned for it ({pinned}, the inventory's system-fingerprint); \
                 nothing was checked. Check the key on the console and fix the pin"
            ),
        ));
    }
    let write = || -> Result<PinnedFile> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "portcullis-preflight-{}-{n}.known_hosts",
            std::process::id()
        ));
        let line = known_hosts::pin_line(&known_hosts::host_id(&system.host, system.port), &key)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let file = PinnedFile(path);
        writeln!(f, "{line}").with_context(|| format!("writing {}", file.0.display()))?;
        Ok(file)
    };
    write().map_err(|e| failure("error", exit::ERROR, format!("{name}: {e:#}")))
}

/// Runs ssh and waits for it, within [`RUN_LIMIT`] past the connect
/// timeout.
pub(super) async fn run_ssh(
    args: &[String],
    limit: Duration,
) -> Result<(Option<i32>, Vec<u8>, String)> {
    let mut child = tokio::process::Command::new("ssh")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow!("cannot run ssh (the OpenSSH client): {e}; install openssh-client"))?;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let work = async {
        let o = async {
            if let Some(s) = stdout {
                let _ = s.take(MAX_OUTPUT).read_to_end(&mut out).await;
            }
        };
        let e = async {
            if let Some(s) = stderr {
                let _ = s.take(MAX_OUTPUT).read_to_end(&mut err).await;
            }
        };
        tokio::join!(o, e);
        child.wait().await
    };
    let status = match tokio::time::timeout(limit, work).await {
        Ok(s) => s.context("waiting for ssh")?,
        Err(_) => bail!("no answer within {}", humantime::format_duration(limit)),
    };
    Ok((
        status.code(),
        out,
        String::from_utf8_lossy(&err).into_owned(),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sys() -> Target {
        Target {
            host: "192.0.2.1".into(),
            port: 22,
        }
    }

    #[test]
    fn ssh_failures_become_one_clear_line() {
        let c = |code: i32, err: &str| classify("web1", &sys(), Some(code), b"", err).unwrap_err();
        let f = c(255, "No ED25519 host key is known for 192.0.2.1 and you have requested strict checking.\nHost key verification failed.\n");
        assert_eq!((f.kind, f.code), ("host-key-unknown", 3));
        let f = c(255, "@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.\n");
        assert_eq!((f.kind, f.code), ("host-key-changed", 4));
        let f = c(255, "root@192.0.2.1: Permission denied (publickey).\n");
        assert_eq!((f.kind, f.code), ("auth-refused", 5));
        assert!(f.message.contains("-l USER"), "{}", f.message);
        let f = c(
            255,
            "ssh: connect to host 192.0.2.1 port 22: Connection refused\n",
        );
        assert_eq!((f.kind, f.code), ("unreachable", 6));
        assert!(f.message.contains("Connection refused"));
        let f = c(127, "portcullis-preflight: not found\n");
        assert_eq!(f.kind, "not-installed");
        assert!(f
            .message
            .contains("install (or upgrade) portcullis-initramfs on web1"));
        let f = c(1, "sudo: a password is required\n");
        assert!(f.message.contains("NOPASSWD"), "{}", f.message);
        let f = c(1, "error: /boot/initrd.img: not a cpio archive\n\n");
        assert!(f.message.contains("not a cpio archive") && f.message.contains("exit 1"));
        let f = c(14, "");
        assert!(f.message.contains("no readable report"));
        let f = classify("web1", &sys(), None, b"", "").unwrap_err();
        assert_eq!(f.code, 1);
    }

    #[test]
    fn a_report_is_read_back_and_a_newer_format_refused() {
        let r = crate::fleet::preflight::tests::report(crate::preflight::report::Status::Fail);
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(classify("w", &sys(), Some(14), &json, "").unwrap(), r);
        let mut newer = r.clone();
        newer.format = FORMAT + 1;
        let json = serde_json::to_vec(&newer).unwrap();
        let f = classify("w", &sys(), Some(14), &json, "").unwrap_err();
        assert!(f.message.contains("update portcullis on this workstation"));
        let empty = serde_json::to_vec(&Report::new(vec![])).unwrap();
        let f = classify("w", &sys(), Some(0), &empty, "").unwrap_err();
        assert!(f.message.contains("checked no image"), "{}", f.message);
    }

    #[test]
    fn the_remote_command_is_one_quoted_shell_word_with_sudo_for_non_root() {
        let c = remote_command(&["--image".into(), "/boot/my image".into()]);
        assert!(c.starts_with("sh -c '"), "{c}");
        // Run it through a real shell with a fake portcullis-preflight and
        // a fake sudo: the arguments arrive intact.
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let script = |name: &str, body: &str| {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        script("portcullis-preflight", "printf '%s|' \"$@\"");
        script("sudo", "printf 'sudo|'; shift; exec \"$@\"");
        let want = "--json|--image|/boot/my image|";
        for (uid, expect) in [("0", want.to_string()), ("1000", format!("sudo|{want}"))] {
            // A fake `id`: both branches run whoever runs the test.
            script("id", &format!("echo {uid}"));
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&c)
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), expect, "uid {uid}");
        }
        // Not installed: the marker status (unless this machine has it).
        let installed = ["/usr/local/sbin", "/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join("portcullis-preflight").exists());
        if !installed {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(&c)
                .env("PATH", "/nonexistent")
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(NOT_INSTALLED));
            assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
        }
    }

    #[test]
    fn ssh_gets_strict_checking_and_the_login() {
        let a = ssh_args(
            &Target {
                host: "2001:db8::1".into(),
                port: 2200,
            },
            Some("ops"),
            Some(Path::new("/tmp/kh")),
            &SshSettings {
                config: Some("/home/a/cfg".into()),
                options: vec!["StrictHostKeyChecking=no".into()],
                timeout: Duration::from_secs(20),
            },
            "cmd",
        );
        let s = a.join(" ");
        assert!(
            s.contains("-o BatchMode=yes -o StrictHostKeyChecking=yes"),
            "{s}"
        );
        assert!(s.contains("UserKnownHostsFile=/tmp/kh"));
        // The admin's options come after ours: ssh keeps the first value.
        let ours = s.find("StrictHostKeyChecking=yes").unwrap();
        let theirs = s.find("StrictHostKeyChecking=no").unwrap();
        assert!(ours < theirs, "{s}");
        assert!(s.contains("-F /home/a/cfg -p 2200"), "{s}");
        assert!(s.ends_with("-p 2200 -l ops -- 2001:db8::1 cmd"), "{s}");
    }
}
