#!/usr/bin/env bash
# Python bindings (bindings/python, ctypes over target/release/libevroute.so):
# pytest covers the API, threads, GC/leaks, asyncio and the example SSE server.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v python3 >/dev/null || {
    sudo_=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq python3 python3-pip
}
if ! python3 -c 'import pytest' 2>/dev/null; then
    # Debian's system Python refuses plain pip installs (PEP 668).
    python3 -m pip install --quiet pytest 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages pytest
fi

cargo build --release --lib --all-features
export EVROUTE_LIB="$PWD/target/release/libevroute.so"
status=0
python3 -m pytest -q -p no:cacheprovider bindings/python/tests || status=$?
# pytest exits 5 when it collected no tests: that is a failure here.
[ "$status" = 0 ] || { echo "pytest failed (exit status $status)"; exit 1; }
echo "Python binding tests passed"
