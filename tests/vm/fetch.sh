#!/usr/bin/env bash
# Fetch everything the QEMU end-to-end tests need, once, into a cache.
#
# Usage: tests/vm/fetch.sh [--print]
#
#   Cache: ${PORTCULLIS_VM_CACHE:-<repo>/target/vm-cache}
#   Layout after a successful run:
#     kernel/vmlinuz               Debian bookworm cloud kernel (extracted, never installed)
#     kernel/release               kernel release string, e.g. 6.1.0-56-cloud-amd64
#     kernel/lib/modules/<release> module tree, depmod'ed
#     busybox/bin/busybox          static busybox (from busybox-static, extracted)
#
#   Also installs (apt-get, sudo when not root) the host tools that the image
#   build and boot need when they are missing: qemu-system-x86 cryptsetup-bin
#   e2fsprogs cpio zstd kmod openssh-client.
#
#   Idempotent: a second run does nothing but checks. Safe to run concurrently
#   (flock on the cache). --print prints KEY=VALUE lines describing the cache.
#
#   Environment:
#     PORTCULLIS_VM_CACHE        cache directory
#     PORTCULLIS_KERNEL_PACKAGE  kernel metapackage (default linux-image-cloud-amd64)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${PORTCULLIS_VM_CACHE:-$repo/target/vm-cache}
meta_pkg=${PORTCULLIS_KERNEL_PACKAGE:-linux-image-cloud-amd64}
print=0
for arg in "$@"; do
    case $arg in
        --print) print=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "fetch.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
log() { echo "fetch.sh: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root (or sudo) to run: $*"
        exit 1
    fi
}

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq
        apt_updated=1
    fi
}

# --- host tools -------------------------------------------------------------
missing=()
need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || missing+=("$2")
}
need qemu-system-x86_64 qemu-system-x86
need cryptsetup cryptsetup-bin
need mkfs.ext4 e2fsprogs
need cpio cpio
need zstd zstd
need depmod kmod
need modprobe kmod
need ssh openssh-client
need ssh-keygen openssh-client
need dpkg-deb dpkg
need flock util-linux
if [ "${#missing[@]}" -gt 0 ]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    log "installing missing host packages: ${missing[*]}"
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# apt-get download as root would warn that _apt cannot write into the cache.
apt_download() { # apt_download DESTDIR PACKAGE...
    local dest=$1; shift
    if [ "$(id -u)" -eq 0 ]; then
        (cd "$dest" && apt-get download -q -o APT::Sandbox::User=root "$@") >&2
    else
        (cd "$dest" && apt-get download -q "$@") >&2
    fi
}

# Resolve a package's first "Depends: linux-image-..." (the versioned image).
resolve_kernel_pkg() {
    apt-cache depends "$meta_pkg" 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'
}

# --- kernel -----------------------------------------------------------------
kpkg=$(resolve_kernel_pkg || true)
if [ -z "$kpkg" ]; then
    apt_update_once
    kpkg=$(resolve_kernel_pkg || true)
fi
if [ -z "$kpkg" ]; then
    # Offline but already fetched: keep what we have.
    if [ -f "$cache/kernel/.complete" ]; then
        kpkg=$(cat "$cache/kernel/.complete")
        log "cannot resolve $meta_pkg; keeping cached $kpkg"
    else
        log "cannot resolve the versioned package behind $meta_pkg (apt sources for bookworm?)"
        exit 1
    fi
fi

if [ "$(cat "$cache/kernel/.complete" 2>/dev/null || true)" != "$kpkg" ]; then
    log "fetching $kpkg"
    tmp=$(mktemp -d "$cache/.kernel.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    mkdir "$tmp/deb" "$tmp/root"
    chmod 0755 "$tmp/deb"
    apt_download "$tmp/deb" "$kpkg"
    dpkg -x "$tmp"/deb/*.deb "$tmp/root"
    release=$(find "$tmp/root/lib/modules" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | head -n1)
    [ -n "$release" ] || { log "no lib/modules/<release> in $kpkg"; exit 1; }
    mkdir "$tmp/kernel"
    cp "$tmp/root/boot/vmlinuz-$release" "$tmp/kernel/vmlinuz"
    cp "$tmp/root/boot/config-$release" "$tmp/kernel/config" 2>/dev/null || true
    mkdir -p "$tmp/kernel/lib/modules"
    mv "$tmp/root/lib/modules/$release" "$tmp/kernel/lib/modules/$release"
    depmod -b "$tmp/kernel" "$release"
    echo "$release" >"$tmp/kernel/release"
    echo "$kpkg" >"$tmp/kernel/.complete"
    rm -rf "$cache/kernel"
    mv "$tmp/kernel" "$cache/kernel"
    rm -rf "$tmp"
    trap - EXIT
fi
release=$(cat "$cache/kernel/release")

# --- static busybox -----------------------------------------------------------
# Extracted rather than installed: busybox-static conflicts with the dynamic
# busybox package that many hosts have (initramfs-tools recommends it).
if [ ! -f "$cache/busybox/.complete" ]; then
    log "fetching busybox-static"
    apt-cache show busybox-static >/dev/null 2>&1 || apt_update_once
    tmp=$(mktemp -d "$cache/.busybox.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    mkdir "$tmp/deb" "$tmp/root"
    chmod 0755 "$tmp/deb"
    apt_download "$tmp/deb" busybox-static
    dpkg -x "$tmp"/deb/*.deb "$tmp/root"
    bb="$tmp/root/bin/busybox"
    [ -x "$bb" ] || bb="$tmp/root/usr/bin/busybox"
    [ -x "$bb" ] || { log "no busybox binary in busybox-static"; exit 1; }
    lddout=$(LC_ALL=C ldd "$bb" 2>&1 || true)
    if ! grep -qE 'not a dynamic executable|statically linked' <<<"$lddout"; then
        log "busybox from busybox-static is not static?"
        exit 1
    fi
    mkdir -p "$tmp/busybox/bin"
    cp "$bb" "$tmp/busybox/bin/busybox"
    basename "$tmp"/deb/*.deb >"$tmp/busybox/.complete"
    rm -rf "$cache/busybox"
    mv "$tmp/busybox" "$cache/busybox"
    rm -rf "$tmp"
    trap - EXIT
fi

if [ "$print" -eq 1 ]; then
    echo "PORTCULLIS_VM_CACHE=$cache"
    echo "KERNEL_PACKAGE=$(cat "$cache/kernel/.complete")"
    echo "KERNEL_RELEASE=$release"
    echo "KERNEL_ROOT=$cache/kernel"
    echo "VMLINUZ=$cache/kernel/vmlinuz"
    echo "BUSYBOX=$cache/busybox/bin/busybox"
else
    log "ok: kernel $release, busybox $(cat "$cache/busybox/.complete") in $cache"
fi
