#!/usr/bin/env bash
# VM tests of the initramfs integration, on images built by the real
# generators: boot in QEMU (TCG, two vCPUs), unlock over SSH with `portcullis`
# (or on the serial console), and check that the real system came up with
# nothing of the initramfs network left.
#
# Usage: tests/distro/run.sh [--keep-going] [FLAVOUR...]
#   FLAVOUR: initramfs-tools dracut mkinitcpio (default: all three)
#
#   Debian roots are cached in target/distro-cache (PORTCULLIS_DISTRO_CACHE);
#   logs (serial consoles, build logs, client output) go to
#   target/distro-run/FLAVOUR/ and are kept. Installs the host packages it
#   needs (debootstrap, qemu-system-x86, cryptsetup-bin, ...).
#   Builds the binaries with tests/build-release.sh unless PORTCULLIS_BIN_DIR
#   names a folder holding portcullisd, portcullisd-initramfs (static) and portcullis.
set -euo pipefail
# shellcheck source=tests/distro/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/distro/mkinitcpio-upstream.sh
. "$distro_here/mkinitcpio-upstream.sh"
# shellcheck source=tests/distro/net.sh
. "$distro_here/net.sh"
# shellcheck source=tests/distro/preflight.sh
. "$distro_here/preflight.sh"

keep_going=0
flavours=()
for a in "$@"; do
    case $a in
        --keep-going) keep_going=1 ;;
        initramfs-tools|dracut|mkinitcpio) flavours+=("$a") ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument: $a" ;;
    esac
done
[ ${#flavours[@]} -gt 0 ] || flavours=(initramfs-tools dracut mkinitcpio)

run_dir=$distro_repo/target/distro-run
mkdir -p "$run_dir"
chmod 0700 "$run_dir"
ensure_host_packages

# The hooks run under ash/dash in the initramfs: keep every one of them and
# this harness shellcheck-clean (the runtime hooks' #!/usr/bin/ash shebang
# hides them from a shebang-based search).
if command -v shellcheck >/dev/null; then
    (
        cd "$distro_repo"
        shellcheck -S warning -x tests/distro/*.sh tests/distro/guest/portcullis-test-report \
            initramfs/install.sh initramfs/initramfs-tools/hooks/* initramfs/initramfs-tools/scripts/*/* \
            initramfs/dracut/95portcullis/*.sh initramfs/mkinitcpio/hooks/* \
            initramfs/common/initramfs.conf initramfs/initramfs-tools/conf.d/* initramfs/dracut/portcullis.conf
        shellcheck -S warning -s bash initramfs/mkinitcpio/install/*
    ) || die "shellcheck found problems in the hooks or the harness"
    dlog "shellcheck: hooks and harness clean"
fi

bin_dir=${PORTCULLIS_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
    dlog "building portcullisd (static) and portcullis"
    "$distro_repo/tests/build-release.sh" >/dev/null
    bin_dir=$distro_repo/target/dist
fi
# Private copies: the build tree may change while the VMs run.
install -m 0755 "$bin_dir/portcullisd" "$run_dir/portcullisd.new"
install -m 0755 "$bin_dir/portcullisd-initramfs" "$run_dir/portcullisd-initramfs.new"
install -m 0755 "$bin_dir/portcullis" "$run_dir/portcullis.new"
install -m 0755 "$bin_dir/portcullis-preflight" "$run_dir/portcullis-preflight.new"
mv -f "$run_dir/portcullisd.new" "$run_dir/portcullisd"
mv -f "$run_dir/portcullisd-initramfs.new" "$run_dir/portcullisd-initramfs"
mv -f "$run_dir/portcullis.new" "$run_dir/portcullis"
mv -f "$run_dir/portcullis-preflight.new" "$run_dir/portcullis-preflight"
PD=$run_dir/portcullisd
PC=$run_dir/portcullis
ensure_keys "$PD"
PASS=$(cat "$KEYS/passphrase")

trap 'vm_stop' EXIT

# pc SUBCOMMAND ARGS...: the client against the running VM (PC_TARGET, else
# the forwarded port), pinned to the test host key; output in $case_dir/out
# and $case_dir/err, exit code in $rc.
pc() {
    local sub=$1
    shift
    set +e
    in_vm_ns "$PC" "$sub" --no-agent -i "$KEYS/admin" --fingerprint "$HOST_FP" \
        "${PC_TARGET:-127.0.0.1:$VM_PORT}" "$@" >"$case_dir/out" 2>"$case_dir/err"
    rc=$?
    set -e
    cat "$case_dir/out" "$case_dir/err" >>"$case_dir/client.log"
}
expect_rc() { # WANT DESCRIPTION
    [ "$rc" -eq "$1" ] ||
        fail "$2: portcullis exited $rc, expected $1; stdout: $(cat "$case_dir/out"); stderr: $(cat "$case_dir/err")"
    ok "$2 (exit $rc)"
}

# wait_listener: until `portcullis status` answers (the initramfs is up).
wait_listener() {
    pc status --wait=300s --json
    expect_rc 0 "listener answers status"
}

# check_real_system BACKEND [DATA]: the booted system's report (see
# guest/portcullis-test-report): both volumes mounted, no listener, no port
# 22, no address or route or link left from the initramfs, no failed unit.
check_real_system() { # BACKEND [DATA [flushed|kept (10.0.2.15)|kept-dual (both families)]]
    local backend=$1 data=${2:-/dev/mapper/data data-volume-ok} network=${3:-flushed} addr
    vm_wait PORTCULLIS-REAL-SYSTEM-UP 300 >/dev/null || fail "the real system did not come up (serial log $VM_LOG)"
    ok "real system up after $(serial_value PORTCULLIS-REAL-UPTIME) s of guest uptime"
    expect_serial PORTCULLIS-REAL-ROOT "/dev/mapper/root ext4" "root filesystem is the unlocked LUKS volume"
    expect_serial PORTCULLIS-REAL-DATA "$data" "data volume as expected (unlocked in the initramfs and mounted, or none)"
    expect_serial PORTCULLIS-REAL-PORT22 none "nothing listens on port 22 in the booted system"
    expect_serial PORTCULLIS-REAL-PROCS none "no portcullisd or DHCP client left running"
    if [ "$network" = kept ] || [ "$network" = kept-dual ]; then
        addr=$(serial_value PORTCULLIS-REAL-ADDR)
        case $network:$addr in
            kept:*=10.0.2.15/24*) ok "PORTCULLIS_KEEP_NETWORK=yes: the initramfs address is still there ($addr)" ;;
            kept-dual:*"=$NET_GUEST4/24"*"=$NET_GUEST6/64"*) ok "PORTCULLIS_KEEP_NETWORK=yes: the initramfs addresses of both families are still there ($addr)" ;;
            *) fail "PORTCULLIS_KEEP_NETWORK=yes, but the booted system reports PORTCULLIS-REAL-ADDR: '$addr'" ;;
        esac
    else
        expect_serial PORTCULLIS-REAL-ADDR none "no global address left on any interface"
        expect_serial PORTCULLIS-REAL-ROUTES none "no route left"
        expect_serial PORTCULLIS-REAL-LINKS-UP none "no interface left up"
    fi
    expect_serial PORTCULLIS-REAL-FAILED-UNITS none "no failed systemd unit"
    grep -aq "PORTCULLIS-REAL-KMSG: .*portcullisd: .*unlock backend: $backend" "$VM_LOG" ||
        fail "the listener did not log 'unlock backend: $backend': $(grep -a 'PORTCULLIS-REAL-KMSG' "$VM_LOG" | head -n 5)"
    ok "auto-detected backend: $backend"
    # From the host too: the forwarded port reaches no listener any more.
    pc status --timeout=10s
    [ "$rc" -ne 0 ] || fail "portcullis status still answered after the switch to the real system"
    ok "listener unreachable from the host after boot (exit $rc)"
    if grep -aqF -- "$PASS" "$VM_LOG" "$case_dir/client.log"; then
        fail "the passphrase appears in $VM_LOG or the client output"
    fi
    ok "passphrase absent from the serial log and client output"
}

# ssh_unlock: wrong passphrase (refused, tries go down), then the right one
# opens every volume in one call.
ssh_unlock() {
    local want=$1
    printf 'not the passphrase\n' >"$case_dir/wrong"
    pc unlock --passphrase-stdin --json <"$case_dir/wrong"
    expect_rc 2 "wrong passphrase refused"
    pc unlock --passphrase-stdin <"$KEYS/passphrase"
    expect_rc 0 "portcullis unlock"
    grep -q -- "$want" "$case_dir/out" || fail "unlock output lacks '$want': $(cat "$case_dir/out")"
    ok "unlock reported: $(cat "$case_dir/out")"
}

# console_won: the listener opened nothing (the console did) and was gone
# before the real system started.
console_won() {
    if grep -a 'PORTCULLIS-REAL-KMSG: .*portcullisd: .*result=Opened' "$VM_LOG"; then
        fail "the listener opened a volume although only the console was answered"
    fi
    ok "the console answer won; the listener opened nothing"
}

boot() { # NAME KERNEL-CMDLINE-EXTRA [INITRD [DISK...]] (disks: root.img data.img unless given)
    local name=$1 extra=$2 initrd=${3:-$img/initrd.img}
    shift $(($# < 3 ? $# : 3))
    [ $# -gt 0 ] || set -- "$img/root.img" "$img/data.img"
    vm_start "$case_dir" "$name" "$img/vmlinuz" "$initrd" \
        "$(cat "$img/cmdline") portcullis.test.keep $extra" "$@"
}

case_initramfs_tools() {
    img=$distro_cache/img-initramfs-tools
    "$distro_here/build-initramfs-tools.sh" "$PD" "$img"
    cp "$img"/*.log "$case_dir/"

    # Boot 1 also carries the preflight test (preflight.sh): its data disk
    # has an extra keyslot needing 1.5 GiB of argon2 memory (harmless here:
    # only the right passphrase is typed, which opens slot 0), and a disk
    # with the images under test; after the report, the system's own sshd.
    dlog "initramfs-tools boot 1: static ip=, the console answers first (race: console wins), PORTCULLIS_KEEP_NETWORK=yes; then preflight on the booted system"
    boot console-static "ip=10.0.2.15::10.0.2.2:255.255.255.0:portcullis-test::off portcullis.test.sshd" \
        "$img/initrd-keep.img" "$img/root.img" "$img/data-argon2.img" "$img/pf-images.img"
    wait_listener
    vm_wait 'Please unlock disk root' 120 >/dev/null || fail "no console prompt for root"
    vm_type "$PASS"
    vm_wait 'Please unlock disk data' 120 >/dev/null || fail "no console prompt for data after root"
    vm_type "$PASS"
    check_real_system Askpass "/dev/mapper/data data-volume-ok" kept
    console_won
    preflight_initramfs_tools
    vm_stop

    # What preflight passed last in boot 1 (image and command line, checked
    # byte for byte there) is what this boot boots, with SLAAC added.
    dlog "initramfs-tools boot 2: DHCP (ip=dhcp) and SLAAC (portcullis.ip6=auto), two volumes unlocked over SSH with one passphrase"
    VM_USER_NET_OPTS=,ipv6-net=2001:db8:5d::/64
    boot ssh-dhcp "ip=dhcp portcullis.ip6=auto"
    VM_USER_NET_OPTS=
    wait_listener
    grep -q '"name":"root"' "$case_dir/out" || fail "status does not list root: $(cat "$case_dir/out")"
    ssh_unlock "root"
    check_real_system Askpass
    # QEMU's user network advertises the prefix it was given.
    grep -aqE 'portcullis: IPv6: [^ ]+ 2001:db8:5d:[0-9a-f:]*/64 \(SLAAC\)' "$VM_LOG" ||
        fail "no SLAAC address in the initramfs: $(grep -a 'portcullis: IPv6' "$VM_LOG")"
    ok "SLAAC in the initramfs: $(grep -a -m1 -o 'portcullis: IPv6: .*' "$VM_LOG" | tr -d '\r'); none left after boot"
    vm_stop

    trap 'vm_stop; net_down' EXIT
    dlog "initramfs-tools boot 3: dual-stack (static ip= and portcullis.ip6= with gateway fe80::1), status over both, the console answers first (race: console wins), PORTCULLIS_KEEP_NETWORK=yes"
    net_up 0 1
    boot console-dual "net.ifnames=0 ip=$NET_GUEST4::$NET_ROUTER4:255.255.255.0:portcullis-test:eth0:off portcullis.ip6=$NET_GUEST6/64,fe80::1" \
        "$img/initrd-keep.img"
    PC_TARGET=$NET_GUEST4:22 wait_listener
    ok "the listener answers over IPv4 ($NET_GUEST4)"
    PC_TARGET=[$NET_GUEST6]:22
    wait_listener
    ok "the listener answers over IPv6 ([$NET_GUEST6]) from $NET_ADMIN6, off-link: through the gateway fe80::1"
    vm_wait 'Please unlock disk root' 120 >/dev/null || fail "no console prompt for root"
    vm_type "$PASS"
    vm_wait 'Please unlock disk data' 120 >/dev/null || fail "no console prompt for data after root"
    vm_type "$PASS"
    check_real_system Askpass "/dev/mapper/data data-volume-ok" kept-dual
    console_won
    vm_stop
    net_down

    dlog "initramfs-tools boot 4: IPv6 only (ip=off), static with gateway fe80::1, on VLAN 100 over an active-backup bond; one link cut before the unlock"
    net_up 100 2
    PC_TARGET=[$NET_GUEST6]:22
    boot bond-vlan-ipv6 "net.ifnames=0 ip=off portcullis.bond=bond0:eth0,eth1:mode=active-backup,miimon=100 portcullis.vlan=bond0.100:bond0 portcullis.ip6=$NET_GUEST6/64,fe80::1,bond0.100"
    bond_vlan_unlock Askpass
    unset PC_TARGET
}

# bond_vlan_unlock BACKEND: the boot of net_up 100 2 with the bond, VLAN and
# IPv6 of the kernel parameters above: status, the active link cut, unlock
# over the other one, nothing left after boot, tagged frames seen.
bond_vlan_unlock() {
    local from untagged
    wait_listener
    for want in "bond bond0 over eth0,eth1 (mode=active-backup,miimon=100)" "VLAN 100 on bond0: bond0.100" \
        "IPv6: bond0.100 $NET_GUEST6/64 via fe80::1"; do
        grep -aqF "portcullis: $want" "$VM_LOG" || fail "the initramfs did not log '$want': $(grep -a 'portcullis:' "$VM_LOG")"
    done
    ok "the initramfs made bond0 over eth0,eth1, VLAN 100 on it and IPv6 on that; the listener answers through it"
    net_set_link 0 off
    ok "eth0's link cut in QEMU"
    ssh_unlock "root"
    check_real_system "$1" "${2:-/dev/mapper/data data-volume-ok}"
    # The cleanup names the bond's active link when it deletes the bond.
    grep -aqF 'portcullis: deleted bond0 (active slave: eth1)' "$VM_LOG" ||
        fail "the bond did not end on eth1: $(grep -a 'portcullis: deleted' "$VM_LOG")"
    ok "the unlock went through eth1: the bond failed over (portcullis: deleted bond0 (active slave: eth1))"
    expect_serial PORTCULLIS-REAL-NETDEVS "eth0 eth1" "no bond or VLAN interface left"
    vm_stop
    net_down
    from=$(hub_count from-guest) untagged=$(hub_count untagged-dropped)
    [ "${from:-0}" -gt 0 ] || fail "the hub passed no frames tagged with VLAN 100: $(cat "$case_dir/hub.stats")"
    ok "every frame the listener got came tagged with VLAN 100 ($from passed; $untagged untagged ones dropped)"
}

case_dracut() {
    img=$distro_cache/img-dracut
    "$distro_here/build-dracut.sh" "$PD" "$img"
    cp "$img"/*.log "$case_dir/"

    dlog "dracut boot 1: systemd initramfs, ip=dhcp via systemd-networkd, two volumes over SSH"
    boot ssh-dhcp "ip=dhcp"
    wait_listener
    ssh_unlock "root"
    check_real_system Systemd
    vm_stop

    # No 90-second trap: with systemd's default start timeout cut to 20 s,
    # leave the prompt waiting 60 s, then answer on the console. Nothing may
    # time out into an emergency shell, and the listener must still go away.
    dlog "dracut boot 2: default timeouts cut to 20 s, 60 s without an answer, then the console answers"
    boot slow-console "ip=dhcp systemd.default_timeout_start_sec=20s rd.retry=20"
    wait_listener
    vm_wait 'Please enter passphrase for disk' 120 >/dev/null || fail "no console prompt"
    sleep 60
    if grep -aE 'Timed out|emergency|Emergency' "$VM_LOG"; then
        fail "something timed out while the prompt waited (serial log $VM_LOG)"
    fi
    pc status --json
    expect_rc 0 "listener still answers after 60 s of waiting"
    vm_type "$PASS"
    check_real_system Systemd
    console_won
    vm_stop
}

# mk_boot NAME KERNEL-CMDLINE-EXTRA DISK...: boot the current mkinitcpio image.
mk_boot() {
    local name=$1 extra=$2
    shift 2
    vm_start "$case_dir" "$name" "$img/vmlinuz" "$img/initrd.img" \
        "$(cat "$img/cmdline") portcullis.test.keep $extra" "$@"
}

# PORTCULLIS_MKINITCPIO_VARIANTS="busybox systemd" (the default) chooses
# which images of the mkinitcpio flavour are built and booted.
case_mkinitcpio() {
    local v
    [ -n "$(mkinitcpio_src)" ] || exit 77
    for v in ${PORTCULLIS_MKINITCPIO_VARIANTS:-busybox systemd}; do
        case $v in
            busybox) mkinitcpio_busybox ;;
            systemd) mkinitcpio_systemd ;;
            *) fail "PORTCULLIS_MKINITCPIO_VARIANTS: unknown variant $v (busybox, systemd)" ;;
        esac
    done
}

mkinitcpio_busybox() {
    local discard
    img=$distro_cache/img-mkinitcpio
    "$distro_here/build-mkinitcpio.sh" "$PD" "$img" busybox
    preflight_mkinitcpio "$PD" "$img"
    cp "$img"/*.log "$case_dir/"

    dlog "mkinitcpio boot 1: busybox image, static ip= with a dotted netmask, cryptdevice=PARTUUID=...:allow-discards, unlocked over SSH"
    mk_boot ssh-static "cryptdevice=PARTUUID=$ROOT_PARTUUID:root:allow-discards ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off" \
        "$img/root-gpt.img"
    wait_listener
    grep -q "\"device\":\"PARTUUID=$ROOT_PARTUUID\",\"name\":\"root\",\"state\":\"pending\"" "$case_dir/out" ||
        fail "status does not show the PARTUUID= root pending: $(cat "$case_dir/out")"
    ok "the listener found the PARTUUID= device"
    ssh_unlock "root"
    check_real_system Cryptsetup none
    grep -aq 'portcullis: network: eth0 10.0.2.15/24' "$VM_LOG" ||
        fail "static ip= not applied as /24: $(grep -a 'portcullis: network' "$VM_LOG")"
    ok "static ip= with 255.255.255.0 applied: $(grep -a -m1 -o 'portcullis: network: .*' "$VM_LOG" | tr -d '\r')"
    grep -aq 'portcullis: root was unlocked over SSH' "$VM_LOG" ||
        fail "the console prompt was not ended after the SSH unlock: $(grep -a 'portcullis:' "$VM_LOG" | tail -n 5)"
    ok "the console prompt stopped asking once root was open"
    discard=$(serial_value PORTCULLIS-REAL-DISCARD)
    case " $discard " in
        *" root=0 "* | *" root= "*) fail "root opened over SSH without discards: PORTCULLIS-REAL-DISCARD: $discard" ;;
        *" root="[1-9]*) ok "root opened over SSH passes discards (discard_max_bytes: $discard)" ;;
        *) fail "no discard report for root: PORTCULLIS-REAL-DISCARD: $discard" ;;
    esac
    vm_stop

    dlog "mkinitcpio boot 2: busybox image, ip=dhcp (udhcpc), cryptdevice=PARTLABEL=..., unlocked over SSH"
    mk_boot ssh-dhcp "cryptdevice=PARTLABEL=$ROOT_PARTLABEL:root ip=dhcp" "$img/root-gpt.img"
    wait_listener
    ssh_unlock "root"
    check_real_system Cryptsetup none
    vm_stop

    dlog "mkinitcpio boot 3: busybox image, cryptkey=DEVICE:ext4:PATH opens root with no prompt"
    mk_boot cryptkey "cryptdevice=UUID=$ROOT_UUID:root cryptkey=/dev/vdb:ext4:/root.key" \
        "$img/root.img" "$img/key.img"
    vm_wait PORTCULLIS-REAL-SYSTEM-UP 300 >/dev/null || fail "the real system did not come up (serial log $VM_LOG)"
    expect_serial PORTCULLIS-REAL-ROOT "/dev/mapper/root ext4" "root filesystem is the unlocked LUKS volume"
    grep -aq 'portcullis: root opened with its key file' "$VM_LOG" ||
        fail "root was not opened with the key file: $(grep -a 'portcullis:' "$VM_LOG" | tail -n 5)"
    if grep -aq 'A password is required' "$VM_LOG"; then
        fail "a passphrase prompt appeared although the key file opens root"
    fi
    expect_serial PORTCULLIS-REAL-PROCS none "no listener was started (nothing left to unlock)"
    ok "cryptkey= booted with no prompt"
    vm_stop

    trap 'vm_stop; net_down' EXIT
    dlog "mkinitcpio boot 3b: busybox image, IPv6 only (no ip=), static with gateway fe80::1, on VLAN 100 over an active-backup bond; one link cut before the unlock"
    net_up 100 2
    PC_TARGET=[$NET_GUEST6]:22
    mk_boot bond-vlan-ipv6 "net.ifnames=0 cryptdevice=UUID=$ROOT_UUID:root portcullis.bond=bond0:eth0,eth1:mode=active-backup,miimon=100 portcullis.vlan=bond0.100:bond0 portcullis.ip6=$NET_GUEST6/64,fe80::1,bond0.100" \
        "$img/root.img"
    bond_vlan_unlock Cryptsetup none
    unset PC_TARGET
}

mkinitcpio_systemd() {
    img=$distro_cache/img-mkinitcpio-sd
    "$distro_here/build-mkinitcpio.sh" "$PD" "$img" systemd
    cp "$img/mkinitcpio.log" "$case_dir/mkinitcpio-sd.log"
    dlog "mkinitcpio boot 4: systemd image as a mkinitcpio-systemd-tool user has it (its network file, crypttab, keys), two volumes over SSH"
    mk_boot sd-ssh-tool "" "$img/root.img" "$img/data.img"
    wait_listener
    ssh_unlock "root"
    check_real_system Systemd
    vm_stop
}

failed=()
skipped=()
for flavour in "${flavours[@]}"; do
    case_dir=$run_dir/$flavour
    rm -rf "$case_dir"
    mkdir -p "$case_dir"
    start=$SECONDS
    dlog "=== $flavour"
    # A subshell outside any condition, so errexit stays on inside it.
    set +e
    (
        set -e
        trap vm_stop EXIT
        "case_${flavour//-/_}"
    )
    case_rc=$?
    set -e
    if [ $case_rc -eq 0 ]; then
        dlog "=== $flavour passed in $((SECONDS - start)) s"
    elif [ $case_rc -eq 77 ]; then
        dlog "=== $flavour SKIPPED: no upstream mkinitcpio source (PORTCULLIS_MKINITCPIO_SRC, see tests/distro/README.md)"
        skipped+=("$flavour")
    else
        dlog "=== $flavour FAILED after $((SECONDS - start)) s; logs in $case_dir"
        failed+=("$flavour")
        vm_stop
        [ $keep_going -eq 1 ] || break
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "distro tests failed: ${failed[*]}" >&2
    exit 1
fi
if [ ${#skipped[@]} -gt 0 ]; then
    dlog "distro tests passed; SKIPPED: ${skipped[*]}"
else
    dlog "all distro tests passed (${flavours[*]})"
fi
