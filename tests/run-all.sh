#!/usr/bin/env bash
# Every test: formatting, lints, unit and in-process tests, shell checks,
# and the QEMU end-to-end tests on a real kernel. CI runs exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n### %s\n' "$*"; }

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
step "QEMU end-to-end: minimal image, portcullis and stock OpenSSH"
tests/vm/e2e.sh
if [ -x tests/distro/run.sh ]; then
    step "QEMU end-to-end: images built by initramfs-tools, dracut, mkinitcpio"
    tests/distro/run.sh
fi
step "QEMU: the Debian packages installed, upgraded and purged with apt, booted and unlocked"
tests/pkg/run.sh
step "QEMU: portcullis rescue from a RAM rescue system to the main system by kexec"
tests/rescue/run.sh
step "all tests passed"
