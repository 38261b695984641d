//! `portcullis rescue …` argument definitions: a leaf like its parent
//! module. The connection options are the client's one [`ConnArgs`] set
//! (with `--json` printing one object on stdout, plans on stderr); the
//! binary turns these into `rescue::cli::Request`.

use super::{ConnArgs, PassArgs};
use crate::protocol::exit;
use clap::{Args, Subcommand};

/// Drive a clear-text rescue system over SSH: unlock, mount, check, chroot,
/// kexec into the main system (see docs/rescue.md).
#[derive(Debug, Args)]
#[command(after_help = exit::help(&[
    exit::UNLOCKED, exit::ERROR, exit::WRONG_PASSPHRASE, exit::HOST_KEY_UNKNOWN,
    exit::HOST_KEY_CHANGED, exit::AUTH_REFUSED, exit::UNREACHABLE, exit::UNLOCK_FAILED,
    exit::PARTIAL, exit::NEEDS_REPAIR, exit::REPLY_LOST,
]))]
pub struct RescueArgs {
    #[command(subcommand)]
    pub command: RescueCommand,
}

#[derive(Debug, Subcommand)]
pub enum RescueCommand {
    /// Block devices, LUKS headers (KDF memory vs RAM), filesystems, btrfs
    /// subvolumes, kernels, missing tools. Changes nothing.
    Inspect {
        #[command(flatten)]
        common: Common,
    },
    /// Open the LUKS volumes (passphrase on cryptsetup's stdin), named as in
    /// the main system's crypttab.
    Unlock {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        pass: PassArgs,
        /// Only this LUKS device (repeatable; path, UUID=… or LABEL=…).
        #[arg(long = "device", value_name = "DEV")]
        devices: Vec<String>,
    },
    /// Mount the main system at --target following its own fstab,
    /// read-only unless --rw.
    Mount {
        #[command(flatten)]
        common: Common,
        /// Mount read-write (needed to change files from a chroot).
        #[arg(long)]
        rw: bool,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Check the main system's filesystems read-only; --repair fixes them
    /// (unmounted only, asks first).
    Check {
        #[command(flatten)]
        common: Common,
        /// Repair instead of only checking.
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Run a command inside the mounted main system, with /dev, /proc, /sys
    /// and /run bound (asks first).
    Chroot {
        #[command(flatten)]
        common: Common,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Boot the main system's kernel without a reboot, handing the key to
    /// its initramfs in RAM so it does not ask again (asks first).
    Kexec(KexecArgs),
    /// Unmount everything under --target and close the volumes unlock
    /// opened, in order.
    Close {
        #[command(flatten)]
        common: Common,
        /// Unmount only; leave the volumes open (for check --repair).
        #[arg(long)]
        keep_open: bool,
    },
}

#[derive(Debug, Args)]
pub struct KexecArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub pass: PassArgs,
    /// Boot entry number as `inspect` lists them [default: the first].
    #[arg(long, value_name = "N")]
    pub entry: Option<usize>,
    /// Kernel path inside the main system, instead of a boot entry.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<String>,
    /// Initrd path inside the main system (with --kernel, or to override).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<String>,
    /// Kernel command line instead of the entry's.
    #[arg(long, value_name = "ARGS")]
    pub cmdline: Option<String>,
    /// Extra kernel arguments appended to the command line.
    #[arg(long, value_name = "ARGS")]
    pub append: Option<String>,
    /// How the main initramfs takes a key file [default: detected].
    #[arg(long, value_enum, value_name = "FLAVOUR")]
    pub initrd_flavour: Option<InitrdFlavour>,
    /// Do not hand the key over: the main system will ask again.
    #[arg(long)]
    pub no_handover: bool,
    /// kexec_file_load (file) or kexec_load (classic).
    #[arg(long, value_enum, default_value = "auto")]
    pub load_method: LoadMethod,
    /// Load the kernel but do not boot it.
    #[arg(long)]
    pub load_only: bool,
}

#[derive(Debug, Args)]
pub struct RootArgs {
    /// The main system's root device, when several candidates exist.
    #[arg(long, value_name = "DEV")]
    pub root_device: Option<String>,
    /// Its btrfs subvolume (e.g. @).
    #[arg(long, value_name = "NAME")]
    pub subvol: Option<String>,
}

#[derive(Debug, Args)]
pub struct Common {
    /// The rescue system's SSH server: HOST, HOST:PORT, [IPV6]:PORT,
    /// USER@HOST[:PORT], ssh://USER@HOST:PORT or an ssh_config alias.
    pub host: String,
    /// Where the main system is mounted on the rescue system.
    #[arg(long, value_name = "DIR", default_value = "/mnt/portcullis")]
    pub target: String,
    /// Print the plan, change nothing (read-only queries still run).
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask before steps that write or boot.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Also show the read-only commands used to look around.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// How the main system's initramfs takes a key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitrdFlavour {
    /// Debian/Ubuntu initramfs-tools with cryptsetup-initramfs.
    InitramfsTools,
    /// systemd in the initrd (dracut, mkinitcpio sd-encrypt).
    Systemd,
    /// mkinitcpio with the busybox `encrypt` hook.
    MkinitcpioEncrypt,
    /// No handover: the main system asks for the passphrase itself.
    None,
}

/// Which kexec system call loads the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadMethod {
    /// kexec_file_load under lockdown or Secure Boot, else kexec_load.
    Auto,
    /// kexec -s (kexec_file_load: the kernel checks the signature).
    File,
    /// kexec -c (kexec_load: refused under lockdown).
    Classic,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        c: RescueCommand,
    }

    #[test]
    fn parses() {
        use clap::CommandFactory;
        T::command().debug_assert();
        let t = T::try_parse_from([
            "t",
            "chroot",
            "rescue:2222",
            "--yes",
            "--",
            "update-initramfs",
            "-u",
        ])
        .unwrap();
        let RescueCommand::Chroot { common, command } = t.c else {
            panic!()
        };
        assert_eq!(common.host, "rescue:2222");
        assert!(common.yes);
        assert_eq!(command, ["update-initramfs", "-u"]);
        let t = T::try_parse_from([
            "t",
            "kexec",
            "h",
            "--initrd-flavour",
            "initramfs-tools",
            "--load-method",
            "file",
            "--json",
        ])
        .unwrap();
        let RescueCommand::Kexec(k) = t.c else {
            panic!()
        };
        assert_eq!(k.initrd_flavour, Some(InitrdFlavour::InitramfsTools));
        assert_eq!(k.load_method, LoadMethod::File);
        assert!(k.common.conn.json);
        assert!(T::try_parse_from(["t", "chroot", "h"]).is_err());
    }
}
