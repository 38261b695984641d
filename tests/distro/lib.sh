# shellcheck shell=bash disable=SC2034 # variables are used by the scripts that source this
# Shared helpers for the distribution VM tests (sourced, never run).
#
#   distro_cache            cache root (PORTCULLIS_DISTRO_CACHE, default target/distro-cache)
#   in_chroot DIR CMD...    run CMD in DIR with /proc, /sys, /dev, /run mounted in a
#                           private mount namespace (nothing leaks to the host);
#                           CHROOT_APT_ARCHIVES=DIR bind-mounts DIR on the
#                           chroot's /var/cache/apt/archives
#   ensure_host_packages    apt-get install what the tests need on the host
#   hash_of ARGS...         sha256 over files (by content, in order) and literal strings

distro_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
distro_repo=$(cd "$distro_here/../.." && pwd)
distro_cache=${PORTCULLIS_DISTRO_CACHE:-$distro_repo/target/distro-cache}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

dlog() { printf '%s %s: %s\n' "$(date +%H:%M:%S)" "${0##*/}" "$*" >&2; }
die() { dlog "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_host_packages: everything the distro tests run on the host.
ensure_host_packages() {
    local missing=() pair cmd pkg
    for pair in debootstrap:debootstrap qemu-system-x86_64:qemu-system-x86 \
        cryptsetup:cryptsetup-bin mkfs.ext4:e2fsprogs cpio:cpio zstd:zstd \
        depmod:kmod ssh:openssh-client ssh-keygen:openssh-client flock:util-linux \
        unshare:util-linux python3:python3 gzip:gzip sfdisk:fdisk; do
        cmd=${pair%%:*} pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        dlog "installing host packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >&2
    fi
}

# hash_of: files are hashed by content (a missing file is an error), other
# arguments as text. Prints 16 hex digits.
hash_of() {
    local a
    for a in "$@"; do
        if [ -f "$a" ]; then
            printf 'file %s\n' "${a##*/}"
            cat "$a"
        elif [ -d "$a" ]; then
            printf 'dir %s\n' "${a##*/}"
            (cd "$a" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
        else
            printf 'text %s\n' "$a"
        fi
    done | sha256sum | cut -c1-16
}

# in_chroot DIR CMD...: a private mount namespace, so a failure or a kill
# never leaves /proc or /dev mounted inside the cache.
in_chroot() {
    local dir=$1
    shift
    unshare --mount --propagation private -- /bin/sh -euc '
        d=$1; shift
        mount -t proc proc "$d/proc"
        mount -t sysfs sysfs "$d/sys"
        mount --rbind /dev "$d/dev"
        mount -t tmpfs -o mode=0755 tmpfs "$d/run"
        mkdir -p "$d/run/lock"
        if [ -n "${CHROOT_APT_ARCHIVES:-}" ]; then
            mount --bind "$CHROOT_APT_ARCHIVES" "$d/var/cache/apt/archives"
        fi
        exec chroot "$d" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive HOME=/root "$@"
    ' in_chroot "$dir" "$@"
}

# ---------------------------------------------------------------------------
# LUKS disk images (no device-mapper needed on the host)
# ---------------------------------------------------------------------------

# make_luks_image SRC_DIR OUT UUID KEYFILE [LABEL]: an ext4 filesystem made
# from SRC_DIR (mkfs.ext4 -d, no mount), encrypted offline in place into a
# whole-disk LUKS2 container with the given UUID. Argon2id cost pinned so a
# small VM can open it quickly: 64 MiB, 4 iterations, 2 lanes.
# The encrypted image is fully allocated (no holes), so it checks the free
# space first: a full disk otherwise shows up as cryptsetup's "Failed to
# write hotzone area", which says nothing about the cause.
make_luks_image() {
    local src=$1 out=$2 uuid=$3 keyfile=$4 label=${5:-} mib reserve=32
    mib=$(du -sm "$src" | cut -f1)
    mib=$((mib + mib / 3 + 64))
    rm -f "$out"
    need_free_mib "$(dirname "$out")" "$((mib + reserve))" "the LUKS image $out"
    truncate -s "${mib}M" "$out"
    mkfs.ext4 -q -F -E root_owner=0:0 ${label:+-L "$label-fs"} -d "$src" "$out" ||
        die "mkfs.ext4 -d $src failed"
    truncate -s "$((mib + reserve))M" "$out"
    cryptsetup reencrypt --encrypt --type luks2 --batch-mode --reduce-device-size "${reserve}M" \
        --uuid "$uuid" ${label:+--label "$label"} \
        --pbkdf argon2id --pbkdf-memory 65536 --pbkdf-force-iterations 4 --pbkdf-parallel 2 \
        --key-file "$keyfile" "$out" >&2 || {
        rm -f "$out"
        die "cryptsetup reencrypt $out failed; $(free_space "$(dirname "$out")")"
    }
    cryptsetup open --test-passphrase --key-file "$keyfile" "$out" ||
        die "$out does not open with $keyfile"
}

# free_space DIR: one line, what is free on DIR's filesystem.
free_space() {
    df -Pm "$1" | awk 'NR == 2 { printf "%d MiB free of %d MiB on %s", $4, $2, $6 }'
}

# free_mib DIR: MiB free on DIR's filesystem.
free_mib() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }

# need_free_mib DIR MIB WHAT: DIR's filesystem has MIB MiB free and 256 MiB
# to spare (the VMs' snapshot overlays, logs). When it has not, the disks
# other suites made (DIR's sibling img-* folders: caches, made again when
# missing, and suites run one after another) go first; then it dies,
# saying what to do, if that was not enough.
need_free_mib() {
    local dir=$1 need=$(($2 + 256)) what=$3 other
    [ "$(free_mib "$dir")" -lt "$need" ] || return 0
    for other in "$(dirname "$dir")"/img-*; do
        [ -d "$other" ] && [ "$other" != "$dir" ] || continue
        dlog "low on disk for $what ($(free_space "$dir")): removing the cached disks in $other"
        rm -rf "$other"
        [ "$(free_mib "$dir")" -lt "$need" ] || return 0
    done
    die "$what needs $2 MiB and 256 to spare: $(free_space "$dir"). Free some space (old caches under target/: cargo clean, rm -rf target/distro-cache) and run again"
}

# image_tree ROOT STAGE: STAGE becomes ROOT as a guest disk holds it,
# hard-linked (no data copied; ROOT is not changed; a plain copy when the
# two are on different filesystems), without what only the build needed:
# apt's package lists and caches, temporary files left by image builds,
# documentation. About 200 MB less per image, written twice (mkfs, then
# encryption).
image_tree() {
    local root=$1 stage=$2
    rm -rf "$stage"
    cp -al "$root" "$stage" 2>/dev/null || { rm -rf "$stage" && cp -a "$root" "$stage"; } ||
        die "cannot copy $root to $stage"
    rm -rf "$stage"/tmp/* "$stage"/tmp/.[!.]* "$stage"/var/tmp/* \
        "$stage"/var/lib/apt/lists/* "$stage"/var/cache/apt/* \
        "$stage"/usr/share/doc "$stage"/usr/share/man "$stage"/usr/share/info
}

# ---------------------------------------------------------------------------
# QEMU
# ---------------------------------------------------------------------------
# shellcheck source=tests/vm/wait-for.sh
. "$distro_repo/tests/vm/wait-for.sh"

VM_PID='' VM_LOG='' VM_SOCK='' VM_PORT='' VM_SYS_PORT=''
# Set by tests/distro/net.sh for a boot on the test's own network: the
# namespace QEMU runs in, its -netdev/-device arguments (instead of user
# networking), and "monitor" for a monitor socket RUNDIR/NAME.mon.
VM_NETNS='' VM_NET_ARGS='' VM_MONITOR=''
# Options added to the user network (e.g. ",ipv6-net=2001:db8:5d::/64": its
# default IPv6 prefix, fec0::/64, is site-local, not global).
VM_USER_NET_OPTS=''

# in_vm_ns CMD...: CMD in the namespace of the VM's network (if any).
in_vm_ns() {
    if [ -n "$VM_NETNS" ]; then ip netns exec "$VM_NETNS" "$@"; else "$@"; fi
}

# vm_start RUNDIR NAME KERNEL INITRD APPEND DISK...: boots in the background
# (TCG, 2 vCPUs, 1 GiB), disks as virtio vda, vdb, ... with throwaway
# overlays (-snapshot), the serial console logged to RUNDIR/NAME.log and
# writable through the socket RUNDIR/NAME.sock, guest port 22 forwarded to
# 127.0.0.1:VM_PORT only and guest port 2222 to VM_SYS_PORT (or the
# network of VM_NET_ARGS, see above).
vm_start() {
    local dir=$1 name=$2 kernel=$3 initrd=$4 append=$5 d monitor=none
    shift 5
    local drives=() net=()
    for d in "$@"; do
        drives+=(-drive "file=$d,if=virtio,format=raw,snapshot=on")
    done
    VM_LOG="$dir/$name.log" VM_SOCK="$dir/$name.sock"
    VM_PORT=$((20000 + RANDOM % 20000))
    VM_SYS_PORT=$((VM_PORT + 1)) # the booted system's sshd, guest port 2222 (preflight.sh)
    rm -f "$VM_LOG" "$VM_SOCK" "$dir/$name.pid" "$dir/$name.mon"
    : >"$VM_LOG"
    if [ -n "$VM_NET_ARGS" ]; then
        read -r -a net <<<"$VM_NET_ARGS"
    else
        net=(-netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$VM_PORT-:22,hostfwd=tcp:127.0.0.1:$VM_SYS_PORT-:2222$VM_USER_NET_OPTS"
            -device "virtio-net-pci,netdev=n0")
    fi
    [ "$VM_MONITOR" != monitor ] || monitor="unix:$dir/$name.mon,server=on,wait=off"
    in_vm_ns qemu-system-x86_64 \
        -machine q35 -accel tcg -cpu max -smp 2 -m 1024 \
        -nodefaults -display none -monitor "$monitor" -parallel none \
        -chardev "socket,id=ser0,path=$VM_SOCK,server=on,wait=off,logfile=$VM_LOG,logappend=on" \
        -serial chardev:ser0 \
        -no-reboot \
        -kernel "$kernel" -initrd "$initrd" \
        -append "console=ttyS0,115200 panic=-1 printk.time=1 no_timer_check $append" \
        "${drives[@]}" "${net[@]}" \
        -pidfile "$dir/$name.pid" -daemonize ||
        die "QEMU did not start (port $VM_PORT taken?)"
    VM_PID=$(cat "$dir/$name.pid")
    d="127.0.0.1:$VM_PORT"
    [ -z "$VM_NETNS" ] || d="the guest's address in namespace $VM_NETNS"
    dlog "booting $name: QEMU pid $VM_PID, serial $VM_LOG, ssh $d"
}

vm_running() { [ -n "$VM_PID" ] && kill -0 "$VM_PID" 2>/dev/null; }

vm_stop() {
    if vm_running; then
        kill "$VM_PID" 2>/dev/null || true
        local i=0
        while vm_running && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    VM_PID=''
}

# vm_wait PATTERN TIMEOUT: the first serial line matching PATTERN (ERE).
vm_wait() {
    vm_wait_for "$VM_LOG" "$1" "$2" "${VM_LOG%.log}.pid"
}

# vm_type TEXT: type TEXT and Enter on the serial console.
vm_type() {
    python3 - "$VM_SOCK" "$1" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
for ch in sys.argv[2] + "\r":
    s.sendall(ch.encode())
    time.sleep(0.02)
time.sleep(0.5)
s.close()
PY
}

# vm_wait_exit TIMEOUT: QEMU ends (the guest powered off).
vm_wait_exit() {
    local deadline=$((SECONDS + $1))
    while vm_running; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------
# assertions: each prints what it saw when it fails
# ---------------------------------------------------------------------------
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
ok() { echo "ok: $*" >&2; }

# serial_value KEY: the text after "KEY: " on the last serial line with KEY.
serial_value() {
    { grep -a -o -- "$1: .*" "$VM_LOG" || true; } | tail -n 1 | sed "s/^$1: //" | tr -d '\r'
}

# expect_serial KEY EXPECTED DESCRIPTION: the guest reported KEY: EXPECTED.
expect_serial() {
    local got
    got=$(serial_value "$1")
    [ "$got" = "$2" ] || fail "$3: guest reported $1: '${got:-<missing>}', expected '$2' (serial log $VM_LOG)"
    ok "$3 ($1: $got)"
}

# ---------------------------------------------------------------------------
# test identity: kept in the cache so images can be cached too
# ---------------------------------------------------------------------------
# ensure_keys PORTCULLISD: $distro_cache/keys/{host_key,host_key.pub,host_fp,
# admin,admin.pub,intruder,passphrase}, all private.
ensure_keys() {
    local pd=$1 k=$distro_cache/keys
    if [ ! -f "$k/.complete" ]; then
        rm -rf "$k"
        mkdir -p "$k"
        chmod 0700 "$k"
        (
            umask 077
            "$pd" keygen "$k/host_key" >"$k/host_fp"
            ssh-keygen -q -t ed25519 -N '' -C admin@portcullis-test -f "$k/admin"
            ssh-keygen -q -t ed25519 -N '' -C intruder -f "$k/intruder"
            printf 'distro test %s pass' "$(od -An -N6 -tx8 /dev/urandom | tr -d ' ')" >"$k/passphrase"
        )
        touch "$k/.complete"
    fi
    KEYS=$k
    HOST_FP=$(cat "$k/host_fp")
}

# install_portcullis ROOT PORTCULLISD BACKEND [EXTRA_TOML]: the listener, its
# config, host key and authorized keys as an admin would install them.
install_portcullis() {
    local root=$1 pd=$2 backend=$3 extra=${4:-}
    install -D -m 0755 "$pd" "$root/usr/local/sbin/portcullisd"
    # The listener the image hooks copy in, as the packages install it.
    install -D -m 0755 "$pd-initramfs" "$root/usr/lib/portcullis/portcullisd-initramfs"
    install -d -m 0755 "$root/etc/portcullis"
    install -m 0600 "$KEYS/host_key" "$root/etc/portcullis/host_key"
    install -m 0644 "$KEYS/host_key.pub" "$root/etc/portcullis/host_key.pub"
    install -m 0644 "$KEYS/admin.pub" "$root/etc/portcullis/authorized_keys"
    cat >"$root/etc/portcullis/portcullisd.toml" <<TOML
# written by tests/distro; both families, one socket (docs/config.md)
listen = ["[::]:22"]
backend = "$backend"
max-tries = 5
$extra
TOML
}

# ---------------------------------------------------------------------------
# the guest system
# ---------------------------------------------------------------------------
ROOT_UUID=5a1e0000-0000-4000-8000-00000000a001
DATA_UUID=5a1e0000-0000-4000-8000-00000000a002

# prepare_guest_root ROOT CRYPTTAB_OPTIONS [two|one]: fstab/crypttab for a
# LUKS root (/dev/vda, mapped "root") and (two, the default) a LUKS data
# volume (/dev/vdb, mapped "data", mounted on /data), and the report unit that prints PORTCULLIS-REAL-* lines
# on the serial console once the real system is up.
prepare_guest_root() {
    local root=$1 opts=$2 volumes=${3:-two}
    cat >"$root/etc/fstab" <<FSTAB
/dev/mapper/root / ext4 defaults,errors=remount-ro 0 1
FSTAB
    cat >"$root/etc/crypttab" <<CRYPTTAB
# <name> <device> <key> <options>
root UUID=$ROOT_UUID none $opts
CRYPTTAB
    if [ "$volumes" = two ]; then
        echo "/dev/mapper/data /data ext4 defaults 0 2" >>"$root/etc/fstab"
        echo "data UUID=$DATA_UUID none $opts" >>"$root/etc/crypttab"
    fi
    echo portcullis-test >"$root/etc/hostname"
    mkdir -p "$root/data"
    install -D -m 0755 "$distro_here/guest/portcullis-test-report" "$root/usr/local/sbin/portcullis-test-report"
    install -D -m 0644 "$distro_here/guest/portcullis-test-report.service" \
        "$root/etc/systemd/system/portcullis-test-report.service"
    mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
    ln -sf ../portcullis-test-report.service \
        "$root/etc/systemd/system/multi-user.target.wants/portcullis-test-report.service"
}

# make_disks ROOT OUTDIR: OUTDIR/root.img (LUKS2 around an ext4 copy of ROOT)
# and OUTDIR/data.img, both opened by the cached test passphrase. Cached:
# rebuilt only when KEY (a hash the caller computes) changes.
make_disks() {
    # The suffix names how the disks are made: a change to it remakes them.
    local root=$1 out=$2 key="$3 tree-2" data
    if [ "$(cat "$out/.disks" 2>/dev/null)" = "$key" ]; then
        return 0
    fi
    rm -f "$out/.disks"
    mkdir -p "$out"
    dlog "making LUKS2 disks from $root"
    data=$(mktemp -d)
    echo "data-volume-ok" >"$data/volume-id"
    make_luks_image "$data" "$out/data.img" "$DATA_UUID" "$KEYS/passphrase" pcdata
    rm -rf "$data"
    image_tree "$root" "$out/root.tree"
    make_luks_image "$out/root.tree" "$out/root.img" "$ROOT_UUID" "$KEYS/passphrase" pcroot
    rm -rf "$out/root.tree"
    echo "$key" >"$out/.disks"
}
