//! Opening the listening sockets. Owns the socket options the boot depends
//! on; knows nothing of SSH.
//!
//! - An IPv6 socket is v6-only when the listen list also has an IPv4
//!   address on its port: on Linux `[::]:22` otherwise takes IPv4's
//!   `0.0.0.0:22` as well, and `listen = ["0.0.0.0:22", "[::]:22"]` (what an
//!   admin writes for "both families") died at boot with "Address in use".
//!   Alone, `[::]:22` stays dual-stack whatever `net.ipv6.bindv6only` says:
//!   the documented way to listen on both families with one entry, which
//!   must not lose IPv4 at the next boot.
//! - Non-local binding (`IP_FREEBIND`): the listener starts before the
//!   initramfs network is up (dracut's pre-trigger hook, systemd units
//!   ordered before cryptsetup), so a configured address may not exist yet;
//!   without it `listen = ["192.0.2.10:22"]` failed at boot with "Cannot
//!   assign requested address". The socket accepts once the address appears.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;

/// Backlog of pending connections, as tokio's `TcpListener::bind` uses.
const BACKLOG: i32 = 1024;

/// Whether the IPv6 socket for `addr` must leave IPv4 to others: some
/// IPv4 address in `all` uses the same port.
pub fn v6_only(addr: SocketAddr, all: &[SocketAddr]) -> bool {
    addr.is_ipv6() && all.iter().any(|a| a.is_ipv4() && a.port() == addr.port())
}

/// A non-blocking listening socket on `addr` (for an IPv6 one, v6-only or
/// dual-stack: see [`v6_only`]), ready for `tokio::net::TcpListener::from_std`.
pub fn listen(addr: SocketAddr, v6_only: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As tokio and std do: a restarted listener may rebind at once while
    // connections of the previous one linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(v6_only)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ipv6_available() -> bool {
        std::net::TcpListener::bind("[::1]:0").is_ok()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_and_ipv6_wildcards_on_one_port() {
        if !ipv6_available() {
            eprintln!("skipped: no IPv6 on this machine");
            return;
        }
        let v4 = listen(addr("0.0.0.0:0"), false).unwrap();
        let port = v4.local_addr().unwrap().port();
        let both = [
            SocketAddr::new([0u8; 4].into(), port),
            SocketAddr::new([0u16; 8].into(), port),
        ];
        assert!(v6_only(both[1], &both));
        let v6 = listen(both[1], v6_only(both[1], &both));
        assert!(v6.is_ok(), "[::]:{port} after 0.0.0.0:{port}: {v6:?}");
        // And in the other order.
        drop((v4, v6));
        let v6 = listen(addr("[::]:0"), true).unwrap();
        let port = v6.local_addr().unwrap().port();
        listen(SocketAddr::new([0u8; 4].into(), port), false).unwrap();
    }

    /// `listen = ["[::]:P"]` alone takes IPv4 connections too, as it did
    /// before and as the install guide says.
    #[test]
    fn a_lone_ipv6_wildcard_serves_ipv4_too() {
        if !ipv6_available() {
            eprintln!("skipped: no IPv6 on this machine");
            return;
        }
        let only = [addr("[::]:0")];
        assert!(!v6_only(only[0], &only));
        assert!(!v6_only(
            addr("[::]:22"),
            &[addr("[::]:22"), addr("0.0.0.0:2222")]
        ));
        let l = listen(only[0], v6_only(only[0], &only)).unwrap();
        let port = l.local_addr().unwrap().port();
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::net::TcpStream::connect(("::1", port)).unwrap();
    }

    /// The control: a plain bind (what the listener did before) of both
    /// wildcards fails where the system default is dual-stack sockets, so
    /// the test above tests something.
    #[test]
    fn a_dual_stack_socket_takes_ipv4_too() {
        let dual_stack_default = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only")
            .map(|v| v.trim() == "0")
            .unwrap_or(false);
        if !ipv6_available() || !dual_stack_default {
            eprintln!("skipped: no IPv6, or net.ipv6.bindv6only is set");
            return;
        }
        let v4 = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let e = std::net::TcpListener::bind(("::", port)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    }

    #[test]
    fn an_address_not_on_this_machine_is_accepted() {
        // TEST-NET-1: on no interface here; the socket waits for it.
        let l = listen(addr("192.0.2.10:0"), false);
        assert!(l.is_ok(), "{l:?}");
    }

    #[test]
    fn a_taken_port_is_still_refused() {
        let a = listen(addr("127.0.0.1:0"), false).unwrap();
        let e = listen(a.local_addr().unwrap(), false).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    }
}
