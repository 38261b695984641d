#!/usr/bin/env bash
# Rescue -> main system: `portcullis rescue kexec` against a full reboot
# through UEFI firmware (OVMF) and a boot loader (systemd-boot), in one VM
# setup. Figures only, no thresholds.
#
# Usage: benches/kexec-uefi.sh
#   PORTCULLIS_BIN_DIR=DIR   use DIR/portcullis instead of tests/build-release.sh
#
#   The rescue system and main disk of tests/rescue (its lib.sh and rootfs.sh):
#   partition 1 ext4 /boot, partition 2 LUKS2 + btrfs @/@home, plus a
#   partition 3 added here: an EFI system partition (MBR type ef, FAT) with
#   systemd-boot (Debian's systemd-boot-efi) as \EFI\BOOT\BOOTX64.EFI, the
#   kernel and the main initramfs. Every boot runs OVMF (Debian's ovmf,
#   installed when missing); the rescue system is handed to OVMF with -kernel.
#   Both paths start in the rescue system with the volume open and the main
#   system mounted, and end at the main system's marker on the serial console:
#     kexec:  portcullis rescue kexec (passphrase on its stdin) -> marker
#     reboot: portcullis rescue close, reboot (QEMU exits on reset and is
#             started again without -kernel, same firmware variables), OVMF,
#             systemd-boot, kernel, the main initramfs' console prompt
#             (answered at once) -> marker
#   Prompts are counted: passphrase reads from the point both paths start,
#   and "Please unlock disk" prompts on the main system's console.
#   Work folder: target/bench-kexec (logs, results.txt).
set -euo pipefail
bench_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench_here/.." && pwd)
rescue_dir=$repo/tests/rescue
work=$repo/target/bench-kexec
cache=$repo/target/bench-kexec-cache
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# As tests/rescue/run.sh: a small TCG translation cache, or the kexec'ed
# kernel runs several times slower (an emulator artifact).
export VM_TB_SIZE=${VM_TB_SIZE:-32}
# shellcheck source=tests/rescue/lib.sh
. "$rescue_dir/lib.sh"
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, apt-get for missing host packages)"

need=()
for pair in sfdisk:fdisk mkfs.vfat:dosfstools mcopy:mtools /usr/share/OVMF/OVMF_CODE_4M.fd:ovmf \
    python3:python3 ssh:openssh-client ssh-keygen:openssh-client; do
    case ${pair%%:*} in
        /*) [ -e "${pair%%:*}" ] || need+=("${pair#*:}") ;;
        *) command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}") ;;
    esac
done
if [ ${#need[@]} -gt 0 ]; then
    rlog "installing host packages: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd

rm -rf "$work"
mkdir -p "$work" "$cache"
chmod 700 "$work"
umask 077

if [ -n "${PORTCULLIS_BIN_DIR:-}" ]; then
    portcullis=$PORTCULLIS_BIN_DIR/portcullis
else
    portcullis=$repo/$(cd "$repo" && tests/build-release.sh)/portcullis
fi
[ -x "$portcullis" ] || die "no portcullis at $portcullis; build it with tests/build-release.sh"
eval "$("$repo/tests/vm/fetch.sh" --print)"
: "${KERNEL_RELEASE:?}" "${KERNEL_ROOT:?}" "${VMLINUZ:?}" "${BUSYBOX:?}"
tree=$("$rescue_dir/rootfs.sh")

# systemd-boot from Debian, extracted (never installed on the host).
sdboot=$cache/sdboot/usr/lib/systemd/boot/efi/systemd-bootx64.efi
if [ ! -f "$sdboot" ]; then
    rlog "fetching systemd-boot-efi"
    (cd "$cache" && rm -f systemd-boot-efi_*.deb && apt-get download -qq systemd-boot-efi >&2)
    dpkg -x "$cache"/systemd-boot-efi_*.deb "$cache/sdboot"
    [ -f "$sdboot" ] || die "systemd-boot-efi has no $sdboot"
fi

ssh-keygen -q -t ed25519 -N '' -C bench-admin -f "$work/admin"
printf 'bench horse %s staple' "$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')" >"$work/pass"
pass=$(cat "$work/pass")
luks_uuid=$(cat /proc/sys/kernel/random/uuid)
btrfs_uuid=$(cat /proc/sys/kernel/random/uuid)
boot_uuid=$(cat /proc/sys/kernel/random/uuid)
marker=PORTCULLIS-MAIN-SYSTEM-UP

# build_main runs `ldconfig -p | awk '... exit'` under pipefail: when awk
# exits first, a late write kills ldconfig with SIGPIPE and the whole script
# with status 141 (seen here under load). Ignoring ldconfig's own status is
# safe: build_main still fails clearly when libgcc_s is not found.
ldconfig() { command ldconfig "$@" || true; }
rlog "building the RAM rescue system and the main disk (tests/rescue/lib.sh)"
build_rescue "$work/rescue" "$tree" "$work/admin.pub"
build_main "$work/main" "$luks_uuid" "$btrfs_uuid" "$boot_uuid" "$marker"
disk=$work/main/disk.img

# The EFI boot path: partition 2 ends at 448 MiB, partition 3 (64 MiB, type
# ef) is the ESP. OVMF finds \EFI\BOOT\BOOTX64.EFI on it with no boot entry.
rlog "adding an EFI system partition with systemd-boot"
truncate -s 512M "$disk"
sfdisk -q "$disk" <<PT
label: dos
start=2048, size=131072, type=83, bootable
start=133120, size=784384, type=83
start=917504, type=ef
PT
esp=$work/esp.img
mkdir -p "$work/esp"
tar -C "$work/esp" -xf "$work/main/boot.tar"
# Under heavy host load a TCG guest can miss the kernel's early IO-APIC timer
# check and panic ("IO-APIC + timer doesn't work"); every kernel here skips
# it: the rescue (see start) and the main one (its boot entry, used by both
# the kexec and the reboot path).
sed -i '/^ *APPEND /s/$/ no_timer_check/' "$work/esp/extlinux/extlinux.conf"
tar -C "$work/esp" --numeric-owner --owner=0 --group=0 -cf "$work/main/boot.tar" .
cmdline=$(sed -n 's/^ *APPEND //p' "$work/esp/extlinux/extlinux.conf")
rm -f "$esp"
truncate -s 64M "$esp"
mkfs.vfat -F 32 -n ESP "$esp" >/dev/null
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
mcopy -i "$esp" "$sdboot" ::/EFI/BOOT/BOOTX64.EFI
printf 'timeout 0\ndefault main.conf\n' >"$work/loader.conf"
printf 'title main\nlinux /vmlinuz\ninitrd /initrd.img\noptions %s\n' "$cmdline" >"$work/main.conf"
mcopy -i "$esp" "$work/loader.conf" ::/loader/loader.conf
mcopy -i "$esp" "$work/main.conf" ::/loader/entries/main.conf
mcopy -i "$esp" "$work/esp/vmlinuz-$KERNEL_RELEASE" ::/vmlinuz
mcopy -i "$esp" "$work/esp/initrd.img-$KERNEL_RELEASE" ::/initrd.img
dd if="$esp" of="$disk" bs=1M seek=448 conv=notrunc status=none
rm -rf "$work/esp" "$esp"
cp "$ovmf_vars" "$work/OVMF_VARS.fd"

rescue_fp=$(ssh-keygen -lf "$tree/etc/ssh/ssh_host_ed25519_key.pub" | awk '{print $2}')
port=$((20000 + RANDOM % 20000))
echo "[127.0.0.1]:$port $(cat "$tree/etc/ssh/ssh_host_ed25519_key.pub")" >"$work/known_hosts"
ssh_opts=(-p "$port" -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none -i "$work/admin"
    -o UserKnownHostsFile="$work/known_hosts" -o StrictHostKeyChecking=yes
    -o ConnectTimeout=20 -o LogLevel=ERROR)
rsh() { ssh "${ssh_opts[@]}" root@127.0.0.1 "$@"; }
pr() { # SUB [ARGS...]: portcullis rescue, pinned, our key only; output to $work/pr.log
    local sub=$1
    shift
    "$portcullis" rescue "$sub" "127.0.0.1:$port" --fingerprint "$rescue_fp" --no-agent -i "$work/admin" "$@" \
        >>"$work/pr.log" 2>&1 || { tail -n 20 "$work/pr.log" >&2; die "portcullis rescue $sub failed (log $work/pr.log)"; }
}

# QEMU as tests/rescue/lib.sh's vm_start, with OVMF as firmware (a copy of
# its variable store kept across boots). KERNEL empty: boot from the disk.
boot=0 qemu_pid='' log=''
start() { # SNAPSHOT [KERNEL INITRD]
    local snap=$1 kernel=${2:-} initrd=${3:-} fifo kargs=()
    boot=$((boot + 1))
    log=$work/boot$boot.log
    fifo=${log%.log}.serial
    rm -f "$fifo.in" "$fifo.out" "$work/qemu.pid"
    mkfifo "$fifo.in" "$fifo.out"
    : >"$log"
    cat "$fifo.out" >>"$log" &
    if [ -n "$kernel" ]; then
        kargs=(-kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 panic=-1 printk.time=1 no_timer_check")
    fi
    qemu-system-x86_64 \
        -machine q35 -accel "tcg,tb-size=$VM_TB_SIZE" -cpu max -smp 2 -m 1024 \
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$ovmf_code" \
        -drive "if=pflash,format=raw,unit=1,file=$work/OVMF_VARS.fd" \
        -nodefaults -display none -monitor none -parallel none -no-reboot \
        -chardev "pipe,id=ser0,path=$fifo" -serial chardev:ser0 \
        "${kargs[@]}" \
        -drive "file=$disk,if=virtio,format=raw,snapshot=$snap" \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$port-:22" \
        -device virtio-net-pci,netdev=n0 \
        -pidfile "$work/qemu.pid" -daemonize
    [ -s "$work/qemu.pid" ] || die "QEMU did not start"
    qemu_pid=$(cat "$work/qemu.pid")
}
start_rescue() { start "$1" "$work/rescue/vmlinuz" "$work/rescue/initrd.img"; }
stop_vm() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$qemu_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    qemu_pid=''
}
trap stop_vm EXIT
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
wait_exit() { # TIMEOUT
    local deadline=$((SECONDS + $1))
    while kill -0 "$qemu_pid" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || die "QEMU still running after $1 s (log $log)"
        sleep 0.1
    done
    qemu_pid=''
}
wait_rescue() {
    wait_log 'PORTCULLIS-RESCUE-READY' 600
    for _ in $(seq 60); do rsh true 2>/dev/null && return 0; sleep 1; done
    die "the rescue system's sshd does not answer (log $log)"
}
wait_nth() { # PATTERN N TIMEOUT: the Nth serial line matching PATTERN
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt $deadline ]; do
        [ "$(grep -acE -- "$1" "$log" || true)" -ge "$2" ] && return 0
        kill -0 "$qemu_pid" 2>/dev/null || die "QEMU exited before /$1/ #$2 appeared in $log"
        sleep 0.05
    done
    die "/$1/ #$2 did not appear in $log within $3 s"
}
prompts() { grep -ac 'Please unlock disk' "$log" || true; }

# ---------------------------------------------------------------------------
rlog "boot $((boot + 1)): fixture (as tests/rescue/run.sh): LUKS2 + btrfs @ and @home, ext4 /boot"
start_rescue off
wait_rescue
rsh "cryptsetup luksFormat --batch-mode --type luks2 --uuid $luks_uuid --pbkdf argon2id \
    --pbkdf-memory 65536 --pbkdf-force-iterations 4 --pbkdf-parallel 2 --key-file=- /dev/vda2" <"$work/pass"
rsh "cryptsetup open --key-file=- /dev/vda2 fixture" <"$work/pass"
rsh "mkfs.btrfs -q -U $btrfs_uuid -L main /dev/mapper/fixture && mkdir -p /mnt/f && mount /dev/mapper/fixture /mnt/f && \
    btrfs subvolume create /mnt/f/@ >/dev/null && btrfs subvolume create /mnt/f/@home >/dev/null && \
    tar -C /mnt/f/@ -xf - && mkdir -p /mnt/f/@home/admin && echo 'notes from @home' >/mnt/f/@home/admin/notes.txt && \
    umount /mnt/f && cryptsetup close fixture" <"$work/main/root.tar"
rsh "mkfs.ext4 -q -F -O ^64bit -L boot -U $boot_uuid /dev/vda1 && mount /dev/vda1 /mnt/f && tar -C /mnt/f -xf - && \
    umount /mnt/f && sync" <"$work/main/boot.tar"
rsh 'echo o >/proc/sysrq-trigger' 2>/dev/null || true
wait_exit 60
rlog "main disk ready"

# ---------------------------------------------------------------------------
rlog "boot $((boot + 1)): rescue, then kexec into the main system"
start_rescue on
wait_rescue
pr unlock --passphrase-stdin <"$work/pass"
pr mount </dev/null
reads_kexec=1 # the kexec command reads the passphrase (it hands a key to the main initramfs)
t0=$EPOCHREALTIME
pr kexec --yes --passphrase-stdin --initrd-flavour initramfs-tools <"$work/pass"
t_cmd=$EPOCHREALTIME
wait_nth '\] Linux version' 2 600
t_kern_k=$EPOCHREALTIME
wait_log "^$marker" 600
t_kexec=$EPOCHREALTIME
prompts_kexec=$(prompts)
grep -aq 'PORTCULLIS-MAIN-INITRAMFS-KEYFILE-USED: root' "$log" || die "kexec path: the main initramfs did not use the handed-over key (log $log)"
kexec_log=$log
wait_exit 60

# ---------------------------------------------------------------------------
rlog "boot $((boot + 1)): rescue, then reboot through OVMF and systemd-boot"
start_rescue on
wait_rescue
pr unlock --passphrase-stdin <"$work/pass"
pr mount </dev/null
t1=$EPOCHREALTIME
pr close </dev/null
t_closed=$EPOCHREALTIME
rsh 'sync; echo b >/proc/sysrq-trigger' 2>/dev/null || true
wait_exit 60
t_reset=$EPOCHREALTIME
start on
wait_nth '^BdsDxe: starting' 1 600
t_loader=$EPOCHREALTIME
wait_nth '\] Linux version' 1 600
t_kern_r=$EPOCHREALTIME
wait_log 'Please unlock disk root' 600
t_prompt=$EPOCHREALTIME
vm_type "$log" "$pass"
wait_log "^$marker" 600
t_reboot=$EPOCHREALTIME
prompts_reboot=$(prompts)
grep -aq 'PORTCULLIS-MAIN-INITRAMFS-PASSPHRASE-USED: root' "$log" || die "reboot path: no console unlock (log $log)"
grep -aq 'EFI stub: Loaded initrd from LINUX_EFI_INITRD_MEDIA_GUID' "$log" ||
    die "reboot path: the kernel did not get its initrd from systemd-boot (log $log)"
reboot_log=$log
wait_exit 60

for f in "$work"/boot*.log "$work/pr.log"; do
    if grep -qF -- "$pass" "$f"; then die "passphrase found in $f"; fi
done

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
{
    echo "== rescue -> main system, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) host cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "QEMU TCG (tb-size $VM_TB_SIZE) -cpu max -smp 2 -m 1024, OVMF $(dpkg-query -W -f '${Version}' ovmf 2>/dev/null), kernel $KERNEL_RELEASE"
    echo "from the rescue system with the volume open and the main system mounted, to the main system's marker:"
    echo "  kexec:  $(secs "$t0" "$t_kexec") s: portcullis rescue kexec $(secs "$t0" "$t_cmd") s," \
        "new kernel's first line $(secs "$t_cmd" "$t_kern_k") s, kernel to the marker $(secs "$t_kern_k" "$t_kexec") s"
    echo "          passphrase reads: $reads_kexec (by portcullis rescue kexec, over SSH); console prompts in the main boot: $prompts_kexec"
    echo "  reboot: $(secs "$t1" "$t_reboot") s: portcullis rescue close $(secs "$t1" "$t_closed") s," \
        "reboot until QEMU exits $(secs "$t_closed" "$t_reset") s, OVMF to the boot loader $(secs "$t_reset" "$t_loader") s," \
        "systemd-boot to the kernel's first line $(secs "$t_loader" "$t_kern_r") s, kernel to the prompt $(secs "$t_kern_r" "$t_prompt") s," \
        "typed at once, prompt to the marker $(secs "$t_prompt" "$t_reboot") s"
    echo "          passphrase reads: 1 (the main initramfs, on the console); console prompts in the main boot: $prompts_reboot"
    echo "  ratio kexec/reboot: $(awk -v a="$(secs "$t0" "$t_kexec")" -v b="$(secs "$t1" "$t_reboot")" 'BEGIN { printf "%.2f", a / b }')"
    echo "  serial logs: $kexec_log, $reboot_log"
} | tee "$work/results.txt"
