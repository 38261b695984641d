#!/usr/bin/env bash
# Build (once, cached) a Debian 12 root folder for one initramfs flavour.
#
# Usage: tests/distro/rootfs.sh FLAVOUR      FLAVOUR: initramfs-tools | dracut | mkinitcpio
#   Prints the folder of the ready root on stdout.
#
#   Stage 1, shared: debootstrap --variant=minbase bookworm with the packages
#   both flavours need, in $cache/base-<hash> (hash of the package list and
#   this script). Stage 2: a copy with the flavour's packages and the kernel,
#   installed with apt in a chroot, in $cache/root-<flavour>-<hash>. Package
#   downloads are kept in $cache/apt so a rebuild does not download again.
#   The mirror is the host's Debian mirror (first bookworm URI in its apt
#   sources) unless PORTCULLIS_DEBIAN_MIRROR is set.
set -euo pipefail
# shellcheck source=tests/distro/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

flavour=${1:-}
base_pkgs="systemd-sysv udev kmod iproute2 cryptsetup e2fsprogs procps"
case $flavour in
    initramfs-tools)
        # openssh-server: the booted system's own SSH, for the preflight test
        # (preflight.sh); masked, started only by portcullis.test.sshd.
        flavour_pkgs="initramfs-tools cryptsetup-initramfs busybox klibc-utils linux-image-cloud-amd64 openssh-server" ;;
    dracut)
        flavour_pkgs="dracut dracut-network dbus linux-image-cloud-amd64" ;;
    mkinitcpio)
        # What upstream mkinitcpio runs with: bsdtar and zstd to write the
        # image; Debian's busybox stands in for Arch's mkinitcpio-busybox
        # (the test links only Arch's applets; busybox-static would not do:
        # its ash runs every applet even without a link); initramfs-tools
        # only because the kernel package wants a generator.
        flavour_pkgs="busybox libarchive-tools zstd initramfs-tools linux-image-cloud-amd64" ;;
    *) die "usage: rootfs.sh initramfs-tools|dracut|mkinitcpio" ;;
esac

mirror() {
    if [ -n "${PORTCULLIS_DEBIAN_MIRROR:-}" ]; then
        echo "$PORTCULLIS_DEBIAN_MIRROR"
        return
    fi
    local m
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" && $3 ~ /^bookworm$/ { print $2; exit }')
    if [ -z "$m" ]; then
        m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '
            /^URIs:/ { uri = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") found = uri }
            /^$/ { if (found) { print found; exit } }
            END { if (found) print found }' | head -n1)
    fi
    [ -n "$m" ] || die "no bookworm mirror in the host's apt sources; set PORTCULLIS_DEBIAN_MIRROR"
    echo "$m"
}

ensure_host_packages
mkdir -p "$distro_cache/apt/archives/partial" "$distro_cache/debootstrap"
exec 8>"$distro_cache/.rootfs.lock"
flock 8

self="$distro_here/rootfs.sh"
base_key=$(hash_of "$self" "$base_pkgs")
base="$distro_cache/base-$base_key"
if [ ! -f "$base/.complete" ]; then
    rm -rf "$base" "$base.tmp"
    dlog "debootstrap bookworm (minbase + $base_pkgs) into $base"
    start=$SECONDS
    debootstrap --variant=minbase --include="${base_pkgs// /,}" \
        --cache-dir="$distro_cache/debootstrap" bookworm "$base.tmp" "$(mirror)" \
        >"$distro_cache/debootstrap.log" 2>&1 ||
        { tail -n 30 "$distro_cache/debootstrap.log" >&2; die "debootstrap failed (log: $distro_cache/debootstrap.log)"; }
    rm -f "$base.tmp/var/cache/apt/archives/"*.deb
    # No daemons from package scripts in a chroot.
    printf '#!/bin/sh\nexit 101\n' >"$base.tmp/usr/sbin/policy-rc.d"
    chmod 0755 "$base.tmp/usr/sbin/policy-rc.d"
    echo "$base_key" >"$base.tmp/.complete"
    mv "$base.tmp" "$base"
    dlog "debootstrap took $((SECONDS - start))s"
fi

root_key=$(hash_of "$base_key" "$flavour" "$flavour_pkgs")
root="$distro_cache/root-$flavour-$root_key"
if [ ! -f "$root/.complete" ]; then
    rm -rf "$root" "$root.tmp"
    dlog "making the $flavour root: apt-get install $flavour_pkgs"
    start=$SECONDS
    cp -a "$base" "$root.tmp"
    rm -f "$root.tmp/.complete"
    # The kernel's postinst builds an initramfs for a root that is not ours
    # yet; the tests build their own after installing the hooks.
    mkdir -p "$root.tmp/etc/apt/apt.conf.d"
    cat >"$root.tmp/etc/apt/apt.conf.d/90portcullis-test" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Dpkg::Use-Pty "false";
APT
    # shellcheck disable=SC2086 # a word list
    {
        CHROOT_APT_ARCHIVES="$distro_cache/apt/archives" in_chroot "$root.tmp" apt-get update -qq &&
            CHROOT_APT_ARCHIVES="$distro_cache/apt/archives" in_chroot "$root.tmp" \
                apt-get install -y -qq $flavour_pkgs
    } >"$distro_cache/apt-$flavour.log" 2>&1 ||
        { tail -n 30 "$distro_cache/apt-$flavour.log" >&2; die "apt-get install failed (log: $distro_cache/apt-$flavour.log)"; }
    echo "$root_key" >"$root.tmp/.complete"
    mv "$root.tmp" "$root"
    dlog "$flavour root took $((SECONDS - start))s"
fi
# Older versions of this cache, and leftovers of interrupted builds (we hold
# the lock, so no build is running), are garbage now.
for old in "$distro_cache"/base-* "$distro_cache"/root-"$flavour"-*; do
    case $old in "$base"|"$root") ;; *) [ -d "$old" ] && rm -rf "$old" ;; esac
done
echo "$root"
