import threading
import time

import pytest

import evroute

PUBLISHERS, DRAINERS, PER_THREAD = 4, 4, 2000


def test_threads_publish_while_others_drain():
    with evroute.Engine(queue_capacity=64) as engine:
        subs = [engine.subscriber(queue_capacity=PUBLISHERS * PER_THREAD) for _ in range(DRAINERS)]
        for s in subs:
            s.subscribe(stream="public")
        # One more, small and never drained, so drops happen concurrently too.
        idle = engine.subscriber(queue_capacity=8)
        idle.subscribe(stream="public")
        received = [[] for _ in subs]
        errors = []

        def publish(t):
            try:
                for i in range(PER_THREAD):
                    stats = engine.publish_channel("timeline:public", b'{"event":"delete","payload":"%d-%d"}' % (t, i))
                    assert stats.matched == DRAINERS + 1
            except Exception as e:  # reported in the main thread
                errors.append(e)

        def drain(k):
            try:
                while len(received[k]) < PUBLISHERS * PER_THREAD:
                    frame = subs[k].next(timeout=5)
                    assert frame is not None, "frames stopped arriving"
                    received[k].append(frame.payload)
            except Exception as e:
                errors.append(e)

        threads = [threading.Thread(target=drain, args=(k,)) for k in range(DRAINERS)]
        threads += [threading.Thread(target=publish, args=(t,)) for t in range(PUBLISHERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors

        for got in received:
            # Every frame once, and each publisher's frames in its publish order.
            assert sorted(got) == sorted(f"{t}-{i}" for t in range(PUBLISHERS) for i in range(PER_THREAD))
            for t in range(PUBLISHERS):
                mine = [int(p.split("-")[1]) for p in got if p.startswith(f"{t}-")]
                assert mine == list(range(PER_THREAD))
        total = PUBLISHERS * PER_THREAD
        stats = engine.stats()
        assert stats.published == total
        assert stats.matched == total * (DRAINERS + 1)
        # drop_oldest enqueues every frame and evicts older ones.
        assert stats.delivered == stats.matched
        s = idle.stats()
        assert stats.dropped == s.dropped
        assert s.depth == 8 and s.dropped == total - 8
        for s in subs + [idle]:
            s.close()


def test_close_wakes_a_blocked_next():
    with evroute.Engine() as engine:
        sub = engine.subscriber()
        sub.subscribe(stream="public")
        outcome = []

        def wait():
            try:
                sub.next()  # no timeout: waits until a frame or close
            except evroute.Closed as e:
                outcome.append(e.message)

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.2)
        assert t.is_alive()
        start = time.monotonic()
        sub.close()
        t.join(5)
        assert not t.is_alive() and outcome == ["closed"]
        assert time.monotonic() - start < 1


def test_close_races_with_many_readers_and_publishers():
    # close() while other threads are inside C calls on the same handle must
    # neither free twice nor free while in use.
    for _ in range(20):
        with evroute.Engine() as engine:
            sub = engine.subscriber()
            sub.subscribe(stream="public")
            stop = threading.Event()
            errors = []

            def read():
                try:
                    while True:
                        sub.next(timeout=0.01)
                        sub.stats()
                except evroute.Closed:
                    pass
                except Exception as e:
                    errors.append(e)

            def publish():
                while not stop.is_set():
                    engine.publish_channel("timeline:public", b'{"event":"delete","payload":"1"}')

            threads = [threading.Thread(target=read) for _ in range(4)] + [threading.Thread(target=publish)]
            for t in threads:
                t.start()
            time.sleep(0.01)
            closers = [threading.Thread(target=sub.close) for _ in range(3)]
            for t in closers:
                t.start()
            for t in closers + threads[:4]:
                t.join(5)
            stop.set()
            threads[4].join(5)
            assert not errors, errors
            assert all(not t.is_alive() for t in threads)
            assert engine.stats().subscribers == 0
