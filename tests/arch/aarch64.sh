#!/usr/bin/env bash
# aarch64 smoke: cross-builds the static listener and client
# (tests/build-release.sh aarch64-unknown-linux-musl) and runs them under
# qemu-aarch64 user emulation: `portcullisd keygen` and `check` (a good and
# a broken config), then `status`, a wrong and a right `unlock` in three
# pairings: aarch64 client and listener, aarch64 client against the x86_64
# listener, x86_64 client against the aarch64 listener.
#
# What is real: both binaries of both architectures, SSH over loopback, the
# listener's cryptsetup backend, and its exit once every volume is open.
# What is faked: the `cryptsetup` program it runs (a shell script taking the
# passphrase on stdin, exit 2 for a wrong one as cryptsetup does, and on the
# right one an empty /dev/mapper/NAME where the real one makes the device)
# and the volume (a plain file). The listener runs in its own mount
# namespace with a private tmpfs on /dev/mapper, without root rights (as
# nobody under root, in a user namespace otherwise): nothing reaches the
# host's device mapper or its kernel log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$PWD

die() { printf 'aarch64.sh: FAIL: %s\n' "$*" >&2; exit 1; }
say() { printf 'aarch64.sh: %s\n' "$*" >&2; }

qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static) ||
    die "no qemu-aarch64: apt-get install qemu-user (.ci/run installs it)"
command -v python3 >/dev/null || die "no python3 (to find a free port): apt-get install python3"

start=$SECONDS
x86=$repo/$(tests/build-release.sh)
# The small listener (PORTCULLIS_SMALL=1) is built natively only: under it
# the x86_64 side is the small listener and the aarch64 side the stable build.
arm=$repo/$(PORTCULLIS_SMALL='' tests/build-release.sh aarch64-unknown-linux-musl)
say "builds ready in $((SECONDS - start)) s"
for b in portcullisd portcullisd-initramfs portcullis; do
    file -b "$arm/$b" | grep -q 'ARM aarch64.*statically linked' ||
        die "$arm/$b is not a static aarch64 executable: $(file -b "$arm/$b")"
    say "size $b: x86_64 $(stat -c %s "$x86/$b") B, aarch64 $(stat -c %s "$arm/$b") B"
done

t=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-aarch64.XXXXXX")
listener=
cleanup() {
    [ -z "$listener" ] || kill "$listener" 2>/dev/null || true
    rm -rf "$t"
}
trap cleanup EXIT
[ -d /dev/mapper ] || die "no /dev/mapper here (no device-mapper): the listener's private /dev/mapper is mounted over it"
# Copies of the binaries: nobody may not be able to reach the checkout
# (e.g. under /root).
mkdir "$t/x86_64" "$t/aarch64"
cp "$x86/portcullisd" "$x86/portcullisd-initramfs" "$x86/portcullis" "$t/x86_64/"
cp "$arm/portcullisd" "$arm/portcullisd-initramfs" "$arm/portcullis" "$t/aarch64/"
x86=$t/x86_64 arm=$t/aarch64
# Unprivileged: the listener's namespace is a user namespace. As root,
# everything runs as nobody (no /dev/kmsg, no root-only paths).
as_user=()
ns=(unshare --user --map-root-user --mount --)
uid=0
if [ "$(id -u)" -eq 0 ]; then
    chown -R 65534:65534 "$t"
    as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
    ns=(unshare --mount --propagation private --)
    uid=65534
fi
run() { "${as_user[@]}" env -i PATH=/usr/bin:/bin HOME="$t" "$@"; }
arm64() { run "$qemu" "$@"; }
# Runs a command in its own mount namespace with an empty /dev/mapper.
in_ns() {
    # shellcheck disable=SC2016 # expanded by that inner sh
    "${ns[@]}" sh -c 'mount -t tmpfs -o mode=0755,uid="$1" portcullis-smoke /dev/mapper && shift && exec "$@"' \
        sh "$uid" "${as_user[@]}" env -i PATH=/usr/bin:/bin HOME="$t" "$@"
}

# keygen: host key and the admin's key, both made by the aarch64 listener.
fp=$(arm64 "$arm/portcullisd" keygen "$t/host_key") || die "aarch64 keygen failed"
[[ $fp == SHA256:* ]] || die "keygen printed '$fp', not a fingerprint"
arm64 "$arm/portcullisd" keygen "$t/admin" >/dev/null || die "aarch64 keygen (admin key) failed"
[ "$(stat -c %a "$t/host_key")" = 600 ] || die "host key mode is $(stat -c %a "$t/host_key"), not 600"
run cp "$t/admin.pub" "$t/authorized_keys"

# The fake cryptsetup: `open --type luks --key-file=- DEVICE NAME`, the
# passphrase on stdin; exit 2 is what cryptsetup says for a wrong one.
run tee "$t/cryptsetup" >/dev/null <<'SH'
#!/bin/sh
[ "$(cat)" = "arm smoke passphrase" ] || { echo "No key available with this passphrase." >&2; exit 2; }
echo "$*" >>"${0%/*}/opened"
for name; do :; done
: >"/dev/mapper/$name"
SH
run chmod 755 "$t/cryptsetup"
run touch "$t/vda"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run tee "$t/portcullisd.toml" >/dev/null <<EOF2
listen = ["127.0.0.1:$port"]
host-key = "$t/host_key"
authorized-keys = "$t/authorized_keys"
backend = "cryptsetup"
cryptsetup = "$t/cryptsetup"
volumes-from-cmdline = false

[[volume]]
name = "portcullis-arm-smoke"
device = "$t/vda"
EOF2

# check: the config above passes; a misspelt key fails, naming it.
out=$(arm64 "$arm/portcullisd" --config "$t/portcullisd.toml" check) ||
    die "aarch64 check refused a good config"
grep -qF "host key $fp" <<<"$out" || die "check did not report the host key $fp: $out"
run sed 's/^volumes-from-cmdline/volumes-from-cmdlin/' "$t/portcullisd.toml" >"$t/typo.toml"
if arm64 "$arm/portcullisd" --config "$t/typo.toml" check 2>"$t/check.err"; then
    die "aarch64 check accepted a misspelt key"
fi
grep -q 'volumes-from-cmdlin' "$t/check.err" || die "check's error does not name the key: $(cat "$t/check.err")"

listen_on() { # x86_64|aarch64: starts that listener (the initramfs build, as images carry it), waits for its port
    local cmd=("$x86/portcullisd-initramfs")
    [ "$1" = x86_64 ] || cmd=("$qemu" "$arm/portcullisd-initramfs")
    run rm -f "$t/opened"
    in_ns "${cmd[@]}" --config "$t/portcullisd.toml" run >"$t/listener.log" 2>&1 &
    listener=$!
    for _ in $(seq 100); do
        grep -q 'listening on' "$t/listener.log" && return 0
        kill -0 "$listener" 2>/dev/null || die "the $1 listener exited: $(cat "$t/listener.log")"
        sleep 0.2
    done
    die "the $1 listener did not listen within 20 s: $(cat "$t/listener.log")"
}
exited() { # listener-arch: the listener must end by itself, with status 0
    local code=0
    for _ in $(seq 50); do
        kill -0 "$listener" 2>/dev/null || break
        sleep 0.2
    done
    kill -0 "$listener" 2>/dev/null && die "the $1 listener still runs 10 s after every volume opened"
    wait "$listener" || code=$?
    listener=
    [ "$code" = 0 ] || die "the $1 listener exited with $code: $(cat "$t/listener.log")"
}
client() { # x86_64|aarch64 portcullis-args...
    local a=$1
    shift
    if [ "$a" = x86_64 ]; then run "$x86/portcullis" "$@"; else arm64 "$arm/portcullis" "$@"; fi
}

pair() { # client-arch listener-arch
    local c=$1 l=$2 code out
    local opts=(127.0.0.1:"$port" --fingerprint "$fp" --known-hosts "$t/known_hosts_$c$l"
        -i "$t/admin" --no-agent --timeout 60s)
    listen_on "$l"
    out=$(client "$c" status "${opts[@]}" 2>&1) || die "$c status against $l: $out"
    grep -q 'portcullis-arm-smoke' <<<"$out" || die "$c status against $l does not list the volume: $out"
    code=0
    out=$(printf 'not the passphrase\n' | client "$c" unlock "${opts[@]}" --passphrase-stdin 2>&1) || code=$?
    [ "$code" = 2 ] || die "$c unlock with a wrong passphrase against $l: exit $code, not 2: $out"
    [ ! -e "$t/opened" ] || die "the fake cryptsetup opened on a wrong passphrase"
    code=0
    out=$(printf 'arm smoke passphrase\n' | client "$c" unlock "${opts[@]}" --passphrase-stdin 2>&1) || code=$?
    [ "$code" = 0 ] || die "$c unlock against $l: exit $code, not 0: $out"
    grep -qx "open --type luks --key-file=- $t/vda portcullis-arm-smoke" "$t/opened" ||
        die "$c unlock against $l: cryptsetup did not run as expected: $(cat "$t/opened" 2>&1)"
    exited "$l"
    say "ok: $c client -> $l listener: status, wrong passphrase (exit 2), unlock (exit 0), listener done"
}

pair aarch64 aarch64
pair aarch64 x86_64
pair x86_64 aarch64
say "all passed in $((SECONDS - start)) s"
