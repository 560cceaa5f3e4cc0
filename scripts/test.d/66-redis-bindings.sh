#!/usr/bin/env bash
# The Redis part of the Python and Go bindings (feature `redis`): each binding
# starts its own redis-server on a free loopback port, attaches a node to an
# engine, publishes through a RedisPublisher and checks the exact frames.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v python3 >/dev/null || need+=(python3 python3-pip)
command -v go >/dev/null || need+=(golang-go)
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
    sudo_=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo_ apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${need[@]}" >/dev/null \
        || echo "warning: could not install ${need[*]}"
fi
if ! command -v redis-server >/dev/null; then
    echo "SKIPPED: Redis binding tests (redis-server not installed and not installable)"
    exit 0
fi
if ! python3 -c 'import pytest' 2>/dev/null; then
    # Debian's system Python refuses plain pip installs (PEP 668).
    python3 -m pip install --quiet pytest 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages pytest
fi

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
export GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
writable() { mkdir -p "$1" 2>/dev/null && [ -w "$1" ]; }
writable "$(go env GOPATH)" || export GOPATH="$scratch/gopath"
writable "$(go env GOCACHE)" || export GOCACHE="$scratch/gocache"
cd bindings/go
go vet -tags evroute_redis ./...
go test -count=1 -v -tags evroute_redis -run Redis .
echo "Redis binding tests passed"
