#!/usr/bin/env bash
# The Redis part of the C ABI (feature `redis`): the header compiles alone
# with EVR_FEATURE_REDIS defined (C99, C++), and tests/c/test_redis.c runs
# against a real redis-server on a free loopback port, under ASan + UBSan
# (static library) and under valgrind (shared library).
set -euo pipefail
cd "$(dirname "$0")/../.."

source scripts/need.sh
need cc:gcc,libc6-dev g++:g++ valgrind:valgrind redis-server:redis-server redis-cli:redis-tools ||
    echo "warning: could not install every package"

echo "--- header: compiles alone with EVR_FEATURE_REDIS, as C99 and as C++"
cc -std=c99 -DEVR_FEATURE_REDIS -Wall -Wextra -Werror -pedantic -fsyntax-only -x c include/evroute.h
g++ -std=c++11 -DEVR_FEATURE_REDIS -Wall -Wextra -Werror -pedantic -fsyntax-only -x c++ include/evroute.h

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "SKIPPED: C Redis tests (redis-server/redis-cli not installed and not installable)"
    exit 0
fi

echo "--- Rust unit tests of the Redis exports (argument checks, options JSON)"
cargo test --release --all-features --lib ffi::redis

cargo build --release --all-features --lib
lib=target/release
# The loader looks for the soname, which cargo does not create.
ln -sf libevroute.so "$lib/libevroute.so.0"
out=target/c-redis-tests
mkdir -p "$out"

# A private server on a free loopback port: retry on a port collision.
redis_pid=""
trap '[ -z "$redis_pid" ] || kill "$redis_pid" 2>/dev/null || true' EXIT
for _ in $(seq 20); do
    port=$((20000 + RANDOM % 40000))
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --logfile "$out/redis-server.log" &
    redis_pid=$!
    for _ in $(seq 50); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && break 2
        kill -0 "$redis_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
done
[ -n "$redis_pid" ] || { echo "could not start redis-server:"; cat "$out/redis-server.log"; exit 1; }
echo "--- redis-server on 127.0.0.1:$port"

cflags=(-std=c99 -DEVR_FEATURE_REDIS -Wall -Wextra -Werror -g -Iinclude -Itests/c)
syslibs=(-lpthread -ldl -lm)

echo "--- C Redis tests, ASan + UBSan, static library"
cc "${cflags[@]}" -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
    tests/c/test_redis.c "$lib/libevroute.a" "${syslibs[@]}" -o "$out/test_redis_asan"
ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$out/test_redis_asan" "$port"

echo "--- C Redis tests, valgrind, shared library"
cc "${cflags[@]}" -O1 tests/c/test_redis.c -L"$lib" -levroute "${syslibs[@]}" -o "$out/test_redis_shared"
LD_LIBRARY_PATH="$lib" valgrind -q --error-exitcode=1 --leak-check=full \
    "$out/test_redis_shared" "$port"
echo "C Redis ABI tests passed"
