#!/usr/bin/env python3
"""Wait until 127.0.0.1:PORT answers with an SSH banner; print the banner.

Usage: benches/wait-banner.py PORT TIMEOUT_SECONDS

QEMU's user networking accepts a forwarded connection on the host even while
nothing listens in the guest, then closes it: only a line starting with
"SSH-" counts as the listener answering. Exits 1 on timeout.
"""
import socket
import sys
import time


def banner(port):
    """The first line the peer sends, or None if it sends no SSH banner."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(2)
            data = b""
            while b"\n" not in data and len(data) < 512:
                chunk = s.recv(512)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    return line.decode("ascii", "replace") if line.startswith(b"SSH-") else None


def main():
    port, timeout = int(sys.argv[1]), float(sys.argv[2])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = banner(port)
        if got:
            print(got)
            return 0
        time.sleep(0.1)
    return 1


sys.exit(main())
