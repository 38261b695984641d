//! An initramfs image read into memory: the files the kernel would unpack,
//! by path. Built from an image file (see [`Image::read`]) or from an
//! unpacked tree (a generator's staging directory, see [`Image::from_dir`]).
//!
//! Paths are relative, without a leading `/` or `./` (`usr/sbin/portcullisd`).

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::{cpio, decompress};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Symlink hops followed by [`Image::file`] before giving up (a loop).
const MAX_HOPS: usize = 16;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// `data` holds the link target.
    Symlink,
    /// Device nodes, fifos, sockets: present, no content.
    Other,
}

/// One entry of the image.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits (`0o755`), without the file-type bits.
    pub mode: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} {:o} ({} bytes)",
            self.kind,
            self.mode,
            self.data.len()
        )
    }
}

/// Why an image could not be read. One line, naming what to do.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Format(String),
}

/// The files of one initramfs image. Later archives of a concatenated
/// image override earlier ones, as the kernel's unpacker does.
#[derive(Debug, Default, Clone)]
pub struct Image {
    entries: BTreeMap<String, Entry>,
}

impl Image {
    /// An image from parts (tests, and the readers).
    pub fn insert(&mut self, path: &str, entry: Entry) {
        let key = normalize(path);
        if !key.is_empty() {
            self.entries.insert(key, entry);
        }
    }

    /// The entry at `path`, without following symlinks.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(&normalize(path))
    }

    /// The entry at `path`, to change (hard links share data).
    pub(super) fn get_mut(&mut self, path: &str) -> Option<&mut Entry> {
        self.entries.get_mut(&normalize(path))
    }

    /// The entry at `path`, following symlinks in every component
    /// (`lib` → `usr/lib` on merged-/usr images).
    pub fn resolve(&self, path: &str) -> Option<&Entry> {
        let mut path = normalize(path);
        for _ in 0..MAX_HOPS {
            match self.resolve_dirs(&path) {
                Some(p) => path = p,
                None => return None,
            }
            let entry = self.entries.get(&path)?;
            if entry.kind != Kind::Symlink {
                return Some(entry);
            }
            path = join_link(&path, &String::from_utf8_lossy(&entry.data));
        }
        None
    }

    /// The content of the regular file at `path`, following symlinks.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        self.resolve(path)
            .filter(|e| e.kind == Kind::File)
            .map(|e| e.data.as_slice())
    }

    /// Every path, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Every entry, sorted by path.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Rewrites the directory components of `path` through symlinks.
    fn resolve_dirs(&self, path: &str) -> Option<String> {
        let mut out = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        let last = parts.len().saturating_sub(1);
        for (i, part) in parts.iter().enumerate() {
            let candidate = if out.is_empty() {
                (*part).to_string()
            } else {
                format!("{out}/{part}")
            };
            out = candidate;
            if i == last {
                break;
            }
            let mut hops = 0;
            while let Some(e) = self.entries.get(&out) {
                if e.kind != Kind::Symlink {
                    break;
                }
                hops += 1;
                if hops > MAX_HOPS {
                    return None;
                }
                out = join_link(&out, &String::from_utf8_lossy(&e.data));
            }
        }
        Some(out)
    }

    /// Reads an image file: see [`Image::read`]. A format error names
    /// the file.
    pub fn open(path: &Path) -> Result<Image, ImageError> {
        let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Image::read(&bytes).map_err(|e| match e {
            ImageError::Format(msg) => ImageError::Format(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses an image as the kernel unpacks it: a sequence of parts, each
    /// an uncompressed newc cpio archive (an early microcode archive) or a
    /// stream compressed with gzip, zstd, xz or legacy lz4 holding one or
    /// more archives; NUL padding between parts is skipped. Later entries
    /// replace earlier ones. Errors are one line naming the byte offset.
    pub fn read(bytes: &[u8]) -> Result<Image, ImageError> {
        Image::read_limited(bytes, cpio::MAX_UNPACKED)
    }

    /// [`Image::read`], refusing images that unpack to more than `limit`
    /// bytes.
    pub(crate) fn read_limited(bytes: &[u8], limit: u64) -> Result<Image, ImageError> {
        let mut out = cpio::Builder::with_limit(limit);
        let place = cpio::Place::image();
        let mut at = 0usize;
        while let Some(rest) = bytes.get(at..) {
            match rest.first() {
                None => break,
                Some(0) => at += 1,
                // The kernel starts an archive only on a 4-byte boundary.
                Some(b'0') if at.is_multiple_of(4) => {
                    match cpio::entry(rest, at as u64, &place, &mut out)? {
                        cpio::Step::Done(n) => {
                            out.count(n, &place, at as u64)?;
                            at += n;
                        }
                        cpio::Step::More => {
                            return Err(place.error(
                                "truncated cpio entry (the image ends inside it)",
                                at as u64,
                            ))
                        }
                    }
                }
                Some(b'0') if rest.starts_with(b"07070") => {
                    return Err(place.error(
                        "cpio archive not on a 4-byte boundary (the kernel unpacks none there)",
                        at as u64,
                    ))
                }
                // A part always takes its magic; max(1) only guards the loop.
                Some(_) => at += decompress::part(rest, at, &mut out)?.max(1),
            }
        }
        out.finish(&place, at as u64)
    }

    /// Reads an unpacked tree (a generator's staging directory).
    pub fn from_dir(dir: &Path) -> Result<Image, ImageError> {
        let mut image = Image::default();
        walk(dir, dir, &mut image)?;
        Ok(image)
    }
}

fn walk(root: &Path, dir: &Path, image: &mut Image) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Io { path, source }
    };
    for item in std::fs::read_dir(dir).map_err(io(dir))? {
        let item = item.map_err(io(dir))?;
        let path = item.path();
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        let (kind, data) = if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io(&path))?;
            (
                Kind::Symlink,
                target.to_string_lossy().into_owned().into_bytes(),
            )
        } else if ft.is_dir() {
            (Kind::Dir, Vec::new())
        } else if ft.is_file() {
            (Kind::File, std::fs::read(&path).map_err(io(&path))?)
        } else {
            (Kind::Other, Vec::new())
        };
        image.insert(&rel, Entry { kind, mode, data });
        if kind == Kind::Dir {
            walk(root, &path, image)?;
        }
    }
    Ok(())
}

/// `/./usr//lib/` → `usr/lib`; `..` climbs, never above the root.
pub(super) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The path a symlink at `link` pointing to `target` names.
fn join_link(link: &str, target: &str) -> String {
    if target.starts_with('/') {
        return normalize(target);
    }
    let parent = link.rsplit_once('/').map_or("", |(p, _)| p);
    normalize(&format!("{parent}/{target}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(data: &[u8]) -> Entry {
        Entry {
            kind: Kind::File,
            mode: 0o644,
            data: data.to_vec(),
        }
    }

    fn link(target: &str) -> Entry {
        Entry {
            kind: Kind::Symlink,
            mode: 0o777,
            data: target.as_bytes().to_vec(),
        }
    }

    #[test]
    fn follows_merged_usr_and_relative_links() {
        let mut img = Image::default();
        img.insert("lib", link("usr/lib"));
        img.insert("usr/lib/modules/6.1/x.ko", file(b"ko"));
        img.insert("./usr/bin/a", link("../sbin/b"));
        img.insert("/usr/sbin/b", file(b"b"));
        assert_eq!(img.file("/lib/modules/6.1/x.ko"), Some(&b"ko"[..]));
        assert_eq!(img.file("usr/bin/a"), Some(&b"b"[..]));
        assert_eq!(img.file("usr/lib"), None, "a directory is not a file");
    }

    #[test]
    fn a_link_loop_is_not_found() {
        let mut img = Image::default();
        img.insert("a", link("b"));
        img.insert("b", link("a"));
        assert!(img.resolve("a").is_none());
        assert!(img.file("a/x").is_none());
    }

    #[test]
    fn reads_a_staging_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/sbin")).unwrap();
        std::fs::write(dir.path().join("usr/sbin/portcullisd"), b"ELF").unwrap();
        std::os::unix::fs::symlink("usr/sbin", dir.path().join("sbin")).unwrap();
        let img = Image::from_dir(dir.path()).unwrap();
        assert_eq!(img.file("sbin/portcullisd"), Some(&b"ELF"[..]));
        assert_eq!(img.get("usr").map(|e| e.kind), Some(Kind::Dir));
    }
}
