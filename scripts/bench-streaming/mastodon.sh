#!/usr/bin/env bash
# Mastodon's own streaming server against evroute-streaming, in one sitting, driven by the
# same load generator (`evroute-streaming loadgen`) on the same throw-away Postgres
# (tests/mastodon-db, 10,000 users with viewer state) and redis-server. The servers take
# turns, case by case, REPEAT times, so both see the same machine load.
#
#   MASTODON_DIR=/path/to/mastodon bash scripts/bench-streaming/mastodon.sh
#
# MASTODON_DIR is a Mastodon checkout (only its streaming/ folder is used; `npm install
# --omit=dev` is run there when node_modules is missing). Nothing of it enters this
# repository. Options (environment): REPEAT (2), CLIENTS_PUBLIC ("1000 5000"), EVENTS (100:
# events of a `public` case for evroute-streaming), MASTODON_DELIVERIES (10000: deliveries
# of a `public` case for Mastodon), USER_DELIVERIES (60000: deliveries of a `user` or home
# case) and CASES ("public user home"). The `user` and home cases also run the floor
# (floor.c, each connection its own channel: what this machine and load generator can do at
# all) and publish with at most 4,096 deliveries outstanding (-window), for every server.
# BENCH_PRIORITY=1 as in run.sh. Mastodon runs its block and mute queries for every
# delivery through a pool of DB_POOL (10) connections and gives up on a query that waited 15 s
# for one (connectionTimeoutMillis), dropping that delivery: a larger burst measures how much
# it drops, not how fast it delivers. Needs node and npm. Prints the loadgen reports and the
# load average before each case; 2 to 3 minutes per round.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${BENCH_PRIORITY:-}" = 1 ]; then # as in run.sh: its own scheduling group at nice -19 (root)
    exec env BENCH_PRIORITY=set setsid -w bash -c 'echo -19 >/proc/self/autogroup && exec nice -n -19 bash "$0"' "$0"
fi
: "${MASTODON_DIR:?set MASTODON_DIR to a Mastodon checkout (its streaming/ folder is run)}"
streaming_dir=$(cd "$MASTODON_DIR/streaming" && pwd)
repeat=${REPEAT:-2}
events=${EVENTS:-100}
mastodon_deliveries=${MASTODON_DELIVERIES:-10000}
clients_public=${CLIENTS_PUBLIC:-1000 5000}
user_deliveries=${USER_DELIVERIES:-60000}
cases=${CASES:-public user home}
source scripts/need.sh
need redis-server:redis-server cc:gcc,libc6-dev curl:curl node:nodejs npm:npm
[ -d "$streaming_dir/node_modules" ] || (cd "$streaming_dir" && npm install --omit=dev --no-audit --no-fund)

source scripts/bench-streaming/setup.sh
# Mastodon before 4.4 joins `devices` (end-to-end encryption, since removed) in its token
# query; tests/mastodon-db follows 4.5. An empty table lets such a checkout authenticate.
if grep -q 'devices.device_id' "$streaming_dir/index.js"; then
    psql -q -X -h 127.0.0.1 -p "$pgport" -U postgres -d mastodon -c \
        'CREATE TABLE devices (id bigserial PRIMARY KEY, access_token_id bigint, device_id varchar)'
fi
dburl="postgres://postgres@127.0.0.1:$pgport/mastodon"

# Each server runs only for its own cases, so neither idles on the CPU beside the other.
server_pid=
server_url=
start_server() {
    local port
    port=$(free_port)
    if [ "$1" = mastodon ]; then
        NODE_ENV=production DATABASE_URL="$dburl" DB_POOL=10 REDIS_URL="redis://127.0.0.1:$redisport" \
            PORT=$port LOG_LEVEL=warn node "$streaming_dir/index.js" >>"$scratch/mastodon.log" 2>&1 &
    elif [ "$1" = floor ]; then
        "$scratch/floor" "$port" "$redisport" timeline: 1000000 >>"$scratch/floor.log" 2>&1 &
    else
        DATABASE_URL="$dburl" REDIS_URL="redis://127.0.0.1:$redisport" PORT=$port LOG_LEVEL=warn \
            "$scratch/evroute-streaming" >>"$scratch/evs.log" 2>&1 &
    fi
    server_pid=$!
    pids+=("$server_pid")
    server_url="http://127.0.0.1:$port"
    for _ in $(seq 100); do
        if [ "$1" = floor ]; then # it answers any request with an endless stream
            python3 -c "import socket; socket.create_connection(('127.0.0.1',$port)).close()" 2>/dev/null && return
        else
            curl -sf "$server_url/api/v1/streaming/health" >/dev/null && return
        fi
        sleep 0.1
    done
    echo "$1 did not start:"; tail -20 "$scratch/$([ "$1" = mastodon ] && echo mastodon || echo evs).log"; exit 1
}
stop_server() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; }

run_case() { # "servers", name, loadgen arguments...
    local servers=$1 what=$2
    shift 2
    for server in $servers; do
        run_one "$server" "$what" "$@"
    done
}
run_one() { # server, name, loadgen arguments...
    local server=$1 what=$2
    shift 2
    start_server "$server"
    echo "=== $what: $server (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    "$scratch/evroute-streaming" loadgen -redis "redis://127.0.0.1:$redisport/0" -settle 10s \
        -url "$server_url" -server-pid "$server_pid" "$@" || echo "(loadgen failed)"
    stop_server
}

for round in $(seq "$repeat"); do
    echo "##### round $round of $repeat"
    both="evroute-streaming mastodon" # who goes first alternates with the rounds
    [ $((round % 2)) = 1 ] || both="mastodon evroute-streaming"
    case " $cases " in *" public "*)
        for n in $clients_public; do
            for server in $both; do
                e=$events
                [ "$server" = mastodon ] && e=$(( (mastodon_deliveries + n - 1) / n ))
                run_one "$server" "public, $n SSE clients, $e events" -stream public -clients "$n" -events "$e"
            done
        done ;;
    esac
    case " $cases " in *" user "*)
        for n in 100 1000; do
            run_case "floor $both" "user, $n SSE clients, each event to every client's timeline:<account>" \
                -stream user -clients "$n" -events $((user_deliveries / n)) -window 4096
        done ;;
    esac
    case " $cases " in *" home "*)
        run_case "floor $both" "home feed, 1000 SSE clients, each event to one client's timeline:<account>" \
            -stream home -clients 1000 -events "$user_deliveries" -window 4096 ;;
    esac
    # The latency target is evroute's; Mastodon falls behind at this rate (it would only queue).
    case " $cases " in *" public "*)
        run_case evroute-streaming "public, 1000 SSE clients, paced at 100 events/s (latency)" \
            -stream public -clients 1000 -events 300 -rate 100 ;;
    esac
done
