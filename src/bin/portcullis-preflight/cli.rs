//! The command line of `portcullis-preflight`, a leaf (clap only): the
//! binary parses with it and `examples/gen-docs.rs` renders
//! `portcullis-preflight(8)` from it.

use clap::{ArgGroup, Parser};
use std::path::PathBuf;

/// Check that remote unlock will work after the next reboot
///
/// Checks the initramfs that will boot (the default boot entry's, unless told otherwise) against this
/// machine: listener, config, keys, volumes, dm-crypt, unlock backend,
/// conflicting hooks, network, NIC driver, static ip=, argon2 memory.
///
/// Exit status: 0 every check passed, 14 remote unlock will fail after the
/// next reboot, 15 nothing fails but some checks warn, 1 error (an image
/// that cannot be read, a bad option). See docs/preflight.md.
///
/// From the admin's workstation, `portcullis preflight HOST` runs this over
/// SSH (`man 1 portcullis-preflight`; this page is `man 8
/// portcullis-preflight`).
#[derive(Debug, Parser)]
#[command(
    name = "portcullis-preflight",
    version,
    max_term_width = 80,
    group(ArgGroup::new("which").args(["image", "all_kernels", "dir"]))
)]
pub struct PreflightCli {
    /// Check this initramfs image file instead of the default boot entry's.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Check the image of every installed kernel (every boot entry).
    #[arg(long)]
    pub all_kernels: bool,
    /// Check an unpacked image tree (a generator's staging directory; the
    /// build-time hooks use this).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The kernel release the image is for (default: its boot entry's, or
    /// the one lib/modules directory in the image).
    #[arg(long, value_name = "REL", conflicts_with = "all_kernels")]
    pub kernel: Option<String>,
    /// The kernel command line to check against (default: the boot
    /// entry's, else the running kernel's).
    #[arg(long, value_name = "STRING", allow_hyphen_values = true)]
    pub cmdline: Option<String>,
    /// Run only these checks: a comma list of check ids or groups
    /// (listener, config, keys, luks, conflicts, network).
    #[arg(long, value_name = "IDS")]
    pub only: Option<String>,
    /// Read every fact of the machine under this directory (tests).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Print the report as JSON (the format `portcullis preflight` reads).
    #[arg(long)]
    pub json: bool,
}
