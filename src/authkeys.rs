//! OpenSSH `authorized_keys` for the listener: parsing with errors that name
//! the line, and the decision whether a key from an address may log in.
//!
//! Honoured options: `restrict`, `from="…"` (wildcards, `!` negation, CIDR),
//! `no-pty`/`pty`. Options that only ever narrow what a key may do and whose
//! feature we never offer (`no-port-forwarding`, `no-agent-forwarding`,
//! `no-x11-forwarding`, `no-user-rc`) are accepted. Anything else is refused
//! with the line number: silently ignoring `command=` or `expiry-time=` would
//! give a key more power than its owner wrote down.
//!
//! `from=` takes addresses, CIDR blocks and IP wildcards only: an initramfs
//! has no DNS, so a host-name pattern could never match and would only look
//! like protection.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::text::{self, clip, clip_message};
use russh::keys::{HashAlg, PublicKey};
use std::net::IpAddr;

/// Why an `authorized_keys` file was refused: the line and what is wrong
/// with it. `Display` is the message shown to the admin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct AuthKeysError {
    pub line: usize,
    pub error: LineError,
}

/// What is wrong with one line. Fields holding file text are already
/// clipped and escaped (src/text.rs): the file may come from anyone who can
/// write it, and the message ends up on a console.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("missing key type")]
    MissingKeyType,
    #[error("missing key data after the key type")]
    MissingKeyData,
    #[error("cannot parse {kind} key: {reason}")]
    BadKey { kind: String, reason: String },
    #[error("no key after the options (or an unclosed quote)")]
    NoKeyAfterOptions,
    #[error("unclosed quote in options")]
    UnclosedQuote,
    #[error("empty option (two commas in a row?)")]
    EmptyOption,
    #[error("internal")]
    Internal,
    #[error(
        "option {0} is not supported by portcullisd (supported: restrict, \
         from=, pty, no-pty, no-port-forwarding, no-agent-forwarding, \
         no-x11-forwarding, no-user-rc)"
    )]
    UnsupportedOption(String),
    #[error("value {0} must be in double quotes")]
    NotQuoted(String),
    #[error("from={0} has an empty pattern")]
    EmptyPattern(String),
    #[error("from= pattern {pattern}: {addr} is not an IP address")]
    NotAnAddress { pattern: String, addr: String },
    #[error("from= pattern {0}: bad prefix length")]
    BadPrefixLength(String),
    #[error(
        "from= pattern {0} is a host name; portcullisd matches the client's address \
         only (no DNS in the initramfs): use an address, a CIDR block (10.0.0.0/8) \
         or an IP wildcard (192.168.1.*)"
    )]
    HostName(String),
}

#[derive(Debug, Clone)]
pub struct AuthorizedKey {
    pub key: PublicKey,
    pub comment: String,
    /// `from=` patterns; `None` means any address.
    pub from: Option<Vec<String>>,
    /// Whether an interactive terminal session is allowed.
    pub pty: bool,
    pub line: usize,
}

#[derive(Debug, Clone, Default)]
pub struct AuthorizedKeys {
    pub keys: Vec<AuthorizedKey>,
}

impl AuthorizedKeys {
    /// Parses the whole file; the first bad line fails it, named by number.
    pub fn parse(text: &str) -> Result<Self, AuthKeysError> {
        let mut keys = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.push(
                parse_line(line, i + 1).map_err(|error| AuthKeysError { line: i + 1, error })?,
            );
        }
        Ok(AuthorizedKeys { keys })
    }

    /// The entry allowing `key` from `peer`, if any. A key listed twice is
    /// allowed when any of its entries allows it.
    pub fn allows(&self, key: &PublicKey, peer: Option<IpAddr>) -> Option<&AuthorizedKey> {
        self.keys
            .iter()
            .filter(|k| k.key.key_data() == key.key_data())
            .find(|k| match (&k.from, peer) {
                (None, _) => true,
                (Some(pats), Some(ip)) => from_matches(pats, ip),
                (Some(_), None) => false,
            })
    }

    /// Whether the key is listed at all (offered keys not listed are refused
    /// before the client is asked to sign).
    pub fn lists(&self, key: &PublicKey) -> bool {
        self.keys.iter().any(|k| k.key.key_data() == key.key_data())
    }
}

fn is_key_type(s: &str) -> bool {
    s.starts_with("ssh-")
        || s.starts_with("ecdsa-sha2-")
        || s.starts_with("sk-ssh-")
        || s.starts_with("sk-ecdsa-")
}

fn parse_line(line: &str, n: usize) -> Result<AuthorizedKey, LineError> {
    let (opts, rest) = if is_key_type(line.split_ascii_whitespace().next().unwrap_or("")) {
        ("", line)
    } else {
        split_options(line)?
    };
    let mut words = rest.split_ascii_whitespace();
    let kind = words.next().ok_or(LineError::MissingKeyType)?;
    let b64 = words.next().ok_or(LineError::MissingKeyData)?;
    let comment = words.collect::<Vec<_>>().join(" ");
    let key = PublicKey::from_openssh(&format!("{kind} {b64}")).map_err(|e| {
        // ssh-key quotes what it decoded, control bytes and all.
        let e = e.to_string();
        LineError::BadKey {
            kind: clip(kind).to_string(),
            reason: clip_message(&text::line(&e)),
        }
    })?;
    let mut entry = AuthorizedKey {
        key,
        comment,
        from: None,
        pty: true,
        line: n,
    };
    for opt in parse_options(opts)? {
        let (name, value) = match opt.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (opt.to_ascii_lowercase(), None),
        };
        match (name.as_str(), value) {
            ("restrict", None) | ("no-pty", None) => entry.pty = false,
            ("pty", None) => entry.pty = true,
            ("no-port-forwarding", None)
            | ("no-agent-forwarding", None)
            | ("no-x11-forwarding", None)
            | ("no-user-rc", None) => {}
            ("from", Some(v)) => {
                let v = unquote(v)?;
                let pats: Vec<String> = v.split(',').map(|p| p.trim().to_string()).collect();
                if pats.iter().any(|p| p.is_empty() || p == "!") {
                    return Err(LineError::EmptyPattern(clip(&v).to_string()));
                }
                for p in &pats {
                    check_pattern(p)?;
                }
                entry.from = Some(pats);
            }
            _ => return Err(LineError::UnsupportedOption(clip(&name).to_string())),
        }
    }
    Ok(entry)
}

/// Splits `opts keytype base64 comment` at the first unquoted whitespace.
fn split_options(line: &str) -> Result<(&str, &str), LineError> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c.is_ascii_whitespace() && !quoted => {
                let (opts, rest) = (line.get(..i), line.get(i..));
                return Ok((opts.unwrap_or(""), rest.unwrap_or("").trim_start()));
            }
            _ => {}
        }
    }
    Err(LineError::NoKeyAfterOptions)
}

/// Splits the options field at unquoted commas.
fn parse_options(opts: &str) -> Result<Vec<String>, LineError> {
    if opts.is_empty() {
        return Ok(vec![]);
    }
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut escaped = false;
    for c in opts.chars() {
        let cur = out.last_mut().ok_or(LineError::Internal)?;
        match c {
            _ if escaped => {
                cur.push(c);
                escaped = false;
            }
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                cur.push(c);
                quoted = !quoted;
            }
            ',' if !quoted => out.push(String::new()),
            _ => cur.push(c),
        }
    }
    if quoted {
        return Err(LineError::UnclosedQuote);
    }
    if out.iter().any(String::is_empty) {
        return Err(LineError::EmptyOption);
    }
    Ok(out)
}

fn unquote(v: &str) -> Result<String, LineError> {
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| LineError::NotQuoted(clip(v).to_string()))?;
    Ok(inner.replace("\\\"", "\""))
}

fn check_pattern(p: &str) -> Result<(), LineError> {
    let body = p.strip_prefix('!').unwrap_or(p);
    if let Some((addr, len)) = body.split_once('/') {
        let ip: IpAddr = addr.parse().map_err(|_| LineError::NotAnAddress {
            pattern: clip(p).to_string(),
            addr: clip(addr).to_string(),
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match len.parse::<u8>() {
            Ok(l) if l <= max => Ok(()),
            _ => Err(LineError::BadPrefixLength(clip(p).to_string())),
        }
    } else if is_address_pattern(body) {
        Ok(())
    } else {
        Err(LineError::HostName(clip(p).to_string()))
    }
}

/// An address or an IP wildcard: IPv4 digits and dots, or IPv6 hex digits
/// with at least one colon (no host name has one), plus `*` and `?`. A
/// pattern without wildcards must be a real address.
fn is_address_pattern(p: &str) -> bool {
    let wild = |b: u8| b == b'*' || b == b'?';
    if !p.bytes().any(wild) {
        return p.parse::<IpAddr>().is_ok();
    }
    let v4 = p
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || wild(b));
    let v6 = p.contains(':')
        && p.bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.' || wild(b));
    v4 || v6
}

/// OpenSSH semantics: a matching negated pattern denies outright; otherwise
/// any matching positive pattern allows. Host names cannot be resolved in an
/// initramfs, so patterns are matched against the address text only.
pub fn from_matches(patterns: &[String], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    let text = ip.to_string();
    let mut allowed = false;
    for p in patterns {
        let (neg, body) = match p.strip_prefix('!') {
            Some(b) => (true, b),
            None => (false, p.as_str()),
        };
        let hit = if body.contains('/') {
            cidr_contains(body, ip)
        } else {
            wildcard(body.as_bytes(), text.as_bytes())
        };
        if hit && neg {
            return false;
        }
        allowed |= hit;
    }
    allowed
}

/// IPv4-mapped IPv6 peers (dual-stack sockets) are matched as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let Some((addr, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// `*` and `?` glob, case-insensitive, iterative (no recursion to blow up).
fn wildcard(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
            }
            Some(&c) if c == b'?' || s.get(i).is_some_and(|x| c.eq_ignore_ascii_case(x)) => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pat.get(p..).unwrap_or_default().iter().all(|&c| c == b'*')
}

/// `SHA256:…` fingerprint of a public key, as OpenSSH prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGzmd7Q2xTUCfkNPMnhbU2GXHfpjYs/jBdqoNlYzR+1j";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn errors_are_typed_and_name_the_line() {
        let parse = |t: &str| AuthorizedKeys::parse(t).unwrap_err();
        let e = parse(&format!("# c\n\nfrom=\"10.0.0.0/99\" {K1}"));
        assert_eq!(e.line, 3);
        assert_eq!(
            e.error,
            LineError::BadPrefixLength("\"10.0.0.0/99\"".into())
        );
        assert_eq!(
            e.to_string(),
            "line 3: from= pattern \"10.0.0.0/99\": bad prefix length"
        );
        assert_eq!(parse("ssh-ed25519").error, LineError::MissingKeyData);
        assert_eq!(parse(&format!("a,,b {K1}")).error, LineError::EmptyOption);
        assert_eq!(
            parse(&format!("from=10.0.0.1 {K1}")).error,
            LineError::NotQuoted("\"10.0.0.1\"".into())
        );
        assert!(matches!(
            parse(&format!("from=\"web\" {K1}")).error,
            LineError::HostName(_)
        ));
        assert!(matches!(
            parse(&format!("from=\"x/8\" {K1}")).error,
            LineError::NotAnAddress { .. }
        ));
        assert!(matches!(
            parse(&format!("command=\"sh\" {K1}")).error,
            LineError::UnsupportedOption(_)
        ));
        assert!(matches!(
            parse("ssh-ed25519 AAAAnotbase64!!").error,
            LineError::BadKey { .. }
        ));
    }

    #[test]
    fn parses_options_and_decides() {
        let text =
            format!("# admins\n\nrestrict,from=\"10.0.0.0/8,!10.6.6.6\" {K1} alice@laptop\n{K2}\n");
        let ak = AuthorizedKeys::parse(&text).unwrap();
        assert_eq!(ak.keys.len(), 2);
        assert_eq!(ak.keys[0].comment, "alice@laptop");
        assert!(!ak.keys[0].pty);
        assert!(ak.keys[1].pty);
        let k1 = key(K1);
        assert!(ak.allows(&k1, Some("10.1.2.3".parse().unwrap())).is_some());
        assert!(ak
            .allows(&k1, Some("::ffff:10.1.2.3".parse().unwrap()))
            .is_some());
        assert!(ak.allows(&k1, Some("10.6.6.6".parse().unwrap())).is_none());
        assert!(ak
            .allows(&k1, Some("192.168.1.1".parse().unwrap()))
            .is_none());
        assert!(ak.allows(&k1, None).is_none());
        assert!(ak
            .allows(&key(K2), Some("192.168.1.1".parse().unwrap()))
            .is_some());
    }

    #[test]
    fn refuses_unknown_options_with_line() {
        let e = AuthorizedKeys::parse(&format!("{K2}\ncommand=\"/bin/sh\" {K1}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2: option \"command\""), "{e}");
        let e = AuthorizedKeys::parse("ssh-ed25519 AAAAnotbase64!!\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("line 1: cannot parse \"ssh-ed25519\" key"),
            "{e}"
        );
        let e = AuthorizedKeys::parse(&format!("from=\"10.0.0.0/99\" {K1}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("prefix length"), "{e}");
        let e = AuthorizedKeys::parse("from=\"1.2.3.4 ssh-ed25519 AAAA")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 1:"), "{e}");
        let e = AuthorizedKeys::parse("ssh-ed25519")
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing key data"), "{e}");
    }

    #[test]
    fn patterns() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(from_matches(&["192.168.*".into()], ip("192.168.4.5")));
        assert!(from_matches(&["10.0.0.?".into()], ip("10.0.0.7")));
        assert!(!from_matches(&["10.0.0.?".into()], ip("10.0.0.17")));
        assert!(from_matches(&["2001:db8::/32".into()], ip("2001:db8::1")));
        assert!(!from_matches(
            &["*".into(), "!127.0.0.1".into()],
            ip("127.0.0.1")
        ));
        assert!(from_matches(&["0.0.0.0/0".into()], ip("8.8.8.8")));
        assert!(wildcard(b"a*b*c", b"axxbyyc"));
        assert!(!wildcard(b"a*b*c", b"axxbyy"));
    }

    #[test]
    fn host_names_in_from_are_refused() {
        // These passed `check` but could never match: matching is on the
        // address text.
        for p in [
            "localhost",
            "*.example.com",
            "!bad.example.org",
            "web?",
            "cafe",
        ] {
            let e = AuthorizedKeys::parse(&format!("from=\"{p}\" {K1}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("line 1: from= pattern") && e.contains("is a host name"),
                "{p}: {e}"
            );
        }
        for p in [
            "10.1.2.3",
            "192.168.*",
            "10.0.0.?",
            "*",
            "!10.6.6.6",
            "2001:db8::*",
            "fe80::1",
            "::ffff:10.0.0.*",
            "10.0.0.0/8",
        ] {
            AuthorizedKeys::parse(&format!("from=\"{p}\" {K1}\n"))
                .unwrap_or_else(|e| panic!("{p}: {e}"));
        }
        // Not a wildcard, not an address: refused too.
        assert!(AuthorizedKeys::parse(&format!("from=\"10.0.0.256\" {K1}")).is_err());
    }

    #[test]
    fn errors_do_not_echo_unbounded_input() {
        let name = "x".repeat(1 << 20);
        let e = AuthorizedKeys::parse(&format!("{name} {K1}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400, "{} bytes", e.len());
        assert!(e.contains("(1048576 bytes)"), "{}", &e[..200]);
        let e = AuthorizedKeys::parse(&format!("from=\"{name}\" {K1}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400, "{} bytes", e.len());
        let e = AuthorizedKeys::parse(&format!("from={name} {K1}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400, "{} bytes", e.len());
        let e = AuthorizedKeys::parse(&format!("{} AAAA\n", "ssh-".repeat(1 << 18)))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400, "{} bytes", e.len());
    }
}
