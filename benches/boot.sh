#!/usr/bin/env bash
# Boot benchmark against the peer: the same Debian 12 VM (initramfs-tools,
# LUKS2 root, cloud kernel) built three times from one root folder:
#   plain       cryptsetup-initramfs only (no remote unlock), for the size delta
#   dropbear    + Debian's dropbear-initramfs, an authorized key
#   portcullis  + our initramfs-tools hooks, config, host key, authorized key
# Prints each image's size and what each tool adds, then boots dropbear and
# portcullis interleaved (D P D P ...) and times QEMU start -> 127.0.0.1:PORT
# answering with an SSH banner (guest port 22). Figures only, no thresholds.
#
# Usage: benches/boot.sh [RUNS]        RUNS per variant, default 3
#   PORTCULLIS_BIN_DIR=DIR   use DIR/portcullisd instead of tests/build-release.sh
#
# QEMU: TCG (no KVM), -cpu max, 2 vCPUs, 1 GiB, the same kernel command line
# (ip=dhcp) and the same disks for both. Root needed (chroot, apt in it).
# Work folder: target/bench-boot (roots, images, serial logs, results.txt).
set -euo pipefail
bench_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/distro/lib.sh
. "$bench_here/../tests/distro/lib.sh"

runs=${1:-3}
case $runs in '' | *[!0-9]*) die "usage: benches/boot.sh [RUNS] (a number of boots per variant)" ;; esac
[ "$runs" -ge 1 ] || die "RUNS must be at least 1"
[ "$(id -u)" -eq 0 ] || die "run as root: the images are built with chroot and apt"
work=$distro_repo/target/bench-boot
mkdir -p "$work"
chmod 0700 "$work"
umask 077

if [ -n "${PORTCULLIS_BIN_DIR:-}" ]; then
    PD=$PORTCULLIS_BIN_DIR/portcullisd
else
    dlog "release build (tests/build-release.sh)"
    PD=$distro_repo/$(cd "$distro_repo" && tests/build-release.sh)/portcullisd
fi
[ -x "$PD" ] || die "no portcullisd at $PD; build it with tests/build-release.sh"
ensure_host_packages
ensure_keys "$PD"
src=$("$distro_repo/tests/distro/rootfs.sh" initramfs-tools)

# Two copies of the cached root, so the cache stays untouched and the
# dropbear hooks never reach the other images.
fresh_root() { # NAME -> prints the folder
    local r=$work/root-$1
    rm -rf "$r"
    cp -a "$src" "$r"
    prepare_guest_root "$r" "luks,discard,initramfs"
    # As in tests/distro/build-initramfs-tools.sh: no dm-crypt root in the
    # chroot, so force cryptsetup into the image.
    mkdir -p "$r/etc/cryptsetup-initramfs"
    echo 'CRYPTSETUP=y' >"$r/etc/cryptsetup-initramfs/conf-hook"
    echo "$r"
}
kver=$(cd "$src/lib/modules" && ls | sort -V | tail -n1)
mkimage() { # ROOT NAME: mkinitramfs in the chroot -> $work/NAME.img
    in_chroot "$1" mkinitramfs -o /tmp/bench.img "$kver" >"$work/mkinitramfs-$2.log" 2>&1 ||
        { tail -n 20 "$work/mkinitramfs-$2.log" >&2; die "mkinitramfs for $2 failed (log $work/mkinitramfs-$2.log)"; }
    mv "$1/tmp/bench.img" "$work/$2.img"
}

dlog "building the images (kernel $kver)"
r1=$(fresh_root portcullis)
mkimage "$r1" plain
"$distro_repo/initramfs/install.sh" initramfs-tools --destdir "$r1" >/dev/null
install_portcullis "$r1" "$PD" auto
mkimage "$r1" portcullis
cp "$r1/boot/vmlinuz-$kver" "$work/vmlinuz"

r2=$(fresh_root dropbear)
CHROOT_APT_ARCHIVES="$distro_cache/apt/archives" in_chroot "$r2" \
    apt-get install -y -qq dropbear-initramfs >"$work/apt-dropbear.log" 2>&1 ||
    { tail -n 20 "$work/apt-dropbear.log" >&2; die "apt-get install dropbear-initramfs failed (log $work/apt-dropbear.log)"; }
install -m 0600 "$KEYS/admin.pub" "$r2/etc/dropbear/initramfs/authorized_keys"
mkimage "$r2" dropbear
dropbear_version=$(in_chroot "$r2" dpkg-query -W -f '${Version}' dropbear-initramfs)
for v in dropbear portcullis; do
    cp "$work/$v.img" "$r1/tmp/list.img"
    in_chroot "$r1" lsinitramfs /tmp/list.img >"$work/$v.list"
done
rm -f "$r1/tmp/list.img"
grep -qE '(^|/)sbin/dropbear$' "$work/dropbear.list" || die "no dropbear in $work/dropbear.img"
grep -qE '(^|/)sbin/portcullisd$' "$work/portcullis.list" || die "no portcullisd in $work/portcullis.img"
for v in dropbear portcullis; do
    grep -qE '/virtio_net\.ko' "$work/$v.list" || die "$v image lacks virtio_net: no network at boot"
done

# The disks: a LUKS2 root and data volume with the UUIDs the crypttab names.
# Both variants stop at the listener, so the volumes hold a marker only.
if [ ! -f "$work/disks.done" ]; then
    mkdir -p "$work/vol"
    echo bench >"$work/vol/volume-id"
    make_luks_image "$work/vol" "$work/root.img" "$ROOT_UUID" "$KEYS/passphrase" pcroot
    make_luks_image "$work/vol" "$work/data.img" "$DATA_UUID" "$KEYS/passphrase" pcdata
    touch "$work/disks.done"
fi

trap 'vm_stop' EXIT
declare -A times
boot_once() { # VARIANT RUN -> seconds on stdout
    local t0 got t1
    t0=$EPOCHREALTIME
    vm_start "$work" "$1-$2" "$work/vmlinuz" "$work/$1.img" \
        "root=/dev/mapper/root ro ip=dhcp" "$work/root.img" "$work/data.img"
    got=$("$bench_here/wait-banner.py" "$VM_PORT" 600) ||
        { vm_stop; die "$1 run $2: no SSH banner within 600 s (serial log $VM_LOG)"; }
    t1=$EPOCHREALTIME
    vm_stop
    dlog "$1 run $2: $got"
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
for i in $(seq "$runs"); do
    for v in dropbear portcullis; do
        times[$v,$i]=$(boot_once "$v" "$i")
    done
done

stats() { # numbers... -> "min median max"
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 }
        END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
              printf "%.2f %.2f %.2f", a[1], m, a[NR] }'
}
size() { stat -c %s "$work/$1.img"; }
# Debian's chroot has no zstd, so mkinitramfs fell back to gzip (it says so
# in its log); recompressing shows the sizes at the issue's zstd -19 too.
for v in plain dropbear portcullis; do
    zcat "$work/$v.img" | nice zstd -19 -q -T0 -c | wc -c >"$work/$v.zst-size"
done
zsize() { cat "$work/$1.zst-size"; }
kb() { awk -v b="$1" 'BEGIN { printf "%.0f KB", b / 1000 }'; }
{
    echo "== boot benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) host cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "kernel $kver; QEMU TCG -cpu max -smp 2 -m 1024; dropbear-initramfs $dropbear_version;" \
        "portcullisd $(stat -c %s "$PD") bytes ($(cat "$(dirname "$PD")/BUILD" 2>/dev/null || echo unknown build))"
    echo "== initramfs image size as mkinitramfs wrote it ($(file -b "$work/plain.img" | cut -d, -f1))"
    for v in plain dropbear portcullis; do
        printf '%-11s %9d bytes (%s)' "$v" "$(size "$v")" "$(kb "$(size "$v")")"
        [ "$v" = plain ] && echo || echo ", adds $(kb $(($(size "$v") - $(size plain)))) to plain"
    done
    echo "== the same images recompressed with zstd -19 (the figure issue 14 quotes)"
    for v in plain dropbear portcullis; do
        printf '%-11s %9d bytes (%s)' "$v" "$(zsize "$v")" "$(kb "$(zsize "$v")")"
        [ "$v" = plain ] && echo || echo ", adds $(kb $(($(zsize "$v") - $(zsize plain)))) to plain"
    done
    echo "== QEMU start -> SSH banner on port 22, seconds (interleaved, $runs runs each)"
    for i in $(seq "$runs"); do
        printf 'run %d: dropbear %6.2f  portcullis %6.2f  ratio %.2f\n' "$i" \
            "${times[dropbear,$i]}" "${times[portcullis,$i]}" \
            "$(awk -v a="${times[portcullis,$i]}" -v b="${times[dropbear,$i]}" 'BEGIN { print a / b }')"
    done
    for v in dropbear portcullis; do
        vals=()
        for i in $(seq "$runs"); do vals+=("${times[$v,$i]}"); done
        read -r mn md mx <<<"$(stats "${vals[@]}")"
        printf '%-11s min %6.2f  median %6.2f  max %6.2f\n' "$v" "$mn" "$md" "$mx"
    done
} | tee "$work/results.txt"
