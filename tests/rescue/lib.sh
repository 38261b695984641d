# shellcheck shell=bash
# Helpers for the rescue VM test (sourced by run.sh, never run).
#
#   install_file SRC ROOT DEST MODE     copy into a tree
#   install_binary SRC ROOT DEST        a binary and its ldd closure
#   install_busybox ROOT                static busybox and its applet links
#   install_modules ROOT LIST MODE      kernel modules + deps (modules.dep order)
#                                       into ROOT/lib/modules/REL; MODE plain
#                                       decompresses (busybox insmod), asis keeps
#   build_rescue OUT TREE AUTHKEYS      RAM rescue system: OUT/vmlinuz, OUT/initrd.img
#   build_main OUT ...                  main disk (partitioned, empty), the /boot
#                                       and root trees as tarballs
#   vm_start LOG PIDFILE PORT DISK SNAPSHOT [KERNEL INITRD]
#                                       QEMU (TCG, 2 vCPUs) in the background; the
#                                       serial console goes to LOG, and what is
#                                       written to LOG.in is typed on it
set -o pipefail
rescue_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

rlog() { printf '%s run.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { rlog "FAIL: $*"; exit 1; }

install_file() {
    local src=$1 root=$2 dest=$3 mode=$4
    mkdir -p "$root$(dirname "$dest")"
    rm -f "$root$dest"
    cp -L "$src" "$root$dest"
    chmod "$mode" "$root$dest"
}

install_binary() {
    local src=$1 root=$2 dest=$3 lddout lib
    install_file "$src" "$root" "$dest" 0755
    lddout=$(LC_ALL=C ldd "$src" 2>&1 || true)
    grep -qE 'not a dynamic executable|statically linked' <<<"$lddout" && return 0
    while read -r lib; do
        [ -n "$lib" ] || continue
        [ -e "$root$lib" ] || install_file "$lib" "$root" "$lib" 0755
    done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$lddout")
}

install_busybox() {
    local root=$1 applet
    mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin"
    install_file "$BUSYBOX" "$root" /bin/busybox 0755
    while read -r applet; do
        applet=/${applet#/}
        case $applet in /bin/busybox|/) continue ;; esac
        mkdir -p "$root$(dirname "$applet")"
        [ -e "$root$applet" ] || ln -s /bin/busybox "$root$applet"
    done < <("$BUSYBOX" --list-full)
}

install_modules() { # ROOT "LIST" plain|asis -> ROOT/etc/modules.load (relative paths, load order)
    local root=$1 list=$2 mode=$3 m deps kind path rel decomp kmoddir
    kmoddir=$KERNEL_ROOT/lib/modules/$KERNEL_RELEASE
    mkdir -p "$root/lib/modules/$KERNEL_RELEASE" "$root/etc"
    : >"$root/etc/modules.load"
    for m in $list; do
        deps=$(modprobe -d "$KERNEL_ROOT" -S "$KERNEL_RELEASE" --show-depends "$m" 2>&1) ||
            die "kernel module $m: $deps"
        while read -r kind path _; do
            [ "$kind" = insmod ] || continue
            rel=${path#"$kmoddir"/}
            decomp=
            if [ "$mode" = plain ]; then
                case $rel in
                    *.ko.xz) decomp="xz -dc" ;;
                    *.ko.zst) decomp="zstd -qdc" ;;
                    *.ko.gz) decomp="gzip -dc" ;;
                esac
                rel=${rel%.xz} rel=${rel%.zst} rel=${rel%.gz}
            fi
            grep -qxF "$rel" "$root/etc/modules.load" && continue
            echo "$rel" >>"$root/etc/modules.load"
            mkdir -p "$root/lib/modules/$KERNEL_RELEASE/$(dirname "$rel")"
            if [ -n "$decomp" ]; then
                $decomp "$path" >"$root/lib/modules/$KERNEL_RELEASE/$rel"
            else
                cp "$path" "$root/lib/modules/$KERNEL_RELEASE/$rel"
            fi
        done <<<"$deps"
    done
    for f in modules.builtin modules.builtin.modinfo modules.order; do
        [ -f "$kmoddir/$f" ] && cp "$kmoddir/$f" "$root/lib/modules/$KERNEL_RELEASE/$f"
    done
    depmod -b "$root" "$KERNEL_RELEASE"
}

make_cpio() { # DIR OUT
    (cd "$1" && find . -print0 | LC_ALL=C sort -z |
        cpio --null --create --format=newc --owner=0:0 --quiet) | zstd -q -3 -T0 -o "$2"
}

# Modules both systems need: virtio disk, dm-crypt with AES-NI, btrfs.
BLOCK_MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
dm-mod dm-crypt cryptd crypto_simd aesni-intel ecb xts af_alg algif_skcipher crc32c_generic crc32c_intel btrfs"

build_rescue() { # OUT TREE AUTHORIZED_KEYS
    local out=$1 tree=$2 authkeys=$3 r
    r=$out/root
    rm -rf "$r"
    mkdir -p "$out"
    cp -a "$tree" "$r"
    rm -f "$r/.complete"
    # Lean: nothing the rescue work needs.
    rm -rf "$r/usr/share/perl" "$r/usr/lib/x86_64-linux-gnu/perl-base" "$r/usr/share/zoneinfo" \
        "$r/var/cache/apt" "$r/var/lib/apt" "$r/usr/share/i18n"
    install_modules "$r" "$BLOCK_MODULES failover net_failover virtio_net" asis
    cp "$r/etc/modules.load" "$r/etc/modules.rescue"
    sed -i 's#.*/##; s#\.ko.*##' "$r/etc/modules.rescue"
    install_file "$rescue_here/guest/rescue-init" "$r" /init 0755
    mkdir -p "$r/root/.ssh"
    install_file "$authkeys" "$r" /root/.ssh/authorized_keys 0600
    chmod 0700 "$r/root/.ssh"
    # One host key type, so the pinned fingerprint is the one offered.
    cat >"$r/etc/ssh/sshd_config.d/rescue.conf" <<'CONF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
CONF
    echo rescue >"$r/etc/hostname"
    make_cpio "$r" "$out/initrd.img"
    cp "$VMLINUZ" "$out/vmlinuz"
    rm -rf "$r"
}

# The main system: a partitioned disk (1: /boot, 2: LUKS2 + btrfs, both made
# inside the rescue VM), the /boot tree (kernel, initramfs, extlinux.conf) and
# the root tree for the btrfs subvolume @.
build_main() { # OUT LUKS_UUID BTRFS_UUID BOOT_UUID MARKER
    local out=$1 luks_uuid=$2 btrfs_uuid=$3 boot_uuid=$4 marker=$5 ird bootdir root
    mkdir -p "$out"
    ird=$out/initramfs bootdir=$out/boot root=$out/root
    rm -rf "$ird" "$bootdir" "$root"
    # initramfs
    mkdir -p "$ird"/{dev,proc,sys,run,tmp,newroot,cryptroot,etc}
    install_busybox "$ird"
    install_binary "$(command -v cryptsetup)" "$ird" /sbin/cryptsetup
    local libgcc libc_dir
    libgcc=$(ldconfig -p | awk '/libgcc_s\.so\.1 .*x86-64/ && !f { print $NF; f = 1 }')
    [ -n "$libgcc" ] || die "libgcc_s.so.1 not found on the host"
    libc_dir=$(LC_ALL=C ldd "$(command -v cryptsetup)" | awk '$1 ~ /^libc\.so/ { print $3 }' | xargs dirname)
    install_file "$libgcc" "$ird" "$libc_dir/libgcc_s.so.1" 0755
    install_modules "$ird" "$BLOCK_MODULES" plain
    install_file "$rescue_here/guest/main-initramfs-init" "$ird" /init 0755
    # What update-initramfs would have generated from /etc/crypttab.
    printf 'root UUID=%s none luks\n' "$luks_uuid" >"$ird/cryptroot/crypttab"
    find "$ird" -type d -exec chmod 0755 {} +
    chmod 1777 "$ird/tmp"

    # /boot
    mkdir -p "$bootdir/extlinux"
    cp "$VMLINUZ" "$bootdir/vmlinuz-$KERNEL_RELEASE"
    make_cpio "$ird" "$bootdir/initrd.img-$KERNEL_RELEASE"
    ln -s "vmlinuz-$KERNEL_RELEASE" "$bootdir/vmlinuz"
    ln -s "initrd.img-$KERNEL_RELEASE" "$bootdir/initrd.img"
    cat >"$bootdir/extlinux/extlinux.conf" <<CONF
SERIAL 0 115200
DEFAULT main
PROMPT 0
TIMEOUT 0
LABEL main
  LINUX /vmlinuz-$KERNEL_RELEASE
  INITRD /initrd.img-$KERNEL_RELEASE
  APPEND console=ttyS0 panic=-1 printk.time=1 no_timer_check root=/dev/mapper/root rootflags=subvol=@
CONF
    echo "a file the damage case corrupts" >"$bootdir/README"

    # root tree for @
    mkdir -p "$root"/{dev,proc,sys,run,tmp,boot,home,root,etc,mnt}
    install_busybox "$root"
    install_file "$rescue_here/guest/main-init" "$root" /sbin/init 0755
    echo main >"$root/etc/hostname"
    printf '%s\n' "$marker" >"$root/etc/portcullis-marker"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\n' >"$root/etc/group"
    cat >"$root/etc/fstab" <<FSTAB
# <file system> <mount point> <type> <options> <dump> <pass>
/dev/mapper/root / btrfs defaults,subvol=@ 0 0
UUID=$btrfs_uuid /home btrfs defaults,subvol=@home 0 0
UUID=$boot_uuid /boot ext4 defaults 0 2
FSTAB
    printf 'root UUID=%s none luks,discard\n' "$luks_uuid" >"$root/etc/crypttab"
    chmod 1777 "$root/tmp"
    chmod 0700 "$root/root"
    tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$out/root.tar" .

    tar -C "$bootdir" --numeric-owner --owner=0 --group=0 -cf "$out/boot.tar" .

    # disk: MBR, partition 1 (bootable) 64 MiB for /boot, partition 2 the
    # rest. Both filesystems are made inside the rescue VM: extlinux cannot
    # read the sparse files mke2fs -d writes.
    rm -f "$out/disk.img"
    truncate -s 448M "$out/disk.img"
    sfdisk -q "$out/disk.img" <<PT
label: dos
start=2048, size=131072, type=83, bootable
start=133120, type=83
PT
    rm -rf "$ird" "$bootdir" "$root"
}

vm_start() { # LOG PIDFILE PORT DISK SNAPSHOT [KERNEL INITRD]
    local log=$1 pidfile=$2 port=$3 disk=$4 snap=$5 kernel=${6:-} initrd=${7:-} fifo kargs=()
    fifo=${log%.log}.serial
    rm -f "$fifo.in" "$fifo.out" "$pidfile"
    mkfifo "$fifo.in" "$fifo.out"
    : >"$log"
    cat "$fifo.out" >>"$log" &
    if [ -n "$kernel" ]; then
        kargs=(-kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 panic=-1 printk.time=1 no_timer_check")
    fi
    qemu-system-x86_64 \
        -machine q35 -accel "tcg${VM_TB_SIZE:+,tb-size=$VM_TB_SIZE}" -cpu max -smp "${VM_SMP:-2}" -m 1024 \
        -nodefaults -display none -monitor none -parallel none -no-reboot \
        -chardev "pipe,id=ser0,path=$fifo" -serial chardev:ser0 \
        "${kargs[@]}" \
        -drive "file=$disk,if=virtio,format=raw,snapshot=$snap" \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" \
        -device virtio-net-pci,netdev=n0 \
        -pidfile "$pidfile" -daemonize
    [ -s "$pidfile" ] || die "QEMU did not start"
}

vm_type() { # LOG TEXT: types TEXT and Enter on the serial console
    printf '%s\n' "$2" >"${1%.log}.serial.in"
}
