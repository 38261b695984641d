#!/usr/bin/env bash
# Build the initramfs-tools test system: the cached Debian 12 root with
# cryptsetup-initramfs, our hooks (initramfs/install.sh), config and keys;
# update-initramfs in a chroot builds the image. Also the build-time negative
# cases (a bad config, missing keys, a permissive umask must fail the build).
#
# Usage: tests/distro/build-initramfs-tools.sh PORTCULLISD OUTDIR
#   OUTDIR gets vmlinuz, initrd.img, initrd-keep.img (PORTCULLIS_KEEP_NETWORK=yes),
#   root.img, data.img, cmdline.
set -euo pipefail
# shellcheck source=tests/distro/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pd=${1:?PORTCULLISD}
out=${2:?OUTDIR}
mkdir -p "$out"
root=$("$distro_here/rootfs.sh" initramfs-tools)
ensure_keys "$pd"

prepare_guest_root "$root" "luks,discard,initramfs"
# Without a real dm-crypt root in the chroot, cryptsetup-initramfs cannot
# detect which volumes the root needs: the `initramfs` crypttab option
# includes both, as on a machine with a separately encrypted data volume.
mkdir -p "$root/etc/cryptsetup-initramfs"
echo 'CRYPTSETUP=y' >"$root/etc/cryptsetup-initramfs/conf-hook"
rm -f "$root/etc/portcullis/initramfs.conf"
# Where a Debian admin puts kernel parameters: the hook adds bonding and
# 8021q to the image because of these (run.sh boots with them).
mkdir -p "$root/etc/default"
echo 'GRUB_CMDLINE_LINUX="portcullis.bond=bond0:eth0,eth1 portcullis.vlan=bond0.100:bond0"' >"$root/etc/default/grub"
"$distro_repo/initramfs/install.sh" initramfs-tools --destdir "$root" >/dev/null
install_portcullis "$root" "$pd" auto

kver=$(cd "$root/lib/modules" && ls | sort -V | tail -n1)
mkinit() { # OUT-IN-CHROOT: run mkinitramfs, output to $out/mkinitramfs.log
    in_chroot "$root" mkinitramfs -o "$1" "$kver" >"$out/mkinitramfs.log" 2>&1
}
expect_build_failure() { # DESCRIPTION PATTERN
    if mkinit /tmp/portcullis-neg.img; then
        fail "build-time check: $1: mkinitramfs succeeded; log: $(tail -n 5 "$out/mkinitramfs.log")"
    fi
    grep -qE -- "$2" "$out/mkinitramfs.log" ||
        fail "build-time check: $1: no /$2/ in the build log: $(grep portcullis "$out/mkinitramfs.log")"
    ok "build-time check: $1 fails the build: $(grep -m1 -E -- "$2" "$out/mkinitramfs.log")"
}
cfg=$root/etc/portcullis/portcullisd.toml
cp "$cfg" "$out/good.toml"
echo 'max-trys = 3' >>"$cfg"
expect_build_failure "typo in the config" 'unknown field `max-trys`'
cp "$out/good.toml" "$cfg"
mv "$root/etc/portcullis/authorized_keys" "$out/ak.saved"
expect_build_failure "missing authorized_keys" 'authorized keys /etc/portcullis/authorized_keys does not exist'
: >"$root/etc/portcullis/authorized_keys"
expect_build_failure "empty authorized_keys" 'no keys'
mv "$out/ak.saved" "$root/etc/portcullis/authorized_keys"
echo 'UMASK=0022' >"$root/etc/initramfs-tools/conf.d/zz-permissive"
expect_build_failure "permissive UMASK" 'permissive umask'
rm -f "$root/etc/initramfs-tools/conf.d/zz-permissive" "$root/tmp/portcullis-neg.img"

dlog "update-initramfs -u -k $kver"
in_chroot "$root" update-initramfs -u -k "$kver" >"$out/update-initramfs.log" 2>&1 ||
    { cat "$out/update-initramfs.log" >&2; fail "update-initramfs failed"; }
# -F for the fingerprint: base64 has '+', a regex quantifier.
grep -E "^portcullis: .*/etc/portcullis/portcullisd.toml: ok; host key " "$out/update-initramfs.log" |
    grep -qF "host key $HOST_FP;" ||
    fail "update-initramfs did not report a checked config: $(cat "$out/update-initramfs.log")"
ok "update-initramfs ran the config check: $(grep 'portcullis:' "$out/update-initramfs.log")"

initrd=$root/boot/initrd.img-$kver
mode=$(stat -c %a "$initrd")
[ "$mode" = 600 ] || fail "$initrd has mode $mode; the image holds the host key and must be 0600"
listing=$(in_chroot "$root" lsinitramfs -l "/boot/initrd.img-$kver")
for f in usr/sbin/portcullisd etc/portcullis/portcullisd.toml etc/portcullis/authorized_keys \
    scripts/init-premount/portcullis scripts/init-bottom/portcullis lib/cryptsetup/askpass cryptroot/crypttab \
    usr/lib/portcullis/net.sh 'lib/modules/.*/bonding.ko' 'lib/modules/.*/8021q.ko'; do
    grep -qE " (usr/)?$f\$" <<<"$listing" || fail "$f missing from the image"
done
key_line=$(grep -E ' etc/portcullis/host_key$' <<<"$listing") || fail "host key missing from the image"
case $key_line in -rw-------*) ;; *) fail "host key in the image is not 0600: $key_line" ;; esac
ok "image is 0600 and holds the listener, config, keys (host key $key_line)"

cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"

# A second image with PORTCULLIS_KEEP_NETWORK=yes: the booted system must
# then still have the initramfs address (the flush is a choice, and the
# check that sees no address can see one).
echo 'PORTCULLIS_KEEP_NETWORK=yes' >>"$root/etc/portcullis/initramfs.conf"
mkinit /tmp/initrd-keep.img || { cat "$out/mkinitramfs.log" >&2; fail "mkinitramfs (keep network) failed"; }
mv "$root/tmp/initrd-keep.img" "$out/initrd-keep.img"
sed -i '/^PORTCULLIS_KEEP_NETWORK=yes$/d' "$root/etc/portcullis/initramfs.conf"
make_disks "$root" "$out" "$(hash_of "$root/.complete" "$root/etc/crypttab" "$root/etc/fstab" \
    "$distro_here/guest" "$KEYS/passphrase")"
echo "root=/dev/mapper/root ro" >"$out/cmdline"
