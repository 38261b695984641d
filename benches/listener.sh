#!/usr/bin/env bash
# Prints the listener's figures: release size, bytes added to an initramfs
# (zstd -19 and gzip -9), time from exec to listening, and what an unlock
# costs beyond cryptsetup's own time on loopback. Not a test: no thresholds.
# The image's listener is the initramfs build (portcullisd-initramfs, listen
# only), which the hooks copy in; the full portcullisd is shown beside it.
#
# Usage: benches/listener.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

# The listener without the relay's client first (PORTCULLIS_NO_RELAY=1), then
# the default build, which the rest of this measures.
if [ -z "${PORTCULLIS_SMALL:-}" ]; then
    PORTCULLIS_NO_RELAY=1 tests/build-release.sh >/dev/null
    cp target/dist/portcullisd-initramfs "$work/portcullisd-no-relay"
fi
tests/build-release.sh >/dev/null
bin="$repo/target/dist"
echo "== size"
image_bin=$bin/portcullisd-initramfs
zst() { zstd -19 -q -c "$1" | wc -c; }
echo "listener as images carry it (portcullisd-initramfs): $(stat -c %s "$image_bin") bytes, $(zst "$image_bin") after zstd -19 ($(cat target/dist/BUILD); $(file -b "$image_bin" | grep -oE "static[-a-z]*|dynamically linked" | head -n1))"
echo "full portcullisd (listen, keygen, check; stays on the system): $(stat -c %s "$bin/portcullisd") bytes, $(zst "$bin/portcullisd") after zstd -19"
if [ -f "$work/portcullisd-no-relay" ]; then
    echo "initramfs build without the relay (PORTCULLIS_NO_RELAY=1): $(stat -c %s "$work/portcullisd-no-relay") bytes, $(zst "$work/portcullisd-no-relay") after zstd -19"
fi
echo "portcullis (client) release binary: $(stat -c %s "$bin/portcullis") bytes"
# Where the listener's bytes go: code, constants, unwind tables (none in the
# small build), writable data (the P-256/384/521 basepoint tables russh pulls
# in live here), relocations (static-pie).
echo "portcullisd-initramfs sections (bytes): $(readelf -SW "$image_bin" | sed 's/\[ */[/' |
    while read -r _ name _ _ _ hex _; do
        case $name in .text | .rodata | .eh_frame | .data | .rela.dyn) printf '%s %d  ' "$name" "$((16#$hex))" ;; esac
    done)"
# clap stays out of the listener (src/bin/portcullisd/args.rs parses by hand);
# its source paths in panic locations would show it.
if strings "$bin/portcullisd" "$image_bin" | grep -q clap_builder; then
    echo "portcullisd links clap: yes (it should not)"
else
    echo "portcullisd links clap: no"
fi

echo "== bytes added to an initramfs (binary + config + keys, cpio newc)"
mkdir -p "$work/tree/usr/sbin" "$work/tree/etc/portcullis" "$work/empty"
cp "$image_bin" "$work/tree/usr/sbin/portcullisd"
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

# The peer, measured in the same run rather than quoted: Debian 12's
# dropbear-bin with its libraries, as dropbear-initramfs copies them. Two
# figures: with the libtomcrypt/libtommath pair only (images that already
# carry libz, libcrypt and libgmp), and with every non-libc library it links.
echo "== the peer: dropbear (Debian's dropbear-bin), same cpio and compressors"
peer_cache=${PORTCULLIS_BENCH_CACHE:-$repo/target/bench-cache}/dropbear
if [ ! -f "$peer_cache/.complete" ]; then
    rm -rf "$peer_cache" && mkdir -p "$peer_cache/debs"
    # apt-get download as root warns that _apt cannot write here; harmless.
    if (cd "$peer_cache/debs" && apt-get download -q dropbear-bin libtomcrypt1 libtommath1 \
            libgmp10 zlib1g libcrypt1 >/dev/null 2>&1); then
        for d in "$peer_cache"/debs/*.deb; do dpkg -x "$d" "$peer_cache/root"; done
        touch "$peer_cache/.complete"
    fi
fi
if [ -f "$peer_cache/.complete" ]; then
    libdirs="$peer_cache/root/usr/lib/x86_64-linux-gnu:$peer_cache/root/lib/x86_64-linux-gnu"
    # The closure as the dynamic loader resolves it, minus libc and the loader.
    mapfile -t closure < <(LD_LIBRARY_PATH=$libdirs ldd "$peer_cache/root/usr/sbin/dropbear" |
        awk '$3 ~ /^\// {print $3}' | grep -vE '/(libc|ld-linux[^/]*)\.so' || true)
    for set in pair all; do
        rm -rf "$work/peer" && mkdir -p "$work/peer/usr/sbin" "$work/peer/usr/lib/x86_64-linux-gnu"
        cp "$peer_cache/root/usr/sbin/dropbear" "$work/peer/usr/sbin/"
        for lib in "${closure[@]}"; do
            case $set:$lib in pair:*libtomcrypt* | pair:*libtommath* | all:*) ;; *) continue ;; esac
            cp -L "$lib" "$work/peer/usr/lib/x86_64-linux-gnu/"
        done
        libs=$(cd "$work/peer/usr/lib/x86_64-linux-gnu" && ls | tr '\n' ' ')
        for c in "zstd -19 -q -c" "gzip -9 -c"; do
            with=$(cpio_of "$work/peer" | $c | wc -c)
            without=$(cpio_of "$work/empty" | $c | wc -c)
            echo "dropbear + ${libs% } (${c%% *}): $((with - without)) bytes ($(( (with - without) / 1024 )) KiB)"
        done
    done
else
    echo "dropbear: could not download dropbear-bin and its libraries from Debian; no peer figure"
fi

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
python3 benches/time_to_listen.py "$image_bin" "$work/bench.toml" "$port" 10

echo "== unlock overhead on loopback (real LUKS2 file, cryptsetup --test-passphrase)"
printf 'bench passphrase' >"$work/pass"
truncate -s 20M "$work/luks.img"
cryptsetup luksFormat -q --type luks2 --pbkdf argon2id --pbkdf-memory 65536 \
    --pbkdf-force-iterations 4 --pbkdf-parallel 2 --key-file "$work/pass" "$work/luks.img"
cargo run -q --release --example unlock_overhead -- "$work/luks.img" "$work/pass" 5
