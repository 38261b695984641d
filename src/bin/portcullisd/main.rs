//! `portcullisd`: the initramfs listener. Parses arguments (by hand: see
//! `args.rs` for why) and hands over.

mod args;
mod run;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let parsed = match args::parse(std::env::args_os().skip(1)) {
        Ok(p) => p,
        Err(e) => {
            portcullis::logging::final_error(&e.to_string());
            return ExitCode::from(1);
        }
    };
    let text = match parsed {
        args::Parsed::Run(args) => {
            // Only the listener logs to the kernel log: keygen and check run
            // on the admin's machine, whose kernel log is not ours.
            let kmsg = args.command == args::Command::Run;
            portcullis::logging::init(kmsg, args.verbose);
            return ExitCode::from(run::run(args));
        }
        args::Parsed::Help(text) => text,
        args::Parsed::Version => args::VERSION,
    };
    // A closed stdout (`portcullisd --help | head -0`) is not an error.
    let _ = std::io::stdout().write_all(text.as_bytes());
    ExitCode::SUCCESS
}
