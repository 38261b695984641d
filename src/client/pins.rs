//! The `portcullis known-hosts list|pin|forget` commands: what portcullis's
//! known-hosts file pins, pinning a listener's key on purpose (fetched from
//! the listener and confirmed, or read from the `.pub` file `portcullisd
//! keygen` wrote), and forgetting a host. Takes plain arguments; the command
//! line is parsed elsewhere. Never touches `~/.ssh/known_hosts`.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::{known_hosts, tty, ClientError, Target};
use crate::authkeys::fingerprint;
use anyhow::{anyhow, Context};
use russh::keys::ssh_key::known_hosts::Marker;
use russh::keys::PublicKey;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `pin` does with the host's existing pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The new key becomes the only one (the usual case).
    Replace,
    /// The new key is added beside the others: the overlap while a host key
    /// is rotated (see docs/rotation.md).
    Add,
}

/// Settings of `known-hosts pin`.
#[derive(Debug, Clone)]
pub struct PinRequest {
    pub target: Target,
    pub known_hosts: PathBuf,
    /// The fingerprint the admin expects; the key must have it.
    pub fingerprint: Option<String>,
    /// Read the key from this public-key file instead of the listener.
    pub key_file: Option<PathBuf>,
    pub keep: Keep,
    pub timeout: Duration,
}

/// The pins in `path`, one line each (`LINE  NAMES  FINGERPRINT`), or one
/// JSON object each.
pub fn list(path: &Path, json: bool) -> anyhow::Result<String> {
    let text = known_hosts::read(path)?;
    let mut out = String::new();
    for l in
        known_hosts::parse(&text).map_err(|e| anyhow!("known hosts {}: {e}", path.display()))?
    {
        let fp = fingerprint(l.entry.public_key());
        let names = l.names();
        let marker = l.entry.marker().map(Marker::as_str);
        if json {
            let v = serde_json::json!({
                "line": l.line, "hosts": names, "fingerprint": fp,
                "key-type": l.entry.public_key().algorithm().as_str(),
                "marker": marker,
            });
            out.push_str(&format!("{v}\n"));
        } else {
            let note = match l.entry.marker() {
                Some(Marker::Revoked) => "  (revoked: refused for every host)",
                Some(Marker::CertAuthority) => "  (cert-authority: ignored)",
                None => "",
            };
            let shown = crate::text::line(&names);
            out.push_str(&format!("{:>4}  {shown}  {fp}{note}\n", l.line));
        }
    }
    if out.is_empty() && !json {
        out = format!(
            "no pins in {}; pin a host with `portcullis known-hosts pin HOST`\n",
            path.display()
        );
    }
    Ok(out)
}

/// Pins a listener's key; returns the line to print. The key is fetched
/// from the listener (which proves it holds it) unless `key_file` is given;
/// without `fingerprint` the admin confirms it on the terminal.
pub async fn pin(req: &PinRequest) -> Result<String, ClientError> {
    let id = known_hosts::host_id(&req.target.host, req.target.port);
    let key = match &req.key_file {
        Some(p) => read_public(p)?,
        None => super::probe::host_key(&req.target, req.timeout)
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?,
    };
    let got = fingerprint(&key);
    match &req.fingerprint {
        Some(want) if *want != got => {
            return Err(ClientError::HostKeyChanged {
                expected: want.clone(),
                got,
                hint: "check the fingerprint (the server's console shows what \
                       `portcullisd keygen` printed) and pin again"
                    .into(),
            })
        }
        Some(_) => {}
        None if req.key_file.is_some() => {}
        None => confirm(&id, &got)?,
    }
    let text = known_hosts::read(&req.known_hosts)?;
    let in_file = |e: anyhow::Error| anyhow!("known hosts {}: {e}", req.known_hosts.display());
    if let Some(line) = known_hosts::revoked(&known_hosts::parse(&text).map_err(in_file)?, &key) {
        return Err(ClientError::HostKeyRevoked {
            fingerprint: got,
            file: req.known_hosts.display().to_string(),
            line,
        });
    }
    let path = req.known_hosts.display();
    match known_hosts::check(&text, &id, &key).map_err(in_file)? {
        known_hosts::Verdict::Match if req.keep == Keep::Add => {
            Ok(format!("{id}: {got} is already pinned in {path}"))
        }
        verdict => {
            let replaced = match req.keep {
                Keep::Add => {
                    known_hosts::add(&req.known_hosts, &id, &key)?;
                    0
                }
                Keep::Replace => known_hosts::replace(&req.known_hosts, &id, &key)?,
            };
            let was = match verdict {
                known_hosts::Verdict::Match if replaced <= 1 => " (it was already pinned)",
                known_hosts::Verdict::Match => " (already pinned; the host's other pins removed)",
                _ if replaced > 0 => " (older pins for it removed)",
                _ => "",
            };
            Ok(format!("pinned {got} for {id} in {path}{was}"))
        }
    }
}

/// Asks on the terminal whether to pin `fp`; no terminal is a refusal.
fn confirm(id: &str, fp: &str) -> Result<(), ClientError> {
    let question = format!(
        "{id} offers the host key {fp}.\nCompare it with the fingerprint \
         `portcullisd keygen` printed. Pin it? [yes/no] "
    );
    match tty::ask_yes_no(&question) {
        Ok(Some(true)) => Ok(()),
        Ok(Some(false)) => Err(ClientError::Other(anyhow!(
            "{id}: not pinned (you answered no)"
        ))),
        Ok(None) => Err(ClientError::HostKeyUnknown {
            fingerprint: fp.into(),
            hint: format!(
                "no terminal to confirm it on: pass --fingerprint {fp} after comparing it, \
                 or --key HOST_KEY.pub"
            ),
        }),
        Err(e) => Err(ClientError::Other(anyhow!(
            "asking whether to pin {id}: {e}"
        ))),
    }
}

/// Reads a public key (`host_key.pub`, as `portcullisd keygen` writes it).
fn read_public(path: &Path) -> anyhow::Result<PublicKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading public key {}", path.display()))?;
    PublicKey::from_openssh(text.trim()).map_err(|e| {
        anyhow!(
            "{} is not an OpenSSH public key ({}); give the .pub file `portcullisd keygen` wrote",
            path.display(),
            crate::text::clip_plain(&e.to_string())
        )
    })
}

/// Removes every pin for `target`; an error when there was none.
pub fn forget(path: &Path, target: &Target) -> anyhow::Result<String> {
    let id = known_hosts::host_id(&target.host, target.port);
    let (text, n) = known_hosts::without(&known_hosts::read(path)?, &id)
        .map_err(|e| anyhow!(e.message(path, &id)))?;
    if n == 0 {
        anyhow::bail!(
            "no pin for {id} in {}; `portcullis known-hosts list` shows what is pinned",
            path.display()
        );
    }
    known_hosts::write(path, &text)?;
    Ok(format!("forgot {n} pin(s) for {id} in {}", path.display()))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pin_from_key_file_list_and_forget() {
        let d = tempfile::tempdir().unwrap();
        let kh = d.path().join("known_hosts");
        let k1 = crate::hostkey::generate(&d.path().join("k1"), "k1").unwrap();
        let k2 = crate::hostkey::generate(&d.path().join("k2"), "k2").unwrap();
        let req = |file: &str, keep, fp: Option<String>| PinRequest {
            target: Target::parse("web1").unwrap(),
            known_hosts: kh.clone(),
            fingerprint: fp,
            key_file: Some(d.path().join(file)),
            keep,
            timeout: Duration::from_secs(1),
        };
        let fp1 = fingerprint(k1.public_key());
        let fp2 = fingerprint(k2.public_key());
        let m = pin(&req("k1.pub", Keep::Replace, Some(fp1.clone())))
            .await
            .unwrap();
        assert_eq!(m, format!("pinned {fp1} for web1 in {}", kh.display()));
        // A wrong expected fingerprint pins nothing.
        let e = pin(&req("k2.pub", Keep::Add, Some(fp1.clone())))
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::HostKeyChanged { .. }), "{e}");
        pin(&req("k2.pub", Keep::Add, None)).await.unwrap();
        let l = list(&kh, false).unwrap();
        assert!(l.contains(&format!("   1  web1  {fp1}\n")), "{l}");
        assert!(l.contains(&format!("   2  web1  {fp2}\n")), "{l}");
        // Replace keeps only the new key.
        let m = pin(&req("k2.pub", Keep::Replace, None)).await.unwrap();
        assert!(
            m.ends_with("(already pinned; the host's other pins removed)"),
            "{m}"
        );
        let m = pin(&req("k2.pub", Keep::Replace, None)).await.unwrap();
        assert!(m.ends_with("(it was already pinned)"), "{m}");
        let l = list(&kh, true).unwrap();
        assert_eq!(l.lines().count(), 1, "{l}");
        assert!(l.contains(&fp2) && l.contains("\"hosts\":\"web1\""), "{l}");
        let m = forget(&kh, &Target::parse("web1").unwrap()).unwrap();
        assert!(m.starts_with("forgot 1 pin(s) for web1"), "{m}");
        let e = forget(&kh, &Target::parse("web1").unwrap()).unwrap_err();
        assert!(e.to_string().contains("no pin for web1"), "{e}");
        assert!(list(&kh, false).unwrap().starts_with("no pins in"));
        // Not a key file.
        let e = pin(&req("k1", Keep::Add, None)).await.unwrap_err();
        assert!(
            e.to_string().contains("is not an OpenSSH public key"),
            "{e}"
        );
    }
}
