#!/bin/sh
# portcullis (dracut without systemd, pre-trigger hook): start the listener
# in the background. The network comes up later through the initqueue
# (rd.neednet=1 is set by the module); the listener binds 0.0.0.0 before that.
type getarg >/dev/null 2>&1 || . /lib/dracut-lib.sh

[ -x /usr/sbin/portcullisd ] || return 0
PORTCULLIS_OPTS=
if [ -r /etc/portcullis/initramfs.conf ]; then
    . /etc/portcullis/initramfs.conf
fi
mkdir -p /run/portcullis
info "portcullis: starting the SSH unlock listener"
# shellcheck disable=SC2086 # PORTCULLIS_OPTS is a word list
/usr/sbin/portcullisd --config /etc/portcullis/portcullisd.toml $PORTCULLIS_OPTS \
    </dev/null >>/run/portcullis/portcullisd.log 2>&1 &
listener=$!
echo "$listener" >/run/portcullis/pid
# Without systemd the console prompt is a plain `cryptsetup open` on the
# terminal that never notices a volume opened over SSH: once a volume's
# mapper device exists, end the console cryptsetup still asking for it.
(
    while [ -f /run/portcullis/pid ]; do
        for p in /proc/[0-9]*; do
            [ -r "$p/cmdline" ] || continue
            # Our own cryptsetup (a child of the listener) is not a prompt.
            ppid=$(sed -n 's/^PPid:[[:space:]]*//p' "$p/status" 2>/dev/null)
            [ "$ppid" = "$listener" ] && continue
            # shellcheck disable=SC2046 # split argv into words on purpose
            set -- $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)
            [ "${1##*/}" = cryptsetup ] || continue
            for name in "$@"; do :; done
            case " $* " in
                *" luksOpen "*|*" open "*)
                    if [ -b "/dev/mapper/$name" ]; then kill "${p#/proc/}" 2>/dev/null; fi ;;
            esac
        done
        sleep 1
    done
) </dev/null >/dev/null 2>&1 &
