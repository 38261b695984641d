//! Fuzz smoke on stable, part of `cargo test`: every fuzz target body
//! (`fuzz/targets.rs`, shared with the libFuzzer targets) runs over its
//! committed corpus (`fuzz/corpus/NAME/`) and over a few thousand
//! deterministic mutations of it. A failing input is printed in hex and
//! written to `target/fuzz-smoke-failures/` so it can be replayed with
//! `cargo +nightly fuzz run NAME FILE`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::{Path, PathBuf};

/// Mutations per target. Debug builds run roughly 20k small inputs a
/// second per target, so this keeps the whole test to a few seconds.
const MUTATIONS: usize = 4000;

/// Tokens that reach deeper than random bytes: keywords of the formats.
const TOKENS: &[&[u8]] = &[
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b"\0",
    b"\x1b[",
    b"\x7f",
    b"\\040",
    b"\\",
    b"\"",
    b"=",
    b",",
    b"*",
    b"?",
    b"%h",
    b"~/",
    b"[",
    b"]",
    b":",
    b"#",
    b"portcullis/1 ",
    b"unlock",
    b"status",
    b"from=\"",
    b"restrict",
    b"no-pty",
    b"ssh-ed25519 ",
    b"[[volume]]",
    b"[host.",
    b"[group.",
    b"Host ",
    b"HostName ",
    b"Port ",
    b"Match ",
    b"Keyslots:",
    b"LUKS header information",
    b"menuentry '",
    b"linux ",
    b"initrd ",
    b"LABEL ",
    b"APPEND ",
    b" - ",
    b"subvol=",
    b"070701",
    b"TRAILER!!!",
    b"07070100000001000081A4",
    b"\x1f\x8b\x08\x00",
    b"\x28\xb5\x2f\xfd",
    b"\xfd7zXZ\x00",
    b"\x02\x21\x4c\x18",
    b"{\"version\":1,",
    b"\"volumes\":[",
    b"9999999999999999999999",
];

/// xorshift64*: deterministic, so a failure reproduces on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            3 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            4 => {
                // Splice in a piece of another seed.
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(64)).min(other.len());
                v.splice(at..at, other[from..to].iter().copied());
            }
            5 => {
                // Repeat a piece: long lines, deep nesting, big numbers.
                let end = (at + 1 + rng.below(8)).min(v.len());
                let piece = v[at..end].to_vec();
                for _ in 0..rng.below(64) {
                    v.splice(at..at, piece.iter().copied());
                }
            }
            _ => {
                let b = rng.next() as u8;
                v.insert(at, b);
            }
        }
    }
    v.truncate(8192);
    v
}

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Runs `body` on `input`; on a panic, saves the input and fails loudly.
fn run_one(name: &str, body: fn(&[u8]), input: &[u8], what: &str) {
    if std::panic::catch_unwind(|| body(input)).is_err() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-smoke-failures");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{name}-{what}"));
        std::fs::write(&file, input).unwrap();
        let hex: String = input.iter().take(256).map(|b| format!("{b:02x}")).collect();
        panic!(
            "fuzz target {name} failed on {what} ({} bytes, saved to {}): {hex}…",
            input.len(),
            file.display()
        );
    }
}

fn smoke(name: &str) {
    let body = targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap();
    let mut seeds = corpus(name);
    assert!(!seeds.is_empty(), "fuzz/corpus/{name} is empty");
    for (i, s) in seeds.iter().enumerate() {
        run_one(name, body, s, &format!("corpus-{i}"));
    }
    seeds.push(Vec::new());
    // One fixed seed per target name, so targets explore differently.
    let mut rng = Rng(name.bytes().fold(0x9E37_79B9_7F4A_7C15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    }));
    for i in 0..MUTATIONS {
        let input = mutate(&mut rng, &seeds);
        run_one(name, body, &input, &format!("mutation-{i}"));
    }
}

#[test]
fn every_target_has_a_smoke_test_and_a_corpus() {
    let listed: Vec<&str> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(fuzz_dir)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(files, sorted, "fuzz_targets/ and TARGETS disagree");
    let this = include_str!("fuzz_smoke.rs");
    for n in listed {
        assert!(
            this.contains(&format!("fn {n}() {{")),
            "no smoke test for {n}"
        );
    }
}

/// The harness must report a body that fails, or the smoke proves nothing.
#[test]
fn a_failing_body_fails_the_smoke() {
    fn picky(data: &[u8]) {
        assert_ne!(data, b"boom");
    }
    run_one("selftest", picky, b"fine", "ok");
    let r = std::panic::catch_unwind(|| run_one("selftest", picky, b"boom", "boom"));
    assert!(r.is_err());
}

#[test]
fn protocol() {
    smoke("protocol");
}

#[test]
fn secret() {
    smoke("secret");
}

#[test]
fn terminal() {
    smoke("terminal");
}

#[test]
fn authkeys() {
    smoke("authkeys");
}

#[test]
fn config() {
    smoke("config");
}

#[test]
fn inventory() {
    smoke("inventory");
}

#[test]
fn ssh_config() {
    smoke("ssh_config");
}

#[test]
fn known_hosts() {
    smoke("known_hosts");
}

#[test]
fn rescue() {
    smoke("rescue");
}

#[test]
fn cpio() {
    smoke("cpio");
}

#[test]
fn unlock() {
    smoke("unlock");
}

#[test]
fn image() {
    smoke("image");
}
