#!/bin/sh
# Install the portcullis initramfs integration for one generator.
#
# Usage: initramfs/install.sh GENERATOR [--destdir DIR] [--portcullisd PATH]
#   GENERATOR: initramfs-tools | dracut | mkinitcpio
#   --destdir DIR      install under DIR (a chroot or image tree), default /
#   --portcullisd PATH also install this binary as DIR/usr/local/sbin/portcullisd,
#                      and the initramfs build beside it (PATH-initramfs, as
#                      tests/build-release.sh leaves it) as
#                      DIR/usr/lib/portcullis/portcullisd-initramfs
#
# Installs only the hook files, /usr/lib/portcullis/lib.sh (shared by the
# hooks of every generator) and /etc/portcullis/initramfs.conf when there is
# none. The listener config, host key and authorized keys are yours to
# create (see docs/install/GENERATOR.md); the next image build checks them.
# Rebuild the image afterwards: update-initramfs -u / dracut -f / mkinitcpio -P.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
gen=${1:-}
[ $# -gt 0 ] && shift
destdir=
portcullisd=
while [ $# -gt 0 ]; do
    case $1 in
        --destdir) destdir=${2:?}; shift 2 ;;
        --portcullisd) portcullisd=${2:?}; shift 2 ;;
        *) echo "install.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

inst() { # MODE SRC DEST
    mkdir -p "$destdir$(dirname "$3")"
    cp "$2" "$destdir$3.tmp.$$"
    chmod "$1" "$destdir$3.tmp.$$"
    mv -f "$destdir$3.tmp.$$" "$destdir$3"
    echo "installed $3"
}

case $gen in
    initramfs-tools)
        inst 0755 "$here/initramfs-tools/hooks/portcullis" /etc/initramfs-tools/hooks/portcullis
        inst 0755 "$here/initramfs-tools/scripts/init-premount/portcullis" /etc/initramfs-tools/scripts/init-premount/portcullis
        inst 0755 "$here/initramfs-tools/scripts/init-bottom/portcullis" /etc/initramfs-tools/scripts/init-bottom/portcullis
        inst 0644 "$here/initramfs-tools/conf.d/portcullis" /etc/initramfs-tools/conf.d/portcullis
        inst 0755 "$here/initramfs-tools/post-update.d/portcullis" /etc/initramfs/post-update.d/portcullis
        ;;
    dracut)
        for f in "$here"/dracut/95portcullis/*; do
            case $f in *.sh) mode=0755 ;; *) mode=0644 ;; esac
            inst "$mode" "$f" "/usr/lib/dracut/modules.d/95portcullis/${f##*/}"
        done
        inst 0644 "$here/dracut/portcullis.conf" /etc/dracut.conf.d/90-portcullis.conf
        ;;
    mkinitcpio)
        for v in portcullis sd-portcullis; do
            inst 0644 "$here/mkinitcpio/install/$v" "/etc/initcpio/install/$v"
        done
        inst 0644 "$here/mkinitcpio/hooks/portcullis" /etc/initcpio/hooks/portcullis
        inst 0755 "$here/mkinitcpio/post/portcullis" /etc/initcpio/post/portcullis
        # sd-portcullis uses the same units as the dracut module.
        inst 0644 "$here/dracut/95portcullis/portcullisd.service" /etc/initcpio/portcullis/portcullisd.service
        inst 0644 "$here/dracut/95portcullis/portcullis-network-cleanup.service" \
            /etc/initcpio/portcullis/portcullis-network-cleanup.service
        inst 0755 "$here/dracut/95portcullis/portcullis-flush-network.sh" /etc/initcpio/portcullis/flush-network
        ;;
    *)
        echo "usage: install.sh initramfs-tools|dracut|mkinitcpio [--destdir DIR] [--portcullisd PATH]" >&2
        exit 2
        ;;
esac
# What the hooks of every generator share (build: the files to copy; boot:
# stopping the listener, flushing the network), copied into each image.
inst 0644 "$here/common/portcullis-lib.sh" /usr/lib/portcullis/lib.sh
# The build-time preflight the hooks run on each new image (not copied in).
inst 0644 "$here/common/preflight-hook.sh" /usr/lib/portcullis/preflight-hook.sh
inst 0644 "$here/common/portcullis-net.sh" /usr/lib/portcullis/net.sh
if [ ! -e "$destdir/etc/portcullis/initramfs.conf" ]; then
    inst 0644 "$here/common/initramfs.conf" /etc/portcullis/initramfs.conf
fi
if [ -n "$portcullisd" ]; then
    inst 0755 "$portcullisd" /usr/local/sbin/portcullisd
    # The image hooks copy this one in when it is there (listen only).
    if [ -f "$portcullisd-initramfs" ]; then
        inst 0755 "$portcullisd-initramfs" /usr/lib/portcullis/portcullisd-initramfs
    fi
fi
