import asyncio

import pytest

import evroute
from conftest import corpus, mastodon, payload_of, sse

DELETE = b'{"event":"delete","payload":"%d"}'


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_next_async_waits_on_the_fd():
    async def main():
        with evroute.Engine() as engine, engine.subscriber() as sub:
            sub.subscribe(stream="public")
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, engine.publish, corpus(mastodon("08")))
            frame = await sub.next_async()
            assert frame.sse == sse("update", payload_of(corpus(mastodon("08"))))
            assert await sub.next_async(timeout=0.05) is None
            # The fd is unregistered after each wait.
            assert not loop._selector.get_map() or sub.fileno() not in loop._selector.get_map()

    run(main())


def test_async_for_ends_when_closed():
    async def main():
        with evroute.Engine() as engine:
            sub = engine.subscriber()
            sub.subscribe(stream="public")

            async def producer():
                for i in range(50):
                    engine.publish_channel("timeline:public", DELETE % i)
                    await asyncio.sleep(0)
                await asyncio.sleep(0.05)
                sub.close()  # while the consumer waits on the fd

            task = asyncio.ensure_future(producer())
            got = [int(frame.payload) async for frame in sub]
            await task
            assert got == list(range(50))
            with pytest.raises(evroute.Closed):
                await sub.next_async()

    run(main())


def test_many_subscribers_in_one_loop_from_a_publishing_thread():
    async def main():
        with evroute.Engine() as engine:
            subs = [engine.subscriber() for _ in range(20)]
            for s in subs:
                s.subscribe(stream="public")

            async def consume(s):
                return [int((await s.next_async(timeout=5)).payload) for _ in range(100)]

            def publish():
                for i in range(100):
                    engine.publish_channel("timeline:public", DELETE % i)

            consumers = asyncio.gather(*(consume(s) for s in subs))
            await asyncio.get_running_loop().run_in_executor(None, publish)
            results = await consumers
            assert results == [list(range(100))] * 20
            for s in subs:
                s.close()

    run(main())


def test_slow_consumer_close_ends_async_wait():
    async def main():
        with evroute.Engine() as engine:
            sub = engine.subscriber(queue_capacity=1, overflow="disconnect")
            sub.subscribe(stream="public")
            engine.publish_channel("timeline:public", DELETE % 1)
            engine.publish_channel("timeline:public", DELETE % 2)
            with pytest.raises(evroute.Closed, match="slow consumer"):
                await sub.next_async()
            sub.close()

    run(main())
