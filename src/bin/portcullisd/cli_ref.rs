//! The listener's command line as a clap definition. `portcullisd` parses
//! its arguments by hand (clap would add about 77 KB to every initramfs), so
//! this file is never compiled into it: the hand parser's tests (`args.rs`)
//! check it against this definition, and `examples/gen-docs.rs` renders
//! `portcullisd(8)` from it. One definition, two readers.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The initramfs listener.
#[derive(Debug, Parser)]
#[command(name = "portcullisd", version, max_term_width = 80)]
pub struct DaemonCli {
    /// Configuration file.
    #[arg(long, short = 'c', default_value = portcullis::config::DEFAULT_PATH, global = true)]
    pub config: PathBuf,
    /// More log output.
    #[arg(long, short = 'v', global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Option<DaemonCommand>,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Listen and unlock (the default).
    Run,
    /// Create a new host key (mode 0600) and print its fingerprint.
    Keygen {
        /// Where to write the key; FILE.pub gets the public half.
        file: PathBuf,
        /// Replace an existing key and public file (clients that pinned
        /// the old key will refuse the new one until re-pinned).
        #[arg(long)]
        force: bool,
        /// Key type (rsa runs OpenSSH's ssh-keygen); a listener can serve
        /// one key of each type at once (docs/rotation.md).
        #[arg(long = "type", value_name = "TYPE", default_value = "ed25519",
              value_parser = ["ed25519", "ecdsa", "rsa"])]
        key_type: String,
    },
    /// Validate the config and the files it names, then exit. Hooks run this
    /// when building an image so mistakes fail the build, not the boot.
    Check {
        /// Look up the config's paths under this directory (an image tree).
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Print the files an image needs ('KIND PATH' lines) instead of
        /// the summary.
        #[arg(long)]
        list_files: bool,
    },
}
