import json
from pathlib import Path

import pytest

import evroute
from evroute._evroute import lib
from conftest import REPO, MASTODON, corpus, event_name, mastodon, payload_of, sse, with_fields, ws


def expect_corpus(sub, name, stream):
    doc = corpus(name)
    expect(sub, event_name(doc), payload_of(doc), stream)


def expect(sub, event, payload, stream):
    frame = sub.next(0)
    assert frame is not None, f"expected a {event} frame on {stream}"
    assert frame.event == event
    assert frame.stream == stream
    assert frame.payload == (None if payload is None else payload.decode())
    assert frame.sse == sse(event, payload)
    assert frame.ws == ws(stream, event, payload)


def expect_empty(sub):
    assert sub.next(0) is None


def test_corpus_life_cycle():
    with evroute.Engine() as engine:
        pub = engine.subscriber()
        pub.subscribe(stream="public")
        local = engine.subscriber({})
        local.subscribe({"type": "subscribe", "stream": "public:local"})
        remote = engine.subscriber()
        remote.subscribe('{"stream":"public:remote"}')
        tag = engine.subscriber()
        tag.subscribe(stream="hashtag", tag="#TEST!")
        user = engine.subscriber(account=14715)
        user.subscribe(stream="user")

        for name in MASTODON:
            stats = engine.publish(corpus("mastodon/" + name))
            assert stats.delivered == stats.matched and stats.dropped == 0

        for n in ("07", "08", "10", "11", "12", "13", "14", "15", "16"):
            expect_corpus(pub, mastodon(n), ["public"])
        expect_empty(pub)
        for n in ("07", "11", "12", "13", "14", "15", "16"):
            expect_corpus(local, mastodon(n), ["public:local"])
        expect_empty(local)
        for n in ("08", "10"):
            expect_corpus(remote, mastodon(n), ["public:remote"])
        expect_empty(remote)
        for n in ("14", "15", "16"):
            expect_corpus(tag, mastodon(n), ["hashtag", "#TEST!"])
        expect_empty(tag)
        expect(user, "filters_changed", None, ["user"])
        for n in ("04", "05", "06"):
            expect_corpus(user, mastodon(n), ["user"])
        expect_empty(user)

        stats = engine.stats()
        assert stats.published == len(MASTODON)
        assert stats.rejected == 0
        assert stats.subscribers == 5 and stats.subscriptions == 5
        assert stats.delivered == 9 + 7 + 2 + 3 + 4
        s = pub.stats()
        assert (s.matched, s.delivered, s.read, s.depth, s.dropped) == (9, 9, 9, 0, 0)
        for sub in (pub, local, remote, tag, user):
            sub.close()
        assert engine.stats().subscribers == 0


def test_recipients_lists_and_publish_forms():
    with evroute.Engine() as engine, engine.subscriber(account="7") as user, \
            engine.subscriber() as lst, engine.subscriber(account=7) as notif:
        user.subscribe(stream="user")
        lst.subscribe(stream="list", list=5)
        notif.subscribe(stream="user:notification")
        doc = corpus(mastodon("01"))
        # bytes, str and dict all publish the same event.
        assert engine.publish(with_fields(doc, {"recipients": ["7"], "lists": [5]})) == (2, 2, 0)
        assert engine.publish(with_fields(doc, {"recipients": [7]}).decode()) == (1, 1, 0)
        as_dict = json.loads(doc)
        as_dict["lists"] = ["5"]
        assert engine.publish(as_dict).delivered == 1
        payload = payload_of(doc)
        expect(user, "update", payload, ["user"])
        expect(user, "update", payload, ["user"])
        expect_empty(user)
        expect(lst, "update", payload, ["list", "5"])
        frame = lst.next(0)
        # A dict is re-serialized: same event and stream, same payload value.
        assert frame.event == "update" and frame.stream == ["list", "5"]
        assert json.loads(frame.payload) == json.loads(payload)
        expect_empty(lst)

        note = corpus(mastodon("02"))
        assert engine.publish(with_fields(note, {"recipients": [7]})).delivered == 2
        expect(user, "notification", payload_of(note), ["user"])
        expect(notif, "notification", payload_of(note), ["user:notification"])

        # A community webhook event: its payload is the whole event; data.recipients is [7].
        community = corpus("community/notification.mention.json")
        assert engine.publish(community).delivered == 2
        expect(notif, "notification.mention", community, ["user:notification"])
        expect(user, "notification.mention", community, ["user"])
        expect_empty(notif)
        expect_empty(user)


def test_publish_channel_and_unsubscribe():
    with evroute.Engine(redis_namespace="ns") as engine, engine.subscriber() as sub:
        sub.subscribe(stream="public")
        sub.subscribe(stream="hashtag", tag="Rust")
        assert engine.publish_channel("ns:timeline:public", b'{"event":"delete","payload":"1"}') == (1, 1, 0)
        assert engine.publish_channel(b"ns:timeline:hashtag:rust", {"event": "delete", "payload": "2"}).matched == 1
        expect(sub, "delete", b"1", ["public"])
        expect(sub, "delete", b"2", ["hashtag", "Rust"])
        sub.unsubscribe(stream="hashtag", tag="RUST")  # same channel, so the same subscription
        assert engine.publish_channel("ns:timeline:hashtag:rust", '{"event":"delete","payload":"3"}').matched == 0
        sub.unsubscribe({"stream": "public"})
        assert engine.stats().subscriptions == 0
        expect_empty(sub)


def test_update_replaces_viewer_filters():
    with evroute.Engine() as engine, engine.subscriber(languages=["de"]) as sub:
        sub.subscribe(stream="public")
        doc = corpus(mastodon("08"))  # an "en" public status
        assert engine.publish(doc).matched == 0
        sub.update(languages=["en"])
        assert engine.publish(doc).matched == 1
        author = json.loads(doc)["payload"]["account"]["id"]
        sub.update({"blocked_accounts": [author]})  # languages now empty: any language
        assert engine.publish(doc).matched == 0
        sub.update()
        assert engine.publish(doc).matched == 1
        assert [f.event for f in sub.drain()] == ["update", "update"]


def test_overflow_policies():
    doc = corpus(mastodon("08"))
    with evroute.Engine(queue_capacity=2) as engine:
        oldest = engine.subscriber()
        newest = engine.subscriber(overflow="drop_newest")
        slow = engine.subscriber(queue_capacity=1, overflow="disconnect")
        for sub in (oldest, newest, slow):
            sub.subscribe(stream="public")
        first = engine.publish(with_fields(doc, {"lists": [1]}))
        assert first == (3, 3, 0)
        engine.publish(with_fields(doc, {"lists": [2]}))
        third = engine.publish(with_fields(doc, {"lists": [3]}))
        assert third.dropped >= 2
        assert oldest.stats().dropped == 1 and oldest.stats().depth == 2
        assert newest.stats().dropped == 1 and newest.stats().depth == 2
        assert slow.closed == "slow consumer"
        with pytest.raises(evroute.Closed, match="slow consumer"):
            slow.next(0)
        for sub in (oldest, newest, slow):
            s = sub.stats()
            assert s.matched == s.read + s.depth + s.dropped
            sub.close()


def test_next_waits_for_the_timeout():
    import time

    with evroute.Engine() as engine, engine.subscriber() as sub:
        sub.subscribe(stream="public")
        start = time.monotonic()
        assert sub.next(timeout=0.15) is None
        assert time.monotonic() - start >= 0.14
        assert sub.next(0) is None


def test_library_metadata():
    assert evroute.lib_version().count(".") == 2
    assert lib.EVR_VERSION_MAJOR == int(evroute.lib_version().split(".")[0])
    # The installed package carries the library: nothing is loaded from a checkout.
    assert Path(evroute.lib_path()).parent == Path(evroute.__file__).parent
    assert REPO / "bindings" / "python" not in Path(evroute.__file__).resolve().parents
