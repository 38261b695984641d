#!/usr/bin/env bash
# End-to-end tests on a real kernel: boot the test image in QEMU (TCG, two
# vCPUs) and unlock its LUKS2 root with `portcullis` and with stock OpenSSH.
#
# Usage: tests/vm/e2e.sh [--keep]
#   Builds the static listener and the client, fetches the kernel (cached),
#   builds the image, then runs the cases. Serial logs of failed boots are
#   kept under target/vm-e2e/ (all of them with --keep).
#
# Cases:
#   boot 1: --wait until the listener answers; a changed host key is refused
#           (exit 4) and an unpinned one too without a terminal (exit 3); an
#           unauthorized key is refused (exit 5, and stock ssh gets
#           "Permission denied"); password auth, shell, forwarding and
#           unknown commands are refused; wrong passphrase (exit 2, tries go
#           down) then the right one with `portcullis unlock` (exit 0): the
#           real root prints the marker, port 22 is closed and eth0 is flushed.
#   boot 2: `ssh HOST unlock` with the passphrase piped on stdin.
#   boot 3: `ssh -tt HOST` interactive prompt, wrong then right passphrase.
#   Every serial log and client output is searched for the passphrase.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
work="$repo/target/vm-e2e"
keep=0
[ "${1:-}" = "--keep" ] && keep=1

log() { printf '\n== %s\n' "$*" >&2; }
fail() { echo "FAIL: $*" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work"
chmod 700 "$work"
cd "$work"

log "building portcullisd (static) and portcullis"
"$repo/tests/build-release.sh" >/dev/null
target="$repo/target/dist"
portcullisd="$target/portcullisd"
portcullis="$target/portcullis"

log "fetching kernel and tools (cached)"
"$here/fetch.sh"

log "making keys and config"
umask 077
"$portcullisd" keygen "$work/host_key" >"$work/host_fp"
"$portcullisd" keygen "$work/other_host_key" >/dev/null
ssh-keygen -q -t ed25519 -N '' -C admin -f "$work/admin"
ssh-keygen -q -t ed25519 -N '' -C intruder -f "$work/intruder"
cp "$work/admin.pub" "$work/authorized_keys"
# Random passphrase with spaces; never on a command line.
printf 'correct horse %s staple' "$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')" >"$work/pass"
pass=$(cat "$work/pass")
cat >"$work/portcullisd.toml" <<TOML
listen = ["0.0.0.0:22"]
max-tries = 5
volumes-from-cmdline = false
[limits]
login-grace-secs = 20
[[volume]]
name = "root"
device = "LABEL=portcullis-test"
TOML
"$portcullisd" check --config "$work/portcullisd.toml" --root / >/dev/null 2>&1 ||
    true # paths in the config point into the image; the image build checks them

log "building the image"
"$here/build-image.sh" "$work/image" --portcullisd "$portcullisd" \
    --config "$work/portcullisd.toml" --host-key "$work/host_key" \
    --authorized-keys "$work/authorized_keys" --passphrase-file "$work/pass" >/dev/null

port=$((20000 + RANDOM % 20000))
ssh_opts=(-p "$port" -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none
    -o UserKnownHostsFile="$work/ssh_known_hosts" -o StrictHostKeyChecking=yes
    -o ConnectTimeout=20 -o LogLevel=ERROR)
echo "[127.0.0.1]:$port $(cat "$work/host_key.pub")" >"$work/ssh_known_hosts"
# portcullis SUBCOMMAND with the admin key and a private known-hosts file.
pc() {
    local sub=$1
    shift
    "$portcullis" "$sub" --no-agent -i "$work/admin" --known-hosts "$work/pc_known_hosts" "$@"
}
fp=$(cat "$work/host_fp")

boot=0
qemu_pid=
stop_vm() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
    fi
    qemu_pid=
}
on_exit() {
    rc=$?
    stop_vm
    if [ $rc -ne 0 ]; then
        echo "serial logs kept in $work (boot$boot.log)" >&2
    elif [ $keep -eq 0 ]; then
        rm -rf "$work/image"
    fi
}
trap on_exit EXIT

start_vm() {
    boot=$((boot + 1))
    "$here/boot.sh" --image "$work/image" --port "$port" --log "$work/boot$boot.log" \
        --pidfile "$work/qemu.pid" --smp 2 2>/dev/null
    qemu_pid=$(cat "$work/qemu.pid")
}
wait_log() { "$here/wait-for.sh" "$work/boot$boot.log" "$1" "${2:-120}" >/dev/null; }
expect_code() { # expected-code description -- command...
    local want=$1 what=$2
    shift 3
    set +e
    "$@" >"$work/out" 2>"$work/err"
    local got=$?
    set -e
    cat "$work/out" "$work/err" >>"$work/all-output"
    [ "$got" -eq "$want" ] || fail "$what: exit $got, expected $want; stderr: $(cat "$work/err")"
    echo "ok: $what (exit $got)" >&2
}
assert_grep() { grep -q -- "$1" "$2" || fail "expected /$1/ in $2: $(tail -5 "$2")"; }
assert_root_reached() {
    wait_log PORTCULLIS-ROOT-REACHED 180
    assert_grep '^PORTCULLIS-LISTENING: none' "$work/boot$boot.log"
    assert_grep '^PORTCULLIS-ETH0-ADDR: none' "$work/boot$boot.log"
    assert_grep '^PORTCULLIS-LEFTOVER-PROCS: none' "$work/boot$boot.log"
    assert_grep '^PORTCULLIS-ROOT: /dev/mapper/root ext4' "$work/boot$boot.log"
    echo "ok: boot $boot reached the real root; listener gone, port 22 closed, eth0 flushed" >&2
}
: >"$work/all-output"

log "boot 1: portcullis client, negative cases, wrong then right passphrase"
start_vm
# The listener is not up yet: --wait keeps retrying until it answers.
expect_code 0 "status --wait while booting" -- \
    pc status "127.0.0.1:$port" --fingerprint "$fp" --wait=180s --json
grep -q '"state":"pending"' "$work/out" || fail "status did not list a pending volume: $(cat "$work/out")"
# Host key changed: pinned to another key.
other=$(ssh-keygen -lf "$work/other_host_key.pub" | awk '{print $2}')
expect_code 4 "changed host key (pinned fingerprint) refused" -- \
    pc unlock "127.0.0.1:$port" --fingerprint "$other" --passphrase-stdin <"$work/pass"
assert_grep "HOST KEY CHANGED" "$work/err"
echo "[127.0.0.1]:$port $(cat "$work/other_host_key.pub")" >"$work/pc_known_hosts"
expect_code 4 "changed host key (known_hosts) refused" -- \
    pc unlock "127.0.0.1:$port" --passphrase-stdin <"$work/pass"
rm "$work/pc_known_hosts"
expect_code 3 "unknown host key without a terminal refused" -- \
    setsid "$portcullis" unlock --no-agent -i "$work/admin" --known-hosts "$work/pc_known_hosts" "127.0.0.1:$port" --passphrase-stdin <"$work/pass"
expect_code 5 "unauthorized key refused" -- \
    "$portcullis" unlock --no-agent -i "$work/intruder" "127.0.0.1:$port" \
    --fingerprint "$fp" --passphrase-stdin <"$work/pass"
expect_code 255 "stock ssh with an unauthorized key refused" -- \
    ssh "${ssh_opts[@]}" -i "$work/intruder" root@127.0.0.1 status
assert_grep "Permission denied (publickey)" "$work/err"
expect_code 255 "password authentication not offered" -- \
    ssh "${ssh_opts[@]}" -o PubkeyAuthentication=no -o PreferredAuthentications=password,keyboard-interactive \
    root@127.0.0.1 status
assert_grep "Permission denied (publickey)" "$work/err"
expect_code 1 "no shell without a terminal" -- ssh "${ssh_opts[@]}" -i "$work/admin" -T root@127.0.0.1
assert_grep "no shell here" "$work/err"
expect_code 1 "arbitrary command refused" -- ssh "${ssh_opts[@]}" -i "$work/admin" root@127.0.0.1 "sh -c id"
assert_grep "unknown command" "$work/err"
expect_code 255 "TCP forwarding refused" -- \
    ssh "${ssh_opts[@]}" -i "$work/admin" -W 127.0.0.1:22 root@127.0.0.1 </dev/null
expect_code 0 "stock ssh status" -- ssh "${ssh_opts[@]}" -i "$work/admin" root@127.0.0.1 status
assert_grep "pending" "$work/out"
printf 'not the passphrase' >"$work/wrong"
expect_code 2 "wrong passphrase" -- \
    pc unlock "127.0.0.1:$port" --fingerprint "$fp" --passphrase-stdin --json <"$work/wrong"
grep -q '"tries-left":4' "$work/out" || fail "tries did not go down: $(cat "$work/out")"
expect_code 0 "right passphrase (pinning on first contact with --accept-new)" -- \
    pc unlock "127.0.0.1:$port" --accept-new --passphrase-command "cat '$work/pass'"
assert_grep "unlocked: root" "$work/out"
assert_grep "127.0.0.1" "$work/pc_known_hosts"
assert_root_reached
stop_vm

log "boot 2: stock OpenSSH, passphrase piped to 'ssh HOST unlock'"
start_vm
wait_log PORTCULLIS-LISTENER-START 120
expect_code 0 "pinned key now matches (status --wait)" -- \
    pc status "127.0.0.1:$port" --wait=180s
expect_code 0 "echo pass | ssh HOST unlock" -- \
    sh -c '{ cat "$0"; echo; } | "$@"' "$work/pass" ssh "${ssh_opts[@]}" -i "$work/admin" root@127.0.0.1 unlock
assert_grep "unlocked" "$work/out"
assert_root_reached
stop_vm

log "boot 3: stock OpenSSH interactive session through a pty"
start_vm
pc status "127.0.0.1:$port" --wait=180s >/dev/null
expect_code 0 "ssh -tt: wrong, then right passphrase" -- \
    python3 "$here/pty-unlock.py" "$work/pass" "wrong-guess" -- \
    ssh "${ssh_opts[@]}" -i "$work/admin" -tt root@127.0.0.1
assert_root_reached
stop_vm

log "redaction: the passphrase appears in no log or output"
for f in "$work"/boot*.log "$work/all-output"; do
    if grep -qF -- "$pass" "$f"; then fail "passphrase found in $f"; fi
done
echo "ok: passphrase absent from $(ls "$work"/boot*.log | wc -l) serial logs and all client output" >&2
log "all VM cases passed"
