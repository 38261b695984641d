//! Direct backend: runs `cryptsetup open` with the passphrase on stdin.
//!
//! Used where nothing else is asking for the passphrase (busybox initramfs,
//! the minimal test image). Tries are counted here, per volume, per boot.

use super::volume::{mapper_exists, resolve, Volume};
use super::{Attempt, Backend};
use crate::protocol::{VolumeInfo, VolumeState};
use crate::secret::Passphrase;
use crate::sys::{Root, Runner};
use std::path::PathBuf;
use std::sync::Mutex;

/// cryptsetup's exit code for "No key available with this passphrase".
const EXIT_WRONG_KEY: i32 = 2;
/// cryptsetup's exit code for "device already exists or device is busy".
const EXIT_BUSY: i32 = 5;

pub struct Cryptsetup<R: Runner> {
    runner: R,
    root: Root,
    program: PathBuf,
    max_tries: u32,
    /// Volumes and the tries used on each; the lock also serializes attempts
    /// so two sessions never run cryptsetup on the same device at once.
    volumes: Mutex<Vec<(Volume, u32)>>,
}

impl<R: Runner> Cryptsetup<R> {
    pub fn new(
        runner: R,
        root: Root,
        program: PathBuf,
        volumes: Vec<Volume>,
        max_tries: u32,
    ) -> Self {
        Cryptsetup {
            runner,
            root,
            program,
            max_tries,
            volumes: Mutex::new(volumes.into_iter().map(|v| (v, 0)).collect()),
        }
    }

    fn info(&self, vol: &Volume, used: u32) -> VolumeInfo {
        let tries_left = self.max_tries.saturating_sub(used);
        let state = if mapper_exists(&self.root, &vol.name) {
            VolumeState::Open
        } else if resolve(&self.root, &vol.device).is_none() {
            VolumeState::Missing
        } else if tries_left == 0 {
            VolumeState::Exhausted
        } else {
            VolumeState::Pending
        };
        VolumeInfo {
            name: vol.name.clone(),
            device: vol.device.to_string(),
            backend: "cryptsetup".into(),
            state,
            tries_left: Some(tries_left),
        }
    }

    #[tracing::instrument(skip_all, fields(volume = %vol.name))]
    fn open_one(&self, vol: &Volume, pass: &Passphrase) -> Attempt {
        let Some(dev) = resolve(&self.root, &vol.device) else {
            return Attempt::Missing;
        };
        // The cryptdevice= options (discards above all) apply here as on the
        // console path, so a volume opened over SSH is the same volume.
        let mut args = vec![
            "open".to_string(),
            "--type".into(),
            "luks".into(),
            "--key-file=-".into(),
        ];
        args.extend(vol.options.args());
        args.push(self.root.join(&dev).display().to_string());
        args.push(vol.name.clone());
        match self.runner.run(&self.program, &args, Some(pass.expose())) {
            Err(e) => Attempt::Failed(format!("{e}; is cryptsetup installed at that path?")),
            Ok(out) if out.success() => Attempt::Opened,
            Ok(out) if out.code == Some(EXIT_WRONG_KEY) => Attempt::WrongPassphrase,
            Ok(_) if mapper_exists(&self.root, &vol.name) => Attempt::AlreadyOpen,
            Ok(out) => {
                let line = out.stderr_line();
                let what = if line.is_empty() {
                    format!("cryptsetup exited with {:?}", out.code)
                } else if out.code == Some(EXIT_BUSY) {
                    format!("{line} (device busy or name {} taken)", vol.name)
                } else {
                    line
                };
                Attempt::Failed(what)
            }
        }
    }
}

impl<R: Runner> Backend for Cryptsetup<R> {
    fn name(&self) -> &'static str {
        "cryptsetup"
    }

    fn status(&self) -> Vec<VolumeInfo> {
        match self.volumes.lock() {
            Ok(vols) => vols.iter().map(|(v, used)| self.info(v, *used)).collect(),
            Err(_) => vec![],
        }
    }

    fn try_unlock(&self, pass: &Passphrase) -> Vec<(VolumeInfo, Attempt)> {
        let Ok(mut vols) = self.volumes.lock() else {
            return vec![];
        };
        let mut out = Vec::new();
        for (vol, used) in vols.iter_mut() {
            let before = self.info(vol, *used);
            let attempt = match before.state {
                VolumeState::Open | VolumeState::Unlocking => continue,
                VolumeState::Exhausted => Attempt::NoTriesLeft,
                VolumeState::Missing => Attempt::Missing,
                VolumeState::Pending => self.open_one(vol, pass),
            };
            if attempt == Attempt::WrongPassphrase {
                *used += 1;
            }
            out.push((before, attempt));
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sys::Output;
    use crate::unlock::volume::{DeviceSpec, OpenOptions};
    use std::path::Path;
    use std::sync::Arc;

    /// Arguments and stdin of every cryptsetup run.
    pub(crate) type Calls = Arc<Mutex<Vec<(Vec<String>, Vec<u8>)>>>;

    /// Records every call; answers from a closure. Creates the mapper node
    /// on success so state follows as it would on a real system.
    pub(crate) struct FakeCryptsetup {
        pub calls: Calls,
        pub root: PathBuf,
        pub answer: fn(&[u8]) -> Output,
    }

    impl Runner for FakeCryptsetup {
        fn run(&self, _p: &Path, args: &[String], stdin: Option<&[u8]>) -> std::io::Result<Output> {
            let stdin = stdin.unwrap_or_default().to_vec();
            let out = (self.answer)(&stdin);
            if out.success() {
                let name = args.last().cloned().unwrap_or_default();
                std::fs::create_dir_all(self.root.join("dev/mapper"))?;
                std::fs::write(self.root.join("dev/mapper").join(name), b"")?;
            }
            self.calls.lock().unwrap().push((args.to_vec(), stdin));
            Ok(out)
        }
    }

    pub(crate) fn answer_sesame(stdin: &[u8]) -> Output {
        if stdin == b"sesame" {
            Output {
                code: Some(0),
                ..Default::default()
            }
        } else {
            Output {
                code: Some(2),
                stderr: b"No key available with this passphrase.\n".to_vec(),
                ..Default::default()
            }
        }
    }

    fn oom(_: &[u8]) -> Output {
        Output {
            code: Some(1),
            stderr: b"Not enough available memory to open a keyslot.\n".to_vec(),
            ..Default::default()
        }
    }

    pub(crate) fn fake_tree(devs: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("dev")).unwrap();
        for d in devs {
            std::fs::write(t.path().join("dev").join(d), b"").unwrap();
        }
        t
    }

    pub(crate) fn backend(
        t: &tempfile::TempDir,
        vols: &[(&str, &str)],
        answer: fn(&[u8]) -> Output,
    ) -> (Cryptsetup<FakeCryptsetup>, Calls) {
        let calls = Arc::new(Mutex::new(vec![]));
        let runner = FakeCryptsetup {
            calls: calls.clone(),
            root: t.path().into(),
            answer,
        };
        let volumes = vols
            .iter()
            .map(|(n, d)| {
                let (dev, opts) = d.split_once(' ').unwrap_or((d, ""));
                Volume {
                    name: n.to_string(),
                    device: DeviceSpec::parse(dev).unwrap(),
                    options: OpenOptions::parse(opts).0,
                }
            })
            .collect();
        (
            Cryptsetup::new(
                runner,
                Root::new(t.path()),
                "/sbin/cryptsetup".into(),
                volumes,
                3,
            ),
            calls,
        )
    }

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn passphrase_goes_to_stdin_only() {
        let t = fake_tree(&["vda"]);
        let (b, calls) = backend(&t, &[("root", "/dev/vda")], answer_sesame);
        let r = crate::unlock::unlock(&b, &pass("sesame"));
        assert_eq!(r.outcome, crate::protocol::Outcome::Unlocked);
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 1);
        let (args, stdin) = &calls[0];
        assert_eq!(stdin, b"sesame");
        assert!(args.iter().all(|a| !a.contains("sesame")));
        assert_eq!(args[..4], ["open", "--type", "luks", "--key-file=-"]);
        assert_eq!(args.last().unwrap(), "root");
        assert!(b.all_open());
    }

    #[test]
    fn cryptdevice_options_reach_cryptsetup() {
        let t = fake_tree(&["vda", "vdb"]);
        let (b, calls) = backend(
            &t,
            &[
                (
                    "root",
                    "/dev/vda allow-discards,sector-size=4096,no-read-workqueue",
                ),
                ("data", "/dev/vdb no-write-workqueue"),
            ],
            answer_sesame,
        );
        let r = crate::unlock::unlock(&b, &pass("sesame"));
        assert_eq!(r.outcome, crate::protocol::Outcome::Unlocked);
        let calls = calls.lock().unwrap();
        let dev = |d: &str| t.path().join(d).display().to_string();
        assert_eq!(
            calls[0].0,
            [
                "open",
                "--type",
                "luks",
                "--key-file=-",
                "--allow-discards",
                "--sector-size=4096",
                "--perf-no_read_workqueue",
                &dev("dev/vda"),
                "root"
            ]
        );
        assert_eq!(
            calls[1].0,
            [
                "open",
                "--type",
                "luks",
                "--key-file=-",
                "--perf-no_write_workqueue",
                &dev("dev/vdb"),
                "data"
            ]
        );
    }

    #[test]
    fn partuuid_volume_opens_its_partition() {
        // PARTUUID= with udev's link present: cryptsetup gets the link.
        let t = fake_tree(&[]);
        std::fs::create_dir_all(t.path().join("dev/disk/by-partuuid")).unwrap();
        std::fs::write(t.path().join("dev/disk/by-partuuid/1234abcd-02"), b"").unwrap();
        let (b, calls) = backend(&t, &[("root", "PARTUUID=1234abcd-02")], answer_sesame);
        assert_eq!(b.status()[0].state, VolumeState::Pending);
        assert_eq!(b.status()[0].device, "PARTUUID=1234abcd-02");
        let r = crate::unlock::unlock(&b, &pass("sesame"));
        assert_eq!(r.outcome, crate::protocol::Outcome::Unlocked);
        assert!(calls.lock().unwrap()[0].0[4].ends_with("/dev/disk/by-partuuid/1234abcd-02"));
    }

    #[test]
    fn one_passphrase_all_volumes_and_tries() {
        let t = fake_tree(&["vda", "vdb"]);
        let (b, calls) = backend(
            &t,
            &[("root", "/dev/vda"), ("data", "/dev/vdb")],
            answer_sesame,
        );
        let r = crate::unlock::unlock(&b, &pass("wrong"));
        assert_eq!(r.outcome, crate::protocol::Outcome::WrongPassphrase);
        assert!(r.volumes.iter().all(|v| v.tries_left == Some(2)));
        let r = crate::unlock::unlock(&b, &pass("sesame"));
        assert_eq!(r.outcome, crate::protocol::Outcome::Unlocked);
        assert_eq!(calls.lock().unwrap().len(), 4);
        // Already open: nothing runs, nothing to unlock.
        let r = crate::unlock::unlock(&b, &pass("sesame"));
        assert_eq!(r.outcome, crate::protocol::Outcome::NothingToUnlock);
        assert_eq!(calls.lock().unwrap().len(), 4);
    }

    #[test]
    fn tries_run_out() {
        let t = fake_tree(&["vda"]);
        let (b, calls) = backend(&t, &[("root", "/dev/vda")], answer_sesame);
        for _ in 0..3 {
            crate::unlock::unlock(&b, &pass("nope"));
        }
        let r = crate::unlock::unlock(&b, &pass("sesame"));
        assert_eq!(r.outcome, crate::protocol::Outcome::NoTriesLeft);
        assert_eq!(calls.lock().unwrap().len(), 3);
        assert_eq!(b.status()[0].state, VolumeState::Exhausted);
    }

    #[test]
    fn other_failures_are_not_wrong_passphrase() {
        let t = fake_tree(&["vda"]);
        let (b, _) = backend(&t, &[("root", "/dev/vda")], oom);
        let r = crate::unlock::unlock(&b, &pass("sesame"));
        assert_eq!(r.outcome, crate::protocol::Outcome::Failed);
        assert!(r.message.unwrap().contains("Not enough available memory"));
        // A failure that is not the passphrase costs no try.
        assert_eq!(b.status()[0].tries_left, Some(3));
    }

    #[test]
    fn missing_device_reported() {
        let t = fake_tree(&[]);
        let (b, calls) = backend(&t, &[("root", "/dev/vda")], answer_sesame);
        let r = crate::unlock::unlock(&b, &pass("sesame"));
        assert_eq!(r.outcome, crate::protocol::Outcome::Failed);
        assert!(r.message.unwrap().contains("/dev/vda not found"));
        assert!(calls.lock().unwrap().is_empty());
    }
}
