#!/usr/bin/env python3
"""The admission goal at full size, against the release binaries.

A flood of 300 idle, 100 garbage and 50 slowloris connections (held, and
reconnecting whenever the listener closes them) comes from other loopback
addresses while the admin runs `portcullis status` 20 times from 127.0.0.1;
then the flood comes from 127.0.0.1 itself and the admin runs
`status --wait 30s`. Prints successes, times, the listener's peak RSS and
how many log lines the flood caused. Not a test: no thresholds.

Usage: flood.py PORTCULLISD PORTCULLIS WORKDIR [SOURCES] [MAX_UNAUTH]
SOURCES: how many attacker addresses (127.0.0.2 up); "each" gives every
connection its own address. MAX_UNAUTH: [limits] max-unauthenticated.
"""
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import time

IDLE, GARBAGE, SLOW = 300, 100, 50


async def one(kind, src, port, stop, made):
    while not stop.is_set():
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
        except OSError:
            await asyncio.sleep(0.02)
            continue
        made[0] += 1
        try:
            if kind == "garbage":
                w.write(os.urandom(300) + b"\r\nGET / HTTP/1.0\r\n\r\n")
                await w.drain()
                while await r.read(512):
                    pass
            elif kind == "slow":
                w.write(b"SSH-2.0-")
                while not stop.is_set():
                    w.write(b"x")
                    await w.drain()
                    try:
                        if not await asyncio.wait_for(r.read(512), 0.5):
                            break
                    except asyncio.TimeoutError:
                        pass
            else:
                while await r.read(512):
                    pass
        except OSError:
            pass
        finally:
            w.close()


async def flood_main(port, sources, seconds):
    stop = asyncio.Event()
    # The parent ends the flood with SIGTERM: stop and report.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    made = [0]
    kinds = ["idle"] * IDLE + ["garbage"] * GARBAGE + ["slow"] * SLOW
    tasks = [asyncio.create_task(one(k, sources[i % len(sources)], port, stop, made))
             for i, k in enumerate(kinds)]
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"  flood: {made[0]} connections made", flush=True)


def rss_kb(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def main():
    if sys.argv[1] == "--flood":
        port, seconds = int(sys.argv[2]), float(sys.argv[3])
        asyncio.run(flood_main(port, sys.argv[4:], seconds))
        return
    daemon, client, work = sys.argv[1], sys.argv[2], sys.argv[3]
    mode = sys.argv[4] if len(sys.argv) > 4 else "10"
    max_unauth = sys.argv[5] if len(sys.argv) > 5 else "64"
    n = IDLE + GARBAGE + SLOW
    if mode == "each":
        sources = [f"127.0.{2 + i // 250}.{1 + i % 250}" for i in range(n)]
    else:
        sources = [f"127.0.0.{2 + i}" for i in range(int(mode))]
    port = random.randint(30000, 50000)
    hk, admin = f"{work}/host_key", f"{work}/admin"
    fp = subprocess.run([daemon, "keygen", hk], capture_output=True, text=True,
                        check=True).stdout.strip()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", admin], check=True)
    os.rename(admin + ".pub", f"{work}/authorized_keys")
    conf = f"{work}/flood.toml"
    with open(conf, "w") as f:
        f.write(f'''listen = ["127.0.0.1:{port}"]
host-key = "{hk}"
authorized-keys = "{work}/authorized_keys"
backend = "cryptsetup"
volumes-from-cmdline = false
[limits]
max-unauthenticated = {max_unauth}
[[volume]]
name = "portcullis-flood-never-opened"
device = "/dev/null"
''')
    log = open(f"{work}/listener.log", "w")
    d = subprocess.Popen([daemon, "--config", conf], stderr=log)
    time.sleep(0.5)
    base = [client, "status", f"127.0.0.1:{port}", "--fingerprint", fp, "-i", admin,
            "--no-agent"]

    def status(extra, timeout):
        t = time.perf_counter()
        r = subprocess.run(base + extra, capture_output=True, text=True, timeout=timeout)
        return r.returncode, time.perf_counter() - t, r.stderr.strip().splitlines()[-1:] or [""]

    peak = [0]

    def sample():
        peak[0] = max(peak[0], rss_kb(d.pid).get("VmRSS", 0))

    print(f"listener idle: {rss_kb(d.pid)} kB; max-unauthenticated = {max_unauth}; "
          f"attacker addresses: {len(sources)}")
    for phase, srcs in (("other addresses", sources), ("the admin's own address", ["127.0.0.1"])):
        fl = subprocess.Popen([sys.executable, __file__, "--flood", str(port), "40"] + srcs)
        time.sleep(3)
        sample()
        if srcs is sources:
            ok, times = 0, []
            for _ in range(20):
                code, took, err = status(["--timeout", "2s"], 10)
                sample()
                times.append(took)
                if code == 0 and took <= 2.0:
                    ok += 1
                else:
                    print(f"  status: exit {code} after {took:.2f} s: {err[0]}")
                time.sleep(0.2)
            times.sort()
            print(f"flood from {phase}: {ok}/20 status within 2 s; "
                  f"min {times[0]*1000:.0f} ms, median {statistics.median(times)*1000:.0f} ms, "
                  f"max {times[-1]*1000:.0f} ms")
        else:
            code, took, err = status(["--wait", "30s"], 40)
            sample()
            print(f"flood from {phase}: status --wait 30s exit {code} after {took:.2f} s {err[0]}")
        fl.terminate()
        fl.wait()
        sample()
    time.sleep(5.5)
    print(f"listener peak RSS during the floods (sampled): {peak[0]} kB; "
          f"VmHWM {rss_kb(d.pid).get('VmHWM')} kB")
    d.terminate()
    d.wait()
    log.close()
    lines = open(f"{work}/listener.log").read().splitlines()
    summaries = [line for line in lines if "unauthenticated connections:" in line]
    print(f"listener log: {len(lines)} lines, {len(summaries)} of them summaries; last summary:")
    print("  " + (summaries[-1] if summaries else "(none)"))


if __name__ == "__main__":
    main()
