#!/usr/bin/env bash
# The demo: build everything, boot a VM whose root filesystem is inside a
# LUKS2 volume, and unlock it over SSH with `portcullis`.
#
# Usage: tests/vm/demo.sh
#   On a terminal you type the passphrase yourself (it is printed first);
#   without one it is piped in. The VM's serial console is in
#   target/demo/serial.log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
work="$repo/target/demo"
say() { printf '\n>>> %s\n' "$*"; }

rm -rf "$work"
mkdir -p "$work"
chmod 700 "$work"
umask 077

say "building portcullisd (static) and portcullis"
"$repo/tests/build-release.sh" >/dev/null
bin="$repo/target/dist"

say "fetching a Debian kernel, busybox and QEMU (cached after the first run)"
"$here/fetch.sh"

say "creating the initramfs host key and your SSH key"
"$bin/portcullisd" keygen "$work/host_key" >"$work/host_fp"
ssh-keygen -q -t ed25519 -N '' -C demo-admin -f "$work/admin"
cp "$work/admin.pub" "$work/authorized_keys"
printf 'portcullis demo' >"$work/pass"
cat >"$work/portcullisd.toml" <<TOML
listen = ["0.0.0.0:22"]
[[volume]]
name = "root"
device = "LABEL=portcullis-test"
TOML

say "building the image: initramfs with portcullisd, root filesystem on LUKS2"
"$here/build-image.sh" "$work/image" --portcullisd "$bin/portcullisd" \
    --config "$work/portcullisd.toml" --host-key "$work/host_key" \
    --authorized-keys "$work/authorized_keys" --passphrase-file "$work/pass" \
    --marker "PORTCULLIS-DEMO: the encrypted root is up" >/dev/null

port=$((20000 + RANDOM % 20000))
say "booting the VM (QEMU, software emulation); its SSH listener is 127.0.0.1:$port"
"$here/boot.sh" --image "$work/image" --port "$port" --log "$work/serial.log" --pidfile "$work/qemu.pid" 2>/dev/null
stop_vm() {
    local pid
    pid=$(cat "$work/qemu.pid" 2>/dev/null) && kill "$pid" 2>/dev/null
    true
}
trap stop_vm EXIT

say "the initramfs host key fingerprint is $(cat "$work/host_fp") (pinned below)"
unlock=("$bin/portcullis" unlock "127.0.0.1:$port" --fingerprint "$(cat "$work/host_fp")"
    --no-agent -i "$work/admin" --wait=300s)
if [ -t 0 ] && [ -t 1 ]; then
    say "the LUKS passphrase is: portcullis demo   (type it at the prompt)"
    "${unlock[@]}"
else
    say "no terminal: piping the passphrase"
    "${unlock[@]}" --passphrase-stdin <"$work/pass"
fi

say "waiting for the real root to come up"
"$here/wait-for.sh" "$work/serial.log" 'PORTCULLIS-DEMO' 180 >/dev/null
grep -E '^PORTCULLIS-(LISTENING|ETH0-ADDR|ROOT):|^PORTCULLIS-DEMO' "$work/serial.log"
say "done: the VM unlocked its LUKS2 root over SSH and booted it (serial log: $work/serial.log)"
