#!/usr/bin/env bash
# Build the mkinitcpio (busybox) test system: a cached Debian 12 root with
# the mkinitcpio harness (tests/distro/mkinitcpio) standing in for Arch's
# mkinitcpio, our hooks (initramfs/install.sh mkinitcpio) with "portcullis"
# in place of "encrypt", config and keys. Also the build-time negative cases.
#
# Usage: tests/distro/build-mkinitcpio.sh PORTCULLISD OUTDIR
#   OUTDIR gets vmlinuz, initrd.img, root.img, data.img, cmdline.
set -euo pipefail
# shellcheck source=tests/distro/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pd=${1:?PORTCULLISD}
out=${2:?OUTDIR}
mkdir -p "$out"
root=$("$distro_here/rootfs.sh" mkinitcpio)
ensure_keys "$pd"

# One volume: the encrypt hook (and so ours) opens exactly the cryptdevice=.
prepare_guest_root "$root" "luks,discard" one
rm -rf "$root/usr/lib/initcpio" "$root/etc/initcpio"
mkdir -p "$root/usr/lib/initcpio"
cp -r "$distro_here/mkinitcpio/install" "$distro_here/mkinitcpio/hooks" "$root/usr/lib/initcpio/"
install -m 0644 "$distro_here/mkinitcpio/functions" "$root/usr/lib/initcpio/functions"
install -m 0755 "$distro_here/mkinitcpio/init" "$root/usr/lib/initcpio/init"
install -m 0644 "$distro_here/mkinitcpio/init_functions" "$root/usr/lib/initcpio/init_functions"
install -m 0755 "$distro_here/mkinitcpio/mkinitcpio" "$root/usr/bin/mkinitcpio"
rm -f "$root/etc/portcullis/initramfs.conf"
"$distro_repo/initramfs/install.sh" mkinitcpio --destdir "$root" >/dev/null
install_portcullis "$root" "$pd" auto
cat >"$root/etc/mkinitcpio.conf" <<'CONF'
# Arch's default busybox HOOKS, with portcullis in place of encrypt
# (autodetect, microcode, modconf, kms, keyboard, keymap, consolefont and
# fsck have no stand-in in the harness).
MODULES=()
BINARIES=()
FILES=()
HOOKS=(base udev block portcullis filesystems)
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

dlog "mkinitcpio (harness) -k $kver, HOOKS=(base udev block portcullis filesystems)"
(umask 077 && mkinit /boot/initramfs-linux.img "$out/mkinitcpio.log") ||
    { tail -n 30 "$out/mkinitcpio.log" >&2; fail "mkinitcpio failed (log $out/mkinitcpio.log)"; }
grep -q '^    portcullis: .*: ok; host key' "$out/mkinitcpio.log" ||
    fail "mkinitcpio did not run the config check: $(grep -i portcullis "$out/mkinitcpio.log")"
listing=$(zcat "$root/boot/initramfs-linux.img" | cpio -t -v --quiet 2>/dev/null)
for f in usr/bin/portcullisd hooks/portcullis usr/bin/cryptsetup etc/portcullis/portcullisd.toml init config; do
    grep -qE " $f( ->.*)?\$" <<<"$listing" || fail "$f missing from the image"
done
key_line=$(grep -E ' etc/portcullis/host_key$' <<<"$listing") || fail "host key missing from the image"
case $key_line in -rw-------*) ;; *) fail "host key in the image is not 0600: $key_line" ;; esac
config=$(zcat "$root/boot/initramfs-linux.img" | (cd "$out" && cpio -i --quiet --to-stdout config))
grep -qx 'HOOKS="udev portcullis"' <<<"$config" || fail "runtime HOOKS not as expected: $config"
grep -qx 'CLEANUPHOOKS="portcullis udev"' <<<"$config" || fail "CLEANUPHOOKS not as expected: $config"
ok "mkinitcpio image: runtime hooks $(tr '\n' ' ' <<<"$config")"

cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$root/boot/initramfs-linux.img" "$out/initrd.img"
make_disks "$root" "$out" "$(hash_of "$root/.complete" "$root/etc/crypttab" "$root/etc/fstab" \
    "$distro_here/guest" "$KEYS/passphrase")"
# init=: Debian's /sbin/init is an absolute symlink, which mkinitcpio's init
# (and the harness) cannot follow from outside the new root; Arch's is
# relative.
echo "root=/dev/mapper/root cryptdevice=UUID=$ROOT_UUID:root:allow-discards rw init=/lib/systemd/systemd" \
    >"$out/cmdline"
