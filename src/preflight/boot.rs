//! Which initramfs will boot, and with which kernel command line: the
//! default entry of GRUB or of systemd-boot/BLS, or every installed
//! kernel's. Every path is read under a root prefix, so tests run on
//! fixture trees.

use std::path::{Path, PathBuf};

/// One boot entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// The kernel release (`6.1.0-18-amd64`), when known.
    pub kernel: Option<String>,
    /// The initramfs image, as a path on the running system.
    pub image: PathBuf,
    /// The kernel command line the entry boots with.
    pub cmdline: String,
    /// Whether the boot loader boots this entry by default.
    pub default: bool,
    /// Where it was found: `grub`, `bls`, `installed-kernels`, …
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{0}")]
    NotFound(String),
}

/// Every boot entry found under `root`, the default one first.
// Interface only; the lookup lands with the `pfimg` work.
pub fn entries(root: &Path) -> Result<Vec<BootEntry>, BootError> {
    Err(BootError::NotFound(format!(
        "boot entry lookup under {} is not built yet",
        root.display()
    )))
}
