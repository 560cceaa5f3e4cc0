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
initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$initdb" ]; then
    need pg_ctlcluster:postgresql
    initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)
fi
pgbin=$(dirname "$initdb")
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
    [ -f "$scratch/pg/postmaster.pid" ] && as_pg "$pgbin/pg_ctl" -D "$scratch/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$scratch" "$go_scratch"
}
trap cleanup EXIT

# Postgres refuses to run as root: the cluster belongs to the postgres user.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown postgres "$scratch"
pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$pgbin/initdb" -D "$scratch/pg" -A trust -U postgres >/dev/null
as_pg "$pgbin/pg_ctl" -D "$scratch/pg" -l "$scratch/pg.log" -w \
    -o "-p $pgport -k $scratch -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
psql=(psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U postgres)
"${psql[@]}" -c "CREATE DATABASE mastodon"
"${psql[@]}" -d mastodon -c "SET client_min_messages = warning" -f tests/mastodon-db/schema.sql
"${psql[@]}" -d mastodon -v nusers=20 -f tests/mastodon-db/seed.sql

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
