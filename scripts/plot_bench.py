#!/usr/bin/env python3
"""Plots deliveries/s against subscriber count from `evroute bench --json`.

usage: evroute bench --json > bench.json && python3 scripts/plot_bench.py bench.json [docs/fanout.png]
Needs matplotlib (pip install matplotlib).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "-"
    out = sys.argv[2] if len(sys.argv) > 2 else "docs/fanout.png"
    report = json.load(sys.stdin if src == "-" else open(src))
    rows = report["scales"]
    n = [r["subscribers"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(n, [r["evroute"]["deliveries_per_sec"] for r in rows], "o-", label="evroute")
    ax.plot(n, [r["mastodon"]["deliveries_per_sec"] for r in rows], "s-", label="(a) Mastodon-style router")
    redis = [(r["redis"]["subscribers"], r["redis"]["deliveries_per_sec"]) for r in rows if r.get("redis")]
    if redis:
        ax.plot(*zip(*redis), "^-", label="(b) Redis pub/sub (connections)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("subscribers")
    ax.set_ylabel("deliveries per second (publish, one thread)")
    m = report["machine"]
    ax.set_title(f"Fan-out, mixed workload — {m['cpu']}, {m['cores']} cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
