#!/bin/sh
# portcullis (dracut without systemd, cleanup hook): stop the listener and
# deconfigure the network before switch_root.
[ -f /run/portcullis/pid ] || return 0
pid=$(cat /run/portcullis/pid)
rm -f /run/portcullis/pid
if [ -d "/proc/$pid" ]; then
    kill -TERM "$pid" 2>/dev/null
    # It exits at once unless an unlock is in flight; then it waits for that
    # (at most 30 s) so its reply is delivered. Ours is the outer bound.
    i=0
    while [ -d "/proc/$pid" ] && [ $i -lt 350 ]; do sleep 0.1; i=$((i + 1)); done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null
fi
/usr/lib/portcullis/flush-network
