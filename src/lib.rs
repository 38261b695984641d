//! Portcullis: unlock LUKS-encrypted servers over SSH from their initramfs.
//!
//! The library holds everything; the binaries `portcullisd` (the initramfs
//! listener) and `portcullis` (the admin's CLI) only parse arguments and call
//! in. See `docs/` for the design and the protocol.

// Unsafe code is allowed only locally, with a `// SAFETY:` comment saying
// why it is sound (a libc call the standard library does not offer).
#![deny(unsafe_code)]

pub mod authkeys;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod error;
pub mod fleet;
pub mod hostkey;
pub mod listener;
pub mod logging;
pub mod preflight;
pub mod protocol;
pub mod relay;
pub mod rescue;
pub mod secret;
pub mod sys;
pub mod text;
pub mod unlock;
