//! Unlock backends behind one trait. A backend knows what is waiting to be
//! unlocked and how to hand a passphrase to it; it knows nothing about SSH.
//!
//! Backends: [`cryptsetup::Cryptsetup`] runs `cryptsetup open` itself (busybox
//! initramfs, our minimal image). The systemd ask-password agent and the
//! Debian askpass fifo come next, behind the same trait.

pub mod askpass;
pub mod cryptsetup;
pub mod crypttab;
pub mod systemd;
pub mod volume;

use crate::protocol::{Outcome, UnlockReply, VolumeInfo, VolumeState, VERSION};
use crate::secret::Passphrase;

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
}
