# shellcheck shell=sh
# portcullis: what the hooks of every generator (initramfs-tools, dracut,
# mkinitcpio) share: at build time, asking the listener which files to copy;
# at boot, stopping the listener and deconfiguring the network the initramfs
# brought up for it. Installed as /usr/lib/portcullis/lib.sh on the host and
# copied to the same path in every image.
#
# POSIX sh, run by dash, busybox ash and bash. Besides shell builtins it uses
# only `sleep`, `rm` and `ip`: Arch's mkinitcpio-busybox links few applets,
# and its ash runs none without its link (tests/mkinitcpio_applets.rs).
# Functions only: sourcing it does nothing.

# portcullis_kmsg PRIORITY MESSAGE: a line in the kernel log (the console,
# and the journal of the booted system).
portcullis_kmsg() {
    echo "<$1>portcullis: $2" >/dev/kmsg 2>/dev/null
}

# portcullis_alive PID: a running process (a zombie is not: the shell that
# started the listener may never reap it).
portcullis_alive() {
    [ -d "/proc/$1" ] || return 1
    while read -r _pa_key _pa_val _pa_rest; do
        if [ "$_pa_key" = State: ]; then
            [ "$_pa_val" != Z ]
            return
        fi
    done 2>/dev/null <"/proc/$1/status"
    return 1
}

# portcullis_children PID: the pids whose parent is PID, one per line.
portcullis_children() {
    for _pc_status in /proc/[0-9]*/status; do
        _pc_ppid=
        while read -r _pc_key _pc_val _pc_rest; do
            if [ "$_pc_key" = PPid: ]; then
                _pc_ppid=$_pc_val
                break
            fi
        done 2>/dev/null <"$_pc_status"
        if [ "$_pc_ppid" = "$1" ]; then
            _pc_status=${_pc_status#/proc/}
            echo "${_pc_status%/status}"
        fi
    done
}

# portcullis_stop: stops the listener whose pid is in /run/portcullis/pid,
# with its children (a DHCP client or ipconfig still waiting for the
# network). On SIGTERM it exits at once unless an unlock is in flight; then
# it waits for that (at most 30 s) so its reply is delivered. Ours is the
# outer bound: 35 s, then SIGKILL.
portcullis_stop() {
    [ -f /run/portcullis/pid ] || return 0
    read -r _ps_pid </run/portcullis/pid
    rm -f /run/portcullis/pid
    case $_ps_pid in '' | *[!0-9]*) return 0 ;; esac
    portcullis_alive "$_ps_pid" || return 0
    _ps_children=$(portcullis_children "$_ps_pid")
    for _ps_child in $_ps_children; do
        kill -TERM "$_ps_child" 2>/dev/null
    done
    kill -TERM "$_ps_pid" 2>/dev/null
    _ps_i=0
    while portcullis_alive "$_ps_pid" && [ "$_ps_i" -lt 350 ]; do
        sleep 0.1
        _ps_i=$((_ps_i + 1))
    done
    if portcullis_alive "$_ps_pid"; then
        kill -KILL "$_ps_pid" 2>/dev/null
        portcullis_kmsg 4 "the listener did not stop on SIGTERM; killed"
    fi
    # Its children (a DHCP client it waits on) were told too, and must be
    # gone before boot goes on with the network: SIGTERM is delivered
    # asynchronously, so the listener's death says nothing about theirs.
    for _ps_child in $_ps_children; do
        _ps_i=0
        while portcullis_alive "$_ps_child" && [ "$_ps_i" -lt 20 ]; do
            sleep 0.1
            _ps_i=$((_ps_i + 1))
        done
        portcullis_alive "$_ps_child" && kill -KILL "$_ps_child" 2>/dev/null
    done
    return 0
}

# portcullis_keep_network: true when /etc/portcullis/initramfs.conf says
# PORTCULLIS_KEEP_NETWORK=yes (the booted system expects the interface
# configured as the initramfs left it).
portcullis_keep_network() {
    PORTCULLIS_KEEP_NETWORK=no
    if [ -r /etc/portcullis/initramfs.conf ]; then
        # shellcheck disable=SC1091
        . /etc/portcullis/initramfs.conf
    fi
    [ "$PORTCULLIS_KEEP_NETWORK" = yes ]
}

# portcullis_flush IFACE...: removes the addresses and routes (IPv4 and
# IPv6) of each interface and takes it down, so nothing of the initramfs network leaks
# into the booted system. Returns 1 when one could not be deconfigured.
portcullis_flush() {
    _pf_rc=0
    for _pf_iface in "$@"; do
        [ -e "/sys/class/net/$_pf_iface" ] || continue
        # Down first: no router advertisement can add an address or route
        # behind the flush. `ip route flush` is IPv4 only, and an IPv6 route
        # via a gateway (fe80::1) outlives the link going down: flush both
        # families. A route flush may fail where there is nothing to flush
        # (iproute2 with no IPv4 at all: "FIB table does not exist"); what
        # counts is that the link is down and the addresses are gone.
        if ip link set dev "$_pf_iface" down && { ip route flush dev "$_pf_iface" 2>/dev/null || :; } &&
            { ip -6 route flush dev "$_pf_iface" 2>/dev/null || :; } && ip address flush dev "$_pf_iface"; then
            portcullis_kmsg 6 "deconfigured $_pf_iface"
        else
            portcullis_kmsg 3 "could not deconfigure $_pf_iface; its initramfs address may remain"
            _pf_rc=1
        fi
    done
    return "$_pf_rc"
}

# portcullis_image_listener PORTCULLISD [SYSROOT]: which binary the image
# gets as its listener, in PORTCULLIS_IMAGE_LISTENER (a path on the system,
# without SYSROOT): PORTCULLISD_INITRAMFS when initramfs.conf sets it, else
# the initramfs build installed beside this library (listen only), else
# PORTCULLISD itself. Both must print the same --version: an image whose
# listener is older or newer than the hooks that built it is refused here
# rather than found out at boot. Returns 1 with PORTCULLIS_ERROR.
portcullis_image_listener() {
    PORTCULLIS_ERROR=
    PORTCULLIS_IMAGE_LISTENER=${PORTCULLISD_INITRAMFS:-}
    if [ -z "$PORTCULLIS_IMAGE_LISTENER" ]; then
        PORTCULLIS_IMAGE_LISTENER=$1
        if [ -x "${2:-}/usr/lib/portcullis/portcullisd-initramfs" ]; then
            PORTCULLIS_IMAGE_LISTENER=/usr/lib/portcullis/portcullisd-initramfs
        fi
    fi
    [ "$PORTCULLIS_IMAGE_LISTENER" != "$1" ] && [ -n "$1" ] || return 0
    _pil_want=$("${2:-}$1" --version 2>&1) || _pil_want="$1 does not run"
    _pil_got=$("${2:-}$PORTCULLIS_IMAGE_LISTENER" --version 2>&1) ||
        _pil_got="$PORTCULLIS_IMAGE_LISTENER does not run"
    if [ "$_pil_want" != "$_pil_got" ]; then
        PORTCULLIS_ERROR="the listener for the image ($PORTCULLIS_IMAGE_LISTENER: $_pil_got) is not the installed $1 ($_pil_want): reinstall portcullis-initramfs, or set PORTCULLISD_INITRAMFS= in /etc/portcullis/initramfs.conf"
        return 1
    fi
    return 0
}

# portcullis_config_files PORTCULLISD CONFIG [ROOT] (build hooks): checks
# CONFIG (under ROOT, default /) and the files it names with the listener
# itself, which parses the TOML as it will at boot, and sets
# PORTCULLIS_HOST_KEYS (one path a line: `host-key` may list one key per
# type, and a `[relay]` adds its login key after them: every private key,
# which the hooks copy mode 0600), PORTCULLIS_HOST_KEY (the first host key)
# and PORTCULLIS_AUTHORIZED_KEYS to the paths to copy (the same path in the
# image; the config refuses control characters in paths, so a newline
# separates them safely). On failure it returns 1 with portcullisd's
# message in PORTCULLIS_ERROR.
# shellcheck disable=SC2034 # the results are for the hook that sources this
portcullis_config_files() {
    PORTCULLIS_HOST_KEY=
    PORTCULLIS_HOST_KEYS=
    PORTCULLIS_AUTHORIZED_KEYS=
    PORTCULLIS_ERROR=
    if ! _pcf_out=$("$1" check --config "$2" --root "${3:-/}" --list-files 2>&1); then
        PORTCULLIS_ERROR=$_pcf_out
        return 1
    fi
    while IFS= read -r _pcf_line; do
        case $_pcf_line in
            "host-key "*)
                _pcf_key=${_pcf_line#host-key }
                PORTCULLIS_HOST_KEY=${PORTCULLIS_HOST_KEY:-$_pcf_key}
                PORTCULLIS_HOST_KEYS="$PORTCULLIS_HOST_KEYS${PORTCULLIS_HOST_KEYS:+
}$_pcf_key"
                ;;
            "authorized-keys "*) PORTCULLIS_AUTHORIZED_KEYS=${_pcf_line#authorized-keys } ;;
            # The relay login key (docs/relay.md): private, copied as a host key is.
            "relay-key "*)
                PORTCULLIS_HOST_KEYS="$PORTCULLIS_HOST_KEYS${PORTCULLIS_HOST_KEYS:+
}${_pcf_line#relay-key }"
                ;;
        esac
    done <<FILES
$_pcf_out
FILES
    if [ -z "$PORTCULLIS_HOST_KEY" ] || [ -z "$PORTCULLIS_AUTHORIZED_KEYS" ]; then
        PORTCULLIS_ERROR="$1 check --list-files named no host key or authorized keys; is it older than these hooks?"
        return 1
    fi
    return 0
}
