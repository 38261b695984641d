#!/usr/bin/env bash
# Build a mkinitcpio test system: a cached Debian 12 root with the
# mkinitcpio harness (tests/distro/mkinitcpio) standing in for Arch's
# mkinitcpio, our hooks (initramfs/install.sh mkinitcpio), config and keys.
#   busybox: HOOKS with "portcullis" in place of "encrypt"; one volume
#            (cryptdevice=), as encrypt opens one.
#   systemd: HOOKS with "sd-portcullis" beside "sd-encrypt"; root and data
#            from /etc/crypttab.initramfs.
# Also the build-time negative case (a bad config fails, no image written).
#
# Usage: tests/distro/build-mkinitcpio.sh PORTCULLISD OUTDIR busybox|systemd
#   OUTDIR gets vmlinuz, initrd.img, root.img, data.img, cmdline.
set -euo pipefail
# shellcheck source=tests/distro/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pd=${1:?PORTCULLISD}
out=${2:?OUTDIR}
variant=${3:?busybox|systemd}
mkdir -p "$out"
root=$("$distro_here/rootfs.sh" mkinitcpio)
ensure_keys "$pd"

case $variant in
    busybox)
        # One volume: the encrypt hook (and so ours) opens exactly the cryptdevice=.
        prepare_guest_root "$root" "luks,discard" one
        hooks="base udev block portcullis filesystems"
        runtime_hooks='HOOKS="udev portcullis"'
        cleanup_hooks='CLEANUPHOOKS="portcullis udev"'
        ;;
    systemd)
        prepare_guest_root "$root" "luks,discard" two
        cp "$root/etc/crypttab" "$root/etc/crypttab.initramfs"
        hooks="base systemd block sd-portcullis sd-encrypt filesystems"
        runtime_hooks='HOOKS=""'
        cleanup_hooks='CLEANUPHOOKS=""'
        ;;
    *) die "variant must be busybox or systemd" ;;
esac
rm -rf "$root/usr/lib/initcpio" "$root/etc/initcpio"
mkdir -p "$root/usr/lib/initcpio"
cp -r "$distro_here/mkinitcpio/install" "$distro_here/mkinitcpio/hooks" "$distro_here/mkinitcpio/udev" \
    "$root/usr/lib/initcpio/"
install -m 0644 "$distro_here/mkinitcpio/functions" "$root/usr/lib/initcpio/functions"
install -m 0755 "$distro_here/mkinitcpio/init" "$root/usr/lib/initcpio/init"
install -m 0644 "$distro_here/mkinitcpio/init_functions" "$root/usr/lib/initcpio/init_functions"
install -m 0755 "$distro_here/mkinitcpio/mkinitcpio" "$root/usr/bin/mkinitcpio"
rm -f "$root/etc/portcullis/initramfs.conf"
"$distro_repo/initramfs/install.sh" mkinitcpio --destdir "$root" >/dev/null
install_portcullis "$root" "$pd" auto
cat >"$root/etc/mkinitcpio.conf" <<CONF
# Arch's default HOOKS for $variant with our hook (autodetect, microcode,
# modconf, kms, keyboard, keymap/sd-vconsole, consolefont and fsck have no
# stand-in in the harness).
MODULES=()
BINARIES=()
FILES=()
HOOKS=($hooks)
CONF

kver=$(cd "$root/lib/modules" && ls | sort -V | tail -n1)
mkinit() { # IMAGE-IN-CHROOT LOG
    in_chroot "$root" mkinitcpio -c /etc/mkinitcpio.conf -k "$kver" -g "$1" >"$2" 2>&1
}
cfg=$root/etc/portcullis/portcullisd.toml
cp "$cfg" "$out/good.toml"
echo 'listen = "0.0.0.0:22"' >>"$cfg"
rm -f "$root/tmp/neg.img"
if mkinit /tmp/neg.img "$out/mkinitcpio-neg.log"; then
    fail "build-time check: a bad config did not fail mkinitcpio: $(tail -n 5 "$out/mkinitcpio-neg.log")"
fi
grep -q 'portcullisd check failed' "$out/mkinitcpio-neg.log" ||
    fail "build-time check: no check failure in the log: $(grep -i portcullis "$out/mkinitcpio-neg.log")"
[ ! -e "$root/tmp/neg.img" ] || fail "build-time check: mkinitcpio wrote an image despite the bad config"
ok "build-time check: bad config fails mkinitcpio, no image written: $(grep -m1 'check failed' "$out/mkinitcpio-neg.log")"
cp "$out/good.toml" "$cfg"

dlog "mkinitcpio (harness) -k $kver, HOOKS=($hooks)"
(umask 077 && mkinit /boot/initramfs-linux.img "$out/mkinitcpio.log") ||
    { tail -n 30 "$out/mkinitcpio.log" >&2; fail "mkinitcpio failed (log $out/mkinitcpio.log)"; }
grep -q '^    portcullis: .*: ok; host key' "$out/mkinitcpio.log" ||
    fail "mkinitcpio did not run the config check: $(grep -i portcullis "$out/mkinitcpio.log")"
listing=$(zcat "$root/boot/initramfs-linux.img" | cpio -t -v --quiet 2>/dev/null)
files="usr/bin/portcullisd usr/bin/cryptsetup etc/portcullis/portcullisd.toml init config"
case $variant in
    busybox) files="$files hooks/portcullis" ;;
    systemd) files="$files usr/lib/systemd/system/portcullisd.service etc/crypttab
        usr/lib/systemd/system/sysinit.target.wants/portcullisd.service usr/lib/systemd/systemd-networkd
        usr/lib/portcullis/flush-network" ;;
esac
for f in $files; do
    grep -qE " $f( ->.*)?\$" <<<"$listing" || fail "$f missing from the image"
done
key_line=$(grep -E ' etc/portcullis/host_key$' <<<"$listing") || fail "host key missing from the image"
case $key_line in -rw-------*) ;; *) fail "host key in the image is not 0600: $key_line" ;; esac
config=$(zcat "$root/boot/initramfs-linux.img" | (cd "$out" && cpio -i --quiet --to-stdout config))
grep -qx "$runtime_hooks" <<<"$config" || fail "runtime HOOKS not as expected ($runtime_hooks): $config"
grep -qx "$cleanup_hooks" <<<"$config" || fail "CLEANUPHOOKS not as expected ($cleanup_hooks): $config"
ok "mkinitcpio image: runtime hooks $(tr '\n' ' ' <<<"$config")"

cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$root/boot/initramfs-linux.img" "$out/initrd.img"
make_disks "$root" "$out" "$(hash_of "$root/.complete" "$root/etc/crypttab" "$root/etc/fstab" \
    "$distro_here/guest" "$KEYS/passphrase")"
case $variant in
    # init=: Debian's /sbin/init is an absolute symlink, which mkinitcpio's
    # init (and the harness) cannot follow from outside the new root; Arch's
    # is relative.
    busybox) echo "root=/dev/mapper/root cryptdevice=UUID=$ROOT_UUID:root:allow-discards rw init=/lib/systemd/systemd" ;;
    systemd) echo "root=/dev/mapper/root rw" ;;
esac >"$out/cmdline"
