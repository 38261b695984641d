//! The "newc" cpio reader behind [`super::image::Image::read`]: turns
//! archive entries into image entries the way the kernel's initramfs
//! unpacker does (`init/initramfs.c`): NULs between archives are skipped,
//! an archive needs no trailer, a later entry replaces an earlier one, and
//! hard links share the data of their group. Input is hostile: every size
//! is checked against the caps below and nothing here panics.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::image::{normalize, Entry, Image, ImageError, Kind};
use std::collections::HashMap;

/// Bytes the whole image may unpack to (archive bytes, compressed parts
/// counted after decompression). Real images unpack to under 300 MiB (a
/// full dracut image with firmware ~250 MiB); preflight runs as root on
/// servers with 2-4 GB and holds an entry twice while reading it, so the
/// cap keeps a hostile image to about 1 GiB of memory.
pub const MAX_UNPACKED: u64 = 512 << 20;
/// Entries the whole image may hold (a full Debian image has ~3000).
pub const MAX_ENTRIES: usize = 1_000_000;
/// The kernel's PATH_MAX, which it applies to names and link targets.
pub const MAX_NAME: usize = 4096;

/// The fixed-size part of a newc header: magic and 13 hex fields.
const HEADER: usize = 110;
const TRAILER: &[u8] = b"TRAILER!!!";

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

/// Where bytes come from, for error messages: the image itself, or one
/// compressed part of it.
#[derive(Debug, Clone)]
pub struct Place(String);

impl Place {
    pub fn image() -> Place {
        Place("the image".into())
    }

    /// The part compressed with `compression` that starts at byte `at`.
    pub fn part(compression: &str, at: usize) -> Place {
        Place(format!(
            "the {compression}-compressed part at byte {at} of the image"
        ))
    }

    /// `problem at byte N of WHERE`, as an error.
    pub fn error(&self, problem: &str, at: u64) -> ImageError {
        ImageError::Format(format!("{problem} at byte {at} of {}", self.0))
    }
}

/// Collects entries into an [`Image`], keeping the caps over the whole
/// image (every archive and every compressed part).
pub struct Builder {
    image: Image,
    entries: usize,
    unpacked: u64,
    /// [`MAX_UNPACKED`], lower in tests.
    limit: u64,
    /// Hard-link groups of the current archive, by (dev major, dev minor,
    /// inode); their data is shared out at its end.
    links: HashMap<(u32, u32, u32), Group>,
    /// While groups are open: the serial of the last entry at each path,
    /// so a name replaced after it joined a group is left alone.
    serials: HashMap<String, u64>,
    serial: u64,
}

/// The names of one hard-linked file and the data it ends up with.
#[derive(Default)]
struct Group {
    paths: Vec<(String, u64)>,
    data: Option<Vec<u8>>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::with_limit(MAX_UNPACKED)
    }
}

/// `2 GiB`, `512 MiB`, `2048 bytes`.
fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

impl Builder {
    /// A builder that refuses images unpacking to more than `limit` bytes.
    pub fn with_limit(limit: u64) -> Builder {
        Builder {
            image: Image::default(),
            entries: 0,
            unpacked: 0,
            limit,
            links: HashMap::new(),
            serials: HashMap::new(),
            serial: 0,
        }
    }

    /// The image, once hard links have their data (`at`: the end).
    pub fn finish(mut self, place: &Place, at: u64) -> Result<Image, ImageError> {
        self.share_links(place, at)?;
        Ok(self.image)
    }

    /// Gives every name of each hard-link group the group's data: GNU
    /// cpio writes it once, with the last name; other writers with the
    /// first. Done once per archive, so a group costs one copy per name,
    /// and every copy counts against the limit.
    fn share_links(&mut self, place: &Place, at: u64) -> Result<(), ImageError> {
        let groups = std::mem::take(&mut self.links);
        let serials = std::mem::take(&mut self.serials);
        for group in groups.into_values() {
            let Some(data) = group.data else { continue };
            for (path, serial) in group.paths {
                if serials.get(&path) != Some(&serial) {
                    continue;
                }
                let stale = self.image.get(&path).is_some_and(|e| e.data != data);
                if stale {
                    self.count(data.len(), place, at)?;
                    if let Some(e) = self.image.get_mut(&path) {
                        e.data.clone_from(&data);
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts `n` more unpacked bytes against the limit.
    pub fn count(&mut self, n: usize, place: &Place, at: u64) -> Result<(), ImageError> {
        self.unpacked = self.unpacked.saturating_add(n as u64);
        if self.unpacked > self.limit {
            return Err(place.error(
                &format!(
                    "the image unpacks to more than {} (the most preflight reads)",
                    size(self.limit)
                ),
                at,
            ));
        }
        Ok(())
    }

    fn add(&mut self, header: &Header, name: &str, data: &[u8]) {
        let kind = match header.mode & S_IFMT {
            S_IFREG => Kind::File,
            S_IFDIR => Kind::Dir,
            S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        };
        let entry = Entry {
            kind,
            mode: header.mode & 0o7777,
            data: if kind == Kind::Dir || kind == Kind::Other {
                Vec::new()
            } else {
                data.to_vec()
            },
        };
        let linked = kind == Kind::File && header.nlink >= 2;
        if linked || !self.links.is_empty() {
            self.serial += 1;
            let path = normalize(name);
            self.serials.insert(path.clone(), self.serial);
            if linked {
                let group = self
                    .links
                    .entry((header.dev_major, header.dev_minor, header.ino))
                    .or_default();
                if !data.is_empty() {
                    group.data = Some(data.to_vec());
                }
                group.paths.push((path, self.serial));
            }
        }
        self.image.insert(name, entry);
    }
}

/// The fields of a newc header that matter here.
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    dev_major: u32,
    dev_minor: u32,
    namesize: usize,
}

/// What [`entry`] found at the start of a buffer.
pub enum Step {
    /// The buffer ends inside the entry: more bytes are needed.
    More,
    /// One entry (or a trailer) taking this many bytes, padding included.
    Done(usize),
}

/// Reads one entry at the start of `buf`, whose first byte is byte `at` of
/// `place` (cpio pads to 4 bytes counted from there), into `out`.
pub fn entry(buf: &[u8], at: u64, place: &Place, out: &mut Builder) -> Result<Step, ImageError> {
    // The magic is judged as soon as it is there: a wrong one is a wrong
    // format, not a short archive.
    if let Some(magic) = buf.get(..6) {
        check_magic(magic).map_err(|p| place.error(&p, at))?;
    }
    let Some(raw) = buf.get(..HEADER) else {
        return Ok(Step::More);
    };
    let header = parse_header(raw).map_err(|p| place.error(&p, at))?;
    if header.namesize == 0 || header.namesize > MAX_NAME {
        return Err(place.error(
            &format!(
                "cpio entry name of {} bytes (the kernel takes 1 to {MAX_NAME})",
                header.namesize
            ),
            at,
        ));
    }
    let name_end = HEADER + header.namesize;
    let data_start = pad_to(at, name_end);
    let Some(data_end) = data_start.checked_add(header.size) else {
        return Err(place.error("cpio entry size overflows", at));
    };
    let end = pad_to(at, data_end);
    // Refused before waiting for the bytes, so a hostile size is never
    // buffered.
    if header.size as u64 > out.limit {
        return Err(place.error(
            &format!(
                "cpio entry of {} bytes (more than the {} preflight reads)",
                header.size,
                size(out.limit)
            ),
            at,
        ));
    }
    let (Some(name), Some(data)) = (buf.get(HEADER..name_end), buf.get(data_start..data_end))
    else {
        return Ok(Step::More);
    };
    // The name is NUL-terminated; the kernel reads up to the first NUL.
    let name = name.split(|&b| b == 0).next().unwrap_or_default();
    if name == TRAILER {
        // Inode numbers start over in the next archive.
        out.share_links(place, at)?;
        return Ok(Step::Done(end.min(buf.len())));
    }
    if (header.mode & S_IFMT) == S_IFLNK && header.size > MAX_NAME {
        return Err(place.error(
            &format!(
                "symlink target of {} bytes (the kernel takes at most {MAX_NAME})",
                header.size
            ),
            at,
        ));
    }
    out.entries += 1;
    if out.entries > MAX_ENTRIES {
        return Err(place.error(
            &format!("more than {MAX_ENTRIES} cpio entries (the most preflight reads)"),
            at,
        ));
    }
    out.add(&header, &String::from_utf8_lossy(name), data);
    // The last entry's data padding may be cut off at the end of input.
    Ok(Step::Done(end.min(buf.len())))
}

/// `len` rounded so that `at + len` is a multiple of 4.
fn pad_to(at: u64, len: usize) -> usize {
    let misalign = (at.wrapping_add(len as u64) % 4) as usize;
    if misalign == 0 {
        len
    } else {
        len.saturating_add(4 - misalign)
    }
}

fn check_magic(magic: &[u8]) -> Result<(), String> {
    if magic == b"070701" || magic == b"070702" {
        return Ok(());
    }
    Err(if magic == b"070707" {
        "old-format (odc, 070707) cpio archive; the kernel reads only newc (070701)".into()
    } else {
        let shown = String::from_utf8_lossy(magic).escape_debug().to_string();
        format!("bad cpio magic \"{shown}\" (expected newc 070701)")
    })
}

fn parse_header(raw: &[u8]) -> Result<Header, String> {
    check_magic(raw.get(..6).unwrap_or_default())?;
    let field = |i: usize| -> Result<u32, String> {
        let hex = raw.get(6 + i * 8..14 + i * 8).unwrap_or_default();
        std::str::from_utf8(hex)
            .ok()
            .and_then(|s| u32::from_str_radix(s, 16).ok())
            .filter(|_| hex.iter().all(u8::is_ascii_hexdigit))
            .ok_or_else(|| {
                format!(
                    "cpio header field {} is not hexadecimal (\"{}\")",
                    i + 1,
                    String::from_utf8_lossy(hex).escape_debug()
                )
            })
    };
    Ok(Header {
        ino: field(0)?,
        mode: field(1)?,
        nlink: field(4)?,
        size: field(6)? as usize,
        dev_major: field(7)?,
        dev_minor: field(8)?,
        namesize: field(11)? as usize,
    })
}

/// A cpio reader fed in pieces (by a decompressor, as `io::Write`): the
/// content of one compressed part, which holds one or more archives.
pub struct Stream<'a> {
    out: &'a mut Builder,
    place: Place,
    buf: Vec<u8>,
    /// Bytes of `buf` already read.
    start: usize,
    /// Offset in the part's content of `buf[0]`.
    base: u64,
    /// The first error, kept because `io::Write` cannot carry it.
    error: Option<ImageError>,
}

impl<'a> Stream<'a> {
    pub fn new(out: &'a mut Builder, place: Place) -> Stream<'a> {
        Stream {
            out,
            place,
            buf: Vec::new(),
            start: 0,
            base: 0,
            error: None,
        }
    }

    /// Reads every complete entry buffered so far.
    fn drain(&mut self) -> Result<(), ImageError> {
        loop {
            let rest = self.buf.get(self.start..).unwrap_or_default();
            let nuls = rest.iter().take_while(|&&b| b == 0).count();
            self.start += nuls;
            let at = self.base + self.start as u64;
            let rest = self.buf.get(self.start..).unwrap_or_default();
            match rest.first() {
                None => break,
                Some(b'0') if at.is_multiple_of(4) => {}
                Some(_) => {
                    return Err(self.place.error(
                        "junk between cpio archives (neither an entry nor NUL padding)",
                        at,
                    ))
                }
            }
            match entry(rest, at, &self.place, self.out)? {
                Step::More => break,
                Step::Done(n) => self.start += n,
            }
        }
        // Drop what was read once it is most of the buffer, so the buffer
        // stays near one entry's size and reading stays linear.
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.base += self.start as u64;
            self.start = 0;
        }
        Ok(())
    }

    /// The end of the part: an entry cut off here is an error (the kernel's
    /// "junk at the end of compressed archive").
    pub fn finish(mut self) -> Result<(), ImageError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let rest = self.buf.get(self.start..).unwrap_or_default();
        match rest.iter().position(|&b| b != 0) {
            None => Ok(()),
            Some(i) => Err(self.place.error(
                "truncated cpio entry (the compressed data ends inside it)",
                self.base + (self.start + i) as u64,
            )),
        }
    }

    /// The error that stopped the stream, if the cpio content caused it.
    pub fn take_error(&mut self) -> Option<ImageError> {
        self.error.take()
    }
}

impl std::io::Write for Stream<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.error.is_some() {
            return Err(std::io::Error::other("cpio content is broken"));
        }
        let at = self.base + self.buf.len() as u64;
        let result = self.out.count(data.len(), &self.place, at).and_then(|()| {
            self.buf.extend_from_slice(data);
            self.drain()
        });
        match result {
            Ok(()) => Ok(data.len()),
            Err(e) => {
                self.error = Some(e);
                Err(std::io::Error::other("cpio content is broken"))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
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
    use crate::preflight::image::{Image, ImageError, Kind};
    use crate::rescue::cpio::Archive;

    /// A raw newc header with these fields, then the name, padded.
    fn header(mode: u32, size: u32, namesize: u32, name: &[u8]) -> Vec<u8> {
        let mut h = b"070701".to_vec();
        for f in [1, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, namesize, 0] {
            h.extend(format!("{f:08X}").as_bytes());
        }
        h.extend(name);
        while !h.len().is_multiple_of(4) {
            h.push(0);
        }
        h
    }

    fn error(bytes: &[u8]) -> String {
        match Image::read(bytes) {
            Ok(img) => panic!("read {} entries, expected an error", img.len()),
            Err(ImageError::Format(msg)) => {
                assert!(!msg.contains('\n'), "one line: {msg}");
                msg
            }
            Err(e) => panic!("not a format error: {e}"),
        }
    }

    #[test]
    fn a_later_archive_overrides_an_earlier_one() {
        let mut a = Archive::default();
        a.dir("etc", 0o755);
        a.file("etc/config", 0o644, b"first");
        a.file("etc/keep", 0o644, b"kept");
        let mut bytes = a.finish().to_vec();
        let mut b = Archive::default();
        b.file("etc/config", 0o600, b"second");
        bytes.extend(b.finish().iter());
        let img = Image::read(&bytes).unwrap();
        let config = img.get("etc/config").unwrap();
        assert_eq!(
            (config.data.as_slice(), config.mode),
            (&b"second"[..], 0o600)
        );
        assert_eq!(img.file("etc/keep"), Some(&b"kept"[..]));
        assert_eq!(img.get("etc").unwrap().kind, Kind::Dir);
    }

    #[test]
    fn an_archive_needs_no_trailer_and_nuls_are_skipped() {
        let mut bytes = vec![0u8; 8];
        let name = b"a\0";
        bytes.extend(header(0o100644, 2, 2, name));
        bytes.extend(b"hi\0\0");
        bytes.extend([0u8; 4]);
        let img = Image::read(&bytes).unwrap();
        assert_eq!(img.file("a"), Some(&b"hi"[..]));
        // The last entry's padding may be missing at the end of the image.
        bytes.truncate(bytes.len() - 6);
        assert_eq!(Image::read(&bytes).unwrap().file("a"), Some(&b"hi"[..]));
    }

    #[test]
    fn bad_headers_fail_with_the_offset() {
        let e = error(b"070707000000000000000000000000");
        assert!(e.contains("old-format (odc, 070707)"), "{e}");
        assert!(e.contains("at byte 0 of the image"), "{e}");
        let mut bytes = vec![0u8; 4];
        bytes.extend(b"0707X1");
        bytes.extend([b'0'; 104]);
        let e = error(&bytes);
        assert!(e.contains("bad cpio magic \"0707X1\""), "{e}");
        assert!(e.contains("at byte 4 of the image"), "{e}");
        let mut h = header(0o100644, 0, 2, b"a\0");
        h[14..22].copy_from_slice(b"0000G0A4");
        let e = error(&h);
        assert!(
            e.contains("field 2 is not hexadecimal (\"0000G0A4\")"),
            "{e}"
        );
        // u32::from_str_radix takes a sign; the kernel does not.
        let mut h = header(0o100644, 0, 2, b"a\0");
        h[14..22].copy_from_slice(b"+00081A4");
        assert!(error(&h).contains("not hexadecimal"));
    }

    #[test]
    fn names_and_sizes_are_capped() {
        let e = error(&header(0o100644, 0, 5000, b""));
        assert!(
            e.contains("name of 5000 bytes (the kernel takes 1 to 4096)"),
            "{e}"
        );
        let e = error(&header(0o100644, 0, 0, b""));
        assert!(e.contains("name of 0 bytes"), "{e}");
        let e = error(&header(0o100644, 0xFFFF_FFFF, 2, b"a\0"));
        assert!(
            e.contains("cpio entry of 4294967295 bytes (more than the 512 MiB"),
            "{e}"
        );
        // Over 512 MiB is no real image (they unpack to < 300 MiB).
        let e = error(&header(0o100644, 600 << 20, 2, b"a\0"));
        assert!(
            e.contains("cpio entry of 629145600 bytes (more than the 512 MiB"),
            "{e}"
        );
        let mut link = header(0o120777, 5000, 2, b"l\0");
        link.extend(vec![b'x'; 5000]);
        let e = error(&link);
        assert!(e.contains("symlink target of 5000 bytes"), "{e}");
    }

    #[test]
    fn truncated_and_misaligned_archives_fail() {
        let mut a = Archive::default();
        a.file("etc/config", 0o644, b"some content here");
        let bytes = a.finish().to_vec();
        for cut in [5, 110, 120, 125] {
            let e = error(&bytes[..cut]);
            assert_eq!(
                e, "truncated cpio entry (the image ends inside it) at byte 0 of the image",
                "cut at {cut}"
            );
        }
        let mut shifted = vec![0u8; 2];
        shifted.extend(&bytes);
        let e = error(&shifted);
        assert_eq!(
            e,
            "cpio archive not on a 4-byte boundary (the kernel unpacks none there) at byte 2 \
             of the image"
        );
    }

    #[test]
    fn junk_inside_a_compressed_part_is_named() {
        use std::io::Write;
        let mut a = Archive::default();
        a.file("a", 0o644, b"x");
        let mut content = a.finish().to_vec();
        content.extend(b"junk");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&content).unwrap();
        let mut bytes = vec![0u8; 4];
        bytes.extend(enc.finish().unwrap());
        let e = error(&bytes);
        assert_eq!(
            e,
            format!(
                "junk between cpio archives (neither an entry nor NUL padding) at byte {} \
                 of the gzip-compressed part at byte 4 of the image",
                content.len() - 4
            )
        );
    }

    /// A newc entry of a hard-linked file (nlink 2) with inode `ino`.
    fn linked(ino: u32, name: &[u8], data: &[u8]) -> Vec<u8> {
        let mut h = b"070701".to_vec();
        let fields = [
            ino,
            0o100644,
            0,
            0,
            2,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        for f in fields {
            h.extend(format!("{f:08X}").as_bytes());
        }
        h.extend(name);
        h.push(0);
        while !h.len().is_multiple_of(4) {
            h.push(0);
        }
        h.extend(data);
        while !h.len().is_multiple_of(4) {
            h.push(0);
        }
        h
    }

    #[test]
    fn hard_links_share_data_either_way() {
        // Data with the first name (as some writers do) reaches the later
        // names; the trailer ends the group; a name replaced by a later
        // entry keeps that entry's data.
        let mut bytes = linked(7, b"first", b"data");
        bytes.extend(linked(7, b"second", b""));
        bytes.extend(linked(7, b"third", b""));
        bytes.extend(header(0o100644, 3, 6, b"third\0"));
        bytes.extend(b"own\0");
        bytes.extend(header(0, 0, 11, b"TRAILER!!!\0"));
        bytes.extend(linked(7, b"other", b""));
        let img = Image::read(&bytes).unwrap();
        assert_eq!(img.file("first"), Some(&b"data"[..]));
        assert_eq!(img.file("second"), Some(&b"data"[..]));
        assert_eq!(img.file("third"), Some(&b"own"[..]));
        assert_eq!(img.file("other"), Some(&b""[..]));
    }

    #[test]
    fn hard_link_copies_count_against_the_limit() {
        // One 4 KiB file and 1000 more names for it: 4 MB of copies from
        // about 130 KB of archive. Quadratic copying once made this hang.
        let mut bytes = linked(9, b"f", &[7u8; 4096]);
        for i in 0..1000 {
            bytes.extend(linked(9, format!("n{i}").as_bytes(), b""));
        }
        let limit = 1 << 20;
        let e = Image::read_limited(&bytes, limit).unwrap_err().to_string();
        assert!(e.starts_with("the image unpacks to more than 1 MiB"), "{e}");
        let img = Image::read_limited(&bytes, 8 << 20).unwrap();
        assert_eq!(img.file("n999").map(<[u8]>::len), Some(4096));
    }
}
