//! `portcullisd` as the initramfs images carry it: the listener alone. The
//! image hooks copy this build in as /usr/sbin/portcullisd when it is
//! installed (/usr/lib/portcullis/portcullisd-initramfs). `keygen` and
//! `check` run on the installed system, where the hooks call the full
//! `portcullisd`; leaving their code out (private-key encoding, key
//! generation, the image checks) takes about 15 KB zstd off every image.
//! Same command line, same version text (preflight reads it), same
//! listener: `src/bin/portcullisd` parses the arguments for both.

#[path = "../portcullisd/args.rs"]
mod args;

use args::{Command, Parsed};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match args::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help(text)) => return print(&help(text)),
        Ok(Parsed::Version) => return print(args::VERSION),
        Err(e) => return fail(&e.to_string()),
    };
    let name = match args.command {
        Command::Run => {
            portcullis::logging::init(true, args.verbose);
            let root = portcullis::sys::Root::default();
            return match portcullis::daemon::run(&args.config, &root) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}")),
            };
        }
        Command::Keygen { .. } => "keygen",
        Command::Check { .. } => "check",
    };
    fail(&format!(
        "{name} is not in the initramfs build of portcullisd, which only listens; \
         run `portcullisd {name}` on the installed system"
    ))
}

/// What this build says of `keygen` and `check`, in place of them.
const NOT_HERE: &str = "\
keygen and check are not in this build of portcullisd (the initramfs
listener); run them with the full portcullisd on the installed system.
";

/// The full build's help, without the two commands this build lacks: the
/// top-level help lists `run` and `help` and says where the others are;
/// the help of `keygen` or `check` starts by saying so.
fn help(text: &'static str) -> String {
    if text == args::help(None).unwrap_or_default() {
        let mut out = String::new();
        let mut skipping = false;
        for line in text.lines() {
            if line.starts_with("  keygen ") {
                skipping = true;
            } else if line.starts_with("  help ") {
                skipping = false;
            }
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
        }
        return format!("{out}\n{NOT_HERE}");
    }
    if ["keygen", "check"]
        .iter()
        .any(|c| args::help(Some(c)) == Some(text))
    {
        return format!("{NOT_HERE}\n{text}");
    }
    text.to_owned()
}

fn print(text: &str) -> ExitCode {
    // A closed stdout (`portcullisd --help | head -0`) is not an error.
    let _ = std::io::stdout().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

fn fail(msg: &str) -> ExitCode {
    portcullis::logging::final_error(msg);
    ExitCode::from(1)
}
