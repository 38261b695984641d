//! Simulated fleet for `benches/fleet.sh`: N hosts, each a real
//! `portcullis::listener::serve` on a loopback port with a fake backend
//! (one right passphrase, a delay standing in for cryptsetup) and, once
//! unlocked, a "system" SSH server with its own key. Writes
//! `DIR/inventory.toml` for `portcullis unlock --inventory`, then
//! `DIR/ready`, and runs until its standard input closes.
//!
//! Test support only (shares `tests/support/fleet_sim.rs` with the tests):
//! nothing here ships in the daemon.

#[path = "../tests/support/fleet_sim.rs"]
mod sim;

use clap::Parser;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    /// How many hosts.
    #[arg(long, default_value_t = 500)]
    hosts: u32,
    /// Where to write inventory.toml, the client key and the passphrase.
    #[arg(long)]
    dir: PathBuf,
    /// Milliseconds each fake cryptsetup takes.
    #[arg(long, default_value_t = 200)]
    unlock_ms: u64,
    /// Milliseconds from unlock until the system's sshd answers.
    #[arg(long, default_value_t = 1000)]
    boot_ms: u64,
    /// Threads (one runtime each) to spread the hosts over.
    #[arg(long, default_value_t = 4)]
    shards: usize,
}

const PASS: &[u8] = b"fleet benchmark passphrase";

fn main() {
    let a = Args::parse();
    let specs = (0..a.hosts)
        .map(|n| sim::Spec {
            unlock_delay: Duration::from_millis(a.unlock_ms),
            boot_delay: Duration::from_millis(a.boot_ms),
            ..sim::Spec::new(n, PASS)
        })
        .collect();
    let shards = sim::start_many(specs, a.shards);
    let hosts: Vec<sim::Info> = shards.iter().flat_map(|s| s.hosts.clone()).collect();
    std::fs::create_dir_all(&a.dir).expect("creating --dir");
    let inv = sim::write_inventory(&a.dir, &hosts, PASS);
    std::fs::write(a.dir.join("ready"), b"").expect("writing ready");
    eprintln!(
        "fleet-sim: {} hosts; inventory {}",
        hosts.len(),
        inv.display()
    );
    // Until the benchmark closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(shards);
}
