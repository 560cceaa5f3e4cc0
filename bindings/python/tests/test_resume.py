"""Event ids, history and resume (SPEC §12) through the Python binding."""

import threading

import pytest

import evroute

PUBLIC = {"stream": "public"}
HISTORY = {"max_events": 1000, "max_age_s": 600}


def update(engine, n, channel="timeline:public"):
    status = {"id": str(n), "visibility": "public", "language": "en", "account": {"id": "9", "acct": "nine"}}
    engine.publish_channel(channel, {"event": "update", "payload": status})


def drain(sub):
    return list(sub.drain())


def test_frames_have_ids_only_with_history():
    with evroute.Engine() as off, evroute.Engine(history=HISTORY) as on:
        subs = []
        for engine in (off, on):
            sub = engine.subscriber()
            sub.subscribe(PUBLIC)
            update(engine, 1)
            subs.append(sub)
        plain, kept = (s.next(0) for s in subs)
        assert plain.id is None
        epoch, seq = kept.id.split(":")
        assert len(epoch) == 8 and seq == "1"
        # Without event_ids, the bytes are those of an engine without history.
        assert (kept.sse, kept.ws) == (plain.sse, plain.ws)

        ided = on.subscriber(event_ids=True)
        ided.subscribe(PUBLIC)
        update(on, 2)
        frame = ided.next(0)
        assert frame.sse.startswith(f"id: {frame.id}\nevent: update\n".encode())
        assert frame.ws.endswith(f',"id":"{frame.id}"}}'.encode())


def test_resume_replays_then_goes_live_and_reports_gaps():
    with evroute.Engine(history={"max_events": 3}) as engine:
        twin = engine.subscriber()
        twin.subscribe(PUBLIC)
        first = engine.subscriber()
        first.subscribe(PUBLIC)
        for n in range(3):
            update(engine, n)
        seen = [first.next(0)]
        first.close()
        update(engine, 3)
        second = engine.subscriber()
        second.subscribe(PUBLIC)
        assert second.resume(seen[-1].id) is False
        update(engine, 4)
        seen += drain(second)
        assert seen == drain(twin)
        assert [f.id.split(":")[1] for f in seen] == ["1", "2", "3", "4", "5"]

        # The history (3 per channel) no longer reaches back to the first event.
        third = engine.subscriber()
        third.subscribe(PUBLIC)
        assert third.resume(seen[0].id.encode()) is True
        assert [f.id for f in drain(third)] == [f.id for f in seen[2:]]

        stats = engine.stats()
        assert stats.history_entries == 3
        assert stats.history_bytes > 0


def test_malformed_ids_are_errors():
    with evroute.Engine(history=HISTORY) as engine:
        sub = engine.subscriber()
        for bad in ("", "12", "abc:", "a:b", b"\xff:1"):
            with pytest.raises((evroute.InvalidId, evroute.InvalidUtf8)) as info:
                sub.resume(bad)
            assert info.value.status in (-11, -2)
        with pytest.raises(evroute.InvalidId, match="malformed event id"):
            sub.resume("x:")
        with pytest.raises(evroute.InvalidConfig, match="max_events"):
            evroute.Engine(history={"max_events": 0})


def test_resume_while_another_thread_publishes():
    with evroute.Engine(history=HISTORY, queue_capacity=100000) as engine:
        twin = engine.subscriber()
        twin.subscribe(PUBLIC)
        first = engine.subscriber()
        first.subscribe(PUBLIC)
        update(engine, 0)
        seen = [first.next(1)]
        done = threading.Event()

        def publish():
            for n in range(1, 2000):
                update(engine, n)
            done.set()

        publisher = threading.Thread(target=publish)
        publisher.start()
        for _ in range(5):
            seen += [f for f in (first.next(0) for _ in range(20)) if f is not None]
            first.close()
            first = engine.subscriber()
            first.subscribe(PUBLIC)
            assert first.resume(seen[-1].id) is False
        publisher.join()
        seen += drain(first)
        expected = drain(twin)
        assert len(seen) == len(expected) == 2000
        assert seen == expected
