#!/bin/sh
# portcullis: deconfigure every network interface but loopback before the
# real system starts (dracut module 95portcullis; run by
# portcullis-network-cleanup.service or the cleanup hook). Skipped when the
# root file system is on the network or PORTCULLIS_KEEP_NETWORK=yes.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
PORTCULLIS_KEEP_NETWORK=no
if [ -r /etc/portcullis/initramfs.conf ]; then
    . /etc/portcullis/initramfs.conf
fi
[ "$PORTCULLIS_KEEP_NETWORK" = yes ] && exit 0
cmdline=$(cat /proc/cmdline /etc/cmdline.d/*.conf 2>/dev/null)
for word in $cmdline; do
    case $word in
        netroot=*|root=nfs*|root=/dev/nfs|root=iscsi:*|root=nbd:*|root=cifs:*|rd.iscsi.*|rd.nfs*)
            echo "portcullis: network root ($word): keeping the network" >/dev/kmsg
            exit 0
            ;;
    esac
done
rc=0
for dev in /sys/class/net/*; do
    iface=${dev##*/}
    [ "$iface" = lo ] && continue
    [ -e "$dev" ] || continue
    if ip address flush dev "$iface" && ip route flush dev "$iface" && ip link set dev "$iface" down; then
        echo "<6>portcullis: deconfigured $iface" >/dev/kmsg
    else
        echo "<3>portcullis: could not deconfigure $iface; its initramfs address may remain" >/dev/kmsg
        rc=1
    fi
done
# systemd-network-generator's files for ip= would configure the booted
# system's networkd (if it runs one) with the initramfs settings.
rm -f /run/systemd/network/*.network /run/systemd/network/*.netdev /run/systemd/network/*.link \
    2>/dev/null
# dhclient (network-legacy) leases and state.
rm -f /tmp/net.*.did-setup /tmp/net.*.up 2>/dev/null
exit $rc
