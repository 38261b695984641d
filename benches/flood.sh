#!/usr/bin/env bash
# The admission goal at full size against the release binaries: 300 idle,
# 100 garbage and 50 slowloris connections from other loopback addresses
# and then from the admin's own, while the admin runs `portcullis status`.
# Prints figures (success rate, times, listener RSS, log lines); no
# thresholds. tests/admission.rs is the CI-sized regression test.
#
# Usage: benches/flood.sh [SOURCES|each] [MAX_UNAUTHENTICATED]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077
# Hundreds of sockets held at once, on both ends.
ulimit -n 8192 2>/dev/null || true
bin=$(tests/build-release.sh)
python3 benches/flood.py "$bin/portcullisd" "$bin/portcullis" "$work" "${1:-10}" "${2:-64}"
