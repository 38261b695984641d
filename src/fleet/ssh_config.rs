//! Just enough of OpenSSH's `ssh_config` to name fleet hosts by their aliases:
//! `Host` blocks (patterns with `*`, `?`, `!negation`, comma or space
//! separated), `Match all`, `Include`, and the four keys that locate a
//! listener: `HostName`, `Port`, `User`, `IdentityFile`.
//!
//! As in OpenSSH, the first value obtained for `HostName`, `Port` and `User`
//! wins, while every `IdentityFile` that applies is kept, in order. Other
//! `Match` criteria cannot be evaluated here (they run commands, look at the
//! local user…), so their blocks are skipped rather than guessed at. Unknown
//! keywords are ignored: this file belongs to `ssh`, not to us.
//!
//! The file is the admin's own, but it is still parsed without panicking:
//! a bad line is reported with its file and line number.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::text::clip;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// Includes nested deeper than this are refused (OpenSSH uses 16 too).
const MAX_INCLUDE_DEPTH: usize = 16;

/// A parsed configuration: the directives in file order, includes expanded.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    /// Where it came from, for messages.
    pub path: PathBuf,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
enum Entry {
    /// Starts a `Host` block: the directives until the next block apply when
    /// the patterns match.
    Host(Vec<String>),
    /// `Match all` (true) or any other `Match` (never applied).
    Match(bool),
    Set {
        key: Key,
        value: String,
        file: PathBuf,
        line: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    HostName,
    Port,
    User,
    IdentityFile,
}

/// What the configuration says about one alias.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity_files: Vec<PathBuf>,
}

impl SshConfig {
    /// `~/.ssh/config`, when `HOME` is set.
    pub fn default_path() -> Option<PathBuf> {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".ssh").join("config"))
    }

    /// Reads `path` and the files it includes.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading ssh config {}", path.display()))?;
        let mut entries = Vec::new();
        parse_into(&text, path, 0, &mut entries)?;
        Ok(SshConfig {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// Parses text (tests, or a config held in memory); `path` names it in
    /// messages and anchors relative includes.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut entries = Vec::new();
        parse_into(text, path, 0, &mut entries)?;
        Ok(SshConfig {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// Whether `name` is an alias: some `Host` line names it without
    /// wildcards. A name matched only by `Host *` is just a host name, so a
    /// catch-all block never turns every DNS name into an "alias".
    pub fn is_alias(&self, name: &str) -> bool {
        self.entries.iter().any(|e| match e {
            Entry::Host(pats) => pats.iter().any(|p| {
                !p.starts_with('!') && !p.contains(['*', '?']) && p.eq_ignore_ascii_case(name)
            }),
            _ => false,
        })
    }

    /// Applies every matching block to `alias`, first value winning, as
    /// `ssh alias` would. `%h` in `HostName` and `IdentityFile`, `%d`, `%u`,
    /// `%r` and `~` in `IdentityFile` are expanded.
    pub fn resolve(&self, alias: &str) -> Result<Resolved> {
        let mut r = Resolved::default();
        // Directives before the first Host line apply to every host.
        let mut active = true;
        let mut identity_raw = Vec::new();
        for e in &self.entries {
            match e {
                Entry::Host(pats) => active = host_matches(pats, alias),
                Entry::Match(all) => active = *all,
                Entry::Set { .. } if !active => {}
                Entry::Set {
                    key,
                    value,
                    file,
                    line,
                } => {
                    let at = || format!("{}, line {line}", file.display());
                    match key {
                        Key::HostName if r.hostname.is_none() => {
                            let h = expand_tokens(value, alias, None)
                                .map_err(|e| anyhow!("{}: HostName {}: {e}", at(), clip(value)))?;
                            // Found by the ssh_config fuzz target: an empty
                            // host would be tried as one.
                            if h.is_empty() {
                                return Err(anyhow!(
                                    "{}: HostName {} gives an empty host name",
                                    at(),
                                    clip(value)
                                ));
                            }
                            r.hostname = Some(h);
                        }
                        Key::Port if r.port.is_none() => {
                            r.port =
                                Some(value.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(
                                    || {
                                        anyhow!(
                                            "{}: Port {} is not a port number",
                                            at(),
                                            clip(value)
                                        )
                                    },
                                )?);
                        }
                        Key::User if r.user.is_none() => r.user = Some(value.clone()),
                        Key::IdentityFile => identity_raw.push((value.clone(), at())),
                        _ => {}
                    }
                }
            }
        }
        let hostname = r.hostname.clone().unwrap_or_else(|| alias.to_string());
        for (v, at) in identity_raw {
            // `IdentityFile none` disables the defaults in OpenSSH; for us it
            // simply adds nothing.
            if v.eq_ignore_ascii_case("none") {
                continue;
            }
            let remote_user = r.user.as_deref();
            let s = expand_tokens(&v, &hostname, remote_user)
                .map_err(|e| anyhow!("{at}: IdentityFile {}: {e}", clip(&v)))?;
            r.identity_files.push(
                expand_tilde(&s)
                    .ok_or_else(|| anyhow!("{at}: IdentityFile {}: HOME is not set", clip(&v)))?,
            );
        }
        Ok(r)
    }
}

/// OpenSSH's `Host` rule: some positive pattern matches and no negated one.
fn host_matches(patterns: &[String], name: &str) -> bool {
    let mut hit = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if wildcard_match(neg, name) {
                return false;
            }
        } else if wildcard_match(p, name) {
            hit = true;
        }
    }
    hit
}

/// `*` matches any run of characters, `?` exactly one; case-insensitive, as
/// OpenSSH lower-cases host names before matching.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    // Iterative matcher with one backtrack point: linear in practice and no
    // recursion to blow the stack on a hostile pattern.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// Why a line could not be split, or an `Include` not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("unbalanced quotes")]
    UnbalancedQuotes,
    #[error("Include with ~ needs HOME to be set")]
    TildeIncludeNeedsHome,
    #[error("relative Include needs HOME to be set")]
    RelativeIncludeNeedsHome,
    #[error("Include pattern without a directory")]
    PatternWithoutDirectory,
}

/// Why a `%` token could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("%u needs USER to be set")]
    NoUser,
    #[error("%d needs HOME to be set")]
    NoHome,
    #[error("token %{0} is not supported here")]
    Unsupported(char),
    #[error("ends with a lone %")]
    LonePercent,
}

/// `%h` (host), `%r` (remote user), `%u` (local user), `%d` (home), `%%`.
fn expand_tokens(s: &str, host: &str, remote_user: Option<&str>) -> Result<String, TokenError> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(host),
            Some('r') => out.push_str(remote_user.unwrap_or("root")),
            Some('u') => out.push_str(
                &std::env::var("USER")
                    .ok()
                    .filter(|u| !u.is_empty())
                    .ok_or(TokenError::NoUser)?,
            ),
            Some('d') => out.push_str(&std::env::var("HOME").map_err(|_| TokenError::NoHome)?),
            Some(other) => return Err(TokenError::Unsupported(other)),
            None => return Err(TokenError::LonePercent),
        }
    }
    Ok(out)
}

/// `~` and `~/…` become the home directory; anything else is kept.
pub fn expand_tilde(s: &str) -> Option<PathBuf> {
    if s == "~" {
        return std::env::var_os("HOME").map(PathBuf::from);
    }
    match s.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(rest)),
        None => Some(PathBuf::from(s)),
    }
}

/// Splits a line into keyword and arguments: `Key value`, `Key=value`,
/// `Key = value`, double quotes grouping words.
fn split_line(line: &str) -> Result<Option<(String, Vec<String>)>, LineError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let key_end = line
        .find(|c: char| c.is_ascii_whitespace() || c == '=')
        .unwrap_or(line.len());
    let key = line.get(..key_end).unwrap_or_default().to_string();
    let mut rest = line.get(key_end..).unwrap_or_default().trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has = false;
    for c in rest.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has = true;
            }
            c if c.is_ascii_whitespace() && !in_quotes => {
                if has {
                    args.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            // A comment may follow the arguments.
            '#' if !in_quotes && !has => break,
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if in_quotes {
        return Err(LineError::UnbalancedQuotes);
    }
    if has {
        args.push(cur);
    }
    Ok(Some((key, args)))
}

fn parse_into(text: &str, path: &Path, depth: usize, out: &mut Vec<Entry>) -> Result<()> {
    if depth > MAX_INCLUDE_DEPTH {
        bail!(
            "{}: includes nested deeper than {MAX_INCLUDE_DEPTH}",
            path.display()
        );
    }
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let at = || format!("{}, line {line}", path.display());
        let Some((key, args)) = split_line(raw).map_err(|e| anyhow!("{}: {e}", at()))? else {
            continue;
        };
        let lower = key.to_ascii_lowercase();
        match lower.as_str() {
            "host" => {
                let pats: Vec<String> = args
                    .iter()
                    .flat_map(|a| a.split(','))
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect();
                if pats.is_empty() {
                    bail!("{}: Host without a pattern", at());
                }
                out.push(Entry::Host(pats));
            }
            "match" => {
                let all =
                    args.len() == 1 && args.first().is_some_and(|a| a.eq_ignore_ascii_case("all"));
                out.push(Entry::Match(all));
            }
            "include" => {
                for a in &args {
                    for f in include_targets(a, path).map_err(|e| anyhow!("{}: {e}", at()))? {
                        let t = std::fs::read_to_string(&f).with_context(|| {
                            format!("{}: reading included {}", at(), f.display())
                        })?;
                        parse_into(&t, &f, depth + 1, out)?;
                    }
                }
            }
            "hostname" | "port" | "user" | "identityfile" => {
                let k = match lower.as_str() {
                    "hostname" => Key::HostName,
                    "port" => Key::Port,
                    "user" => Key::User,
                    _ => Key::IdentityFile,
                };
                let [value] = args.as_slice() else {
                    bail!("{}: {key} takes exactly one value", at());
                };
                out.push(Entry::Set {
                    key: k,
                    value: value.clone(),
                    file: path.to_path_buf(),
                    line,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Files named by one `Include` argument: `~` expanded, relative paths taken
/// from `~/.ssh` (as OpenSSH does for user configs), wildcards allowed in the
/// last component, matches sorted. No match is not an error.
fn include_targets(arg: &str, from: &Path) -> Result<Vec<PathBuf>, LineError> {
    let p = expand_tilde(arg).ok_or(LineError::TildeIncludeNeedsHome)?;
    let p = if p.is_absolute() {
        p
    } else {
        let base = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".ssh"))
            .or_else(|| from.parent().map(Path::to_path_buf))
            .ok_or(LineError::RelativeIncludeNeedsHome)?;
        base.join(p)
    };
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return Ok(if p.exists() { vec![p] } else { vec![] });
    }
    let dir = p.parent().ok_or(LineError::PatternWithoutDirectory)?;
    let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter(|e| wildcard_match(&name, &e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => vec![],
    };
    found.sort();
    Ok(found)
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

    fn cfg(s: &str) -> SshConfig {
        SshConfig::parse(s, Path::new("/home/a/.ssh/config")).unwrap()
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("web?", "WEB1"));
        assert!(!wildcard_match("web?", "web12"));
        assert!(wildcard_match("*.example.com", "a.b.example.com"));
        assert!(!wildcard_match("*.example.com", "example.com"));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(!wildcard_match("a*b*c", "aXXbYY"));
        assert!(wildcard_match("", ""));
        assert!(!wildcard_match("", "x"));
        // Pathological pattern stays fast.
        let long = "a".repeat(5000);
        assert!(!wildcard_match(
            &"*a".repeat(50).to_string(),
            &format!("{long}b")
        ));
    }

    #[test]
    fn first_value_wins_and_identities_accumulate() {
        let c = cfg("# top\n\
             User fallback-not-first\n\
             Host web1-unlock web1u\n  HostName 192.0.2.11\n  Port=2222\n  IdentityFile ~/.ssh/unlock_%h\n\
             Host web*\n  Port 22\n  User admin\n  IdentityFile \"/keys/with space\"\n\
             Host * !db*\n  User nobody\n  HostName ignored.example\n");
        let r = c.resolve("web1-unlock").unwrap();
        assert_eq!(r.hostname.as_deref(), Some("192.0.2.11"));
        assert_eq!(r.port, Some(2222));
        // The line before any Host applies to every host and came first.
        assert_eq!(r.user.as_deref(), Some("fallback-not-first"));
        let home = std::env::var("HOME").unwrap();
        assert_eq!(
            r.identity_files,
            vec![
                PathBuf::from(format!("{home}/.ssh/unlock_192.0.2.11")),
                PathBuf::from("/keys/with space")
            ]
        );
        let d = c.resolve("db1").unwrap();
        assert_eq!(d.hostname, None);
        assert_eq!(d.port, None);
        assert!(c.is_alias("WEB1U"));
        assert!(!c.is_alias("web2"));
        assert!(!c.is_alias("db1"));
    }

    #[test]
    fn match_blocks() {
        let c = cfg("Host a\n Port 1\nMatch exec \"true\"\n Port 2\nMatch all\n User u\n");
        let r = c.resolve("b").unwrap();
        assert_eq!(r.port, None);
        assert_eq!(r.user.as_deref(), Some("u"));
        assert_eq!(c.resolve("a").unwrap().port, Some(1));
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = SshConfig::parse("Host a\n  Port banana\n", Path::new("/x/config"))
            .unwrap()
            .resolve("a")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/x/config, line 2") && e.contains("banana"),
            "{e}"
        );
        let e = SshConfig::parse("Host\n", Path::new("/x/config"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("Host without"), "{e}");
        let e = SshConfig::parse("HostName \"unclosed\n", Path::new("/x/config"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unbalanced"), "{e}");
        let e = SshConfig::parse("Host a\n HostName x%q\n", Path::new("/x/config"))
            .unwrap()
            .resolve("a")
            .unwrap_err()
            .to_string();
        assert!(e.contains("%q"), "{e}");
    }

    #[test]
    fn includes() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("conf.d")).unwrap();
        std::fs::write(
            t.path().join("conf.d/10-web"),
            "Host web9\n HostName 10.0.0.9\n",
        )
        .unwrap();
        std::fs::write(t.path().join("conf.d/ignored.txt"), "Host web9\n Port 9\n").unwrap();
        let main = t.path().join("config");
        std::fs::write(
            &main,
            format!(
                "Include {}/conf.d/??-*\nHost web9\n Port 2222\n",
                t.path().display()
            ),
        )
        .unwrap();
        let c = SshConfig::load(&main).unwrap();
        let r = c.resolve("web9").unwrap();
        assert_eq!(r.hostname.as_deref(), Some("10.0.0.9"));
        assert_eq!(r.port, Some(2222));
        // Self-inclusion ends with a clear error, not a stack overflow.
        std::fs::write(&main, format!("Include {}\n", main.display())).unwrap();
        let e = SshConfig::load(&main).unwrap_err().to_string();
        assert!(e.contains("nested deeper"), "{e}");
    }

    #[test]
    fn errors_do_not_echo_unbounded_input() {
        let long = "p".repeat(1 << 20);
        for text in [
            format!("Host a\n  Port {long}\n"),
            format!("Host a\n  HostName %{long}\n"),
        ] {
            let e = SshConfig::parse(&text, Path::new("/x/config"))
                .unwrap()
                .resolve("a")
                .unwrap_err()
                .to_string();
            assert!(e.len() < 400, "{} bytes: {}", e.len(), &e[..200]);
        }
    }

    #[test]
    fn an_empty_host_name_is_an_error() {
        // `HostName %u` with USER unset gave "" (the ssh_config fuzz
        // target); an empty quoted value reaches the same check.
        let c = cfg("Host web1\n  HostName \"\"\n");
        let e = c.resolve("web1").unwrap_err().to_string();
        assert!(e.contains("empty host name"), "{e}");
        assert!(expand_tokens("%u", "h", None).map_or(true, |u| !u.is_empty()));
    }

    #[test]
    fn token_errors_are_typed() {
        assert_eq!(
            expand_tokens("%x", "h", None),
            Err(TokenError::Unsupported('x'))
        );
        assert_eq!(expand_tokens("a%", "h", None), Err(TokenError::LonePercent));
        assert_eq!(split_line("Host \"a b"), Err(LineError::UnbalancedQuotes));
        assert_eq!(LineError::UnbalancedQuotes.to_string(), "unbalanced quotes");
        assert_eq!(
            TokenError::Unsupported('x').to_string(),
            "token %x is not supported here"
        );
    }
}
