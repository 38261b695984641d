//! The fleet inventory: which hosts exist, where their initramfs listener
//! and their booted SSH server answer, which keys each must show, and where
//! each host's passphrase comes from. Raw TOML (unknown keys rejected) is
//! validated into one [`Inventory`]; every error names the file, the key and
//! the value.
//!
//! Precedence for a host's settings, strongest first: its own `[host.NAME]`
//! keys, its `ssh-alias` in `ssh_config`, its groups (which must agree), the
//! `[defaults]` table, built-in defaults.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::secrets::{PassSpec, Scope, Source};
use super::ssh_config::{expand_tilde, SshConfig};
use crate::client::Target;
use crate::text::{clip, clip_message, clip_plain};
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The group every host belongs to; it cannot be defined.
pub const ALL: &str = "all";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Raw {
    ssh_config: Option<String>,
    approve_command: Option<String>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    group: BTreeMap<String, RawGroup>,
    #[serde(default)]
    host: BTreeMap<String, RawHost>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDefaults {
    port: Option<u16>,
    system_port: Option<u16>,
    user: Option<String>,
    identity: Option<toml::Value>,
    passphrase: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawGroup {
    hosts: Vec<String>,
    port: Option<u16>,
    system_port: Option<u16>,
    user: Option<String>,
    identity: Option<toml::Value>,
    passphrase: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawHost {
    ssh_alias: Option<String>,
    address: Option<String>,
    port: Option<u16>,
    /// `"SHA256:…"` or a list of them (old and new key while rotating).
    fingerprint: Option<toml::Value>,
    system_address: Option<String>,
    system_port: Option<u16>,
    system_fingerprint: Option<String>,
    user: Option<String>,
    identity: Option<toml::Value>,
    passphrase: Option<toml::Value>,
}

/// One validated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Inventory name, or the target as typed for hosts outside it.
    pub name: String,
    /// Groups that list it, in name order.
    pub groups: Vec<String>,
    /// The initramfs listener.
    pub listener: Target,
    /// Pinned initramfs keys (`SHA256:…`), any of which is accepted (two
    /// while a host key is rotated); empty falls back to known_hosts.
    pub fingerprints: Vec<String>,
    /// The booted system's SSH server.
    pub system: Target,
    /// Pinned system key (`SHA256:…`), separate from the initramfs key.
    pub system_fingerprint: Option<String>,
    pub user: String,
    /// Key files; empty means ssh-agent, then `~/.ssh/id_*`.
    pub identity: Vec<PathBuf>,
    pub passphrase: PassSpec,
}

/// A validated inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    /// By name.
    pub hosts: BTreeMap<String, Host>,
    /// Group name → member host names, in the order written.
    pub groups: BTreeMap<String, Vec<String>>,
    /// `approve-command`: `watch` runs it before each unlock.
    pub approve_command: Option<String>,
    /// For names outside the inventory.
    defaults: Defaults,
    ssh_config_path: Option<PathBuf>,
}

/// What hosts outside the inventory get.
#[derive(Debug, Clone)]
struct Defaults {
    port: u16,
    system_port: u16,
    user: String,
    identity: Vec<PathBuf>,
    passphrase: PassSpec,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            port: 22,
            system_port: 22,
            user: "root".into(),
            identity: vec![],
            passphrase: PassSpec {
                source: Source::Prompt,
                scope: Scope::Defaults,
            },
        }
    }
}

/// `~/.config/portcullis/inventory.toml` (honouring `XDG_CONFIG_HOME`).
pub fn default_path() -> Option<PathBuf> {
    crate::client::known_hosts::default_path()
        .and_then(|p| p.parent().map(|d| d.join("inventory.toml")))
}

/// `SHA256:` and 43 unpadded base64 characters, as `ssh-keygen -lf` prints.
pub fn valid_fingerprint(s: &str) -> bool {
    s.strip_prefix("SHA256:").is_some_and(|b| {
        b.len() == 43
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
    })
}

/// Host and group names: what a shell argument and a log line can carry
/// without quoting.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with('-')
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A host part of an address: no spaces, no brackets or ports mixed in.
fn valid_address(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Validation context: the file name and, for lazily loaded ssh_config, the
/// parsed file.
struct Ctx<'a> {
    file: String,
    ssh_config_path: Option<&'a Path>,
    ssh_config: Option<SshConfig>,
}

impl Ctx<'_> {
    fn ssh_config(&mut self, key: &str, alias: &str) -> Result<&SshConfig> {
        if self.ssh_config.is_none() {
            let Some(p) = self.ssh_config_path else {
                bail!(
                    "{}: {key} = {}: no ssh_config to look it up in (HOME is not set; \
                     set ssh-config = \"…\")",
                    self.file,
                    clip(alias)
                );
            };
            let c = SshConfig::load(p).map_err(|e| anyhow!("{}: {key}: {e:#}", self.file))?;
            self.ssh_config = Some(c);
        }
        self.ssh_config
            .as_ref()
            .ok_or_else(|| anyhow!("internal error: ssh_config not loaded"))
    }
}

fn parse_passphrase(file: &str, key: &str, v: &toml::Value) -> Result<Source> {
    let expected = "expected \"prompt\", \"stdin\", { command = \"…\" } or { file = \"/…\" }";
    match v {
        toml::Value::String(s) if s == "prompt" => Ok(Source::Prompt),
        toml::Value::String(s) if s == "stdin" => Ok(Source::Stdin),
        toml::Value::Table(t) if t.len() == 1 => match t.iter().next() {
            Some((k, toml::Value::String(c))) if k == "command" => {
                if c.trim().is_empty() {
                    bail!("{file}: {key}.command is empty");
                }
                Ok(Source::Command(c.clone()))
            }
            Some((k, toml::Value::String(p))) if k == "file" => {
                Ok(Source::File(path_value(file, &format!("{key}.file"), p)?))
            }
            _ => bail!("{file}: {key} = {}: {expected}", clip_plain(&v.to_string())),
        },
        _ => bail!("{file}: {key} = {}: {expected}", clip_plain(&v.to_string())),
    }
}

/// A path that must be absolute or start with `~/`: relative paths would
/// depend on where `portcullis` happens to be started.
fn path_value(file: &str, key: &str, s: &str) -> Result<PathBuf> {
    if !(s.starts_with('/') || s == "~" || s.starts_with("~/")) {
        bail!(
            "{file}: {key} = {} must be an absolute path or start with ~/",
            clip(s)
        );
    }
    // Later errors name the path in full; no usable path is longer.
    if s.len() > crate::text::MAX_PATH {
        bail!(
            "{file}: {key} = {}: longer than {} bytes",
            clip(s),
            crate::text::MAX_PATH
        );
    }
    expand_tilde(s).ok_or_else(|| anyhow!("{file}: {key} = {}: HOME is not set", clip(s)))
}

fn parse_identity(file: &str, key: &str, v: &toml::Value) -> Result<Vec<PathBuf>> {
    let items: Vec<&toml::Value> = match v {
        toml::Value::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    let mut out = Vec::new();
    for it in items {
        let toml::Value::String(s) = it else {
            bail!(
                "{file}: {key} = {}: expected a path or a list of paths",
                clip_plain(&v.to_string())
            );
        };
        out.push(path_value(file, key, s)?);
    }
    Ok(out)
}

fn check_fingerprint(file: &str, key: &str, v: &Option<String>) -> Result<Option<String>> {
    match v {
        Some(fp) if !valid_fingerprint(fp) => bail!(
            "{file}: {key} = {}: expected SHA256:… (43 base64 characters) as \
             `ssh-keygen -lf KEY.pub` prints it",
            clip(fp)
        ),
        other => Ok(other.clone()),
    }
}

/// `fingerprint = "SHA256:…"` or `fingerprint = ["SHA256:…", "SHA256:…"]`.
fn check_fingerprints(file: &str, key: &str, v: &Option<toml::Value>) -> Result<Vec<String>> {
    let list = match v {
        None => return Ok(vec![]),
        Some(toml::Value::String(s)) => vec![s.clone()],
        Some(toml::Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|x| match x {
                toml::Value::String(s) => Ok(s.clone()),
                other => bail!(
                    "{file}: {key}: {} is not a string; expected \"SHA256:…\" or a list of them",
                    clip_plain(&other.to_string())
                ),
            })
            .collect::<Result<_>>()?,
        Some(other) => bail!(
            "{file}: {key} = {}: expected \"SHA256:…\" or a non-empty list of them \
             (old and new key while rotating)",
            clip_plain(&other.to_string())
        ),
    };
    let mut out: Vec<String> = Vec::new();
    for fp in list {
        if let Some(fp) = check_fingerprint(file, key, &Some(fp))? {
            if !out.contains(&fp) {
                out.push(fp);
            }
        }
    }
    Ok(out)
}

fn check_port(file: &str, key: &str, v: Option<u16>) -> Result<Option<u16>> {
    if v == Some(0) {
        bail!("{file}: {key} = 0: expected 1 to 65535");
    }
    Ok(v)
}

fn check_user(file: &str, key: &str, v: &Option<String>) -> Result<Option<String>> {
    match v {
        Some(u) if u.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            bail!(
                "{file}: {key} = {}: expected a user name without spaces",
                clip(u)
            )
        }
        other => Ok(other.clone()),
    }
}

/// One setting as the groups of a host give it: the value, or an error when
/// two of its groups disagree.
fn from_groups<T: Clone + PartialEq + std::fmt::Debug>(
    file: &str,
    host: &str,
    key: &str,
    groups: &[(&String, Option<T>)],
) -> Result<Option<(String, T)>> {
    let mut found: Option<(String, T)> = None;
    for (g, v) in groups {
        let Some(v) = v else { continue };
        match &found {
            Some((g0, v0)) if v0 != v => bail!(
                "{file}: host.{host} is in group.{g0} and group.{g}, which set {key} differently \
                 ({v0:?} and {v:?}); set {key} in [host.{host}]"
            ),
            Some(_) => {}
            None => found = Some(((*g).clone(), v.clone())),
        }
    }
    Ok(found)
}

impl Inventory {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading inventory {}", path.display()))?;
        Self::parse(&text, path)
    }

    /// An inventory with no hosts, for targets given on the command line.
    pub fn empty() -> Self {
        Inventory {
            path: PathBuf::new(),
            hosts: BTreeMap::new(),
            groups: BTreeMap::new(),
            approve_command: None,
            defaults: Defaults::default(),
            ssh_config_path: SshConfig::default_path().filter(|p| p.exists()),
        }
    }

    /// Validates TOML text; `path` names it in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        let raw: Raw = toml::from_str(text).map_err(|e| {
            // toml's message spans several lines with a snippet; keep one.
            let at = e
                .span()
                .map(|s| {
                    let line = text.get(..s.start).unwrap_or("").matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            anyhow!("{file}{at}: {}", clip_message(e.message().trim_end()))
        })?;

        let ssh_config_path = match &raw.ssh_config {
            Some(p) => {
                let p = path_value(&file, "ssh-config", p)?;
                if !p.exists() {
                    bail!(
                        "{file}: ssh-config = {}: no such file",
                        clip(&p.display().to_string())
                    );
                }
                Some(p)
            }
            None => SshConfig::default_path().filter(|p| p.exists()),
        };
        let approve_command = match raw.approve_command {
            Some(c) if c.trim().is_empty() => bail!("{file}: approve-command is empty"),
            c => c,
        };

        let d = &raw.defaults;
        let builtin = Defaults::default();
        let defaults = Defaults {
            port: check_port(&file, "defaults.port", d.port)?.unwrap_or(builtin.port),
            system_port: check_port(&file, "defaults.system-port", d.system_port)?
                .unwrap_or(builtin.system_port),
            user: check_user(&file, "defaults.user", &d.user)?.unwrap_or(builtin.user),
            identity: match &d.identity {
                Some(v) => parse_identity(&file, "defaults.identity", v)?,
                None => builtin.identity,
            },
            passphrase: match &d.passphrase {
                Some(v) => PassSpec {
                    source: parse_passphrase(&file, "defaults.passphrase", v)?,
                    scope: Scope::Defaults,
                },
                None => builtin.passphrase,
            },
        };

        for name in raw.host.keys() {
            if !valid_name(name) {
                bail!(
                    "{file}: [host.{}]: use letters, digits, '-', '_' and '.'",
                    clip(name)
                );
            }
            if name == ALL {
                bail!("{file}: [host.all]: \"all\" names every host; pick another name");
            }
            if raw.group.contains_key(name) {
                bail!("{file}: \"{name}\" is both a [host.{name}] and a [group.{name}]; names must differ");
            }
        }
        // Validated group settings, and each host's groups.
        struct GroupSet {
            port: Option<u16>,
            system_port: Option<u16>,
            user: Option<String>,
            identity: Option<Vec<PathBuf>>,
            passphrase: Option<Source>,
        }
        let mut groups = BTreeMap::new();
        let mut group_sets = BTreeMap::new();
        let mut member_of: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
        for (g, rg) in &raw.group {
            if !valid_name(g) {
                bail!(
                    "{file}: [group.{}]: use letters, digits, '-', '_' and '.'",
                    clip(g)
                );
            }
            if g == ALL {
                bail!("{file}: [group.all] is built in (every host); pick another name");
            }
            if rg.hosts.is_empty() {
                bail!("{file}: group.{g}.hosts is empty");
            }
            let mut members = Vec::new();
            for h in &rg.hosts {
                if !raw.host.contains_key(h) {
                    bail!(
                        "{file}: group.{g}.hosts: {} is not a [host.{}] in this file",
                        clip(h),
                        clip_plain(h)
                    );
                }
                if members.contains(h) {
                    bail!("{file}: group.{g}.hosts: {} is listed twice", clip(h));
                }
                members.push(h.clone());
                member_of.entry(h.as_str()).or_default().push(g);
            }
            groups.insert(g.clone(), members);
            let k = |s: &str| format!("group.{g}.{s}");
            group_sets.insert(
                g.clone(),
                GroupSet {
                    port: check_port(&file, &k("port"), rg.port)?,
                    system_port: check_port(&file, &k("system-port"), rg.system_port)?,
                    user: check_user(&file, &k("user"), &rg.user)?,
                    identity: rg
                        .identity
                        .as_ref()
                        .map(|v| parse_identity(&file, &k("identity"), v))
                        .transpose()?,
                    passphrase: rg
                        .passphrase
                        .as_ref()
                        .map(|v| parse_passphrase(&file, &k("passphrase"), v))
                        .transpose()?,
                },
            );
        }

        let mut ctx = Ctx {
            file: file.clone(),
            ssh_config_path: ssh_config_path.as_deref(),
            ssh_config: None,
        };
        let mut hosts = BTreeMap::new();
        for (name, rh) in &raw.host {
            let k = |s: &str| format!("host.{name}.{s}");
            let my_groups: Vec<&String> = member_of.get(name.as_str()).cloned().unwrap_or_default();
            let sets: Vec<(&String, &GroupSet)> = my_groups
                .iter()
                .filter_map(|g| group_sets.get(*g).map(|s| (*g, s)))
                .collect();
            let pick = |f: fn(&GroupSet) -> Option<u16>| -> Vec<(&String, Option<u16>)> {
                sets.iter().map(|(g, s)| (*g, f(s))).collect()
            };
            let alias = match &rh.ssh_alias {
                Some(a) => {
                    let key = k("ssh-alias");
                    let cfg = ctx.ssh_config(&key, a)?;
                    if !cfg.is_alias(a) {
                        bail!(
                            "{file}: {key} = {}: no such `Host` in {}",
                            clip(a),
                            cfg.path.display()
                        );
                    }
                    Some(
                        cfg.resolve(a)
                            .map_err(|e| anyhow!("{file}: {key} = {}: {e:#}", clip(a)))?,
                    )
                }
                None => None,
            };
            let address = match (&rh.address, &alias, &rh.ssh_alias) {
                (Some(a), _, _) => {
                    if !valid_address(a) {
                        bail!(
                            "{file}: {} = {}: expected a host name or an IP address \
                             (the port goes in port = …)",
                            k("address"),
                            clip(a)
                        );
                    }
                    a.clone()
                }
                (None, Some(r), Some(a)) => r.hostname.clone().unwrap_or_else(|| a.clone()),
                _ => name.clone(),
            };
            let port = match check_port(&file, &k("port"), rh.port)? {
                Some(p) => p,
                None => match alias.as_ref().and_then(|r| r.port) {
                    Some(p) => p,
                    None => from_groups(&file, name, "port", &pick(|s| s.port))?
                        .map(|(_, p)| p)
                        .unwrap_or(defaults.port),
                },
            };
            let system_address = match &rh.system_address {
                Some(a) if !valid_address(a) => bail!(
                    "{file}: {} = {}: expected a host name or an IP address \
                     (the port goes in system-port = …)",
                    k("system-address"),
                    clip(a)
                ),
                Some(a) => a.clone(),
                None => address.clone(),
            };
            let system_port = match check_port(&file, &k("system-port"), rh.system_port)? {
                Some(p) => p,
                None => from_groups(&file, name, "system-port", &pick(|s| s.system_port))?
                    .map(|(_, p)| p)
                    .unwrap_or(defaults.system_port),
            };
            let listener = Target {
                host: address,
                port,
            };
            let system = Target {
                host: system_address,
                port: system_port,
            };
            let fingerprints = check_fingerprints(&file, &k("fingerprint"), &rh.fingerprint)?;
            let system_fingerprint =
                check_fingerprint(&file, &k("system-fingerprint"), &rh.system_fingerprint)?;
            for a in &fingerprints {
                if system_fingerprint.as_ref() == Some(a) {
                    bail!(
                        "{file}: host.{name}: fingerprint and system-fingerprint are both {a:?}; \
                         the initramfs must have its own key, or a stolen initramfs key \
                         impersonates the running system"
                    );
                }
            }
            let user = match check_user(&file, &k("user"), &rh.user)? {
                Some(u) => u,
                None => match alias.as_ref().and_then(|r| r.user.clone()) {
                    Some(u) => u,
                    None => {
                        let g: Vec<_> = sets.iter().map(|(g, s)| (*g, s.user.clone())).collect();
                        from_groups(&file, name, "user", &g)?
                            .map(|(_, u)| u)
                            .unwrap_or_else(|| defaults.user.clone())
                    }
                },
            };
            let identity = match &rh.identity {
                Some(v) => parse_identity(&file, &k("identity"), v)?,
                None => match alias.as_ref().filter(|r| !r.identity_files.is_empty()) {
                    Some(r) => r.identity_files.clone(),
                    None => {
                        let g: Vec<_> =
                            sets.iter().map(|(g, s)| (*g, s.identity.clone())).collect();
                        from_groups(&file, name, "identity", &g)?
                            .map(|(_, i)| i)
                            .unwrap_or_else(|| defaults.identity.clone())
                    }
                },
            };
            let passphrase = match &rh.passphrase {
                Some(v) => PassSpec {
                    source: parse_passphrase(&file, &k("passphrase"), v)?,
                    scope: Scope::Host(name.clone()),
                },
                None => {
                    let g: Vec<_> = sets
                        .iter()
                        .map(|(g, s)| (*g, s.passphrase.clone()))
                        .collect();
                    match from_groups(&file, name, "passphrase", &g)? {
                        Some((g, source)) => PassSpec {
                            source,
                            scope: Scope::Group(g),
                        },
                        None => defaults.passphrase.clone(),
                    }
                }
            };
            hosts.insert(
                name.clone(),
                Host {
                    name: name.clone(),
                    groups: my_groups.iter().map(|g| (*g).clone()).collect(),
                    listener,
                    fingerprints,
                    system,
                    system_fingerprint,
                    user,
                    identity,
                    passphrase,
                },
            );
        }
        Ok(Inventory {
            path: path.to_path_buf(),
            hosts,
            groups,
            approve_command,
            defaults,
            ssh_config_path,
        })
    }

    /// Uses this ssh_config for names outside the inventory.
    pub fn set_ssh_config(&mut self, path: PathBuf) {
        self.ssh_config_path = Some(path);
    }

    /// Whether `name` is a `Host` alias in the ssh_config in use.
    pub fn is_alias(&self, name: &str) -> Result<bool> {
        match &self.ssh_config_path {
            Some(p) => Ok(SshConfig::load(p)?.is_alias(name)),
            None => Ok(false),
        }
    }

    /// Whether `name` is a group or host of this inventory (or `all`).
    pub fn knows(&self, name: &str) -> bool {
        name == ALL || self.groups.contains_key(name) || self.hosts.contains_key(name)
    }

    /// The ssh_config used for names outside the inventory, if any.
    pub fn ssh_config_path(&self) -> Option<&Path> {
        self.ssh_config_path.as_deref()
    }

    /// The listener port for hosts outside the inventory.
    pub fn default_port(&self) -> u16 {
        self.defaults.port
    }

    /// The inventory's file for messages, or "the inventory (none loaded)".
    pub fn describe_source(&self) -> String {
        self.describe()
    }

    fn describe(&self) -> String {
        if self.path.as_os_str().is_empty() {
            "the inventory (none loaded)".into()
        } else {
            self.path.display().to_string()
        }
    }

    /// Turns command-line targets into hosts, each once, in the order
    /// given: `all`, group names, host names, `ssh_config` aliases (with
    /// `[defaults]`), and `HOST:PORT` / `[V6]:PORT` / IP addresses as typed.
    /// An unknown bare name is an error, not a DNS lookup: it is more often
    /// a typo of a group.
    pub fn resolve(&self, targets: &[String]) -> Result<Vec<Host>> {
        let mut out: Vec<Host> = Vec::new();
        let push = |h: Host, out: &mut Vec<Host>| {
            if !out.iter().any(|o| o.name == h.name) {
                out.push(h);
            }
        };
        let mut ssh_config: Option<SshConfig> = None;
        for t in targets {
            if t == ALL {
                for h in self.hosts.values() {
                    push(h.clone(), &mut out);
                }
            } else if let Some(members) = self.groups.get(t) {
                for m in members {
                    if let Some(h) = self.hosts.get(m) {
                        push(h.clone(), &mut out);
                    }
                }
            } else if let Some(h) = self.hosts.get(t) {
                push(h.clone(), &mut out);
            } else if t.contains([':', '[']) || t.parse::<IpAddr>().is_ok() {
                let target = Target::parse(t)?;
                push(self.ad_hoc(t, target), &mut out);
            } else {
                if ssh_config.is_none() {
                    if let Some(p) = &self.ssh_config_path {
                        ssh_config = Some(SshConfig::load(p)?);
                    }
                }
                match ssh_config.as_ref().filter(|c| c.is_alias(t)) {
                    Some(c) => {
                        let r = c.resolve(t)?;
                        let target = Target {
                            host: r.hostname.clone().unwrap_or_else(|| t.clone()),
                            port: r.port.unwrap_or(self.defaults.port),
                        };
                        let mut h = self.ad_hoc(t, target);
                        if let Some(u) = r.user {
                            h.user = u;
                        }
                        if !r.identity_files.is_empty() {
                            h.identity = r.identity_files;
                        }
                        push(h, &mut out);
                    }
                    None => bail!(
                        "{} is not a group or host in {}{}; write HOST:PORT for a host \
                         outside the inventory",
                        clip(t),
                        self.describe(),
                        match &self.ssh_config_path {
                            Some(p) => format!(", nor a Host alias in {}", p.display()),
                            None => String::new(),
                        }
                    ),
                }
            }
        }
        Ok(out)
    }

    /// A host outside the inventory, with `[defaults]`.
    pub fn ad_hoc(&self, name: &str, listener: Target) -> Host {
        Host {
            name: name.to_string(),
            groups: vec![],
            system: Target {
                host: listener.host.clone(),
                port: self.defaults.system_port,
            },
            listener,
            fingerprints: vec![],
            system_fingerprint: None,
            user: self.defaults.user.clone(),
            identity: self.defaults.identity.clone(),
            passphrase: self.defaults.passphrase.clone(),
        }
    }

    /// Checks that `hosts` can be unlocked unattended: a pinned initramfs
    /// key (no one is there to compare a new key) and a passphrase source
    /// that needs no human.
    pub fn check_unattended(&self, hosts: &[Host]) -> Result<()> {
        let file = self.describe();
        for h in hosts {
            if h.fingerprints.is_empty() {
                bail!(
                    "{file}: host.{}: watch needs the initramfs key pinned: add \
                     fingerprint = \"SHA256:…\" (watch never accepts a key it has not been told)",
                    h.name
                );
            }
            if !h.passphrase.source.unattended() {
                bail!(
                    "{file}: host.{}: passphrase = {} (from {}) needs someone at a terminal; \
                     watch runs unattended: use {{ command = \"…\" }} or {{ file = \"/…\" }}",
                    h.name,
                    h.passphrase.source.describe(),
                    h.passphrase.scope
                );
            }
        }
        Ok(())
    }
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

    const FP1: &str = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";
    const FP2: &str = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

    fn parse(s: &str) -> Result<Inventory> {
        Inventory::parse(s, Path::new("/etc/fleet.toml"))
    }

    fn err(s: &str) -> String {
        format!("{:#}", parse(s).unwrap_err())
    }

    #[test]
    fn precedence() {
        let inv = parse(&format!(
            "[defaults]\nuser = \"admin\"\nport = 2222\npassphrase = \"prompt\"\n\
             [group.web]\nhosts = [\"web1\", \"web2\"]\npassphrase = {{ command = \"pass show web\" }}\n\
             identity = \"/keys/web\"\n\
             [group.eu]\nhosts = [\"web1\"]\nuser = \"eu\"\n\
             [host.web1]\naddress = \"192.0.2.1\"\nfingerprint = \"{FP1}\"\n\
             system-fingerprint = \"{FP2}\"\n\
             [host.web2]\nport = 22\nuser = \"me\"\npassphrase = \"stdin\"\nsystem-port = 2200\n\
             [host.db1]\n"
        ))
        .unwrap();
        let w1 = &inv.hosts["web1"];
        assert_eq!(w1.listener.to_string(), "192.0.2.1:2222");
        assert_eq!(w1.system.to_string(), "192.0.2.1:22");
        assert_eq!(w1.user, "eu");
        assert_eq!(w1.identity, vec![PathBuf::from("/keys/web")]);
        assert_eq!(
            w1.passphrase,
            PassSpec {
                source: Source::Command("pass show web".into()),
                scope: Scope::Group("web".into())
            }
        );
        assert_eq!(w1.groups, vec!["eu".to_string(), "web".to_string()]);
        let w2 = &inv.hosts["web2"];
        assert_eq!(w2.listener.to_string(), "web2:22");
        assert_eq!(w2.system.to_string(), "web2:2200");
        assert_eq!(w2.user, "me");
        assert_eq!(w2.passphrase.scope, Scope::Host("web2".into()));
        let d = &inv.hosts["db1"];
        assert_eq!(d.passphrase.scope, Scope::Defaults);
        assert_eq!(d.user, "admin");
        let all = inv.resolve(&["web".into(), "all".into()]).unwrap();
        let names: Vec<_> = all.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["web1", "web2", "db1"]);
        let adhoc = inv.resolve(&["10.0.0.5:2022".into()]).unwrap();
        assert_eq!(adhoc[0].listener.port, 2022);
        assert_eq!(adhoc[0].system.to_string(), "10.0.0.5:22");
        assert_eq!(adhoc[0].user, "admin");
        let e = format!("{:#}", inv.resolve(&["webb".into()]).unwrap_err());
        assert!(
            e.contains("\"webb\" is not a group or host in /etc/fleet.toml"),
            "{e}"
        );
    }

    #[test]
    fn precise_errors() {
        let m = err("[host.web1]\nadress = \"x\"\n");
        assert!(
            m.starts_with("/etc/fleet.toml (line 2)") && m.contains("unknown field `adress`"),
            "{m}"
        );
        let m = err("[host.web1]\nfingerprint = \"SHA256:abc\"\n");
        assert!(
            m.contains("/etc/fleet.toml: host.web1.fingerprint = \"SHA256:abc\": expected SHA256:"),
            "{m}"
        );
        let m = err("[host.web1]\npassphrase = \"promt\"\n");
        assert!(
            m.contains("host.web1.passphrase = \"promt\": expected \"prompt\""),
            "{m}"
        );
        let m = err("[host.web1]\npassphrase = { command = \"x\", file = \"/y\" }\n");
        assert!(m.contains("host.web1.passphrase = "), "{m}");
        let m = err("[host.web1]\npassphrase = { file = \"pw.txt\" }\n");
        assert!(
            m.contains("host.web1.passphrase.file = \"pw.txt\" must be an absolute path"),
            "{m}"
        );
        let m = err("[group.web]\nhosts = [\"web1\"]\n");
        assert!(
            m.contains("group.web.hosts: \"web1\" is not a [host.web1]"),
            "{m}"
        );
        let m = err("[host.web1]\nport = 0\n");
        assert!(m.contains("host.web1.port = 0: expected 1 to 65535"), "{m}");
        let m = err("[host.web1]\nport = 70000\n");
        assert!(m.contains("line 2"), "{m}");
        let m = err("[host.web1]\naddress = \"10.0.0.1:2222\"\n");
        assert!(
            m.contains("host.web1.address = \"10.0.0.1:2222\"") && m.contains("port = "),
            "{m}"
        );
        let m = err("[host.all]\n");
        assert!(m.contains("[host.all]"), "{m}");
        let m = err("[host.x]\n[group.x]\nhosts = [\"x\"]\n");
        assert!(m.contains("both a [host.x] and a [group.x]"), "{m}");
        let m = err("[host.\"a b\"]\n");
        assert!(m.contains("[host.\"a b\"]"), "{m}");
        let m = err(
            "[host.h]\n[group.a]\nhosts = [\"h\"]\nuser = \"u1\"\n[group.b]\nhosts = [\"h\"]\nuser = \"u2\"\n",
        );
        assert!(
            m.contains("host.h is in group.a and group.b, which set user differently"),
            "{m}"
        );
        let m = err(&format!(
            "[host.h]\nfingerprint = \"{FP1}\"\nsystem-fingerprint = \"{FP1}\"\n"
        ));
        assert!(m.contains("own key"), "{m}");
        let m = err("approve-command = \" \"\n");
        assert!(m.contains("approve-command is empty"), "{m}");
        let m = err("ssh-config = \"/nonexistent/config\"\n");
        assert!(
            m.contains("ssh-config = \"/nonexistent/config\": no such file"),
            "{m}"
        );
        let m = err("[defaults]\nidentity = 3\n");
        assert!(m.contains("defaults.identity = 3"), "{m}");
    }

    #[test]
    fn unattended_rules() {
        let inv = parse(&format!(
            "[host.a]\nfingerprint = \"{FP1}\"\npassphrase = {{ file = \"/etc/pw\" }}\n\
             [host.b]\npassphrase = {{ command = \"x\" }}\n\
             [host.c]\nfingerprint = \"{FP2}\"\n"
        ))
        .unwrap();
        let h = |n: &str| vec![inv.hosts[n].clone()];
        inv.check_unattended(&h("a")).unwrap();
        let e = format!("{:#}", inv.check_unattended(&h("b")).unwrap_err());
        assert!(
            e.contains("host.b: watch needs the initramfs key pinned"),
            "{e}"
        );
        let e = format!("{:#}", inv.check_unattended(&h("c")).unwrap_err());
        assert!(
            e.contains("host.c: passphrase = \"prompt\" (from [defaults])"),
            "{e}"
        );
    }

    #[test]
    fn ssh_alias_in_inventory() {
        let t = tempfile::tempdir().unwrap();
        let cfg = t.path().join("config");
        std::fs::write(
            &cfg,
            "Host web1-unlock\n HostName 192.0.2.11\n Port 2222\n User unlocker\n IdentityFile /k/unlock\n\
             Host *\n User fallback\n",
        )
        .unwrap();
        let inv = parse(&format!(
            "ssh-config = \"{}\"\n[defaults]\nuser = \"d\"\n\
             [host.web1]\nssh-alias = \"web1-unlock\"\n\
             [host.web2]\nssh-alias = \"web1-unlock\"\nport = 2022\nuser = \"explicit\"\n",
            cfg.display()
        ))
        .unwrap();
        let w1 = &inv.hosts["web1"];
        assert_eq!(w1.listener.to_string(), "192.0.2.11:2222");
        assert_eq!(w1.system.to_string(), "192.0.2.11:22");
        assert_eq!(w1.user, "unlocker");
        assert_eq!(w1.identity, vec![PathBuf::from("/k/unlock")]);
        let w2 = &inv.hosts["web2"];
        assert_eq!(w2.listener.port, 2022);
        assert_eq!(w2.user, "explicit");
        let m = err(&format!(
            "ssh-config = \"{}\"\n[host.x]\nssh-alias = \"nope\"\n",
            cfg.display()
        ));
        assert!(
            m.contains("host.x.ssh-alias = \"nope\": no such `Host` in"),
            "{m}"
        );
        // Command-line names resolve through the same file.
        let r = inv.resolve(&["web1-unlock".into()]).unwrap();
        assert_eq!(r[0].listener.to_string(), "192.0.2.11:2222");
        assert_eq!(r[0].user, "unlocker");
        assert_eq!(r[0].passphrase.scope, Scope::Defaults);
    }

    #[test]
    fn fingerprints() {
        assert!(valid_fingerprint(FP1));
        assert!(!valid_fingerprint("SHA256:short"));
        assert!(!valid_fingerprint("MD5:aa:bb"));
        assert!(!valid_fingerprint(&format!("{FP1}=")));
    }

    /// Rotation: a host accepts its old and its new key; the single string
    /// form keeps working.
    #[test]
    fn fingerprint_lists() {
        let inv = parse(&format!(
            "[host.a]\nfingerprint = [\"{FP1}\", \"{FP2}\", \"{FP1}\"]\n\
             [host.b]\nfingerprint = \"{FP2}\"\n[host.c]\n"
        ))
        .unwrap();
        assert_eq!(
            inv.hosts["a"].fingerprints,
            vec![FP1.to_string(), FP2.into()]
        );
        assert_eq!(inv.hosts["b"].fingerprints, vec![FP2.to_string()]);
        assert!(inv.hosts["c"].fingerprints.is_empty());
        let m = err("[host.a]\nfingerprint = []\n");
        assert!(
            m.contains("host.a.fingerprint = []: expected \"SHA256:…\" or a non-empty list"),
            "{m}"
        );
        let m = err(&format!(
            "[host.a]\nfingerprint = [\"{FP1}\", \"SHA256:abc\"]\n"
        ));
        assert!(
            m.contains("host.a.fingerprint = \"SHA256:abc\": expected SHA256:"),
            "{m}"
        );
        let m = err("[host.a]\nfingerprint = [1]\n");
        assert!(m.contains("host.a.fingerprint: 1 is not a string"), "{m}");
        let m = err(&format!(
            "[host.a]\nfingerprint = [\"{FP1}\", \"{FP2}\"]\nsystem-fingerprint = \"{FP2}\"\n"
        ));
        assert!(m.contains("both"), "{m}");
    }

    #[test]
    fn shipped_example_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/inventory.toml");
        let inv = Inventory::load(&p).unwrap();
        assert!(!inv.hosts.is_empty() && !inv.groups.is_empty());
        // Everything the example names as a group resolves.
        for g in inv.groups.keys() {
            assert!(!inv.resolve(std::slice::from_ref(g)).unwrap().is_empty());
        }
    }

    #[test]
    fn errors_do_not_echo_unbounded_input() {
        let long = "z".repeat(1 << 20);
        for text in [
            format!("{long} = 1\n"),
            format!("[host.{long}]\n"),
            format!("[host.a]\nport = \"{long}\"\n"),
            format!("[host.a]\naddress = \"{long} \"\n"),
            format!("[host.a]\nfingerprint = \"{long}\"\n"),
            format!("[host.a]\nuser = \"{long} \"\n"),
            format!("[host.a]\nidentity = \"{long}\"\n"),
            format!("[host.a]\nidentity = \"/{long}\"\n"),
            format!("[host.a]\npassphrase = \"{long}\"\n"),
            format!("[host.a]\n[group.g]\nhosts = [\"{long}\"]\n"),
            format!("ssh-config = \"/{long}\"\n"),
        ] {
            let m = format!("{:#}", parse(&text).unwrap_err());
            assert!(m.len() < 600, "{} bytes: {}", m.len(), &m[..300]);
        }
        let inv = parse("[host.a]\n").unwrap();
        let m = format!(
            "{:#}",
            inv.resolve(std::slice::from_ref(&long)).unwrap_err()
        );
        assert!(m.len() < 600, "{} bytes", m.len());
    }
}
