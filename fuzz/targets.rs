//! Fuzz target bodies, shared by the libFuzzer targets in
//! `fuzz/fuzz_targets/` (nightly, `cargo fuzz`) and the stable smoke test
//! `tests/fuzz_smoke.rs` (part of `cargo test`), which includes this file.
//!
//! Each body takes arbitrary bytes, must not panic, and asserts what has to
//! hold for every input: round trips, bounded one-line errors, invariants of
//! the parsed value, agreement with a simple reference model. Only public
//! library API is used; nothing here touches the network, and inputs that
//! would make a parser read files (`Include`, `ssh-config = …`) are skipped.

use portcullis::authkeys::{self, AuthorizedKey, AuthorizedKeys};
use portcullis::client::known_hosts::{self, Verdict};
use portcullis::config::Settings;
use portcullis::fleet::inventory::{self, Inventory};
use portcullis::fleet::ssh_config::{self, SshConfig};
use portcullis::listener::terminal::{Key, LineEditor};
use portcullis::preflight::image::{Entry, Image, Kind};
use portcullis::protocol::{self, Command, ErrorReply, StatusReply, UnlockReply};
use portcullis::rescue::{bootentry, cpio, discover, fstab, kexec, lsblk, luks, state};
use portcullis::secret::{self, Passphrase, SecretBuf, SecretError};
use portcullis::unlock::{crypttab, systemd, volume};
use std::cmp::Ordering;
use std::net::IpAddr;
use std::path::Path;

/// Properties that these targets found broken, all fixed since (issue 11's
/// passphrase rule, hardening, and the fixes for the targets' findings).
/// On, so the smoke test guards them; docs/testing.md ("Fuzzing") lists each.
pub const STRICT: bool = true;

/// A target body: arbitrary bytes in, a panic on a broken property.
pub type Body = fn(&[u8]);

/// Every target by name (`fuzz/run.sh` runs them in name order).
pub const TARGETS: &[(&str, Body)] = &[
    ("protocol", protocol),
    ("secret", secret),
    ("terminal", terminal),
    ("authkeys", authkeys),
    ("config", config),
    ("inventory", inventory),
    ("ssh_config", ssh_config),
    ("known_hosts", known_hosts),
    ("rescue", rescue),
    ("cpio", cpio),
    ("unlock", unlock),
    ("image", image),
];

/// An Ed25519 key that stands for "the key the client offers".
const KEY_LINE: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGzmd7Q2xTUCfkNPMnhbU2GXHfpjYs/jBdqoNlYzR+1j fuzz";

/// The entry for [`KEY_LINE`]; its `key` field is the client's key.
fn fixed_key() -> AuthorizedKey {
    #[allow(clippy::expect_used)]
    let keys = AuthorizedKeys::parse(KEY_LINE).expect("the fixed key line parses");
    #[allow(clippy::expect_used)]
    keys.keys.into_iter().next().expect("one key")
}

/// A user-facing error is one line and does not grow much faster than the
/// input that caused it (issue 11 E: a 1 MiB option name once gave 2 MB).
fn bounded_error(msg: &str, input_len: usize) {
    if STRICT {
        // Open: toml's messages and ssh-key's (which quote decoded key
        // bytes) can hold a newline; see docs/testing.md.
        assert!(!msg.contains('\n'), "error spans several lines: {msg:?}");
    }
    // Open: errors quote input with `{:?}`, which turns one control byte
    // into six (`\u{1d}`); a linear bound still catches runaway output.
    let limit = if STRICT { 1024 } else { 1024 + 12 * input_len };
    assert!(
        msg.len() <= limit,
        "error of {} bytes for {input_len} bytes of input",
        msg.len()
    );
}

/// Splits the input into a control byte and the rest.
fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&c, rest)) => (c, rest),
        None => (0, &[]),
    }
}

// ---------------------------------------------------------------- protocol

/// Exec command parsing (control byte even) and the machine-mode reply
/// line as the client reads it (odd).
pub fn protocol(data: &[u8]) {
    let (c, rest) = split(data);
    if c % 2 == 0 {
        command(rest);
    } else {
        reply(rest);
    }
}

fn command(raw: &[u8]) {
    match protocol::parse_command(raw) {
        Ok(cmd) => {
            assert!(raw.len() <= protocol::MAX_COMMAND_LEN);
            let op = match cmd {
                Command::MachineUnlock => Some("unlock"),
                Command::MachineStatus => Some("status"),
                _ => None,
            };
            if let Some(op) = op {
                let again = protocol::parse_command(protocol::machine_command(op).as_bytes());
                assert_eq!(again, Ok(cmd));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
            assert!(msg.len() <= 512, "command error of {} bytes", msg.len());
            if STRICT {
                // The listener sends this text to the client's terminal.
                assert!(!msg.chars().any(char::is_control), "{msg:?}");
            }
        }
    }
}

/// The client's framing: the first line of what the listener sent is one
/// JSON value. Anything that decodes must encode back to one line that
/// decodes to the same value.
fn reply(out: &[u8]) {
    let line = out.split(|&b| b == b'\n').next().unwrap_or_default();
    if let Ok(r) = serde_json::from_slice::<UnlockReply>(line) {
        assert_eq!(round_trip(&r), r);
        let text = protocol::describe_unlock(&r);
        if STRICT {
            // Open (issue 11 F): names and messages from the listener reach
            // the admin's terminal raw.
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
        let _ = r.outcome.exit_code();
    }
    if let Ok(r) = serde_json::from_slice::<StatusReply>(line) {
        assert_eq!(round_trip(&r), r);
        let table = protocol::describe_status(&r.volumes);
        if STRICT {
            // Open (issue 11 F): a volume name with a newline adds lines.
            assert_eq!(table.matches('\n').count(), r.volumes.len().max(1));
        }
    }
    if let Ok(r) = serde_json::from_slice::<ErrorReply>(line) {
        assert_eq!(round_trip(&r), r);
    }
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    let enc = protocol::encode_line(v);
    assert_eq!(enc.last(), Some(&b'\n'));
    assert_eq!(enc.iter().filter(|&&b| b == b'\n').count(), 1);
    #[allow(clippy::expect_used)]
    serde_json::from_slice(&enc).expect("an encoded reply decodes")
}

// ------------------------------------------------------------------ secret

/// Secret input arriving in packets, as the listener gathers it: machine
/// mode takes everything up to EOF, human mode stops at the first line end.
/// The control byte picks the mode and the packet size.
pub fn secret(data: &[u8]) {
    let (c, stream) = split(data);
    let machine = c & 1 == 1;
    // Packet size 1 to 127, or 0: everything in one packet.
    let chunk = match usize::from(c >> 1) {
        0 => stream.len().max(1),
        n => n,
    };
    // As the listener's `data()` gathers it: machine mode keeps every byte,
    // human mode only the first line (so a long tail cannot overflow it).
    let mut buf = SecretBuf::default();
    for piece in stream.chunks(chunk) {
        let line_done = if machine {
            buf.push(piece);
            false
        } else {
            buf.push_line(piece)
        };
        assert!(buf.len() <= secret::MAX_LEN + 2);
        if line_done || buf.overflowed() {
            break;
        }
    }
    let got = buf.take(!machine);
    assert!(buf.is_empty() && !buf.overflowed());
    if machine {
        // Machine mode is verbatim: exactly the bytes sent, or a clear error.
        match (&got, stream.len()) {
            (Ok(p), _) => assert_eq!(p.expose(), stream),
            (Err(SecretError::Empty), 0) => {}
            (Err(SecretError::TooLong), n) => assert!(n > secret::MAX_LEN),
            (Err(e), n) => panic!("machine mode refused {n} bytes: {e}"),
        }
    } else {
        line_properties(&got, stream, true);
        if STRICT {
            // Issue 11 D: one rule on every human path. Whatever the packet
            // sizes, the listener ends with what the rule gives for the
            // whole stream: the same bytes, or the same refusal.
            let rule = Passphrase::from_human(stream);
            match (&got, &rule) {
                (Ok(a), Ok(b)) => assert_eq!(a.expose(), b.expose()),
                (Err(a), Err(b)) => assert_eq!(a, b),
                (a, b) => panic!("packets gave {a:?}, the rule {b:?}"),
            }
        }
    }
    // Open (issue 11 D): from_line keeps "L1\nL2" of two lines whole.
    line_properties(&Passphrase::from_line(stream.to_vec()), stream, STRICT);
}

/// What any human path must give: a non-empty, bounded prefix of the input
/// with no line end in it.
fn line_properties(got: &Result<Passphrase, SecretError>, input: &[u8], one_line: bool) {
    if let Ok(p) = got {
        assert!(!p.is_empty() && p.len() <= secret::MAX_LEN);
        assert!(input.starts_with(p.expose()));
        if one_line {
            assert!(!p.expose().contains(&b'\n'));
        }
        assert_eq!(format!("{p:?}"), "Passphrase(<redacted>)");
    }
}

// ---------------------------------------------------------------- terminal

/// Keystrokes for the pty prompt, in packets whose size the control byte
/// picks. A line that comes out is bounded, has no control bytes but TAB,
/// and is a subsequence of what was typed (editing only removes).
pub fn terminal(data: &[u8]) {
    let (c, typed) = split(data);
    let chunk = usize::from(c).max(1);
    let mut ed = LineEditor::default();
    for piece in typed.chunks(chunk) {
        // Bytes after an event in the same packet are dropped by design;
        // the next packet starts the next line.
        if let Some(Key::Line(Ok(p))) = ed.feed(piece) {
            let p = p.expose();
            assert!(!p.is_empty() && p.len() <= secret::MAX_LEN);
            // TAB may be part of a passphrase; other control bytes are
            // refused (or, before the passphrase rule, dropped).
            assert!(
                !p.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f),
                "control byte in a line"
            );
            assert!(is_subsequence(p, typed));
        }
    }
}

fn is_subsequence(needle: &[u8], hay: &[u8]) -> bool {
    let mut it = hay.iter();
    needle.iter().all(|b| it.any(|h| h == b))
}

// ---------------------------------------------------------------- authkeys

pub fn authkeys(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match AuthorizedKeys::parse(&text) {
        Ok(keys) => {
            let lines = text.lines().count();
            let peers: [IpAddr; 3] = [
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([203, 0, 113, 7]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ];
            for k in &keys.keys {
                assert!(k.line >= 1 && k.line <= lines);
                assert!(keys.lists(&k.key));
                assert!(authkeys::fingerprint(&k.key).starts_with("SHA256:"));
                for ip in peers {
                    let allowed = keys.allows(&k.key, Some(ip)).is_some();
                    match &k.from {
                        None => assert!(allowed),
                        Some(p) if authkeys::from_matches(p, ip) => assert!(allowed),
                        Some(_) => {}
                    }
                }
                // No address known: only entries without from= let it in.
                if let Some(e) = keys.allows(&k.key, None) {
                    assert!(e.from.is_none());
                }
            }
        }
        Err(e) => bounded_error(&e.to_string(), data.len()),
    }
}

// ------------------------------------------------------------------ config

pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Settings::parse(&text, Path::new("fuzz.toml")) {
        Ok(s) => {
            assert!(!s.listen.is_empty());
            assert!((1..=1000).contains(&s.max_tries));
            assert!(!s.volumes.is_empty() || s.volumes_from_cmdline);
        }
        Err(e) => bounded_error(&format!("{e:#}"), data.len()),
    }
}

// --------------------------------------------------------------- inventory

pub fn inventory(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // `ssh-config = PATH` makes the parser read PATH; a fuzzer must not
    // wander the file system (or hang on /dev/zero).
    if text.contains("config") || text.contains("\\u") || text.contains("\\U") {
        return;
    }
    match Inventory::parse(&text, Path::new("fuzz-inventory.toml")) {
        Ok(inv) => {
            if let Ok(all) = inv.resolve(&[inventory::ALL.to_string()]) {
                let names: Vec<&str> = all.iter().map(|h| h.name.as_str()).collect();
                let known: Vec<&str> = inv.hosts.keys().map(String::as_str).collect();
                assert_eq!(names.len(), known.len());
                assert!(names.iter().all(|n| inv.knows(n)));
            }
            for (g, members) in &inv.groups {
                assert!(inv.knows(g));
                if let Ok(hosts) = inv.resolve(std::slice::from_ref(g)) {
                    assert!(hosts.len() <= members.len().max(inv.hosts.len()));
                }
            }
            for h in inv.hosts.values() {
                for f in &h.fingerprints {
                    assert!(inventory::valid_fingerprint(f));
                }
            }
        }
        Err(e) => bounded_error(&format!("{e:#}"), data.len()),
    }
}

// -------------------------------------------------------------- ssh_config

/// The parser, resolution of a few names, and the wildcard matcher against
/// a reference model.
pub fn ssh_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // Include reads files; see `inventory`.
    if text.to_ascii_lowercase().contains("include") {
        return;
    }
    if let Ok(c) = SshConfig::parse(&text, Path::new("fuzz_ssh_config")) {
        let mut names: Vec<&str> = text.split_whitespace().take(8).collect();
        names.push("web1.example.net");
        for n in names {
            if let Ok(r) = c.resolve(n) {
                if STRICT {
                    // Open: `HostName %u` with USER unset resolves to "".
                    assert!(r.hostname.as_deref() != Some(""));
                }
            }
            let _ = c.is_alias(n);
        }
    }
    // Pattern and text, separated by the first newline.
    let (pattern, host) = text.split_once('\n').unwrap_or((&text, ""));
    if pattern.chars().count() <= 64 && host.chars().count() <= 64 {
        let got = ssh_config::wildcard_match(pattern, host);
        let want = wildcard_model(&pattern.to_lowercase(), &host.to_lowercase());
        assert_eq!(got, want, "wildcard_match({pattern:?}, {host:?})");
        assert!(ssh_config::wildcard_match(host, host));
        assert!(ssh_config::wildcard_match("*", host));
    }
    let _ = ssh_config::expand_tilde(&text);
}

/// Textbook dynamic programming over (pattern prefix, text prefix).
fn wildcard_model(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // row[j]: pattern[..i] matches text[..j]
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for &pc in &p {
        let mut next = vec![false; t.len() + 1];
        if pc == '*' {
            next[0] = row[0];
        }
        for j in 1..=t.len() {
            next[j] = match pc {
                '*' => row[j] || next[j - 1],
                '?' => row[j - 1],
                c => row[j - 1] && t[j - 1] == c,
            };
        }
        row = next;
    }
    row[t.len()]
}

// ------------------------------------------------------------- known_hosts

pub fn known_hosts(data: &[u8]) {
    let (c, rest) = split(data);
    let text = String::from_utf8_lossy(rest);
    let key = fixed_key().key;
    // Port 22 (the plain `host` form, and the old `[host]:22` one) or not.
    let port = if c % 2 == 0 { 22 } else { 2200 + u16::from(c) };
    let id = known_hosts::host_id("web1.example.net", port);
    let b64 = KEY_LINE.split(' ').nth(1).unwrap_or_default();
    let Ok(v) = known_hosts::check(&text, &id, &key) else {
        // Only a broken `@revoked` line is an error, and it stays one.
        assert!(text.contains("@revoked"));
        return;
    };
    if v == Verdict::Match {
        // A match needs the key itself in the file, under the host's name,
        // a pattern or a hashed name.
        assert!(text.contains(b64));
        let named = text.to_lowercase().contains("web1.example.net");
        assert!(named || text.contains(['*', '?']) || text.contains("|1|"));
    }
    if let Verdict::Changed { line, .. } | Verdict::Revoked { line } = &v {
        assert!(*line >= 1 && *line <= text.lines().count());
    }
    if let Verdict::Changed { pinned, .. } = &v {
        assert!(pinned.starts_with("SHA256:"));
    }
    // What `add` appends is found again, whatever came before it, unless
    // the file revokes the key (a revocation always wins).
    let mut pinned = text.into_owned();
    if !pinned.is_empty() && !pinned.ends_with('\n') {
        pinned.push('\n');
    }
    pinned.push_str(&format!("{id} ssh-ed25519 {b64}\n"));
    let again = known_hosts::check(&pinned, &id, &key).ok();
    match v {
        Verdict::Revoked { .. } => assert!(matches!(again, Some(Verdict::Revoked { .. }))),
        _ => assert_eq!(again, Some(Verdict::Match)),
    }
    // `forget` removes that pin, and a revocation appended after anything
    // refuses the key.
    // (unless a pattern line still pins the host: then it refuses).
    if let Ok((rest, n)) = known_hosts::without(&pinned, &id) {
        assert!(n >= 1);
        assert!(!format!("\n{rest}").contains(&format!("\n{id} ssh-ed25519 {b64}\n")));
    }
    pinned.push_str(&format!("@revoked * ssh-ed25519 {b64}\n"));
    assert!(matches!(
        known_hosts::check(&pinned, &id, &key),
        Ok(Verdict::Revoked { .. })
    ));
}

// ------------------------------------------------------------------ rescue

/// Marks section headers in the output of the rescue side's probe scripts
/// (random per run in real use).
const MARKER: &str = "@@pc";

/// The rescue parsers; the control byte picks one. 9 to 11 take the whole
/// sectioned output of a probe script, headed by `@@pc NAME` lines.
pub fn rescue(data: &[u8]) {
    let (c, rest) = split(data);
    let text = String::from_utf8_lossy(rest);
    match c % 12 {
        0 => {
            if let Ok(devs) = lsblk::parse(&text) {
                for d in &devs {
                    let _ = d.is_luks();
                }
            }
        }
        1 => {
            if let Some(h) = luks::parse(&text) {
                let max = luks::max_memory_kib(&h);
                for k in &h.keyslots {
                    if let (Some(m), Some(max)) = (k.memory_kib, max) {
                        assert!(m <= max);
                    }
                }
                for w in luks::memory_warnings("/dev/fuzz", &h, Some(1024)) {
                    assert!(!w.contains('\n'));
                }
            }
            let _ = luks::mem_available_kib(&text);
        }
        2 => {
            for e in fstab::parse(&text) {
                assert!(e.options.iter().all(|o| !o.is_empty()));
                // The rescue side mounts read-only unless asked otherwise:
                // no option may turn that around.
                let ro = fstab::rescue_options(&e, false);
                let words: Vec<&str> = ro.split(',').collect();
                assert_eq!(words.first(), Some(&"ro"), "{ro}");
                assert!(!words.contains(&"rw"), "read-only mount options {ro:?}");
                assert!(fstab::rescue_options(&e, true).starts_with("rw"));
                let _ = (e.is_local_fs(), e.is_essential(), e.subvol());
            }
        }
        3 => {
            for m in state::parse_mountinfo(&text) {
                assert!(!m.fstype.contains(' ') && !m.options.contains(' '));
            }
        }
        4 => {
            let mut entries: Vec<_> = text
                .split("\n\n")
                .filter_map(|t| bootentry::parse_bls("fuzz.conf", t))
                .collect();
            bootentry::sort_bls(&mut entries);
        }
        5 => {
            let _ = bootentry::parse_grub("grub.cfg", &text);
        }
        6 => {
            let _ = bootentry::parse_extlinux("extlinux.conf", &text);
        }
        7 => {
            if let Some(cmdline) = bootentry::parse_kernel_cmdline(&text) {
                assert!(!cmdline.is_empty() && !cmdline.contains('\n'));
                assert_eq!(cmdline.trim(), cmdline);
            }
        }
        8 => versions(&text),
        9 => {
            let f = state::parse_facts(&text, MARKER);
            if let Some(e) = &f.lsblk_error {
                bounded_error(e, rest.len());
            }
        }
        10 => {
            let b = kexec::parse_probe(&text, MARKER);
            if let Some(cmdline) = &b.kernel_cmdline {
                assert!(!cmdline.contains('\n'));
            }
        }
        _ => {
            let dev = lsblk::Dev {
                path: "/dev/fuzz1".into(),
                ..Default::default()
            };
            let status = text.len() as u32 % 5;
            let p = discover::parse_peek(&dev, &text, MARKER, Some(status), &text);
            if let Some(e) = &p.error {
                assert!(!e.contains('\n'));
            }
        }
    }
}

/// `version_cmp` must be a total order, or sorting kernels panics (Rust's
/// sort may detect a broken order) or picks the wrong kernel.
fn versions(text: &str) {
    let v: Vec<&str> = text.lines().take(3).collect();
    for &a in &v {
        assert_eq!(bootentry::version_cmp(a, a), Ordering::Equal, "{a:?}");
        for &b in &v {
            let ab = bootentry::version_cmp(a, b);
            assert_eq!(ab, bootentry::version_cmp(b, a).reverse(), "{a:?} {b:?}");
            for &c in &v {
                if ab == Ordering::Less && bootentry::version_cmp(b, c) == Ordering::Less {
                    assert_eq!(
                        bootentry::version_cmp(a, c),
                        Ordering::Less,
                        "{a:?} {b:?} {c:?}"
                    );
                }
            }
        }
    }
    let names: Vec<String> = text.lines().map(str::to_string).collect();
    for (kernel, initrd) in bootentry::kernels_in_boot(&names) {
        assert!(names.contains(&kernel));
        if let Some(i) = initrd {
            assert!(names.contains(&i));
        }
    }
}

// -------------------------------------------------------------------- cpio

/// Control byte even: write entries described by the input, read the
/// archive back and compare. Odd: read arbitrary bytes, and write what was
/// read back out, which must read back the same.
pub fn cpio(data: &[u8]) {
    let (c, rest) = split(data);
    if c % 2 == 0 {
        let entries = entries_from(rest);
        check_round_trip(&entries);
    } else if let Some(listed) = cpio::list(rest) {
        // Keep what the writer can express: plain names, directories
        // (no data) and regular files, permission bits only.
        let entries: Vec<(String, u32, Vec<u8>)> = listed
            .into_iter()
            .filter(|(n, _, _)| is_plain(n))
            .filter_map(|(n, m, d)| match m & 0o170000 {
                S_IFDIR => Some((n, S_IFDIR | (m & 0o7777), Vec::new())),
                S_IFREG => Some((n, S_IFREG | (m & 0o7777), d)),
                _ => None,
            })
            .collect();
        check_round_trip(&entries);
    }
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;

/// Names the writer is meant for: no leading `/` (it strips them), not the
/// trailer's name, no NUL (the kernel would cut the name there).
fn is_plain(name: &str) -> bool {
    !name.starts_with('/') && name != "TRAILER!!!" && !name.contains('\0')
}

/// Entries as (name, mode, data): per entry one kind byte, a name length,
/// the name, two permission bytes, a data length and the data.
fn entries_from(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while let [kind, name_len, tail @ ..] = b {
        let Some((name, tail)) = tail.split_at_checked(usize::from(*name_len)) else {
            break;
        };
        let [p0, p1, data_len, tail @ ..] = tail else {
            break;
        };
        let Some((body, tail)) = tail.split_at_checked(usize::from(*data_len)) else {
            break;
        };
        let name = String::from_utf8_lossy(name).into_owned();
        let perm = u32::from(u16::from_le_bytes([*p0, *p1])) & 0o7777;
        if is_plain(&name) {
            if kind % 2 == 0 {
                out.push((name, S_IFDIR | perm, Vec::new()));
            } else {
                out.push((name, S_IFREG | perm, body.to_vec()));
            }
        }
        b = tail;
    }
    out
}

fn check_round_trip(entries: &[(String, u32, Vec<u8>)]) {
    let mut a = cpio::Archive::default();
    for (name, mode, body) in entries {
        if mode & S_IFDIR != 0 {
            a.dir(name, mode & 0o7777);
        } else {
            a.file(name, mode & 0o7777, body);
        }
    }
    let bytes = a.finish();
    assert_eq!(bytes.len() % 512, 0);
    assert_eq!(cpio::list(&bytes).as_deref(), Some(entries));
}

// ------------------------------------------------------------------ unlock

/// The listener's own boot-time parsers: crypttab, systemd ask files, the
/// binary LUKS header at the start of a device, device specs.
pub fn unlock(data: &[u8]) {
    let (c, rest) = split(data);
    let text = String::from_utf8_lossy(rest);
    match c % 4 {
        0 => {
            for e in crypttab::parse(&text) {
                assert!(!e.name.is_empty() && !e.name.contains(|c: char| c.is_ascii_whitespace()));
                assert!(!e.source.is_empty());
            }
        }
        1 => {
            let _ = systemd::parse_ask(&text, "/run/systemd/ask-password/ask.fuzz".into());
        }
        2 => {
            if let Some(h) = volume::parse_luks_header(rest) {
                assert!(rest.starts_with(b"LUKS\xba\xbe"));
                // Characters, not bytes: invalid UTF-8 becomes U+FFFD.
                assert!(h.uuid.chars().count() <= 40 && h.label.chars().count() <= 48);
            }
        }
        _ => match volume::DeviceSpec::parse(&text) {
            Ok(_) => {}
            Err(e) => bounded_error(&e.to_string(), rest.len()),
        },
    }
}

// ------------------------------------------------------------------- image

/// Preflight's initramfs reader. Control byte even: arbitrary bytes as an
/// image (every compression is reached through its magic); a successful
/// read holds clean relative paths, and following links always ends.
/// Odd: entries described by the input, written by the rescue cpio writer,
/// must read back as the same image (later names replacing earlier ones).
pub fn image(data: &[u8]) {
    let (c, rest) = split(data);
    if c % 2 == 0 {
        match Image::read(rest) {
            Ok(img) => {
                for (path, _) in img.entries() {
                    assert!(!path.is_empty() && !path.starts_with('/'), "{path:?}");
                    assert!(
                        path.split('/')
                            .all(|p| !p.is_empty() && p != "." && p != ".."),
                        "{path:?}"
                    );
                    let _ = img.resolve(path);
                    let _ = img.file(&format!("{path}/x"));
                }
            }
            Err(e) => bounded_error(&e.to_string(), rest.len()),
        }
    } else {
        let entries = entries_from(rest);
        let mut a = cpio::Archive::default();
        let mut expected = Image::default();
        for (name, mode, body) in &entries {
            let (kind, data) = if mode & S_IFDIR != 0 {
                a.dir(name, mode & 0o7777);
                (Kind::Dir, Vec::new())
            } else {
                a.file(name, mode & 0o7777, body);
                (Kind::File, body.clone())
            };
            let mode = mode & 0o7777;
            expected.insert(name, Entry { kind, mode, data });
        }
        let got = Image::read(&a.finish()).unwrap_or_else(|e| panic!("{e}"));
        assert!(got.entries().eq(expected.entries()));
    }
}
