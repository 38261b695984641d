//! `portcullis-preflight`: will remote unlock work after the next reboot?
//! Parses the command line, runs the checks (`run.rs`), prints the
//! checklist or JSON, and exits with the verdict's code. Installed on the
//! server (never in an image), so clap is fine here.

mod cli;
mod run;

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match cli::PreflightCli::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help, --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("bad arguments");
            eprintln!("portcullis-preflight: {first}; run 'portcullis-preflight --help' for usage");
            return ExitCode::from(1);
        }
    };
    let report = match run::run(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("portcullis-preflight: error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let out = if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("portcullis-preflight: error: encoding the report: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        portcullis::preflight::text::render(&report)
    };
    // A closed stdout (`| head -1`) is not an error; the verdict still is.
    let _ = std::io::stdout().write_all(out.as_bytes());
    ExitCode::from(report.exit_code())
}
