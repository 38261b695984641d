//! A real pseudo-terminal for tests: a program runs with the pty's slave as
//! its controlling terminal (stdin, stdout, stderr and `/dev/tty`), and the
//! test types into the master and reads what the terminal shows.
#![allow(dead_code, unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Pty {
    pub master: File,
    /// Kept open by the test so the terminal's modes can be read after the
    /// program exits, and the master never sees EIO.
    pub slave: File,
    /// Everything the terminal showed so far.
    pub seen: Vec<u8>,
}

impl Pty {
    pub fn open() -> Pty {
        // Opened close-on-exec from the start (not openpty + F_SETFD): tests
        // run in parallel threads, and a child another test forks in
        // between would keep this terminal's fds for its whole life.
        // SAFETY: plain syscalls on fds we own; `name` is a valid buffer of
        // the length given, NUL-terminated by ptsname_r on success.
        let (m, s) = unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(m >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
            assert_eq!(libc::grantpt(m), 0, "grantpt");
            assert_eq!(libc::unlockpt(m), 0, "unlockpt");
            let mut name = [0 as libc::c_char; 128];
            assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
            let s = libc::open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            assert!(
                s >= 0,
                "open pty slave: {}",
                std::io::Error::last_os_error()
            );
            (m, s)
        };
        // SAFETY: both fds were just opened and are owned here.
        let (master, slave) = unsafe { (File::from_raw_fd(m), File::from_raw_fd(s)) };
        Pty {
            master,
            slave,
            seen: Vec::new(),
        }
    }

    /// Starts `cmd` in a new session with this pty as its controlling
    /// terminal and as its stdin, stdout and stderr.
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        let s = || Stdio::from(self.slave.try_clone().unwrap());
        self.spawn_with(cmd, s(), s(), s())
    }

    /// Starts `cmd` with this pty as its controlling terminal (`/dev/tty`)
    /// but the given stdin, stdout and stderr.
    pub fn spawn_with(&self, cmd: &mut Command, i: Stdio, o: Stdio, e: Stdio) -> Child {
        self.spawn_ignoring(cmd, i, o, e, &[])
    }

    /// Like [`Pty::spawn_with`], and the program starts with the terminal
    /// signals at their default action, except `ignored` (as `nohup` would
    /// leave SIGHUP). A child inherits ignored signals, and a test run as a
    /// background job of a non-interactive shell has SIGINT and SIGQUIT
    /// ignored (SIGHUP under `nohup`): the prompt rightly keeps them
    /// ignored, so without this reset the interruption tests would wait
    /// forever for a signal the program was told to ignore.
    pub fn spawn_ignoring(
        &self,
        cmd: &mut Command,
        i: Stdio,
        o: Stdio,
        e: Stdio,
        ignored: &[libc::c_int],
    ) -> Child {
        let tty = self.slave.as_raw_fd();
        let ignored = ignored.to_vec();
        cmd.stdin(i).stdout(o).stderr(e);
        // SAFETY: setsid, ioctl and signal are async-signal-safe, as
        // pre_exec needs; `ignored` was allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                    let how = if ignored.contains(&sig) {
                        libc::SIG_IGN
                    } else {
                        libc::SIG_DFL
                    };
                    if libc::signal(sig, how) == libc::SIG_ERR {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::setsid() < 0 || libc::ioctl(tty, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().unwrap()
    }

    /// Reads what is available within `wait`; false when nothing came.
    pub fn pump(&mut self, wait: Duration) -> bool {
        let mut p = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n <= 0 {
            return false;
        }
        let mut buf = [0u8; 4096];
        match self.master.read(&mut buf) {
            Ok(n) if n > 0 => {
                self.seen.extend_from_slice(&buf[..n]);
                true
            }
            _ => false,
        }
    }

    /// Waits until the screen shows `needle` (after `from`); returns where
    /// it ends, or panics with what was seen.
    pub fn expect(&mut self, needle: &[u8], from: usize, timeout: Duration) -> usize {
        let end = Instant::now() + timeout;
        loop {
            if let Some(i) = find(&self.seen[from.min(self.seen.len())..], needle) {
                return from + i + needle.len();
            }
            let left = end.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {:?}; the terminal showed {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&self.seen)
            );
            self.pump(left.min(Duration::from_millis(200)));
        }
    }

    pub fn type_bytes(&mut self, b: &[u8]) {
        self.master.write_all(b).unwrap();
    }

    /// Reads the screen until `child` exits; returns its status.
    pub fn finish(&mut self, child: &mut Child, timeout: Duration) -> ExitStatus {
        self.finish_what("program", child, timeout)
    }

    /// [`Pty::finish`], naming `what` ran in the panic; a program still
    /// running is described first (state, pending, blocked, ignored and
    /// caught signals), then killed.
    pub fn finish_what(&mut self, what: &str, child: &mut Child, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            self.pump(Duration::from_millis(20));
            if let Some(st) = child.try_wait().unwrap() {
                while self.pump(Duration::from_millis(20)) {}
                return st;
            }
            if Instant::now() > end {
                let state = proc_state(child.id());
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what}: still running after {timeout:?} ({state}); the terminal showed {:?}",
                    String::from_utf8_lossy(&self.seen)
                );
            }
        }
    }

    /// The terminal's local modes now.
    pub fn lflag(&self) -> libc::tcflag_t {
        // SAFETY: termios is plain old data; tcgetattr fills it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut t) },
            0
        );
        t.c_lflag
    }

    pub fn echo_on(&self) -> bool {
        self.lflag() & libc::ECHO != 0
    }

    pub fn canonical(&self) -> bool {
        self.lflag() & libc::ICANON != 0
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A running process's state and signal masks, from /proc (for failures).
pub fn proc_state(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    let mut parts: Vec<String> = status
        .lines()
        .filter(|l| {
            [
                "State:", "Threads:", "SigPnd:", "ShdPnd:", "SigBlk:", "SigIgn:", "SigCgt:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    parts.push(format!("wchan: {wchan}"));
    parts.join(", ")
}
