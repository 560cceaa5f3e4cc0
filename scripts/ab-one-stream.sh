#!/usr/bin/env bash
# A/B of the one-stream fan-out against the floor (issue 13): runs
# `evroute bench --one-stream --scale N --json` ROUNDS times for each binary,
# alternating between them so all see the same machine load, and prints each
# binary's publish/floor median, range and every run's ratio.
#
#   git worktree add /tmp/a <commit>; (cd /tmp/a && cargo build --release --features bench)
#   cargo build --release --features bench
#   scripts/ab-one-stream.sh 5 100000 /tmp/a/target/release/evroute target/release/evroute
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 ROUNDS SCALE EVROUTE_BINARY..." >&2
    exit 2
fi
rounds=$1 scale=$2
shift 2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq "$rounds"); do
    for bin in "$@"; do
        "$bin" bench --one-stream --scale "$scale" --json 2>/dev/null |
            python3 -c 'import json, sys
r = json.load(sys.stdin)["one_stream"][0]
print(sys.argv[1], r["publish_ns_per_delivery"], r["floor_ns_per_delivery"], r["ratio_floor"])' "$bin" >>"$out"
    done
done
python3 - "$out" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
for bin in dict.fromkeys(r[0] for r in rows):
    mine = [r for r in rows if r[0] == bin]
    ratio = [float(r[3]) for r in mine]
    publish = statistics.median(float(r[1]) for r in mine)
    floor = statistics.median(float(r[2]) for r in mine)
    runs = " ".join(f"{x:.2f}" for x in ratio)
    print(f"{bin}: publish/floor median {statistics.median(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f}),"
          f" publish {publish:.1f} ns, floor {floor:.1f} ns per delivery; runs: {runs}")
PY
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
