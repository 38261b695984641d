#!/usr/bin/env bash
# Release build of both binaries, statically linked with musl: the listener
# goes into initramfs images that carry no libc of ours, and a static client
# runs on any Linux of its architecture. Prints the folder it filled.
#
#   tests/build-release.sh                      this machine's architecture, into target/dist/
#   tests/build-release.sh aarch64-unknown-linux-musl
#                                               cross-built on x86_64, into target/dist/aarch64-unknown-linux-musl/
#
# It installs nothing and changes no toolchain (no apt-get, no rustup, no
# sudo): it checks what the build needs and, when something is missing,
# names each piece with the command that gets it and exits 1.
#
# PORTCULLIS_NO_RELAY=1: the listener without the outbound relay's client
# (cargo --no-default-features; about 54 KB zstd smaller; it refuses a
# [relay] section). PORTCULLIS_NO_MUSL=1: static glibc instead (native only; the listener is
# 3.3 MB instead of 2.5). PORTCULLIS_SMALL=1: the opt-in small listener,
# below (native only).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

no_relay=
[ "${PORTCULLIS_NO_RELAY:-}" != 1 ] || no_relay=1

die() { printf 'build-release.sh: %s\n' "$*" >&2; exit 1; }

host=$(rustc -vV | sed -n 's/^host: //p')
host_arch=${host%%-*}
triple=${1:-$host_arch-unknown-linux-musl}
[ $# -le 1 ] || die "one argument at most (a target triple); got $*"
arch=${triple%%-*}
case $triple in
    "$host_arch"-unknown-linux-musl) cross=false dist=target/dist ;;
    aarch64-unknown-linux-musl) [ "$host_arch" = x86_64 ] ||
        die "cross-building for $triple is set up from x86_64 only; on $host_arch build natively"
        cross=true dist=target/dist/$triple ;;
    *) die "unsupported target $triple: use $host_arch-unknown-linux-musl (the default) or, from x86_64, aarch64-unknown-linux-musl" ;;
esac

# The C compiler for ring (its C and assembly parts; no other dependency
# compiles C) and the linker. Natively musl-gcc; across, Debian's
# aarch64 gcc with its glibc headers (ring includes only string.h, stdlib.h
# and the compiler's own headers; the libc it links is musl's, from Rust's
# self-contained target files). The caller's own CC_*/linker settings win.
if $cross; then
    u=${triple//-/_}
    cc_var=CC_$u ar_var=AR_$u linker_var=CARGO_TARGET_${u^^}_LINKER
    export "$cc_var=${!cc_var:-$arch-linux-gnu-gcc}" "$ar_var=${!ar_var:-$arch-linux-gnu-ar}"
    export "$linker_var=${!linker_var:-$arch-linux-gnu-gcc}"
    cc=${!cc_var}
else
    cc=musl-gcc
fi

# Everything the build needs that is missing, as "what: command" lines.
missing=()
if $cross; then objcopy=$arch-linux-gnu-objcopy; else objcopy=objcopy; fi
if ! command -v "$objcopy" >/dev/null; then
    if $cross; then pkg=binutils-$arch-linux-gnu; else pkg=binutils; fi
    missing+=("$objcopy, to strip the listener's unwind tables: apt-get install $pkg")
fi
std_missing() { [ ! -d "$(rustc --print sysroot)/lib/rustlib/$1/lib" ]; }
if std_missing "$triple"; then
    missing+=("Rust's standard library for $triple: rustup target add $triple")
fi
if ! command -v "$cc" >/dev/null; then
    if $cross; then
        missing+=("a C compiler for $triple ($cc): apt-get install gcc-$arch-linux-gnu libc6-dev-arm64-cross")
    else
        missing+=("musl-gcc, for ring's C parts: apt-get install musl-tools")
    fi
elif ! printf '#include <string.h>\n#include <stdlib.h>\n' | "$cc" -E -x c - >/dev/null 2>&1; then
    missing+=("C library headers for $cc: apt-get install libc6-dev-arm64-cross")
fi
report_missing() { # what-this-build-is [hint]
    [ ${#missing[@]} -eq 0 ] && return 0
    {
        echo "build-release.sh: cannot build $1; missing:"
        printf '  - %s\n' "${missing[@]}"
        [ -z "${2:-}" ] || echo "$2"
        echo "(tests/build-release.sh installs nothing itself; .ci/run installs all of these on Debian 12)"
    } >&2
    return 1
}

# musl builds: relative relocations packed (RELR; musl >= 1.2.4 applies
# them in a static-pie, binutils >= 2.38 writes them), so the binaries keep
# their ASLR with a fraction of the .rela.dyn table (-35 KB zstd in the
# listener).
relr="-C link-arg=-Wl,-z,pack-relative-relocs"

build() { # triple [rustflags]
    # Chained: set -e does not apply inside a function called from `if !`.
    mkdir -p "$dist" &&
        RUSTFLAGS="${2:-}" cargo build --release --locked --target "$1" \
            --bin portcullis --bin portcullis-preflight >&2 &&
        # The listeners alone link without PT_GNU_EH_FRAME (see below);
        # targets of their own, so all stay fresh across calls. The full
        # portcullisd (listen, keygen, check) is what the system runs; the
        # initramfs build (listen only) is what the image hooks copy in.
        for listener in portcullisd portcullisd-initramfs; do
            RUSTFLAGS="${2:-}" cargo rustc --release --locked --target "$1" --bin "$listener" \
                ${no_relay:+--no-default-features} -- -C link-arg=-Wl,--no-eh-frame-hdr >&2 &&
                cp "target/$1/release/$listener" "$dist/" &&
                strip_unwind_tables "$dist/$listener" || return 1
        done &&
        cp "target/$1/release/portcullis" "target/$1/release/portcullis-preflight" "$dist/" &&
        echo "$1${2:+ ($2)}${no_relay:+ (listener without the relay)}" >"$dist/BUILD"
}

# The listener's unwind tables (about 80 KB of every image, zstd): it is
# built with panic = "abort", so nothing unwinds; a panic still prints its
# message, only RUST_BACKTRACE's stack trace comes out empty. Stable Rust
# links std's prebuilt tables whatever the flags (the small build makes none),
# so they go after linking, and the header that would point at them is not
# written. objcopy drops the PT_GNU_RELRO header with them:
# musl's static-pie start-up never applied it (no mprotect at start, checked
# with strace), so no protection is lost. The client keeps its tables.
strip_unwind_tables() { # binary
    "$objcopy" --remove-section=.eh_frame_hdr --remove-section=.eh_frame \
        --remove-section=.gcc_except_table "$1" "$1.tmp" && mv "$1.tmp" "$1"
}

# Opt-in "small" build (PORTCULLIS_SMALL=1): nightly Rust rebuilds std from
# source with panics that abort at once (no message, no backtrace code), no
# unwind tables, no panic locations, and std's size-optimized algorithms.
# Packages may ship it only where the whole test suite passed against it:
# PORTCULLIS_SMALL=1 tests/run-all.sh (docs/testing.md). A panic then
# ends the listener without a word; the stable build prints the message.
# Only the listener: panic hooks do not run under immediate-abort, and the
# client's hook puts the terminal's echo back (src/client/tty.rs), so the
# client comes from the stable build.
small() {
    if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
        missing+=("nightly Rust with its source: rustup toolchain install nightly --component rust-src --target $triple")
    fi
    report_missing "the small listener for $triple" || exit 1
    # Relative relocations packed (RELR, musl >= 1.2.4): a static-pie that
    # keeps its ASLR with a fraction of the .rela.dyn table.
    # Both listeners: the initramfs build is what images carry, the full
    # one what the tests that run the listener as a process start.
    RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort -Cforce-unwind-tables=no -Zlocation-detail=none -Clink-arg=-Wl,-z,pack-relative-relocs" \
        CARGO_TARGET_DIR=target/small cargo +nightly build -Zbuild-std=std,panic_abort \
        -Zbuild-std-features=optimize_for_size \
        --release --locked --target "$triple" --bin portcullisd --bin portcullisd-initramfs \
        ${no_relay:+--no-default-features} >&2
    build "$triple" "$relr"
    cp "target/small/$triple/release/portcullisd" "target/small/$triple/release/portcullisd-initramfs" "$dist/"
    echo "$triple (small listener: nightly build-std, panic immediate-abort, no unwind tables, optimize_for_size, RELR)${no_relay:+ (listener without the relay)}" \
        >"$dist/BUILD"
}

if [ "${PORTCULLIS_SMALL:-}" = 1 ]; then
    ! $cross || die "PORTCULLIS_SMALL=1 is for native builds only (it has not been tried across)"
    small
elif [ "${PORTCULLIS_NO_MUSL:-}" = 1 ]; then
    ! $cross || die "PORTCULLIS_NO_MUSL=1 is for native builds only; $triple is built with musl"
    gnu=$host_arch-unknown-linux-gnu
    if ! build "$gnu" "-C target-feature=+crt-static"; then
        echo "build-release.sh: the static glibc build failed; falling back to dynamic binaries" >&2
        build "$gnu"
    fi
else
    hint=
    $cross || hint="Or, without musl: PORTCULLIS_NO_MUSL=1 tests/build-release.sh (static glibc; the listener is 3.3 MB)."
    report_missing "$triple" "$hint" || exit 1
    build "$triple" "$relr"
fi
echo "$dist"
