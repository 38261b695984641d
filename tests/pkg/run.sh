#!/usr/bin/env bash
# VM test of the Debian packages, used as an admin uses them, on the Debian 12
# root of tests/distro (initramfs-tools + cryptsetup-initramfs):
#
#   1. `make deb` twice (the second build newer: DEB_VERSION), lintian clean;
#      `make install`/`uninstall` lay out the same files as the packages;
#   2. apt install ./portcullis-initramfs_*.deb: host key created and its
#      fingerprint printed, an unconfigured update-initramfs still works;
#      configure (default config + an authorized key), rebuild, boot, unlock
#      over SSH with the packaged client, pinned to the printed fingerprint;
#   3. apt install the newer build: same host key, images rebuilt, boot and
#      unlock again with the same pin;
#   4. apt purge: config and keys gone, the image has no listener, boot, and
#      the console prompt unlocks;
#   5. the client package on a plain Debian 12 root: `man portcullis` renders,
#      bash completes `portcullis un<TAB>`.
#
# Usage: tests/pkg/run.sh   (root; logs in target/pkg-run/)
#   PORTCULLIS_BIN_DIR=DIR  binaries to package (default target/dist, built
#                           with tests/build-release.sh when missing)
#   Shares target/distro-cache (PORTCULLIS_DISTRO_CACHE) with tests/distro.
set -euo pipefail
# shellcheck source=tests/distro/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../distro/lib.sh"

run_dir=$distro_repo/target/pkg-run
rm -rf "$run_dir"
mkdir -p "$run_dir"
chmod 0700 "$run_dir"
t0=$SECONDS
ensure_host_packages
for pair in dh:debhelper lintian:lintian; do
    command -v "${pair%%:*}" >/dev/null ||
        die "${pair%%:*} is missing: apt-get install ${pair#*:} (.ci/run installs it)"
done

bin_dir=${PORTCULLIS_BIN_DIR:-$distro_repo/target/dist}
if [ ! -x "$bin_dir/portcullisd" ] || [ ! -x "$bin_dir/portcullisd-initramfs" ] ||
    [ ! -x "$bin_dir/portcullis" ] || [ ! -x "$bin_dir/portcullis-preflight" ]; then
    dlog "building the release binaries"
    "$distro_repo/tests/build-release.sh" >/dev/null
    bin_dir=$distro_repo/target/dist
fi

# --- 1. packages ------------------------------------------------------------
v2=0.1.0+pkgtest2
dlog "make deb (twice: the second as version $v2)"
make -C "$distro_repo" --no-print-directory deb DIST="$bin_dir" DEB_OUTDIR="$run_dir/deb1" \
    >"$run_dir/deb1.log" 2>&1 || { tail -n 30 "$run_dir/deb1.log" >&2; fail "make deb failed"; }
make -C "$distro_repo" --no-print-directory deb DIST="$bin_dir" DEB_OUTDIR="$run_dir/deb2" \
    DEB_VERSION="$v2" >"$run_dir/deb2.log" 2>&1 || { tail -n 30 "$run_dir/deb2.log" >&2; fail "make deb (2) failed"; }
server_deb=$(echo "$run_dir"/deb1/portcullis-initramfs_*_amd64.deb)
server_deb2=$run_dir/deb2/portcullis-initramfs_${v2}_amd64.deb
client_deb=$(echo "$run_dir"/deb1/portcullis_*_amd64.deb)
for f in "$server_deb" "$server_deb2" "$client_deb"; do
    [ -f "$f" ] || fail "no package $f: $(ls "$run_dir"/deb*)"
done
ok "packages built: $(cd "$run_dir" && ls deb1/*.deb deb2/*.deb | tr '\n' ' ')"
lintian --fail-on error,warning --display-info "$server_deb" "$client_deb" >"$run_dir/lintian.log" 2>&1 ||
    fail "lintian: $(cat "$run_dir/lintian.log")"
ok "lintian: no error or warning (overrides justified in debian/*.lintian-overrides; info tags in $run_dir/lintian.log: $(grep -c '^I:' "$run_dir/lintian.log" || true))"

# `make install` puts the same files in the same places as the packages
# (Debian's zsh directory aside), and `make uninstall` removes all of them
# but the admin's /etc/portcullis.
stage=$run_dir/make-install
make -C "$distro_repo" --no-print-directory -s install DIST="$bin_dir" DESTDIR="$stage" PREFIX=/usr \
    ZSHCOMPDIR=/usr/share/zsh/vendor-completions >"$run_dir/make-install.log" 2>&1 ||
    fail "make install failed: $(tail -n 20 "$run_dir/make-install.log")"
(cd "$stage" && find . -type f | sed 's|^\.||' | sort) >"$run_dir/make-install.files"
for d in "$server_deb" "$client_deb"; do dpkg-deb --fsys-tarfile "$d" | tar -t; done |
    sed -n 's|^\./|/|; /\/$/d; /^\/usr\/share\/doc\//d; /^\/usr\/share\/lintian\//d; s|\.gz$||; p' |
    sort >"$run_dir/deb.files"
diff -u "$run_dir/deb.files" "$run_dir/make-install.files" >"$run_dir/layout.diff" ||
    fail "make install and the packages differ: $(cat "$run_dir/layout.diff")"
make -C "$distro_repo" --no-print-directory -s uninstall DESTDIR="$stage" PREFIX=/usr \
    ZSHCOMPDIR=/usr/share/zsh/vendor-completions >>"$run_dir/make-install.log" 2>&1 ||
    fail "make uninstall failed: $(tail -n 20 "$run_dir/make-install.log")"
left=$(cd "$stage" && find . -type f)
[ "$left" = ./etc/portcullis/initramfs.conf ] || fail "make uninstall left: $left"
ok "make install: the packages' $(wc -l <"$run_dir/deb.files") files in the same places; make uninstall keeps only /etc/portcullis"

# The packaged client does the unlocking.
dpkg-deb -x "$client_deb" "$run_dir/client"
PC=$run_dir/client/usr/bin/portcullis

# --- 2. install on the server root -------------------------------------------
ensure_keys "$bin_dir/portcullisd"
PASS=$(cat "$KEYS/passphrase")
src_root=$("$distro_here/rootfs.sh" initramfs-tools)
root=$run_dir/root
dlog "copying the initramfs-tools root"
cp -a "$src_root" "$root"
# Leftovers of tests/distro's source install into the shared root.
rm -rf "$root/etc/portcullis" "$root/usr/local/sbin/portcullisd" "$root/usr/local/sbin/portcullis-preflight" \
    "$root"/etc/initramfs-tools/{hooks,scripts/init-premount,scripts/init-bottom,conf.d}/portcullis \
    "$root/etc/initramfs/post-update.d/portcullis" "$root/usr/lib/portcullis"
prepare_guest_root "$root" "luks,discard,initramfs"
mkdir -p "$root/etc/cryptsetup-initramfs"
echo 'CRYPTSETUP=y' >"$root/etc/cryptsetup-initramfs/conf-hook"
mapfile -t kvers < <(cd "$root/lib/modules" && ls | sort -V)
kver=${kvers[-1]}
# The same disks as tests/distro's initramfs-tools flavour (same key: shared).
img=$distro_cache/img-initramfs-tools
make_disks "$root" "$img" "$(hash_of "$root/.complete" "$root/etc/crypttab" "$root/etc/fstab" \
    "$distro_here/guest" "$KEYS/passphrase")"
cp "$root/boot/vmlinuz-$kver" "$run_dir/vmlinuz"

chroot_apt() { # LOG APT-ARGS...
    local log=$1
    shift
    in_chroot "$root" apt-get -y -o Dpkg::Use-Pty=false "$@" >"$log" 2>&1 ||
        fail "apt-get $* failed: $(tail -n 20 "$log")"
}
# image_listing NAME: the image's file list, in $run_dir/NAME.list (a file,
# not a pipe: grep -q would end lsinitramfs with SIGPIPE under pipefail).
image_listing() {
    in_chroot "$root" lsinitramfs "/boot/initrd.img-$kver" >"$run_dir/$1.list" ||
        fail "lsinitramfs failed"
    echo "$run_dir/$1.list"
}
# rebuilt_all LOG: update-initramfs generated an image for every kernel.
rebuilt_all() {
    local k
    for k in "${kvers[@]}"; do
        grep -q "update-initramfs: Generating /boot/initrd.img-$k" "$1" ||
            fail "no image rebuilt for kernel $k: $(grep -i initramfs "$1")"
    done
    ok "images rebuilt for every installed kernel (${kvers[*]})"
}

cp "$server_deb" "$server_deb2" "$root/tmp/"
dlog "apt install ./${server_deb##*/}"
chroot_apt "$run_dir/install1.log" install "/tmp/${server_deb##*/}"
HOST_FP=$(sed -n 's/^portcullis-initramfs: its fingerprint: //p' "$run_dir/install1.log")
[ -n "$HOST_FP" ] || fail "install printed no host key fingerprint: $(cat "$run_dir/install1.log")"
ok "host key created on install, fingerprint printed: $HOST_FP"
[ "$(stat -c %a "$root/etc/portcullis/host_key")" = 600 ] || fail "host key is not mode 0600"
rebuilt_all "$run_dir/install1.log"
grep -q 'W: portcullis: .*NO remote (SSH) unlock' "$run_dir/install1.log" ||
    fail "unconfigured install: no warning from the hook: $(grep -i portcullis "$run_dir/install1.log")"
ok "unconfigured install: update-initramfs succeeded and warned there is no remote unlock"
for f in /usr/sbin/portcullisd /usr/sbin/portcullis-preflight /usr/lib/portcullis/portcullisd-initramfs \
    /usr/share/initramfs-tools/hooks/portcullis \
    /usr/lib/dracut/modules.d/95portcullis/module-setup.sh /usr/lib/initcpio/install/portcullis \
    /usr/share/man/man8/portcullisd.8.gz /usr/share/man/man8/portcullis-preflight.8.gz \
    /usr/share/man/man5/portcullisd.toml.5.gz \
    /etc/portcullis/initramfs.conf /usr/share/portcullis/portcullisd.toml; do
    [ -e "$root$f" ] || fail "$f not installed"
done
ok "listener, hooks for the three generators, man pages and default config installed"

dlog "configuring: default config, an authorized key, update-initramfs -u -k all"
cp "$root/usr/share/portcullis/portcullisd.toml" "$root/etc/portcullis/portcullisd.toml"
install -m 0644 "$KEYS/admin.pub" "$root/etc/portcullis/authorized_keys"
in_chroot "$root" update-initramfs -u -k all >"$run_dir/configure.log" 2>&1 ||
    fail "update-initramfs after configuring failed: $(cat "$run_dir/configure.log")"
grep -qF "host key $HOST_FP;" "$run_dir/configure.log" ||
    fail "the hook did not check the config: $(grep portcullis "$run_dir/configure.log")"
grep -qE '^(usr/)?sbin/portcullisd$' "$(image_listing configured)" || fail "the image lacks the listener"
ok "configured image holds the listener and passed portcullisd check"
# The image carries the initramfs build (listen only), not the full binary.
in_chroot "$root" sh -c "rm -rf /tmp/unpacked && unmkinitramfs /boot/initrd.img-$kver /tmp/unpacked" ||
    fail "unmkinitramfs failed"
imaged=$(find "$root/tmp/unpacked" -path '*/sbin/portcullisd' -type f | head -n1)
[ -n "$imaged" ] || fail "no sbin/portcullisd in the unpacked image"
cmp -s "$imaged" "$root/usr/lib/portcullis/portcullisd-initramfs" ||
    fail "the image's listener is not /usr/lib/portcullis/portcullisd-initramfs"
if in_chroot "$root" sh -c "${imaged#"$root"} keygen /tmp/k" 2>"$run_dir/imaged-keygen.err"; then
    fail "the image's listener ran keygen: it is not the initramfs build"
fi
grep -q 'not in the initramfs build' "$run_dir/imaged-keygen.err" ||
    fail "the image's listener refused keygen without saying why: $(cat "$run_dir/imaged-keygen.err")"
imaged_size=$(stat -c %s "$imaged")
rm -rf "$root/tmp/unpacked"
ok "the image's listener is the initramfs build: $imaged_size bytes, against $(stat -c %s "$root/usr/sbin/portcullisd") for the full portcullisd"

pc() { # SUBCOMMAND ARGS...: the packaged client, pinned to the printed fingerprint
    local sub=$1
    shift
    set +e
    "$PC" "$sub" --no-agent -i "$KEYS/admin" --fingerprint "$HOST_FP" \
        "127.0.0.1:$VM_PORT" "$@" >"$run_dir/out" 2>"$run_dir/err"
    rc=$?
    set -e
    cat "$run_dir/out" "$run_dir/err" >>"$run_dir/client.log"
}
boot() { # NAME
    cp "$root/boot/initrd.img-$kver" "$run_dir/$1.img"
    vm_start "$run_dir" "$1" "$run_dir/vmlinuz" "$run_dir/$1.img" \
        "root=/dev/mapper/root ro ip=dhcp" "$img/root.img" "$img/data.img"
}
real_system_up() {
    vm_wait PORTCULLIS-REAL-SYSTEM-UP 300 >/dev/null || fail "the real system did not come up (serial log $VM_LOG)"
    expect_serial PORTCULLIS-REAL-ROOT "/dev/mapper/root ext4" "root filesystem is the unlocked LUKS volume"
    expect_serial PORTCULLIS-REAL-DATA "/dev/mapper/data data-volume-ok" "data volume unlocked and mounted"
}
ssh_boot() { # NAME
    boot "$1"
    pc status --wait=300s
    [ "$rc" -eq 0 ] || fail "$1: status: exit $rc: $(cat "$run_dir/err")"
    pc unlock --passphrase-stdin <"$KEYS/passphrase"
    [ "$rc" -eq 0 ] || fail "$1: unlock: exit $rc: $(cat "$run_dir/out" "$run_dir/err")"
    ok "$1: unlocked over SSH with the packaged client: $(cat "$run_dir/out")"
    real_system_up
    vm_stop
}
trap vm_stop EXIT

dlog "boot 1: the installed package"
ssh_boot installed

# --- 3. upgrade ----------------------------------------------------------------
key_sum=$(sha256sum <"$root/etc/portcullis/host_key")
img_sum=$(sha256sum <"$root/boot/initrd.img-$kver")
dlog "apt install ./${server_deb2##*/} (upgrade)"
chroot_apt "$run_dir/install2.log" install "/tmp/${server_deb2##*/}"
grep -q "Unpacking portcullis-initramfs ($v2) over" "$run_dir/install2.log" ||
    fail "not an upgrade: $(grep -i portcullis "$run_dir/install2.log")"
[ "$(sha256sum <"$root/etc/portcullis/host_key")" = "$key_sum" ] || fail "the upgrade changed the host key"
! grep -q 'created the initramfs SSH host key' "$run_dir/install2.log" || fail "the upgrade made a new host key"
ok "upgrade kept the host key"
rebuilt_all "$run_dir/install2.log"
[ "$(sha256sum <"$root/boot/initrd.img-$kver")" != "$img_sum" ] || fail "the upgrade did not rewrite the image"
dlog "boot 2: after the upgrade, the same pinned fingerprint"
ssh_boot upgraded

# --- 4. purge --------------------------------------------------------------------
dlog "apt purge portcullis-initramfs"
chroot_apt "$run_dir/purge.log" purge portcullis-initramfs
rebuilt_all "$run_dir/purge.log"
[ ! -e "$root/etc/portcullis" ] || fail "purge left $(find "$root/etc/portcullis")"
ok "purge removed /etc/portcullis (config, host key, authorized keys)"
if grep -E 'portcullis' "$(image_listing purged)"; then
    fail "the image still holds portcullis files after purge"
fi
ok "the image no longer holds the listener"
dlog "boot 3: after purge, the console prompt unlocks"
boot purged
vm_wait 'Please unlock disk root' 180 >/dev/null || fail "no console prompt for root (serial log $VM_LOG)"
vm_type "$PASS"
vm_wait 'Please unlock disk data' 120 >/dev/null || fail "no console prompt for data (serial log $VM_LOG)"
vm_type "$PASS"
real_system_up
expect_serial PORTCULLIS-REAL-PROCS none "no listener in the booted system"
vm_stop
if grep -aqF -- "$PASS" "$run_dir"/*.log; then
    fail "the passphrase appears in a log under $run_dir"
fi
ok "passphrase absent from the serial logs and client output"

# --- 5. the client package on a plain Debian 12 root ------------------------------
# The minbase root of tests/distro plus what a workstation has for this:
# man-db and bash-completion (cached beside the distro roots).
base=$(ls -d "$distro_cache"/base-* | head -n1)
client_key=$(hash_of "$base/.complete" "man-db bash-completion")
client_root=$distro_cache/pkg-client-$client_key
if [ ! -f "$client_root/.complete" ]; then
    dlog "making the client root: minbase + man-db bash-completion"
    rm -rf "$distro_cache"/pkg-client-*
    cp -a "$base" "$client_root.tmp"
    rm -f "$client_root.tmp/.complete"
    {
        CHROOT_APT_ARCHIVES="$distro_cache/apt/archives" in_chroot "$client_root.tmp" apt-get update -qq &&
            CHROOT_APT_ARCHIVES="$distro_cache/apt/archives" in_chroot "$client_root.tmp" \
                apt-get install -y -qq --no-install-recommends man-db bash-completion
    } >"$run_dir/client-root.log" 2>&1 || fail "client root: apt-get failed: $(tail -n 20 "$run_dir/client-root.log")"
    echo "$client_key" >"$client_root.tmp/.complete"
    mv "$client_root.tmp" "$client_root"
fi
root=$run_dir/client-root
cp -a "$client_root" "$root"
cp "$client_deb" "$root/tmp/"
dlog "apt install ./${client_deb##*/} on a plain Debian 12 root"
chroot_apt "$run_dir/client-install.log" install "/tmp/${client_deb##*/}"
in_chroot "$root" portcullis --version >"$run_dir/client-version" || fail "portcullis --version failed"
ok "client installed: $(cat "$run_dir/client-version")"
in_chroot "$root" env MANPAGER=cat MANWIDTH=80 man portcullis >"$run_dir/man.txt" 2>&1 ||
    fail "man portcullis failed: $(cat "$run_dir/man.txt")"
grep -q '^NAME' "$run_dir/man.txt" && grep -q 'portcullis-unlock(1)' "$run_dir/man.txt" ||
    fail "man portcullis did not render its NAME and subcommands: $(head -n 20 "$run_dir/man.txt")"
in_chroot "$root" env MANPAGER=cat man portcullis-unlock 2>&1 | grep -q -- '--passphrase-stdin' ||
    fail "man portcullis-unlock lacks --passphrase-stdin"
ok "man portcullis renders ($(wc -l <"$run_dir/man.txt") lines) and links its subcommand pages"
# Bash as an interactive user has it: bash-completion's loader finds our file
# by the command's name; then the completion function answers for "un".
in_chroot "$root" bash -c '
    . /usr/share/bash-completion/bash_completion
    _completion_loader portcullis
    fn=$(complete -p portcullis | sed -n "s/.*-F \([^ ]*\).*/\1/p")
    COMP_WORDS=(portcullis un) COMP_CWORD=1 COMP_LINE="portcullis un" COMP_POINT=13
    "$fn" portcullis un portcullis
    printf "%s\n" "${COMPREPLY[@]}"' >"$run_dir/completion.txt" 2>&1 ||
    fail "bash completion failed: $(cat "$run_dir/completion.txt")"
[ "$(cat "$run_dir/completion.txt")" = unlock ] ||
    fail "bash completion of 'portcullis un' gave '$(cat "$run_dir/completion.txt")', expected 'unlock'"
ok "bash completes 'portcullis un<TAB>' to 'unlock'"
rm -rf "$run_dir/root" "$run_dir/client-root"
dlog "package tests passed in $((SECONDS - t0)) s"
