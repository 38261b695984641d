//! Opening the listening sockets. Owns the socket options the boot depends
//! on; knows nothing of SSH.
//!
//! - IPv6 sockets are v6-only: on Linux `[::]:22` otherwise takes IPv4's
//!   `0.0.0.0:22` as well, and `listen = ["0.0.0.0:22", "[::]:22"]` (what an
//!   admin writes for "both families") died at boot with "Address in use".
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

/// A non-blocking listening socket on `addr`, ready for
/// `tokio::net::TcpListener::from_std`.
pub fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As tokio and std do: a restarted listener may rebind at once while
    // connections of the previous one linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
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

    #[test]
    fn ipv4_and_ipv6_wildcards_on_one_port() {
        if !ipv6_available() {
            eprintln!("skipped: no IPv6 on this machine");
            return;
        }
        let v4 = listen("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = listen(SocketAddr::new("::".parse().unwrap(), port));
        assert!(v6.is_ok(), "[::]:{port} after 0.0.0.0:{port}: {v6:?}");
        // And in the other order.
        drop((v4, v6));
        let v6 = listen("[::]:0".parse().unwrap()).unwrap();
        let port = v6.local_addr().unwrap().port();
        listen(SocketAddr::new("0.0.0.0".parse().unwrap(), port)).unwrap();
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
        let l = listen("192.0.2.10:0".parse().unwrap());
        assert!(l.is_ok(), "{l:?}");
    }

    #[test]
    fn a_taken_port_is_still_refused() {
        let a = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let e = listen(a.local_addr().unwrap()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    }
}
