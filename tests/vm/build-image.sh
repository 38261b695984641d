#!/usr/bin/env bash
# Build a bootable test image for the QEMU end-to-end tests.
#
# Usage:
#   tests/vm/build-image.sh OUTDIR \
#       --portcullisd PATH        listener binary (static; a dynamic one gets its ldd closure)
#       --config PATH             -> /etc/portcullis/portcullisd.toml
#       --host-key PATH           -> /etc/portcullis/host_key (0600)
#       --authorized-keys PATH    -> /etc/portcullis/authorized_keys
#       --passphrase-file PATH    LUKS passphrase, only used to format the test disk
#       [--marker STRING]         printed by the real root's init (default PORTCULLIS-ROOT-REACHED)
#       [--extra-file SRC:DEST[:MODE]]   copy SRC into the initramfs at DEST (repeatable)
#       [--extra-modules "m1 m2"] more kernel modules (plus their deps) to load in the initramfs
#
# Passphrase: the content of --passphrase-file with trailing newlines removed is
# the LUKS key (byte for byte). A client must send exactly those bytes.
#
# Produces (all mode 0600, the initrd holds the host key):
#   OUTDIR/vmlinuz     Debian bookworm cloud kernel (see fetch.sh)
#   OUTDIR/initrd.img  zstd-compressed newc cpio
#   OUTDIR/disk.img    raw whole-disk LUKS2 (label portcullis-test), guest /dev/vda,
#                      holding an ext4 root whose /sbin/init prints the marker and
#                      PORTCULLIS-* status lines, then powers off
#   OUTDIR/image.env   KERNEL_RELEASE=, LUKS_UUID=, LUKS_LABEL=, MARKER=
#
# Guest side:
#   /init runs `/usr/sbin/portcullisd --config /etc/portcullis/portcullisd.toml`
#   in the foreground after networking (udhcpc on eth0, 10.0.2.15 under QEMU
#   user networking). Exit 0: the network is flushed, /dev/mapper/root is
#   mounted read-only and switch_root runs /sbin/init. Non-zero: prints
#   "PORTCULLIS-INIT-FAILED: ..." and starts a shell on the console.
#   Kernel cmdline: portcullis.debug (set -x, verbose printk),
#                   portcullis.shell (shell on the console before the listener),
#                   portcullis.log=FILTER (exported as RUST_LOG to the listener).
#   The guest scripts are tests/vm/guest/{initramfs-init,udhcpc.script,root-init}.
#   The real root's init prints, then powers off:
#     PORTCULLIS-LISTENING: none|<local addr:port of sockets listening on 22>
#     PORTCULLIS-ETH0-ADDR: none|<addresses>   PORTCULLIS-ETH0-STATE: down|up
#     PORTCULLIS-LEFTOVER-PROCS: none|<pid:comm ...>  (from the initramfs)
#     PORTCULLIS-ROOT: /dev/mapper/root ext4 ro,...   PORTCULLIS-UPTIME: <s>
#     <marker>
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

die() { echo "build-image.sh: $*" >&2; exit 1; }
log() { echo "build-image.sh: $*" >&2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

outdir=
portcullisd=
config=
host_key=
authorized_keys=
passphrase_file=
marker=PORTCULLIS-ROOT-REACHED
extra_files=()
modules="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
failover net_failover virtio_net dm-mod dm-crypt cryptd crypto_simd aesni-intel ecb xts
af_alg algif_skcipher algif_hash ext4 jbd2 mbcache crc16 crc32c_generic crc32c_intel"

while [ $# -gt 0 ]; do
    case $1 in
        --portcullisd) portcullisd=${2:?}; shift 2 ;;
        --config) config=${2:?}; shift 2 ;;
        --host-key) host_key=${2:?}; shift 2 ;;
        --authorized-keys) authorized_keys=${2:?}; shift 2 ;;
        --passphrase-file) passphrase_file=${2:?}; shift 2 ;;
        --marker) marker=${2:?}; shift 2 ;;
        --extra-file) extra_files+=("${2:?}"); shift 2 ;;
        --extra-modules) modules="$modules ${2:?}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option: $1" ;;
        *) [ -z "$outdir" ] || die "more than one OUTDIR"; outdir=$1; shift ;;
    esac
done
[ -n "$outdir" ] || { usage >&2; exit 2; }
for v in portcullisd config host_key authorized_keys passphrase_file; do
    [ -n "${!v}" ] || die "missing --${v//_/-}"
    [ -f "${!v}" ] || die "--${v//_/-}: no such file: ${!v}"
done
case $marker in *[![:print:]]*|'') die "--marker must be printable" ;; esac

umask 077
[ "$(id -u)" -eq 0 ] || log "warning: not root; file owners in the images come from the cpio/mkfs options"

eval "$("$here/fetch.sh" --print)"
: "${KERNEL_RELEASE:?}" "${KERNEL_ROOT:?}" "${VMLINUZ:?}" "${BUSYBOX:?}"

mkdir -p "$outdir"
work=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-image.XXXXXX")
cleanup() {
    if [ -f "$work/key" ]; then
        shred -u "$work/key" 2>/dev/null || rm -f "$work/key"
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# install_file SRC ROOT DEST MODE
install_file() {
    local src=$1 root=$2 dest=$3 mode=$4
    mkdir -p "$root$(dirname "$dest")"
    rm -f "$root$dest" # never write through a busybox applet symlink
    cp -L "$src" "$root$dest"
    chmod "$mode" "$root$dest"
}

# Copy a binary and its shared-library closure, libraries at the paths ldd
# reports (so the dynamic loader finds them without ld.so.cache).
install_binary() { # SRC ROOT DEST
    local src=$1 root=$2 dest=$3 lddout lib
    install_file "$src" "$root" "$dest" 0755
    lddout=$(LC_ALL=C ldd "$src" 2>&1 || true)
    if grep -qE 'not a dynamic executable|statically linked' <<<"$lddout"; then
        return 0
    fi
    while read -r lib; do
        [ -n "$lib" ] || continue
        [ -e "$root$lib" ] || install_file "$lib" "$root" "$lib" 0755
    done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$lddout")
}

install_busybox() { # ROOT
    local root=$1 applet
    mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin"
    install_file "$BUSYBOX" "$root" /bin/busybox 0755
    while read -r applet; do
        applet=/${applet#/} # --list-full prints paths without the leading slash
        case $applet in
            /bin/busybox|/) continue ;;
        esac
        mkdir -p "$root$(dirname "$applet")"
        [ -e "$root$applet" ] || ln -s /bin/busybox "$root$applet"
    done < <("$BUSYBOX" --list-full)
}

# --------------------------------------------------------------------------
# initramfs
# --------------------------------------------------------------------------
ird=$work/initramfs
mkdir -p "$ird"/{dev,proc,sys,run,tmp,newroot,etc/portcullis,root,var}
chmod 0755 "$ird" "$ird"/{dev,proc,sys,run,newroot,etc,etc/portcullis,root,var}
chmod 1777 "$ird/tmp"
install_busybox "$ird"

# cryptsetup with its closure, plus libgcc_s.so.1: glibc dlopens it for
# pthread_exit/cancel and argon2 with 2+ threads fails without it (looks like a
# wrong passphrase).
cryptsetup_bin=$(command -v cryptsetup) || die "cryptsetup not found"
install_binary "$cryptsetup_bin" "$ird" /sbin/cryptsetup
libgcc=$(ldconfig -p | awk '/libgcc_s\.so\.1 .*x86-64/ && !f { print $NF; f = 1 }')
[ -n "$libgcc" ] || libgcc=$(ldconfig -p | awk '/libgcc_s\.so\.1/ && !f { print $NF; f = 1 }')
[ -n "$libgcc" ] || die "libgcc_s.so.1 not found on the host"
libc_dir=$(LC_ALL=C ldd "$cryptsetup_bin" | awk '$1 ~ /^libc\.so/ { print $3 }' | xargs dirname)
install_file "$libgcc" "$ird" "$libc_dir/libgcc_s.so.1" 0755

install_binary "$portcullisd" "$ird" /usr/sbin/portcullisd
install_file "$config" "$ird" /etc/portcullis/portcullisd.toml 0644
install_file "$host_key" "$ird" /etc/portcullis/host_key 0600
install_file "$authorized_keys" "$ird" /etc/portcullis/authorized_keys 0644
for spec in "${extra_files[@]}"; do
    IFS=: read -r src dest mode <<<"$spec"
    if [ ! -f "$src" ] || [ -z "$dest" ]; then
        die "--extra-file $spec: want SRC:DEST[:MODE] with an existing SRC"
    fi
    install_file "$src" "$ird" "$dest" "${mode:-0644}"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ird/etc/passwd"
printf 'root:x:0:\n' >"$ird/etc/group"
chmod 0644 "$ird/etc/passwd" "$ird/etc/group"

# Kernel modules: closure from modules.dep, in load order, deduplicated.
kmoddir=$KERNEL_ROOT/lib/modules/$KERNEL_RELEASE
mkdir -p "$ird/lib/modules/$KERNEL_RELEASE"
: >"$work/modules.load"
for m in $modules; do
    if ! deps=$(modprobe -d "$KERNEL_ROOT" -S "$KERNEL_RELEASE" --show-depends "$m" 2>&1); then
        die "kernel module $m: $deps"
    fi
    while read -r kind path _; do
        [ "$kind" = insmod ] || continue
        rel=${path#"$kmoddir"/}
        # Newer kernels ship compressed modules; busybox insmod wants plain .ko.
        case $rel in
            *.ko.xz) decomp="xz -dc" ;;
            *.ko.zst) decomp="zstd -qdc" ;;
            *.ko.gz) decomp="gzip -dc" ;;
            *) decomp= ;;
        esac
        rel=${rel%.xz} rel=${rel%.zst} rel=${rel%.gz}
        grep -qxF "$rel" "$work/modules.load" && continue
        echo "$rel" >>"$work/modules.load"
        if [ -n "$decomp" ]; then
            mkdir -p "$ird/lib/modules/$KERNEL_RELEASE/$(dirname "$rel")"
            $decomp "$path" >"$ird/lib/modules/$KERNEL_RELEASE/$rel"
        else
            install_file "$path" "$ird" "/lib/modules/$KERNEL_RELEASE/$rel" 0644
        fi
    done <<<"$deps"
done
for f in modules.builtin modules.builtin.modinfo modules.order; do
    if [ -f "$kmoddir/$f" ]; then
        install_file "$kmoddir/$f" "$ird" "/lib/modules/$KERNEL_RELEASE/$f" 0644
    fi
done
depmod -b "$ird" "$KERNEL_RELEASE"
install_file "$work/modules.load" "$ird" /etc/portcullis/modules.load 0644
log "initramfs modules: $(tr '\n' ' ' <"$work/modules.load" | sed 's#[^ ]*/##g')"

install_file "$here/guest/udhcpc.script" "$ird" /etc/udhcpc.script 0755
install_file "$here/guest/initramfs-init" "$ird" /init 0755

# umask 077 made private directories; the tree itself lives in a private
# temp dir, so give the guest ordinary modes.
find "$ird" -type d -exec chmod 0755 {} +
chmod 1777 "$ird/tmp"
( cd "$ird" && find . -print0 | LC_ALL=C sort -z |
    cpio --null --create --format=newc --owner=0:0 --quiet ) |
    zstd -q -10 -T0 -o "$work/initrd.img"

# --------------------------------------------------------------------------
# root filesystem and LUKS disk
# --------------------------------------------------------------------------
rootfs=$work/rootfs
mkdir -p "$rootfs"/{dev,proc,sys,run,tmp,etc,root}
chmod 0755 "$rootfs" "$rootfs"/{dev,proc,sys,run,etc,root}
chmod 1777 "$rootfs/tmp"
install_busybox "$rootfs"
find "$rootfs" -type d -exec chmod 0755 {} +
chmod 1777 "$rootfs/tmp"
printf '%s\n' "$marker" >"$rootfs/etc/portcullis-marker"
chmod 0644 "$rootfs/etc/portcullis-marker"
install_file "$here/guest/root-init" "$rootfs" /sbin/init 0755

fs_mib=16
luks_reserve_mib=32 # LUKS2 header (16 MiB) and room for the offline data shift
truncate -s "${fs_mib}M" "$work/disk.img"
mkfs.ext4 -q -F -L portcullis-root -E root_owner=0:0 -d "$rootfs" "$work/disk.img"
truncate -s "$((fs_mib + luks_reserve_mib))M" "$work/disk.img"

# The key file is used verbatim by cryptsetup: write the passphrase without
# trailing newlines to a private temp file.
: >"$work/key"
chmod 0600 "$work/key"
printf '%s' "$(cat "$passphrase_file")" >"$work/key"
[ -s "$work/key" ] || die "--passphrase-file is empty"

# No device-mapper needed: offline encryption of the plain file in place.
cryptsetup reencrypt --encrypt --type luks2 --batch-mode \
    --reduce-device-size "${luks_reserve_mib}M" \
    --pbkdf argon2id --pbkdf-memory 65536 --pbkdf-force-iterations 4 --pbkdf-parallel 2 \
    --label portcullis-test --key-file "$work/key" "$work/disk.img" >&2
cryptsetup isLuks --type luks2 "$work/disk.img" || die "disk.img is not LUKS2"
cryptsetup open --test-passphrase --key-file "$work/key" "$work/disk.img" ||
    die "the passphrase does not open disk.img"
uuid=$(cryptsetup luksUUID "$work/disk.img")
shred -u "$work/key" 2>/dev/null || rm -f "$work/key"

cp "$VMLINUZ" "$work/vmlinuz"
cat >"$work/image.env" <<EOF
KERNEL_RELEASE=$KERNEL_RELEASE
LUKS_UUID=$uuid
LUKS_LABEL=portcullis-test
MARKER=$marker
EOF
for f in vmlinuz initrd.img disk.img image.env; do
    chmod 0600 "$work/$f"
    mv -f "$work/$f" "$outdir/$f"
done
log "kernel $KERNEL_RELEASE, initrd $(du -k "$outdir/initrd.img" | cut -f1) KiB, LUKS UUID $uuid"
echo "LUKS_UUID=$uuid"
