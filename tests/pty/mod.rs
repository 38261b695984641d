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
        let (mut m, mut s) = (-1, -1);
        // SAFETY: openpty writes two fds; no name, default modes and size.
        let rc = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        for fd in [m, s] {
            // SAFETY: sets close-on-exec on fds we own.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
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
        let tty = self.slave.as_raw_fd();
        cmd.stdin(i).stdout(o).stderr(e);
        // SAFETY: setsid and ioctl are async-signal-safe, as pre_exec needs.
        unsafe {
            cmd.pre_exec(move || {
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
        let end = Instant::now() + timeout;
        loop {
            self.pump(Duration::from_millis(20));
            if let Some(st) = child.try_wait().unwrap() {
                while self.pump(Duration::from_millis(20)) {}
                return st;
            }
            if Instant::now() > end {
                let _ = child.kill();
                panic!(
                    "program still running after {timeout:?}; the terminal showed {:?}",
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
