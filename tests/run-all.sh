#!/usr/bin/env bash
# Every test: formatting, lints, unit and in-process tests, shell checks,
# and the QEMU end-to-end tests on a real kernel. CI runs exactly this.
#
# PORTCULLIS_SMALL=1 tests/run-all.sh: the same run against the opt-in small
# listener (tests/build-release.sh, PORTCULLIS_SMALL): the tests that start
# `portcullisd` or its initramfs build as a process get them through
# PORTCULLISD_BIN and PORTCULLISD_INITRAMFS_BIN, and every VM suite builds
# them through build-release.sh. Not in CI (no time for a second
# run): run it before shipping the small build.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Each step says how much disk is left: the VM suites write several GB of
# images, and a full disk shows up as some tool's write error.
step() {
    printf '\n### %s\n' "$*"
    df -Pm . | awk 'NR == 2 { printf "(disk: %d MiB free of %d MiB)\n", $4, $2 }'
}
# Which listener build the suite just finished tested (build-release.sh
# writes target/dist/BUILD); with PORTCULLIS_SMALL=1 anything but the small
# listener is a failure, not a silent fallback.
listener_tested() {
    local build
    build=$(cat target/dist/BUILD 2>/dev/null) || build="none (no target/dist/BUILD)"
    printf 'listener tested: %s\n' "$build"
    if [ "${PORTCULLIS_SMALL:-}" = 1 ] && [[ $build != *"small listener"* ]]; then
        echo "run-all.sh: PORTCULLIS_SMALL=1 but that was not the small listener" >&2
        exit 1
    fi
}

if [ "${PORTCULLIS_SMALL:-}" = 1 ]; then
    step "the small listener (PORTCULLIS_SMALL=1 tests/build-release.sh)"
    tests/build-release.sh >/dev/null
    listener_tested
    export PORTCULLISD_BIN=$PWD/target/dist/portcullisd
    export PORTCULLISD_INITRAMFS_BIN=$PWD/target/dist/portcullisd-initramfs
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings
step "cargo test"
cargo test --locked
step "cargo test --no-default-features: the listener without the relay refuses [relay]"
cargo test --locked --no-default-features --lib config::
step "shellcheck"
# Every tracked shell script: *.sh, and files whose first line is a sh/bash
# shebang (hooks and guest scripts have no extension).
mapfile -t scripts < <(git ls-files | while read -r f; do
    case $f in
        *.sh) echo "$f" ;;
        *) head -n1 "$f" 2>/dev/null | grep -qE '^#!.*(/|env )(ba)?sh( |$)' && echo "$f" ;;
    esac
done | sort -u)
shellcheck -S warning -x "${scripts[@]}"
step "aarch64: cross-built static binaries under qemu-aarch64 user emulation"
tests/arch/aarch64.sh
listener_tested
step "QEMU end-to-end: minimal image, portcullis and stock OpenSSH"
tests/vm/e2e.sh
listener_tested
if [ -x tests/distro/run.sh ]; then
    step "QEMU end-to-end: images built by initramfs-tools, dracut, mkinitcpio"
    tests/distro/run.sh
    listener_tested
fi
step "QEMU: the Debian packages installed, upgraded and purged with apt, booted and unlocked"
tests/pkg/run.sh
listener_tested
step "QEMU: portcullis rescue from a RAM rescue system to the main system by kexec"
tests/rescue/run.sh
step "all tests passed (listener: $(cat target/dist/BUILD))"
