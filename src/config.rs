//! The listener's configuration: raw TOML (unknown keys rejected) turned into
//! one validated [`Settings`] value. Every error names the file, the key and
//! the value, so a typo fails `portcullisd check` at image build time rather
//! than the next reboot. Quoted values are clipped ([`crate::text::clip`]) so
//! a huge value cannot flood the build log.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::authkeys::AuthorizedKeys;
use crate::error::{bail, Context, Result};
use crate::text::clip;
use crate::unlock::volume::{valid_mapper_name, DeviceSpec, Volume};
use fields::Fields;
use russh::keys::PrivateKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) mod fields;
pub(crate) mod toml_subset;

pub const DEFAULT_PATH: &str = "/etc/portcullis/portcullisd.toml";

/// Longest `device =` accepted (well above any /dev/disk/by-* path).
const MAX_DEVICE_LEN: usize = 1024;

/// The top-level keys.
const KEYS: &[&str] = &[
    "listen",
    "host-key",
    "authorized-keys",
    "backend",
    "cryptsetup",
    "max-tries",
    "volumes-from-cmdline",
    "limits",
    "volume",
    "relay",
];

/// One `[[volume]]` as written: its line, for messages.
#[derive(Debug)]
struct RawVolume<'a> {
    name: &'a str,
    device: &'a str,
    line: usize,
}

/// Which unlock backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// Pick at runtime: systemd initrd, else Debian askpass, else cryptsetup.
    Auto,
    /// Run `cryptsetup open` ourselves.
    Cryptsetup,
    /// Answer systemd's ask-password requests.
    Systemd,
    /// Feed Debian's askpass through its fifo.
    Askpass,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub auth_attempts: u32,
    pub login_grace: Duration,
    pub idle_timeout: Duration,
    pub max_unauthenticated: u32,
    pub max_sessions: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            auth_attempts: 6,
            login_grace: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            // Enough slots that a flood from a few addresses leaves the admin
            // a way in (benches/flood.sh); about 0.7 MB when all are held.
            max_unauthenticated: 64,
            max_sessions: 16,
        }
    }
}

/// Whether this build carries the relay's client (the `relay` cargo
/// feature, on by default); a build without it refuses `[relay]` at `check`
/// and at boot rather than boot a listener nobody can reach.
pub const RELAY_BUILT_IN: bool = cfg!(feature = "relay");
const RELAY_MISSING: &str = "this portcullisd was built without the relay \
    (cargo --no-default-features); install a build with the default features, \
    or remove the [relay] section";

/// Validated listener settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: Vec<SocketAddr>,
    /// One or more, at most one per algorithm (checked when loaded:
    /// [`crate::hostkey::load_all`]); the client picks the one it pinned.
    pub host_keys: Vec<PathBuf>,
    pub authorized_keys: PathBuf,
    pub backend: BackendKind,
    pub cryptsetup: PathBuf,
    pub max_tries: u32,
    pub volumes_from_cmdline: bool,
    pub limits: Limits,
    pub volumes: Vec<Volume>,
    /// Log in out to this relay and serve what it forwards (docs/relay.md).
    pub relay: Option<crate::relay::RelaySettings>,
}

impl Settings {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Validates the text of a config file (the TOML subset of
    /// [`toml_subset`]); `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let file = path.display();
        let root = toml_subset::parse(text)
            .map_err(|e| crate::err!("{file} (line {}): {}", e.line, e.msg))?;
        let f = Fields::new(&file, String::new(), "", &root, KEYS)?;
        let listen = match f.strs("listen", "a list of addresses")? {
            None => vec!["0.0.0.0:22".parse::<SocketAddr>()?],
            Some(list) => {
                if list.is_empty() {
                    let line = f.node("listen").map_or(0, |n| n.line);
                    bail!("{}: listen = []: give at least one address", f.at(line));
                }
                list.iter()
                    .map(|&(a, line)| {
                        a.parse::<SocketAddr>().map_err(|_| {
                            crate::err!(
                                "{}: listen = {} is not an address:port (e.g. \"0.0.0.0:22\" or \"[::]:22\")",
                                f.at(line),
                                clip(a)
                            )
                        })
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        let listen_line = f.node("listen").map_or(0, |n| n.line);
        check_listen(&f.at(listen_line), &listen)?;
        let backend = match f.str("backend")? {
            None | Some(("auto", _)) => BackendKind::Auto,
            Some(("cryptsetup", _)) => BackendKind::Cryptsetup,
            Some(("systemd", _)) => BackendKind::Systemd,
            Some(("askpass", _)) => BackendKind::Askpass,
            Some((other, line)) => bail!(
                "{}: backend = {}: expected \"auto\", \"cryptsetup\", \"systemd\" or \"askpass\"",
                f.at(line),
                clip(other)
            ),
        };
        let abs = |key: &str, value: Option<(&str, usize)>, default: &str| -> Result<PathBuf> {
            let (p, line) = value.unwrap_or((default, 0));
            let at = f.at(line);
            // Hooks read `portcullisd check --list-files` line by line.
            if p.chars().any(char::is_control) {
                bail!(
                    "{at}: {key} = {}: a path with control characters (a newline?); rename the file",
                    clip(p)
                );
            }
            let p = PathBuf::from(p);
            if !p.is_absolute() {
                bail!(
                    "{at}: {key} = {} must be an absolute path",
                    clip(&p.display().to_string())
                );
            }
            // Later errors name the path in full; no usable path is longer.
            if p.as_os_str().len() > crate::text::MAX_PATH {
                bail!(
                    "{at}: {key} = {}: longer than {} bytes",
                    clip(&p.display().to_string()),
                    crate::text::MAX_PATH
                );
            }
            Ok(p)
        };
        const PATHS: &str = "a path or a list of paths";
        let host_keys = match f.node("host-key").map(|n| &n.value) {
            None => vec![abs("host-key", None, "/etc/portcullis/host_key")?],
            Some(toml_subset::Value::Str(_)) => vec![abs("host-key", f.str("host-key")?, "")?],
            Some(_) => {
                let ps = f.strs("host-key", PATHS)?.unwrap_or_default();
                if ps.is_empty() {
                    let line = f.node("host-key").map_or(0, |n| n.line);
                    bail!("{}: host-key = []: give at least one key file", f.at(line));
                }
                let mut seen = std::collections::HashSet::with_capacity(ps.len());
                let mut out = Vec::with_capacity(ps.len());
                for (p, line) in ps {
                    let p = abs("host-key", Some((p, line)), "")?;
                    if !seen.insert(p.clone()) {
                        bail!(
                            "{}: host-key lists {} twice; list each key file once",
                            f.at(line),
                            clip(&p.display().to_string())
                        );
                    }
                    out.push(p);
                }
                out
            }
        };
        let authorized_keys = abs(
            "authorized-keys",
            f.str("authorized-keys")?,
            "/etc/portcullis/authorized_keys",
        )?;
        let cryptsetup = abs("cryptsetup", f.str("cryptsetup")?, "/sbin/cryptsetup")?;
        let max_tries = int(&f, "max-tries", 10, 1, 1000)?;
        let d = Limits::default();
        let empty = toml_subset::Table::default();
        let l = f.table("limits")?.unwrap_or(&empty);
        let l = Fields::new(
            &file,
            "limits.".into(),
            "[limits]",
            l,
            &[
                "auth-attempts",
                "login-grace-secs",
                "idle-timeout-secs",
                "max-unauthenticated",
                "max-sessions",
            ],
        )?;
        let secs = |key: &str, default: Duration, hi: i64| -> Result<Duration> {
            int(&l, key, default.as_secs(), 1, hi).map(Duration::from_secs)
        };
        let limits = Limits {
            auth_attempts: int(&l, "auth-attempts", d.auth_attempts, 1, 100)?,
            login_grace: secs("login-grace-secs", d.login_grace, 3600)?,
            idle_timeout: secs("idle-timeout-secs", d.idle_timeout, 86400)?,
            max_unauthenticated: int(&l, "max-unauthenticated", d.max_unauthenticated, 1, 1024)?,
            max_sessions: int(&l, "max-sessions", d.max_sessions, 1, 1024)?,
        };
        let raw_volumes = f
            .tables("volume")?
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let v = Fields::new(
                    &file,
                    format!("volume[{i}]."),
                    "[[volume]]",
                    t,
                    &["name", "device"],
                )?;
                let (name, _) = v.required_str("name")?;
                let (device, _) = v.required_str("device")?;
                Ok(RawVolume {
                    name,
                    device,
                    line: t.line,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let volumes = validate_volumes(&file, &raw_volumes)?;
        let volumes_from_cmdline = f.bool("volumes-from-cmdline")?.unwrap_or(true);
        if backend == BackendKind::Cryptsetup && volumes.is_empty() && !volumes_from_cmdline {
            bail!("{file}: no [[volume]] and volumes-from-cmdline = false: nothing to unlock");
        }
        let relay = match f.table("relay")? {
            None => None,
            Some(t) => {
                let at = f.at(t.line);
                if !RELAY_BUILT_IN {
                    bail!("{at}: [relay]: {RELAY_MISSING}");
                }
                let r = Fields::new(
                    &file,
                    "relay.".into(),
                    "[relay]",
                    t,
                    crate::relay::RawRelay::KEYS,
                )?;
                let raw = crate::relay::RawRelay::read(&r)?;
                Some(crate::relay::RelaySettings::from_raw(&at, raw)?)
            }
        };
        Ok(Settings {
            listen,
            host_keys,
            authorized_keys,
            backend,
            cryptsetup,
            max_tries,
            volumes_from_cmdline,
            limits,
            volumes,
            relay,
        })
    }

    /// Loads the files the settings point at, so `portcullisd check` fails on
    /// a missing or unreadable key now, not at boot.
    pub fn check_files(&self, root: &crate::sys::Root) -> Result<CheckReport> {
        // The two mistakes of a first install, with the way out.
        for key in &self.host_keys {
            if !root.join(key).exists() {
                bail!(
                    "host key {} does not exist; create it once with: portcullisd keygen {}",
                    key.display(),
                    key.display()
                );
            }
        }
        let ak_path = root.join(&self.authorized_keys);
        if !ak_path.exists() {
            bail!(
                "authorized keys {} does not exist; put the admins' public keys there (one per line)",
                self.authorized_keys.display()
            );
        }
        let keys = self.load_host_keys(root)?;
        let text = std::fs::read_to_string(&ak_path)
            .with_context(|| format!("reading authorized keys {}", ak_path.display()))?;
        let ak =
            AuthorizedKeys::parse(&text).map_err(|e| crate::err!("{}: {e}", ak_path.display()))?;
        if ak.keys.is_empty() {
            bail!(
                "{}: no keys: nobody could unlock; add an admin's public key (one ssh-ed25519 … line)",
                ak_path.display()
            );
        }
        // Only the cryptsetup backend runs cryptsetup itself; with `auto` the
        // image may be a systemd or Debian one that never needs it here.
        let exe = root.join(&self.cryptsetup);
        let cryptsetup_missing = !exe.exists();
        if self.backend == BackendKind::Cryptsetup && cryptsetup_missing {
            bail!(
                "cryptsetup not found at {}: set cryptsetup = \"…\" in the config",
                self.cryptsetup.display()
            );
        }
        let relay_key = self.relay.as_ref().map(|r| r.check_key(root)).transpose()?;
        Ok(CheckReport {
            relay_key,
            fingerprint: fingerprints(&keys),
            keys: ak.keys.len(),
            cryptsetup_missing: cryptsetup_missing && self.backend == BackendKind::Auto,
        })
    }

    /// Every host key, read under `root`; two keys of one algorithm are an
    /// error naming both files.
    pub fn load_host_keys(&self, root: &crate::sys::Root) -> Result<Vec<PrivateKey>> {
        let read: Vec<PathBuf> = self.host_keys.iter().map(|p| root.join(p)).collect();
        crate::hostkey::load_all(&self.host_keys, &read)
    }
}

/// One key: its fingerprint, as before. Several: each with its algorithm,
/// so the admin sees which fingerprint goes with which key type.
fn fingerprints(keys: &[PrivateKey]) -> String {
    match keys {
        [one] => crate::authkeys::fingerprint(one.public_key()),
        _ => keys
            .iter()
            .map(|k| {
                format!(
                    "{} ({})",
                    crate::authkeys::fingerprint(k.public_key()),
                    k.algorithm()
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

pub struct CheckReport {
    /// The relay key's fingerprint, when a `[relay]` is configured.
    pub relay_key: Option<String>,
    /// The host key's fingerprint, or each key's with its algorithm.
    pub fingerprint: String,
    pub keys: usize,
    /// `auto` backend without a cryptsetup binary: fine in a systemd or
    /// Debian image, fatal in a plain busybox one. Said, not failed.
    pub cryptsetup_missing: bool,
}

/// Refuses listen addresses that the listener could not all bind at boot:
/// one listed twice, a wildcard and an address of the same family on the
/// same port (the wildcard already takes it: "Address in use"), and
/// IPv4-mapped IPv6 addresses (IPv6 sockets are v6-only). `0.0.0.0:22` with
/// `[::]:22` is fine: see [`crate::listener::bind`]. Port 0 (any free port)
/// never conflicts.
fn check_listen(file: &impl std::fmt::Display, listen: &[SocketAddr]) -> Result<()> {
    use std::collections::{HashMap, HashSet};
    let mut seen = HashSet::with_capacity(listen.len());
    // Per (family, port): the wildcard, and the first specific address.
    let mut wildcard: HashMap<(bool, u16), SocketAddr> = HashMap::new();
    let mut specific: HashMap<(bool, u16), SocketAddr> = HashMap::new();
    for &a in listen {
        if let std::net::IpAddr::V6(ip) = a.ip() {
            if let Some(v4) = ip.to_ipv4_mapped() {
                bail!(
                    "{file}: listen = \"{a}\": an IPv4-mapped address; write it as \"{v4}:{}\"",
                    a.port()
                );
            }
        }
        if a.port() == 0 {
            continue;
        }
        if !seen.insert(a) {
            bail!("{file}: listen = \"{a}\" is listed twice; keep one");
        }
        let key = (a.is_ipv6(), a.port());
        let other = if a.ip().is_unspecified() {
            let other = specific.get(&key).copied();
            wildcard.insert(key, a);
            other
        } else {
            specific.entry(key).or_insert(a);
            wildcard.get(&key).copied()
        };
        if let Some(o) = other {
            bail!(
                "{file}: listen = \"{o}\" and \"{a}\" overlap: the wildcard already listens on every {} address on port {}; keep one",
                if a.is_ipv6() { "IPv6" } else { "IPv4" },
                a.port()
            );
        }
    }
    Ok(())
}

/// The `[[volume]]` list: valid names, each used once, parsable devices.
fn validate_volumes(file: &impl std::fmt::Display, raw: &[RawVolume]) -> Result<Vec<Volume>> {
    let mut volumes: Vec<Volume> = Vec::with_capacity(raw.len());
    // A set, not a scan of `volumes`: the check must stay linear (a scan
    // took minutes for 200 000 volumes).
    let mut names = std::collections::HashSet::with_capacity(raw.len());
    for (i, v) in raw.iter().enumerate() {
        let at = format!("{file} (line {})", v.line);
        if !valid_mapper_name(v.name) {
            bail!(
                "{at}: volume[{i}].name = {}: use letters, digits, '-', '_', '.', '+'",
                clip(v.name)
            );
        }
        if !names.insert(v.name) {
            bail!("{at}: volume[{i}].name = {} is used twice", clip(v.name));
        }
        // DeviceSpec's own errors quote the whole value; no real device
        // spec is this long, so say so before it can be echoed.
        if v.device.len() > MAX_DEVICE_LEN {
            bail!(
                "{at}: volume[{i}].device = {}: longer than {MAX_DEVICE_LEN} bytes; \
                 use UUID=…, LABEL=… or a /dev path",
                clip(v.device)
            );
        }
        let device = DeviceSpec::parse(v.device)
            .map_err(|e| crate::err!("{at}: volume[{i}].device: {e}"))?;
        volumes.push(Volume {
            name: v.name.to_owned(),
            device,
            options: Default::default(),
        });
    }
    Ok(volumes)
}

/// `key` of `f` as a `T` from `lo` to `hi`, or `default` when absent.
fn int<T: TryFrom<i64>>(f: &Fields, key: &str, default: T, lo: i64, hi: i64) -> Result<T> {
    match f.int(key, lo, hi)? {
        None => Ok(default),
        // Unreachable for the ranges used here, which all fit T.
        Some(v) => T::try_from(v).map_err(|_| crate::err!("{key} = {v}: out of range")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Settings> {
        Settings::parse(s, Path::new("/etc/portcullis/portcullisd.toml"))
    }

    #[test]
    fn minimal_and_full() {
        let s = parse("[[volume]]\nname = \"root\"\ndevice = \"UUID=abcd\"\n").unwrap();
        assert_eq!(s.listen, vec!["0.0.0.0:22".parse().unwrap()]);
        assert_eq!(s.volumes[0].device, DeviceSpec::Uuid("abcd".into()));
        assert_eq!(s.limits, Limits::default());
        let s = parse(
            "listen = [\"[::]:2222\"]\nbackend = \"cryptsetup\"\nmax-tries = 3\n\
             [limits]\nauth-attempts = 3\nlogin-grace-secs = 10\n",
        )
        .unwrap();
        assert_eq!(s.listen[0].port(), 2222);
        assert_eq!(s.limits.login_grace, Duration::from_secs(10));
        assert!(s.volumes.is_empty() && s.volumes_from_cmdline);
    }

    /// A build without the `relay` feature refuses `[relay]` with one line
    /// saying what to install; the default build takes it.
    #[test]
    fn a_relay_section_needs_the_relay_build() {
        let text = "[[volume]]\nname = \"root\"\ndevice = \"/dev/vda2\"\n\n[relay]\n\
                    host = \"192.0.2.7\"\nuser = \"u\"\nkey = \"/etc/portcullis/relay_key\"\n\
                    host-key-fingerprints = [\"SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"]\n\
                    remote-port = 2201\n";
        let got = parse(text);
        if RELAY_BUILT_IN {
            assert_eq!(got.unwrap().relay.unwrap().remote_port, 2201);
        } else {
            let e = format!("{:#}", got.unwrap_err());
            assert!(
                e.contains("[relay]: this portcullisd was built without the relay"),
                "{e}"
            );
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn precise_errors() {
        let e = |s: &str| format!("{:#}", parse(s).unwrap_err());
        let m = e("lisen = [\"0.0.0.0:22\"]\n");
        assert!(
            m.contains("unknown field `lisen`") && m.contains("line 1"),
            "{m}"
        );
        assert!(m.starts_with("/etc/portcullis/portcullisd.toml"), "{m}");
        let m = e("listen = [\"0.0.0.0\"]");
        assert!(
            m.contains("listen = \"0.0.0.0\" is not an address:port"),
            "{m}"
        );
        let m = e("[[volume]]\nname = \"root\"\ndevice = \"vda2\"\n");
        assert!(
            m.contains("volume[0].device") && m.contains("absolute path"),
            "{m}"
        );
        let m = e("[[volume]]\nname = \"a b\"\ndevice = \"/dev/vda\"\n");
        assert!(m.contains("volume[0].name = \"a b\""), "{m}");
        let m = e("[limits]\nlogin-grace-secs = 0\n");
        assert!(
            m.contains("limits.login-grace-secs = 0: expected 1 to 3600"),
            "{m}"
        );
        let m = e("host-key = \"keys/host\"\n");
        assert!(
            m.contains("host-key = \"keys/host\" must be an absolute path"),
            "{m}"
        );
        let m = e("backend = \"dropbear\"\n");
        assert!(m.contains("backend = \"dropbear\""), "{m}");
        let m = e("backend = \"cryptsetup\"\nvolumes-from-cmdline = false\n");
        assert!(m.contains("nothing to unlock"), "{m}");
        let m = e("[[volume]]\nname = \"r\"\ndevice = \"/dev/a\"\n[[volume]]\nname = \"r\"\ndevice = \"/dev/b\"\n");
        assert!(m.contains("used twice"), "{m}");
        let m = e("max-tries = \"many\"\n");
        assert!(m.contains("line 1"), "{m}");
    }

    /// What serde's derived readers checked, now checked by hand: unknown
    /// keys in every section, types, required keys, ranges; each error on
    /// one line naming the file, the line and the key.
    #[test]
    fn typed_reading_names_file_line_and_key() {
        let e = |s: &str| format!("{:#}", parse(s).unwrap_err());
        let cases = [
            (
                "max-tries = 3\n[limits]\nauth-attemps = 3\n",
                "(line 3): unknown field `auth-attemps` in [limits], expected one of `auth-attempts`,",
            ),
            (
                "[[volume]]\nname = \"r\"\ndevice = \"/dev/a\"\nopts = \"x\"\n",
                "(line 4): unknown field `opts` in [[volume]], expected one of `name`, `device`",
            ),
            ("\n\nmax-tries = \"many\"\n", "(line 3): max-tries: invalid type: string \"many\", expected an integer"),
            ("max-tries = 0\n", "(line 1): max-tries = 0: expected 1 to 1000"),
            ("max-tries = -1\n", "(line 1): max-tries = -1: expected 1 to 1000"),
            ("max-tries = 9223372036854775807\n", "max-tries = 9223372036854775807: expected 1 to 1000"),
            ("volumes-from-cmdline = 1\n", "volumes-from-cmdline: invalid type: integer 1, expected true or false"),
            ("backend = true\n", "(line 1): backend: invalid type: boolean true, expected a string"),
            ("listen = \"0.0.0.0:22\"\n", "listen: invalid type: string \"0.0.0.0:22\", expected a list of addresses"),
            ("listen = [\n\"0.0.0.0:22\",\n22]\n", "(line 3): listen: invalid type: integer 22, expected a string in the list"),
            ("listen = []\n", "(line 1): listen = []: give at least one address"),
            ("listen = [\"0.0.0.0:22\",\n\"0.0.0.0\"]\n", "(line 2): listen = \"0.0.0.0\" is not an address:port"),
            ("host-key = [[\"/a\"]]\n", "host-key: invalid type: an array, expected a string in the list"),
            ("host-key = true\n", "host-key: invalid type: boolean true, expected a path or a list of paths"),
            ("limits = 3\n", "limits: invalid type: integer 3, expected a table: [limits]"),
            ("[[limits]]\n", "limits: invalid type: an array of tables, expected a table: [limits]"),
            ("volume = 1\n", "volume: invalid type: integer 1, expected [[volume]] tables"),
            ("volume = [1]\n", "volume: invalid type: an array, expected [[volume]] tables"),
            ("[volume]\nname = \"r\"\n", "volume: invalid type: a table, expected [[volume]] tables"),
            ("\n[[volume]]\nname = \"r\"\n", "(line 2): missing field `device` in [[volume]]; add device = …"),
            ("[[volume]]\nname = 1\ndevice = \"/dev/a\"\n", "(line 2): volume[0].name: invalid type: integer 1, expected a string"),
            ("[[volume]]\nname = \"r\"\ndevice = \"/dev/a\"\n[[volume]]\nname = \"r\"\ndevice = \"/dev/b\"\n", "(line 4): volume[1].name = \"r\" is used twice"),
            ("[limits]\nmax-sessions = 1025\n", "(line 2): limits.max-sessions = 1025: expected 1 to 1024"),
            ("limits.max-sessions = 0\n", "(line 1): limits.max-sessions = 0: expected 1 to 1024"),
            ("relay = 1\n", "relay: invalid type: integer 1, expected a table: [relay]"),
            ("a = 1.5\n", "(line 1): a = \"1.5\": floats are not supported in portcullisd.toml"),
            ("[limits]\nmax-sessions = 1\n[limits]\n", "(line 3): [limits] is defined twice (first on line 1); merge the two"),
        ];
        for (doc, want) in cases {
            let m = e(doc);
            assert!(
                m.starts_with("/etc/portcullis/portcullisd.toml (line "),
                "{m}"
            );
            assert!(m.contains(want), "{doc:?}:\n got  {m}\n want {want}");
            assert!(!m.contains('\n'), "{m}");
        }
        // Dotted keys, CRLF and a byte-order mark read as the plain form.
        let s = parse("\u{feff}limits.auth-attempts = 3\r\nlimits.max-sessions = 4\r\n").unwrap();
        assert_eq!((s.limits.auth_attempts, s.limits.max_sessions), (3, 4));
        let s = parse("volume = []\nlisten = [\n  '[::]:22', # v6\n]\n").unwrap();
        assert!(s.volumes.is_empty());
        assert_eq!(s.listen, vec!["[::]:22".parse().unwrap()]);
    }

    #[test]
    fn host_key_is_a_path_or_a_list() {
        let s = parse("").unwrap();
        assert_eq!(s.host_keys, vec![PathBuf::from("/etc/portcullis/host_key")]);
        let s = parse("host-key = \"/k/ed\"\n").unwrap();
        assert_eq!(s.host_keys, vec![PathBuf::from("/k/ed")]);
        let s = parse("host-key = [\"/k/ed\", \"/k/ec\"]\n").unwrap();
        assert_eq!(
            s.host_keys,
            vec![PathBuf::from("/k/ed"), PathBuf::from("/k/ec")]
        );
        let e = |s: &str| format!("{:#}", parse(s).unwrap_err());
        let m = e("host-key = []\n");
        assert!(
            m.contains("host-key = []: give at least one key file"),
            "{m}"
        );
        let m = e("host-key = [\"/k/a\", \"/k/a\"]\n");
        assert!(m.contains("lists \"/k/a\" twice"), "{m}");
        let m = e("host-key = [\"/k/a\", \"b\"]\n");
        assert!(
            m.contains("host-key = \"b\" must be an absolute path"),
            "{m}"
        );
        let m = e("host-key = 3\n");
        assert!(
            m.contains("a path or a list of paths") && m.contains("line 1"),
            "{m}"
        );
    }

    #[test]
    fn listen_addresses_that_cannot_all_be_bound() {
        let e = |s: &str| format!("{:#}", parse(s).unwrap_err());
        // Both families on one port: fine (v6-only sockets).
        let s = parse("listen = [\"0.0.0.0:22\", \"[::]:22\"]\n").unwrap();
        assert_eq!(s.listen.len(), 2);
        parse("listen = [\"10.0.0.1:22\", \"10.0.0.2:22\", \"0.0.0.0:2222\", \"[::1]:22\", \"0.0.0.0:22\"]\n")
            .unwrap_err();
        parse("listen = [\"10.0.0.1:22\", \"10.0.0.2:22\", \"[::1]:22\", \"0.0.0.0:2222\"]\n")
            .unwrap();
        parse("listen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n").unwrap();
        let m = e("listen = [\"0.0.0.0:22\", \"0.0.0.0:22\"]\n");
        assert!(m.contains("listen = \"0.0.0.0:22\" is listed twice"), "{m}");
        let m = e("listen = [\"0.0.0.0:22\", \"10.1.2.3:22\"]\n");
        assert!(
            m.contains("\"0.0.0.0:22\" and \"10.1.2.3:22\" overlap")
                && m.contains("every IPv4 address on port 22"),
            "{m}"
        );
        let m = e("listen = [\"[2001:db8::1]:22\", \"[::]:22\"]\n");
        assert!(
            m.contains("\"[2001:db8::1]:22\" and \"[::]:22\" overlap"),
            "{m}"
        );
        let m = e("listen = [\"[::ffff:10.0.0.1]:22\"]\n");
        assert!(m.contains("write it as \"10.0.0.1:22\""), "{m}");
    }

    #[test]
    fn paths_with_control_characters_are_refused() {
        let m = format!(
            "{:#}",
            parse("host-key = \"/etc/portcullis/k\\nauthorized-keys /x\"\n").unwrap_err()
        );
        assert!(
            m.contains("host-key") && m.contains("control characters"),
            "{m}"
        );
    }

    #[test]
    fn shipped_example_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/portcullisd.toml");
        Settings::load(&p).unwrap();
    }

    /// Every config the repository ships reads here as the `toml` crate
    /// reads it: the example, the docs' ```toml blocks, and the configs the
    /// VM, distro and bench scripts write (their shell variables filled in);
    /// the complete ones also validate.
    #[test]
    fn shipped_configs_read_as_the_toml_crate_reads_them() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
        let mut docs: Vec<(String, String)> = vec![(
            "examples/portcullisd.toml".into(),
            read("examples/portcullisd.toml"),
        )];
        let md = [
            "docs/config.md",
            "docs/relay.md",
            "docs/install/README.md",
            "docs/install/network.md",
            "docs/install/from-mkinitcpio-systemd-tool.md",
        ];
        for p in md {
            for (i, block) in read(p).split("```toml\n").skip(1).enumerate() {
                let body = block.split("```").next().unwrap();
                docs.push((format!("{p} block {i}"), body.to_owned()));
            }
        }
        let scripts = [
            "tests/vm/demo.sh",
            "tests/vm/e2e.sh",
            "tests/distro/lib.sh",
            "tests/distro/build-mkinitcpio.sh",
            "benches/listener.sh",
        ];
        let fill = [
            ("${relay_port}", "2222"),
            ("$relay_port", "2222"),
            ("$fwd_port", "2201"),
            (
                "$relay_fp",
                "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
            ("$backend", "auto"),
            ("$extra", ""),
            ("$tool", "/etc/tool"),
            ("$port", "2222"),
            ("$work", "/tmp/w"),
        ];
        for p in scripts {
            let text = read(p);
            for (i, block) in text.split("<<TOML\n").skip(1).enumerate() {
                let mut body = block.split("\nTOML\n").next().unwrap().to_owned() + "\n";
                for (var, value) in fill {
                    body = body.replace(var, value);
                }
                docs.push((format!("{p} heredoc {i}"), body));
            }
        }
        assert!(docs.len() >= 10, "{} configs found", docs.len());
        let mut validated = 0;
        for (name, doc) in &docs {
            let theirs =
                toml::from_str::<toml::Table>(doc).unwrap_or_else(|e| panic!("{name}: toml: {e}"));
            let ours = toml_subset::parse(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                toml::Value::Table(theirs),
                toml_subset::tests::to_toml(&ours),
                "{name}"
            );
            // A build without the relay refuses [relay] (tested above).
            let complete = !doc.contains('$')
                && !doc.contains('…')
                && (RELAY_BUILT_IN || !doc.contains("[relay]"));
            if complete {
                Settings::parse(doc, Path::new(name)).unwrap_or_else(|e| panic!("{e:#}"));
                validated += 1;
            }
        }
        assert!(validated >= 5, "{validated} validated");
    }

    #[test]
    fn errors_do_not_echo_unbounded_input() {
        let long = "o".repeat(1 << 20);
        for text in [
            format!("{long} = 1\n"),
            format!("[limits]\n{long} = 1\n"),
            format!("listen = [\"{long}\"]\n"),
            format!("backend = \"{long}\"\n"),
            format!("max-tries = \"{long}\"\n"),
            format!("[limits]\nauth-attempts = \"{long}\"\n"),
            format!("listen = \"{long}\"\n"),
            format!("host-key = \"{long}\"\n"),
            format!("host-key = \"/{long}\"\n"),
            format!("[[volume]]\nname = \"{long} \"\ndevice = \"/dev/a\"\n"),
            format!("[[volume]]\nname = \"r\"\ndevice = \"UUID={long}\"\n"),
        ] {
            let m = format!("{:#}", parse(&text).unwrap_err());
            assert!(m.len() < 600, "{} bytes: {}", m.len(), &m[..300]);
            assert!(m.contains("…("), "{m}");
        }
    }

    #[test]
    fn many_volumes_are_checked_in_linear_time() {
        // 200 000 volumes took 164 s of CPU with the quadratic duplicate
        // check. Straight to the validation: TOML parsing of that many
        // tables in a debug build would dominate the test's time.
        let n = 200_000;
        let names: Vec<(String, String)> = (0..n)
            .map(|i| (format!("v{i}"), format!("/dev/d{i}")))
            .collect();
        let mut raw: Vec<RawVolume> = names
            .iter()
            .map(|(name, device)| RawVolume {
                name,
                device,
                line: 1,
            })
            .collect();
        assert_eq!(validate_volumes(&"f", &raw).unwrap().len(), n);
        raw.push(RawVolume {
            name: "v7",
            device: "/dev/x",
            line: 9,
        });
        let m = format!("{:#}", validate_volumes(&"f", &raw).unwrap_err());
        assert_eq!(
            m,
            format!("f (line 9): volume[{n}].name = \"v7\" is used twice")
        );
        // And through the whole parser, on a smaller file.
        let mut text = String::new();
        for i in 0..2000 {
            text.push_str(&format!(
                "[[volume]]\nname = \"v{i}\"\ndevice = \"/dev/d{i}\"\n"
            ));
        }
        text.push_str("[[volume]]\nname = \"v1999\"\ndevice = \"/dev/x\"\n");
        let m = format!("{:#}", parse(&text).unwrap_err());
        assert!(
            m.contains("volume[2000].name = \"v1999\" is used twice"),
            "{m}"
        );
    }
}
