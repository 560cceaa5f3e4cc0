"""ReadySet: one fd for many subscribers, tokens handed out by take(), and the
drain rule (drain_sse/drain_ws until the queue is reported emptied)."""

import select

import pytest

import evroute
from test_batch import expected, publish


def readable(fd, timeout=0.0):
    return bool(select.select([fd], [], [], timeout)[0])


def test_tokens_come_for_subscribers_with_frames_and_drains_say_when_emptied():
    with evroute.Engine() as engine, evroute.ReadySet() as ready:
        subs = []
        for token in (7, 8):
            sub = engine.subscriber()
            sub.subscribe(stream="public")
            sub.attach_ready_set(ready, token)
            subs.append(sub)
        fd = ready.fileno()
        assert not readable(fd) and ready.take() == []
        sse, ws = publish(engine, 2)
        assert readable(fd, 5)
        assert ready.take(1) == [7]
        assert ready.take() == [8]
        assert not readable(fd)

        # One frame per drain: emptied only with the last one, and no second
        # token while frames are left.
        got, emptied = [], False
        while not emptied:
            chunk, emptied = subs[0].drain_sse(max_bytes=max(map(len, sse)))
            got.append(chunk)
            assert ready.take() == []
        assert b"".join(got) == b"".join(sse)
        messages, emptied = subs[1].drain_ws(max_frames=len(ws))
        assert messages == ws and emptied
        assert subs[1].drain_ws() == ([], True)

        publish(engine, 1)
        assert sorted(ready.take()) == [7, 8]
        subs[0].close()  # closed while listed: never handed out again
        publish(engine, 1)
        assert ready.take() == []  # subs[1] still has frames: no new token
        subs[1].drain_sse(max_bytes=1 << 20)
        subs[1].close()
        assert ready.take() == [] and not readable(fd)


def test_a_slow_consumer_is_handed_out_and_its_drain_raises_closed():
    with evroute.Engine() as engine, evroute.ReadySet() as ready:
        slow = engine.subscriber(queue_capacity=1, overflow="disconnect")
        slow.subscribe(stream="public")
        slow.attach_ready_set(ready, 2)
        doc = expected("07")[0]
        assert engine.publish(doc).delivered == 1
        assert engine.publish(doc).dropped == 2  # the queue of one overflowed
        assert ready.take() == [2]
        with pytest.raises(evroute.Closed, match="slow consumer"):
            slow.drain_sse()
        slow.close()


def test_attach_errors_name_the_problem():
    with evroute.Engine() as engine:
        ready = evroute.ReadySet()
        a, b, c = engine.subscriber(), engine.subscriber(), engine.subscriber()
        a.attach_ready_set(ready, 1)
        with pytest.raises(evroute.InvalidConfig, match="already attached to a ready set"):
            a.attach_ready_set(ready, 2)
        with pytest.raises(evroute.InvalidConfig, match="token 1 is already attached"):
            b.attach_ready_set(ready, 1)
        with pytest.raises(evroute.InvalidConfig, match="attached to a ready set"):
            a.fileno()
        c.fileno()
        with pytest.raises(evroute.InvalidConfig, match="own readiness fd"):
            c.attach_ready_set(ready, 3)
        with pytest.raises(ValueError):
            ready.take(0)
        with pytest.raises((OverflowError, TypeError)):
            b.attach_ready_set(ready, -1)
        live = evroute._live()["ready_sets"]
        ready.close()
        ready.close()
        assert evroute._live()["ready_sets"] == live - 1
        with pytest.raises(evroute.Closed):
            ready.take()
        with pytest.raises(evroute.Closed):
            b.attach_ready_set(ready, 4)
