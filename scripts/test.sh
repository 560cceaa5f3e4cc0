#!/usr/bin/env bash
# The full test suite: the README's test command. Installs what it needs.
# Each part lives in scripts/test.d/NN-name.sh and runs in name order.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# Every part builds with --all-features: one feature set means the release
# dependencies are compiled once for the whole suite, not once per part.

timings=()
for part in scripts/test.d/*.sh; do
    echo "==> ${part}"
    start=$SECONDS
    bash "$part"
    timings+=("$(printf '%5ds  %s' $((SECONDS - start)) "$part")")
done
printf '%s\n' "==> time per part:" "${timings[@]}"
echo "==> all test parts passed"
