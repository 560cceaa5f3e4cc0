#!/usr/bin/env bash
# The streaming-server benchmark of BENCHMARKS.md, in one sitting: evroute-streaming
# (Postgres with tests/mastodon-db's seed for 10k users, Redis) against the floor
# (floor.c: SUBSCRIBE + write every message to every connection), both driven by
# `evroute-streaming loadgen`. Prints the loadgen reports; takes a few minutes.
#
#   bash scripts/bench-streaming/run.sh            # EVENTS=300 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/need.sh
need redis-server:redis-server cc:gcc,libc6-dev
events=${EVENTS:-300}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --all-features --lib   # the features the test parts build with
go_env
scratch=$(mktemp -d)
chmod 755 "$scratch"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    mastodon_pg_stop "$scratch"
    rm -rf "$scratch" "$go_scratch"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mastodon_pg "$scratch" 10000

redisport=$(port)
redis-server --port "$redisport" --bind 127.0.0.1 --save '' --appendonly no >"$scratch/redis.log" 2>&1 &
pids+=($!)
(cd bindings/go && go build -o "$scratch/evroute-streaming" ./cmd/evroute-streaming)
cc -O2 -Wall -Wextra -Werror -o "$scratch/floor" scripts/bench-streaming/floor.c
sleep 0.5

evsport=$(port)
DATABASE_URL="postgres://postgres@127.0.0.1:$pgport/mastodon" REDIS_URL="redis://127.0.0.1:$redisport" \
    PORT=$evsport LOG_LEVEL=warn "$scratch/evroute-streaming" >"$scratch/evs.log" 2>&1 &
evs=$!
pids+=($evs)
floorport=$(port)
"$scratch/floor" "$floorport" "$redisport" timeline:public >"$scratch/floor.log" 2>&1 &
floor=$!
pids+=($floor)
sleep 1

loadgen() { "$scratch/evroute-streaming" loadgen -redis "redis://127.0.0.1:$redisport/0" -settle 10s "$@"; }
for n in 1000 5000; do
    echo "=== public, $n SSE clients, $events events: evroute-streaming (viewer state on)"
    loadgen -url "http://127.0.0.1:$evsport" -server-pid "$evs" -stream public -clients "$n" -events "$events"
    echo "=== public, $n SSE clients, $events events: floor"
    loadgen -url "http://127.0.0.1:$floorport" -server-pid "$floor" -stream public -clients "$n" -events "$events"
done
echo "=== public, 1000 SSE clients, paced at 100 events/s (latency): evroute-streaming"
loadgen -url "http://127.0.0.1:$evsport" -server-pid "$evs" -stream public -clients 1000 -events 300 -rate 100
echo "=== public, 1000 WebSocket clients, $events events: evroute-streaming"
loadgen -url "http://127.0.0.1:$evsport" -server-pid "$evs" -stream public -transport ws -clients 1000 -events "$events"
for n in 100 1000; do
    echo "=== user, $n SSE clients, each event to every client's timeline:<account>: evroute-streaming"
    loadgen -url "http://127.0.0.1:$evsport" -server-pid "$evs" -stream user -clients "$n" -events $((events * 100 / n))
done
echo "=== home feed, 1000 SSE clients, each event to one client's timeline:<account>: evroute-streaming"
loadgen -url "http://127.0.0.1:$evsport" -server-pid "$evs" -stream home -clients 1000 -events 20000
