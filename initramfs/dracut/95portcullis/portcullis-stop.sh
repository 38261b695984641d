#!/bin/sh
# portcullis (dracut without systemd, cleanup hook): stop the listener and
# deconfigure the network before switch_root.
[ -f /run/portcullis/pid ] || return 0
pid=$(cat /run/portcullis/pid)
rm -f /run/portcullis/pid
if [ -d "/proc/$pid" ]; then
    kill -TERM "$pid" 2>/dev/null
    i=0
    while [ -d "/proc/$pid" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null
fi
/usr/lib/portcullis/flush-network
