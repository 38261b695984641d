#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a set number of executions,
# one at a time under nice, and prints executions, executions per second and
# the result per target. With --cmin it then minimises each target's corpus
# (committed seeds plus what this run found) back into fuzz/corpus/NAME.
#
#   fuzz/run.sh [--runs N] [--max-time S] [--cmin] [TARGET...]
#
# N defaults to 10000000 executions per target; --max-time stops a target
# after S seconds even if N is not reached (the table shows what ran).
#
# Needs nightly and cargo-fuzz (rustup toolchain install nightly;
# cargo install cargo-fuzz). Without them it runs the stable smoke test
# (tests/fuzz_smoke.rs), which runs the same bodies over the corpus.
set -euo pipefail

runs=10000000
max_time=0
cmin=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --max-time) max_time="$2"; shift 2 ;;
        --cmin) cmin=1; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        -*) echo "fuzz/run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz_dir")
cd "$fuzz_dir"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "nightly or cargo-fuzz missing: running the stable smoke test instead" >&2
    cd "$root"
    exec nice -n 15 cargo test --test fuzz_smoke
fi

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

# No sanitizer: the crate is safe Rust (ASan would find nothing and cost 2-3x);
# release with debug assertions, so integer overflow panics too.
mkdir -p "$fuzz_dir/artifacts"
if ! nice -n 15 cargo +nightly fuzz build -s none >"$fuzz_dir/artifacts/build.log" 2>&1; then
    tail -n 20 "$fuzz_dir/artifacts/build.log" >&2
    echo "fuzz/run.sh: building the targets failed (log: fuzz/artifacts/build.log)" >&2
    exit 1
fi
bin_dir="$fuzz_dir/target/x86_64-unknown-linux-gnu/release"

printf '%-12s %12s %10s %8s  %s\n' target execs exec/s seconds result
failed=0
for t in "${targets[@]}"; do
    work="$fuzz_dir/corpus-work/$t"
    art="$fuzz_dir/artifacts/$t"
    mkdir -p "$work" "$art"
    log="$art/run.log"
    start=$(date +%s)
    set +e
    nice -n 15 "$bin_dir/$t" "$work" "$fuzz_dir/corpus/$t" \
        -runs="$runs" -max_total_time="$max_time" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
        -print_final_stats=1 -artifact_prefix="$art/" >"$log" 2>&1
    rc=$?
    set -e
    secs=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    if [ "$rc" -eq 0 ]; then
        result=clean
    else
        failed=1
        crash=$(find "$art" -maxdepth 1 -type f ! -name run.log | head -n 1)
        result="FAILED (exit $rc) ${crash:-see $log}"
    fi
    printf '%-12s %12s %10s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$secs" "$result"
    if [ "$cmin" -eq 1 ] && [ "$rc" -eq 0 ]; then
        merged="$fuzz_dir/corpus-work/$t.min"
        rm -rf "$merged" && mkdir -p "$merged"
        nice -n 15 "$bin_dir/$t" -merge=1 -max_len=4096 "$merged" \
            "$fuzz_dir/corpus/$t" "$work" >"$art/cmin.log" 2>&1
        rm -rf "${fuzz_dir:?}/corpus/$t" && mv "$merged" "$fuzz_dir/corpus/$t"
        echo "  corpus/$t: $(find "corpus/$t" -type f | wc -l) files, $(du -sk "corpus/$t" | cut -f1) KiB" >&2
    fi
done
exit "$failed"
