#!/usr/bin/env bash
# Release build of both binaries, statically linked: the listener goes into
# initramfs images that carry no libc of ours, and a static client runs on
# any x86_64 Linux. Results are copied to target/dist/; prints that folder.
#
# musl gives the smallest listener (2.5 MB vs 3.3 MB with static glibc); its
# target and musl-gcc (for ring's C parts) may not be installable on every
# machine, so static glibc is the fallback, and a dynamic build the last one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dist=target/dist
mkdir -p "$dist"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
musl_ready() {
    rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl ||
        timeout 300 rustup target add x86_64-unknown-linux-musl >&2 || return 1
    command -v musl-gcc >/dev/null ||
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >&2 || return 1
}

build() { # triple [rustflags]
    RUSTFLAGS="${2:-}" cargo build --release --locked --target "$1" --bins >&2 &&
        cp "target/$1/release/portcullisd" "target/$1/release/portcullis" "$dist/" &&
        echo "$1${2:+ ($2)}" >"$dist/BUILD"
}

# Opt-in "small" build (PORTCULLIS_SMALL=1): nightly Rust rebuilds std from
# source with panics that abort at once (no message, no backtrace code), no
# unwind tables, no panic locations, and std's size-optimized algorithms. Packages may ship it only where the whole test suite
# passed against it (PORTCULLISD_BIN=target/dist/portcullisd cargo test
# --test daemon_cli, and the VM tests, which use target/dist). A panic then
# ends the listener without a word; the stable build prints the message.
# Only the listener: panic hooks do not run under immediate-abort, and the
# client's hook puts the terminal's echo back (src/client/tty.rs), so the
# client comes from the stable build.
small() {
    musl_ready && rustup component list --toolchain nightly --installed 2>/dev/null |
        grep -q '^rust-src' || {
        echo "build-release.sh: the small build needs: rustup toolchain install nightly" \
            "--component rust-src --target x86_64-unknown-linux-musl" >&2
        return 1
    }
    # Relative relocations packed (RELR, musl >= 1.2.4): a static-pie that
    # keeps its ASLR with a fraction of the .rela.dyn table.
    RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort -Cforce-unwind-tables=no -Zlocation-detail=none" \
        CARGO_TARGET_DIR=target/small cargo +nightly rustc -Zbuild-std=std,panic_abort \
        -Zbuild-std-features=optimize_for_size \
        --release --locked --target x86_64-unknown-linux-musl --bin portcullisd \
        -- -Clink-arg=-Wl,-z,pack-relative-relocs >&2 &&
        build x86_64-unknown-linux-musl &&
        cp target/small/x86_64-unknown-linux-musl/release/portcullisd "$dist/" &&
        echo "x86_64-unknown-linux-musl (small listener: nightly build-std, panic immediate-abort, no unwind tables, optimize_for_size, RELR)" \
            >"$dist/BUILD"
}

if [ "${PORTCULLIS_SMALL:-}" = 1 ]; then
    small || exit 1
elif [ "${PORTCULLIS_NO_MUSL:-}" != 1 ] && musl_ready && build x86_64-unknown-linux-musl; then
    :
elif build x86_64-unknown-linux-gnu "-C target-feature=+crt-static"; then
    echo "build-release.sh: musl unavailable; built static glibc binaries" >&2
else
    echo "build-release.sh: static builds failed; falling back to dynamic binaries" >&2
    build x86_64-unknown-linux-gnu
fi
echo "$dist"
