"""The Redis node and publisher (docs/protocol.md, "Redis") against a real
redis-server on a free loopback port (scripts/test.d/66-redis-bindings.sh)."""

import shutil
import socket
import subprocess
import time

import pytest

import evroute
from conftest import corpus, mastodon, payload_of, sse, ws

def redis_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_port(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    for _ in range(20):  # retry on a port taken between probe and bind
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--logfile", str(tmp_path / "redis.log")])
        for _ in range(50):
            if redis_ping(port) or server.poll() is not None:
                break
            time.sleep(0.1)
        if server.poll() is None and redis_ping(port):
            try:
                yield port
            finally:
                server.terminate()
                server.wait(10)
            return
        server.kill()
        server.wait()
    pytest.fail("could not start redis-server: " + (tmp_path / "redis.log").read_text())


def test_publish_through_redis_reaches_subscriber(redis_port):
    url = f"redis://127.0.0.1:{redis_port}/"
    doc = corpus(mastodon("14"))  # a local public status tagged #test
    payload = payload_of(doc)
    delete = b'{"event":"delete","payload":"108914430312582020"}'
    with evroute.Engine(redis_namespace="evrpy") as engine, engine.subscriber() as sub:
        sub.subscribe(stream="public")
        with pytest.raises(evroute.InvalidConfig, match="presence_ttl"):
            engine.attach_redis(url, presence_ttl=5)
        with pytest.raises(evroute.IoError):
            evroute.RedisPublisher("redis://127.0.0.1:1/")  # nothing listens there

        node = engine.attach_redis(url, poll_interval_ms=20)
        with node, evroute.RedisPublisher(url, namespace="evrpy") as publisher:
            assert node.wait_subscribed(5.0)

            # public, public:local, hashtag:test, hashtag:test:local; one node listening.
            assert publisher.publish(doc) == evroute.RedisPublished(channels=4, receivers=4)
            frame = sub.next(5.0)
            assert frame is not None
            assert (frame.event, frame.stream) == ("update", ["public"])
            assert frame.sse == sse("update", payload)
            assert frame.ws == ws(["public"], "update", payload)

            assert publisher.publish_channel("timeline:public", delete) == (1, 1)
            frame = sub.next(5.0)
            assert frame is not None
            assert frame.sse == sse("delete", b"108914430312582020")
            assert frame.ws == ws(["public"], "delete", b"108914430312582020")
            assert sub.next(0.2) is None

            # received is raised just after delivery, so it may lag the frame.
            for _ in range(100):
                stats = node.stats()
                if stats.received >= 5:
                    break
                time.sleep(0.01)
            assert stats.received == 5 and stats.rejected == 0

            node.stop()
            with pytest.raises(evroute.Closed):
                node.wait_subscribed(1.0)
            assert publisher.publish_channel("timeline:public", delete).channels == 1
            assert sub.next(0.3) is None
            assert node.stats().received == 5
        with pytest.raises(evroute.Closed):
            node.stats()
        with pytest.raises(evroute.Closed):
            publisher.publish(doc)


def test_channels_mode_subscribes_only_local_channels(redis_port):
    url = f"redis://127.0.0.1:{redis_port}/"
    delete = b'{"event":"delete","payload":"7"}'
    with evroute.Engine() as engine, engine.subscriber() as sub:
        sub.subscribe(stream="hashtag", tag="mine")
        with pytest.raises(evroute.InvalidConfig, match="subscribe"):
            engine.attach_redis(url, subscribe="everything")
        with engine.attach_redis(url, subscribe="channels", poll_interval_ms=20) as node, \
                evroute.RedisPublisher(url) as publisher:
            assert node.wait_synced(5.0)
            assert node.stats().subscriptions == 1
            assert publisher.publish_channel("timeline:hashtag:other", delete).receivers == 0
            assert publisher.publish_channel("timeline:hashtag:mine", delete).receivers == 1
            frame = sub.next(5.0)
            assert frame is not None and frame.payload == "7"


def redis_publish(port, channel, message):
    """PUBLISH over RESP; returns the number of receivers."""
    args = [b"PUBLISH", channel.encode(), message]
    cmd = b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(cmd)
        reply = conn.recv(64)
    assert reply.startswith(b":"), reply
    return int(reply[1:].split(b"\r\n")[0])


def test_system_channels_reach_the_host_without_presence_keys(redis_port):
    url = f"redis://127.0.0.1:{redis_port}/"
    with evroute.Engine(redis_namespace="ns") as engine, engine.subscriber(account="7") as sub:
        sub.subscribe(stream="user")
        with engine.attach_redis(url, subscribe="channels", poll_interval_ms=20) as node:
            with pytest.raises(evroute.InvalidChannel):
                node.listen_system("timeline:public")
            node.listen_system("timeline:system:7")
            assert node.wait_synced(5.0)
            assert node.next_system(0.01) is None
            assert redis_publish(redis_port, "ns:timeline:system:7", b'{"event":"filters_changed"}') == 1
            assert node.next_system(5.0) == evroute.SystemMessage("timeline:system:7", b'{"event":"filters_changed"}')
            assert sub.next(0) is None, "system messages are not routed"
            stats = node.stats()
            assert (stats.system_received, stats.system_dropped, stats.presence_keys) == (1, 0, 2)
            assert node.unlisten_system("timeline:system:7")
            assert not node.unlisten_system("timeline:system:7")
            node.stop()
            with pytest.raises(evroute.Closed):
                node.next_system(1.0)
