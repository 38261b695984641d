//! systemd password agent: answers the `ask.*` requests systemd-cryptsetup
//! leaves in `/run/systemd/ask-password/` (dracut with systemd, mkinitcpio
//! `sd-encrypt`, any systemd initrd). The console agent keeps running beside
//! us; whoever answers first wins.
//!
//! Protocol (systemd "Password Agents"): each request is an ini file with an
//! `[Ask]` section: `Socket=` (an AF_UNIX datagram socket), `PID=`,
//! `NotAfter=` (CLOCK_MONOTONIC µs, 0 = never), `Id=`, `Message=`, `Echo=`.
//! The answer is one datagram: `+` and the passphrase, or `-` to cancel.

use super::crypttab;
use super::volume::mapper_exists;
use super::{Attempt, Backend};
use crate::protocol::{VolumeInfo, VolumeState};
use crate::secret::Passphrase;
use crate::sys::Root;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

pub const ASK_DIR: &str = "/run/systemd/ask-password";

/// One parsed `ask.*` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub file: PathBuf,
    pub socket: PathBuf,
    pub pid: Option<u32>,
    pub not_after: u64,
    pub id: String,
    pub message: String,
}

impl Ask {
    /// The device from `Id=cryptsetup:/dev/…` (empty for other askers).
    pub fn device(&self) -> &str {
        self.id.strip_prefix("cryptsetup:").unwrap_or("")
    }

    /// The volume name: systemd-cryptsetup ends its message with
    /// "… (NAME):" or "… for disk NAME:"; fall back to the device.
    pub fn volume_name(&self) -> String {
        let m = self.message.trim_end().trim_end_matches(':');
        if let (Some(open), true) = (m.rfind('('), m.ends_with(')')) {
            if let Some(inner) = m.get(open + 1..m.len() - 1) {
                if !inner.is_empty() && !inner.contains(' ') {
                    return inner.to_string();
                }
            }
        }
        if let Some((_, last)) = m.rsplit_once(" disk ") {
            if !last.is_empty() && !last.contains(' ') {
                return last.to_string();
            }
        }
        self.device().rsplit('/').next().unwrap_or("").to_string()
    }

    /// The crypttab name for this request when its device is an entry's
    /// source (`UUID=x` is `/dev/disk/by-uuid/x`, and so on), else
    /// [`Ask::volume_name`].
    pub fn name_in(&self, known: &[crypttab::Entry]) -> String {
        let dev = self.device();
        known
            .iter()
            .find(|e| !dev.is_empty() && source_path(&e.source) == dev)
            .map(|e| e.name.clone())
            .unwrap_or_else(|| self.volume_name())
    }
}

/// The /dev path systemd-cryptsetup uses in `Id=` for a crypttab source.
fn source_path(source: &str) -> String {
    let s = source.trim_matches('"');
    for (tag, dir) in [
        ("UUID=", "by-uuid"),
        ("LABEL=", "by-label"),
        ("PARTUUID=", "by-partuuid"),
        ("PARTLABEL=", "by-partlabel"),
        ("ID=", "by-id"),
    ] {
        if let Some(v) = s.strip_prefix(tag) {
            return format!("/dev/disk/{dir}/{v}");
        }
    }
    s.to_string()
}

/// Parses an ask file; `None` when it has no usable `[Ask]` section.
/// Unknown keys are ignored, as the spec asks.
pub fn parse_ask(text: &str, file: PathBuf) -> Option<Ask> {
    let mut in_ask = false;
    let (mut socket, mut pid, mut not_after, mut id, mut message) =
        (None, None, 0u64, String::new(), String::new());
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_ask = line == "[Ask]";
            continue;
        }
        if !in_ask {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim() {
            "Socket" => socket = Some(PathBuf::from(v.trim())),
            "PID" => pid = v.trim().parse().ok(),
            "NotAfter" => not_after = v.trim().parse().unwrap_or(0),
            "Id" => id = v.trim().to_string(),
            "Message" => message = v.trim().to_string(),
            _ => {}
        }
    }
    Some(Ask {
        file,
        socket: socket?,
        pid,
        not_after,
        id,
        message,
    })
}

/// CLOCK_MONOTONIC in microseconds, the clock `NotAfter=` uses.
pub fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes one timespec through the pointer,
    // which points at a live, exclusively borrowed local of the right type;
    // CLOCK_MONOTONIC is always valid. std has no way to read this clock as
    // a number comparable with systemd's NotAfter=.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000) + (ts.tv_nsec as u64) / 1000
}

pub struct SystemdAgent {
    root: Root,
    /// How long to wait for systemd-cryptsetup's verdict on one answer.
    pub verdict_timeout: Duration,
    /// How long an answered request may be gone, with its asker gone too,
    /// before we say systemd-cryptsetup gave up.
    gone_grace: Duration,
    clock: fn() -> u64,
}

impl SystemdAgent {
    pub fn new(root: Root) -> Self {
        SystemdAgent {
            root,
            verdict_timeout: Duration::from_secs(90),
            gone_grace: Duration::from_secs(15),
            clock: monotonic_us,
        }
    }

    #[cfg(test)]
    fn with_clock(root: Root, clock: fn() -> u64) -> Self {
        SystemdAgent {
            root,
            verdict_timeout: Duration::from_secs(2),
            gone_grace: Duration::from_millis(300),
            clock,
        }
    }

    /// Live cryptsetup requests: not expired, asker alive, sorted by file.
    pub fn pending_asks(&self) -> Vec<Ask> {
        let Ok(dir) = std::fs::read_dir(self.root.join(ASK_DIR)) else {
            return vec![];
        };
        let now = (self.clock)();
        let mut asks: Vec<Ask> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("ask."))
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                parse_ask(&text, e.path())
            })
            .filter(|a| a.id.starts_with("cryptsetup:"))
            .filter(|a| a.not_after == 0 || a.not_after > now)
            .filter(|a| {
                a.pid
                    .is_none_or(|p| self.root.join(format!("/proc/{p}")).exists())
            })
            .collect();
        asks.sort_by(|a, b| a.file.cmp(&b.file));
        asks
    }

    fn info(&self, name: &str, device: &str, state: VolumeState) -> VolumeInfo {
        VolumeInfo {
            name: name.to_string(),
            device: device.to_string(),
            backend: "systemd".into(),
            state,
            tries_left: None,
        }
    }

    /// Sends `+passphrase` to the asker's socket.
    fn answer(&self, ask: &Ask, pass: &Passphrase) -> std::io::Result<()> {
        let mut msg = Zeroizing::new(Vec::with_capacity(pass.len() + 1));
        msg.push(b'+');
        msg.extend_from_slice(pass.expose());
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        sock.send_to(&msg, self.root.join(&ask.socket))?;
        Ok(())
    }

    /// Waits for the verdict on an answered request: the mapper device
    /// appears (opened), or the same Id asks again (wrong passphrase), or
    /// the request vanishes without either (the asker gave up).
    fn verdict(&self, ask: &Ask, name: &str) -> Attempt {
        let deadline = Instant::now() + self.verdict_timeout;
        let mut gone_since: Option<Instant> = None;
        while Instant::now() < deadline {
            if mapper_exists(&self.root, name) {
                return Attempt::Opened;
            }
            let now_pending = self.pending_asks();
            if now_pending
                .iter()
                .any(|a| a.id == ask.id && a.file != ask.file)
            {
                return Attempt::WrongPassphrase;
            }
            // The asker removes the request when it reads the answer, then
            // runs the key derivation, which can take longer than any fixed
            // grace on a slow or busy machine: while it lives, it is working.
            let asker_alive = ask
                .pid
                .is_some_and(|p| self.root.join(format!("/proc/{p}")).exists());
            if asker_alive {
                gone_since = None;
            } else if !now_pending.iter().any(|a| a.file == ask.file) {
                // Answered and removed; give the mapper or a re-ask a moment.
                let since = *gone_since.get_or_insert_with(Instant::now);
                if since.elapsed() > self.gone_grace {
                    return Attempt::Failed("systemd-cryptsetup stopped asking without opening the volume; see the console/journal".into());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Attempt::Failed(format!(
            "no verdict from systemd-cryptsetup within {:?}",
            self.verdict_timeout
        ))
    }

    /// Volumes this initrd will unlock: its `/etc/crypttab`, plus
    /// `rd.luks.name=`/`rd.luks.uuid=` on the kernel command line (images
    /// built without a crypttab rely on those alone).
    fn known(&self) -> Vec<crypttab::Entry> {
        let mut known = std::fs::read_to_string(self.root.join("/etc/crypttab"))
            .map(|t| crypttab::parse(&t))
            .unwrap_or_default();
        let cmdline = std::fs::read_to_string(self.root.join("/proc/cmdline")).unwrap_or_default();
        for v in super::volume::from_cmdline(&cmdline).0 {
            if !known.iter().any(|e| e.name == v.name) {
                known.push(crypttab::Entry {
                    name: v.name,
                    source: v.device.to_string(),
                    key: "none".into(),
                    options: String::new(),
                });
            }
        }
        known
    }
}

impl Backend for SystemdAgent {
    fn name(&self) -> &'static str {
        "systemd"
    }

    fn status(&self) -> Vec<VolumeInfo> {
        let mut out: Vec<VolumeInfo> = Vec::new();
        let known = self.known();
        for a in self.pending_asks() {
            let name = a.name_in(&known);
            if !out.iter().any(|v| v.name == name) {
                out.push(self.info(&name, a.device(), VolumeState::Pending));
            }
        }
        for e in known {
            if out.iter().any(|v| v.name == e.name) {
                continue;
            }
            let state = if mapper_exists(&self.root, &e.name) {
                VolumeState::Open
            } else {
                VolumeState::Pending
            };
            out.push(self.info(&e.name, &e.source, state));
        }
        out
    }

    fn try_unlock(&self, pass: &Passphrase) -> Vec<(VolumeInfo, Attempt)> {
        let mut out = Vec::new();
        let mut answered: Vec<String> = Vec::new();
        let mut vanished: Vec<PathBuf> = Vec::new();
        // Volumes may start asking one after another (a data volume after
        // root): keep answering new requests for a short while.
        let mut quiet_until = Instant::now() + Duration::from_secs(2);
        loop {
            let fresh: Vec<Ask> = self
                .pending_asks()
                .into_iter()
                .filter(|a| !answered.contains(&a.id) && !vanished.contains(&a.file))
                .collect();
            if fresh.is_empty() {
                if Instant::now() >= quiet_until || out.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let known = self.known();
            // Answer every waiting volume first, then collect the verdicts:
            // the key derivations run side by side, and a volume answered
            // only after root opened may be cut off by switch-root.
            let mut sent = Vec::new();
            for ask in fresh {
                let name = ask.name_in(&known);
                let info = self.info(&name, ask.device(), VolumeState::Pending);
                match self.answer(&ask, pass) {
                    Ok(()) => sent.push((ask, name, info)),
                    // The request went away between listing and answering:
                    // systemd-cryptsetup took a passphrase from the kernel
                    // keyring (a sibling's answer) or the console won. Not
                    // a failure; a new request, if any, is answered later.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                        ) =>
                    {
                        tracing::debug!(volume = %name, "password request vanished before the answer");
                        vanished.push(ask.file.clone());
                    }
                    Err(e) => {
                        let attempt =
                            Attempt::Failed(format!("answering {}: {e}", ask.socket.display()));
                        tracing::info!(volume = %name, result = ?attempt, "answered a systemd password request");
                        answered.push(ask.id.clone());
                        out.push((info, attempt));
                    }
                }
            }
            for (ask, name, info) in sent {
                let attempt = self.verdict(&ask, &name);
                answered.push(ask.id.clone());
                tracing::info!(volume = %name, result = ?attempt, "answered a systemd password request");
                out.push((info, attempt));
            }
            // Every known volume is open: reply now, before systemd moves on
            // to switch-root and stops us.
            if self.all_open() {
                break;
            }
            quiet_until = Instant::now() + Duration::from_secs(2);
        }
        out
    }

    fn all_open(&self) -> bool {
        let known = self.known();
        !known.is_empty()
            && self.pending_asks().is_empty()
            && known.iter().all(|e| mapper_exists(&self.root, &e.name))
    }
}

/// Whether this looks like a systemd initrd.
pub fn detect(root: &Root) -> bool {
    root.join("/run/systemd/system").is_dir() || root.join(ASK_DIR).is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::path::Path;

    fn now() -> u64 {
        1_000_000
    }

    fn write_ask(root: &Path, n: u32, id: &str, msg: &str, not_after: u64, sock: &str) {
        let dir = root.join("run/systemd/ask-password");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("ask.{n}")),
            format!("[Ask]\nPID=1\nSocket={sock}\nAcceptCached=1\nEcho=0\nNotAfter={not_after}\nId={id}\nMessage={msg}\nIcon=drive-harddisk\nSomethingNew=1\n"),
        )
        .unwrap();
    }

    #[test]
    fn known_volumes_include_kernel_command_line() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("proc")).unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/crypttab"), "root UUID=aaaa none luks\n").unwrap();
        std::fs::write(
            t.path().join("proc/cmdline"),
            "quiet rd.luks.name=bbbb=data rd.luks.uuid=aaaa\n",
        )
        .unwrap();
        let agent = SystemdAgent::with_clock(Root::new(t.path()), now);
        let names: Vec<String> = agent.known().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["root", "data", "luks-aaaa"]);
        assert!(!agent.all_open());
        std::fs::create_dir_all(t.path().join("dev/mapper")).unwrap();
        for n in &names {
            std::fs::write(t.path().join("dev/mapper").join(n), b"").unwrap();
        }
        assert!(agent.all_open());
    }

    #[test]
    fn parse_and_names() {
        let a = parse_ask(
            "[Ask]\nSocket=/run/systemd/ask-password/sck.1\nPID=42\nNotAfter=0\nId=cryptsetup:/dev/vda2\nMessage=Please enter passphrase for disk QEMU (root):\n",
            "ask.1".into(),
        )
        .unwrap();
        assert_eq!(a.pid, Some(42));
        assert_eq!(a.device(), "/dev/vda2");
        assert_eq!(a.volume_name(), "root");
        assert!(parse_ask("[Other]\nSocket=/x\n", "f".into()).is_none());
        let b = parse_ask(
            "[Ask]\nSocket=/s\nId=cryptsetup:/dev/sdb1\nMessage=Enter it\n",
            "f".into(),
        )
        .unwrap();
        assert_eq!(b.volume_name(), "sdb1");
    }

    /// systemd 252 (Debian 12) asks "Please enter passphrase for disk root:"
    /// with Id=cryptsetup:/dev/disk/by-uuid/…: the crypttab entry whose
    /// source is that device names the volume.
    #[test]
    fn names_from_crypttab_source() {
        let a = parse_ask(
            "[Ask]\nSocket=/s\nId=cryptsetup:/dev/disk/by-uuid/5a1e-01\nMessage=Please enter passphrase for disk root:\n",
            "f".into(),
        )
        .unwrap();
        assert_eq!(a.volume_name(), "root");
        let known = crypttab::parse("root UUID=5a1e-00 none\ncrypt-a UUID=5a1e-01 none luks\n");
        assert_eq!(a.name_in(&known), "crypt-a");
        assert_eq!(a.name_in(&[]), "root");
        let p = parse_ask(
            "[Ask]\nSocket=/s\nId=cryptsetup:/dev/vdb\nMessage=Enter\n",
            "f".into(),
        )
        .unwrap();
        assert_eq!(p.name_in(&crypttab::parse("data /dev/vdb none\n")), "data");
    }

    #[test]
    fn pending_skips_expired_dead_and_foreign() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("proc/1")).unwrap();
        write_ask(t.path(), 1, "cryptsetup:/dev/vda", "(root):", 0, "/run/s1");
        write_ask(t.path(), 2, "cryptsetup:/dev/vdb", "(old):", 10, "/run/s2");
        write_ask(t.path(), 3, "ssh-key:x", "(x):", 0, "/run/s3");
        let dir = t.path().join("run/systemd/ask-password");
        std::fs::write(
            dir.join("ask.4"),
            "[Ask]\nPID=999\nSocket=/s\nId=cryptsetup:/dev/vdc\n",
        )
        .unwrap();
        let agent = SystemdAgent::with_clock(Root::new(t.path()), now);
        let p = agent.pending_asks();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].volume_name(), "root");
    }

    #[test]
    fn answers_with_exact_datagram_and_sees_success() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("proc/1")).unwrap();
        std::fs::create_dir_all(t.path().join("run")).unwrap();
        let sock = UnixDatagram::bind(t.path().join("run/sck.1")).unwrap();
        write_ask(
            t.path(),
            1,
            "cryptsetup:/dev/vda",
            "Please enter passphrase for disk X (root):",
            0,
            "/run/sck.1",
        );
        let root = t.path().to_path_buf();
        // Play systemd-cryptsetup: read the answer, open on the right one.
        let asker = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let n = sock.recv(&mut buf).unwrap();
            let got = buf[..n].to_vec();
            std::fs::remove_file(root.join("run/systemd/ask-password/ask.1")).unwrap();
            std::fs::create_dir_all(root.join("dev/mapper")).unwrap();
            std::fs::write(root.join("dev/mapper/root"), b"").unwrap();
            got
        });
        let agent = SystemdAgent::with_clock(Root::new(t.path()), now);
        let pass = Passphrase::new(b"open sesame".to_vec()).unwrap();
        let r = agent.try_unlock(&pass);
        assert_eq!(asker.join().unwrap(), b"+open sesame");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1, Attempt::Opened);
        assert_eq!(r[0].0.name, "root");
    }

    /// Key derivation slower than the grace (argon2 on a busy machine): the
    /// asker is alive, so the agent waits for the mapper rather than failing.
    /// Once the asker is gone without a mapper, it fails after the grace.
    #[test]
    fn slow_key_derivation_is_not_giving_up() {
        for asker_lives in [true, false] {
            let t = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(t.path().join("proc/1")).unwrap();
            std::fs::create_dir_all(t.path().join("run")).unwrap();
            let sock = UnixDatagram::bind(t.path().join("run/sck.1")).unwrap();
            write_ask(
                t.path(),
                1,
                "cryptsetup:/dev/vda",
                "(root):",
                0,
                "/run/sck.1",
            );
            let root = t.path().to_path_buf();
            let asker = std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let _ = sock.recv(&mut buf).unwrap();
                std::fs::remove_file(root.join("run/systemd/ask-password/ask.1")).unwrap();
                if !asker_lives {
                    std::fs::remove_dir(root.join("proc/1")).unwrap();
                    return;
                }
                // Three times the grace before the volume opens.
                std::thread::sleep(Duration::from_millis(900));
                std::fs::create_dir_all(root.join("dev/mapper")).unwrap();
                std::fs::write(root.join("dev/mapper/root"), b"").unwrap();
            });
            let agent = SystemdAgent::with_clock(Root::new(t.path()), now);
            let r = agent.try_unlock(&Passphrase::new(b"slow".to_vec()).unwrap());
            asker.join().unwrap();
            if asker_lives {
                assert_eq!(r[0].1, Attempt::Opened);
            } else {
                assert!(
                    matches!(&r[0].1, Attempt::Failed(m) if m.contains("stopped asking")),
                    "{r:?}"
                );
            }
        }
    }

    /// Both volumes are answered before any verdict is awaited: here root's
    /// asker opens only once data has its answer too (as switch-root would
    /// cut data off if it were answered only after root opened).
    #[test]
    fn answers_every_volume_before_waiting() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("proc/1")).unwrap();
        std::fs::create_dir_all(t.path().join("run")).unwrap();
        std::fs::create_dir_all(t.path().join("dev/mapper")).unwrap();
        let s1 = UnixDatagram::bind(t.path().join("run/sck.1")).unwrap();
        let s2 = UnixDatagram::bind(t.path().join("run/sck.2")).unwrap();
        write_ask(
            t.path(),
            1,
            "cryptsetup:/dev/vda",
            "(root):",
            0,
            "/run/sck.1",
        );
        write_ask(
            t.path(),
            2,
            "cryptsetup:/dev/vdb",
            "(data):",
            0,
            "/run/sck.2",
        );
        let (r1, r2) = (t.path().to_path_buf(), t.path().to_path_buf());
        let root_asker = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let _ = s1.recv(&mut buf).unwrap();
            std::fs::remove_file(r1.join("run/systemd/ask-password/ask.1")).unwrap();
            let start = Instant::now();
            while !r1.join("dev/mapper/data").exists() {
                if start.elapsed() > Duration::from_secs(1) {
                    return; // data never answered: root "fails" too
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::fs::write(r1.join("dev/mapper/root"), b"").unwrap();
        });
        let data_asker = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let _ = s2.recv(&mut buf).unwrap();
            std::fs::remove_file(r2.join("run/systemd/ask-password/ask.2")).unwrap();
            std::fs::write(r2.join("dev/mapper/data"), b"").unwrap();
        });
        let agent = SystemdAgent::with_clock(Root::new(t.path()), now);
        let r = agent.try_unlock(&Passphrase::new(b"both".to_vec()).unwrap());
        root_asker.join().unwrap();
        data_asker.join().unwrap();
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r.iter().all(|(_, a)| *a == Attempt::Opened), "{r:?}");
    }

    #[test]
    fn wrong_passphrase_is_a_reask() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("proc/1")).unwrap();
        std::fs::create_dir_all(t.path().join("run")).unwrap();
        let sock = UnixDatagram::bind(t.path().join("run/sck.1")).unwrap();
        write_ask(
            t.path(),
            1,
            "cryptsetup:/dev/vda",
            "(root):",
            0,
            "/run/sck.1",
        );
        let root = t.path().to_path_buf();
        let asker = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let _ = sock.recv(&mut buf).unwrap();
            std::fs::remove_file(root.join("run/systemd/ask-password/ask.1")).unwrap();
            write_ask(&root, 2, "cryptsetup:/dev/vda", "(root):", 0, "/run/sck.2");
        });
        let agent = SystemdAgent::with_clock(Root::new(t.path()), now);
        let r = agent.try_unlock(&Passphrase::new(b"nope".to_vec()).unwrap());
        asker.join().unwrap();
        assert_eq!(r[0].1, Attempt::WrongPassphrase);
        let reply = crate::unlock::summarize(&r, agent.status());
        assert_eq!(reply.outcome, crate::protocol::Outcome::WrongPassphrase);
    }
}
