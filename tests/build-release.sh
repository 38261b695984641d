#!/usr/bin/env bash
# Release build: the listener statically linked (it goes into initramfs images
# that have no libc of ours), the client as usual. Prints the listener's path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
triple=x86_64-unknown-linux-gnu
# crt-static on the gnu target works with the machine's toolchain alone; the
# musl target may not be installable, so it is not required. Both binaries are
# built static: the client then runs on any x86_64 Linux too.
if ! RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$triple" --bins >&2; then
    echo "build-release.sh: static build failed; falling back to dynamic binaries" >&2
    cargo build --release --locked --target "$triple" --bins >&2
fi
echo "target/$triple/release/portcullisd"
