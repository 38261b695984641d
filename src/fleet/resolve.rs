//! The one target resolver: every client command (`status`, `unlock`,
//! `watch`, `rescue`) turns what the admin typed into hosts here, so a
//! host means the same thing however it is named.
//!
//! Accepted, in this order for each word: `all`, an inventory group, an
//! inventory host, an ssh_config `Host` alias, `HOST:PORT`, `[V6]:PORT`,
//! an IP address, `USER@…` and `ssh://USER@HOST[:PORT]` around any of
//! those, and lastly a bare DNS name that resolves now. A bare name that is
//! none of these (most often a group typo) is an error here, before any
//! passphrase is asked. Port 0 is refused. `NAME:PORT` where NAME is an
//! inventory host or group or an ssh_config alias is refused too: the port
//! belongs in the inventory or ssh_config, and taking NAME as a DNS name
//! would silently address another host than the inventory's.

// Reads what the admin typed: no `unwrap`, `expect`, indexing or `panic`.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::inventory::{self, Host, Inventory};
use crate::client::Target;
use crate::text::clip;
use anyhow::{bail, Result};
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// Where names are looked up.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// `--inventory`; `None` means the default one if it exists (when
    /// `default_inventory` is set).
    pub inventory: Option<PathBuf>,
    /// `--ssh-config`; `None`: the inventory's, else `~/.ssh/config`.
    pub ssh_config: Option<PathBuf>,
    /// Load `~/.config/portcullis/inventory.toml` when no `--inventory`
    /// is given (not for `rescue`, whose hosts are not inventory hosts).
    pub default_inventory: bool,
}

/// What the targets named.
#[derive(Debug)]
pub struct Resolution {
    pub inventory: Inventory,
    /// Each host once, in the order named.
    pub hosts: Vec<Host>,
}

/// Loads the inventory and ssh_config `lookup` names.
pub fn load(lookup: &Lookup) -> Result<Inventory> {
    let mut inv = match &lookup.inventory {
        Some(p) => Inventory::load(p)?,
        None => {
            match inventory::default_path().filter(|p| lookup.default_inventory && p.exists()) {
                Some(p) => Inventory::load(&p)?,
                None => Inventory::empty(),
            }
        }
    };
    if let Some(p) = &lookup.ssh_config {
        if !p.exists() {
            bail!("--ssh-config {}: no such file", p.display());
        }
        inv.set_ssh_config(p.clone());
    }
    Ok(inv)
}

/// Resolves every target; an error names the first bad one.
pub fn resolve(targets: &[String], lookup: &Lookup) -> Result<Resolution> {
    let inventory = load(lookup)?;
    let hosts = resolve_in(&inventory, targets, lookup.ssh_config.as_deref())?;
    Ok(Resolution { inventory, hosts })
}

/// The one listener `known-hosts pin|forget` names, resolved as by
/// [`resolve`] (so a pin lands under the host id the client looks up),
/// except that a bare name outside the inventory and ssh_config needs no
/// DNS entry: a pin may be written from a `.pub` file before the host
/// exists, and a stale name forgotten after it is gone.
pub fn resolve_listener(target: &str, lookup: &Lookup) -> Result<Target> {
    let inv = load(lookup)?;
    let (_, rest) = split_user(target)?;
    let hosts = if is_address(rest) || inv.knows(rest) || inv.is_alias(rest)? {
        resolve_in(&inv, &[target.to_string()], lookup.ssh_config.as_deref())?
    } else {
        let t = Target::parse(rest)?;
        vec![inv.ad_hoc(
            rest,
            Target {
                host: t.host,
                port: inv.default_port(),
            },
        )]
    };
    match hosts.as_slice() {
        [h] => Ok(h.listener.clone()),
        hs => bail!(
            "{} names {} hosts; pin or forget one host at a time",
            clip(target),
            hs.len()
        ),
    }
}

/// Splits `ssh://USER@REST` / `USER@REST` into the user and the rest.
fn split_user(t: &str) -> Result<(Option<&str>, &str)> {
    let (url, rest) = match t.strip_prefix("ssh://") {
        Some(r) => (true, r.strip_suffix('/').unwrap_or(r)),
        None => (false, t),
    };
    if url && rest.contains(['/', '?', '#']) {
        bail!(
            "{}: an ssh:// target is ssh://[USER@]HOST[:PORT], without a path",
            clip(t)
        );
    }
    match rest.rsplit_once('@') {
        Some((user, host)) if !user.is_empty() && !host.is_empty() => Ok((Some(user), host)),
        Some(_) => bail!("{}: write USER@HOST, both non-empty", clip(t)),
        None if rest.is_empty() => bail!("{}: no host named", clip(t)),
        None => Ok((None, rest)),
    }
}

/// Whether `name` is written as an address rather than a name.
fn is_address(name: &str) -> bool {
    name.contains([':', '[']) || name.parse::<IpAddr>().is_ok()
}

/// `web1:2222` where `web1` is the inventory's or an alias: an error, not
/// an ad-hoc DNS target under the same name.
fn refuse_known_name_with_port(inv: &Inventory, rest: &str) -> Result<()> {
    if !rest.contains(':') || rest.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let Ok(t) = Target::parse(rest) else {
        return Ok(());
    };
    if t.host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let known = if inv.knows(&t.host) {
        Some(inv.describe_source())
    } else if inv.is_alias(&t.host)? {
        inv.ssh_config_path().map(|p| p.display().to_string())
    } else {
        None
    };
    if let Some(place) = known {
        bail!(
            "{}: {} is named in {place}; set its port there and write just {}, or write \
             its address as ADDRESS:{} (nothing was sent)",
            clip(rest),
            clip(&t.host),
            clip(&t.host),
            t.port
        );
    }
    Ok(())
}

fn resolve_in(inv: &Inventory, targets: &[String], ssh_config: Option<&Path>) -> Result<Vec<Host>> {
    let mut out: Vec<Host> = Vec::new();
    for t in targets {
        let (user, rest) = split_user(t)?;
        refuse_known_name_with_port(inv, rest)?;
        let mut found = if is_address(rest) || inv.knows(rest) || inv.is_alias(rest)? {
            inv.resolve(&[rest.to_string()])?
        } else if resolves(rest) {
            vec![inv.ad_hoc(
                rest,
                Target {
                    host: rest.to_string(),
                    port: inv.default_port(),
                },
            )]
        } else {
            bail!(
                "{} is not a group or host in {}, nor a Host alias in {}, nor a host \
                 name that resolves; check the spelling, or write HOST:PORT (nothing \
                 was sent)",
                clip(rest),
                inv.describe_source(),
                match (ssh_config, inv.ssh_config_path()) {
                    (Some(p), _) | (None, Some(p)) => p.display().to_string(),
                    (None, None) => "any ssh_config (none found)".into(),
                }
            );
        };
        if let Some(u) = user {
            for h in &mut found {
                h.user = u.to_string();
            }
        }
        for h in found {
            if !out.iter().any(|o| o.name == h.name) {
                out.push(h);
            }
        }
    }
    Ok(out)
}

/// Whether a bare name is a host the system's resolver knows now.
fn resolves(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && (name, 22u16)
            .to_socket_addrs()
            .is_ok_and(|mut a| a.next().is_some())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn inv(dir: &Path) -> Lookup {
        let p = dir.join("inv.toml");
        std::fs::write(
            &p,
            "[host.web1]\naddress = \"10.0.0.1\"\nport = 2222\n\
             [group.web]\nhosts = [\"web1\"]\n",
        )
        .unwrap();
        let cfg = dir.join("ssh_config");
        std::fs::write(
            &cfg,
            "Host box\n  HostName 10.0.0.9\n  Port 2200\n  User admin\n",
        )
        .unwrap();
        Lookup {
            inventory: Some(p),
            ssh_config: Some(cfg),
            default_inventory: false,
        }
    }

    fn one(t: &str, l: &Lookup) -> Host {
        let mut r = resolve(&[t.to_string()], l).unwrap();
        assert_eq!(r.hosts.len(), 1, "{t}");
        r.hosts.remove(0)
    }

    #[test]
    fn every_form_names_one_host() {
        let d = tempfile::tempdir().unwrap();
        let l = inv(d.path());
        let h = one("web1", &l);
        assert_eq!(h.listener.to_string(), "10.0.0.1:2222");
        let h = one("root@web1", &l);
        assert_eq!((h.user.as_str(), h.listener.port), ("root", 2222));
        let h = one("box", &l);
        assert_eq!(h.listener.to_string(), "10.0.0.9:2200");
        assert_eq!(h.user, "admin");
        let h = one("ops@127.0.0.1:2222", &l);
        assert_eq!(
            (h.user.as_str(), h.listener.to_string()),
            ("ops", "127.0.0.1:2222".into())
        );
        let h = one("ssh://ops@127.0.0.1:2222", &l);
        assert_eq!(
            (h.user.as_str(), h.listener.to_string()),
            ("ops", "127.0.0.1:2222".into())
        );
        let h = one("ssh://[::1]:2200/", &l);
        assert_eq!(h.listener.to_string(), "[::1]:2200");
        let h = one("localhost", &l);
        assert_eq!(h.listener.to_string(), "localhost:22");
        assert_eq!(
            resolve(&["web".into(), "web1".into()], &l)
                .unwrap()
                .hosts
                .len(),
            1
        );
    }

    #[test]
    fn bad_targets_fail_before_anything_is_sent() {
        let d = tempfile::tempdir().unwrap();
        let l = inv(d.path());
        let e = |t: &str| format!("{:#}", resolve(&[t.to_string()], &l).unwrap_err());
        let typo = e("webx");
        assert!(
            typo.contains("not a group or host") && typo.contains("nothing"),
            "{typo}"
        );
        assert!(e("web1:0").contains("port 0"), "{}", e("web1:0"));
        assert!(e("ssh://h:22/path").contains("without a path"));
        assert!(e("@h").contains("USER@HOST"));
    }
}
