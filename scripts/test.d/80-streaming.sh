#!/usr/bin/env bash
# evroute-streaming end to end (bindings/go/cmd/evroute-streaming/e2e_test.go): the
# server binary against a throw-away Postgres cluster loaded with tests/mastodon-db, a
# real redis-server, and real clients (net/http SSE, curl -N, Mastodon.py, a WebSocket
# client doing the web UI's multiplexing). Installs what is missing: Debian postgresql,
# redis-server, curl; pip Mastodon.py; Go modules from the proxy (pinned by go.sum).
set -euo pipefail
cd "$(dirname "$0")/../.."

source scripts/need.sh
need_go
need cc:gcc,libc6-dev redis-server:redis-server curl:curl python3:python3,python3-pip
if ! python3 -c 'import mastodon' 2>/dev/null; then
    python3 -m pip install --quiet Mastodon.py 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages Mastodon.py
fi

# The library the evroute_inrepo build (go_env) links; it carries the Redis node.
cargo build --release --all-features --lib

go_env
scratch=$(mktemp -d)
chmod 755 "$scratch"
cleanup() {
    mastodon_pg_stop "$scratch"
    rm -rf "$scratch" "$go_scratch"
}
trap cleanup EXIT

mastodon_pg "$scratch" 20

cd bindings/go
go build -o "$scratch/evroute-streaming" ./cmd/evroute-streaming
"$scratch/evroute-streaming" --help >"$scratch/help.txt"
grep -q EVROUTE_FILTER_REFRESH_S "$scratch/help.txt"
status=0
EVS_E2E_BIN="$scratch/evroute-streaming" \
EVS_E2E_DATABASE_URL="postgres://postgres@127.0.0.1:$pgport/mastodon" \
EVS_E2E_MASTODON_PY=1 \
    go test -count=1 -v -run TestEndToEnd ./cmd/evroute-streaming >"$scratch/e2e.log" 2>&1 || status=$?
# The servers' own logs stay out of the way unless something failed.
grep -E '^\s*(=== RUN|--- |PASS|FAIL|ok|e2e_test)' "$scratch/e2e.log" || true
if [ "$status" != 0 ]; then
    echo "--- the whole log"
    cat "$scratch/e2e.log"
    exit 1
fi
echo "evroute-streaming end-to-end tests passed"
