#!/usr/bin/env bash
# VM test of `portcullis rescue` on a real kernel (QEMU, TCG, two vCPUs).
#
# Usage: tests/rescue/run.sh [--keep]
#
#   A RAM-only rescue system (Debian 12 minbase with OpenSSH, cryptsetup,
#   btrfs-progs, kexec-tools; debootstrapped once into target/rescue-cache)
#   drives one disk holding the main system: partition 1 ext4 /boot (kernel,
#   initramfs, extlinux), partition 2 LUKS2 (argon2id, 64 MiB, 4 iterations)
#   with btrfs subvolumes @ and @home. The LUKS volume is made inside the VM
#   (the host has no device-mapper).
#
#   boot 0 (fixture): format and fill the main disk from the rescue system.
#   boot 1: a missing tool is named; inspect; unlock (wrong, right, again);
#           mount (twice); check (clean); chroot refused without --yes, then
#           a command in the read-write mounted system; close (twice: nothing
#           left mounted or open); kexec --dry-run; kexec: the main system
#           boots and prints its marker WITHOUT a passphrase prompt.
#   boot 2: a damaged /boot filesystem is reported by check (exit 12) and
#           repaired by check --repair; then the same VM reboots through
#           firmware and boot loader into the main system, which asks for the
#           passphrase (typed on the console by the test).
#   Prints both times: rescue -> main system by kexec and by reboot.
#   Every serial log and all client output are searched for the passphrase.
#
#   Logs stay in target/rescue-vm on failure (always with --keep).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$repo/target/rescue-vm
keep=0
[ "${1:-}" = "--keep" ] && keep=1
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# QEMU's TCG keeps translations of the rescue kernel's code after kexec, and
# every write to a page they cover then takes a slow path: measured here, the
# kexec'ed kernel unpacked the same initramfs 7x slower and argon2 took 80 s.
# A smaller translation cache is flushed often enough to avoid that emulator
# artifact (hardware and KVM have nothing like it); it costs little elsewhere.
export VM_TB_SIZE=${VM_TB_SIZE:-32}
# shellcheck source=tests/rescue/lib.sh
. "$here/lib.sh"

# Host tools beyond what tests/vm/fetch.sh installs.
need=()
for pair in sfdisk:fdisk python3:python3 ssh:openssh-client ssh-keygen:openssh-client; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    rlog "installing host packages: ${need[*]}"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

rm -rf "$work"
mkdir -p "$work"
chmod 700 "$work"
umask 077

rlog "building portcullis"
# The same release build as the other VM tests: nothing to rebuild in CI.
dist=$(cd "$repo" && tests/build-release.sh)
portcullis=$repo/$dist/portcullis
[ -x "$portcullis" ] || die "tests/build-release.sh gave no $portcullis"
rlog "fetching kernel and busybox (cached)"
eval "$("$repo/tests/vm/fetch.sh" --print)"
: "${KERNEL_RELEASE:?}" "${KERNEL_ROOT:?}" "${VMLINUZ:?}" "${BUSYBOX:?}"
rlog "rescue system root (cached)"
tree=$("$here/rootfs.sh")

ssh-keygen -q -t ed25519 -N '' -C rescue-admin -f "$work/admin"
printf 'rescue horse %s staple' "$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')" >"$work/pass"
pass=$(cat "$work/pass")
luks_uuid=$(cat /proc/sys/kernel/random/uuid)
btrfs_uuid=$(cat /proc/sys/kernel/random/uuid)
boot_uuid=$(cat /proc/sys/kernel/random/uuid)
marker=PORTCULLIS-MAIN-SYSTEM-UP

rlog "building the RAM rescue system and the main disk"
build_rescue "$work/rescue" "$tree" "$work/admin.pub"
build_main "$work/main" "$luks_uuid" "$btrfs_uuid" "$boot_uuid" "$marker"
disk=$work/main/disk.img
rescue_fp=$(ssh-keygen -lf "$tree/etc/ssh/ssh_host_ed25519_key.pub" | awk '{print $2}')

port=$((20000 + RANDOM % 20000))
echo "[127.0.0.1]:$port $(cat "$tree/etc/ssh/ssh_host_ed25519_key.pub")" >"$work/known_hosts"
ssh_opts=(-p "$port" -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none -i "$work/admin"
    -o UserKnownHostsFile="$work/known_hosts" -o StrictHostKeyChecking=yes
    -o ConnectTimeout=20 -o LogLevel=ERROR)
rsh() { ssh "${ssh_opts[@]}" root@127.0.0.1 "$@"; }
host=127.0.0.1:$port
# portcullis rescue SUB [ARGS...]: pinned by fingerprint, our key only.
pr() {
    local sub=$1
    shift
    "$portcullis" rescue "$sub" "$host" --fingerprint "$rescue_fp" --no-agent -i "$work/admin" "$@"
}

boot=0
pidfile=$work/qemu.pid
qemu_pid=
log=
stop_vm() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    qemu_pid=
}
on_exit() {
    local rc=$?
    stop_vm
    if [ $rc -ne 0 ]; then
        rlog "FAILED; logs in $work (boot*.log, out.*)"
    elif [ $keep -eq 0 ]; then
        rm -rf "$work/main" "$work/rescue"
    fi
}
trap on_exit EXIT

start() { # SNAPSHOT [firmware]
    boot=$((boot + 1))
    log=$work/boot$boot.log
    if [ "${2:-}" = firmware ]; then
        vm_start "$log" "$pidfile" "$port" "$disk" "$1"
    else
        vm_start "$log" "$pidfile" "$port" "$disk" "$1" "$work/rescue/vmlinuz" "$work/rescue/initrd.img"
    fi
    qemu_pid=$(cat "$pidfile")
}
wait_log() { # PATTERN TIMEOUT
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        grep -aqE -- "$1" "$log" && return 0
        if ! kill -0 "$qemu_pid" 2>/dev/null; then
            sleep 0.5
            grep -aqE -- "$1" "$log" && return 0
            tail -n 30 "$log" >&2
            die "QEMU exited before /$1/ appeared in $log"
        fi
        sleep 0.1
    done
    tail -n 30 "$log" >&2
    die "/$1/ did not appear in $log within $2 s"
}
wait_exit() { # TIMEOUT: the guest powers off by itself
    local deadline=$((SECONDS + $1))
    while kill -0 "$qemu_pid" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || die "QEMU still running after $1 s"
        sleep 0.2
    done
    qemu_pid=
}
wait_rescue() {
    wait_log 'PORTCULLIS-RESCUE-READY' 300
    for _ in $(seq 60); do rsh true 2>/dev/null && return 0; sleep 1; done
    die "the rescue system's sshd does not answer"
}
n=0
expect() { # CODE DESCRIPTION -- COMMAND...
    local want=$1 what=$2 got
    shift 3
    n=$((n + 1))
    set +e
    "$@" >"$work/out.$n" 2>"$work/err.$n" </dev/null
    got=$?
    set -e
    cat "$work/out.$n" "$work/err.$n" >>"$work/all-output"
    [ "$got" -eq "$want" ] || {
        sed 's/^/  | /' "$work/out.$n" "$work/err.$n" >&2
        die "$what: exit $got, expected $want"
    }
    rlog "ok: $what (exit $got)"
}
expect_in() { # CODE DESCRIPTION STDIN-FILE -- COMMAND...
    local want=$1 what=$2 input=$3 got
    shift 4
    n=$((n + 1))
    set +e
    "$@" >"$work/out.$n" 2>"$work/err.$n" <"$input"
    got=$?
    set -e
    cat "$work/out.$n" "$work/err.$n" >>"$work/all-output"
    [ "$got" -eq "$want" ] || {
        sed 's/^/  | /' "$work/out.$n" "$work/err.$n" >&2
        die "$what: exit $got, expected $want"
    }
    rlog "ok: $what (exit $got)"
}
has() { grep -qF -- "$1" "$work/out.$n" "$work/err.$n" || die "expected '$1' in the output of step $n: $(tail -n 20 "$work/out.$n" "$work/err.$n")"; }
remote_has() { # DESCRIPTION COMMAND PATTERN
    local got
    got=$(rsh "$2")
    grep -qE -- "$3" <<<"$got" || die "$1: /$3/ not in: $got"
}
remote_none() { # DESCRIPTION COMMAND (must print nothing)
    local got
    got=$(rsh "$2")
    [ -z "$got" ] || die "$1: expected nothing, got: $got"
}

# ---------------------------------------------------------------------------
rlog "boot $((boot + 1)): fixture: ext4 /boot with extlinux, LUKS2 + btrfs @ and @home, made inside the rescue VM"
start off
wait_rescue
fixture_log=$work/fixture.log
rsh "cryptsetup luksFormat --batch-mode --type luks2 --uuid $luks_uuid --pbkdf argon2id \
    --pbkdf-memory 65536 --pbkdf-force-iterations 4 --pbkdf-parallel 2 --key-file=- /dev/vda2" <"$work/pass" 2>>"$fixture_log"
rsh "cryptsetup open --key-file=- /dev/vda2 fixture" <"$work/pass" 2>>"$fixture_log"
rsh "mkfs.btrfs -q -U $btrfs_uuid -L main /dev/mapper/fixture && mkdir -p /mnt/f && mount /dev/mapper/fixture /mnt/f && \
    btrfs subvolume create /mnt/f/@ >/dev/null && btrfs subvolume create /mnt/f/@home >/dev/null && \
    tar -C /mnt/f/@ -xf - && mkdir -p /mnt/f/@home/admin && echo 'notes from @home' >/mnt/f/@home/admin/notes.txt && \
    umount /mnt/f && cryptsetup close fixture" <"$work/main/root.tar" 2>>"$fixture_log"
# The boot loader, for the reboot measurement: extlinux on /boot, MBR code.
rsh "mkfs.ext4 -q -F -O ^64bit -L boot -U $boot_uuid /dev/vda1 && mount /dev/vda1 /mnt/f && tar -C /mnt/f -xf - && \
    extlinux --install /mnt/f/extlinux >/dev/null && umount /mnt/f && \
    dd if=/usr/lib/EXTLINUX/mbr.bin of=/dev/vda bs=440 count=1 conv=notrunc status=none && sync" \
    <"$work/main/boot.tar" 2>>"$fixture_log"
rsh 'echo o >/proc/sysrq-trigger' 2>/dev/null || true
wait_exit 60
rlog "ok: main disk ready"

# ---------------------------------------------------------------------------
rlog "boot $((boot + 1)): the rescue path, ending in kexec"
start on
wait_rescue
rsh 'mv /usr/sbin/kexec /usr/sbin/kexec.hidden'
expect_in 1 "missing kexec named before anything is done" "$work/pass" -- \
    pr kexec --yes --passphrase-stdin
has 'lacks `kexec` (package kexec-tools)'
remote_none "nothing opened by the refused kexec" 'ls /dev/mapper | grep -v control || true'
rsh 'mv /usr/sbin/kexec.hidden /usr/sbin/kexec'

expect 0 "inspect before unlocking" -- pr inspect
has "LUKS /dev/vda2: LUKS2 aes-xts-plain64, locked"
has "keyslot 0: argon2id (memory 64 MiB, time 4, threads 2)"
has "next: \`portcullis rescue unlock HOST\`"
has "/dev/vda1 ext4: kernels vmlinuz"
expect 0 "inspect --json" -- pr inspect --json
python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); l=v["details"]["luks"][0]; assert l["max-kdf-memory-kib"]==65536 and l["open-as"] is None, l' "$work/out.$n"

printf 'not the passphrase' >"$work/wrong"
expect_in 2 "unlock with a wrong passphrase" "$work/wrong" -- pr unlock --passphrase-stdin
has "wrong passphrase"
expect_in 0 "unlock" "$work/pass" -- pr unlock --passphrase-stdin
has "cryptsetup open --key-file=- /dev/vda2 luks-$luks_uuid"
has "reopen /dev/vda2 as /dev/mapper/root, the name in the main system's crypttab"
has "open: /dev/vda2 as /dev/mapper/root"
remote_has "mapping named as in the main crypttab" 'lsblk -nro NAME,TYPE /dev/vda2' '^root crypt$'
expect 0 "unlock again (idempotent)" -- pr unlock --passphrase-stdin
has "/dev/vda2 is already open as /dev/mapper/root"
expect 0 "inspect after unlocking" -- pr inspect
has "subvolumes @, @home"
has "a system root in @"

expect 0 "mount (read-only, following the main fstab)" -- pr mount
has "mount -t btrfs -o ro,subvol=@ /dev/mapper/root /mnt/portcullis"
has "mount -t btrfs -o ro,subvol=@home /dev/mapper/root /mnt/portcullis/home"
has "mount -t ext4 -o ro /dev/vda1 /mnt/portcullis/boot"
remote_has "home subvolume mounted" 'findmnt -no FSROOT /mnt/portcullis/home' '^/@home$'
expect 0 "mount again (idempotent)" -- pr mount
has "already mounted at /mnt/portcullis"

expect 0 "check: clean" -- pr check
has "/dev/mapper/root (btrfs: /, /home): clean"
has "/dev/vda1 (ext4: /boot): clean"

expect 1 "chroot refused without --yes and without a terminal" -- pr chroot -- cat /etc/hostname
has "pass --yes"
expect 0 "mount --rw" -- pr mount --rw
has "mount -o remount,rw /mnt/portcullis"
expect 0 "chroot a command" -- pr chroot --yes -- sh -c 'echo chroot-was-here >/root/chroot-proof; cat /etc/hostname'
has "chroot /mnt/portcullis sh -c 'echo chroot-was-here >/root/chroot-proof; cat /etc/hostname'"
grep -qx main "$work/out.$n" || die "chroot output lacks the main system's hostname"

expect 0 "kexec --dry-run with the main system mounted: the whole plan" -- pr kexec --dry-run --initrd-flavour initramfs-tools
has "append the key archive (initramfs-tools) to a copy of the main initrd [key archive on stdin]"
has "dry run: nothing was changed"
remote_has "dry run loaded nothing" 'cat /sys/kernel/kexec_loaded' '^0$'

expect 0 "close" -- pr close
has "done: nothing mounted under /mnt/portcullis, no volume of ours open"
remote_none "nothing mounted under the target" 'findmnt -rno TARGET | grep "^/mnt/portcullis" || true'
remote_none "no mapping left open" 'ls /dev/mapper | grep -v control || true'
expect 0 "close again (idempotent)" -- pr close
has "nothing to do"

expect 0 "kexec --dry-run with the volumes locked: the unlock plan" -- pr kexec --dry-run
has "dry run: nothing was changed"
remote_none "dry run opened nothing" 'ls /dev/mapper | grep -v control || true'

# Both measurements start from the same state: volumes open, the main system
# mounted (where an operator is once the damage is fixed).
expect_in 0 "unlock and mount again before the timed kexec" "$work/pass" -- pr unlock --passphrase-stdin
expect 0 "mount" -- pr mount
rlog "kexec into the main system"
t0=$EPOCHREALTIME
expect_in 0 "kexec (unlock, mount, load with the key archive, close, exec)" "$work/pass" -- \
    pr kexec --yes --passphrase-stdin --initrd-flavour initramfs-tools
t_cmd=$EPOCHREALTIME
has "kexec -c -l /mnt/portcullis/boot/vmlinuz-$KERNEL_RELEASE --initrd=/run/portcullis-rescue/kexec/initrd"
has "cryptsetup close root"
has "handover: the main initramfs (initramfs-tools) gets /cryptroot/crypttab, /cryptroot/keyfiles/root.key in RAM"
has "no lockdown, no Secure Boot: kexec_load (kexec -c)"
wait_log "$marker" 300
t_kexec=$EPOCHREALTIME
grep -aq 'PORTCULLIS-MAIN-INITRAMFS-KEYFILE-USED: root' "$log" || die "the main initramfs did not use the handed-over key"
if grep -aq 'Please unlock disk' "$log"; then die "the main system asked for the passphrase after kexec"; fi
grep -aqE 'PORTCULLIS-MAIN-ROOT: /dev/(mapper/root|dm-0) btrfs ro,.*subvol=/@' "$log" || die "main root not mounted from the LUKS volume"
grep -aq 'PORTCULLIS-MAIN-HOME-FILE: notes from @home' "$log" || die "main system did not mount @home"
grep -aq 'PORTCULLIS-MAIN-BOOT: /dev/vda1 ext4' "$log" || die "main system did not mount /boot"
grep -aq 'PORTCULLIS-MAIN-CHROOT-PROOF: chroot-was-here' "$log" || die "the chroot's change is not in the main system"
rlog "ok: the main system booted by kexec without a passphrase prompt"
wait_exit 60

# ---------------------------------------------------------------------------
rlog "boot $((boot + 1)): a damaged filesystem, then a reboot into the main system"
start on
wait_rescue
# /boot is ext4 on the clear partition: give one inode a wrong link count.
rsh 'debugfs -w -R "set_inode_field /README links_count 5" /dev/vda1' >/dev/null 2>&1
expect_in 0 "unlock" "$work/pass" -- pr unlock --passphrase-stdin
expect 12 "check reports the damage" -- pr check
has "/dev/vda1 (ext4: /boot): needs repair: Inode"
has "ref count is 5, should be 1"
has "/dev/mapper/root (btrfs: /, /home): clean"
expect 1 "repair refused without --yes" -- pr check --repair
expect 0 "check --repair" -- pr check --repair --yes
has "e2fsck -f -y /dev/vda1"
has "/dev/vda1 (ext4: /boot): repaired"
expect 0 "check after the repair" -- pr check
has "/dev/vda1 (ext4: /boot): clean"
expect 0 "mount" -- pr mount

rlog "reboot through firmware and boot loader into the main system"
t1=$EPOCHREALTIME
expect 0 "close before the reboot" -- pr close
rsh 'sync; echo b >/proc/sysrq-trigger' 2>/dev/null || true
wait_exit 60
start on firmware
wait_log 'Please unlock disk root' 300
t_prompt=$EPOCHREALTIME
vm_type "$log" "$pass"
wait_log "$marker" 300
t_reboot=$EPOCHREALTIME
grep -aq 'PORTCULLIS-MAIN-INITRAMFS-PASSPHRASE-USED: root' "$log" || die "reboot path: no passphrase unlock"
rlog "ok: the main system booted through firmware and extlinux, asking for the passphrase"
wait_exit 60

# ---------------------------------------------------------------------------
for f in "$work"/boot*.log "$work/all-output"; do
    if grep -qF -- "$pass" "$f"; then die "passphrase found in $f"; fi
done
rlog "ok: the passphrase is in no serial log and no client output"

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
echo "from the mounted main system in the rescue VM to the main system's marker:"
echo "  kexec:  $(secs "$t0" "$t_kexec") s (portcullis rescue kexec $(secs "$t0" "$t_cmd") s, then $(secs "$t_cmd" "$t_kexec") s to the marker; no prompt)"
echo "  reboot: $(secs "$t1" "$t_reboot") s (close and reboot, SeaBIOS, extlinux, kernel: $(secs "$t1" "$t_prompt") s to the prompt; typed at once; $(secs "$t_prompt" "$t_reboot") s to the marker)"
echo "  (QEMU TCG; SeaBIOS stands in for server firmware, whose POST alone often takes minutes)"
rlog "all rescue VM cases passed"
