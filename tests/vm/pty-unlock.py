#!/usr/bin/env python3
"""Drive an interactive `ssh -tt HOST` session through a real pty.

Usage: pty-unlock.py PASSFILE WRONG -- ssh ARGS...

Sends WRONG first (with a typo corrected by backspace), expects the
listener to answer "wrong passphrase", then sends the right passphrase
from PASSFILE and expects "unlocked". Exits 0 only if both happen and the
passphrase was never echoed back.
"""
import os
import pty
import select
import sys
import time


def main():
    passfile, wrong = sys.argv[1], sys.argv[2].encode()
    argv = sys.argv[sys.argv.index("--") + 1:]
    with open(passfile, "rb") as f:
        right = f.read().rstrip(b"\n")
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(argv[0], argv)
    seen = b""

    def expect(needle, timeout=120):
        nonlocal seen
        end = time.time() + timeout
        while needle not in seen:
            left = end - time.time()
            if left <= 0:
                sys.exit(f"pty-unlock: timed out waiting for {needle!r}; got {seen[-400:]!r}")
            r, _, _ = select.select([fd], [], [], left)
            if r:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    sys.exit(f"pty-unlock: session ended before {needle!r}; got {seen[-400:]!r}")
                seen += chunk

    expect(b"Passphrase for root")
    # A typo fixed with backspace must not reach the passphrase.
    os.write(fd, wrong + b"x\x7f\r")
    expect(b"wrong passphrase")
    expect(b"Passphrase for root", timeout=30)
    os.write(fd, right + b"\r")
    expect(b"unlocked")
    _, status = os.waitpid(pid, 0)
    if right in seen or wrong in seen:
        sys.exit("pty-unlock: a passphrase was echoed back")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"pty-unlock: ssh exited with {code}")
    print("pty-unlock: wrong then right passphrase over an interactive session: ok")


main()
