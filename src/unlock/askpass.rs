//! Debian cryptsetup-initramfs backend: what `cryptroot-unlock` does, for
//! every pending volume in one go.
//!
//! Debian's `cryptroot` script runs `/lib/cryptsetup/askpass` per volume;
//! askpass reads the console *and* the fifo `/lib/cryptsetup/passfifo`, so we
//! find the waiting askpass (its environment carries `CRYPTTAB_NAME` and
//! `CRYPTTAB_TRIED`), write the passphrase into the fifo and close it, then
//! watch the outcome: `/dev/mapper/NAME` appears (opened) or askpass comes
//! back for the same volume with a higher `CRYPTTAB_TRIED` (wrong).

use super::crypttab;
use super::volume::mapper_exists;
use super::{Attempt, Backend};
use crate::protocol::{VolumeInfo, VolumeState};
use crate::secret::Passphrase;
use crate::sys::Root;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const ASKPASS: &str = "/lib/cryptsetup/askpass";
pub const FIFO: &str = "/lib/cryptsetup/passfifo";
pub const CRYPTTAB: &str = "/cryptroot/crypttab";

/// A waiting askpass process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asker {
    pub pid: u32,
    pub name: String,
    pub source: String,
    pub tried: u32,
}

pub struct Askpass {
    root: Root,
    pub verdict_timeout: Duration,
    /// How long to wait for the next volume's askpass after one opened.
    pub next_volume_wait: Duration,
}

impl Askpass {
    pub fn new(root: Root) -> Self {
        Askpass {
            root,
            verdict_timeout: Duration::from_secs(90),
            next_volume_wait: Duration::from_secs(5),
        }
    }

    /// askpass processes, found by their executable or argv[0].
    pub fn askers(&self) -> Vec<Asker> {
        let Ok(dir) = std::fs::read_dir(self.root.join("/proc")) else {
            return vec![];
        };
        let mut out: Vec<Asker> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| self.asker(pid))
            .collect();
        out.sort_by_key(|a| a.pid);
        out
    }

    fn asker(&self, pid: u32) -> Option<Asker> {
        let base = self.root.join(format!("/proc/{pid}"));
        let exe_is_askpass = std::fs::read_link(base.join("exe"))
            .map(|p| p.ends_with("cryptsetup/askpass"))
            .unwrap_or(false);
        let argv0_is_askpass = std::fs::read(base.join("cmdline"))
            .ok()
            .and_then(|c| {
                let first = c.split(|&b| b == 0).next()?.to_vec();
                Some(first.ends_with(b"/askpass") || first == b"askpass")
            })
            .unwrap_or(false);
        if !exe_is_askpass && !argv0_is_askpass {
            return None;
        }
        let env = std::fs::read(base.join("environ")).ok()?;
        let var = |k: &str| -> Option<String> {
            env.split(|&b| b == 0).find_map(|kv| {
                let kv = std::str::from_utf8(kv).ok()?;
                kv.strip_prefix(k)?.strip_prefix('=').map(str::to_string)
            })
        };
        Some(Asker {
            pid,
            name: var("CRYPTTAB_NAME")?,
            source: var("CRYPTTAB_SOURCE").unwrap_or_default(),
            tried: var("CRYPTTAB_TRIED")
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
        })
    }

    fn known(&self) -> Vec<crypttab::Entry> {
        std::fs::read_to_string(self.root.join(CRYPTTAB))
            .map(|t| crypttab::parse(&t))
            .unwrap_or_default()
    }

    fn info(&self, name: &str, source: &str, state: VolumeState) -> VolumeInfo {
        VolumeInfo {
            name: name.into(),
            device: source.into(),
            backend: "askpass".into(),
            state,
            tries_left: None,
        }
    }

    /// Writes the passphrase into the fifo without a newline and closes it
    /// (askpass reads to EOF). Retries briefly while askpass is not yet
    /// reading (ENXIO on a non-blocking open of a fifo without a reader).
    fn deliver(&self, pass: &Passphrase) -> std::io::Result<()> {
        let path: PathBuf = self.root.join(FIFO);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
            {
                Ok(mut f) => return f.write_all(pass.expose()),
                Err(e)
                    if Instant::now() < deadline
                        && matches!(e.raw_os_error(), Some(libc::ENXIO) | Some(libc::ENOENT)) =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("opening {FIFO}: {e}"),
                    ))
                }
            }
        }
    }

    fn verdict(&self, asked: &Asker) -> Attempt {
        let deadline = Instant::now() + self.verdict_timeout;
        while Instant::now() < deadline {
            if mapper_exists(&self.root, &asked.name) {
                return Attempt::Opened;
            }
            if self
                .askers()
                .iter()
                .any(|a| a.name == asked.name && (a.tried > asked.tried || a.pid != asked.pid))
            {
                return Attempt::WrongPassphrase;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Attempt::Failed(format!(
            "no verdict from cryptroot for {} within {:?}",
            asked.name, self.verdict_timeout
        ))
    }
}

impl Backend for Askpass {
    fn name(&self) -> &'static str {
        "askpass"
    }

    fn status(&self) -> Vec<VolumeInfo> {
        let mut out: Vec<VolumeInfo> = self
            .known()
            .iter()
            .map(|e| {
                let st = if mapper_exists(&self.root, &e.name) {
                    VolumeState::Open
                } else {
                    VolumeState::Pending
                };
                self.info(&e.name, &e.source, st)
            })
            .collect();
        for a in self.askers() {
            if !out.iter().any(|v| v.name == a.name) {
                out.push(self.info(&a.name, &a.source, VolumeState::Pending));
            }
        }
        out
    }

    fn try_unlock(&self, pass: &Passphrase) -> Vec<(VolumeInfo, Attempt)> {
        let mut out: Vec<(VolumeInfo, Attempt)> = Vec::new();
        let mut done: Vec<String> = Vec::new();
        let mut wait_until = Instant::now() + Duration::from_secs(3);
        loop {
            let next = self
                .askers()
                .into_iter()
                .find(|a| !done.contains(&a.name) && !mapper_exists(&self.root, &a.name));
            let Some(asker) = next else {
                if Instant::now() >= wait_until {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            done.push(asker.name.clone());
            let info = self.info(&asker.name, &asker.source, VolumeState::Pending);
            let attempt = match self.deliver(pass) {
                Ok(()) => self.verdict(&asker),
                Err(e) => Attempt::Failed(e.to_string()),
            };
            tracing::info!(volume = %asker.name, tried = asker.tried, result = ?attempt, "answered askpass");
            let opened = attempt == Attempt::Opened;
            out.push((info, attempt));
            if !opened {
                break;
            }
            // Every known volume is open: reply now. Waiting for another
            // askpass would hold the reply until init-bottom stops us.
            if self.all_open() {
                break;
            }
            // cryptroot handles volumes one after another: the next askpass
            // shows up once this one is set up.
            wait_until = Instant::now() + self.next_volume_wait;
        }
        out
    }

    fn all_open(&self) -> bool {
        let known = self.known();
        !known.is_empty() && known.iter().all(|e| mapper_exists(&self.root, &e.name))
    }
}

/// Whether this looks like a Debian initramfs with cryptsetup-initramfs.
pub fn detect(root: &Root) -> bool {
    root.join(ASKPASS).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::path::Path;

    fn fake_askpass(root: &Path, pid: u32, name: &str, tried: u32) {
        let d = root.join(format!("proc/{pid}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("cmdline"),
            b"/lib/cryptsetup/askpass\0Please unlock disk root: \0",
        )
        .unwrap();
        std::fs::write(
            d.join("environ"),
            format!("PATH=/sbin\0CRYPTTAB_NAME={name}\0CRYPTTAB_SOURCE=/dev/vd{name}\0CRYPTTAB_TRIED={tried}\0"),
        )
        .unwrap();
    }

    fn mkfifo(p: &Path) {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a NUL-terminated string that outlives the call;
        // mkfifo only reads it. Test-only: std cannot create a fifo.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0);
    }

    #[test]
    fn finds_askers() {
        let t = tempfile::tempdir().unwrap();
        fake_askpass(t.path(), 300, "root", 1);
        std::fs::create_dir_all(t.path().join("proc/12")).unwrap();
        std::fs::write(t.path().join("proc/12/cmdline"), b"/bin/sh\0").unwrap();
        let a = Askpass::new(Root::new(t.path()));
        assert_eq!(
            a.askers(),
            vec![Asker {
                pid: 300,
                name: "root".into(),
                source: "/dev/vdroot".into(),
                tried: 1
            }]
        );
    }

    /// Two volumes, one passphrase: the fifo gets the exact bytes twice, and
    /// the second askpass (which appears after the first volume opened) is
    /// answered in the same call.
    #[test]
    fn unlocks_two_volumes_in_one_call() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        std::fs::create_dir_all(root.join("lib/cryptsetup")).unwrap();
        std::fs::create_dir_all(root.join("cryptroot")).unwrap();
        std::fs::write(
            root.join("cryptroot/crypttab"),
            "root /dev/vda none luks\ndata /dev/vdb none luks\n",
        )
        .unwrap();
        mkfifo(&root.join("lib/cryptsetup/passfifo"));
        fake_askpass(&root, 100, "root", 0);
        let r2 = root.clone();
        // Play cryptroot: read the fifo to EOF, open the volume, start the
        // next askpass.
        let cryptroot = std::thread::spawn(move || {
            let mut got = Vec::new();
            for (pid, name) in [(100u32, "root"), (101, "data")] {
                let mut s = Vec::new();
                std::fs::File::open(r2.join("lib/cryptsetup/passfifo"))
                    .unwrap()
                    .read_to_end(&mut s)
                    .unwrap();
                got.push(s);
                std::fs::remove_dir_all(r2.join(format!("proc/{pid}"))).unwrap();
                std::fs::create_dir_all(r2.join("dev/mapper")).unwrap();
                std::fs::write(r2.join("dev/mapper").join(name), b"").unwrap();
                if name == "root" {
                    fake_askpass(&r2, 101, "data", 0);
                }
            }
            got
        });
        let a = Askpass::new(Root::new(&root));
        assert!(!a.all_open());
        let r = a.try_unlock(&Passphrase::new(b"two for one".to_vec()).unwrap());
        let got = cryptroot.join().unwrap();
        assert_eq!(got, vec![b"two for one".to_vec(), b"two for one".to_vec()]);
        assert_eq!(
            r.iter()
                .map(|(v, a)| (v.name.as_str(), a.clone()))
                .collect::<Vec<_>>(),
            vec![("root", Attempt::Opened), ("data", Attempt::Opened)]
        );
        assert!(a.all_open());
    }

    #[test]
    fn wrong_passphrase_seen_as_retry() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        std::fs::create_dir_all(root.join("lib/cryptsetup")).unwrap();
        mkfifo(&root.join("lib/cryptsetup/passfifo"));
        fake_askpass(&root, 100, "root", 0);
        let r2 = root.clone();
        let cryptroot = std::thread::spawn(move || {
            let mut s = Vec::new();
            std::fs::File::open(r2.join("lib/cryptsetup/passfifo"))
                .unwrap()
                .read_to_end(&mut s)
                .unwrap();
            std::fs::remove_dir_all(r2.join("proc/100")).unwrap();
            fake_askpass(&r2, 102, "root", 1);
        });
        let a = Askpass::new(Root::new(&root));
        let r = a.try_unlock(&Passphrase::new(b"bad".to_vec()).unwrap());
        cryptroot.join().unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1, Attempt::WrongPassphrase);
    }
}
