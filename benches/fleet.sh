#!/usr/bin/env bash
# Fleet benchmark: `portcullis unlock --inventory … all` against 1 and then
# 500 simulated hosts (in-process listeners on loopback with a fake backend
# that takes UNLOCK_MS per unlock, and a "system" sshd answering BOOT_MS
# later). Prints the client's total time, time per host and peak RSS.
# Not a test: no thresholds.
#
# Usage: benches/fleet.sh [HOSTS...]      (default: 1 500)
# Environment: PARALLEL (default: the client's own default), UNLOCK_MS (200), BOOT_MS (1000),
# KEEP=1 keeps the work directory (inventory, outputs, time -v reports).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
work=$(mktemp -d)
sim_pid=
cleanup() {
    if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; fi
    if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
umask 077

parallel=${PARALLEL:-}
unlock_ms=${UNLOCK_MS:-200}
boot_ms=${BOOT_MS:-1000}
[ $# -gt 0 ] || set -- 1 500

if [ ! -x /usr/bin/time ]; then
    echo "/usr/bin/time missing: apt-get install time" >&2
    exit 1
fi
cargo build --release --quiet --bin portcullis --example fleet-sim
client="$repo/target/release/portcullis"
sim="$repo/target/release/examples/fleet-sim"

echo "fake cryptsetup ${unlock_ms} ms, system up ${boot_ms} ms after unlock, --parallel ${parallel:-default}"
printf '%6s  %10s  %12s  %16s  %14s  %s\n' hosts "total (s)" "per host (ms)" "CPU/host (ms)" "peak RSS (KiB)" outcome
for n in "$@"; do
    dir="$work/$n"
    mkdir -p "$dir/home"
    # The simulator lives as long as its stdin (a fifo we hold open).
    mkfifo "$dir/hold"
    "$sim" --hosts "$n" --dir "$dir" --unlock-ms "$unlock_ms" --boot-ms "$boot_ms" \
        <"$dir/hold" 2>"$dir/sim.log" &
    sim_pid=$!
    exec 9>"$dir/hold"
    for _ in $(seq 600); do [ -e "$dir/ready" ] && break; sleep 0.1; done
    [ -e "$dir/ready" ] || { echo "simulator did not start: $(cat "$dir/sim.log")" >&2; exit 1; }
    set +e
    HOME="$dir/home" /usr/bin/time -v -o "$dir/time" "$client" unlock \
        --inventory "$dir/inventory.toml" all --no-agent ${parallel:+--parallel "$parallel"} \
        >"$dir/out" 2>"$dir/err"
    rc=$?
    set -e
    exec 9>&-
    wait "$sim_pid" 2>/dev/null || true
    sim_pid=
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$dir/time")
    secs=$(echo "$wall" | awk -F: '{ if (NF == 3) s = $1*3600 + $2*60 + $3; else s = $1*60 + $2; printf "%.2f", s }')
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$dir/time")
    per=$(awk -v s="$secs" -v n="$n" 'BEGIN { printf "%.1f", s * 1000 / n }')
    # The client's own CPU (user + system), per host: what limits a fleet
    # once the network waits overlap.
    cpu=$(awk -F': ' -v n="$n" '/User time|System time/ { t += $2 } END { printf "%.2f", t * 1000 / n }' "$dir/time")
    outcome=$(tail -1 "$dir/out")
    printf '%6s  %10s  %12s  %16s  %14s  %s\n' "$n" "$secs" "$per" "$cpu" "$rss" "$outcome (exit $rc)"
    if [ "$rc" -ne 0 ]; then
        echo "client failed; last lines:" >&2
        tail -5 "$dir/out" "$dir/err" >&2
    fi
done
