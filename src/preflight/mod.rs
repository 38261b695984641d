//! Preflight: will remote unlock work after the next reboot?
//!
//! [`image`] reads the initramfs that will boot (every compression the
//! generators use, with an early microcode cpio in front) into memory;
//! [`report`] is the checklist both the server-side `portcullis-preflight`
//! and the admin's `portcullis preflight` print, as text or JSON.

pub mod boot;
pub mod checks;
mod cpio;
mod decompress;
pub mod image;
pub mod report;
pub mod system;
pub mod text;
