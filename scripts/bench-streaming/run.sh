#!/usr/bin/env bash
# The streaming-server benchmark of BENCHMARKS.md, in one sitting: evroute-streaming
# (Postgres with tests/mastodon-db's seed for 10k users, Redis) against the floor
# (floor.c: SUBSCRIBE + write every message to the connections it is for), both driven by
# `evroute-streaming loadgen`. Each run gets a freshly started server, so RSS and
# CPU are its own; the floor and evroute-streaming alternate, REPEAT times.
#
#   bash scripts/bench-streaming/run.sh                       # every case, twice
#   CASES="public ws" REPEAT=3 EVENTS=300 bash scripts/bench-streaming/run.sh
#   CASES=user USER_CLIENTS=1000 HISTORIES=0 REPEAT=1 bash scripts/bench-streaming/run.sh
#
# Cases: public (1,000 and 5,000 SSE clients), ws (1,000 WebSocket clients),
# latency (1,000 SSE and WebSocket clients paced at 100 events/s, 5,000 SSE clients
# at 20/s, 100 SSE clients at 1,000/s: 100,000 deliveries/s each), user (100 and 1,000 clients, history on and
# off), home (1,000 clients, each event to one), idle (memory per idle connection: 1,000 and
# 5,000 SSE and WebSocket clients, one event); the floor runs every case but ws and idle
# (user and home: each connection its own channel).
# user and home publish with a window of 4,096 outstanding deliveries: unthrottled,
# the load generator outruns the server's ingest and Redis cuts the server's
# subscription off (client-output-buffer-limit pubsub 32mb), losing messages.
#
# BASE=FILE: every evroute-streaming run is preceded by the same run of the binary FILE
# (shown as "base"), for a before/after in one sitting, e.g. main's build:
#   git worktree add --detach /tmp/base main && (cd /tmp/base && cargo build --release --all-features --lib &&
#     cd bindings/go && go build -tags evroute_inrepo -o /tmp/evs-base ./cmd/evroute-streaming)
#   BASE=/tmp/evs-base CASES=user bash scripts/bench-streaming/run.sh
#
# BENCH_PRIORITY=1 (root): the sitting runs in a scheduling group of its own
# (autogroup) at nice -19, so that builds of other users of a shared machine
# disturb its latencies less.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${BENCH_PRIORITY:-}" = 1 ]; then
    exec env BENCH_PRIORITY=set setsid -w bash -c 'echo -19 >/proc/self/autogroup && exec nice -n -19 bash "$0"' "$0"
fi
source scripts/need.sh
need redis-server:redis-server cc:gcc,libc6-dev
events=${EVENTS:-300}
repeat=${REPEAT:-2}
cases=${CASES:-public ws latency user home idle}
user_clients=${USER_CLIENTS:-100 1000}
histories=${HISTORIES:-256 0}   # EVROUTE_HISTORY_EVENTS of the user and home cases

source scripts/bench-streaming/setup.sh
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"

srvport=$(free_port)
srv=0
# start_server floor [CHANNEL | PREFIX BASE] | evs|base [VAR=value...]: a fresh server on $srvport.
start_server() {
    local kind=$1 bin=$scratch/evroute-streaming
    shift
    [ "$kind" = base ] && bin=$BASE
    if [ "$kind" = floor ]; then
        "$scratch/floor" "$srvport" "$redisport" "${@:-timeline:public}" >"$scratch/floor.log" 2>&1 &
    else
        env DATABASE_URL="postgres://postgres@127.0.0.1:$pgport/mastodon" REDIS_URL="redis://127.0.0.1:$redisport" \
            PORT=$srvport LOG_LEVEL=warn "$@" "$bin" >>"$scratch/evs.log" 2>&1 &
    fi
    srv=$!
    pids+=($srv)
    for _ in $(seq 100); do
        if [ "$kind" = floor ]; then
            python3 -c "import socket; socket.create_connection(('127.0.0.1',$srvport)).close()" 2>/dev/null && break
        else
            curl -sf "http://127.0.0.1:$srvport/api/v1/streaming/ready" >/dev/null 2>&1 && break
        fi
        sleep 0.1
    done
}
stop_server() {
    kill "$srv"
    wait "$srv" 2>/dev/null || true
}
# run TITLE SERVER [VAR=value...] -- LOADGEN-FLAGS...
run() {
    if [ "$2" = evs ] && [ -n "${BASE:-}" ]; then
        run "$1" base "${@:3}"
    fi
    local title=$1 kind=$2 envs=()
    shift 2
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    echo "=== $title: $kind ${envs[*]:-} (load $(cut -d' ' -f1 /proc/loadavg))"
    start_server "$kind" "${envs[@]}"
    "$scratch/evroute-streaming" loadgen -url "http://127.0.0.1:$srvport" -server-pid "$srv" \
        -redis "redis://127.0.0.1:$redisport/0" -settle 10s "$@"
    stop_server
}

for r in $(seq "$repeat"); do
    for c in $cases; do
        case $c in
        public)
            for n in 1000 5000; do
                run "public, $n SSE clients, $events events" floor -- -stream public -clients "$n" -events "$events"
                run "public, $n SSE clients, $events events" evs -- -stream public -clients "$n" -events "$events"
            done ;;
        ws)
            run "public, 1000 WebSocket clients, $events events" evs -- -stream public -transport ws -clients 1000 -events "$events"
            run "public, 1000 SSE clients, $events events" evs -- -stream public -clients 1000 -events "$events" ;;
        latency)
            for t in sse ws; do
                [ "$t" = sse ] && run "public, 1000 $t clients, 100 events/s (latency)" floor -- -stream public -clients 1000 -events 500 -rate 100
                run "public, 1000 $t clients, 100 events/s (latency)" evs -- -stream public -transport "$t" -clients 1000 -events 500 -rate 100
            done
            run "public, 5000 sse clients, 20 events/s (latency)" floor -- -stream public -clients 5000 -events 100 -rate 20
            run "public, 5000 sse clients, 20 events/s (latency)" evs -- -stream public -clients 5000 -events 100 -rate 20
            run "public, 100 sse clients, 1000 events/s (latency)" floor -- -stream public -clients 100 -events 5000 -rate 1000
            run "public, 100 sse clients, 1000 events/s (latency)" evs -- -stream public -clients 100 -events 5000 -rate 1000 ;;
        user)
            for n in $user_clients; do
                run "user, $n SSE clients, each event to every client's timeline:<account>" floor timeline: 1000000 -- \
                    -stream user -clients "$n" -events $((events * 100 / n)) -window 4096
                for h in $histories; do
                    run "user, $n SSE clients, each event to every client's timeline:<account>, history $h" evs EVROUTE_HISTORY_EVENTS=$h -- \
                        -stream user -clients "$n" -events $((events * 100 / n)) -window 4096
                done
            done ;;
        home)
            run "home feed, 1000 SSE clients, each event to one client's timeline:<account>" floor timeline: 1000000 -- \
                -stream home -clients 1000 -events 20000 -window 4096
            for h in $histories; do
                run "home feed, 1000 SSE clients, each event to one client's timeline:<account>, history $h" evs EVROUTE_HISTORY_EVENTS=$h -- \
                    -stream home -clients 1000 -events 20000 -window 4096
            done ;;
        idle)
            # The figure is the load generator's "kB/connection": RSS with the clients
            # connected (0.5 s after the last), before any event, minus before.
            for t in sse ws; do
                for n in 1000 5000; do
                    run "idle memory, $n $t clients" evs -- -stream public -transport "$t" -clients "$n" -events 1
                done
            done ;;
        *) echo "unknown case $c" >&2; exit 2 ;;
        esac
    done
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
