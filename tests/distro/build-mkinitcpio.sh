#!/usr/bin/env bash
# Build a mkinitcpio test system with Arch's real mkinitcpio (upstream v41
# source, see mkinitcpio-upstream.sh for where it comes from and the small
# Debian 12 adaptation) on a cached Debian 12 root, our hooks
# (initramfs/install.sh mkinitcpio), config and keys; only Arch's busybox
# applets are linked in the image.
#   busybox: HOOKS with "portcullis" in place of "encrypt"; one volume
#            (cryptdevice=), as encrypt opens one. Disks: root.img (whole-disk
#            LUKS), root-gpt.img (the same LUKS in a GPT partition, for
#            PARTUUID=/PARTLABEL=), key.img (ext4 holding a key file of root,
#            for cryptkey=), data.img.
#   systemd: HOOKS with "sd-portcullis" before "sd-encrypt", set up the way a
#            mkinitcpio-systemd-tool user has it: crypttab, network file and
#            authorized keys under /etc/mkinitcpio-systemd-tool/, the system's
#            OpenSSH ed25519 host key; root and data.
# Also the build-time negative cases (bad config, plain dm-crypt on the
# kernel command line, sd-portcullis before systemd): each fails, no image.
#
# Usage: tests/distro/build-mkinitcpio.sh PORTCULLISD OUTDIR busybox|systemd
#   OUTDIR gets vmlinuz, initrd.img, the disks, cmdline.
#   Exits 77 (and says why) when no mkinitcpio source is available.
set -euo pipefail
# shellcheck source=tests/distro/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/distro/mkinitcpio-upstream.sh
. "$distro_here/mkinitcpio-upstream.sh"
# shellcheck source=tests/distro/preflight.sh
. "$distro_here/preflight.sh"

pd=${1:?PORTCULLISD}
out=${2:?OUTDIR}
variant=${3:?busybox|systemd}
src=$(mkinitcpio_src)
if [ -z "$src" ]; then
    dlog "SKIP: no mkinitcpio source: set PORTCULLIS_MKINITCPIO_SRC to a mkinitcpio v41 source tree or tarball"
    exit 77
fi
mkdir -p "$out"
root=$("$distro_here/rootfs.sh" mkinitcpio)
ensure_keys "$pd"
tool=/etc/mkinitcpio-systemd-tool

rm -rf "$root$tool" "$root/etc/crypttab.initramfs" "$root/etc/kernel/cmdline" "$root/etc/default/grub"
case $variant in
    busybox)
        prepare_guest_root "$root" "luks,discard" one
        # The bond and VLAN run.sh boots with: the build hook adds bonding
        # and 8021q because the boot loader's command line asks for them.
        mkdir -p "$root/etc/default"
        echo 'GRUB_CMDLINE_LINUX="portcullis.bond=bond0:eth0,eth1 portcullis.vlan=bond0.100:bond0"' >"$root/etc/default/grub"
        hooks="base arch-busybox udev modconf block portcullis filesystems"
        runtime_hooks='HOOKS="udev portcullis"'
        cleanup_hooks='CLEANUPHOOKS="portcullis udev"'
        extra_conf="FILES=()"
        ;;
    systemd)
        prepare_guest_root "$root" "luks,discard" two
        # As mkinitcpio-systemd-tool keeps them, read from there as they are.
        install -d "$root$tool/config" "$root$tool/network"
        cp "$root/etc/crypttab" "$root$tool/config/crypttab"
        printf '%s\n' '[Match]' 'Name=eth0' '' '[Network]' 'DHCP=yes' >"$root$tool/network/initrd-network.network"
        hooks="base arch-busybox systemd modconf block sd-portcullis sd-encrypt filesystems"
        runtime_hooks='HOOKS=""'
        cleanup_hooks='CLEANUPHOOKS=""'
        extra_conf="FILES=()"
        ;;
    *) die "variant must be busybox or systemd" ;;
esac
mkinitcpio_install "$root" "$src"
rm -f "$root/etc/portcullis/initramfs.conf"
"$distro_repo/initramfs/install.sh" mkinitcpio --destdir "$root" >/dev/null
pf_install_bin "$root" "$pd" # for the post hook's build-time verdict
if [ "$variant" = systemd ]; then
    install_portcullis "$root" "$pd" auto
    # The tool's keys: OpenSSH's host key (tinyssh/dropbear converted it, so
    # clients already trust it) and its authorized_keys file.
    install -D -m 0600 "$KEYS/host_key" "$root/etc/ssh/ssh_host_ed25519_key"
    install -D -m 0600 "$KEYS/admin.pub" "$root$tool/config/authorized_keys"
    rm -f "$root/etc/portcullis/host_key" "$root/etc/portcullis/authorized_keys"
    cat >>"$root/etc/portcullis/portcullisd.toml" <<TOML
host-key = "/etc/ssh/ssh_host_ed25519_key"
authorized-keys = "$tool/config/authorized_keys"
TOML
else
    install_portcullis "$root" "$pd" auto
fi
write_conf() { # HOOKS...
    cat >"$root/etc/mkinitcpio.conf" <<CONF
# Arch's default HOOKS for $variant with our hook; arch-busybox (test only)
# keeps Arch's applets; autodetect, microcode, kms, keyboard, keymap/
# sd-vconsole, consolefont and fsck are left out (they would look at the
# build host, or add nothing the test boots need).
MODULES=()
BINARIES=()
$extra_conf
HOOKS=($*)
CONF
}
write_conf "$hooks"

kver=$(cd "$root/lib/modules" && ls | sort -V | tail -n1)
mkinit() { # IMAGE-IN-CHROOT LOG
    in_chroot "$root" mkinitcpio -c /etc/mkinitcpio.conf -k "$kver" -g "$1" >"$2" 2>&1
}
# expect_build_failure NAME WHAT-THE-LOG-SAYS: mkinitcpio fails, writes no
# image, and says why.
expect_build_failure() {
    local log=$out/mkinitcpio-$1.log
    rm -f "$root/tmp/neg.img"
    if mkinit /tmp/neg.img "$log"; then
        fail "build-time check $1: mkinitcpio succeeded: $(tail -n 5 "$log")"
    fi
    grep -qF -- "$2" "$log" || fail "build-time check $1: no '$2' in the log: $(grep -i -m3 'error\|portcullis' "$log")"
    [ ! -e "$root/tmp/neg.img" ] || fail "build-time check $1: mkinitcpio wrote an image"
    ok "build-time check $1: mkinitcpio fails, no image: $(grep -m1 -F -- "$2" "$log" | sed 's/^[^a-z]*//')"
}
cfg=$root/etc/portcullis/portcullisd.toml
cp "$cfg" "$out/good.toml"
echo 'listen = "0.0.0.0:22"' >>"$cfg"
expect_build_failure bad-config 'portcullisd check failed'
cp "$out/good.toml" "$cfg"
case $variant in
    busybox)
        mkdir -p "$root/etc/kernel"
        echo "root=/dev/mapper/root cryptdevice=/dev/vda:root crypto=sha256:aes-xts-plain64:512:0:" >"$root/etc/kernel/cmdline"
        expect_build_failure plain-dm-crypt 'plain dm-crypt volumes are not supported'
        echo "root=/dev/mapper/root cryptdevice=/dev/vda:root:allow-discards,header=/x" >"$root/etc/kernel/cmdline"
        expect_build_failure cryptdevice-option "option 'header=/x' is not supported"
        rm -f "$root/etc/kernel/cmdline"
        write_conf base arch-busybox udev encrypt block portcullis filesystems
        expect_build_failure encrypt-first "'encrypt' comes before 'portcullis'"
        ;;
    systemd)
        write_conf base arch-busybox sd-portcullis systemd block sd-encrypt filesystems
        expect_build_failure sd-before-systemd "list it after 'systemd' in HOOKS"
        ;;
esac
write_conf "$hooks"
# The boot entry's command line, as kernel-install and UKIs keep it: the
# build-time preflight (post hook) judges the network on it. Without it,
# it would fall back to this build machine's own /proc/cmdline and warn.
# The boots below pass their own ip= variants.
mkdir -p "$root/etc/kernel"
case $variant in
    busybox) echo "root=/dev/mapper/root rw init=/lib/systemd/systemd ip=dhcp" ;;
    systemd) echo "root=/dev/mapper/root rw ip=dhcp" ;;
esac >"$root/etc/kernel/cmdline"

dlog "mkinitcpio (upstream, $src) -k $kver, HOOKS=($hooks)"
start=$SECONDS
rm -f "$root/boot/initramfs-linux.img"
mkinit /boot/initramfs-linux.img "$out/mkinitcpio.log" ||
    { tail -n 30 "$out/mkinitcpio.log" >&2; fail "mkinitcpio failed (log $out/mkinitcpio.log)"; }
dlog "mkinitcpio took $((SECONDS - start)) s"
grep -q 'portcullis: .*: ok; host key' "$out/mkinitcpio.log" ||
    fail "mkinitcpio did not run the config check: $(grep -i portcullis "$out/mkinitcpio.log")"
if grep -E 'ERROR|WARNING' "$out/mkinitcpio.log" | grep -v 'Possibly missing firmware'; then
    fail "mkinitcpio reported errors or warnings (log $out/mkinitcpio.log)"
fi
img_mode=$(stat -c %a "$root/boot/initramfs-linux.img")
[ "$img_mode" = 600 ] || fail "upstream writes images 0600; this one is $img_mode"
ok "upstream mkinitcpio built the image (mode $img_mode, no error or warning)"

listing=$(in_chroot "$root" lsinitcpio -v /boot/initramfs-linux.img)
files="usr/bin/portcullisd usr/bin/cryptsetup etc/portcullis/portcullisd.toml init config usr/bin/busybox"
case $variant in
    busybox) files="$files hooks/portcullis usr/lib/portcullis/net.sh" ;;
    systemd) files="$files usr/lib/systemd/system/portcullisd.service etc/crypttab
        usr/lib/systemd/system/sysinit.target.wants/portcullisd.service usr/lib/systemd/systemd-networkd
        usr/lib/portcullis/flush-network etc/systemd/network/initrd-network.network
        etc/ssh/ssh_host_ed25519_key $tool/config/authorized_keys" ;;
esac
for f in $files; do
    f=${f#/}
    grep -qE " $f( ->.*)?\$" <<<"$listing" || fail "$f missing from the image"
done
if [ "$variant" = busybox ]; then
    for m in bonding 8021q; do
        grep -qE "/$m\.ko(\.[a-z]+)?\$" <<<"$listing" || fail "module $m missing from the image"
    done
fi
for a in tr stty od find xargs; do
    ! grep -qE " usr/bin/$a -> busybox\$" <<<"$listing" || fail "busybox applet $a is linked, Arch has none"
done
grep -qE ' usr/bin/udhcpc -> busybox$' <<<"$listing" || fail "busybox udhcpc (an Arch applet) is not linked"
ok "only Arch's busybox applets: $(grep -cE ' -> busybox$' <<<"$listing") links, no tr/stty/od/find/xargs"
key_line=$(grep -E ' etc/(portcullis/host_key|ssh/ssh_host_ed25519_key)$' <<<"$listing") ||
    fail "host key missing from the image"
case $key_line in -rw-------*) ;; *) fail "host key in the image is not 0600: $key_line" ;; esac
# Unpacked in a directory of its own, removed again: left in the root's
# /tmp, each run's unpacked image (100 MB) went into the next root disk.
config=$(in_chroot "$root" sh -c 'd=$(mktemp -d) && cd "$d" && lsinitcpio -x /boot/initramfs-linux.img &&
    cat config; rc=$?; cd / && rm -rf "$d"; exit $rc')
grep -qx "$runtime_hooks" <<<"$config" || fail "runtime HOOKS not as expected ($runtime_hooks): $config"
grep -qx "$cleanup_hooks" <<<"$config" || fail "CLEANUPHOOKS not as expected ($cleanup_hooks): $config"
ok "mkinitcpio image: runtime hooks $(tr '\n' ' ' <<<"$config")"

cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$root/boot/initramfs-linux.img" "$out/initrd.img"
disks_key=$(hash_of "$root/.complete" "$root/etc/crypttab" "$root/etc/fstab" \
    "$distro_here/guest" "$KEYS/passphrase")
make_disks "$root" "$out" "$disks_key"
if [ "$variant" = busybox ] && [ "$(cat "$out/.mk-disks" 2>/dev/null)" != "$disks_key" ]; then
    rm -f "$out/.mk-disks"
    dlog "making the GPT root disk and the key disk"
    # A key file on an ext4 "USB stick", added to root's keyslots.
    kdir=$(mktemp -d)
    (umask 077 && head -c 64 /dev/urandom >"$kdir/root.key")
    cryptsetup luksAddKey --batch-mode --pbkdf argon2id --pbkdf-memory 65536 \
        --pbkdf-force-iterations 4 --pbkdf-parallel 2 --key-file "$KEYS/passphrase" \
        "$out/root.img" "$kdir/root.key" || die "luksAddKey failed"
    rm -f "$out/key.img"
    truncate -s 8M "$out/key.img"
    mkfs.ext4 -q -F -d "$kdir" "$out/key.img" || die "mkfs.ext4 key.img failed"
    rm -rf "$kdir"
    # root-gpt.img: 1 MiB, the LUKS root as partition 1, 1 MiB for the backup GPT.
    size=$(stat -c %s "$out/root.img")
    rm -f "$out/root-gpt.img"
    truncate -s $((size + 2 * 1024 * 1024)) "$out/root-gpt.img"
    printf 'label: gpt\nstart=2048, size=%d, uuid=%s, name=%s\n' "$((size / 512))" \
        "$ROOT_PARTUUID" "$ROOT_PARTLABEL" | sfdisk -q "$out/root-gpt.img" || die "sfdisk failed"
    dd if="$out/root.img" of="$out/root-gpt.img" bs=1M seek=1 conv=notrunc,sparse status=none
    echo "$disks_key" >"$out/.mk-disks"
fi
# init=: Debian's /sbin/init is an absolute symlink, which mkinitcpio's init
# cannot follow from outside the new root; Arch's is relative.
case $variant in
    busybox) echo "root=/dev/mapper/root rw init=/lib/systemd/systemd" ;;
    systemd) echo "root=/dev/mapper/root rw" ;;
esac >"$out/cmdline"
