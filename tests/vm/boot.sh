#!/usr/bin/env bash
# Boot an image built by build-image.sh in QEMU (TCG), in the background.
#
# Usage:
#   tests/vm/boot.sh --image OUTDIR --port N --log FILE --pidfile FILE
#                    [--append "EXTRA CMDLINE"] [--snapshot | --no-snapshot]
#                    [--memory MIB] [--smp N] [--no-forward]
#
#   --image     directory with vmlinuz, initrd.img, disk.img
#   --port      host port forwarded (127.0.0.1 only) to guest port 22
#   --log       serial console log (ttyS0), truncated first
#   --pidfile   QEMU's pid is written here; stop it with kill "$(cat FILE)"
#   --append    extra kernel command line (e.g. portcullis.debug)
#   --snapshot  (default) disk writes go to a throwaway overlay: every boot
#               sees a pristine disk.img. --no-snapshot writes through.
#   --memory    guest RAM in MiB (default 768), --smp vCPUs (default 2)
#   --no-forward  no inbound forward at all (--port is then not needed): the
#               guest can only connect out, e.g. to the host's loopback
#               through the user-mode gateway 10.0.2.2 (the relay test)
#
# Returns once QEMU is running (QEMU's -daemonize reports start-up errors such
# as a port already in use, and then this exits non-zero). The guest powers
# off by itself after the real root's init ran (QEMU then exits: -no-reboot);
# a kernel panic also ends QEMU (panic=-1).
# Wait for output with: tests/vm/wait-for.sh LOG PATTERN TIMEOUT [PIDFILE]
set -euo pipefail

die() { echo "boot.sh: $*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

image='' port='' log='' pidfile='' append='' snapshot=on memory=768 smp=2 forward=1
while [ $# -gt 0 ]; do
    case $1 in
        --image) image=${2:?}; shift 2 ;;
        --port) port=${2:?}; shift 2 ;;
        --log) log=${2:?}; shift 2 ;;
        --pidfile) pidfile=${2:?}; shift 2 ;;
        --append) append=${2?}; shift 2 ;;
        --snapshot) snapshot=on; shift ;;
        --no-snapshot) snapshot=off; shift ;;
        --memory) memory=${2:?}; shift 2 ;;
        --smp) smp=${2:?}; shift 2 ;;
        --no-forward) forward=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1" ;;
    esac
done
if [ -z "$image" ] || { [ -z "$port" ] && [ $forward = 1 ]; } || [ -z "$log" ] || [ -z "$pidfile" ]; then
    usage >&2
    exit 2
fi
netdev=user,id=n0
if [ $forward = 1 ]; then
    case $port in ''|*[!0-9]*) die "--port must be a number" ;; esac
    netdev="$netdev,hostfwd=tcp:127.0.0.1:$port-:22"
fi
for f in vmlinuz initrd.img disk.img; do
    [ -f "$image/$f" ] || die "missing $image/$f (run build-image.sh)"
done
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (run tests/vm/fetch.sh)"

# Absolute paths: QEMU daemonizes and changes directory to /.
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
image=$(abs "$image") log=$(abs "$log") pidfile=$(abs "$pidfile")
: >"$log"
rm -f "$pidfile"

# Software emulation only: KVM is not available (and aborts) on the test hosts.
# -cpu max gives AES-NI under TCG, so aesni_intel loads.
# The -snapshot overlay lives in $TMPDIR (default /var/tmp), tiny here.
qemu-system-x86_64 \
    -machine q35 -accel tcg -cpu max -smp "$smp" -m "$memory" \
    -nodefaults -display none -monitor none -parallel none \
    -serial "file:$log" \
    -no-reboot \
    -kernel "$image/vmlinuz" \
    -initrd "$image/initrd.img" \
    -append "console=ttyS0 panic=-1 printk.time=1 no_timer_check $append" \
    -drive "file=$image/disk.img,if=virtio,format=raw,snapshot=$snapshot" \
    -netdev "$netdev" \
    -device virtio-net-pci,netdev=n0 \
    -pidfile "$pidfile" -daemonize

[ -s "$pidfile" ] || die "QEMU did not write $pidfile"
where="ssh 127.0.0.1:$port"
[ $forward = 1 ] || where="no inbound forward"
echo "boot.sh: QEMU pid $(cat "$pidfile"), serial log $log, $where" >&2
