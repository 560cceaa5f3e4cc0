#!/usr/bin/env bash
# Fuzz smoke test: builds the cargo-fuzz targets (AddressSanitizer) and runs
# each briefly on its seed corpus. Stable toolchain: RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz pass its nightly-only flags (-Zsanitizer=address). New corpus
# entries go to target/fuzz-corpus, never into the committed seeds.
# FUZZ_SECONDS sets the time per target (default 12: five targets share the
# minute four had).
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
source scripts/need.sh
need cc:gcc,libc6-dev c++:g++

export RUSTC_BOOTSTRAP=1
seconds=${FUZZ_SECONDS:-12}
cargo fuzz build
for target in event_parse extract_diff channel_message subscription abi_sequence; do
    echo "--- fuzz $target for ${seconds}s"
    work=target/fuzz-corpus/$target
    mkdir -p "$work"
    log=target/fuzz-corpus/$target.log
    if ! cargo fuzz run "$target" "$work" "fuzz/corpus/$target" -- \
        -dict=fuzz/json.dict -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 80 "$log"
        echo "fuzz target $target failed: the crashing input is under fuzz/artifacts/$target"
        exit 1
    fi
    grep -E '^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec)' "$log"
done
echo "fuzz smoke test passed"
