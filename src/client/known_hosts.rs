//! Host-key pinning in OpenSSH's known_hosts format: portcullis's own file
//! for initramfs identities (`~/.config/portcullis/known_hosts`, never
//! `~/.ssh/known_hosts`, so the initramfs key and the booted system's key of
//! the same address never collide), and read-only lookups in the user's
//! `~/.ssh/known_hosts` for the system's key.
//!
//! Lines are parsed by ssh-key's `known_hosts` parser. This module adds what
//! it leaves to callers: matching host names (hashed `|1|salt|hash` names,
//! `*`/`?` patterns, `!` negations), `@revoked` (a revoked key is refused for
//! every host), and `@cert-authority` (ignored: portcullis pins plain keys).
//! Names are written as OpenSSH writes them: `host` for port 22,
//! `[host]:port` otherwise. Everything fails closed: a line that does not
//! parse pins nothing.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use anyhow::{Context, Result};
use russh::keys::ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use russh::keys::PublicKey;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What the file says about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Match,
    Unknown,
    /// Pinned with another key; the pinned key's fingerprint and its line.
    Changed {
        pinned: String,
        line: usize,
    },
    /// The key is listed as `@revoked` on this line.
    Revoked {
        line: usize,
    },
}

/// One parsed line of a known_hosts file.
#[derive(Debug, Clone)]
pub struct Line {
    /// 1-based line number.
    pub line: usize,
    pub entry: Entry,
}

impl Line {
    /// The host names as written (`|1|…` for a hashed one).
    pub fn names(&self) -> String {
        self.entry.host_patterns().to_string()
    }
}

pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("portcullis").join("known_hosts"))
}

/// The name OpenSSH files a host under: `host` for port 22, else
/// `[host]:port` (IPv6 addresses lose any brackets they came with).
pub fn host_id(host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The names a lookup for `host_id` accepts: itself, and for port 22 also
/// `[host]:22`, which portcullis wrote before it followed OpenSSH.
fn candidates(host_id: &str) -> Vec<String> {
    let mut c = vec![host_id.to_string()];
    if !host_id.starts_with('[') {
        c.push(format!("[{host_id}]:22"));
    }
    c
}

/// A line as OpenSSH reads it: runs of spaces and tabs separate fields,
/// while ssh-key's parser splits on single spaces only.
fn normalise(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every line that parses, with its number; comments, blank lines and lines
/// ssh-key refuses are skipped (they pin nothing). An `@revoked` line that
/// does not parse is an error naming its line: skipping it would let the
/// revoked key in.
pub fn parse(text: &str) -> Result<Vec<Line>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let l = normalise(raw);
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match l.parse::<Entry>() {
            Ok(entry) => out.push(Line { line: i + 1, entry }),
            Err(_) if l.starts_with("@revoked") => anyhow::bail!(
                "line {} is an @revoked line that does not parse; fix it \
                 (`@revoked PATTERNS KEYTYPE BASE64`) or delete it",
                i + 1
            ),
            Err(_) => {}
        }
    }
    Ok(out)
}

/// Whether the line's host names cover `name`, as OpenSSH decides: a hashed
/// name by its HMAC-SHA1, patterns by glob, and any matching `!` negation
/// excludes the line.
pub fn names_match(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            // ssh hashes the name it looked up, which it lowercases first.
            let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
            ring::hmac::verify(&k, name.to_lowercase().as_bytes(), hash).is_ok()
        }
        HostPatterns::Patterns(ps) => {
            let mut hit = false;
            for p in ps {
                match p.strip_prefix('!') {
                    Some(neg) if glob(neg, name) => return false,
                    Some(_) => {}
                    None => hit |= glob(p, name),
                }
            }
            hit
        }
    }
}

/// `*` and `?` globbing, case-insensitive like OpenSSH's host matching.
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    // Iterative matcher with one backtrack point: linear in practice, and
    // no recursion for a hostile pattern of many stars.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == n.get(ni) => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// The plain (unrevoked, non-CA) keys pinned for `host_id`, with their
/// lines.
pub fn keys_for(lines: &[Line], host_id: &str) -> Vec<(usize, PublicKey)> {
    let names = candidates(host_id);
    lines
        .iter()
        .filter(|l| l.entry.marker().is_none())
        .filter(|l| {
            names
                .iter()
                .any(|n| names_match(l.entry.host_patterns(), n))
        })
        .map(|l| (l.line, l.entry.public_key().clone()))
        .collect()
}

/// The line that revokes `key`, whatever host names it carries.
pub fn revoked(lines: &[Line], key: &PublicKey) -> Option<usize> {
    lines
        .iter()
        .find(|l| {
            l.entry.marker() == Some(&Marker::Revoked)
                && l.entry.public_key().key_data() == key.key_data()
        })
        .map(|l| l.line)
}

/// Looks `host_id` up in `text`: a revoked key is refused first, then any
/// line pinning this very key matches, else any other pin for the host is a
/// change.
pub fn check(text: &str, host_id: &str, key: &PublicKey) -> Result<Verdict> {
    let lines = parse(text)?;
    if let Some(line) = revoked(&lines, key) {
        return Ok(Verdict::Revoked { line });
    }
    let pins = keys_for(&lines, host_id);
    if pins.iter().any(|(_, k)| k.key_data() == key.key_data()) {
        return Ok(Verdict::Match);
    }
    Ok(match pins.last() {
        Some((line, k)) => Verdict::Changed {
            pinned: crate::authkeys::fingerprint(k),
            line: *line,
        },
        None => Verdict::Unknown,
    })
}

/// The file's text, or empty when it does not exist yet.
pub fn read(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading known hosts {}", path.display())),
    }
}

/// The file's lines; a line that must not be skipped but does not parse
/// is an error naming the file and the line.
pub fn parse_file(path: &Path) -> Result<Vec<Line>> {
    parse(&read(path)?).map_err(|e| anyhow::anyhow!("known hosts {}: {e}", path.display()))
}

pub fn check_file(path: &Path, host_id: &str, key: &PublicKey) -> Result<Verdict> {
    check(&read(path)?, host_id, key)
        .map_err(|e| anyhow::anyhow!("known hosts {}: {e}", path.display()))
}

/// The pin line for `key` under `host_id`.
pub fn pin_line(host_id: &str, key: &PublicKey) -> Result<String> {
    Ok(format!(
        "{host_id} {}",
        key.to_openssh().context("encoding the host key")?
    ))
}

/// Appends a pin (creating the file 0600 and its directory 0700).
pub fn add(path: &Path, host_id: &str, key: &PublicKey) -> Result<()> {
    make_dir(path)?;
    let mut line = pin_line(host_id, key)?;
    line.push('\n');
    // A file whose last line lacks its newline would glue the pin to it.
    if read(path)?.chars().last().is_some_and(|c| c != '\n') {
        line.insert(0, '\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening known hosts {}", path.display()))?;
    f.write_all(line.as_bytes())
        .with_context(|| format!("writing known hosts {}", path.display()))
}

/// A pin `without` cannot remove: a pattern line still covers the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StillPinned {
    pub line: usize,
    pub pattern: String,
}

impl StillPinned {
    /// The one-line refusal, naming the file to edit.
    pub fn message(&self, path: &Path, host_id: &str) -> String {
        format!(
            "{} line {} pins {host_id} through pattern {}; edit it by hand",
            path.display(),
            self.line,
            self.pattern
        )
    }
}

/// Removes every pin for `host_id` (names compared case-insensitively,
/// hashed names and the old `[host]:22` form included; other names sharing
/// a line stay). Returns the text without them and how many pins went, or
/// the first line whose patterns would still pin the host afterwards
/// (`*.example`, `web?`): claiming it gone would be false.
pub fn without(text: &str, host_id: &str) -> Result<(String, usize), StillPinned> {
    let names = candidates(host_id);
    let is_name = |p: &str| names.iter().any(|n| n.eq_ignore_ascii_case(p));
    let mut out = String::with_capacity(text.len());
    let mut removed = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = normalise(raw);
        let entry = (!line.starts_with('#'))
            .then(|| line.parse::<Entry>().ok())
            .flatten()
            .filter(|e| e.marker().is_none());
        // What stays of the line's names; `None` keeps the line untouched.
        let kept: Option<Vec<&str>> = match entry.as_ref().map(Entry::host_patterns) {
            Some(h @ HostPatterns::HashedName { .. }) => {
                names.iter().any(|n| names_match(h, n)).then(Vec::new)
            }
            Some(HostPatterns::Patterns(ps)) => {
                let kept: Vec<&str> = ps
                    .iter()
                    .map(String::as_str)
                    .filter(|p| !is_name(p))
                    .collect();
                let left = HostPatterns::Patterns(kept.iter().map(|p| p.to_string()).collect());
                if names.iter().any(|n| names_match(&left, n)) {
                    return Err(StillPinned {
                        line: i + 1,
                        pattern: kept.join(","),
                    });
                }
                (kept.len() != ps.len()).then_some(kept)
            }
            None => None,
        };
        match kept {
            None => {
                out.push_str(raw);
                out.push('\n');
            }
            Some(kept) => {
                removed += 1;
                if !kept.is_empty() {
                    let rest = line.split_once(' ').map_or("", |(_, r)| r);
                    out.push_str(&format!("{} {rest}\n", kept.join(",")));
                }
            }
        }
    }
    Ok((out, removed))
}

/// Replaces the file with `text`, atomically (a temporary file renamed over
/// it), mode 0600.
pub fn write(path: &Path, text: &str) -> Result<()> {
    make_dir(path)?;
    let tmp = {
        let mut p = path.as_os_str().to_owned();
        p.push(".portcullis-new");
        PathBuf::from(p)
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing known hosts {}", path.display()))
}

/// Pins `key` for `host_id` as the only key for it: older pins for the
/// host go (the admin confirmed this key), other hosts stay.
pub fn replace(path: &Path, host_id: &str, key: &PublicKey) -> Result<usize> {
    let (mut text, removed) =
        without(&read(path)?, host_id).map_err(|e| anyhow::anyhow!(e.message(path, host_id)))?;
    text.push_str(&pin_line(host_id, key)?);
    text.push('\n');
    write(path, &text)?;
    Ok(removed)
}

fn make_dir(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
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

    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGzmd7Q2xTUCfkNPMnhbU2GXHfpjYs/jBdqoNlYzR+1j";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    fn k(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn verdicts() {
        let (k1, k2) = (k(K1), k(K2));
        let text = format!("# pins\ngarbage\nweb1 {K1}\n[db1]:2222,[db1b]:2222 {K2}\n");
        assert_eq!(check(&text, "web1", &k1).unwrap(), Verdict::Match);
        assert_eq!(check(&text, "[db1b]:2222", &k2).unwrap(), Verdict::Match);
        assert_eq!(check(&text, "[web1]:2222", &k1).unwrap(), Verdict::Unknown);
        match check(&text, "web1", &k2).unwrap() {
            Verdict::Changed { pinned, line } => {
                assert_eq!(line, 3);
                assert_eq!(pinned, crate::authkeys::fingerprint(&k1));
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn port_22_is_written_plain_like_openssh() {
        assert_eq!(host_id("web1", 22), "web1");
        assert_eq!(host_id("web1", 2222), "[web1]:2222");
        assert_eq!(host_id("::1", 22), "::1");
        assert_eq!(host_id("[::1]", 2222), "[::1]:2222");
        // Pins portcullis wrote before still count.
        let text = format!("[web1]:22 {K1}\n");
        assert_eq!(check(&text, "web1", &k(K1)).unwrap(), Verdict::Match);
        assert!(matches!(
            check(&text, "web1", &k(K2)).unwrap(),
            Verdict::Changed { .. }
        ));
    }

    #[test]
    fn revoked_and_ca_lines() {
        let text = format!("@revoked * {K2}\n@cert-authority *.example {K1}\nweb1 {K2}\n");
        assert_eq!(
            check(&text, "web1", &k(K2)).unwrap(),
            Verdict::Revoked { line: 1 }
        );
        // A CA line pins nothing: k1 is unknown for x.example, and changed
        // for web1 (which has K2).
        assert_eq!(check(&text, "x.example", &k(K1)).unwrap(), Verdict::Unknown);
        assert!(matches!(
            check(&text, "web1", &k(K1)).unwrap(),
            Verdict::Changed { line: 3, .. }
        ));
    }

    #[test]
    fn patterns() {
        assert!(glob("*.example.net", "web1.example.net"));
        assert!(glob("web?", "WEB1"));
        assert!(!glob("web?", "web12"));
        assert!(glob("*", ""));
        assert!(!glob("a*b", "acbd"));
        assert!(glob("a*b*c", "aXbYbZc"));
        let p: HostPatterns = "*.example.net,!db.example.net".parse().unwrap();
        assert!(names_match(&p, "web.example.net"));
        assert!(!names_match(&p, "db.example.net"));
        let many = format!("{}b", "*".repeat(5000));
        assert!(!glob(&many, &"a".repeat(5000)));
    }

    #[test]
    fn forget_keeps_other_names() {
        let text = format!("# c\nweb1,web1b {K1}\n[web1]:22 {K2}\ndb {K2}\nbad line\n");
        let (out, n) = without(&text, "web1").unwrap();
        assert_eq!(n, 2);
        assert_eq!(out, format!("# c\nweb1b {K1}\ndb {K2}\nbad line\n"));
        let (same, n) = without(&text, "nope").unwrap();
        assert_eq!((same, n), (text, 0));
    }

    #[test]
    fn add_replace_then_match() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sub/known_hosts");
        let (k1, k2) = (k(K1), k(K2));
        assert_eq!(check_file(&p, "h", &k1).unwrap(), Verdict::Unknown);
        add(&p, "h", &k1).unwrap();
        assert_eq!(check_file(&p, "h", &k1).unwrap(), Verdict::Match);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("h {K1}\n"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(replace(&p, "h", &k2).unwrap(), 1);
        assert_eq!(check_file(&p, "h", &k2).unwrap(), Verdict::Match);
        assert!(matches!(
            check_file(&p, "h", &k1).unwrap(),
            Verdict::Changed { .. }
        ));
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A last line without its newline does not swallow the next pin.
        std::fs::write(&p, format!("x {K1}")).unwrap();
        add(&p, "y", &k2).unwrap();
        assert_eq!(check_file(&p, "y", &k2).unwrap(), Verdict::Match);
    }

    /// OpenSSH separates fields by runs of spaces and tabs; ssh-key by one
    /// space. A revocation or pin written with tabs must still count.
    #[test]
    fn tabs_and_space_runs_separate_fields() {
        let tabbed = |k: &str| k.replace(' ', "\t");
        let text = format!("@revoked\t*\t{}\nweb1   {K1}\n", tabbed(K2));
        assert_eq!(
            check(&text, "web1", &k(K2)).unwrap(),
            Verdict::Revoked { line: 1 }
        );
        assert_eq!(check(&text, "web1", &k(K1)).unwrap(), Verdict::Match);
        let (out, n) = without(&format!("web1\t\t{K1}\n"), "web1").unwrap();
        assert_eq!((out.as_str(), n), ("", 1));
        let (out, n) = without(&format!("web1,web2\t{}\n", tabbed(K1)), "web1").unwrap();
        assert_eq!((out, n), (format!("web2 {K1}\n"), 1));
    }

    /// An `@revoked` line that does not parse is an error naming the line,
    /// never skipped (that would let the revoked key in).
    #[test]
    fn a_broken_revocation_fails_closed() {
        let text = format!("web1 {K1}\n@revoked * ssh-ed25519 AAAAnotbase64!\n");
        let e = check(&text, "web1", &k(K1)).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("@revoked"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("kh");
        std::fs::write(&p, &text).unwrap();
        let e = check_file(&p, "web1", &k(K1)).unwrap_err().to_string();
        assert!(
            e.contains(&p.display().to_string()) && e.contains("line 2"),
            "{e}"
        );
        // Other lines that do not parse still pin nothing.
        assert_eq!(
            check("garbage here\n", "web1", &k(K1)).unwrap(),
            Verdict::Unknown
        );
    }

    /// Forgetting compares names as `check` does: case-insensitively; a
    /// host a pattern line still pins is refused, not claimed gone.
    #[test]
    fn forget_matches_like_check_and_refuses_patterns() {
        let (out, n) = without(&format!("WEB1 {K1}\n[Db]:2222 {K2}\n"), "web1").unwrap();
        assert_eq!((out, n), (format!("[Db]:2222 {K2}\n"), 1));
        let (_, n) = without(&format!("[Db]:2222 {K2}\n"), "[db]:2222").unwrap();
        assert_eq!(n, 1);
        let text = format!("# c\nweb1 {K1}\n*.example,!db.example {K2}\n");
        assert_eq!(
            without(&text, "web.example"),
            Err(StillPinned {
                line: 3,
                pattern: "*.example,!db.example".into()
            })
        );
        assert!(without(&text, "db.example").is_ok());
        // A literal name beside a pattern that also covers the host.
        let e = without(&format!("web1,web? {K1}\n"), "web1").unwrap_err();
        assert_eq!((e.line, e.pattern.as_str()), (1, "web?"));
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("kh");
        std::fs::write(&p, &text).unwrap();
        let msg = replace(&p, "web.example", &k(K1)).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "{} line 3 pins web.example through pattern *.example,!db.example; edit it by hand",
                p.display()
            )
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
    }
}
