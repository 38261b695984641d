#!/usr/bin/env python3
"""The wire between the guest's NICs and the test's network namespace.

Each guest NIC is a QEMU `-netdev socket,udp=...` (one UDP datagram per
Ethernet frame); the namespace side is a tap device. A frame from any guest
NIC goes to the tap, a frame from the tap to every guest NIC (a hub: the
bond's inactive slave drops what is not for it, and a NIC whose link QEMU
has set off gets nothing).

With --vlan ID the hub is the tagged switch port: frames from the guest
must carry an 802.1Q tag with that ID (the tag is removed before the tap);
untagged frames and other IDs are dropped and counted; frames to the guest
get the tag. So an unlock through it proves tagged traffic. Without
--vlan, frames pass as they are.

Usage: net-hub.py --tap NAME --listen PORT --nic PORT [--nic PORT] [--vlan ID]
                  --stats FILE
Counts are written to FILE on SIGTERM: "from-guest=N untagged-dropped=N
other-vlan-dropped=N to-guest=N".
"""
import argparse
import fcntl
import os
import select
import signal
import socket
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tap", required=True)
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--nic", type=int, action="append", required=True)
    ap.add_argument("--vlan", type=int, default=0)
    ap.add_argument("--stats", required=True)
    a = ap.parse_args()

    tap = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tap, TUNSETIFF, struct.pack("16sH22x", a.tap.encode(), IFF_TAP | IFF_NO_PI))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", a.listen))
    nics = [("127.0.0.1", p) for p in a.nic]
    count = {"from-guest": 0, "untagged-dropped": 0, "other-vlan-dropped": 0, "to-guest": 0}

    def stop(*_):
        with open(a.stats, "w") as f:
            f.write(" ".join(f"{k}={v}" for k, v in count.items()) + "\n")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    tag = struct.pack("!HH", 0x8100, a.vlan)
    while True:
        ready, _, _ = select.select([tap, udp], [], [])
        if udp in ready:
            frame, _ = udp.recvfrom(65536)
            if len(frame) < 14:
                continue
            if a.vlan:
                if frame[12:14] != b"\x81\x00":
                    count["untagged-dropped"] += 1
                    continue
                if struct.unpack("!H", frame[14:16])[0] & 0x0FFF != a.vlan:
                    count["other-vlan-dropped"] += 1
                    continue
                frame = frame[:12] + frame[16:]
            count["from-guest"] += 1
            os.write(tap, frame)
        if tap in ready:
            frame = os.read(tap, 65536)
            if a.vlan:
                frame = frame[:12] + tag + frame[12:]
            count["to-guest"] += 1
            for n in nics:
                udp.sendto(frame, n)


if __name__ == "__main__":
    main()
