//! Building remote command lines from values that partly come from the
//! rescue system itself (device names, file names, fstab fields): those are
//! untrusted, so every value is validated for what it claims to be and then
//! single-quoted. Nothing here runs anything.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::text::clip;
use anyhow::{bail, Result};

/// Quotes one word for a POSIX shell. Plain words stay readable in the
/// printed plan; everything else is single-quoted.
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'.' | b'/' | b':' | b'=' | b',' | b'+' | b'@' | b'%' | b'-'
                )
        });
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Joins words into one command line, each quoted.
pub fn join<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// No control characters at all (newlines, escapes): such a value can only
/// be an attempt to confuse the printed plan or the parser of a reply.
fn printable(what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        bail!("empty {what}");
    }
    if s.chars().any(char::is_control) {
        bail!(
            "{what} {} contains control characters; refusing to use it",
            clip(s)
        );
    }
    Ok(())
}

/// An absolute path without `..` components and without control characters.
pub fn path(what: &str, s: &str) -> Result<String> {
    printable(what, s)?;
    if !s.starts_with('/') {
        bail!("{what} {} is not an absolute path", clip(s));
    }
    if s.split('/').any(|c| c == "..") {
        bail!("{what} {} contains '..'", clip(s));
    }
    Ok(s.to_string())
}

/// A device-mapper name as cryptsetup accepts it, kept to a conservative
/// character set (crypttab names, `luks-UUID`).
pub fn mapper_name(s: &str) -> Result<String> {
    let ok = !s.is_empty()
        && s.len() <= 127
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'+' | b'@'));
    if !ok {
        bail!(
            "volume name {} is not a plain device-mapper name (letters, digits, _ . - + @)",
            clip(s)
        );
    }
    // cryptsetup would read `-x` as an option, not as a name.
    if s.starts_with('-') {
        bail!(
            "volume name {} starts with '-', which cryptsetup would take for an option; \
             rename it in the main system's crypttab, or open the volume by hand",
            clip(s)
        );
    }
    Ok(s.to_string())
}

/// A btrfs subvolume name that can go into `subvol=` inside a mount option
/// list: the kernel splits that list at commas and libmount honours quotes
/// and backslashes, so those (and whitespace, control characters, `=`) are
/// refused rather than escaped.
pub fn subvol_name(s: &str) -> Result<String> {
    let bad = s.is_empty()
        || s.chars().any(|c| {
            c.is_control() || c.is_whitespace() || matches!(c, ',' | '"' | '\'' | '\\' | '=')
        });
    if bad {
        bail!(
            "btrfs subvolume name {} cannot be passed safely as a mount option (it is empty or \
             has a comma, quote, backslash, '=' or space); mount it by hand with subvolid=ID",
            clip(s)
        );
    }
    Ok(s.to_string())
}

/// A filesystem type or a mount option list: no spaces, no shell syntax
/// matters after quoting, but control characters and empties are refused.
pub fn word(what: &str, s: &str) -> Result<String> {
    printable(what, s)?;
    if s.chars().any(char::is_whitespace) {
        bail!("{what} {} contains whitespace", clip(s));
    }
    Ok(s.to_string())
}

/// `base` + `rel` where `rel` is an absolute path inside the main system.
pub fn under(base: &str, rel: &str) -> String {
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        base.to_string()
    } else if base.ends_with('/') {
        format!("{base}{rel}")
    } else {
        format!("{base}/{rel}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("/dev/vdb2"), "/dev/vdb2");
        assert_eq!(quote("subvol=@,ro"), "subvol=@,ro");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(
            join(&["mount", "-o", "ro", "/dev/x y"]),
            "mount -o ro '/dev/x y'"
        );
    }

    #[test]
    fn quoted_words_survive_a_real_shell() {
        let nasty = [
            "a'b",
            "$(touch /tmp/x)",
            "`id`",
            "a\"b\\c",
            "*",
            "-n",
            "; rm -rf /",
        ];
        for n in nasty {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(n)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), n);
        }
    }

    #[test]
    fn validation() {
        assert!(path("p", "/boot/vmlinuz-6.1").is_ok());
        assert!(path("p", "boot").is_err());
        assert!(path("p", "/boot/../etc").is_err());
        assert!(path("p", "/boot/x\ny").is_err());
        assert!(mapper_name("luks-0b7c").is_ok());
        assert!(mapper_name("root crypt").is_err());
        assert!(mapper_name("../x").is_err());
        // A crypttab name like `-x` would reach cryptsetup as an option.
        let e = format!("{:#}", mapper_name("--readonly").unwrap_err());
        assert!(e.contains("starts with '-'"), "{e}");
        assert!(mapper_name("-").is_err());
        assert!(mapper_name("a-b").is_ok());
        assert!(word("o", "subvol=@,ro").is_ok());
        assert!(word("o", "a b").is_err());
        assert_eq!(under("/mnt/p", "/"), "/mnt/p");
        assert_eq!(under("/mnt/p", "/boot"), "/mnt/p/boot");
        assert_eq!(under("/mnt/p/", "home"), "/mnt/p/home");
    }
}
