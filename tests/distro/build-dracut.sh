#!/usr/bin/env bash
# Build the dracut test system: the cached Debian 12 root with dracut
# (systemd in the initramfs, systemd-networkd for ip=), our module
# (initramfs/install.sh dracut), config and keys; dracut in a chroot builds
# the image. Also the build-time negative cases.
#
# Usage: tests/distro/build-dracut.sh PORTCULLISD OUTDIR
#   OUTDIR gets vmlinuz, initrd.img, root.img, data.img, cmdline.
set -euo pipefail
# shellcheck source=tests/distro/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pd=${1:?PORTCULLISD}
out=${2:?OUTDIR}
mkdir -p "$out"
root=$("$distro_here/rootfs.sh" dracut)
ensure_keys "$pd"

# timeout=0: no limit on the passphrase prompt; x-systemd.device-timeout=0:
# no limit on waiting for the encrypted device (both default to finite
# values in some systemd versions; see docs/install/dracut.md).
prepare_guest_root "$root" "luks,discard,timeout=0,x-systemd.device-timeout=0"
# The chroot's host is not the test machine: build a generic image (hostonly
# would look at the build host's disks) and take crypttab in explicitly, as
# hostonly mode does on a real machine.
cat >"$root/etc/dracut.conf.d/10-portcullis-test.conf" <<'CONF'
hostonly="no"
install_items+=" /etc/crypttab "
CONF
rm -f "$root/etc/portcullis/initramfs.conf"
"$distro_repo/initramfs/install.sh" dracut --destdir "$root" >/dev/null
install_portcullis "$root" "$pd" auto

kver=$(cd "$root/lib/modules" && ls | sort -V | tail -n1)
dracut_build() { # OUT-IN-CHROOT LOG
    in_chroot "$root" dracut --force --kver "$kver" "$1" >"$2" 2>&1
}
expect_build_failure() { # DESCRIPTION PATTERN
    if dracut_build /tmp/portcullis-neg.img "$out/dracut-neg.log"; then
        fail "build-time check: $1: dracut succeeded; log: $(tail -n 5 "$out/dracut-neg.log")"
    fi
    grep -qE -- "$2" "$out/dracut-neg.log" ||
        fail "build-time check: $1: no /$2/ in the build log: $(grep -i portcullis "$out/dracut-neg.log")"
    ok "build-time check: $1 fails the build: $(grep -m1 -E -- "$2" "$out/dracut-neg.log")"
}
cfg=$root/etc/portcullis/portcullisd.toml
cp "$cfg" "$out/good.toml"
echo 'backend = "dropbear"' >>"$cfg"
expect_build_failure "bad config" 'portcullis: portcullisd check failed.*backend is defined twice \(first on line [0-9]+\); keep one'
cp "$out/good.toml" "$cfg"
mv "$root/etc/portcullis/host_key" "$out/hk.saved"
expect_build_failure "missing host key" 'host key /etc/portcullis/host_key does not exist'
mv "$out/hk.saved" "$root/etc/portcullis/host_key"
rm -f "$root/tmp/portcullis-neg.img"

dlog "dracut --kver $kver (systemd initramfs)"
dracut_build "/boot/initrd.img-$kver" "$out/dracut.log" ||
    { tail -n 30 "$out/dracut.log" >&2; fail "dracut failed (log $out/dracut.log)"; }
initrd=$root/boot/initrd.img-$kver
mode=$(stat -c %a "$initrd")
[ "$mode" = 600 ] || fail "$initrd has mode $mode; the image holds the host key and must be 0600"
listing=$(in_chroot "$root" lsinitrd "/boot/initrd.img-$kver")
for f in usr/sbin/portcullisd etc/portcullis/portcullisd.toml etc/portcullis/authorized_keys \
    usr/lib/systemd/system/portcullisd.service etc/crypttab usr/lib/portcullis/flush-network \
    usr/lib/systemd/systemd-networkd etc/cmdline.d/90portcullis.conf; do
    grep -qE " $f\$" <<<"$listing" || fail "$f missing from the image"
done
key_line=$(grep -E ' etc/portcullis/host_key$' <<<"$listing") || fail "host key missing from the image"
case $key_line in -rw-------*) ;; *) fail "host key in the image is not 0600: $key_line" ;; esac
ok "dracut image is 0600 and holds the listener, unit, networkd, config, keys ($key_line)"

cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"
make_disks "$root" "$out" "$(hash_of "$root/.complete" "$root/etc/crypttab" "$root/etc/fstab" \
    "$distro_here/guest" "$KEYS/passphrase")"
echo "root=/dev/mapper/root ro" >"$out/cmdline"
