#!/usr/bin/env bash
# The Redis part of the Python and Go bindings: each binding starts its own
# redis-server on a free loopback port, attaches a node to an engine,
# publishes through a RedisPublisher and checks the exact frames. The Redis
# node is in the default build, so this is the same library as everywhere.
set -euo pipefail
cd "$(dirname "$0")/../.."

source scripts/need.sh
need_go
need python3:python3 cc:gcc,libc6-dev redis-server:redis-server ||
    echo "warning: could not install every package"
if ! command -v redis-server >/dev/null; then
    echo "SKIPPED: Redis binding tests (redis-server not installed and not installable)"
    exit 0
fi

echo "--- Python: bindings/python/tests/test_redis.py (installed package)"
venv="$PWD/target/py-venv"
# 40-python.sh leaves a venv with this checkout's package; build one when run
# alone, or when the sources changed since (a stale package would be tested).
stamp=$(python_source_stamp)
if [ -z "$stamp" ] || [ "$(cat "$venv/source-stamp" 2>/dev/null)" != "$stamp" ] ||
    ! "$venv/bin/python" -c 'import evroute, pytest' 2>/dev/null; then
    python_venv "$venv"
fi
status=0
(cd "$(mktemp -d)" && "$venv/bin/python" -m pytest -q -p no:cacheprovider -rs \
    "$OLDPWD/bindings/python/tests/test_redis.py") || status=$?
[ "$status" = 0 ] || { echo "pytest failed (exit status $status)"; exit 1; }

echo "--- Go: go test -run Redis"
cargo build --release --lib
go_env
cd bindings/go
go test -count=1 -v -run Redis .
echo "Redis binding tests passed"
