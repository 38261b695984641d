//! `portcullisd`: the initramfs listener. Parses arguments and hands over.
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = portcullis::cli::DaemonCli::parse();
    portcullis::logging::init(true, cli.verbose);
    std::process::ExitCode::from(portcullis::cli::run_daemon(cli))
}
