#!/usr/bin/env python3
"""Plots `evroute bench --json`: deliveries/s against subscriber count (mixed
workload, left) and, for every subscriber on one stream, publish ns/delivery
next to the floor measured in the same run, with issue 13's 3x target (right).

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
    fig, (ax, one) = plt.subplots(1, 2, figsize=(12, 4.5))
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
    ax.set_title(f"Fan-out, mixed workload ({m['cpu']}, {m['cores']} cores)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()

    streams = [r["one_stream"] for r in rows if r.get("one_stream")]
    if streams:
        sn = [s["subscribers"] for s in streams]
        floor = [s["floor_ns_per_delivery"] for s in streams]
        one.plot(sn, [s["publish_ns_per_delivery"] for s in streams], "o-", label="evroute publish")
        one.plot(sn, floor, "k.-", label="floor (refcount + pointer store per ring)")
        one.plot(sn, [3 * f for f in floor], "k:", label="target: 3x floor")
        for x, s in zip(sn, streams):
            one.annotate(f"{s['ratio_floor']:.1f}x", (x, s["publish_ns_per_delivery"]), textcoords="offset points",
                         xytext=(4, 6), fontsize=8)
        one.set_xscale("log")
        one.set_yscale("log")
        one.set_xlabel("subscribers on one stream")
        one.set_ylabel("ns per delivery")
        one.set_title("One stream: publish against the floor, same run", fontsize=9)
        one.grid(True, which="both", alpha=0.3)
        one.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
