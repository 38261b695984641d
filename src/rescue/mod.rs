//! `portcullis rescue`: driving a clear-text rescue system over plain SSH
//! (its ordinary OpenSSH server, host key pinned like any other) from "the
//! server does not come back" to "the main system runs again": inspect,
//! unlock, mount by the main system's own fstab, check, chroot, kexec with
//! the key handed to the main initramfs in RAM, close.
//!
//! Only standard tools run on the rescue side (cryptsetup, mount, btrfs,
//! e2fsck, kexec, lsblk). Every step's exact command line is printed before
//! it runs; the passphrase only ever travels on a command's standard input.
//! Planning (parsers and command plans) is pure and unit-tested; the SSH
//! execution is the thin [`remote`] seam; [`run`] prints, asks and executes.

pub mod bootentry;
pub mod check;
pub mod cli;
pub mod cpio;
pub mod discover;
pub mod flows;
pub mod fstab;
pub mod handover;
pub mod kexec;
pub mod lsblk;
pub mod luks;
pub mod plan;
pub mod remote;
pub mod report;
pub mod run;
pub mod shell;
pub mod state;
