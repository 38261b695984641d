//! A loopback port nobody uses, for a server a test starts later (sshd, a
//! listener process), so it cannot be held open in the meantime.
//!
//! Not `bind(":0")` then drop: the kernel hands the same ephemeral range to
//! outgoing connections, and with tests running in parallel one of their
//! client sockets could take the port before the server binds it. These
//! ports come from below the ephemeral range (32768–60999 on Linux), one
//! counter per test process, each checked free when handed out.

use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u16 = 20_000;
const LAST: u16 = 32_000;

pub fn free_port() -> u16 {
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(LAST - FIRST);
    // Two test runs (or CI jobs) may overlap: each process starts elsewhere.
    let start = std::process::id() % span;
    for _ in 0..span {
        let n = (start + HANDED_OUT.fetch_add(1, Ordering::SeqCst)) % span;
        let port = FIRST + n as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{LAST}");
}
