//! One module per `portcullis rescue` command: gather state, plan, run.
//! Each flow returns the exit code and its typed report
//! ([`Details`], printed under `details` by `--json`); the plans come from
//! the pure modules, and everything that touches the rescue system goes
//! through the [`Session`] driver and its [`Remote`] seam.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::kexec::{parse_probe, probe_command, BootConfig};
use super::remote::Remote;
use super::run::Session;
use super::state;
use crate::secret::Passphrase;
use anyhow::Result;

mod check;
mod chroot;
mod close;
mod inspect;
mod kexec;
mod mount;
mod unlock;

pub use self::kexec::{kexec_flow, KexecOptions};
pub use super::report::Details;
pub use check::check;
pub use chroot::chroot;
pub use close::close;
pub use inspect::inspect;
pub use mount::{mount, mount_inner};
pub use unlock::{unlock, unlock_inner, Unlocked};

/// Reads the passphrase when it is first needed (a dry run never asks).
pub type PassReader<'a> = &'a dyn Fn() -> Result<Passphrase>;

/// The passphrase, asked for on first use and then kept for the rest of
/// the flow, so `kexec` unlocks and hands over with one entry. Dropping it
/// wipes the passphrase.
pub struct Pass<'a> {
    read: PassReader<'a>,
    got: Option<Passphrase>,
}

impl<'a> Pass<'a> {
    pub fn new(read: PassReader<'a>) -> Self {
        Pass { read, got: None }
    }

    /// The passphrase, asking for it now if it was not yet.
    pub fn get(&mut self) -> Result<&Passphrase> {
        let p = match self.got.take() {
            Some(p) => p,
            None => (self.read)()?,
        };
        Ok(self.got.insert(p))
    }

    /// The passphrase if it was asked for (a dry run never asks).
    pub fn if_read(&self) -> Option<&Passphrase> {
        self.got.as_ref()
    }
}

/// What every flow returns: the exit code and the report.
pub type Outcome = (u8, Details);

/// Reads the main system's boot configuration from the target (read-only).
pub async fn boot_config<R: Remote>(s: &mut Session<'_, R>, target: &str) -> Result<BootConfig> {
    let b = state::boundary()?;
    let out = s
        .read(
            "the main system's boot configuration",
            &probe_command(&b, target),
        )
        .await?;
    Ok(parse_probe(&out.stdout_text(), &b))
}

#[cfg(test)]
pub(crate) mod testkit;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::testkit::{kexec_options, mounted, pass, settings, snapshot};
    use super::*;

    #[test]
    fn the_passphrase_is_asked_once_and_only_when_needed() {
        let asked = std::cell::Cell::new(0);
        let read = || {
            asked.set(asked.get() + 1);
            pass()
        };
        let mut p = Pass::new(&read);
        assert!(p.if_read().is_none());
        assert_eq!(asked.get(), 0);
        assert_eq!(p.get().unwrap().expose(), super::testkit::PASS);
        p.get().unwrap();
        assert_eq!(asked.get(), 1);
        assert!(p.if_read().is_some());
        // A failed read is not remembered: the next use asks again.
        let fail = || Err(anyhow::anyhow!("no terminal"));
        let mut p = Pass::new(&fail);
        assert!(p.get().is_err());
        assert!(p.if_read().is_none());
    }

    /// Every flow's exit code and `--json` report (with the plans and
    /// notes it records) as the single-file flows printed them: the split
    /// into typed reports changed no key and no value.
    #[tokio::test]
    async fn reports_keep_their_shape() {
        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = inspect(&mut s).await.unwrap();
        snapshot("inspect", c, &v, &s);

        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = unlock(&mut s, &[], &pass).await.unwrap();
        snapshot("unlock-already-open", c, &v, &s);

        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = mount(&mut s, false, None, None).await.unwrap();
        snapshot("mount", c, &v, &s);

        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = check(&mut s, false, None, None).await.unwrap();
        snapshot("check", c, &v, &s);

        let mut dry = settings();
        dry.dry_run = true;
        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, dry.clone());
        let (c, v) = check(&mut s, false, None, None).await.unwrap();
        snapshot("check-dry-run", c, &v, &s);

        let mut fake = mounted(&[("~ls -l", 3, "total 0\n")]);
        let argv = ["ls".to_string(), "-l".to_string()];
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = chroot(&mut s, &argv).await.unwrap();
        snapshot("chroot-fails", c, &v, &s);

        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = close(&mut s, true).await.unwrap();
        snapshot("close-still-mounted", c, &v, &s);

        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = kexec_flow(&mut s, &kexec_options(), &pass).await.unwrap();
        snapshot("kexec", c, &v, &s);

        let mut o = kexec_options();
        o.no_handover = true;
        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, settings());
        let (c, v) = kexec_flow(&mut s, &o, &pass).await.unwrap();
        snapshot("kexec-no-handover", c, &v, &s);

        let mut fake = mounted(&[]);
        let mut s = Session::new(&mut fake, dry);
        let (c, v) = kexec_flow(&mut s, &kexec_options(), &pass).await.unwrap();
        snapshot("kexec-dry-run", c, &v, &s);
    }
}
