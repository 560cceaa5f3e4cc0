"""Batch reads (read_sse, read_ws) against frames built from the corpus and
SPEC §4, and against next() on a twin subscriber."""

import json
import threading
import time

import pytest

import evroute
from conftest import corpus, json_escaped, mastodon, payload_of

PUBLIC = ["07", "08", "11", "14"]


def expected(prefix):
    doc = corpus(mastodon(prefix))
    payload = payload_of(doc)
    event = json.loads(doc)["event"].encode()
    sse = b"event: " + event + b"\ndata: " + payload + b"\n\n"
    ws = b'{"stream":["public"],"event":"' + event + b'","payload":"' + json_escaped(payload) + b'"}'
    return doc, sse, ws


def publish(engine, rounds):
    sse, ws = [], []
    for _ in range(rounds):
        for prefix in PUBLIC:
            doc, s, w = expected(prefix)
            assert engine.publish(doc).delivered >= 1
            sse.append(s)
            ws.append(w)
    return sse, ws


def test_read_sse_gives_whole_frames_in_order_up_to_max_bytes():
    with evroute.Engine() as engine:
        sub = engine.subscriber()
        sub.subscribe(stream="public")
        sse, _ = publish(engine, 3)
        limit = max(map(len, sse)) * 3 // 2
        got = []
        while True:
            chunk = sub.read_sse(max_bytes=limit)
            if not chunk:
                break
            assert len(chunk) <= limit
            got.append(chunk)
        assert b"".join(got) == b"".join(sse)
        assert len(got) > 1
        stats = sub.stats()
        assert stats.read == len(sse) and stats.depth == 0


def test_read_ws_splits_messages_and_matches_next():
    with evroute.Engine() as engine:
        a = engine.subscriber()
        b = engine.subscriber()
        for s in (a, b):
            s.subscribe(stream="public")
        _, ws = publish(engine, 2)
        got = []
        while True:
            batch = b.read_ws(max_frames=3)
            if not batch:
                break
            assert len(batch) <= 3
            got.extend(batch)
        assert got == ws
        assert [f.ws for f in a.drain()] == ws


def test_a_frame_larger_than_max_bytes_still_comes_out():
    with evroute.Engine() as engine:
        sub = engine.subscriber()
        sub.subscribe(stream="public")
        sse, ws = publish(engine, 1)
        assert sub.read_sse(max_bytes=8) == sse[0]
        assert sub.read_ws(max_bytes=8) == [ws[1]]
        with pytest.raises(ValueError):
            sub.read_ws(max_frames=0)


def test_read_waits_and_raises_closed():
    with evroute.Engine() as engine:
        sub = engine.subscriber()
        sub.subscribe(stream="public")
        start = time.monotonic()
        assert sub.read_sse(timeout=0.02) == b""
        assert time.monotonic() - start >= 0.015
        doc, sse, _ = expected("11")
        threading.Timer(0.02, engine.publish, (doc,)).start()
        assert sub.read_sse(timeout=5) == sse
        sub.close()
        with pytest.raises(evroute.Closed):
            sub.read_sse()
        slow = engine.subscriber(queue_capacity=1, overflow="disconnect")
        slow.subscribe(stream="public")
        engine.publish(doc)
        engine.publish(doc)
        with pytest.raises(evroute.Closed, match="slow consumer"):
            slow.read_ws()


def test_frames_carry_the_queued_at_rails_sets():
    with evroute.Engine() as engine:
        sub = engine.subscriber()
        sub.subscribe(stream="public")
        for queued_at in ("1764550000123", None, "-1"):
            extra = "" if queued_at is None else ',"queued_at":' + queued_at
            engine.publish_channel("timeline:public", '{"event":"delete","payload":"1"%s}' % extra)
        got = [sub.next(timeout=0).queued_at for _ in range(3)]
        assert got == [1764550000123, None, None]
