#!/usr/bin/env bash
# Prints the listener's figures: release size, bytes added to an initramfs
# (zstd -19 and gzip -9), time from exec to listening, and what an unlock
# costs beyond cryptsetup's own time on loopback. Not a test: no thresholds.
#
# Usage: benches/listener.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

tests/build-release.sh >/dev/null
bin="$repo/target/dist"
echo "== size"
size=$(stat -c %s "$bin/portcullisd")
echo "portcullisd release binary: $size bytes ($(cat target/dist/BUILD); $(file -b "$bin/portcullisd" | grep -oE "static[-a-z]*|dynamically linked" | head -n1))"
echo "portcullis (client) release binary: $(stat -c %s "$bin/portcullis") bytes"

echo "== bytes added to an initramfs (binary + config + keys, cpio newc)"
mkdir -p "$work/tree/usr/sbin" "$work/tree/etc/portcullis" "$work/empty"
cp "$bin/portcullisd" "$work/tree/usr/sbin/"
cp examples/portcullisd.toml "$work/tree/etc/portcullis/portcullisd.toml"
"$bin/portcullisd" keygen "$work/tree/etc/portcullis/host_key" >/dev/null
ssh-keygen -q -t ed25519 -N '' -f "$work/admin"
cp "$work/admin.pub" "$work/tree/etc/portcullis/authorized_keys"
rm "$work/tree/etc/portcullis/host_key.pub"
cpio_of() { (cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet); }
for c in "zstd -19 -q -c" "gzip -9 -c"; do
    with=$(cpio_of "$work/tree" | $c | wc -c)
    without=$(cpio_of "$work/empty" | $c | wc -c)
    echo "${c%% *} ${c#* }: $((with - without)) bytes ($(( (with - without) / 1024 )) KiB)"
done
echo "(dropbear-initramfs adds 503 KB with zstd -19, for comparison)"

echo "== time from exec to listening (loopback, 10 runs)"
port=$((30000 + RANDOM % 20000))
cat >"$work/bench.toml" <<TOML
listen = ["127.0.0.1:$port"]
host-key = "$work/tree/etc/portcullis/host_key"
authorized-keys = "$work/tree/etc/portcullis/authorized_keys"
backend = "cryptsetup"
volumes-from-cmdline = false
[[volume]]
name = "portcullis-bench-never-opened"
device = "/dev/null"
TOML
python3 benches/time_to_listen.py "$bin/portcullisd" "$work/bench.toml" "$port" 10

echo "== unlock overhead on loopback (real LUKS2 file, cryptsetup --test-passphrase)"
printf 'bench passphrase' >"$work/pass"
truncate -s 20M "$work/luks.img"
cryptsetup luksFormat -q --type luks2 --pbkdf argon2id --pbkdf-memory 65536 \
    --pbkdf-force-iterations 4 --pbkdf-parallel 2 --key-file "$work/pass" "$work/luks.img"
cargo run -q --release --example unlock_overhead -- "$work/luks.img" "$work/pass" 5
