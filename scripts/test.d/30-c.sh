#!/usr/bin/env bash
# The C ABI: header freshness and standalone compile (C99, C++), the C tests
# under AddressSanitizer + UndefinedBehaviorSanitizer (static library), under
# valgrind and ThreadSanitizer (shared library), the C example and the C
# drain benchmark.
set -euo pipefail
cd "$(dirname "$0")/../.."

source scripts/need.sh
need cc:gcc,libc6-dev g++:g++ valgrind:valgrind

out=target/c-tests
mkdir -p "$out"
cargo build --release --lib --all-features
lib=target/release

echo "--- header: committed include/evroute.h equals the cbindgen output"
cargo test --release --all-features --test header

echo "--- header: compiles alone as C99 and as C++"
cc -std=c99 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c include/evroute.h
g++ -std=c++11 -Wall -Wextra -Werror -pedantic -fsyntax-only -x c++ include/evroute.h

cflags=(-std=c99 -Wall -Wextra -Werror -g -Iinclude -Itests/c)
syslibs=(-lpthread -ldl -lm)

echo "--- C tests, ASan + UBSan, static library"
cc "${cflags[@]}" -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
    tests/c/test_evroute.c "$lib/libevroute.a" "${syslibs[@]}" -o "$out/test_evroute_asan"
ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$out/test_evroute_asan" corpus

echo "--- C tests, valgrind, shared library"
# The loader looks for the soname, which cargo does not create.
ln -sf libevroute.so "$lib/libevroute.so.0"
cc "${cflags[@]}" -O1 tests/c/test_evroute.c -L"$lib" -levroute "${syslibs[@]}" -o "$out/test_evroute_shared"
LD_LIBRARY_PATH="$lib" valgrind -q --error-exitcode=1 --leak-check=full \
    "$out/test_evroute_shared" corpus

echo "--- C tests, ThreadSanitizer, shared library"
# The Rust library is not built with TSan (that needs a std rebuilt with
# -Zsanitizer=thread): its synchronization is invisible to TSan, so bytes a
# Rust call allocated on one thread and C reads on another look like races.
# ignore_noninstrumented_modules leaves memory the uninstrumented library
# touches untracked, so this checks the C side: races between C threads on C
# memory, through the public API, including the publisher/drainer threads.
cc "${cflags[@]}" -O1 -fsanitize=thread tests/c/test_evroute.c -L"$lib" -levroute "${syslibs[@]}" \
    -o "$out/test_evroute_tsan"
LD_LIBRARY_PATH="$lib" TSAN_OPTIONS=halt_on_error=1:ignore_noninstrumented_modules=1 \
    "$out/test_evroute_tsan" corpus

echo "--- C example (the cc line of the README C ABI section)"
cc -std=c99 -Wall -Wextra -Werror -Iinclude bindings/c/example.c \
    target/release/libevroute.a -lpthread -ldl -lm -o "$out/example"
input="$out/example-input.ndjson"
for f in corpus/mastodon/*.json; do cat "$f"; echo; done >"$input"
echo '{"event": "update", "payload": {"id": "1",}}' >>"$input"
bad_line=$(wc -l <"$input")
cat corpus/mastodon/08-update-108914354907984653.json >>"$input"
status=0
"$out/example" '{}' '{"stream":"public:remote"}' '{"account":14715}' '{"stream":"user"}' \
    <"$input" >"$out/example.out" 2>"$out/example.err" || status=$?
[ "$status" = 1 ] || { echo "example: exit status $status, expected 1"; exit 1; }
grep -q "^stdin:$bad_line: invalid JSON" "$out/example.err" \
    || { echo "example: bad line $bad_line not reported:"; cat "$out/example.err"; exit 1; }
# Event names each subscriber received, in order (SPEC §3b: remote public
# statuses; announcements and filters_changed go to every user stream).
events() { awk -v s=": subscriber $1" '$0 == s { getline; sub(/^event: /, ""); print }' "$out/example.out" | paste -sd' '; }
[ "$(events 1)" = "update status.update update" ] || { echo "subscriber 1 got: $(events 1)"; exit 1; }
[ "$(events 2)" = "filters_changed announcement announcement.reaction announcement.delete" ] \
    || { echo "subscriber 2 got: $(events 2)"; exit 1; }
# The payload is passed through byte for byte.
want=$(sed -e 's/^{"event": "update", "payload": //' -e 's/}$//' corpus/mastodon/08-update-108914354907984653.json)
got=$(awk '$0 == ": subscriber 1" { getline; getline; sub(/^data: /, ""); print; exit }' "$out/example.out")
[ "$got" = "$want" ] || { echo "example: first frame's data differs from the corpus payload"; exit 1; }
echo "--- C drain benchmark (benches/c/drain.c) compiles warning-free and runs at a small scale"
cc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude benches/c/drain.c "$lib/libevroute.a" "${syslibs[@]}" -o "$out/drain"
"$out/drain" corpus/mastodon/11-update-108914398911648589.json 200 2
echo "C ABI tests passed"
