import os
import resource

import pytest

import evroute
from evroute._evroute import ffi, lib
from conftest import corpus, mastodon


@pytest.fixture
def engine():
    with evroute.Engine(max_event_bytes=4096) as eng:
        yield eng


@pytest.fixture
def sub(engine):
    with engine.subscriber() as s:
        s.subscribe(stream="public")
        yield s


def raises(cls, fn, *args, match=None, **kwargs):
    with pytest.raises(cls, match=match) as info:
        fn(*args, **kwargs)
    err = info.value
    assert isinstance(err, evroute.Error)
    assert err.status == cls.status
    assert err.message and str(err) == err.message  # the C message, not empty
    return err


def test_error_hierarchy():
    for cls in (evroute.Closed, evroute.NullArgument, evroute.InvalidUtf8, evroute.InvalidJson,
                evroute.InvalidSubscription, evroute.InvalidChannel, evroute.InvalidEvent,
                evroute.TooLarge, evroute.InvalidConfig, evroute.IoError, evroute.Panic, evroute.InvalidId):
        assert issubclass(cls, evroute.Error)
    assert len({c.status for c in evroute._ERRORS.values()}) == 11


def test_publish_errors_leave_the_engine_usable(engine, sub):
    raises(evroute.InvalidJson, engine.publish, corpus("invalid/notification.banner.sent-trailing-comma.json"))
    raises(evroute.InvalidJson, engine.publish, b"")
    raises(evroute.InvalidUtf8, engine.publish, b'{"event":"update","payload":"\xff"}')
    raises(evroute.InvalidUtf8, engine.publish, '{"event":"delete","payload":"\ud800"}')
    raises(evroute.InvalidEvent, engine.publish, {"payload": "1"})
    raises(evroute.InvalidEvent, engine.publish, {"event": "update", "payload": {"id": "1"}}, match="account")
    raises(evroute.TooLarge, engine.publish, b'{"event":"delete","payload":"' + b"1" * 5000 + b'"}')
    raises(evroute.InvalidChannel, engine.publish_channel, "not-a-timeline", b'{"event":"delete","payload":"1"}')
    raises(evroute.InvalidEvent, engine.publish_channel, "timeline:public", b'{"payload":"1"}')
    raises(evroute.InvalidJson, engine.publish_channel, "timeline:public", b"{")
    with pytest.raises(TypeError):
        engine.publish(42)
    assert sub.next(0) is None
    # Still fully usable.
    assert engine.publish(corpus(mastodon("08"))).delivered == 1
    assert sub.next(0).event == "update"


def test_rejected_count_is_exact():
    with evroute.Engine() as engine:
        for bad in (b"{", b'{"payload":1}', b"\xff"):
            with pytest.raises(evroute.Error):
                engine.publish(bad)
        assert engine.stats().rejected == 3
        assert engine.stats().published == 0


def test_subscription_errors_keep_other_subscriptions(engine, sub):
    raises(evroute.InvalidSubscription, sub.subscribe, stream="bogus", match="Unknown stream type")
    raises(evroute.InvalidSubscription, sub.subscribe, stream="hashtag", match="Missing tag name parameter")
    raises(evroute.InvalidSubscription, sub.subscribe, stream="list", match="Missing list name parameter")
    raises(evroute.InvalidSubscription, sub.subscribe, stream="user")  # no account
    raises(evroute.InvalidJson, sub.subscribe, "{")
    raises(evroute.InvalidJson, sub.unsubscribe, b"")
    raises(evroute.InvalidUtf8, sub.subscribe, b'{"stream":"hashtag","tag":"\xff"}')
    with pytest.raises(TypeError):
        sub.subscribe({"stream": "public"}, tag="x")
    assert engine.stats().subscriptions == 1
    assert engine.publish(corpus(mastodon("08"))).delivered == 1


def test_config_errors(engine, sub):
    raises(evroute.InvalidConfig, evroute.Engine, overflow="sideways")
    raises(evroute.InvalidConfig, evroute.Engine, queue_capacity=0)
    raises(evroute.InvalidConfig, evroute.Engine, no_such_key=1)
    raises(evroute.InvalidJson, evroute.Engine, "{")
    raises(evroute.InvalidConfig, engine.subscriber, overflow="sideways")
    raises(evroute.InvalidConfig, sub.update, account="1")  # only viewer filters may change
    raises(evroute.InvalidJson, engine.subscriber, "[")


def test_null_argument_status_carries_the_message():
    # The Python API never passes NULL; check the mapping through the raw ABI.
    status = lib.evr_subscribe(ffi.NULL, b"{}", 2)
    with pytest.raises(evroute.NullArgument) as info:
        evroute._raise(status)
    assert info.value.message


def test_panic_and_unknown_status_mapping(engine):
    # The message is this thread's evr_last_error(): set one first.
    with pytest.raises(evroute.InvalidJson) as first:
        engine.publish(b"{")
    with pytest.raises(evroute.Panic) as info:
        evroute._raise(-10)
    assert info.value.message == first.value.message
    with pytest.raises(evroute.Error) as info:
        evroute._raise(-99)
    assert type(info.value) is evroute.Error and info.value.status == -99


def test_io_error_when_no_fd_is_left(sub):
    probe = os.open("/dev/null", os.O_RDONLY)
    os.close(probe)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))  # no new fd can be created
    try:
        raises(evroute.IoError, sub.fileno)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert sub.fileno() >= 0


def test_use_after_close_raises_closed(engine):
    s = engine.subscriber()
    s.close()
    s.close()  # idempotent
    for call in (lambda: s.subscribe(stream="public"), lambda: s.next(0), s.stats, s.fileno,
                 lambda: s.update(), lambda: s.unsubscribe(stream="public")):
        with pytest.raises(evroute.Closed):
            call()
    assert s.closed == "closed"
    engine.close()
    for call in (lambda: engine.publish(b"{}"), engine.stats, engine.subscriber,
                 lambda: engine.publish_channel("timeline:public", b"{}")):
        with pytest.raises(evroute.Closed, match="engine is closed"):
            call()


def test_last_error_is_per_thread(engine):
    import threading

    with pytest.raises(evroute.InvalidJson):
        engine.publish(b"{")
    seen = []
    t = threading.Thread(target=lambda: seen.append(ffi.string(lib.evr_last_error())))
    t.start()
    t.join()
    assert seen == [b""]
    assert ffi.string(lib.evr_last_error()) != b""
