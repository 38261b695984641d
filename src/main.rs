//! `portcullis`: the admin's CLI. Parses arguments and hands over.
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = portcullis::cli::ClientCli::parse();
    portcullis::logging::init(false, false);
    std::process::ExitCode::from(portcullis::cli::run_client(cli))
}
