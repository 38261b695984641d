#!/usr/bin/env bash
# Fleet benchmark: `portcullis unlock --inventory …` against simulated hosts
# (examples/fleet-sim.rs: real listeners on loopback with a fake backend
# that takes UNLOCK_MS per unlock, and a "system" sshd answering BOOT_MS
# later), each host unlocked and waited for until its system is up.
#
# Every row size runs RUNS times, the sizes interleaved round by round (1,
# 500, 1, 500, …) with a fresh simulator each time, and prints min / median
# / max of: the client's wall time, the ratio to the 1-host run of the same
# round, when the last unlock reply came, the client's CPU per host, its
# peak RSS, the simulator's CPU per host and the load average before the run.
#
# The 1-host baseline goes through the same fleet runner: one host named
# alone gets the single-host command, which does not wait for the system, so
# the baseline names a second inventory host that refuses at once (port 1,
# one refused connect: `unreachable`, exit 11 expected) beside h0000.
# Not a test: no thresholds.
#
# Usage: benches/fleet.sh [HOSTS...]      (default: 1 500; add 2000 for memory)
# Environment: RUNS (3), PARALLEL (default: the client's own), UNLOCK_MS (200),
# BOOT_MS (1000), KEEP=1 keeps the work directory (inventory, JSON outputs,
# time -v reports of client and simulator), CLIENT / SIM: other builds of
# the two binaries to compare (no cargo build then).
set -euo pipefail
# bash's `time` and awk read numbers with a point, whatever the admin's locale.
export LC_ALL=C
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

runs=${RUNS:-3}
parallel=${PARALLEL:-}
unlock_ms=${UNLOCK_MS:-200}
boot_ms=${BOOT_MS:-1000}
[ $# -gt 0 ] || set -- 1 500
case " $* " in *" 1 "*) ;; *) set -- 1 "$@" ;; esac

for tool in /usr/bin/time jq; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool missing: apt-get install ${tool##*/}" >&2
        exit 1
    fi
done
client=${CLIENT:-$repo/target/release/portcullis}
sim=${SIM:-$repo/target/release/examples/fleet-sim}
if [ -z "${CLIENT:-}${SIM:-}" ]; then
    cargo build --release --quiet --bin portcullis --example fleet-sim
fi

# Seconds from a `time -v` "Elapsed (wall clock)" value (m:ss.cc or h:mm:ss).
wall_secs() {
    awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$1" |
        awk -F: '{ if (NF == 3) s = $1*3600 + $2*60 + $3; else s = $1*60 + $2; printf "%.2f", s }'
}
# User + system milliseconds per host from a `time -v` report (10 ms steps:
# enough for the simulator's hundreds of hosts).
cpu_per_host() {
    awk -F': ' -v n="$2" '/User time|System time/ { t += $2 } END { printf "%.2f", t * 1000 / n }' "$1"
}
# The same from bash's `time` ("USER SYS" in seconds, 1 ms steps): the
# client's. time -v's 10 ms steps printed 0.00 for the 1-host run, whose
# client takes a few ms. It includes /usr/bin/time's own exec and wait.
cpu_per_host_ms() {
    awk -v n="$2" '{ t = $1 + $2 } END { printf "%.2f", t * 1000 / n }' "$1"
}

# One run of N hosts: appends "wall cpu/host rss sim-cpu/host load" to $work/N.rows.
one_run() {
    local n=$1 r=$2 dir="$work/$1/$2"
    mkdir -p "$dir/home"
    mkfifo "$dir/hold"
    # The simulator lives as long as its stdin (a fifo we hold open).
    /usr/bin/time -v -o "$dir/sim.time" "$sim" --hosts "$n" --dir "$dir" \
        --unlock-ms "$unlock_ms" --boot-ms "$boot_ms" <"$dir/hold" 2>"$dir/sim.log" &
    sim_pid=$!
    exec 9>"$dir/hold"
    for _ in $(seq 1200); do [ -e "$dir/ready" ] && break; sleep 0.1; done
    [ -e "$dir/ready" ] || { echo "simulator did not start: $(cat "$dir/sim.log")" >&2; exit 1; }
    local targets=(all)
    if [ "$n" -eq 1 ]; then
        printf '\n[host.off]\naddress = "127.0.0.1"\nport = 1\n' >>"$dir/inventory.toml"
        targets=(h0000 off)
    fi
    local load rc TIMEFORMAT='%3U %3S'
    load=$(cut -d' ' -f1 /proc/loadavg)
    set +e
    {
        time HOME="$dir/home" /usr/bin/time -v -o "$dir/time" "$client" unlock --json \
            --inventory "$dir/inventory.toml" "${targets[@]}" --no-agent ${parallel:+--parallel "$parallel"} \
            >"$dir/out" 2>"$dir/err"
        rc=$?
    } 2>"$dir/cpu"
    set -e
    exec 9>&-
    wait "$sim_pid" 2>/dev/null || true
    sim_pid=
    local up
    up=$(jq -r 'select(.outcome == "up") | .host' "$dir/out" | wc -l)
    if [ "$up" -ne "$n" ]; then
        echo "run $r, $n hosts: only $up up (client exit $rc); outcomes:" >&2
        jq -r '.outcome' "$dir/out" | sort | uniq -c >&2
        tail -3 "$dir/err" >&2
        exit 1
    fi
    # When the last unlock reply came (the key exchanges and logins are
    # done by then; what follows is each system's boot and the polls).
    local last_unlock
    last_unlock=$(jq -s 'map(."unlocked-after" // 0) | max' "$dir/out")
    echo "$(wall_secs "$dir/time") $(cpu_per_host_ms "$dir/cpu" "$n") \
$(awk -F': ' '/Maximum resident set size/ {print $2}' "$dir/time") \
$(cpu_per_host "$dir/sim.time" "$n") $load $last_unlock" >>"$work/$n.rows"
}

# min / median / max of column C of FILE, printed with FORMAT.
stats() {
    cut -d' ' -f"$2" "$1" | sort -g | awk -v f="$3" '
        { v[NR] = $1 }
        END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf f "/" f "/" f, v[1], m, v[NR] }'
}

echo "fake cryptsetup ${unlock_ms} ms, system up ${boot_ms} ms after unlock, --parallel ${parallel:-default}," \
    "$runs runs each, $(nproc) CPUs; figures are min/median/max"
for r in $(seq "$runs"); do
    for n in "$@"; do one_run "$n" "$r"; done
    # The ratio is taken within the round, against its own 1-host run.
    base=$(sed -n "${r}p" "$work/1.rows" | cut -d' ' -f1)
    for n in "$@"; do
        t=$(sed -n "${r}p" "$work/$n.rows" | cut -d' ' -f1)
        awk -v t="$t" -v b="$base" 'BEGIN { printf "%.2f\n", t / b }' >>"$work/$n.ratio"
    done
done
printf '%6s  %-17s  %-17s  %-17s  %-17s  %-20s  %-17s  %s\n' hosts "total (s)" "ratio to 1 host" \
    "last unlock (s)" "client CPU/host ms" "client peak RSS KiB" "sim CPU/host ms" "load before"
for n in "$@"; do
    printf '%6s  %-17s  %-17s  %-17s  %-17s  %-20s  %-17s  %s\n' "$n" \
        "$(stats "$work/$n.rows" 1 %.2f)" "$(stats "$work/$n.ratio" 1 %.2f)" \
        "$(stats "$work/$n.rows" 6 %.2f)" \
        "$(stats "$work/$n.rows" 2 %.2f)" "$(stats "$work/$n.rows" 3 %d)" \
        "$(stats "$work/$n.rows" 4 %.2f)" "$(stats "$work/$n.rows" 5 %.2f)"
done
