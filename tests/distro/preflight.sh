# shellcheck shell=bash disable=SC2034,SC2154 # sourced by run.sh and build-*.sh, which set distro_here, case_dir, img, PD, PC
# The preflight VM test (issue 9): break one thing at a time, check that
# `portcullis-preflight` (on the booted guest, as root over SSH) or
# `portcullis preflight` (from the host, over the guest system's OpenSSH)
# names it with its fix and the exit code 14, repair it, check that it
# passes (exit 0), and boot what it passed. Sourced, never run.
#
# initramfs-tools (no boot added; run.sh's boots are reordered):
#   - the guest root gets openssh-server (masked), a unit that starts the
#     system's network and sshd on port 2222 only with portcullis.test.sshd
#     and only after the report (guest/portcullis-test-sshd.service), the
#     admin key for root, and /etc/kernel/cmdline: the VM boots with
#     -kernel/-initrd (no boot loader), so preflight finds the image by the
#     installed kernel (/boot/initrd.img-REL) and the command line in
#     /etc/kernel/cmdline, as on a machine without GRUB entries;
#   - images are built host-side in the chroot (cheaper than
#     update-initramfs under TCG): initrd-nonic.img (virtio_net dropped by a
#     test hook), initrd-nokey.img (authorized_keys holds another key); they
#     reach the guest on a small read-only disk (pf-images.img, vdc), not
#     over SSH (18 MB each is slow under TCG);
#   - data-argon2.img: data.img with a second keyslot needing 1.5 GiB of
#     argon2 memory, added host-side (the VM has 1 GiB; cryptsetup inside
#     it could not make one);
#   - boot 1 (console unlock) boots with those disks; once the real system
#     is up, each case writes the broken image to /boot/initrd.img-REL or
#     the broken command line to /etc/kernel/cmdline, runs preflight on the
#     guest (or from the host), repairs, runs it again; the last state that
#     passed is compared byte for byte with what boot 2 then boots and
#     unlocks over SSH.
# mkinitcpio (no boot added): an image with `encrypt` beside `portcullis`,
# preflight on it in the chroot and the post hook's build-time verdict; the
# repaired image is the one the flavour's boots then unlock.

# The guest system's sshd port (the host side is VM_SYS_PORT, lib.sh).
PF_GUEST_SSH_PORT=2222
# Argon2 memory of the extra keyslot: more than the VM's 1 GiB.
PF_HEAVY_KIB=1572864

# pf_bin PORTCULLISD: the portcullis-preflight binary beside it.
pf_bin() { printf '%s/portcullis-preflight\n' "$(dirname "$1")"; }

# ---------------------------------------------------------------------------
# build side (build-initramfs-tools.sh, build-mkinitcpio.sh)
# ---------------------------------------------------------------------------

# pf_install_bin ROOT PORTCULLISD: portcullis-preflight where the
# generators' build-time hooks look for it: /usr/local/sbin, like the
# listener of a source install (the package's /usr/sbin stays free for
# tests/pkg, which copies this root).
pf_install_bin() {
    local bin
    bin=$(pf_bin "$2")
    [ -x "$bin" ] || die "no $bin: the preflight test needs portcullis-preflight beside portcullisd"
    install -D -m 0755 "$bin" "$1/usr/local/sbin/portcullis-preflight"
}

# pf_cmdline OUTDIR: the command line the test system boots with (its
# "boot entry"): the flavour's cmdline file and ip=dhcp.
pf_cmdline() { printf '%s ip=dhcp\n' "$(cat "$1/cmdline")"; }

# pf_prepare_root ROOT PORTCULLISD: the guest system's sshd (masked: it
# starts only through portcullis-test-sshd.service), the admin's key for
# root, /etc/kernel/cmdline, portcullis-preflight.
pf_prepare_root() {
    local root=$1
    rm -f "$root/etc/systemd/system/multi-user.target.wants/ssh.service" "$root/etc/systemd/system/sshd.service"
    ln -sfn /dev/null "$root/etc/systemd/system/ssh.service"
    install -m 0644 "$distro_here/guest/portcullis-test-sshd.service" "$root/etc/systemd/system/"
    ln -sfn ../portcullis-test-sshd.service \
        "$root/etc/systemd/system/multi-user.target.wants/portcullis-test-sshd.service"
    install -D -m 0644 "$distro_here/guest/portcullis-test.network" \
        "$root/etc/systemd/network/50-portcullis-test.network"
    install -d -m 0700 "$root/root/.ssh"
    install -m 0600 "$KEYS/admin.pub" "$root/root/.ssh/authorized_keys"
    mkdir -p "$root/etc/kernel"
    echo "root=/dev/mapper/root ro ip=dhcp" >"$root/etc/kernel/cmdline"
    pf_install_bin "$root" "$2"
}

# pf_build_images ROOT OUTDIR KVER PORTCULLISD: the broken images, built in
# the chroot like the good one (mkinitramfs), and what the guest test needs.
pf_build_images() {
    local root=$1 out=$2 kver=$3 pd=$4 t hook=$1/etc/initramfs-tools/hooks/zz-portcullis-test-drop-nic
    t=$SECONDS
    # A NIC driver missing from the image, as when MODULES=dep was built on
    # another machine: removed after every other hook, before depmod.
    cat >"$hook" <<'HOOK'
#!/bin/sh
# test only (tests/distro/preflight.sh): the image without virtio_net
case $1 in prereqs) exit 0 ;; esac
rm -f "$DESTDIR"/lib/modules/*/kernel/drivers/net/virtio_net.ko*
HOOK
    chmod 0755 "$hook"
    in_chroot "$root" mkinitramfs -o /tmp/initrd-nonic.img "$kver" >"$out/mkinitramfs-nonic.log" 2>&1 ||
        { rm -f "$hook"; fail "mkinitramfs (no NIC driver) failed: $(tail -n 5 "$out/mkinitramfs-nonic.log")"; }
    rm -f "$hook"
    mv "$root/tmp/initrd-nonic.img" "$out/initrd-nonic.img"
    # The admin's key missing: authorized_keys holds someone else's.
    mv "$root/etc/portcullis/authorized_keys" "$out/ak.saved"
    install -m 0644 "$KEYS/intruder.pub" "$root/etc/portcullis/authorized_keys"
    if ! in_chroot "$root" mkinitramfs -o /tmp/initrd-nokey.img "$kver" >"$out/mkinitramfs-nokey.log" 2>&1; then
        mv "$out/ak.saved" "$root/etc/portcullis/authorized_keys"
        fail "mkinitramfs (other key) failed: $(tail -n 5 "$out/mkinitramfs-nokey.log")"
    fi
    mv "$out/ak.saved" "$root/etc/portcullis/authorized_keys"
    mv "$root/tmp/initrd-nokey.img" "$out/initrd-nokey.img"
    echo "$kver" >"$out/kver"
    cp "$root/etc/ssh/ssh_host_ed25519_key.pub" "$out/system_host_key.pub"
    # The images and the preflight binary on a disk of their own (vdc).
    rm -rf "$out/pf-images" "$out/pf-images.img"
    mkdir "$out/pf-images"
    cp "$out/initrd.img" "$out/initrd-nonic.img" "$out/initrd-nokey.img" "$out/pf-images/"
    install -m 0755 "$(pf_bin "$pd")" "$out/pf-images/portcullis-preflight"
    truncate -s "$(($(du -sm "$out/pf-images" | cut -f1) + 16))M" "$out/pf-images.img"
    mkfs.ext4 -q -F -d "$out/pf-images" "$out/pf-images.img" || die "mkfs.ext4 pf-images.img failed"
    rm -rf "$out/pf-images"
    dlog "preflight: broken images built in $((SECONDS - t)) s"
}

# pf_build_verdict ROOT OUTDIR KVER: the build-time verdict. update-initramfs
# ran the post-update hook on the good image: its log must say so and name
# no failure. Then the same hook on the same image with the command line
# (/etc/kernel/cmdline in the chroot) broken: no ip= (initramfs-tools then
# tries DHCP: a warning) and ip=off (no network: REMOTE UNLOCK WILL FAIL);
# the hook exits 0 either way. The chroot sees the host's network, so
# nic-driver says nothing about the guest here; only network-config is
# asserted.
pf_build_verdict() {
    local root=$1 out=$2 kver=$3 hook=/etc/initramfs/post-update.d/portcullis log good
    [ -x "$root$hook" ] || fail "initramfs/install.sh did not install $hook"
    good=$(cat "$root/etc/kernel/cmdline")
    log=$(grep -E '^[IW]: portcullis: (preflight of|REMOTE UNLOCK)' "$out/update-initramfs.log") ||
        fail "update-initramfs printed no preflight verdict: $(cat "$out/update-initramfs.log")"
    if grep -qE '(FAIL|WARN) +network-config' "$out/update-initramfs.log"; then
        fail "build-time verdict on the good image names network-config: $(grep 'portcullis:' "$out/update-initramfs.log")"
    fi
    ok "build-time verdict on the good image: $log"
    pf_post_update() { # NAME CMDLINE
        echo "$2" >"$root/etc/kernel/cmdline"
        set +e
        in_chroot "$root" "$hook" "$kver" "/boot/initrd.img-$kver" >"$out/post-update-$1.log" 2>&1
        rc=$?
        set -e
        echo "$good" >"$root/etc/kernel/cmdline"
        [ "$rc" -eq 0 ] ||
            fail "the post-update hook exited $rc; a failing check must not stop the build: $(cat "$out/post-update-$1.log")"
    }
    pf_post_update noip "root=/dev/mapper/root ro"
    grep -qE '^W: portcullis: +WARN +network-config' "$out/post-update-noip.log" &&
        grep -q '^W: portcullis: preflight of .*: WARNINGS' "$out/post-update-noip.log" ||
        fail "no ip=: the post-update hook did not warn about network-config: $(cat "$out/post-update-noip.log")"
    ok "build-time verdict with no ip= (hook exit 0): $(grep -m1 'WARN *network-config' "$out/post-update-noip.log" | sed 's/  */ /g')"
    pf_post_update ipoff "root=/dev/mapper/root ro ip=off"
    grep -qE '^W: portcullis: +FAIL +network-config' "$out/post-update-ipoff.log" &&
        grep -q '^W: portcullis: REMOTE UNLOCK WILL FAIL' "$out/post-update-ipoff.log" ||
        fail "ip=off: the post-update hook did not say REMOTE UNLOCK WILL FAIL for network-config: $(cat "$out/post-update-ipoff.log")"
    ok "build-time verdict with ip=off (hook exit 0): $(grep -m1 'WILL FAIL' "$out/post-update-ipoff.log")"
}

# pf_heavy_disk OUTDIR: data-argon2.img, a copy of data.img with a second
# keyslot whose argon2id memory (PF_HEAVY_KIB) exceeds the VM's RAM, as on a
# disk formatted on a big machine. cryptsetup inside the 1 GiB guest could
# not make it, and on the host cryptsetup 2.6 silently caps --pbkdf-memory to
# half the FREE memory (which varies): so the slot is made with 64 MiB and
# its cost raised in the LUKS2 metadata (both header copies, checksums
# recomputed). That slot no longer opens with its passphrase; nothing tries.
# Cached with the disks.
pf_heavy_disk() {
    local out=$1 key
    key="$(cat "$out/.disks") $PF_HEAVY_KIB"
    [ "$(cat "$out/.disk-argon2" 2>/dev/null)" != "$key" ] || return 0
    rm -f "$out/.disk-argon2"
    cp --sparse=always "$out/data.img" "$out/data-argon2.img.tmp"
    printf 'an old passphrase with a heavy keyslot' >"$out/heavy.pass"
    cryptsetup luksAddKey --batch-mode --pbkdf argon2id --pbkdf-memory 65536 \
        --pbkdf-force-iterations 4 --pbkdf-parallel 2 --key-slot 1 --key-file "$KEYS/passphrase" \
        "$out/data-argon2.img.tmp" "$out/heavy.pass" || die "luksAddKey failed"
    rm -f "$out/heavy.pass"
    python3 - "$out/data-argon2.img.tmp" "$PF_HEAVY_KIB" <<'PY' || die "could not raise keyslot 1's argon2 memory"
import hashlib, json, struct, sys
path, kib = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    hdr_size = struct.unpack(">Q", f.read(16)[8:16])[0]
    for off in (0, hdr_size):  # primary and secondary header
        f.seek(off)
        area = bytearray(f.read(hdr_size))
        assert area[:6] in (b"LUKS\xba\xbe", b"SKUL\xba\xbe"), area[:6]
        meta = json.loads(area[4096:].rstrip(b"\0"))
        meta["keyslots"]["1"]["kdf"]["memory"] = kib
        text = json.dumps(meta, separators=(",", ":")).encode()
        assert len(text) < hdr_size - 4096
        area[4096:] = text + b"\0" * (hdr_size - 4096 - len(text))
        area[448:512] = b"\0" * 64
        area[448:480] = hashlib.sha256(area).digest()
        f.seek(off)
        f.write(area)
PY
    cryptsetup luksDump "$out/data-argon2.img.tmp" | grep -q "Memory: *$PF_HEAVY_KIB\$" ||
        die "keyslot 1 of data-argon2.img does not show $PF_HEAVY_KIB KiB: $(cryptsetup luksDump "$out/data-argon2.img.tmp" 2>&1 | grep -E 'Memory|rror')"
    cryptsetup open --test-passphrase --key-file "$KEYS/passphrase" "$out/data-argon2.img.tmp" ||
        die "data-argon2.img no longer opens with the test passphrase"
    mv "$out/data-argon2.img.tmp" "$out/data-argon2.img"
    echo "$key" >"$out/.disk-argon2"
}

# ---------------------------------------------------------------------------
# assertions on preflight's JSON: every check object with the id, wherever
# it sits (server report or the workstation's per-host object)
# ---------------------------------------------------------------------------

# pf_expect FILE ID STATUS FIX-ERE DESCRIPTION: every check ID in FILE has
# STATUS; on warn/fail its fix matches FIX-ERE (case-insensitive).
pf_expect() {
    local out
    out=$(python3 - "$@" <<'PY'
import json, re, sys
path, cid, want, fix_re, desc = sys.argv[1:6]
try:
    doc = json.load(open(path))
except Exception as e:
    print(f"FAIL {desc}: {path} is not JSON ({e}): {open(path).read()[:400]!r}")
    sys.exit(0)
checks = []
def walk(v):
    if isinstance(v, dict):
        if "id" in v and "status" in v:
            checks.append(v)
        for x in v.values():
            walk(x)
    elif isinstance(v, list):
        for x in v:
            walk(x)
walk(doc)
mine = [c for c in checks if c.get("id") == cid]
if not mine:
    print(f"FAIL {desc}: no check '{cid}' in {path}; checks: {[(c.get('id'), c.get('status')) for c in checks]}")
    sys.exit(0)
for c in mine:
    said = f"{cid} {c.get('status')}: {c.get('summary')}" + (f"; fix: {c['fix']}" if c.get("fix") else "")
    if c.get("status") != want:
        print(f"FAIL {desc}: expected {cid} {want}, got {said}")
        sys.exit(0)
    if want in ("warn", "fail"):
        if not c.get("fix"):
            print(f"FAIL {desc}: {cid} is {want} without a fix: {said}")
            sys.exit(0)
        if not re.search(fix_re, c["fix"], re.I):
            print(f"FAIL {desc}: the fix does not match /{fix_re}/: {said}")
            sys.exit(0)
print(f"ok {desc}: {said}")
PY
    )
    case $out in
        "ok "*) ok "${out#ok }" ;;
        *) fail "${out#FAIL }" ;;
    esac
}

# pf_not_passing FILE: the checks of FILE that are not pass or skip, one line.
pf_not_passing() {
    python3 - "$1" <<'PY'
import json, sys
try:
    doc = json.load(open(sys.argv[1]))
except Exception:
    print(open(sys.argv[1]).read()[:400]); sys.exit(0)
out = []
def walk(v):
    if isinstance(v, dict):
        if "id" in v and "status" in v and v["status"] not in ("pass", "skip"):
            out.append(f"{v['id']} {v['status']}: {v.get('summary')} (fix: {v.get('fix')})")
        for x in v.values(): walk(x)
    elif isinstance(v, list):
        for x in v: walk(x)
walk(doc)
print("; ".join(out) or "none")
PY
}

# pf_rc WANT FILE DESCRIPTION: the last preflight run ($rc) exited WANT.
pf_rc() {
    [ "$rc" -eq "$1" ] ||
        fail "$3: preflight exited $rc, expected $1; not passing: $(pf_not_passing "$2"); stderr: $(cat "$2.err" 2>/dev/null)"
    ok "$3 (exit $rc)"
}

# ---------------------------------------------------------------------------
# the running guest system (VM_SYS_PORT → guest port 2222)
# ---------------------------------------------------------------------------

# pf_home: a private HOME for the host's ssh and portcullis: known_hosts
# with the guest system's key on this boot's port, the admin key.
pf_home() {
    PF_HOME=$case_dir/pf-home
    mkdir -p "$PF_HOME/.ssh" "$PF_HOME/.config/portcullis"
    chmod 0700 "$PF_HOME" "$PF_HOME/.ssh"
    printf '[127.0.0.1]:%s %s\n' "$VM_SYS_PORT" "$(cut -d' ' -f1,2 "$img/system_host_key.pub")" \
        >"$PF_HOME/.ssh/known_hosts"
    cat >"$PF_HOME/.ssh/config" <<CFG
Host *
    IdentityFile $KEYS/admin
    IdentitiesOnly yes
    StrictHostKeyChecking yes
    UserKnownHostsFile $PF_HOME/.ssh/known_hosts
CFG
}

# The run log, for notes from functions whose stderr a caller captures.
exec {PF_LOG_FD}>&2

# gssh_once CMD: run CMD (a shell command line) on the guest system as root.
gssh_once() {
    HOME=$PF_HOME ssh -F "$PF_HOME/.ssh/config" -o BatchMode=yes -o ConnectTimeout=30 \
        -p "$VM_SYS_PORT" root@127.0.0.1 "$@"
}

# gssh CMD: gssh_once, tried again (3 tries in all) when ssh failed before
# it logged in. The guest runs in software emulation beside the rest of the
# run, and its sshd once took over 10 s to send its banner, seconds after
# it had answered twice (CI at 26f7713). A failure that early ran nothing
# on the guest and read none of stdin, so trying again changes nothing
# there; every other exit is the command's own and is returned as it is.
# stderr is passed on, so callers' redirections see what ssh said.
# The patterns are anchored to ssh's own lines, so a command's stderr cannot
# ask for a retry; the retry note goes to the run log (PF_LOG_FD), not to
# the stderr a caller captures.
gssh() {
    local try rc err=$case_dir/gssh.err
    for try in 1 2 3; do
        rc=0
        gssh_once "$@" 2>"$err" || rc=$?
        cat "$err" >&2
        [ "$rc" -eq 255 ] &&
            grep -qE '^(Connection timed out during banner exchange|kex_exchange_identification: |ssh: connect to host .*(refused|timed out))' "$err" ||
            return "$rc"
        dlog "ssh to the guest system failed before login (try $try of 3): $(tr '\n' ' ' <"$err")" 2>&"$PF_LOG_FD"
        [ "$try" -eq 3 ] || sleep 3
    done
    return "$rc"
}

# pf_wait_system: until the guest system's sshd answers; mounts the
# images disk (vdc) on /run/pf and installs portcullis-preflight from it.
pf_wait_system() {
    local deadline=$((SECONDS + 180)) t=$SECONDS
    pf_home
    until gssh_once true 2>"$case_dir/pf-ssh.err"; do
        [ "$SECONDS" -lt "$deadline" ] ||
            fail "the guest system's sshd did not answer on 127.0.0.1:$VM_SYS_PORT: $(tail -n 3 "$case_dir/pf-ssh.err") (serial log $VM_LOG)"
        vm_running || fail "the VM stopped (serial log $VM_LOG)"
        sleep 2
    done
    gssh 'mkdir -p /run/pf && mount -o ro /dev/vdc /run/pf &&
        install -m 0755 /run/pf/portcullis-preflight /usr/sbin/portcullis-preflight'
    ok "the guest system answers over SSH (host key pinned) after $((SECONDS - t)) s"
}

# pf_put_image NAME: /run/pf/NAME becomes the guest's /boot/initrd.img-REL.
pf_put_image() {
    gssh "cp /run/pf/$1 /boot/initrd.img-$PF_KVER.new && mv /boot/initrd.img-$PF_KVER.new /boot/initrd.img-$PF_KVER"
}

# pf_set_cmdline TEXT: the guest's /etc/kernel/cmdline.
pf_set_cmdline() { printf '%s\n' "$1" | gssh 'cat >/etc/kernel/cmdline'; }

# pf_guest NAME [ARGS]: portcullis-preflight --json on the guest, as root;
# JSON in $case_dir/pf-NAME.json, stderr beside it, exit code in $rc.
pf_guest() {
    local name=$1
    shift
    PF_OUT=$case_dir/pf-$name.json
    set +e
    gssh portcullis-preflight --json "$@" >"$PF_OUT" 2>"$PF_OUT.err"
    rc=$?
    set -e
}

# pf_remote NAME PIN: `portcullis preflight` from the host against the
# guest, an inventory host whose listener pin is PIN; its running system is
# reached by the stock ssh on VM_SYS_PORT as root. ssh is found on PATH as
# a wrapper that only adds `-F` with the test's config (admin key, the
# guest system's key in a test known_hosts): OpenSSH reads ~/.ssh from the
# passwd entry, not $HOME, and root's own must not be touched. JSON in
# $case_dir/pf-NAME.json, exit code in $rc.
pf_remote() {
    local name=$1 pin=$2
    PF_OUT=$case_dir/pf-$name.json
    mkdir -p "$case_dir/pf-bin"
    cat >"$case_dir/pf-bin/ssh" <<SH
#!/bin/sh
exec /usr/bin/ssh -F $PF_HOME/.ssh/config "\$@"
SH
    chmod 0755 "$case_dir/pf-bin/ssh"
    cat >"$case_dir/pf-inventory.toml" <<TOML
[host.pfguest]
address = "127.0.0.1"
port = $VM_PORT
fingerprint = "$pin"
system-port = $VM_SYS_PORT
identity = "$KEYS/admin"
TOML
    # --timeout 60s: the guest's sshd can be slow to send its banner (gssh).
    set +e
    PATH="$case_dir/pf-bin:$PATH" HOME=$PF_HOME XDG_CONFIG_HOME=$PF_HOME/.config "$PC" preflight \
        --inventory "$case_dir/pf-inventory.toml" --no-agent -l root --timeout 60s --json pfguest >"$PF_OUT" 2>"$PF_OUT.err"
    rc=$?
    set -e
}

# pf_step NAME: the time since the last step, for the log.
pf_step() {
    dlog "preflight: $1 took $((SECONDS - PF_T)) s"
    PF_T=$SECONDS
}

# ---------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------

# preflight_initramfs_tools: in run.sh's boot 1 once the real system is
# checked (VM still running, portcullis.test.sshd on its command line).
preflight_initramfs_tools() {
    local cmdline noip fp t0=$SECONDS
    PF_T=$SECONDS
    PF_KVER=$(cat "$img/kver")
    cmdline=$(pf_cmdline "$img")
    noip=$(cat "$img/cmdline")
    pf_wait_system
    pf_step "waiting for the guest system's sshd"

    # The next boot's image and command line as boot 2 boots them.
    pf_put_image initrd.img
    pf_set_cmdline "$cmdline"

    dlog "preflight 1: a LUKS2 keyslot needs more argon2 memory than the VM has"
    pf_guest argon2
    pf_rc 14 "$PF_OUT" "keyslot above the RAM: will fail"
    pf_expect "$PF_OUT" argon2-memory fail 'cryptsetup luksKillSlot /dev/vdb 1' "argon2 keyslot named with its fix"
    # The fix: a lighter slot with another passphrase, then this one
    # removed (luksConvertKey would need it opened, 1.5 GiB here). Its
    # passphrase is an old one here: remove the slot (-q: no passphrase of
    # another slot asked; cryptsetup notes "Nothing to read on input").
    gssh 'cryptsetup luksKillSlot -q /dev/vdb 1' </dev/null
    pf_guest argon2-repaired
    pf_rc 0 "$PF_OUT" "heavy keyslot removed: every check passes"
    pf_expect "$PF_OUT" argon2-memory pass '' "heavy keyslot removed"
    python3 - "$PF_OUT" "/boot/initrd.img-$PF_KVER" "$cmdline" <<'PY' || fail "preflight did not read the entry the test set up: $(cat "$PF_OUT")"
import json, sys
imgs = json.load(open(sys.argv[1]))["images"]
assert imgs and imgs[0]["image"] == sys.argv[2], imgs[0]["image"]
assert imgs[0].get("cmdline", "").strip() == sys.argv[3].strip(), imgs[0].get("cmdline")
PY
    ok "preflight read /boot/initrd.img-$PF_KVER with the command line of /etc/kernel/cmdline"
    pf_step "case argon2"

    dlog "preflight 2: virtio_net removed from the image"
    pf_put_image initrd-nonic.img
    pf_guest nonic
    pf_rc 14 "$PF_OUT" "no NIC driver: will fail"
    pf_expect "$PF_OUT" nic-driver fail 'virtio_net' "no NIC driver named with its fix"
    pf_put_image initrd.img
    pf_guest nonic-repaired
    pf_rc 0 "$PF_OUT" "NIC driver back: passes"
    pf_expect "$PF_OUT" nic-driver pass '' "NIC driver back"
    pf_step "case NIC driver"

    # initramfs-tools with no ip= tries DHCP on every interface: a warning
    # (exit 15); ip=off brings up no network: a failure.
    dlog "preflight 3: no ip= on the command line, then ip=off"
    pf_set_cmdline "$noip"
    pf_guest noip
    pf_rc 15 "$PF_OUT" "no ip=: warnings only"
    pf_expect "$PF_OUT" network-config warn 'ip=dhcp' "no ip= named with its fix"
    pf_set_cmdline "$noip ip=off"
    pf_guest ipoff
    pf_rc 14 "$PF_OUT" "ip=off: will fail"
    pf_expect "$PF_OUT" network-config fail 'ip=dhcp' "ip=off named with its fix"
    pf_set_cmdline "$cmdline"
    pf_guest noip-repaired
    pf_rc 0 "$PF_OUT" "ip=dhcp back: passes"
    pf_expect "$PF_OUT" network-config pass '' "ip=dhcp back"
    pf_step "case ip="

    dlog "preflight 4: the admin's key missing from the image (from the workstation)"
    pf_put_image initrd-nokey.img
    pf_remote nokey "$HOST_FP"
    pf_rc 14 "$PF_OUT" "admin key missing: will fail"
    pf_expect "$PF_OUT" client-key fail '/etc/portcullis/authorized_keys' "admin key missing named with its fix"
    pf_expect "$PF_OUT" pin pass '' "pin still right"
    pf_put_image initrd.img
    pf_remote nokey-repaired "$HOST_FP"
    pf_rc 0 "$PF_OUT" "admin key back: the workstation's preflight passes"
    pf_expect "$PF_OUT" client-key pass '' "admin key back"
    pf_step "case admin key"

    dlog "preflight 5: the client's pin differs from the image's host key"
    fp=$(ssh-keygen -lf "$KEYS/intruder.pub" | cut -d' ' -f2)
    pf_remote wrong-pin "$fp"
    pf_rc 14 "$PF_OUT" "stale pin: will fail"
    pf_expect "$PF_OUT" pin fail 'known-hosts pin' "stale pin named with its fix"
    pf_remote pin-repaired "$HOST_FP"
    pf_rc 0 "$PF_OUT" "right pin: passes"
    pf_expect "$PF_OUT" pin pass '' "right pin"
    pf_step "case pin"

    # What passed last is what boot 2 boots: checked in the guest, not assumed.
    gssh "cmp /boot/initrd.img-$PF_KVER /run/pf/initrd.img" ||
        fail "the guest's /boot/initrd.img-$PF_KVER is not the image boot 2 boots"
    [ "$(gssh 'cat /etc/kernel/cmdline')" = "$cmdline" ] ||
        fail "the guest's /etc/kernel/cmdline is not boot 2's: $(gssh 'cat /etc/kernel/cmdline')"
    ok "boot 2 boots what preflight passed: $(sha256sum "$img/initrd.img" | cut -c1-16)… with '$cmdline'"
    dlog "preflight: initramfs-tools part took $((SECONDS - t0)) s"
}

# preflight_mkinitcpio PORTCULLISD IMGDIR: after build-mkinitcpio.sh busybox
# (root, hooks, mkinitcpio installed; the good image in IMGDIR/initrd.img).
preflight_mkinitcpio() {
    local pd=$1 out=$2 root kver log t=$SECONDS
    root=$("$distro_here/rootfs.sh" mkinitcpio)
    kver=$(cd "$root/lib/modules" && ls | sort -V | tail -n1)
    log=$out/mkinitcpio-conflict.log
    dlog "preflight 6: mkinitcpio image with 'encrypt' beside 'portcullis'"
    sed -E 's/^HOOKS=\((.*) portcullis (.*)\)$/HOOKS=(\1 portcullis encrypt \2)/' \
        "$root/etc/mkinitcpio.conf" >"$root/tmp/pf-conflict.conf"
    grep -q '^HOOKS=(.* portcullis encrypt ' "$root/tmp/pf-conflict.conf" ||
        fail "could not add encrypt to HOOKS: $(grep HOOKS "$root/tmp/pf-conflict.conf")"
    rm -f "$root/tmp/pf-conflict.img"
    in_chroot "$root" mkinitcpio -c /tmp/pf-conflict.conf -k "$kver" -g /tmp/pf-conflict.img >"$log" 2>&1 ||
        fail "mkinitcpio with encrypt after portcullis failed (a preflight failure must not stop the build): $(tail -n 5 "$log")"
    grep -q '^W: portcullis: REMOTE UNLOCK WILL FAIL' "$log" && grep -qE '^W: portcullis: +FAIL +conflicting-hooks' "$log" ||
        fail "the post hook did not say REMOTE UNLOCK WILL FAIL for conflicting-hooks: $(grep -i 'post hook\|portcullis' "$log")"
    ok "build-time verdict (the build went on): $(grep -m1 'FAIL *conflicting-hooks' "$log" | sed 's/  */ /g')"
    set +e
    in_chroot "$root" /usr/local/sbin/portcullis-preflight --image /tmp/pf-conflict.img --kernel "$kver" \
        --only conflicting-hooks --json >"$case_dir/pf-conflict.json" 2>"$case_dir/pf-conflict.json.err"
    rc=$?
    set -e
    pf_rc 14 "$case_dir/pf-conflict.json" "encrypt beside portcullis: will fail"
    pf_expect "$case_dir/pf-conflict.json" conflicting-hooks fail 'encrypt' "encrypt hook named with its fix"
    # The chroot has the host's command line and network: only the hook
    # check is the image's own business here.
    grep -qE '^[IW]: portcullis: (preflight of|REMOTE UNLOCK)' "$out/mkinitcpio.log" ||
        fail "the good image's build printed no preflight verdict: $(grep -i 'portcullis' "$out/mkinitcpio.log")"
    if grep -E 'FAIL +conflicting-hooks' "$out/mkinitcpio.log"; then
        fail "the good image's build-time verdict names conflicting-hooks"
    fi
    set +e
    in_chroot "$root" /usr/local/sbin/portcullis-preflight --image /boot/initramfs-linux.img --kernel "$kver" \
        --only conflicting-hooks --json >"$case_dir/pf-conflict-repaired.json" 2>"$case_dir/pf-conflict-repaired.json.err"
    rc=$?
    set -e
    cmp -s "$root/boot/initramfs-linux.img" "$out/initrd.img" || fail "the image checked is not the one booted next"
    pf_rc 0 "$case_dir/pf-conflict-repaired.json" "HOOKS without encrypt (the image booted next): passes"
    pf_expect "$case_dir/pf-conflict-repaired.json" conflicting-hooks pass '' "no conflicting hook"
    rm -f "$root/tmp/pf-conflict.img" "$root/tmp/pf-conflict.conf"
    dlog "preflight: mkinitcpio part took $((SECONDS - t)) s"
}
