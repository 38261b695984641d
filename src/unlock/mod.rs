//! Unlock backends behind one trait. A backend knows what is waiting to be
//! unlocked and how to hand a passphrase to it; it knows nothing about SSH.
//!
//! Backends: [`cryptsetup::Cryptsetup`] runs `cryptsetup open` itself (busybox
//! initramfs, our minimal image). The systemd ask-password agent and the
//! Debian askpass fifo come next, behind the same trait.
//!
//! [`Gate`] sits in front of every backend: one unlock at a time, whatever
//! the backend (two sessions must never write into the same passfifo or
//! answer the same ask file), and a status that never waits for a KDF.
// Tests may unwrap: the lints guard the code that faces input.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod askpass;
pub mod cryptsetup;
pub mod crypttab;
pub mod systemd;
pub mod volume;

use crate::protocol::{Outcome, UnlockReply, VolumeInfo, VolumeState, VERSION};
use crate::secret::Passphrase;
use std::sync::{Arc, Mutex, MutexGuard};

/// What happened when a passphrase was tried against one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Opened,
    /// Someone else (the console prompt, an earlier session) opened it.
    AlreadyOpen,
    WrongPassphrase,
    /// Not tried: the tries limit for this boot is used up.
    NoTriesLeft,
    /// Not tried: the device is not there.
    Missing,
    /// Any failure other than a wrong passphrase, as itself (out of memory for
    /// the KDF, a missing library, a bad header…).
    Failed(String),
}

/// An unlock backend.
pub trait Backend: Send + Sync {
    /// Short name shown in `status` ("cryptsetup", "systemd", "askpass").
    fn name(&self) -> &'static str;

    /// Every volume this backend knows, with its current state.
    fn status(&self) -> Vec<VolumeInfo>;

    /// Tries `pass` against every volume still pending. The returned list
    /// has one entry per volume that was pending or missing before the call.
    /// Blocking: callers run it off the async runtime.
    fn try_unlock(&self, pass: &Passphrase) -> Vec<(VolumeInfo, Attempt)>;

    /// True when nothing is left to unlock, so the listener may exit.
    fn all_open(&self) -> bool {
        let s = self.status();
        !s.is_empty() && s.iter().all(|v| v.state == VolumeState::Open)
    }
}

/// Turns per-volume attempts into one reply. `after` is the backend's status
/// after the attempt, so volumes opened concurrently by the console count.
pub fn summarize(attempts: &[(VolumeInfo, Attempt)], after: Vec<VolumeInfo>) -> UnlockReply {
    let failures: Vec<String> = attempts
        .iter()
        .filter_map(|(v, a)| match a {
            Attempt::Failed(msg) => Some(format!("{}: {msg}", v.name)),
            Attempt::Missing => Some(format!("{}: device {} not found", v.name, v.device)),
            _ => None,
        })
        .collect();
    let all_open = !after.is_empty() && after.iter().all(|v| v.state == VolumeState::Open);
    let opened = attempts.iter().any(|(_, a)| *a == Attempt::Opened);
    let wrong = attempts.iter().any(|(_, a)| *a == Attempt::WrongPassphrase);
    let outcome = if attempts.is_empty() {
        if all_open {
            Outcome::NothingToUnlock
        } else {
            Outcome::NoTriesLeft
        }
    } else if all_open {
        Outcome::Unlocked
    } else if opened {
        Outcome::Partial
    } else if !failures.is_empty() {
        Outcome::Failed
    } else if wrong {
        Outcome::WrongPassphrase
    } else if attempts.iter().all(|(_, a)| *a == Attempt::NoTriesLeft) {
        Outcome::NoTriesLeft
    } else {
        Outcome::NothingToUnlock
    };
    UnlockReply {
        version: VERSION,
        outcome,
        volumes: after,
        message: (!failures.is_empty()).then(|| failures.join("; ")),
    }
}

/// Runs one unlock through a backend and summarizes it.
#[tracing::instrument(skip_all)]
pub fn unlock(backend: &dyn Backend, pass: &Passphrase) -> UnlockReply {
    if backend.status().is_empty() {
        return UnlockReply {
            version: VERSION,
            outcome: Outcome::NothingToUnlock,
            volumes: vec![],
            message: Some("no volume is configured".into()),
        };
    }
    let attempts = backend.try_unlock(pass);
    let reply = summarize(&attempts, backend.status());
    for (v, a) in &attempts {
        tracing::info!(volume = %v.name, device = %v.device, result = ?a, "unlock attempt");
    }
    reply
}

/// The one way into a backend for the listener: serializes unlocks and
/// answers `status` from a snapshot while one runs, so neither `status` nor
/// the listener's own checks ever wait behind cryptsetup's KDF.
pub struct Gate {
    backend: Arc<dyn Backend>,
    /// Held for the whole of one unlock: the queue of sessions.
    running: Mutex<()>,
    /// Held only briefly. While `in_flight` is set nobody calls into the
    /// backend except the unlock itself; `snapshot` answers instead.
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    in_flight: bool,
    snapshot: Vec<VolumeInfo>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not wedge the door: the data stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gate {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Gate {
            backend,
            running: Mutex::new(()),
            state: Mutex::new(GateState::default()),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Current volumes; while an unlock runs, the volumes it is trying show
    /// as [`VolumeState::Unlocking`]. Never waits for an unlock.
    pub fn status(&self) -> Vec<VolumeInfo> {
        let st = lock(&self.state);
        if st.in_flight {
            return st.snapshot.clone();
        }
        // Under the state lock, so an unlock cannot start in between and
        // make this call wait on the backend's own lock.
        self.backend.status()
    }

    /// True when an unlock is running now.
    pub fn in_flight(&self) -> bool {
        lock(&self.state).in_flight
    }

    /// True when nothing is left to unlock. False while an unlock runs: its
    /// reply has not gone out yet.
    pub fn all_open(&self) -> bool {
        let st = lock(&self.state);
        !st.in_flight && self.backend.all_open()
    }

    /// Runs one unlock, after any already running. Blocking: call it off the
    /// async threads.
    #[tracing::instrument(skip_all)]
    pub fn unlock(&self, pass: &Passphrase) -> UnlockReply {
        let _turn = lock(&self.running);
        {
            let mut st = lock(&self.state);
            st.snapshot = self
                .backend
                .status()
                .into_iter()
                .map(|mut v| {
                    if v.state == VolumeState::Pending {
                        v.state = VolumeState::Unlocking;
                    }
                    v
                })
                .collect();
            st.in_flight = true;
        }
        // Clears `in_flight` even if the backend panics (tests build with
        // unwinding; the release build aborts anyway).
        struct Done<'a>(&'a Mutex<GateState>);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                let mut st = lock(self.0);
                st.in_flight = false;
                st.snapshot.clear();
            }
        }
        let _done = Done(&self.state);
        unlock(self.backend.as_ref(), pass)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vi(name: &str, state: VolumeState) -> VolumeInfo {
        VolumeInfo {
            name: name.into(),
            device: format!("/dev/{name}"),
            backend: "test".into(),
            state,
            tries_left: Some(3),
        }
    }

    #[test]
    fn outcomes() {
        use VolumeState::*;
        let s = |att: Vec<(&str, Attempt)>, after: Vec<VolumeInfo>| {
            let a: Vec<_> = att.into_iter().map(|(n, a)| (vi(n, Pending), a)).collect();
            summarize(&a, after)
        };
        assert_eq!(
            s(vec![("a", Attempt::Opened)], vec![vi("a", Open)]).outcome,
            Outcome::Unlocked
        );
        assert_eq!(
            s(
                vec![("a", Attempt::Opened), ("b", Attempt::WrongPassphrase)],
                vec![vi("a", Open), vi("b", Pending)]
            )
            .outcome,
            Outcome::Partial
        );
        assert_eq!(
            s(
                vec![("a", Attempt::WrongPassphrase)],
                vec![vi("a", Pending)]
            )
            .outcome,
            Outcome::WrongPassphrase
        );
        let f = s(
            vec![("a", Attempt::Failed("Not enough memory".into()))],
            vec![vi("a", Pending)],
        );
        assert_eq!(f.outcome, Outcome::Failed);
        assert_eq!(f.message.as_deref(), Some("a: Not enough memory"));
        assert_eq!(
            s(vec![], vec![vi("a", Open)]).outcome,
            Outcome::NothingToUnlock
        );
        assert_eq!(
            s(vec![("a", Attempt::NoTriesLeft)], vec![vi("a", Exhausted)]).outcome,
            Outcome::NoTriesLeft
        );
        // The console opened it while we were trying: that is success.
        assert_eq!(
            s(vec![("a", Attempt::AlreadyOpen)], vec![vi("a", Open)]).outcome,
            Outcome::Unlocked
        );
    }

    /// A backend whose `try_unlock` waits for the test to release it, and
    /// which counts how many unlocks run at the same time.
    struct Slow {
        release: Mutex<bool>,
        cv: std::sync::Condvar,
        running: std::sync::atomic::AtomicUsize,
        max_running: std::sync::atomic::AtomicUsize,
        open: std::sync::atomic::AtomicBool,
    }

    impl Backend for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn status(&self) -> Vec<VolumeInfo> {
            use std::sync::atomic::Ordering::SeqCst;
            let st = if self.open.load(SeqCst) {
                VolumeState::Open
            } else {
                VolumeState::Pending
            };
            vec![vi("root", st)]
        }
        fn try_unlock(&self, _pass: &Passphrase) -> Vec<(VolumeInfo, Attempt)> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.running.fetch_add(1, SeqCst) + 1;
            self.max_running.fetch_max(now, SeqCst);
            let mut r = lock(&self.release);
            while !*r {
                r = self.cv.wait(r).unwrap_or_else(|p| p.into_inner());
            }
            drop(r);
            self.running.fetch_sub(1, SeqCst);
            let was_open = self.open.swap(true, SeqCst);
            let a = if was_open {
                Attempt::AlreadyOpen
            } else {
                Attempt::Opened
            };
            vec![(vi("root", VolumeState::Pending), a)]
        }
    }

    #[test]
    fn gate_serializes_and_status_never_waits() {
        use std::sync::atomic::Ordering::SeqCst;
        let slow = Arc::new(Slow {
            release: Mutex::new(false),
            cv: std::sync::Condvar::new(),
            running: 0.into(),
            max_running: 0.into(),
            open: false.into(),
        });
        let gate = Arc::new(Gate::new(slow.clone()));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let g = gate.clone();
                std::thread::spawn(move || g.unlock(&Passphrase::new(b"x".to_vec()).unwrap()))
            })
            .collect();
        while slow.running.load(SeqCst) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The KDF is "running": status answers at once, and says so.
        let t = std::time::Instant::now();
        let st = gate.status();
        assert!(t.elapsed() < std::time::Duration::from_millis(500));
        assert_eq!(st[0].state, VolumeState::Unlocking);
        assert!(gate.in_flight());
        assert!(!gate.all_open());
        *slow.release.lock().unwrap() = true;
        slow.cv.notify_all();
        let replies: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        assert_eq!(slow.max_running.load(SeqCst), 1, "two unlocks ran at once");
        assert!(replies.iter().all(|r| r.outcome == Outcome::Unlocked));
        assert_eq!(gate.status()[0].state, VolumeState::Open);
        assert!(!gate.in_flight());
        assert!(gate.all_open());
    }
}
