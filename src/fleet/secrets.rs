//! Passphrases for a fleet run: each distinct source is read once and the
//! value shared between the hosts that use it, as an `Arc<Passphrase>`, so
//! the bytes exist once, in zeroizing memory, and are wiped when the last
//! host is done with them.
//!
//! "Distinct" means: a prompt once per place it is written (a group, a host,
//! `[defaults]`, the command line), a command once per command text, a file
//! once per path, standard input once. Every source goes through the one
//! human passphrase rule (`Passphrase::from_human`).
//!
//! Reads files and program output: no `unwrap`, `expect`, indexing or
//! `panic` here.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub use crate::client::passphrase::{from_file, read, Source};
use crate::secret::Passphrase;
use anyhow::{anyhow, Context, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// Where a source was written; a prompt is asked once per scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Defaults,
    Group(String),
    Host(String),
    CommandLine,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Defaults => f.write_str("[defaults]"),
            Scope::Group(g) => write!(f, "group.{g}"),
            Scope::Host(h) => write!(f, "host.{h}"),
            Scope::CommandLine => f.write_str("the command line"),
        }
    }
}

/// A source and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassSpec {
    pub source: Source,
    pub scope: Scope,
}

/// What identifies one read: hosts with equal keys share the passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ReadKey {
    Prompt(Scope),
    Other(Source),
}

impl PassSpec {
    fn key(&self) -> ReadKey {
        match &self.source {
            Source::Prompt => ReadKey::Prompt(self.scope.clone()),
            s => ReadKey::Other(s.clone()),
        }
    }
}

/// Reads every distinct source once, in the order hosts first use them, and
/// returns one shared passphrase per host (same order as `hosts`). `hosts`
/// pairs a host name with its source.
pub fn gather(hosts: &[(&str, &PassSpec)]) -> Result<Vec<Arc<Passphrase>>> {
    // Who shares each read, to name them in the prompt.
    let mut users: HashMap<ReadKey, Vec<&str>> = HashMap::new();
    let mut order: Vec<ReadKey> = Vec::new();
    for (name, spec) in hosts {
        let k = spec.key();
        let list = users.entry(k.clone()).or_default();
        if list.is_empty() {
            order.push(k);
        }
        list.push(name);
    }
    let mut read_once: HashMap<ReadKey, Arc<Passphrase>> = HashMap::new();
    for k in order {
        let names = users.get(&k).map(Vec::as_slice).unwrap_or_default();
        let (source, label) = match &k {
            ReadKey::Prompt(scope) => (Source::Prompt, prompt_label(scope, names)),
            ReadKey::Other(s) => (s.clone(), names.join(", ")),
        };
        let p = read(&source, &label).with_context(|| {
            format!(
                "passphrase {} for {}",
                source.describe(),
                short_list(names, 5)
            )
        })?;
        read_once.insert(k, Arc::new(p));
    }
    hosts
        .iter()
        .map(|(_, spec)| {
            read_once
                .get(&spec.key())
                .cloned()
                .ok_or_else(|| anyhow!("internal error: passphrase not read"))
        })
        .collect()
}

fn prompt_label(scope: &Scope, names: &[&str]) -> String {
    match scope {
        Scope::Group(g) => format!("group {g} ({})", short_list(names, 5)),
        _ => short_list(names, 5),
    }
}

/// `a, b, c and 7 more`.
pub fn short_list(names: &[&str], max: usize) -> String {
    if names.len() <= max {
        return names.join(", ");
    }
    let head = names.get(..max).unwrap_or(names).join(", ");
    format!("{head} and {} more", names.len() - max)
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
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn shared_once_per_source() {
        let t = tempfile::tempdir().unwrap();
        let counter = t.path().join("count");
        let cmd = format!("echo x >> {}; echo pw-a", counter.display());
        let a = PassSpec {
            source: Source::Command(cmd),
            scope: Scope::Group("web".into()),
        };
        let file = t.path().join("pw");
        std::fs::write(&file, "pw-b\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let b = PassSpec {
            source: Source::File(file.clone()),
            scope: Scope::Host("db1".into()),
        };
        let got = gather(&[("w1", &a), ("d1", &b), ("w2", &a)]).unwrap();
        assert_eq!(got[0].expose(), b"pw-a");
        assert_eq!(got[1].expose(), b"pw-b");
        assert!(Arc::ptr_eq(&got[0], &got[2]));
        // The command ran once for both hosts.
        assert_eq!(std::fs::read_to_string(&counter).unwrap(), "x\n");
    }

    #[test]
    fn file_rules() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", from_file(&file).unwrap_err());
        assert!(e.contains("chmod 600"), "{e}");
        assert!(!e.contains("s3cret"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(from_file(&file).unwrap().expose(), b"s3cret");
        // The human rule, as on every other path.
        let crlf = t.path().join("crlf");
        let mut tail = b"pw\r\n".to_vec();
        tail.extend(vec![b'x'; 5000]);
        std::fs::write(&crlf, &tail).unwrap();
        std::fs::set_permissions(&crlf, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(from_file(&crlf).unwrap().expose(), b"pw");
        std::fs::write(&crlf, b"p\0w\n").unwrap();
        let e = format!("{:#}", from_file(&crlf).unwrap_err());
        assert!(e.contains("NUL") && e.contains("passphrase file"), "{e}");
        let e = format!("{:#}", from_file(&t.path().join("none")).unwrap_err());
        assert!(e.contains("opening passphrase file"), "{e}");
    }

    #[test]
    fn failures_name_the_source_not_the_secret() {
        let a = PassSpec {
            source: Source::Command("printf 'leaked-%s' secret; exit 1".into()),
            scope: Scope::Defaults,
        };
        let e = format!("{:#}", gather(&[("h1", &a)]).unwrap_err());
        assert!(e.contains("for h1") && e.contains("failed"), "{e}");
        assert!(!e.contains("leaked-secret"), "{e}");
        assert_eq!(short_list(&["a", "b", "c"], 2), "a, b and 1 more");
    }
}
