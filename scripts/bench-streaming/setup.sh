# What run.sh and mastodon.sh share; sourced after scripts/need.sh. Builds the
# library, makes $scratch (removed on exit with every server started into $pids)
# and starts the throw-away Mastodon Postgres there, 10,000 users ($pgport), and
# a redis-server ($redisport); builds evroute-streaming and the floor there.
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
mastodon_pg "$scratch" 10000
redisport=$(free_port)
redis-server --port "$redisport" --bind 127.0.0.1 --save '' --appendonly no >"$scratch/redis.log" 2>&1 &
redispid=$!
pids+=($redispid)
(cd bindings/go && go build -o "$scratch/evroute-streaming" ./cmd/evroute-streaming)
cc -O2 -Wall -Wextra -Werror -o "$scratch/floor" scripts/bench-streaming/floor.c
sleep 0.5
