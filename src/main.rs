//! `portcullis`: the admin's CLI. Parses arguments and hands over.
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = match portcullis::cli::ClientCli::try_parse() {
        Ok(cli) => cli,
        // clap exits 2 on usage errors, which is our "wrong passphrase";
        // usage errors are plain errors (1) here.
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    portcullis::logging::init(false, false);
    std::process::ExitCode::from(portcullis::cli::run_client(cli))
}
