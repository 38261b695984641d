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
#   boot 2: no inbound forward at all: the listener logs in out to a real
#           OpenSSH relay on the host's loopback (reached through QEMU's
#           user-mode gateway 10.0.2.2, docs/relay.md) and the admin goes
#           through it: `portcullis status|unlock HOST:PORT --via relay`
#           (a wrong pin is exit 4, a wrong passphrase exit 2), then stock
#           `ssh HOST unlock` (ProxyJump) with the passphrase piped on stdin.
#           After boot the relay no longer listens for it.
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
# The relay (boot 2): a real sshd on the host's loopback, the guest's
# 10.0.2.2. Ports: the listener logs in on relay_port, admins on
# relay_admin_port; the listener asks for fwd_port there.
[ -x /usr/sbin/sshd ] || fail "no /usr/sbin/sshd for the relay case (apt-get install openssh-server)"
relay_port=$((20000 + RANDOM % 20000))
relay_admin_port=$((relay_port + 1))
fwd_port=$((relay_port + 2))
ssh-keygen -q -t ed25519 -N '' -C relay-host -f "$work/relay_host_key"
relay_fp=$(ssh-keygen -lf "$work/relay_host_key.pub" | awk '{print $2}')
"$portcullisd" keygen "$work/relay_key" >/dev/null
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
[relay]
host = "10.0.2.2"
port = $relay_port
user = "root"
key = "/etc/portcullis/relay_key"
host-key-fingerprints = ["$relay_fp"]
remote-port = $fwd_port
TOML
"$portcullisd" check --config "$work/portcullisd.toml" --root / >/dev/null 2>&1 ||
    true # paths in the config point into the image; the image build checks them

log "building the image"
# The image carries the initramfs build (listen only), as the hooks copy it.
"$here/build-image.sh" "$work/image" --portcullisd "$portcullisd-initramfs" \
    --config "$work/portcullisd.toml" --host-key "$work/host_key" \
    --authorized-keys "$work/authorized_keys" --passphrase-file "$work/pass" \
    --extra-file "$work/relay_key:/etc/portcullis/relay_key:0600" >/dev/null

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

# The relay's sshd: the lines of docs/relay.md (the Match block by port
# here, so the test needs no system user).
mkdir -p /run/sshd
cat >"$work/relay_authorized_keys" <<KEYS
restrict,port-forwarding,permitlisten="127.0.0.1:$fwd_port",command="/bin/false" $(cat "$work/relay_key.pub")
restrict,port-forwarding,permitopen="127.0.0.1:$fwd_port" $(cat "$work/admin.pub")
KEYS
cat >"$work/relay_sshd_config" <<CONF
ListenAddress 127.0.0.1:$relay_port
ListenAddress 127.0.0.1:$relay_admin_port
HostKey $work/relay_host_key
PidFile $work/relay_sshd.pid
AuthorizedKeysFile $work/relay_authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
LogLevel VERBOSE
Match LocalPort $relay_port
    AllowTcpForwarding remote
    PermitListen 127.0.0.1:$fwd_port
    X11Forwarding no
    AllowAgentForwarding no
    PermitTTY no
    ForceCommand /bin/false
    ClientAliveInterval 15
    ClientAliveCountMax 3
CONF
# The admin's side: `relay` and, for stock ssh, `web1-unlock` through it.
echo "[127.0.0.1]:$relay_admin_port $(cat "$work/relay_host_key.pub")" >"$work/relay_known_hosts"
echo "web1-initramfs $(cat "$work/host_key.pub")" >"$work/relay_listener_known_hosts"
cat >"$work/admin_ssh_config" <<CONF
Host relay
    HostName 127.0.0.1
    Port $relay_admin_port
    User root
Host web1-unlock
    HostName 127.0.0.1
    Port $fwd_port
    ProxyJump relay
    HostKeyAlias web1-initramfs
    User root
    UserKnownHostsFile $work/relay_listener_known_hosts
Host *
    IdentityFile $work/admin
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile $work/relay_known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 20
    LogLevel ERROR
CONF
printf '#!/bin/sh\nexec ssh -F %s "$@"\n' "$work/admin_ssh_config" >"$work/admin_ssh"
chmod 755 "$work/admin_ssh"
relay_pid=
start_relay() {
    /usr/sbin/sshd -D -e -f "$work/relay_sshd_config" 2>>"$work/relay_sshd.log" &
    relay_pid=$!
}
stop_relay() {
    if [ -n "$relay_pid" ]; then
        # The daemon and the session processes it forked for the listener.
        pkill -P "$relay_pid" 2>/dev/null || true
        kill "$relay_pid" 2>/dev/null || true
        wait "$relay_pid" 2>/dev/null || true
    fi
    relay_pid=
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

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
    stop_relay
    if [ $rc -ne 0 ]; then
        echo "serial logs kept in $work (boot$boot.log)" >&2
    elif [ $keep -eq 0 ]; then
        rm -rf "$work/image"
    fi
}
trap on_exit EXIT

start_vm() { # [boot.sh options]
    boot=$((boot + 1))
    "$here/boot.sh" --image "$work/image" --port "$port" --log "$work/boot$boot.log" \
        --pidfile "$work/qemu.pid" --smp 2 "$@" 2>/dev/null
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

log "boot 2: no inbound forward; through the relay: portcullis --via, then stock ssh (ProxyJump) piped"
boot2_start=$SECONDS
start_relay
start_vm --no-forward
# `--via relay` runs this ssh, which knows the relay as `relay`.
export PORTCULLIS_SSH="$work/admin_ssh"
expect_code 0 "status --via relay --wait (the listener logged in out to the relay)" -- \
    pc status "web1:$fwd_port" --via relay --fingerprint "$fp" --wait=180s --json
grep -q '"state":"pending"' "$work/out" || fail "status --via did not list a pending volume: $(cat "$work/out")"
# The listener's own relay key logged in (through the gateway: from 127.0.0.1).
relay_key_fp=$(ssh-keygen -lf "$work/relay_key.pub" | awk '{print $2}')
assert_grep "Accepted publickey for root from 127.0.0.1 port [0-9]* ssh2: ED25519 $relay_key_fp" "$work/relay_sshd.log"
expect_code 4 "another pinned key through the relay refused, nothing sent" -- \
    pc unlock "web1:$fwd_port" --via relay --fingerprint "$other" --passphrase-stdin <"$work/pass"
expect_code 2 "wrong passphrase through the relay (portcullis --via)" -- \
    pc unlock "web1:$fwd_port" --via relay --passphrase-stdin --json <"$work/wrong"
grep -q '"tries-left":4' "$work/out" || fail "tries did not go down: $(cat "$work/out")"
expect_code 0 "echo pass | ssh web1-unlock unlock (ProxyJump through the relay)" -- \
    sh -c '{ cat "$0"; echo; } | "$@"' "$work/pass" ssh -F "$work/admin_ssh_config" web1-unlock unlock
assert_grep "unlocked" "$work/out"
unset PORTCULLIS_SSH
assert_root_reached
if port_open "$fwd_port"; then fail "the relay still listens on 127.0.0.1:$fwd_port after boot"; fi
echo "ok: the relay no longer listens for the listener after boot" >&2
stop_vm
stop_relay
echo "boot 2 (relay) took $((SECONDS - boot2_start)) s" >&2

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
