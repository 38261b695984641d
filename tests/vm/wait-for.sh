#!/usr/bin/env bash
# Wait until a line of a serial log matches a pattern.
#
# Usage: tests/vm/wait-for.sh LOG PATTERN TIMEOUT_SECONDS [PIDFILE]
#
#   PATTERN is an extended regular expression (grep -E), matched per line.
#   Exit 0 as soon as it matches (the first matching line goes to stdout).
#   Exit 1 on timeout, or early when PIDFILE is given and that process (QEMU)
#   has ended without the pattern showing up; then the last 40 lines of LOG
#   go to stderr.
#
#   Can also be sourced: defines vm_wait_for LOG PATTERN TIMEOUT [PIDFILE].
vm_wait_for() {
    local log=$1 pattern=$2 timeout=$3 pidfile=${4:-} deadline line pid='' reason
    deadline=$((SECONDS + timeout))
    while :; do
        if [ -f "$log" ] && line=$(grep -a -m1 -E -- "$pattern" "$log"); then
            printf '%s\n' "$line"
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            reason="timed out after ${timeout}s"
            break
        fi
        # QEMU removes its pidfile when it exits: remember the pid once seen.
        if [ -z "$pid" ] && [ -n "$pidfile" ] && [ -s "$pidfile" ]; then
            pid=$(cat "$pidfile")
        fi
        if [ -n "$pid" ]; then
            if ! kill -0 "$pid" 2>/dev/null; then
                # One last look: QEMU may have printed it just before exiting.
                if [ -f "$log" ] && line=$(grep -a -m1 -E -- "$pattern" "$log"); then
                    printf '%s\n' "$line"
                    return 0
                fi
                reason="QEMU (pid $pid) exited"
                break
            fi
        fi
        sleep 0.5
    done
    {
        echo "wait-for: /$pattern/ not found in $log: $reason; last 40 lines:"
        tail -n 40 "$log" 2>/dev/null | sed 's/^/  | /'
    } >&2
    return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    if [ $# -lt 3 ] || [ $# -gt 4 ]; then
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
        exit 2
    fi
    vm_wait_for "$@"
fi
