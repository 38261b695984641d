# shellcheck shell=sh
# portcullis: the build-time preflight. Every generator's hook calls
# portcullis_preflight_build on the image it has just built (initramfs-tools,
# mkinitcpio) or staged (dracut), so the build log says whether the network
# will reach the listener and no second unlock hook fights it, the same
# verdict `portcullis-preflight` gives. It never stops a build: a failure is a
# loud warning. Installed as /usr/lib/portcullis/preflight-hook.sh; never
# copied into an image. Functions only: sourcing it does nothing.

# The checks a build can decide (ids of docs/preflight.md).
# shellcheck disable=SC2034 # read by the hooks that source this file
PORTCULLIS_BUILD_CHECKS=conflicting-hooks,network-config,nic-driver,static-ip

# portcullis_preflight_show PREFIX TEXT: TEXT on stderr, each non-empty line
# prefixed.
portcullis_preflight_show() {
    printf '%s\n' "$2" | while IFS= read -r _ps_line; do
        [ -n "$_ps_line" ] && printf '%s: portcullis: %s\n' "$1" "$_ps_line" >&2
    done
    return 0
}

# portcullis_preflight_build WHAT [portcullis-preflight options...]
# Runs portcullis-preflight with the options (which name the image and the
# checks); on stderr prints its checklist when something warns or fails, then
# one verdict line naming WHAT. Returns 0 whatever happened. Silent when
# remote unlock is not configured (no PORTCULLIS_CONFIG) or when
# portcullis-preflight is not installed (an older package); never silent on
# a warning, a failure or an error.
portcullis_preflight_build() {
    _pb_what=$1
    shift
    [ -e "${PORTCULLIS_CONFIG:-/etc/portcullis/portcullisd.toml}" ] || return 0
    _pb_bin=${PORTCULLIS_PREFLIGHT:-}
    if [ -z "$_pb_bin" ]; then
        for _pb_p in /usr/sbin/portcullis-preflight /usr/local/sbin/portcullis-preflight; do
            if [ -x "$_pb_p" ]; then
                _pb_bin=$_pb_p
                break
            fi
        done
    fi
    if [ -z "$_pb_bin" ] || [ ! -x "$_pb_bin" ]; then
        return 0
    fi
    _pb_rc=0
    _pb_out=$("$_pb_bin" "$@" 2>&1) || _pb_rc=$?
    case $_pb_rc in
        0)
            echo "I: portcullis: preflight of $_pb_what: network and unlock-hook checks passed" >&2
            ;;
        15)
            portcullis_preflight_show W "$_pb_out"
            echo "W: portcullis: preflight of $_pb_what: WARNINGS: remote unlock should work, but read the warnings above before rebooting" >&2
            ;;
        14)
            portcullis_preflight_show W "$_pb_out"
            echo "W: portcullis: REMOTE UNLOCK WILL FAIL after the next reboot with $_pb_what: fix the failed checks above, then rebuild the image" >&2
            ;;
        *)
            portcullis_preflight_show W "$_pb_out"
            echo "W: portcullis: preflight could not check $_pb_what (exit $_pb_rc): see above, or run portcullis-preflight by hand" >&2
            ;;
    esac
    return 0
}
