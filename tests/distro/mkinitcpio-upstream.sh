# shellcheck shell=bash disable=SC2034,SC2154 # variables come from and go to lib.sh users
# Upstream mkinitcpio on the Debian 12 test root (sourced, never run).
#
# mkinitcpio is packaged by no registry reachable here (not Debian, crates.io,
# PyPI or npm), so the tests read Arch's unmodified source from
#   $PORTCULLIS_MKINITCPIO_SRC   a source tree or a .tar.gz of one, else
#   REPO/../shared/third_party/mkinitcpio-*.tar.gz
# and skip the mkinitcpio flavour, saying so, when neither exists.
#
#   mkinitcpio_src              prints the source to use, or nothing
#   mkinitcpio_install ROOT SRC installs it into ROOT with the Debian 12
#                               adaptation below; logs each adaptation
#
# The adaptation, all of it our code (upstream's files are copied, then only
# their meson placeholders are filled in, plus one filter on list entries):
#  1. Placeholders as meson fills them on Arch (version, /usr/lib/initcpio,
#     /etc/initcpio, udevd, systemd-tmpfiles), except PATH: Debian keeps
#     cryptsetup, blkid, switch_root, mkswap in /usr/sbin, which on Arch is
#     a symlink to bin, so @BINDIR@ becomes "/usr/bin:/usr/sbin".
#  2. Arch paths that Debian has elsewhere become symlinks in the test root
#     (multiarch libraries such as /usr/lib/libgcc_s.so.1, sulogin and
#     swapon in /usr/sbin, 13-dm-disk.rules); /usr/lib/initcpio/busybox is
#     Debian's busybox (dynamic: its ash, like Arch's, runs no applet without
#     a link); 10-dm.rules is Debian's 55-dm.rules plus db_persist for dm
#     devices (see below).
#  3. hwdb: v41 adds /usr/lib/udev/hwdb.bin and /etc/udev/hwdb.bin and counts
#     a missing one as an error; Debian ships only the first, so the test
#     root gets a copy as the second.
#  4. In the hooks the tests use: units, binaries and rules that systemd 252
#     does not have (it predates
#     v41's list: systemd-executor, systemd-validatefs, systemd-bsod, the
#     breakpoint units, ...) or Debian does not ship are dropped from the
#     install hooks' lists; each is logged. Nothing else in the hooks changes.
#  5. The test adds one build hook of its own, arch-busybox (after base), that
#     removes every busybox link Arch's mkinitcpio-busybox does not have
#     ($PORTCULLIS_ARCH_APPLETS, else ../shared/third_party/
#     arch-mkinitcpio-busybox-applets.txt: upstream facts, not copied here).

mkinitcpio_src() {
    local s
    if [ -n "${PORTCULLIS_MKINITCPIO_SRC:-}" ]; then
        [ -e "$PORTCULLIS_MKINITCPIO_SRC" ] ||
            die "PORTCULLIS_MKINITCPIO_SRC=$PORTCULLIS_MKINITCPIO_SRC does not exist"
        echo "$PORTCULLIS_MKINITCPIO_SRC"
        return
    fi
    for s in "$distro_repo"/../shared/third_party/mkinitcpio-*.tar.gz; do
        [ -f "$s" ] && { echo "$s"; return 0; }
    done
    return 0
}

# mkinitcpio_install ROOT SRC
mkinitcpio_install() {
    local root=$1 src=$2 tmp top version lib=/usr/lib/initcpio f p name
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now
    trap "rm -rf '$tmp'" RETURN
    if [ -d "$src" ]; then
        cp -a "$src/." "$tmp/src"
    else
        mkdir "$tmp/src"
        tar -xzf "$src" -C "$tmp/src" --strip-components=1
    fi
    top=$tmp/src
    for f in mkinitcpio lsinitcpio functions init init_functions install/base install/systemd; do
        [ -f "$top/$f" ] || die "$src is not a mkinitcpio source tree (no $f)"
    done
    # meson asks git; a source without .git: its CHANGELOG's latest entry.
    version=$(sed -n 's/^CHANGES WITH v\([0-9][0-9.]*\).*/\1/p' "$top/CHANGELOG" 2>/dev/null | head -n1)
    version=${version:-unknown}

    # 1. Placeholders.
    subst() { # IN OUT MODE
        sed -e "s|@VERSION@|$version|g" -e 's|@BINDIR@|/usr/bin:/usr/sbin|g' \
            -e 's|@SYSCONFDIR@|/etc|g' -e "s|@INITCPIO_LIBDIR@|$lib|g" \
            -e 's|@INITCPIO_SYSCONFDIR@|/etc/initcpio|g' -e 's|@VCONSOLE_CONF@|/etc/vconsole.conf|g' \
            -e 's|@UDEVD_PATH@|/usr/lib/systemd/systemd-udevd|g' \
            -e 's|@TMPFILES_PATH@|/usr/bin/systemd-tmpfiles|g' "$1" >"$2"
        chmod "$3" "$2"
    }
    rm -rf "${root:?}$lib" "$root/etc/initcpio"
    mkdir -p "$root$lib/install" "$root$lib/hooks" "$root$lib/udev" "$root/etc/initcpio/install" \
        "$root/etc/initcpio/hooks" "$root/etc/initcpio/post"
    subst "$top/mkinitcpio" "$root/usr/bin/mkinitcpio" 0755
    subst "$top/lsinitcpio" "$root/usr/bin/lsinitcpio" 0755
    for f in functions init init_functions shutdown; do
        [ -f "$top/$f" ] && subst "$top/$f" "$root$lib/$f" 0644
    done
    for f in "$top"/install/* "$top"/hooks/*; do
        case ${f##*/} in meson.build) continue ;; esac
        p=${f#"$top"/}
        subst "$f" "$root$lib/$p" 0644
    done
    for f in "$top"/udev/*.rules; do
        subst "$f" "$root$lib/udev/${f##*/}" 0644
    done
    dlog "upstream mkinitcpio $version installed from $src"

    # 2. Arch paths in the Debian root.
    # A copy: base adds it as /bin/busybox (which is usr/bin/busybox in the
    # image); a symlink to /usr/bin/busybox would point at itself there.
    install -m 0755 "$root/usr/bin/busybox" "$root$lib/busybox"
    arch_link() { # ARCH-PATH DEBIAN-PATH
        if [ ! -e "$root$1" ] && [ -e "$root$2" ]; then
            mkdir -p "$root$(dirname "$1")"
            ln -s "$2" "$root$1"
            echo "$1 -> $2"
        fi
    }
    {
        for name in libgcc_s.so.1 libkmod.so.2; do
            arch_link "/usr/lib/$name" "/usr/lib/x86_64-linux-gnu/$name"
        done
        arch_link /usr/lib/ossl-modules/legacy.so /usr/lib/x86_64-linux-gnu/ossl-modules/legacy.so
        for name in sulogin swapon swapoff; do
            arch_link "/usr/bin/$name" "/usr/sbin/$name"
        done
        # Debian renames lvm2's 13-dm-disk.rules (10-dm.rules: below).
        arch_link /usr/lib/udev/rules.d/13-dm-disk.rules /usr/lib/udev/rules.d/60-persistent-storage-dm.rules
        for name in libcryptsetup-token-systemd-fido2.so libcryptsetup-token-systemd-tpm2.so; do
            arch_link "/usr/lib/cryptsetup/$name" "/usr/lib/x86_64-linux-gnu/cryptsetup/$name"
        done
    } | while read -r p; do dlog "adapted: Arch path $p"; done

    # Debian's lvm2 rules keep no udev database of dm devices across
    # switch_root (Debian's generators add their own db_persist rule; so did
    # the old harness). mkinitcpio v41 adds none, so on Arch that comes from
    # its device-mapper rules. Without it the booted system's coldplug sees
    # the dm devices as not ready and waits forever for a non-root volume.
    if [ -e "$root/usr/lib/udev/rules.d/55-dm.rules" ]; then
        rm -f "$root/usr/lib/udev/rules.d/10-dm.rules"
        {
            cat "$root/usr/lib/udev/rules.d/55-dm.rules"
            echo '# portcullis test adaptation: keep dm devices across switch_root'
            echo 'SUBSYSTEM=="block", KERNEL=="dm-[0-9]*", ACTION=="add|change", OPTIONS+="db_persist"'
        } >"$root/usr/lib/udev/rules.d/10-dm.rules"
        dlog "adapted: /usr/lib/udev/rules.d/10-dm.rules = Debian's 55-dm.rules + db_persist for dm devices"
    fi

    # 3. hwdb.
    if [ ! -e "$root/etc/udev/hwdb.bin" ] && [ -e "$root/usr/lib/udev/hwdb.bin" ]; then
        cp "$root/usr/lib/udev/hwdb.bin" "$root/etc/udev/hwdb.bin"
        dlog "adapted: /etc/udev/hwdb.bin copied from /usr/lib/udev/hwdb.bin"
    fi

    # 4. Entries systemd 252 (or Debian) does not have: a line holding only a
    # path or a unit/rule/conf name (a list entry, or one add_file/add_binary
    # of a single path), quoted or not, whose file is absent from the root.
    python3 - "$root" "$root$lib/install" <<'PY' | while read -r p; do dlog "adapted: $p"; done
import glob, os, re, sys
root, d = sys.argv[1], sys.argv[2]
item = re.compile(r"^(\s*)(?:(?:map )?add_(?:file|binary) )?['\"]?([^'\"\s\\]+)['\"]?(\s*\\)?\s*$")
def exists(name):
    if name.startswith('/'):
        return bool(glob.glob(root + name))
    for base in ('/usr/lib/systemd/system/', '/usr/lib/udev/rules.d/', '/usr/lib/tmpfiles.d/'):
        if os.path.exists(root + base + name):
            return True
    return False
# Only the hooks the tests use.
for hook in ('base', 'udev', 'modconf', 'block', 'filesystems', 'encrypt', 'systemd', 'sd-encrypt'):
    path = os.path.join(d, hook)
    lines = open(path).read().split('\n')
    out, dropped, in_help = [], [], False
    for line in lines:
        # Help texts are heredocs: prose, not lists.
        if re.search(r'<<\s*\'?HELPEOF', line):
            in_help = True
        elif line.strip() == 'HELPEOF':
            in_help = False
        m = None if in_help else item.match(line)
        if m:
            name = m.group(2)
            unitlike = re.search(r'\.(service|target|socket|path|rules|conf|so(\.\d+)*)$', name)
            if (name.startswith('/') or unitlike) and not exists(name):
                dropped.append(name)
                continue
        out.append(line)
    if dropped:
        # A list must not end in a dangling backslash.
        for i, l in enumerate(out):
            if l.rstrip().endswith('\\') and (i + 1 == len(out) or not out[i + 1].strip()):
                out[i] = l.rstrip()[:-1].rstrip()
        open(path, 'w').write('\n'.join(out))
        for n in dropped:
            print(f"install/{hook}: dropped {n} (absent on Debian 12)")
PY

    # 5. Only Arch's applets.
    local applets=${PORTCULLIS_ARCH_APPLETS:-$distro_repo/../shared/third_party/arch-mkinitcpio-busybox-applets.txt}
    [ -f "$applets" ] ||
        die "Arch's busybox applet list not found at $applets: set PORTCULLIS_ARCH_APPLETS to it"
    install -m 0644 "$applets" "$root/etc/initcpio/arch-busybox-applets.txt"
    cat >"$root/etc/initcpio/install/arch-busybox" <<'HOOK'
#!/bin/bash
# Test-only: keep only the busybox links Arch's mkinitcpio-busybox has.
build() {
    local l n=0
    for l in "$BUILDROOT"/usr/bin/*; do
        [[ -L $l && $(readlink "$l") == busybox ]] || continue
        grep -qxF "${l##*/}" /etc/initcpio/arch-busybox-applets.txt && continue
        rm -f "$l"
        n=$((n + 1))
    done
    plain "arch-busybox: removed $n busybox links Arch does not have"
}
HOOK
}

# The test's partitioned root disk: GPT, one partition holding the LUKS
# root, named as Arch installs often name it.
ROOT_PARTUUID=5a1e0000-0000-4000-8000-0000000000b1
ROOT_PARTLABEL=cryptroot
