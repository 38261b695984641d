//! LUKS headers as `cryptsetup luksDump` prints them, and the one question
//! that bites in rescue systems: does each keyslot's key-derivation memory fit
//! in the RAM this machine has? An argon2 slot that needs more memory than is
//! available fails exactly like a wrong passphrase. Pure parsing.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Keyslot {
    pub id: u32,
    /// argon2id, argon2i or pbkdf2.
    pub kdf: String,
    /// KiB the KDF needs (argon2 only).
    pub memory_kib: Option<u64>,
    pub time_cost: Option<u64>,
    pub threads: Option<u64>,
    pub iterations: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    pub version: u32,
    pub uuid: Option<String>,
    pub label: Option<String>,
    pub cipher: Option<String>,
    pub keyslots: Vec<Keyslot>,
}

fn value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.trim().strip_prefix(key)?;
    Some(rest.trim_start_matches(':').trim())
}

fn number(s: &str) -> Option<u64> {
    s.split_whitespace().next()?.parse().ok()
}

/// Parses LUKS1 and LUKS2 dumps. Unknown lines are ignored, so a newer
/// cryptsetup that adds fields does not break us.
pub fn parse(text: &str) -> Option<Header> {
    let mut version = None;
    let mut uuid = None;
    let mut label = None;
    let mut cipher = None;
    let mut slots: Vec<Keyslot> = Vec::new();
    let mut in_keyslots = false;
    let mut luks1_cipher = (None::<String>, None::<String>);
    let mut luks1_iter = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = value(line, "Version") {
            version = v.parse().ok();
        } else if let Some(v) = value(line, "UUID") {
            uuid = Some(v.to_string()).filter(|s| !s.is_empty());
        } else if let Some(v) = value(line, "Label") {
            label = Some(v.to_string()).filter(|s| !s.is_empty() && s != "(no label)");
        }
        // LUKS2: sections start at column 0 ("Keyslots:", "Tokens:").
        if !line.starts_with([' ', '\t']) && t.ends_with(':') {
            in_keyslots = t == "Keyslots:";
            continue;
        }
        if version == Some(2) {
            if in_keyslots {
                if let Some((id, kind)) = t.split_once(": ") {
                    if line.starts_with("  ") && !line.starts_with("\t") {
                        if let Ok(id) = id.parse() {
                            if kind.starts_with("luks2") {
                                slots.push(Keyslot {
                                    id,
                                    kdf: String::new(),
                                    memory_kib: None,
                                    time_cost: None,
                                    threads: None,
                                    iterations: None,
                                });
                            }
                            continue;
                        }
                    }
                }
                let Some(s) = slots.last_mut() else { continue };
                if let Some(v) = value(t, "PBKDF") {
                    s.kdf = v.to_string();
                } else if let Some(v) = value(t, "Memory") {
                    s.memory_kib = number(v);
                } else if let Some(v) = value(t, "Time cost") {
                    s.time_cost = number(v);
                } else if let Some(v) = value(t, "Threads") {
                    s.threads = number(v);
                } else if let Some(v) = value(t, "Iterations") {
                    s.iterations = number(v);
                }
            } else if cipher.is_none() {
                if let Some(v) = value(t, "cipher") {
                    cipher = Some(v.to_string());
                }
            }
        } else if version == Some(1) {
            if let Some(v) = value(t, "Cipher name") {
                luks1_cipher.0 = Some(v.to_string());
            } else if let Some(v) = value(t, "Cipher mode") {
                luks1_cipher.1 = Some(v.to_string());
            } else if let Some(rest) = t.strip_prefix("Key Slot ") {
                if let Some((id, state)) = rest.split_once(':') {
                    luks1_iter = None;
                    if state.trim() == "ENABLED" {
                        if let Ok(id) = id.trim().parse() {
                            slots.push(Keyslot {
                                id,
                                kdf: "pbkdf2".into(),
                                memory_kib: None,
                                time_cost: None,
                                threads: None,
                                iterations: None,
                            });
                            luks1_iter = Some(slots.len() - 1);
                        }
                    }
                }
            } else if let (Some(i), Some(v)) = (luks1_iter, value(t, "Iterations")) {
                if let Some(s) = slots.get_mut(i) {
                    s.iterations = number(v);
                }
            }
        }
    }
    if version == Some(1) {
        if let (Some(n), Some(m)) = luks1_cipher {
            cipher = Some(format!("{n}-{m}"));
        }
    }
    Some(Header {
        version: version?,
        uuid,
        label,
        cipher,
        keyslots: slots,
    })
}

/// `MemAvailable` (KiB) from /proc/meminfo; `MemFree` on very old kernels.
pub fn mem_available_kib(meminfo: &str) -> Option<u64> {
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').and_then(number))
    };
    field("MemAvailable").or_else(|| field("MemFree"))
}

/// Keyslots whose KDF needs more memory than is available, with a message
/// that says what happens and what to do.
pub fn memory_warnings(dev: &str, h: &Header, available_kib: Option<u64>) -> Vec<String> {
    let Some(avail) = available_kib else {
        return vec![];
    };
    h.keyslots
        .iter()
        .filter_map(|s| {
            let need = s.memory_kib?;
            // argon2 needs the memory plus cryptsetup's own; 32 MiB headroom.
            (need + 32 * 1024 > avail).then(|| {
                format!(
                    "{dev}: keyslot {} ({}) needs {} MiB of memory, this rescue system has {} MiB \
                     available: opening it will fail here and look like a wrong passphrase. Boot \
                     the rescue system with more RAM, or use a passphrase of another keyslot",
                    s.id,
                    s.kdf,
                    need / 1024,
                    avail / 1024
                )
            })
        })
        .collect()
}

/// The largest KDF memory of any keyslot, KiB.
pub fn max_memory_kib(h: &Header) -> Option<u64> {
    h.keyslots.iter().filter_map(|s| s.memory_kib).max()
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

    #[test]
    fn luks2_dump() {
        let h = parse(include_str!("fixtures/luksdump-luks2.txt")).unwrap();
        assert_eq!(h.version, 2);
        assert_eq!(
            h.uuid.as_deref(),
            Some("7d0a6f0e-3333-4a4a-9f9f-0123456789ab")
        );
        assert_eq!(h.label.as_deref(), Some("main-luks"));
        assert_eq!(h.cipher.as_deref(), Some("aes-xts-plain64"));
        assert_eq!(h.keyslots.len(), 3);
        let s0 = &h.keyslots[0];
        assert_eq!((s0.id, s0.kdf.as_str()), (0, "argon2id"));
        assert_eq!(
            (s0.memory_kib, s0.time_cost, s0.threads),
            (Some(65536), Some(4), Some(2))
        );
        assert_eq!(h.keyslots[1].kdf, "pbkdf2");
        assert_eq!(h.keyslots[1].iterations, Some(1000));
        assert_eq!(h.keyslots[1].memory_kib, None);
        assert_eq!(h.keyslots[2].memory_kib, Some(1048576));
        assert_eq!(max_memory_kib(&h), Some(1048576));
    }

    #[test]
    fn luks1_dump() {
        let h = parse(include_str!("fixtures/luksdump-luks1.txt")).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(
            h.uuid.as_deref(),
            Some("11111111-2222-4333-8444-555555555555")
        );
        assert_eq!(h.cipher.as_deref(), Some("aes-xts-plain64"));
        assert_eq!(h.keyslots.len(), 1);
        assert_eq!(h.keyslots[0].iterations, Some(1000));
    }

    #[test]
    fn memory_against_ram() {
        let h = parse(include_str!("fixtures/luksdump-luks2.txt")).unwrap();
        let mi = "MemTotal:  1000000 kB\nMemFree: 10 kB\nMemAvailable:     524288 kB\n";
        let avail = mem_available_kib(mi);
        assert_eq!(avail, Some(524288));
        let w = memory_warnings("/dev/vdb2", &h, avail);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("keyslot 2 (argon2i) needs 1024 MiB"),
            "{}",
            w[0]
        );
        assert!(w[0].contains("512 MiB"), "{}", w[0]);
        assert!(memory_warnings("/dev/vdb2", &h, Some(4 << 20)).is_empty());
        assert_eq!(mem_available_kib("MemFree: 77 kB\n"), Some(77));
        assert!(parse("garbage").is_none());
    }
}
