# shellcheck shell=sh
# portcullis: the initramfs network beyond what ip= can say, for the hooks
# of initramfs-tools and of mkinitcpio's busybox image (dracut and systemd
# images have their own vlan=, bond= and ip=[v6] handling): bonds, VLANs and
# IPv6, from portcullis.* kernel parameters, and the undoing of all of it
# before the real system starts. Installed as /usr/lib/portcullis/net.sh on
# the host and copied to the same path in those images.
#
# Kernel parameters (docs/install/initramfs-tools.md, mkinitcpio.md):
#   portcullis.bond=NAME:SLAVE[,SLAVE...][:OPTION=VALUE[,OPTION=VALUE...]]
#       e.g. portcullis.bond=bond0:eth0,eth1:mode=active-backup,miimon=100
#       (dracut's bond= syntax; OPTION is a file of /sys/class/net/NAME/bonding)
#   portcullis.vlan=NAME:PARENT
#       e.g. portcullis.vlan=eth0.100:eth0 (dracut's vlan= syntax; the VLAN id
#       is the number after the last dot, or after "vlan": vlan100, vlan0100)
#   portcullis.ip6=ADDRESS/PREFIX[,GATEWAY[,DEVICE]]   static, e.g.
#       portcullis.ip6=2001:db8:1::10/64,fe80::1,eth0 (the hoster layout)
#   portcullis.ip6=auto[,,DEVICE]                      SLAAC (router advertisements)
# Bonds are made first, then VLANs (a VLAN on a bond works), then ip= and
# IPv6 are configured on whatever device they name.
#
# POSIX sh, run by dash, busybox ash and bash. Besides shell builtins it uses
# only `ip`, `sleep` and `modprobe`, all in Arch's mkinitcpio-busybox image
# (tests/mkinitcpio_applets.rs). Functions only: sourcing it does nothing.
# State: $PORTCULLIS_NET_RUN/net-created (interfaces made here, in order) and
# net-up (interfaces brought up here), read by portcullis_net_down.

PORTCULLIS_NET_RUN=${PORTCULLIS_NET_RUN:-/run/portcullis}
PORTCULLIS_CMDLINE=${PORTCULLIS_CMDLINE:-/proc/cmdline}
# How long (in tenths of a second) to wait for an interface to appear.
PORTCULLIS_NET_WAIT=${PORTCULLIS_NET_WAIT:-300}

# portcullis_net_log PRIORITY MESSAGE: the console and the kernel log.
portcullis_net_log() {
    echo "portcullis: $2" >&2
    echo "<$1>portcullis: $2" >/dev/kmsg 2>/dev/null
    return 0
}

# portcullis_net_params: reads the kernel command line into PORTCULLIS_IP6
# (the last portcullis.ip6=), PORTCULLIS_BONDS and PORTCULLIS_VLANS (every
# portcullis.bond= / portcullis.vlan=, separated by blanks).
portcullis_net_params() {
    PORTCULLIS_IP6=
    PORTCULLIS_BONDS=
    PORTCULLIS_VLANS=
    _pnp_line=
    read -r _pnp_line <"$PORTCULLIS_CMDLINE" 2>/dev/null
    set -f
    for _pnp_word in $_pnp_line; do
        case $_pnp_word in
            portcullis.ip6=*) PORTCULLIS_IP6=${_pnp_word#portcullis.ip6=} ;;
            portcullis.bond=*) PORTCULLIS_BONDS="$PORTCULLIS_BONDS ${_pnp_word#portcullis.bond=}" ;;
            portcullis.vlan=*) PORTCULLIS_VLANS="$PORTCULLIS_VLANS ${_pnp_word#portcullis.vlan=}" ;;
        esac
    done
    set +f
    return 0
}

# portcullis_net_wanted: true when the command line asks for a bond, a VLAN
# or IPv6 (portcullis_net_params first).
portcullis_net_wanted() {
    [ -n "$PORTCULLIS_IP6$PORTCULLIS_BONDS$PORTCULLIS_VLANS" ]
}

# portcullis_net_wait_dev DEV: waits for /sys/class/net/DEV (its driver
# loads through udev).
portcullis_net_wait_dev() {
    _pnw_i=0
    while [ ! -e "/sys/class/net/$1" ]; do
        [ "$_pnw_i" -lt "$PORTCULLIS_NET_WAIT" ] || return 1
        sleep 0.1
        _pnw_i=$((_pnw_i + 1))
    done
    return 0
}

# portcullis_net_first_dev: the first interface other than lo, once one is
# there; empty when none appeared in time.
portcullis_net_first_dev() {
    _pnf_i=0
    while [ "$_pnf_i" -lt "$PORTCULLIS_NET_WAIT" ]; do
        for _pnf_d in /sys/class/net/*; do
            case ${_pnf_d##*/} in lo | '*' | bonding_masters) continue ;; esac
            echo "${_pnf_d##*/}"
            return 0
        done
        sleep 0.1
        _pnf_i=$((_pnf_i + 1))
    done
    return 1
}

# portcullis_net_ifname WHAT NAME: a usable interface name (what the kernel
# accepts: 1 to 15 bytes, no '/', ':', ',' or blank), else an error naming WHAT.
portcullis_net_ifname() {
    case $2 in
        '' | . | .. | */* | *:* | *,* | *' '* | *=*)
            portcullis_net_log 3 "$1: '$2' is not an interface name"
            return 1
            ;;
    esac
    [ "${#2}" -le 15 ] && return 0
    portcullis_net_log 3 "$1: interface name '$2' is longer than 15 characters"
    return 1
}

portcullis_net_mark() { # FILE NAME: remember NAME for portcullis_net_down
    mkdir -p "$PORTCULLIS_NET_RUN"
    echo "$2" >>"$PORTCULLIS_NET_RUN/$1"
}

# portcullis_net_bond SPEC: portcullis.bond=SPEC (see the top of this file).
portcullis_net_bond() {
    _pnb_what="portcullis.bond=$1"
    _pnb_name=${1%%:*}
    _pnb_rest=${1#*:}
    if [ "$_pnb_rest" = "$1" ] || [ -z "$_pnb_rest" ]; then
        portcullis_net_log 3 "$_pnb_what: no slaves; write portcullis.bond=bond0:eth0,eth1[:mode=active-backup,miimon=100]"
        return 1
    fi
    _pnb_slaves=${_pnb_rest%%:*}
    _pnb_opts=
    case $_pnb_rest in *:*) _pnb_opts=${_pnb_rest#*:} ;; esac
    portcullis_net_ifname "$_pnb_what" "$_pnb_name" || return 1
    # Check every option and slave name before changing anything.
    set -f
    _pnb_ifs=$IFS
    IFS=,
    for _pnb_o in $_pnb_opts; do
        case $_pnb_o in
            [a-z]*=?*) case ${_pnb_o%%=*} in *[!a-z0-9_]*) _pnb_o=bad ;; esac ;;
            *) _pnb_o=bad ;;
        esac
        if [ "$_pnb_o" = bad ]; then
            IFS=$_pnb_ifs
            set +f
            portcullis_net_log 3 "$_pnb_what: options are OPTION=VALUE separated by commas (mode=active-backup,miimon=100)"
            return 1
        fi
    done
    for _pnb_s in $_pnb_slaves; do
        portcullis_net_ifname "$_pnb_what" "$_pnb_s" || { IFS=$_pnb_ifs; set +f; return 1; }
    done
    IFS=$_pnb_ifs
    set +f

    # max_bonds=0: loading the module must not make a bond0 of its own.
    modprobe -q bonding max_bonds=0 2>/dev/null
    if [ ! -e "/sys/class/net/$_pnb_name" ]; then
        ip link add "$_pnb_name" type bond || {
            portcullis_net_log 3 "$_pnb_what: could not create bond $_pnb_name (is the bonding module in the image?)"
            return 1
        }
        portcullis_net_mark net-created "$_pnb_name"
    fi
    if [ ! -d "/sys/class/net/$_pnb_name/bonding" ]; then
        portcullis_net_log 3 "$_pnb_what: $_pnb_name exists and is not a bond"
        return 1
    fi
    # The mode first and the primary slave last: the kernel takes a mode
    # only without slaves, and a primary only among them.
    portcullis_net_bond_opts "$_pnb_name" "$_pnb_opts" mode || return 1
    portcullis_net_bond_opts "$_pnb_name" "$_pnb_opts" other || return 1
    set -f
    IFS=,
    for _pnb_s in $_pnb_slaves; do
        IFS=$_pnb_ifs
        if ! portcullis_net_wait_dev "$_pnb_s"; then
            set +f
            portcullis_net_log 3 "$_pnb_what: no interface $_pnb_s appeared"
            return 1
        fi
        ip link set dev "$_pnb_s" down
        if ! echo "+$_pnb_s" >"/sys/class/net/$_pnb_name/bonding/slaves"; then
            set +f
            portcullis_net_log 3 "$_pnb_what: could not add $_pnb_s to $_pnb_name"
            return 1
        fi
        portcullis_net_mark net-up "$_pnb_s"
        IFS=,
    done
    IFS=$_pnb_ifs
    set +f
    portcullis_net_bond_opts "$_pnb_name" "$_pnb_opts" primary || return 1
    ip link set dev "$_pnb_name" up || return 1
    portcullis_net_mark net-up "$_pnb_name"
    portcullis_net_log 6 "bond $_pnb_name over $_pnb_slaves${_pnb_opts:+ ($_pnb_opts)}"
    return 0
}

# portcullis_net_bond_opts BOND OPTIONS mode|primary|other: writes the
# chosen OPTION=VALUE pairs to /sys/class/net/BOND/bonding/OPTION.
portcullis_net_bond_opts() {
    set -f
    _pno_ifs=$IFS
    IFS=,
    for _pno_o in $2; do
        _pno_key=${_pno_o%%=*}
        case $3:$_pno_key in
            mode:mode | primary:primary) ;;
            other:mode | other:primary | mode:* | primary:*) continue ;;
        esac
        if [ ! -e "/sys/class/net/$1/bonding/$_pno_key" ]; then
            IFS=$_pno_ifs
            set +f
            portcullis_net_log 3 "portcullis.bond=$1: unknown bonding option '$_pno_key' (see /sys/class/net/$1/bonding/)"
            return 1
        fi
        if ! echo "${_pno_o#*=}" >"/sys/class/net/$1/bonding/$_pno_key"; then
            IFS=$_pno_ifs
            set +f
            portcullis_net_log 3 "portcullis.bond=$1: the kernel refused $_pno_o"
            return 1
        fi
    done
    IFS=$_pno_ifs
    set +f
    return 0
}

# portcullis_net_vlan SPEC: portcullis.vlan=NAME:PARENT.
portcullis_net_vlan() {
    _pnv_what="portcullis.vlan=$1"
    _pnv_name=${1%%:*}
    _pnv_parent=${1#*:}
    if [ "$_pnv_parent" = "$1" ]; then
        portcullis_net_log 3 "$_pnv_what: no parent interface; write portcullis.vlan=eth0.100:eth0"
        return 1
    fi
    portcullis_net_ifname "$_pnv_what" "$_pnv_name" || return 1
    portcullis_net_ifname "$_pnv_what" "$_pnv_parent" || return 1
    case $_pnv_name in
        *.*) _pnv_id=${_pnv_name##*.} ;;
        vlan*) _pnv_id=${_pnv_name#vlan} ;;
        *) _pnv_id= ;;
    esac
    while :; do
        case $_pnv_id in 0?*) _pnv_id=${_pnv_id#0} ;; *) break ;; esac
    done
    case $_pnv_id in
        '' | *[!0-9]*) _pnv_id=0 ;;
    esac
    if [ "$_pnv_id" -lt 1 ] || [ "$_pnv_id" -gt 4094 ]; then
        portcullis_net_log 3 "$_pnv_what: no VLAN id 1-4094 in the name '$_pnv_name'; name it PARENT.ID (eth0.100) or vlanID (vlan100)"
        return 1
    fi
    if ! portcullis_net_wait_dev "$_pnv_parent"; then
        portcullis_net_log 3 "$_pnv_what: no interface $_pnv_parent appeared"
        return 1
    fi
    modprobe -q 8021q 2>/dev/null
    ip link set dev "$_pnv_parent" up
    portcullis_net_mark net-up "$_pnv_parent"
    if [ ! -e "/sys/class/net/$_pnv_name" ]; then
        ip link add link "$_pnv_parent" name "$_pnv_name" type vlan id "$_pnv_id" || {
            portcullis_net_log 3 "$_pnv_what: could not create VLAN $_pnv_id on $_pnv_parent (is the 8021q module in the image?)"
            return 1
        }
        portcullis_net_mark net-created "$_pnv_name"
    fi
    ip link set dev "$_pnv_name" up || return 1
    portcullis_net_mark net-up "$_pnv_name"
    portcullis_net_log 6 "VLAN $_pnv_id on $_pnv_parent: $_pnv_name"
    return 0
}

# portcullis_net_links: every bond, then every VLAN of the command line.
# Returns 1 when one could not be made (the others are still tried).
portcullis_net_links() {
    _pnl_rc=0
    set -f
    for _pnl_spec in $PORTCULLIS_BONDS; do
        set +f
        portcullis_net_bond "$_pnl_spec" || _pnl_rc=1
    done
    set -f
    for _pnl_spec in $PORTCULLIS_VLANS; do
        set +f
        portcullis_net_vlan "$_pnl_spec" || _pnl_rc=1
    done
    set +f
    return "$_pnl_rc"
}

# portcullis_net_global6 DEV: the global IPv6 addresses of DEV, blank-separated.
portcullis_net_global6() {
    _png_out=
    while read -r _png_fam _png_addr _png_rest; do
        [ "$_png_fam" = inet6 ] || continue
        case " $_png_rest " in *" scope global "*) _png_out="$_png_out${_png_out:+ }$_png_addr" ;; esac
    done <<ADDRS
$(ip -6 address show dev "$1" 2>/dev/null)
ADDRS
    echo "$_png_out"
}

# portcullis_net_ip6 [DEVICE]: portcullis.ip6= on its device, else on
# DEVICE (the one ip= configured), else on the first interface.
portcullis_net_ip6() {
    [ -n "$PORTCULLIS_IP6" ] || return 0
    _pn6_what="portcullis.ip6=$PORTCULLIS_IP6"
    _pn6_dev=
    IFS=, read -r _pn6_addr _pn6_gw _pn6_dev _pn6_rest <<SPEC
$PORTCULLIS_IP6
SPEC
    if [ -n "$_pn6_rest" ]; then
        portcullis_net_log 3 "$_pn6_what: too many fields; write ADDRESS/PREFIX[,GATEWAY[,DEVICE]] or auto[,,DEVICE]"
        return 1
    fi
    case $_pn6_addr in
        auto) ;;
        *:*/*)
            _pn6_prefix=${_pn6_addr##*/}
            case $_pn6_prefix in '' | *[!0-9]*) _pn6_prefix=0 ;; esac
            if [ "$_pn6_prefix" -lt 1 ] || [ "$_pn6_prefix" -gt 128 ]; then
                portcullis_net_log 3 "$_pn6_what: the prefix length must be 1-128 (2001:db8::2/64)"
                return 1
            fi
            ;;
        *)
            portcullis_net_log 3 "$_pn6_what: give ADDRESS/PREFIX (portcullis.ip6=2001:db8::2/64,fe80::1) or auto"
            return 1
            ;;
    esac
    case $_pn6_gw in
        '' | *:*) ;;
        *)
            portcullis_net_log 3 "$_pn6_what: gateway '$_pn6_gw' is not an IPv6 address (fe80::1)"
            return 1
            ;;
    esac
    _pn6_dev=${_pn6_dev:-${1:-}}
    if [ -z "$_pn6_dev" ]; then
        _pn6_dev=$(portcullis_net_first_dev) || {
            portcullis_net_log 3 "$_pn6_what: no network interface appeared"
            return 1
        }
    fi
    portcullis_net_ifname "$_pn6_what" "$_pn6_dev" || return 1
    if ! portcullis_net_wait_dev "$_pn6_dev"; then
        portcullis_net_log 3 "$_pn6_what: no interface $_pn6_dev appeared"
        return 1
    fi
    if [ ! -d /proc/sys/net/ipv6/conf/all ]; then
        portcullis_net_log 3 "$_pn6_what: this kernel has IPv6 disabled (ipv6.disable=1 on the command line?)"
        return 1
    fi
    _pn6_conf=/proc/sys/net/ipv6/conf/$_pn6_dev
    if [ "$_pn6_addr" = auto ]; then
        # What the kernel does by default, said explicitly: an admin who
        # asks for SLAAC gets it even if a default was changed.
        echo 1 >"$_pn6_conf/accept_ra"
        echo 1 >"$_pn6_conf/autoconf"
        ip link set dev "$_pn6_dev" up || return 1
        portcullis_net_mark net-up "$_pn6_dev"
        _pn6_i=0
        while [ -z "$(portcullis_net_global6 "$_pn6_dev")" ] && [ "$_pn6_i" -lt 100 ]; do
            sleep 0.1
            _pn6_i=$((_pn6_i + 1))
        done
        _pn6_got=$(portcullis_net_global6 "$_pn6_dev")
        if [ -z "$_pn6_got" ]; then
            portcullis_net_log 4 "IPv6: no router advertisement on $_pn6_dev within 10 s; the kernel keeps listening for one"
        else
            portcullis_net_log 6 "IPv6: $_pn6_dev $_pn6_got (SLAAC)"
        fi
        return 0
    fi
    # Static: exactly what the admin wrote. Router advertisements would add
    # addresses and routes of their own beside it.
    echo 0 >"$_pn6_conf/accept_ra"
    echo 0 >"$_pn6_conf/autoconf"
    ip link set dev "$_pn6_dev" up || return 1
    portcullis_net_mark net-up "$_pn6_dev"
    if ! ip -6 address add "$_pn6_addr" dev "$_pn6_dev"; then
        portcullis_net_log 3 "$_pn6_what: could not add $_pn6_addr to $_pn6_dev"
        return 1
    fi
    if [ -n "$_pn6_gw" ] && ! ip -6 route add default via "$_pn6_gw" dev "$_pn6_dev"; then
        portcullis_net_log 3 "$_pn6_what: could not add the default route via $_pn6_gw on $_pn6_dev"
        return 1
    fi
    portcullis_net_log 6 "IPv6: $_pn6_dev $_pn6_addr${_pn6_gw:+ via $_pn6_gw}"
    return 0
}

# portcullis_net_down: deletes the interfaces made here (last first) and
# deconfigures and downs every interface brought up here, both families.
# Returns 1 when something could not be undone.
portcullis_net_down() {
    _pnd_rc=0
    _pnd_created=
    if [ -r "$PORTCULLIS_NET_RUN/net-created" ]; then
        while read -r _pnd_if; do
            _pnd_created="$_pnd_if $_pnd_created"
        done <"$PORTCULLIS_NET_RUN/net-created"
    fi
    for _pnd_if in $_pnd_created; do
        [ -e "/sys/class/net/$_pnd_if" ] || continue
        # Which link a bond ended on: what the admin wants to know after a
        # failover (the kernel log of the booted system keeps the line).
        _pnd_note=
        if [ -r "/sys/class/net/$_pnd_if/bonding/active_slave" ]; then
            read -r _pnd_note <"/sys/class/net/$_pnd_if/bonding/active_slave"
            _pnd_note=" (active slave: ${_pnd_note:-none})"
        fi
        if ip link delete dev "$_pnd_if"; then
            portcullis_net_log 6 "deleted $_pnd_if$_pnd_note"
        else
            portcullis_net_log 3 "could not delete $_pnd_if; it stays in the booted system"
            _pnd_rc=1
        fi
    done
    if [ -r "$PORTCULLIS_NET_RUN/net-up" ]; then
        while read -r _pnd_if; do
            [ -e "/sys/class/net/$_pnd_if" ] || continue
            # As portcullis_flush (lib.sh) does: down, then routes and addresses.
            ip link set dev "$_pnd_if" down || _pnd_rc=1
            ip route flush dev "$_pnd_if" 2>/dev/null
            ip -6 route flush dev "$_pnd_if" 2>/dev/null
            ip address flush dev "$_pnd_if" 2>/dev/null
        done <"$PORTCULLIS_NET_RUN/net-up"
    fi
    rm -f "$PORTCULLIS_NET_RUN/net-created" "$PORTCULLIS_NET_RUN/net-up"
    return "$_pnd_rc"
}

# portcullis_net_modules [ROOT] (build hooks): the kernel modules an image
# needs for the bonds and VLANs the machine boots with, one a line: asked
# for by portcullis.bond= / portcullis.vlan= in ROOT's /etc/kernel/cmdline or
# /etc/default/grub (or /proc/cmdline when ROOT is /), or in use by the
# running system. Other images stay without them (bonding is ~500 KB).
portcullis_net_modules() {
    _pnm_root=${1:-}
    _pnm_bond=no
    _pnm_vlan=no
    for _pnm_f in "$_pnm_root/etc/kernel/cmdline" "$_pnm_root/etc/default/grub" \
        "$_pnm_root/etc/default/grub.d"/*.cfg; do
        [ -r "$_pnm_f" ] || continue
        while read -r _pnm_line; do
            case $_pnm_line in *portcullis.bond=*) _pnm_bond=yes ;; esac
            case $_pnm_line in *portcullis.vlan=*) _pnm_vlan=yes ;; esac
        done <"$_pnm_f"
    done
    if [ -z "$_pnm_root" ] || [ "$_pnm_root" = / ]; then
        read -r _pnm_line </proc/cmdline 2>/dev/null
        case $_pnm_line in *portcullis.bond=*) _pnm_bond=yes ;; esac
        case $_pnm_line in *portcullis.vlan=*) _pnm_vlan=yes ;; esac
        [ -d /proc/net/bonding ] && _pnm_bond=yes
        [ -e /proc/net/vlan/config ] && _pnm_vlan=yes
    fi
    [ "$_pnm_bond" = no ] || echo bonding
    [ "$_pnm_vlan" = no ] || echo 8021q
    return 0
}
