import gc
import threading

import pytest

import evroute
from conftest import PAGE, corpus, mastodon, statm_rss_pages


@pytest.fixture
def counted_frees(monkeypatch):
    """Records every C free call (pointer, in order)."""
    freed = []
    lib = evroute._lib
    for name in ("evr_engine_free", "evr_subscriber_free"):
        real = getattr(lib, name)

        def counting(ptr, real=real):
            freed.append(ptr)
            real(ptr)

        monkeypatch.setattr(lib, name, counting)
    return freed


def test_close_then_gc_frees_once(counted_frees):
    engine = evroute.Engine()
    subs = [engine.subscriber() for _ in range(3)]
    subs[0].close()
    subs[0].close()
    with subs[1]:
        pass
    ptrs = [s._handle._ptr for s in subs[2:]] + [engine._handle._ptr]
    engine.close()
    del subs, engine
    gc.collect()
    assert len(counted_frees) == 4 and len(set(counted_frees)) == 4
    assert all(p in counted_frees for p in ptrs)


def test_gc_alone_frees_everything(counted_frees):
    engine = evroute.Engine()
    sub = engine.subscriber()
    sub.subscribe(stream="public")
    # A reference cycle: only the cyclic collector can free it.
    sub.cycle = sub
    del sub
    gc.collect()
    assert engine.stats().subscribers == 0
    del engine
    gc.collect()
    assert len(counted_frees) == 2 and len(set(counted_frees)) == 2


def test_concurrent_close_frees_once(counted_frees):
    for _ in range(100):
        sub = evroute.Engine().subscriber()  # the engine is collected first: allowed
        ptr, calls = sub._handle._ptr, len(counted_frees)
        barrier = threading.Barrier(4)

        def close():
            barrier.wait()
            sub.close()

        threads = [threading.Thread(target=close) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        del sub
        assert counted_frees[calls:] == [ptr]


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
