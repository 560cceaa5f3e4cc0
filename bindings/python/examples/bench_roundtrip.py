#!/usr/bin/env python3
"""Python overhead of one publish_channel + next(0) round trip.

    pip install ./bindings/python
    python3 bindings/python/examples/bench_roundtrip.py

Routes `{"event":"delete","payload":"1"}` on timeline:public to one
subscriber (a 23-byte SSE frame) and takes it back, through the evroute API
and through bare cffi calls on the same handles (the floor: no argument
checks, no handle guard, no Frame object). Rounds alternate between the two;
the minimum of each is printed with their ratio, so a busy machine shifts
both figures alike."""

import argparse
import time

import evroute
from evroute._evroute import ffi, lib

CHANNEL = "timeline:public"
MESSAGE = b'{"event":"delete","payload":"1"}'


def api_round(engine, sub, n):
    start = time.perf_counter()
    for _ in range(n):
        engine.publish_channel(CHANNEL, MESSAGE)
        sub.next(0)
    return time.perf_counter() - start


def raw_round(engine, sub, n):
    ep, sp = engine._handle.acquire(), sub._handle.acquire()
    ch = CHANNEL.encode()
    stats, out = ffi.new("evr_publish_stats *"), ffi.new("evr_frame **")
    try:
        start = time.perf_counter()
        for _ in range(n):
            lib.evr_publish_channel(ep, ch, len(ch), MESSAGE, len(MESSAGE), stats)
            lib.evr_subscriber_next(sp, 0, out)
            lib.evr_frame_free(out[0])
        return time.perf_counter() - start
    finally:
        engine._handle.release()
        sub._handle.release()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--n", type=int, default=20000, help="round trips per round")
    args = parser.parse_args()
    with evroute.Engine() as engine, engine.subscriber() as sub:
        sub.subscribe(stream="public")
        engine.publish_channel(CHANNEL, MESSAGE)
        assert len(sub.next(0).sse) == 23
        api, raw = [], []
        for _ in range(args.rounds):
            api.append(api_round(engine, sub, args.n) / args.n)
            raw.append(raw_round(engine, sub, args.n) / args.n)
    a, r = min(api) * 1e6, min(raw) * 1e6
    print(f"publish_channel + next(0), 23-byte frame: API {a:.2f} us, bare cffi {r:.2f} us, ratio {a / r:.2f}")


if __name__ == "__main__":
    main()
