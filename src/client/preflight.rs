//! What only the admin's workstation knows about a server's boot image, as
//! two preflight checks added to the server's own report: `pin` (the
//! image's host key is the one this client holds for that server's
//! initramfs listener) and `client-key` (one of the keys this client would
//! offer to the listener is in the image's `authorized_keys`). The
//! decisions are pure functions of fingerprints; gathering the pins and
//! the offered keys reads only portcullis's known-hosts file, the key
//! files and ssh-agent, never a private key's secret part.

use super::{default_identities, known_hosts, Identity, Target};
use crate::authkeys::fingerprint;
use crate::preflight::report::{AuthorizedKey, Check, Status};
use russh::keys::ssh_key::known_hosts::Marker;
use russh::keys::{PrivateKey, PublicKey};
use std::path::{Path, PathBuf};

/// The initramfs host keys this client accepts for one listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    /// `SHA256:…`; empty when nothing is pinned.
    pub fingerprints: Vec<String>,
    /// Keys `@revoked` in portcullis's known-hosts file: refused even when
    /// pinned.
    pub revoked: Vec<String>,
    /// Where the pins came from, for messages (the inventory's host table
    /// or the known-hosts file).
    pub from: String,
}

impl Pins {
    /// The inventory's pins when it has some (as `unlock` uses them),
    /// else the known-hosts file's for `listener`. The file's `@revoked`
    /// lines count either way. An unreadable file is an error: a pin
    /// check that silently reads nothing would say "not pinned".
    pub fn lookup(
        inventory: &[String],
        inventory_from: &str,
        file: Option<&Path>,
        listener: &Target,
    ) -> anyhow::Result<Pins> {
        let lines = match file {
            Some(p) if p.exists() => known_hosts::parse_file(p)?,
            _ => vec![],
        };
        let revoked = lines
            .iter()
            .filter(|l| l.entry.marker() == Some(&Marker::Revoked))
            .map(|l| fingerprint(l.entry.public_key()))
            .collect();
        if !inventory.is_empty() {
            return Ok(Pins {
                fingerprints: inventory.to_vec(),
                revoked,
                from: inventory_from.to_string(),
            });
        }
        let id = known_hosts::host_id(&listener.host, listener.port);
        Ok(Pins {
            fingerprints: known_hosts::keys_for(&lines, &id)
                .iter()
                .map(|(_, k)| fingerprint(k))
                .collect(),
            revoked,
            from: file.map_or_else(|| "no known-hosts file".into(), |p| p.display().to_string()),
        })
    }
}

/// A public key this client would offer, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    pub fingerprint: String,
    /// `ssh-agent`, or the key file.
    pub from: String,
}

fn check(id: &str, status: Status, summary: String, fix: Option<String>) -> Check {
    Check {
        id: id.into(),
        status,
        summary,
        fix,
    }
}

/// `pin`: does the image's host key match what this client holds for the
/// listener? `name` is how the admin names the host (for the fix lines).
pub fn pin_check(image_keys: &[String], pins: &Pins, listener: &Target, name: &str) -> Check {
    let Some(first) = image_keys.first() else {
        return check(
            "pin",
            Status::Skip,
            "the image holds no host key to compare (see host-key)".into(),
            None,
        );
    };
    if let Some(bad) = image_keys.iter().find(|k| pins.revoked.contains(k)) {
        return check(
            "pin",
            Status::Fail,
            format!("the image's host key {bad} is @revoked in this client's known-hosts file"),
            Some(
                "give the server a new host key (portcullisd keygen), rebuild the image, \
                 and pin the new key (docs/rotation.md)"
                    .into(),
            ),
        );
    }
    if pins.fingerprints.is_empty() {
        return check(
            "pin",
            Status::Warn,
            format!("no initramfs host key is pinned for {listener}; the image's key is {first}"),
            Some(format!(
                "pin it before the reboot: portcullis unlock {name} --fingerprint {first} \
                 checks and pins it at the first unlock, or set fingerprint = \"{first}\" in \
                 the inventory"
            )),
        );
    }
    if let Some(k) = image_keys.iter().find(|k| pins.fingerprints.contains(k)) {
        return check(
            "pin",
            Status::Pass,
            format!(
                "the image's host key {k} is pinned for {listener} ({})",
                pins.from
            ),
            None,
        );
    }
    check(
        "pin",
        Status::Fail,
        format!(
            "the image's host key {first} is not the one pinned for {listener} ({} in {}): \
             unlock will refuse it as HOST KEY CHANGED",
            pins.fingerprints.join(", "),
            pins.from
        ),
        Some(format!(
            "if the key was changed on purpose, check {first} on the server's console and \
             re-pin it (portcullis known-hosts pin {name} --key with the server's \
             /etc/portcullis/host_key.pub, or the inventory's fingerprint); else rebuild \
             the image with the pinned key"
        )),
    )
}

/// `client-key`: is one of the keys this client offers in the image's
/// `authorized_keys`? `problems` are key files that could not be read.
pub fn client_key_check(
    image_keys: &[AuthorizedKey],
    offered: &[Offered],
    problems: &[String],
) -> Check {
    let fix = "add your public key to /etc/portcullis/authorized_keys on the server and \
               rebuild the image (update-initramfs -u -k all, dracut -f or mkinitcpio -P)";
    if offered.is_empty() {
        let why = if problems.is_empty() {
            String::new()
        } else {
            format!(" ({})", problems.join("; "))
        };
        return check(
            "client-key",
            Status::Fail,
            format!("this client has no key to offer{why}"),
            Some("start ssh-agent with your key, or pass -i KEYFILE (or set identity in the inventory)".into()),
        );
    }
    if let Some((o, k)) = offered.iter().find_map(|o| {
        image_keys
            .iter()
            .find(|k| k.fingerprint == o.fingerprint)
            .map(|k| (o, k))
    }) {
        let comment = if k.comment.is_empty() {
            String::new()
        } else {
            format!(" as {:?}", k.comment)
        };
        return check(
            "client-key",
            Status::Pass,
            format!(
                "your key {} ({}) is in the image's authorized_keys{comment}",
                o.fingerprint, o.from
            ),
            None,
        );
    }
    let mine: Vec<String> = offered
        .iter()
        .map(|o| format!("{} ({})", o.fingerprint, o.from))
        .collect();
    check(
        "client-key",
        Status::Fail,
        format!(
            "none of your keys is in the image's authorized_keys ({} keys there); you offer {}",
            image_keys.len(),
            mine.join(", ")
        ),
        Some(fix.into()),
    )
}

/// The keys this client would offer, and what could not be read.
#[derive(Debug, Clone, Default)]
pub struct ClientKeys {
    pub offered: Vec<Offered>,
    /// Key files (or the agent) that could not be read, one line each.
    pub problems: Vec<String>,
}

/// The public keys unlock would offer, in its order: ssh-agent's (when
/// enabled and `SSH_AUTH_SOCK` is set), then the key files (the given ones,
/// else `~/.ssh/id_*`).
pub async fn offered_keys(identity: &Identity) -> ClientKeys {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    if identity.agent && std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match russh::keys::agent::client::AgentClient::connect_env().await {
            Ok(mut agent) => {
                for id in agent.request_identities().await.unwrap_or_default() {
                    if let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = id {
                        out.push(Offered {
                            fingerprint: fingerprint(&key),
                            from: "ssh-agent".into(),
                        });
                    }
                }
            }
            Err(e) => problems.push(format!("ssh-agent at SSH_AUTH_SOCK not usable: {e}")),
        }
    }
    let files = if identity.files.is_empty() {
        default_identities()
    } else {
        identity.files.clone()
    };
    for path in files {
        match public_part(&path) {
            Ok(k) => {
                let fp = fingerprint(&k);
                if !out.iter().any(|o| o.fingerprint == fp) {
                    out.push(Offered {
                        fingerprint: fp,
                        from: path.display().to_string(),
                    });
                }
            }
            Err(e) => problems.push(e),
        }
    }
    ClientKeys {
        offered: out,
        problems,
    }
}

/// A key file's public key without its passphrase: `FILE.pub` when it is
/// there, else the public half an OpenSSH private key file stores in the
/// clear (also when the secret half is encrypted).
fn public_part(path: &Path) -> Result<PublicKey, String> {
    let mut pubfile = PathBuf::from(path);
    pubfile.as_mut_os_string().push(".pub");
    if let Ok(text) = std::fs::read_to_string(&pubfile) {
        if let Ok(k) = PublicKey::from_openssh(text.trim()) {
            return Ok(k);
        }
    }
    // May be an unencrypted secret key: wiped after use.
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read key {}: {e}", path.display()))?,
    );
    PrivateKey::from_openssh(text.as_bytes())
        .map(|k| k.public_key().clone())
        .map_err(|_| {
            format!(
                "key {}: not an OpenSSH key and no {} beside it",
                path.display(),
                pubfile.display()
            )
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: &str = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const B: &str = "SHA256:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    fn listener() -> Target {
        Target {
            host: "192.0.2.1".into(),
            port: 2222,
        }
    }

    fn pins(fps: &[&str]) -> Pins {
        Pins {
            fingerprints: fps.iter().map(|s| s.to_string()).collect(),
            revoked: vec![],
            from: "inv.toml host.web1".into(),
        }
    }

    #[test]
    fn pin_passes_warns_and_fails() {
        let c = pin_check(&[A.into()], &pins(&[B, A]), &listener(), "web1");
        assert_eq!(c.status, Status::Pass, "{c:?}");
        let c = pin_check(&[A.into()], &pins(&[]), &listener(), "web1");
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.unwrap().contains(&format!("--fingerprint {A}")));
        let c = pin_check(&[A.into()], &pins(&[B]), &listener(), "web1");
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains(B) && c.summary.contains(A), "{c:?}");
        assert!(c.fix.unwrap().contains("known-hosts pin web1"));
        let c = pin_check(&[], &pins(&[B]), &listener(), "web1");
        assert_eq!(c.status, Status::Skip);
        let mut revoked = pins(&[A]);
        revoked.revoked.push(A.into());
        let c = pin_check(&[A.into()], &revoked, &listener(), "web1");
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("@revoked"));
    }

    fn authorized(fp: &str) -> AuthorizedKey {
        AuthorizedKey {
            fingerprint: fp.into(),
            algorithm: "ssh-ed25519".into(),
            comment: "ann@desk".into(),
        }
    }

    fn offered(fp: &str) -> Offered {
        Offered {
            fingerprint: fp.into(),
            from: "ssh-agent".into(),
        }
    }

    #[test]
    fn client_key_passes_only_with_a_listed_key() {
        let c = client_key_check(&[authorized(B)], &[offered(A), offered(B)], &[]);
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.summary.contains("ann@desk"));
        let c = client_key_check(&[authorized(B)], &[offered(A)], &[]);
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains(A) && c.fix.unwrap().contains("authorized_keys"));
        let c = client_key_check(&[], &[offered(A)], &[]);
        assert_eq!(c.status, Status::Fail);
        let c = client_key_check(&[authorized(B)], &[], &["cannot read key /k".into()]);
        assert_eq!(c.status, Status::Fail);
        assert!(c.summary.contains("/k") && c.fix.unwrap().contains("-i KEYFILE"));
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn pins_come_from_the_inventory_or_the_known_hosts_file() {
        let d = tempfile::tempdir().unwrap();
        let kh = d.path().join("known_hosts");
        let fp = fingerprint(&PublicKey::from_openssh(KEY).unwrap());
        std::fs::write(&kh, format!("[192.0.2.1]:2222 {KEY}\n")).unwrap();
        let p = Pins::lookup(&[], "inv", Some(&kh), &listener()).unwrap();
        assert_eq!(p.fingerprints, vec![fp.clone()]);
        assert!(p.from.contains("known_hosts"));
        let p = Pins::lookup(&[B.into()], "inv", Some(&kh), &listener()).unwrap();
        assert_eq!(
            (p.fingerprints, p.from.as_str()),
            (vec![B.to_string()], "inv")
        );
        let other = Target {
            host: "192.0.2.1".into(),
            port: 22,
        };
        let p = Pins::lookup(&[], "inv", Some(&kh), &other).unwrap();
        assert!(p.fingerprints.is_empty());
        std::fs::write(&kh, format!("@revoked * {KEY}\n")).unwrap();
        let p = Pins::lookup(&[], "inv", Some(&kh), &listener()).unwrap();
        assert_eq!(p.revoked, vec![fp]);
        let p = Pins::lookup(&[], "inv", Some(&d.path().join("none")), &listener()).unwrap();
        assert!(p.fingerprints.is_empty());
    }

    #[tokio::test]
    async fn offered_keys_read_public_halves_only() {
        let d = tempfile::tempdir().unwrap();
        let with_pub = d.path().join("id_a");
        std::fs::write(&with_pub, "not a key").unwrap();
        std::fs::write(d.path().join("id_a.pub"), format!("{KEY} a@b\n")).unwrap();
        let bare = d.path().join("id_b");
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "secret words", "-f"])
            .arg(&bare)
            .status()
            .unwrap();
        assert!(made.success());
        let bare_pub = d.path().join("id_b.pub");
        let want_b = std::fs::read_to_string(&bare_pub).unwrap();
        let want_b = fingerprint(&PublicKey::from_openssh(want_b.trim()).unwrap());
        // Only the encrypted private key file is left.
        std::fs::remove_file(&bare_pub).unwrap();
        let missing = d.path().join("id_c");
        let ClientKeys {
            offered: keys,
            problems,
        } = offered_keys(&Identity {
            agent: false,
            files: vec![with_pub.clone(), bare.clone(), missing],
        })
        .await;
        let fps: Vec<&str> = keys.iter().map(|k| k.fingerprint.as_str()).collect();
        let want_a = fingerprint(&PublicKey::from_openssh(KEY).unwrap());
        assert_eq!(fps, vec![want_a.as_str(), want_b.as_str()]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("id_c"));
    }
}
