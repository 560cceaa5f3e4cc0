#!/usr/bin/env bash
# Python bindings (bindings/python, ctypes over target/release/libevroute.so):
# pytest covers the API, threads, GC/leaks, asyncio and the example SSE server.
set -euo pipefail
cd "$(dirname "$0")/../.."

source scripts/need.sh
need python3:python3,python3-pip
need_pytest

cargo build --release --lib --all-features
export EVROUTE_LIB="$PWD/target/release/libevroute.so"
status=0
python3 -m pytest -q -p no:cacheprovider bindings/python/tests || status=$?
# pytest exits 5 when it collected no tests: that is a failure here.
[ "$status" = 0 ] || { echo "pytest failed (exit status $status)"; exit 1; }
echo "Python binding tests passed"
