#!/usr/bin/env bash
# Build (once, cached) the clear-text rescue system's root folder: Debian 12
# minbase plus OpenSSH server, cryptsetup, btrfs-progs, kexec-tools and
# extlinux (the test's main disk gets a BIOS bootloader for the reboot
# measurement). Nothing else: the point is that `portcullis rescue` needs only
# standard tools on the rescue side.
#
# Usage: tests/rescue/rootfs.sh      prints the folder on stdout
#
#   Cache: ${PORTCULLIS_RESCUE_CACHE:-<repo>/target/rescue-cache}/root-<hash>
#   (hash of this script). Downloaded .debs stay in <cache>/debootstrap so a
#   rebuild does not download again. Mirror: PORTCULLIS_DEBIAN_MIRROR, else
#   the host's first bookworm URI.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${PORTCULLIS_RESCUE_CACHE:-$repo/target/rescue-cache}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
log() { printf '%s rootfs.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

pkgs="openssh-server cryptsetup-bin btrfs-progs kexec-tools e2fsprogs util-linux kmod iproute2 extlinux syslinux-common"

mirror() {
    if [ -n "${PORTCULLIS_DEBIAN_MIRROR:-}" ]; then
        echo "$PORTCULLIS_DEBIAN_MIRROR"
        return
    fi
    local m
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }')
    if [ -z "$m" ]; then
        m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") { print uri; exit } }')
    fi
    [ -n "$m" ] || die "no bookworm mirror in the host's apt sources; set PORTCULLIS_DEBIAN_MIRROR"
    echo "$m"
}

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
fi
[ "$(id -u)" -eq 0 ] || die "debootstrap needs root"

mkdir -p "$cache/debootstrap"
exec 9>"$cache/.lock"
flock 9

key=$( { cat "$0"; echo "$pkgs"; } | sha256sum | cut -c1-16)
root=$cache/root-$key
if [ ! -f "$root/.complete" ]; then
    rm -rf "$root" "$root.tmp"
    log "debootstrap bookworm minbase + $pkgs (a few minutes, once)"
    start=$SECONDS
    # debootstrap replaces start-stop-daemon with a fake while it installs, so
    # the OpenSSH server is not started on the host.
    debootstrap --variant=minbase --include="${pkgs// /,}" \
        --cache-dir="$cache/debootstrap" bookworm "$root.tmp" "$(mirror)" \
        >"$cache/debootstrap.log" 2>&1 ||
        { tail -n 30 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: $cache/debootstrap.log)"; }
    rm -f "$root.tmp/var/cache/apt/archives/"*.deb
    rm -rf "$root.tmp/var/lib/apt/lists/"* "$root.tmp/usr/share/doc" "$root.tmp/usr/share/man" \
        "$root.tmp/usr/share/locale"
    echo "$key" >"$root.tmp/.complete"
    mv "$root.tmp" "$root"
    log "rescue root ready in $((SECONDS - start))s: $root"
fi
echo "$root"
