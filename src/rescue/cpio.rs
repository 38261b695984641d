//! A minimal writer for the "newc" cpio format the kernel unpacks as an
//! initramfs. It builds the small extra archive that carries a key file to
//! the main system's initramfs, so the whole archive lives in zeroizing
//! memory and is never written to a local file.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use zeroize::Zeroizing;

pub struct Archive {
    buf: Zeroizing<Vec<u8>>,
    ino: u32,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Archive(<{} bytes, may hold a key>)", self.buf.len())
    }
}

impl Default for Archive {
    fn default() -> Self {
        Archive {
            // Reserved up front so growing never leaves a copy of a key
            // behind in freed memory.
            buf: Zeroizing::new(Vec::with_capacity(64 * 1024)),
            ino: 0,
        }
    }
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;

impl Archive {
    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & S_IFDIR != 0 { 2 } else { 1 },
            0, // mtime: reproducible archives
            data.len() as u32,
            0,
            0,
            0,
            0,
            namesize as u32,
            0,
        ];
        let needed = 110 + namesize + data.len() + 8;
        if self.buf.capacity() - self.buf.len() < needed {
            // Move to a bigger zeroizing buffer ourselves instead of letting
            // Vec reallocate and free the old copy unwiped.
            let mut bigger = Zeroizing::new(Vec::with_capacity((self.buf.len() + needed) * 2));
            bigger.extend_from_slice(&self.buf);
            self.buf = bigger;
        }
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    /// A directory (parents first; the kernel does not create them).
    pub fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name.trim_start_matches('/'), S_IFDIR | (perm & 0o7777), &[]);
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(
            name.trim_start_matches('/'),
            S_IFREG | (perm & 0o7777),
            data,
        );
    }

    /// Appends the trailer and returns the bytes.
    pub fn finish(mut self) -> Zeroizing<Vec<u8>> {
        self.entry("TRAILER!!!", 0, &[]);
        // The kernel reads archives in 512-byte blocks happily either way;
        // padding keeps a following archive aligned.
        while !self.buf.len().is_multiple_of(512) {
            self.buf.push(0);
        }
        std::mem::take(&mut self.buf)
    }
}

/// Reads back a newc archive: (name, mode, data). For tests and for the
/// self-check before an archive is sent.
pub fn list(mut b: &[u8]) -> Option<Vec<(String, u32, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    loop {
        while let Some((0, rest)) = b.split_first() {
            b = rest;
            offset += 1;
        }
        if b.is_empty() {
            return Some(out);
        }
        let hdr = b.get(..110)?;
        if hdr.get(..6) != Some(b"070701".as_slice()) {
            return None;
        }
        let field = |i: usize| {
            let s = std::str::from_utf8(hdr.get(6 + i * 8..14 + i * 8)?).ok()?;
            u32::from_str_radix(s, 16).ok()
        };
        let mode = field(1)?;
        let size = field(6)? as usize;
        let namesize = field(11)? as usize;
        let name_end = 110 + namesize;
        let name = std::str::from_utf8(b.get(110..name_end - 1)?)
            .ok()?
            .to_string();
        let data_start = (offset + name_end).div_ceil(4) * 4 - offset;
        let data = b.get(data_start..data_start + size)?.to_vec();
        let next = (offset + data_start + size).div_ceil(4) * 4 - offset;
        if name == "TRAILER!!!" {
            return Some(out);
        }
        out.push((name, mode, data));
        b = b.get(next..)?;
        offset += next;
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
    use super::*;

    #[test]
    fn round_trip() {
        let mut a = Archive::default();
        a.dir("cryptroot", 0o700);
        a.file("/cryptroot/crypttab", 0o600, b"root UUID=x /k luks\n");
        a.file("cryptroot/k", 0o400, b"abc");
        let bytes = a.finish();
        assert_eq!(bytes.len() % 512, 0);
        let l = list(&bytes).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].0, "cryptroot");
        assert_eq!(l[0].1, 0o040700);
        assert_eq!(l[1].2, b"root UUID=x /k luks\n");
        assert_eq!(
            (l[2].0.as_str(), l[2].1, l[2].2.as_slice()),
            ("cryptroot/k", 0o100400, &b"abc"[..])
        );
    }

    #[test]
    fn host_cpio_reads_it() {
        // GNU cpio must agree with our reading of the format, when present.
        let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-i", "-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            return;
        };
        let mut a = Archive::default();
        a.dir("etc", 0o755);
        a.dir("etc/cryptsetup-keys.d", 0o700);
        a.file("etc/cryptsetup-keys.d/root.key", 0o400, &[7u8; 1000]);
        let bytes = a.finish();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "etc\netc/cryptsetup-keys.d\netc/cryptsetup-keys.d/root.key\n"
        );
    }

    #[test]
    fn debug_does_not_show_content() {
        let mut a = Archive::default();
        a.file("k", 0o400, b"hunter2");
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
