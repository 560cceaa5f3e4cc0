#!/usr/bin/env bash
# The full test suite: the README's test command. Installs what it needs.
# Each part lives in scripts/test.d/NN-name.sh and runs in name order.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

for part in scripts/test.d/*.sh; do
    echo "==> ${part}"
    bash "$part"
done
echo "==> all test parts passed"
