import gc
import threading
import time

import pytest

import evroute
from conftest import PAGE, corpus, mastodon, statm_rss_pages


def live(kind):
    """C objects of `kind` not freed yet (counted where evroute frees them)."""
    return evroute._live()[kind]


def test_close_then_gc_frees_once():
    gc.collect()
    engines, subscribers = live("engines"), live("subscribers")
    engine = evroute.Engine()
    subs = [engine.subscriber() for _ in range(3)]
    assert (live("engines"), live("subscribers")) == (engines + 1, subscribers + 3)
    subs[0].close()
    subs[0].close()
    assert live("subscribers") == subscribers + 2  # close() frees at once
    with subs[1]:
        pass
    assert live("subscribers") == subscribers + 1
    engine.close()
    assert live("engines") == engines
    del subs, engine
    gc.collect()
    assert (live("engines"), live("subscribers")) == (engines, subscribers)


def test_gc_alone_frees_everything():
    gc.collect()
    engines, subscribers = live("engines"), live("subscribers")
    engine = evroute.Engine()
    sub = engine.subscriber()
    sub.subscribe(stream="public")
    # A reference cycle: only the cyclic collector can free it.
    sub.cycle = sub
    del sub
    gc.collect()
    assert engine.stats().subscribers == 0
    assert live("subscribers") == subscribers
    del engine
    gc.collect()
    assert live("engines") == engines


def test_concurrent_close_frees_once():
    gc.collect()
    subscribers = live("subscribers")
    for _ in range(100):
        sub = evroute.Engine().subscriber()  # the engine is collected first: allowed
        barrier = threading.Barrier(4)

        def close():
            barrier.wait()
            sub.close()

        threads = [threading.Thread(target=close) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # close() freed it once: a double free would crash or count below the start.
        assert live("subscribers") == subscribers


def test_close_while_another_thread_waits_frees_after_the_wait():
    gc.collect()
    subscribers = live("subscribers")
    sub = evroute.Engine().subscriber()
    result = []
    waiting = threading.Thread(target=lambda: result.append(pytest.raises(evroute.Closed, sub.next, 30)))
    waiting.start()
    time.sleep(0.2)  # let it block in evr_subscriber_next
    sub.close()
    waiting.join(5)
    assert not waiting.is_alive() and result
    assert live("subscribers") == subscribers


def test_frames_outlive_their_handles():
    engine = evroute.Engine()
    sub = engine.subscriber()
    sub.subscribe(stream="public")
    engine.publish(corpus(mastodon("08")))
    engine.close()
    frame = sub.next(0)
    sub.close()
    gc.collect()
    assert frame.event == "update" and frame.sse.startswith(b"event: update\ndata: {")


def cycle(doc, k):
    engine = evroute.Engine(queue_capacity=4)
    sub = engine.subscriber(account=str(k))
    sub.subscribe(stream="public")
    if k % 16 == 0:
        engine.publish(doc)  # a full corpus status now and then; cheap channel publishes otherwise
    else:
        engine.publish_channel("timeline:public", b'{"event":"delete","payload":"%d"}' % k)
    assert sub.next(0) is not None
    if k % 2:
        sub.close()
        engine.close()
    # else: dropped here and freed by __del__


def test_no_leak_over_100k_create_free_cycles():
    doc = corpus(mastodon("08"))
    for k in range(10_000):  # warm up allocator pools and caches
        cycle(doc, k)
    gc.collect()
    before = statm_rss_pages()
    for k in range(100_000):
        cycle(doc, k)
    gc.collect()
    grown = (statm_rss_pages() - before) * PAGE
    print(f"RSS growth over 100k cycles: {grown / 1024:.0f} KiB")
    # A leak of 40 bytes per cycle would show as 4 MB.
    assert grown < 4 * 1024 * 1024
