//! Questions on the controlling terminal (`/dev/tty`): the secret prompts
//! (LUKS passphrase, key-file passphrase) and the yes/no questions (host
//! key, rescue confirmation). Owns the terminal modes and nothing else.
//!
//! Order matters (issue 15): the terminal is switched first — echo off for a
//! secret, and typeahead flushed (`TCSAFLUSH`) — and only then is the prompt
//! written. Whatever was typed before the prompt appeared is discarded, not
//! used: it was echoed on the screen already, and a paste that arrives
//! early must be pasted again once the prompt is shown (docs/protocol.md).
//! Bytes left after Enter (a pasted second line) are flushed too, so they
//! never reach the shell with echo on.
//!
//! The saved mode is restored on every way out: a normal return, an error,
//! Ctrl-C / SIGINT, SIGTERM, SIGHUP, SIGQUIT (a handler restores, then
//! re-raises the signal with its default action, so the process still dies
//! of it) and a panic (a panic hook; it runs with `panic = "abort"` too).
//! Ctrl-Z is disabled during a secret prompt (a stopped process would leave
//! echo off).
//!
//! Reads terminal input: no `unwrap`, `expect`, indexing or `panic` here.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::listener::terminal::{Key, LineEditor};
use crate::secret::{Passphrase, SecretError};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU8, Ordering};
use std::sync::{Mutex, Once};
use zeroize::Zeroizing;

/// Why a terminal question got no answer.
#[derive(Debug)]
pub enum TtyError {
    /// No controlling terminal (or `/dev/tty` is not one).
    NoTerminal,
    /// Ctrl-C or Ctrl-D at the prompt.
    Cancelled,
    /// The terminal went away before Enter.
    Closed,
    /// The typed line breaks the passphrase rule.
    Refused(SecretError),
    Io(std::io::Error),
}

impl std::fmt::Display for TtyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TtyError::NoTerminal => f.write_str("there is no terminal to ask on"),
            TtyError::Cancelled => f.write_str("cancelled at the prompt"),
            TtyError::Closed => f.write_str("the terminal closed before Enter"),
            TtyError::Refused(e) => write!(f, "{e}"),
            TtyError::Io(e) => write!(f, "terminal: {e}"),
        }
    }
}

impl std::error::Error for TtyError {}

/// One terminal question at a time in this process: the saved mode below
/// belongs to exactly one prompt.
static PROMPT: Mutex<()> = Mutex::new(());

/// The terminal a secret prompt changed (-1: none) and what to put back.
/// Atomics, because a signal handler reads them: it may use nothing else.
static ARMED_FD: AtomicI32 = AtomicI32::new(-1);
static SAVED_LFLAG: AtomicU32 = AtomicU32::new(0);
static SAVED_VMIN: AtomicU8 = AtomicU8::new(1);
static SAVED_VTIME: AtomicU8 = AtomicU8::new(0);
static SAVED_VSUSP: AtomicU8 = AtomicU8::new(0);

/// Signals that end the process while a secret prompt is up.
const SIGNALS: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Asks for a secret with echo off, through the shared line editor and
/// the passphrase rule. The prompt goes to the terminal, never to stdout.
pub fn read_secret(prompt: &str) -> Result<Passphrase, TtyError> {
    let _one = PROMPT.lock().unwrap_or_else(|p| p.into_inner());
    let tty = open_tty().ok_or(TtyError::NoTerminal)?;
    read_secret_on(&tty, prompt)
}

fn read_secret_on(tty: &File, prompt: &str) -> Result<Passphrase, TtyError> {
    let fd = tty.as_raw_fd();
    let saved = get_attr(fd).ok_or(TtyError::NoTerminal)?;
    let mut quiet = saved;
    // Non-canonical, so the editor sees every byte (TAB, invalid UTF-8)
    // exactly as the listener's pty prompt does; signals stay on.
    quiet.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::IEXTEN);
    set_cc(&mut quiet, libc::VMIN, 1);
    set_cc(&mut quiet, libc::VTIME, 0);
    set_cc(&mut quiet, libc::VSUSP, 0);
    // Armed before the switch: a signal from here on restores `saved`.
    let _restore = Armed::new(fd, &saved);
    set_attr(fd, &quiet).map_err(TtyError::Io)?;
    let mut w = tty;
    w.write_all(prompt.as_bytes())
        .and_then(|()| w.flush())
        .map_err(TtyError::Io)?;
    let mut editor = LineEditor::default();
    let mut chunk = Zeroizing::new([0u8; 256]);
    let key = loop {
        let mut r = tty;
        let n = match r.read(&mut chunk[..]) {
            Ok(0) => break Err(TtyError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(TtyError::Io(e)),
        };
        if let Some(k) = editor.feed(chunk.get(..n).unwrap_or_default()) {
            break Ok(k);
        }
    };
    // Echo is off, so Enter did not move to the next line.
    let _ = w.write_all(b"\n");
    match key? {
        Key::Line(Ok(p)) => Ok(p),
        Key::Line(Err(e)) => Err(TtyError::Refused(e)),
        Key::Cancel => Err(TtyError::Cancelled),
    }
}

/// Asks a yes/no question with echo on, after flushing typeahead (a
/// passphrase typed early must not become the answer). `None`: no terminal.
pub fn ask_yes_no(question: &str) -> Result<Option<bool>, TtyError> {
    let _one = PROMPT.lock().unwrap_or_else(|p| p.into_inner());
    let Some(tty) = open_tty() else {
        return Ok(None);
    };
    let fd = tty.as_raw_fd();
    let Some(mode) = get_attr(fd) else {
        return Ok(None);
    };
    // Same mode, applied with TCSAFLUSH: only discards typeahead.
    set_attr(fd, &mode).map_err(TtyError::Io)?;
    let mut w = &tty;
    w.write_all(question.as_bytes())
        .and_then(|()| w.flush())
        .map_err(TtyError::Io)?;
    let mut answer = Zeroizing::new(Vec::with_capacity(16));
    let mut chunk = Zeroizing::new([0u8; 256]);
    loop {
        let mut r = &tty;
        let n = match r.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(TtyError::Io(e)),
        };
        let got = chunk.get(..n).unwrap_or_default();
        let end = got.iter().position(|&b| b == b'\n');
        let part = got.get(..end.unwrap_or(n)).unwrap_or_default();
        // Only a short answer can be "yes"; keep no more than that.
        let room = answer.capacity().saturating_sub(answer.len());
        answer.extend_from_slice(part.get(..part.len().min(room)).unwrap_or_default());
        if end.is_some() {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    Ok(Some(text.trim().eq_ignore_ascii_case("yes")))
}

fn open_tty() -> Option<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()?;
    get_attr(f.as_raw_fd()).map(|_| f)
}

fn set_cc(t: &mut libc::termios, index: usize, value: libc::cc_t) {
    if let Some(c) = t.c_cc.get_mut(index) {
        *c = value;
    }
}

fn cc(t: &libc::termios, index: usize) -> libc::cc_t {
    t.c_cc.get(index).copied().unwrap_or(0)
}

#[allow(unsafe_code)]
fn get_attr(fd: RawFd) -> Option<libc::termios> {
    // SAFETY: termios is plain old data (integers and a byte array), so all
    // zeroes is a valid value; tcgetattr only writes into it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid, writable termios; a bad fd only yields -1.
    (unsafe { libc::tcgetattr(fd, &mut t) } == 0).then_some(t)
}

/// Applies `t` with TCSAFLUSH: pending input is discarded first.
#[allow(unsafe_code)]
fn set_attr(fd: RawFd, t: &libc::termios) -> std::io::Result<()> {
    // SAFETY: `t` points to a valid termios for the duration of the call.
    if unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, t) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Puts the armed terminal's saved mode back. Async-signal-safe: atomics,
/// tcgetattr and tcsetattr only. Typeahead is discarded, so a half-typed
/// passphrase never reaches the shell.
fn restore_armed() {
    let fd = ARMED_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    if let Some(mut t) = get_attr(fd) {
        t.c_lflag = SAVED_LFLAG.load(Ordering::SeqCst);
        set_cc(&mut t, libc::VMIN, SAVED_VMIN.load(Ordering::SeqCst));
        set_cc(&mut t, libc::VTIME, SAVED_VTIME.load(Ordering::SeqCst));
        set_cc(&mut t, libc::VSUSP, SAVED_VSUSP.load(Ordering::SeqCst));
        let _ = set_attr(fd, &t);
    }
}

/// Restores the terminal, ends the prompt's line, and lets the signal do
/// what it would have done (usually: end the process).
#[allow(unsafe_code)]
extern "C" fn on_signal(sig: libc::c_int) {
    let fd = ARMED_FD.load(Ordering::SeqCst);
    restore_armed();
    if fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the buffer is static.
        let _ = unsafe { libc::write(fd, b"\n".as_ptr().cast(), 1) };
    }
    // SAFETY: signal(2) and raise(3) are async-signal-safe. The signal is
    // blocked while its handler runs, so it is delivered, with the default
    // action, as soon as this handler returns.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs our handler for `sig`; returns the previous action. A signal
/// the process ignores (`nohup`) stays ignored: the current action is read
/// first, so an ignored signal is never handled, not even for a moment.
#[allow(unsafe_code)]
fn install(sig: libc::c_int) -> Option<libc::sigaction> {
    // SAFETY: sigaction is plain old data; all zeroes is "no flags, empty
    // mask"; a null new action only reads the current one into `old`;
    // `on_signal` is an `extern "C" fn(c_int)` as sa_sigaction needs
    // without SA_SIGINFO.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
            return None;
        }
        if old.sa_sigaction == libc::SIG_IGN {
            return None;
        }
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut act.sa_mask);
        if libc::sigaction(sig, &act, std::ptr::null_mut()) != 0 {
            return None;
        }
        Some(old)
    }
}

#[allow(unsafe_code)]
fn reinstall(sig: libc::c_int, old: &libc::sigaction) {
    // SAFETY: `old` came from sigaction(2) and is a valid action.
    unsafe {
        libc::sigaction(sig, old, std::ptr::null_mut());
    }
}

/// Chains a panic hook (once per process) that restores an armed terminal
/// before the default hook prints and the process unwinds or aborts.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_armed();
            previous(info);
        }));
    });
}

/// A secret prompt's hold on the terminal: while it lives, signals and
/// panics restore `saved`; dropping it restores `saved` and the handlers.
struct Armed {
    fd: RawFd,
    saved: libc::termios,
    old: Vec<(libc::c_int, libc::sigaction)>,
}

impl Armed {
    fn new(fd: RawFd, saved: &libc::termios) -> Self {
        install_panic_hook();
        SAVED_LFLAG.store(saved.c_lflag, Ordering::SeqCst);
        SAVED_VMIN.store(cc(saved, libc::VMIN), Ordering::SeqCst);
        SAVED_VTIME.store(cc(saved, libc::VTIME), Ordering::SeqCst);
        SAVED_VSUSP.store(cc(saved, libc::VSUSP), Ordering::SeqCst);
        ARMED_FD.store(fd, Ordering::SeqCst);
        let old = SIGNALS
            .iter()
            .filter_map(|&s| install(s).map(|o| (s, o)))
            .collect();
        Armed {
            fd,
            saved: *saved,
            old,
        }
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let _ = set_attr(self.fd, &self.saved);
        ARMED_FD.store(-1, Ordering::SeqCst);
        for (s, o) in &self.old {
            reinstall(*s, o);
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    unsafe_code
)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// A pty pair: (master, slave).
    fn pty() -> (File, File) {
        let (mut m, mut s) = (-1, -1);
        // SAFETY: test-only; openpty writes two fds.
        let rc = unsafe {
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: both fds were just opened and are owned here.
        unsafe { (File::from_raw_fd(m), File::from_raw_fd(s)) }
    }

    fn echo_on(f: &File) -> bool {
        get_attr(f.as_raw_fd()).unwrap().c_lflag & libc::ECHO != 0
    }

    #[test]
    fn secret_prompt_reads_raw_bytes_and_restores_echo() {
        let _one = PROMPT.lock().unwrap_or_else(|p| p.into_inner());
        let (master, slave) = pty();
        assert!(echo_on(&slave));
        let m2 = master.try_clone().unwrap();
        let typist = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 64];
            let mut r = &m2;
            // Type only once the prompt is shown (typeahead is flushed).
            while !out.ends_with(b"pw: ") {
                let n = r.read(&mut buf).unwrap();
                out.extend_from_slice(&buf[..n]);
            }
            let mut w = &m2;
            w.write_all(b"a\tb\xff\rtail").unwrap();
            out
        });
        let p = read_secret_on(&slave, "pw: ").unwrap();
        assert_eq!(p.expose(), b"a\tb\xff");
        let shown = typist.join().unwrap();
        assert_eq!(shown, b"pw: ");
        assert!(echo_on(&slave), "echo is back on");
        assert_eq!(ARMED_FD.load(Ordering::SeqCst), -1);
    }

    #[test]
    fn panic_hook_restores_echo() {
        let _one = PROMPT.lock().unwrap_or_else(|p| p.into_inner());
        let (_master, slave) = pty();
        let saved = get_attr(slave.as_raw_fd()).unwrap();
        let armed = Armed::new(slave.as_raw_fd(), &saved);
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        set_attr(slave.as_raw_fd(), &quiet).unwrap();
        assert!(!echo_on(&slave));
        // Leak the guard, as an abort would: only the hook can restore.
        std::mem::forget(armed);
        let r = std::panic::catch_unwind(|| panic!("boom at the prompt"));
        assert!(r.is_err());
        assert!(echo_on(&slave), "the panic hook restored echo");
        ARMED_FD.store(-1, Ordering::SeqCst);
        for s in SIGNALS {
            // SAFETY: test-only: back to the default action.
            unsafe { libc::signal(s, libc::SIG_DFL) };
        }
    }
}
