#!/bin/sh
# portcullis: deconfigure every network interface but loopback before the
# real system starts (dracut module 95portcullis and mkinitcpio's
# sd-portcullis; run by portcullis-network-cleanup.service or the cleanup
# hook). Skipped when the root file system is on the network or
# PORTCULLIS_KEEP_NETWORK=yes. The flush itself is the one every generator
# uses (/usr/lib/portcullis/lib.sh).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
. /usr/lib/portcullis/lib.sh
portcullis_keep_network && exit 0
cmdline=$(cat /proc/cmdline /etc/cmdline.d/*.conf 2>/dev/null)
for word in $cmdline; do
    case $word in
        netroot=*|root=nfs*|root=/dev/nfs|root=iscsi:*|root=nbd:*|root=cifs:*|rd.iscsi.*|rd.nfs*)
            portcullis_kmsg 6 "network root ($word): keeping the network"
            exit 0
            ;;
    esac
done
ifaces=
for dev in /sys/class/net/*; do
    iface=${dev##*/}
    [ "$iface" = lo ] && continue
    [ -e "$dev" ] || continue
    ifaces="$ifaces $iface"
done
# shellcheck disable=SC2086 # interface names hold no blanks
portcullis_flush $ifaces
rc=$?
# systemd-network-generator's files for ip= would configure the booted
# system's networkd (if it runs one) with the initramfs settings.
rm -f /run/systemd/network/*.network /run/systemd/network/*.netdev /run/systemd/network/*.link \
    2>/dev/null
# dhclient (network-legacy) leases and state.
rm -f /tmp/net.*.did-setup /tmp/net.*.up 2>/dev/null
exit $rc
