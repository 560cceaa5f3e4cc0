#!/usr/bin/env bash
# Benchmark smoke test: benches compile, `evroute bench` runs end to end
# at a small scale (with Redis when it can be installed) and emits JSON.
set -euo pipefail
source scripts/need.sh
need redis-server:redis-server || echo "redis-server unavailable: baseline (b) will be skipped"
cargo bench --no-run --all-features
cargo build --release --all-features
out=$(./target/release/evroute bench --scale 1000 --events 128 --json)
python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
row = r["scales"][0]
assert row["subscribers"] == 1000, row
assert row["evroute"]["deliveries"] > 0 and row["mastodon"]["deliveries"] > 0, row
assert row["ratio_mastodon"] > 1.0, "evroute slower than the Mastodon-style baseline"
print("bench smoke ok: %.3g deliveries/s, %.1fx baseline (a)" % (row["evroute"]["deliveries_per_sec"], row["ratio_mastodon"]))
PY
# The keyword-filter measurement alone (`--keyword-filters`), as BENCHMARKS.md runs it.
out=$(./target/release/evroute bench --scale 1000 --keyword-filters --json)
python3 - "$out" <<'PY'
import json, sys
kf = json.loads(sys.argv[1])["keyword_filters"][0]
assert kf["subscribers"] == 1000 and kf["matching_lists"] > 0, kf
chunks = kf["ratio_chunks"]
assert 0 < chunks["min"] <= chunks["median"] <= chunks["max"], kf
assert kf["evaluate_us_per_event"] > 0 and kf["evaluate_us_median_block"] > 0, kf
print("keyword filters smoke ok: ratio %.2f, evaluation %.1f us/event" % (kf["ratio"], kf["evaluate_us_median_block"]))
PY
