#!/bin/bash
# shellcheck disable=SC2154 # dracut sets dracutsysrootdir, initdir, moddir, systemdsystemunitdir
# dracut module: the portcullis SSH unlock listener in the initramfs.
# Installed as /usr/lib/dracut/modules.d/95portcullis/; enabled by
# /etc/dracut.conf.d/90-portcullis.conf (add_dracutmodules+=" portcullis ").
# Copies the listener, its config, host key (0600) and authorized keys, checks
# them with `portcullisd check` against the image, and starts the listener:
# with systemd in the initramfs as portcullisd.service (before
# cryptsetup.target, stopped before switch-root), without systemd from dracut
# hooks (pre-trigger / cleanup).

portcullis_conf() {
    PORTCULLIS_CONFIG=/etc/portcullis/portcullisd.toml
    PORTCULLISD=
    # shellcheck disable=SC2034 # read by portcullis_image_listener (lib.sh)
    PORTCULLISD_INITRAMFS=
    PORTCULLIS_NETWORK_DIR=/etc/portcullis/network
    if [[ -r $dracutsysrootdir/etc/portcullis/initramfs.conf ]]; then
        # shellcheck disable=SC1091
        . "$dracutsysrootdir/etc/portcullis/initramfs.conf"
    fi
    if [[ -z $PORTCULLISD ]]; then
        for p in /usr/sbin/portcullisd /usr/local/sbin/portcullisd; do
            if [[ -x $dracutsysrootdir$p ]]; then
                PORTCULLISD=$p
                break
            fi
        done
    fi
}

check() {
    portcullis_conf
    if [[ ! -e $dracutsysrootdir$PORTCULLIS_CONFIG ]]; then
        derror "portcullis: $PORTCULLIS_CONFIG does not exist: this image has NO remote (SSH) unlock"
        return 1
    fi
    if [[ -z $PORTCULLISD ]]; then
        derror "portcullis: portcullisd not found in /usr/sbin or /usr/local/sbin (set PORTCULLISD= in /etc/portcullis/initramfs.conf)"
        return 1
    fi
    return 0
}

depends() {
    # network brings ip=/rd.neednet handling (systemd-networkd in a systemd
    # initramfs without NetworkManager, network-legacy otherwise).
    echo network crypt
    return 0
}

# dracut ignores install()'s return code: a broken config must stop the
# build, so fail with exit (this file is sourced into dracut's shell, whose
# exit trap removes its temporary directory).
portcullis_fail() {
    dfatal "portcullis: $*"
    dfatal "portcullis: the image would not allow remote unlock; no image written"
    exit 1
}

install() {
    local host_key authorized_keys out
    portcullis_conf
    # The files the config names, as the listener reads them (it parses the
    # TOML; the shared library asks it). This checks the admin's own files
    # first, so a mistake names them.
    if [[ ! -r $dracutsysrootdir/usr/lib/portcullis/lib.sh ]]; then
        portcullis_fail "/usr/lib/portcullis/lib.sh is missing; reinstall the module (initramfs/install.sh dracut)"
    fi
    # shellcheck disable=SC1091
    . "$dracutsysrootdir/usr/lib/portcullis/lib.sh"
    if ! portcullis_config_files "$dracutsysrootdir$PORTCULLISD" "$PORTCULLIS_CONFIG" "${dracutsysrootdir:-/}"; then
        portcullis_fail "portcullisd check failed: $PORTCULLIS_ERROR"
    fi
    authorized_keys=$PORTCULLIS_AUTHORIZED_KEYS
    # The initramfs build of the listener when installed (listen only).
    portcullis_image_listener "$PORTCULLISD" "$dracutsysrootdir" ||
        portcullis_fail "$PORTCULLIS_ERROR"

    inst_binary "$PORTCULLIS_IMAGE_LISTENER" /usr/sbin/portcullisd
    inst_simple "$PORTCULLIS_CONFIG" /etc/portcullis/portcullisd.toml
    # Every host key: a key-type migration serves two (docs/rotation.md).
    while IFS= read -r host_key; do
        inst_simple "$host_key" "$host_key"
        chmod 0600 "$initdir$host_key"
    done <<<"$PORTCULLIS_HOST_KEYS"
    inst_simple "$authorized_keys" "$authorized_keys"
    chmod 0644 "$initdir$authorized_keys"
    if [[ -r $dracutsysrootdir/etc/portcullis/initramfs.conf ]]; then
        inst_simple /etc/portcullis/initramfs.conf /etc/portcullis/initramfs.conf
    fi
    inst_multiple ip
    # The direct backend (backend = "auto" falls back to it) runs cryptsetup.
    inst_multiple cryptsetup
    inst_simple /usr/lib/portcullis/lib.sh /usr/lib/portcullis/lib.sh
    inst_script "$moddir/portcullis-flush-network.sh" /usr/lib/portcullis/flush-network

    if dracut_module_included "systemd"; then
        inst_simple "$moddir/portcullisd.service" "$systemdsystemunitdir/portcullisd.service"
        inst_simple "$moddir/portcullis-network-cleanup.service" \
            "$systemdsystemunitdir/portcullis-network-cleanup.service"
        $SYSTEMCTL -q --root "$initdir" enable portcullisd.service portcullis-network-cleanup.service
        # Optional systemd-networkd config for the initramfs only.
        if [[ -d $dracutsysrootdir$PORTCULLIS_NETWORK_DIR ]]; then
            local f
            for f in "$dracutsysrootdir$PORTCULLIS_NETWORK_DIR"/*.network \
                "$dracutsysrootdir$PORTCULLIS_NETWORK_DIR"/*.link \
                "$dracutsysrootdir$PORTCULLIS_NETWORK_DIR"/*.netdev; do
                [[ -e $f ]] || continue
                inst_simple "${f#"$dracutsysrootdir"}" "/etc/systemd/network/${f##*/}"
            done
        fi
    else
        inst_hook pre-trigger 90 "$moddir/portcullis-start.sh"
        inst_hook cleanup 90 "$moddir/portcullis-stop.sh"
    fi
    # The network must come up even when the root is not on the network.
    mkdir -p "$initdir/etc/cmdline.d"
    echo "rd.neednet=1" >"$initdir/etc/cmdline.d/90portcullis.conf"

    # Check what is in the image, with the paths the listener will use.
    if ! out=$("$dracutsysrootdir$PORTCULLISD" check --config /etc/portcullis/portcullisd.toml \
        --root "$initdir" 2>&1); then
        portcullis_fail "portcullisd check failed for the copied files: $out"
    fi
    dinfo "portcullis: $out"
    if [[ $(umask) != 0077 && $(umask) != 077 ]]; then
        dwarning "portcullis: umask $(umask): the image holds the SSH host key"
    fi
    # Build-time preflight of the network and unlock hooks (never fails the
    # build). dracut has no post-build hook, so this checks the tree staged
    # so far: what modules after 95 add, the early microcode cpio and the
    # compression are not seen (docs/preflight.md).
    if [[ -z $dracutsysrootdir && -r /usr/lib/portcullis/preflight-hook.sh ]]; then
        # shellcheck disable=SC1091
        . /usr/lib/portcullis/preflight-hook.sh
        portcullis_preflight_build "the image for $kernel (dracut staging tree)" \
            --only "$PORTCULLIS_BUILD_CHECKS" --dir "$initdir" --kernel "$kernel"
    fi
    return 0
}
