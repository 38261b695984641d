#!/usr/bin/env python3
"""Time from exec of portcullisd to its port accepting connections.

Usage: time_to_listen.py PORTCULLISD CONFIG PORT [RUNS]
Prints one line per run and min/median/max, in milliseconds.
"""
import socket
import statistics
import subprocess
import sys
import time


def main():
    binary, config, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen([binary, "--config", config], stderr=subprocess.DEVNULL)
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
                break
            except OSError:
                if proc.poll() is not None:
                    sys.exit(f"portcullisd exited with {proc.returncode} before listening")
                if time.perf_counter() - t0 > 10:
                    sys.exit("portcullisd did not listen within 10 s")
                time.sleep(0.0005)
        times.append((time.perf_counter() - t0) * 1000)
        proc.terminate()
        proc.wait()
        print(f"run {i + 1}: exec to listening {times[-1]:.1f} ms")
    print(
        f"min/median/max over {runs} runs: exec to listening "
        f"{min(times):.1f}/{statistics.median(times):.1f}/{max(times):.1f} ms"
    )


main()
