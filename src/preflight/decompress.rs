//! The compressed parts of an initramfs image: which compression a part
//! uses (by its magic bytes, as the kernel's `decompress_method` does), and
//! decompressing it into a [`cpio::Stream`] while counting how many input
//! bytes it took, so the next part can follow. Pure-Rust decoders only
//! (gzip: flate2/miniz_oxide, zstd: ruzstd, xz: lzma-rust2, lz4: lz4_flex), so
//! static musl builds need no C library.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::cpio::{Builder, Place, Stream};
use super::image::ImageError;
use std::io::Write;

/// A compression, by its magic bytes at the start of a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
    /// `lz4 -l`: the legacy format, the only lz4 the kernel unpacks.
    Lz4Legacy,
    /// The lz4 frame format (plain `lz4`), which the kernel cannot unpack.
    Lz4Frame,
    Bzip2,
    Lzma,
    Lzop,
}

impl Compression {
    pub fn sniff(bytes: &[u8]) -> Option<Compression> {
        const MAGICS: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b], Compression::Gzip),
            (&[0x1f, 0x9e], Compression::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0], Compression::Xz),
            (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4Legacy),
            (&[0x04, 0x22, 0x4d, 0x18], Compression::Lz4Frame),
            (b"BZh", Compression::Bzip2),
            (&[0x5d, 0, 0], Compression::Lzma),
            (&[0x89, b'L', b'Z', b'O', 0], Compression::Lzop),
        ];
        MAGICS
            .iter()
            .find(|(magic, _)| bytes.starts_with(magic))
            .map(|&(_, c)| c)
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Lz4Legacy | Compression::Lz4Frame => "lz4",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
            Compression::Lzop => "lzop",
        }
    }
}

/// What to set to rebuild an image with a compression preflight reads.
const RECOMPRESS: &str = "set COMPRESS=zstd in /etc/initramfs-tools/initramfs.conf, \
compress=\"zstd\" in /etc/dracut.conf.d/ or COMPRESSION=\"zstd\" in /etc/mkinitcpio.conf, \
and rebuild the image";

/// Unpacks the compressed part at the start of `input` (byte `at` of the
/// image) into `out`; returns how many bytes of `input` it took.
pub fn part(input: &[u8], at: usize, out: &mut Builder) -> Result<usize, ImageError> {
    let Some(compression) = Compression::sniff(input) else {
        let shown: Vec<String> = input.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(ImageError::Format(format!(
            "unknown data (bytes {}) at byte {at} of the image: neither a cpio archive \
             nor a compression the kernel unpacks; is this an initramfs?",
            shown.join(" ")
        )));
    };
    let place = Place::part(compression.name(), at);
    let mut stream = Stream::new(out, place.clone());
    let result = match compression {
        Compression::Gzip => gzip(input, &mut stream),
        Compression::Zstd => zstd(input, &mut stream),
        Compression::Xz => xz(input, &mut stream),
        Compression::Lz4Legacy => lz4_legacy(input, &mut stream),
        Compression::Lz4Frame => {
            return Err(ImageError::Format(format!(
                "the part at byte {at} of the image uses the lz4 frame format, which the \
                 kernel cannot unpack (it reads only legacy lz4, `lz4 -l`): {RECOMPRESS}"
            )))
        }
        Compression::Bzip2 | Compression::Lzma | Compression::Lzop => {
            return Err(ImageError::Format(format!(
                "the part at byte {at} of the image is compressed with {}, which preflight \
                 cannot read: {RECOMPRESS}",
                compression.name()
            )))
        }
    };
    match result {
        Ok(used) => {
            stream.finish()?;
            Ok(used)
        }
        // A broken archive inside stops the decoder too; name the cause.
        Err(problem) => Err(match stream.take_error() {
            Some(e) => e,
            None => ImageError::Format(format!(
                "truncated or corrupt {} data in the part at byte {at} of the image: {problem}",
                compression.name()
            )),
        }),
    }
}

/// One line, whatever the decoder's message looked like.
fn line(e: impl std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn gzip(input: &[u8], out: &mut Stream) -> Result<usize, String> {
    let mut decoder = flate2::bufread::GzDecoder::new(input);
    std::io::copy(&mut decoder, out).map_err(line)?;
    // The buffered decoder consumes exactly the member, trailer included.
    Ok(input.len() - decoder.into_inner().len())
}

fn zstd(input: &[u8], out: &mut Stream) -> Result<usize, String> {
    let mut rest = input;
    // One frame, as the kernel's unzstd reads; a following frame is a
    // part of its own.
    let mut decoder = ruzstd::decoding::StreamingDecoder::new(&mut rest).map_err(line)?;
    std::io::copy(&mut decoder, out).map_err(line)?;
    // ruzstd computes the content checksum but leaves comparing it to us;
    // without this a flipped byte in stored data reads as a valid image.
    let frame = decoder.into_frame_decoder();
    if let Some(stored) = frame.get_checksum_from_data() {
        if frame.get_calculated_checksum() != Some(stored) {
            return Err("the content checksum does not match the data".into());
        }
    }
    Ok(input.len() - rest.len())
}

/// The largest LZMA2 decoder (dictionary and state) an xz part may ask
/// for, in KiB. `xz -9` needs a 64 MiB dictionary, the most any xz preset
/// asks for; a larger one is a crafted image, not an initramfs.
const XZ_MEM_LIMIT_KB: u32 = 65 << 10;

fn xz(input: &[u8], out: &mut Stream) -> Result<usize, String> {
    let mut rest = input;
    // A streaming decoder: output reaches the cpio reader (and its size
    // cap) as it is decoded, never as one whole block in memory. One
    // stream, as the kernel's unxz reads; it checks the block checksums.
    let mut decoder = lzma_rust2::XzReader::new_mem_limit(&mut rest, false, XZ_MEM_LIMIT_KB);
    std::io::copy(&mut decoder, out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::OutOfMemory {
            "its LZMA2 dictionary is larger than the 64 MiB any xz preset uses".to_string()
        } else {
            line(e)
        }
    })?;
    drop(decoder);
    Ok(input.len() - rest.len())
}

/// Legacy lz4 (`lz4 -l`): the magic, then blocks of a little-endian u32
/// size and an lz4 block of at most 8 MiB of output. There is no end
/// mark: a block shorter than 8 MiB is the last (the kernel reads to the
/// end of the image; `lz4 -l` writes full blocks before the last).
fn lz4_legacy(input: &[u8], out: &mut Stream) -> Result<usize, String> {
    const MAGIC: u32 = 0x184C_2102;
    const BLOCK: usize = 8 << 20;
    // LZ4_compressBound(8 MiB): the largest a compressed block can be.
    const BOUND: usize = BLOCK + BLOCK / 255 + 16;
    let mut pos = 4;
    // Grown to what a block can give (an lz4 byte yields at most 255),
    // so a run of tiny parts does not allocate 8 MiB each.
    let mut block: Vec<u8> = Vec::new();
    while let Some(size) = input
        .get(pos..pos + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
    {
        let size = u32::from_le_bytes(size);
        if size == MAGIC {
            // Concatenated legacy streams: carry on.
            pos += 4;
            continue;
        }
        let size = size as usize;
        if size == 0 || size > BOUND {
            // Padding or the next part.
            break;
        }
        let data = input
            .get(pos + 4..pos + 4 + size)
            .ok_or_else(|| format!("block at byte {pos} of the part is cut off"))?;
        let room = BLOCK.min(size.saturating_mul(256).saturating_add(64));
        if block.len() < room {
            block.resize(room, 0);
        }
        let n = lz4_flex::block::decompress_into(data, &mut block)
            .map_err(|e| format!("block at byte {pos} of the part: {}", line(e)))?;
        pos += 4 + size;
        out.write_all(block.get(..n).unwrap_or_default())
            .map_err(line)?;
        if n < BLOCK {
            break;
        }
    }
    Ok(pos)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::Compression;
    use crate::preflight::image::{Image, ImageError, Kind};

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/preflight/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
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

    /// What every image-*.img fixture holds: the early microcode archive
    /// and the main one (tests/fixtures/preflight/make.sh).
    fn check_fixture_tree(img: &Image) {
        assert_eq!(
            img.file("kernel/x86/microcode/GenuineIntel.bin"),
            Some(&b"microcode blob\n"[..])
        );
        let listener = img.get("usr/bin/portcullisd").unwrap();
        assert_eq!((listener.kind, listener.mode), (Kind::File, 0o755));
        assert_eq!(
            img.file("bin/portcullisd"),
            Some(&b"#!/bin/sh\necho listener\n"[..])
        );
        assert_eq!(
            img.file("lib/modules/6.1.0-18-amd64/kernel/drivers/net/virtio_net.ko"),
            Some(&b"virtio_net module\n"[..])
        );
        let config = img.get("etc/portcullis/config.toml").unwrap();
        assert_eq!(config.mode, 0o600);
        assert_eq!(img.get("bin").unwrap().kind, Kind::Symlink);
        assert_eq!(img.get("bin").unwrap().data, b"usr/bin");
        assert_eq!(img.get("usr/lib/modules").unwrap().kind, Kind::Dir);
        // Hard links: GNU cpio stores the data with the last name only.
        assert_eq!(
            img.file("usr/bin/busybox"),
            Some(&b"shared by two names\n"[..])
        );
        assert_eq!(img.file("usr/bin/sh"), Some(&b"shared by two names\n"[..]));
        // An absolute link, followed inside the image.
        assert_eq!(img.file("bin/ash"), Some(&b"shared by two names\n"[..]));
        assert_eq!(img.file("conf/empty"), Some(&b""[..]));
        assert!(img.get("TRAILER!!!").is_none());
        assert!(img.get(".").is_none());
        assert_eq!(img.len(), 24, "{:?}", img.paths().collect::<Vec<_>>());
    }

    #[test]
    fn reads_every_compression_after_an_early_cpio() {
        for c in ["gz", "zst", "xz", "lz4"] {
            let img = Image::read(&fixture(&format!("image-{c}.img")))
                .unwrap_or_else(|e| panic!("{c}: {e}"));
            check_fixture_tree(&img);
        }
    }

    #[test]
    fn reads_a_plain_cpio_and_concatenations() {
        let mut bytes = fixture("early.cpio");
        bytes.extend(fixture("main.cpio"));
        check_fixture_tree(&Image::read(&bytes).unwrap());
        // Two compressed parts back to back, with NUL padding between, and
        // an uncompressed archive after a compressed one.
        let mut bytes = fixture("image-zst.img");
        bytes.extend([0u8; 7]);
        bytes.extend(fixture("image-gz.img").get(1024..).unwrap());
        bytes.extend([0u8; 1]);
        bytes.extend(fixture("early.cpio"));
        check_fixture_tree(&Image::read(&bytes).unwrap());
    }

    #[test]
    fn lz4_legacy_spans_blocks() {
        let img = Image::read(&fixture("big-lz4.img")).unwrap();
        let big = img.file("lib/firmware/big.bin").unwrap();
        assert_eq!(big.len(), 9 << 20);
        assert!(big.iter().all(|&b| b == 0));
        assert_eq!(
            img.file("lib/firmware/small.bin"),
            Some(&b"after the big one\n"[..])
        );
    }

    #[test]
    fn refused_compressions_name_themselves_and_the_fix() {
        let e = error(&fixture("main-lzop.img"));
        assert!(
            e.contains("compressed with lzop, which preflight cannot read"),
            "{e}"
        );
        assert!(e.contains("COMPRESS=zstd"), "{e}");
        let e = error(&fixture("main-bzip2.img"));
        assert!(e.contains("compressed with bzip2"), "{e}");
        let e = error(&fixture("main-lz4frame.img"));
        assert!(
            e.contains("lz4 frame format, which the kernel cannot unpack"),
            "{e}"
        );
        let mut lzma = fixture("early.cpio");
        lzma.extend([0x5d, 0, 0, 0x80, 0]);
        let e = error(&lzma);
        assert!(
            e.contains("at byte 1024 of the image is compressed with lzma"),
            "{e}"
        );
    }

    #[test]
    fn unknown_data_names_its_offset() {
        let mut bytes = fixture("early.cpio");
        bytes.extend(b"\x7fELF garbage");
        let e = error(&bytes);
        assert!(
            e.contains("unknown data (bytes 7f 45 4c 46) at byte 1024"),
            "{e}"
        );
        assert!(e.contains("is this an initramfs?"), "{e}");
    }

    #[test]
    fn truncated_streams_fail_clearly() {
        for c in ["gz", "zst", "xz", "lz4"] {
            let full = fixture(&format!("image-{c}.img"));
            // Cut inside the compressed data, and just before its end.
            for cut in [1024 + 40, full.len() - 3] {
                let e = error(&full[..cut]);
                assert!(
                    e.contains("data in the part at byte 1024 of the image")
                        || e.contains("compressed part at byte 1024"),
                    "{c} cut at {cut}: {e}"
                );
            }
        }
    }

    #[test]
    fn corrupt_streams_fail_clearly() {
        for c in ["gz", "zst", "xz", "lz4"] {
            let mut bytes = fixture(&format!("image-{c}.img"));
            // Flip bits in the middle of the compressed data.
            let mid = 1024 + (bytes.len() - 1024) / 2;
            for b in &mut bytes[mid..mid + 8] {
                *b ^= 0x5a;
            }
            // Some flips still decode (lz4 has no checksum); then the cpio
            // inside must be what breaks, or the data differs. No panic.
            if let Err(e) = Image::read(&bytes) {
                let e = e.to_string();
                assert!(e.contains("byte"), "{c}: {e}");
                assert!(!e.contains('\n'), "{c}: {e}");
            }
        }
    }

    #[test]
    fn the_unpacked_size_is_capped_in_every_compression() {
        // A declared size is refused before its data is waited for.
        let big = fixture("big-lz4.img");
        let e = Image::read_limited(&big, 8 << 20).unwrap_err().to_string();
        assert_eq!(
            e,
            "cpio entry of 9437184 bytes (more than the 8 MiB preflight reads) at byte 240 \
             of the lz4-compressed part at byte 0 of the image"
        );
        assert!(Image::read_limited(&big, 10 << 20).is_ok());
        // What the decoders produce counts, over every part of the image.
        for c in ["gz", "zst", "xz", "lz4"] {
            let bytes = fixture(&format!("image-{c}.img"));
            let e = Image::read_limited(&bytes, 2048).unwrap_err().to_string();
            assert!(
                e.starts_with(
                    "the image unpacks to more than 2048 bytes (the most preflight reads)"
                ),
                "{c}: {e}"
            );
            assert!(
                e.ends_with(&format!(
                    "of the {}-compressed part at byte 1024 of the image",
                    Compression::sniff(&bytes[1024..]).unwrap().name()
                )),
                "{c}: {e}"
            );
            assert!(Image::read_limited(&bytes, 4096).is_ok(), "{c}");
        }
        let plain = fixture("main.cpio");
        let e = Image::read_limited(&plain, 2000).unwrap_err().to_string();
        assert!(e.ends_with("of the image"), "{e}");
        assert!(
            e.starts_with("the image unpacks to more than 2000 bytes"),
            "{e}"
        );
    }

    #[test]
    fn an_xz_dictionary_beyond_any_preset_is_refused_before_allocation() {
        // 128 MiB: lzma-rs allocated whatever the header asked for.
        let e = error(&fixture("main-xzdict.img"));
        assert_eq!(
            e,
            "truncated or corrupt xz data in the part at byte 0 of the image: its LZMA2 \
             dictionary is larger than the 64 MiB any xz preset uses"
        );
    }

    #[test]
    fn xz_output_reaches_the_cap_while_it_is_decoded() {
        // One block of 64 MiB of zeros (xz -0, as a bomb is built), cut
        // in half: a decoder that holds the block until its end (lzma-rs)
        // meets the cut before any output and reports it; a streaming one
        // hands on output as it goes and stops at the cap first.
        let xz = xz_zeros(64 << 20);
        let half = &xz[..xz.len() / 2];
        let e = Image::read_limited(half, 1 << 20).unwrap_err().to_string();
        assert!(e.starts_with("the image unpacks to more than 1 MiB"), "{e}");
    }

    /// `n` zero bytes as one xz block (written by the `xz` tool).
    fn xz_zeros(n: usize) -> Vec<u8> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new("xz")
            .args(["-0", "--check=crc32", "-c"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("xz (apt-get install xz-utils)");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&vec![0u8; n]).unwrap());
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out.stdout
    }

    #[test]
    fn a_zstd_checksum_mismatch_is_an_error() {
        // One flipped byte of stored data: it decodes, only the content
        // checksum tells (`zstd -t` refuses it).
        let e = error(&fixture("main-zstbad.img"));
        assert_eq!(
            e,
            "truncated or corrupt zstd data in the part at byte 0 of the image: the content \
             checksum does not match the data"
        );
    }

    #[test]
    fn a_cpio_cut_inside_a_compressed_part_is_named() {
        // A valid gzip stream whose content ends inside a cpio entry.
        use std::io::Write;
        let main = fixture("main.cpio");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&main[..300]).unwrap();
        let gz = enc.finish().unwrap();
        let e = error(&gz);
        assert!(
            e.contains("truncated cpio entry (the compressed data ends inside it) at byte 240 of the gzip-compressed part at byte 0 of the image"),
            "{e}"
        );
    }

    /// A real image, when `PORTCULLIS_PREFLIGHT_IMAGE` names one (for example
    /// a distro VM test's `initrd.img`): it must read, and the figures are
    /// printed (`cargo test --lib real_image -- --nocapture`).
    #[test]
    fn real_image() {
        let Some(path) = std::env::var_os("PORTCULLIS_PREFLIGHT_IMAGE") else {
            return;
        };
        let start = std::time::Instant::now();
        let img = Image::open(std::path::Path::new(&path)).unwrap_or_else(|e| panic!("{e}"));
        let bytes: usize = img.entries().map(|(_, e)| e.data.len()).sum();
        println!(
            "{}: {} entries, {bytes} bytes of content, read in {:?}",
            std::path::Path::new(&path).display(),
            img.len(),
            start.elapsed()
        );
        assert!(!img.is_empty());
    }
}
