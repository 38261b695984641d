#!/bin/sh
# portcullis (dracut without systemd, cleanup hook): stop the listener and
# deconfigure the network before switch_root (functions shared by every
# generator: /usr/lib/portcullis/lib.sh).
[ -f /run/portcullis/pid ] || return 0
. /usr/lib/portcullis/lib.sh
portcullis_stop
/usr/lib/portcullis/flush-network
