#!/usr/bin/env bash
# The Redis part of the Python and Go bindings (feature `redis`): each binding
# starts its own redis-server on a free loopback port, attaches a node to an
# engine, publishes through a RedisPublisher and checks the exact frames.
set -euo pipefail
cd "$(dirname "$0")/../.."

source scripts/need.sh
need python3:python3,python3-pip go:golang-go cc:gcc,libc6-dev redis-server:redis-server ||
    echo "warning: could not install every package"
if ! command -v redis-server >/dev/null; then
    echo "SKIPPED: Redis binding tests (redis-server not installed and not installable)"
    exit 0
fi
need_pytest

# The redis-enabled library lives in target/redis-lib, where the Go binding's
# evroute_redis build links it (README, "Running several nodes"): other parts rebuild
# target/release without the feature.
cargo build --release --all-features --lib
lib=target/redis-lib
mkdir -p "$lib"
cp target/release/libevroute.a target/release/libevroute.so "$lib/"

echo "--- Python: bindings/python/tests/test_redis.py"
export EVROUTE_LIB="$PWD/$lib/libevroute.so"
python3 -c 'import sys; sys.path.insert(0, "bindings/python"); import evroute
assert evroute.lib_has_redis(), evroute.lib_path()'
status=0
python3 -m pytest -q -p no:cacheprovider -rs bindings/python/tests/test_redis.py || status=$?
[ "$status" = 0 ] || { echo "pytest failed (exit status $status)"; exit 1; }

echo "--- Go: go vet and go test -tags evroute_redis -run Redis"
go_env
cd bindings/go
go vet -tags evroute_redis ./...
go test -count=1 -v -tags evroute_redis -run Redis .
echo "Redis binding tests passed"
