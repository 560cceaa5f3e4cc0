"""evroute: Python bindings for the evroute event-routing engine (SPEC §10).

The bindings use ctypes over the shared library (libevroute.so) rather than
cffi or a compiled extension: ctypes ships with every CPython 3.8+, so there
is no build step, no compiler and no extra dependency, and one pure-Python
package works with any interpreter version. The C ABI is small and takes
plain (pointer, length) buffers, so ctypes costs little here; ctypes also
releases the GIL during every call, so a thread waiting in `next()` does not
block the others.

    import evroute
    with evroute.Engine(queue_capacity=1024) as engine:
        sub = engine.subscriber(account="42", languages=["en"])
        sub.subscribe(stream="hashtag", tag="rust")
        engine.publish({"event": "update", "payload": {...}})
        frame = sub.next(timeout=0.5)   # Frame or None; frame.sse, frame.ws

The library is found through the EVROUTE_LIB environment variable, else
target/release or target/debug of the repository this package lives in,
else the system library path.

Threads: engines and subscribers may be used from any number of threads.
close() may be called at any time from any thread: it wakes a thread blocked
in next() (which then raises Closed) and frees the C handle once no call is
using it, so a handle is never freed twice or while in use.
"""

import asyncio
import ctypes
import json
import math
import threading
import time
from collections import namedtuple

from . import _native
from ._native import CLOSED, EMPTY, OK, TIMEOUT

__all__ = [
    "Engine", "Subscriber", "Frame", "PublishStats", "EngineStats", "SubscriberStats",
    "Error", "Closed", "NullArgument", "InvalidUtf8", "InvalidJson", "InvalidSubscription",
    "InvalidChannel", "InvalidEvent", "TooLarge", "InvalidConfig", "IoError", "Panic",
    "lib_version", "lib_path",
    "RedisNode", "RedisPublisher", "RedisNodeStats", "RedisPublished", "lib_has_redis",
]

_lib = _native.lib


class Error(Exception):
    """Any evroute failure. `status` is the C evr_status, `message` the C message."""

    status = None

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class Closed(Error):
    """The subscriber (or engine) is closed; `message` says why ("closed", "slow consumer")."""

    status = CLOSED


class NullArgument(Error):
    status = -1


class InvalidUtf8(Error):
    status = -2


class InvalidJson(Error):
    status = -3


class InvalidSubscription(Error):
    status = -4


class InvalidChannel(Error):
    status = -5


class InvalidEvent(Error):
    status = -6


class TooLarge(Error):
    status = -7


class InvalidConfig(Error):
    status = -8


class IoError(Error):
    status = -9


class Panic(Error):
    """A bug inside evroute was caught at the boundary; close the handles involved."""

    status = -10


_ERRORS = {cls.status: cls for cls in (
    NullArgument, InvalidUtf8, InvalidJson, InvalidSubscription, InvalidChannel,
    InvalidEvent, TooLarge, InvalidConfig, IoError, Panic,
)}


def _check(status):
    """Raises the Error for a negative status; returns the status otherwise.

    Must run on the thread that made the call: evr_last_error() is thread-local."""
    if status >= 0:
        return status
    message = _lib.evr_last_error().decode("utf-8", "replace")
    raise _ERRORS.get(status, Error)(message, status)


PublishStats = namedtuple("PublishStats", "matched delivered dropped")
EngineStats = namedtuple("EngineStats", "published rejected matched delivered dropped subscribers subscriptions")
SubscriberStats = namedtuple("SubscriberStats", "matched delivered dropped read depth")
RedisNodeStats = namedtuple("RedisNodeStats", "received rejected ignored reconnects presence_keys")
RedisPublished = namedtuple("RedisPublished", "channels receivers")


def lib_version():
    """The loaded library's version (evr_version())."""
    return _lib.evr_version().decode()


def lib_path():
    """The path of the loaded libevroute."""
    return _native.path


def lib_has_redis():
    """Whether the loaded library was built with the cargo feature `redis` (SPEC §9)."""
    return _native.has_redis


def _require_redis():
    if not _native.has_redis:
        raise Error(
            f"{_native.path}: library built without the redis feature; build it with "
            "`cargo build --release --features redis --lib` and point EVROUTE_LIB at it"
        )


def _text_bytes(value, what):
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def _json_bytes(value, what):
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")  # lone surrogates reach the C UTF-8 check
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    raise TypeError(f"{what} must be bytes, str or dict, not {type(value).__name__}")


def _options(positional, keywords, what):
    """One JSON argument given either as a dict/str/bytes or as keyword arguments."""
    if positional is not None and keywords:
        raise TypeError(f"give {what} either as one argument or as keywords, not both")
    return _json_bytes(positional if positional is not None else keywords, what)


class _Handle:
    """Owns one C handle: frees it exactly once, never while a call uses it.

    Every C call runs between acquire() and release(). close() marks the
    handle closing; the free happens at once when no call is in flight, or
    else in the release() of the last one. `wake` (evr_subscriber_close)
    is called on close so blocked waits end promptly."""

    __slots__ = ("_ptr", "_free", "_wake", "_lock", "_busy", "_closing", "_kind")

    def __init__(self, ptr, free, wake, kind):
        self._ptr = ptr
        self._free = free  # kept here: module globals may be gone when __del__ runs at exit
        self._wake = wake
        self._lock = threading.Lock()
        self._busy = 0
        self._closing = False
        self._kind = kind

    def acquire(self):
        with self._lock:
            if self._closing:
                raise Closed(f"{self._kind} is closed")
            self._busy += 1
            return self._ptr

    def release(self):
        with self._lock:
            self._busy -= 1
            if not (self._closing and self._busy == 0 and self._ptr is not None):
                return
            ptr, self._ptr = self._ptr, None
        self._free(ptr)

    def close(self):
        with self._lock:
            if self._closing:
                return
            self._closing = True
            ptr = wake = None
            if self._busy == 0:
                ptr, self._ptr = self._ptr, None
            elif self._wake is not None:
                # Calls are in flight: wake them holding a use of our own, so the
                # handle cannot be freed under the wake; the last release() frees.
                wake = self._ptr
                self._busy += 1
        if ptr is not None:
            self._free(ptr)
        elif wake is not None:
            try:
                self._wake(wake)
            finally:
                self.release()

    @property
    def closing(self):
        return self._closing

    def __del__(self):
        # Nothing else can hold this handle now: no call is in flight.
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr is not None:
            self._free(ptr)


class _Use:
    """`with _Use(handle) as ptr:` runs a C call on a live handle."""

    __slots__ = ("_handle",)

    def __init__(self, handle):
        self._handle = handle

    def __enter__(self):
        return self._handle.acquire()

    def __exit__(self, *exc):
        self._handle.release()
        return False


class Frame:
    """One delivery, copied out of the C frame (which is freed at once).

    event: str; payload: str or None (absent payload); stream: list of str;
    sse and ws: the exact bytes to write to an SSE or WebSocket client."""

    __slots__ = ("event", "payload", "stream", "sse", "ws")

    def __init__(self, event, payload, stream, sse, ws):
        self.event = event
        self.payload = payload
        self.stream = stream
        self.sse = sse
        self.ws = ws

    def __repr__(self):
        return f"Frame(event={self.event!r}, stream={self.stream!r}, sse={len(self.sse)} bytes)"

    def __eq__(self, other):
        return isinstance(other, Frame) and (self.sse, self.ws) == (other.sse, other.ws)

    __hash__ = None


_string_at = ctypes.string_at
_byref = ctypes.byref


def _frame_from(ptr):
    try:
        n = ctypes.c_size_t(0)
        parts = []
        for getter in (_lib.evr_frame_event, _lib.evr_frame_stream, _lib.evr_frame_sse, _lib.evr_frame_ws):
            p = getter(ptr, _byref(n))
            parts.append(_string_at(p, n.value) if p else b"")
        p = _lib.evr_frame_payload(ptr, _byref(n))
        payload = _string_at(p, n.value).decode("utf-8") if p else None
    finally:
        _lib.evr_frame_free(ptr)
    event, stream, sse, ws = parts
    return Frame(event.decode("utf-8"), payload, json.loads(stream), sse, ws)


def _timeout_ms(seconds):
    if seconds < 0:
        raise ValueError("timeout must be >= 0 or None")
    # Round up so a tiny positive timeout still waits.
    return min(math.ceil(seconds * 1000), 0xFFFFFFFF)


class Engine:
    """One routing domain. Keyword arguments are the engine config keys of SPEC §7
    (queue_capacity, overflow, max_event_bytes, delete_memory, redis_namespace).

    Usable as a context manager; close() frees it. Subscribers stay usable after
    their engine is closed (they keep the routing domain alive)."""

    def __init__(self, config=None, **kwargs):
        raw = _options(config, kwargs, "engine config")
        out = ctypes.c_void_p()
        _check(_lib.evr_engine_new(raw, len(raw), _byref(out)))
        self._handle = _Handle(out.value, _lib.evr_engine_free, None, "engine")

    def subscriber(self, options=None, **kwargs):
        """A new Subscriber; keyword arguments are the subscriber keys of SPEC §7
        (account, languages, blocked_accounts, muted_accounts, blocked_domains,
        queue_capacity, overflow)."""
        raw = _options(options, kwargs, "subscriber options")
        out = ctypes.c_void_p()
        with _Use(self._handle) as ptr:
            _check(_lib.evr_subscriber_new(ptr, raw, len(raw), _byref(out)))
        return Subscriber(out.value)

    def publish(self, event):
        """Content mode (SPEC §3b). `event` is bytes, str or dict. Returns PublishStats."""
        raw = _json_bytes(event, "event")
        stats = _native.PublishStatsC()
        with _Use(self._handle) as ptr:
            _check(_lib.evr_publish(ptr, raw, len(raw), _byref(stats)))
        return PublishStats(stats.matched, stats.delivered, stats.dropped)

    def publish_channel(self, channel, message):
        """Channel mode (SPEC §3a): a Mastodon Redis channel and `{"event":E,"payload":P}`."""
        ch = _text_bytes(channel, "channel")
        raw = _json_bytes(message, "message")
        stats = _native.PublishStatsC()
        with _Use(self._handle) as ptr:
            _check(_lib.evr_publish_channel(ptr, ch, len(ch), raw, len(raw), _byref(stats)))
        return PublishStats(stats.matched, stats.delivered, stats.dropped)

    def attach_redis(self, url, **options):
        """Attaches this engine to Redis (SPEC §9) and returns the running RedisNode.

        It PSUBSCRIBEs `[<redis_namespace>:]timeline:*`, routes every message in
        channel mode and keeps Mastodon's presence keys. Keyword options:
        presence_ttl_secs, presence_refresh_secs, poll_interval_ms, backoff_min_ms,
        backoff_max_ms, connect_timeout_ms. An unreachable Redis is retried in the
        background: use wait_subscribed() to know when messages arrive."""
        _require_redis()
        u = _text_bytes(url, "url")
        raw = _json_bytes(options, "redis options") if options else b""
        out = ctypes.c_void_p()
        with _Use(self._handle) as ptr:
            _check(_lib.evr_redis_node_attach(ptr, u, len(u), raw, len(raw), _byref(out)))
        return RedisNode(out.value)

    def stats(self):
        out = _native.EngineStatsC()
        with _Use(self._handle) as ptr:
            _check(_lib.evr_engine_get_stats(ptr, _byref(out)))
        return EngineStats(*(getattr(out, f) for f in EngineStats._fields))

    @property
    def closed(self):
        return self._handle.closing

    def close(self):
        """Frees the engine; safe to call more than once."""
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Subscriber:
    """One client connection: a bounded frame queue plus subscriptions.

    Create it with Engine.subscriber(). Usable as a context manager; close()
    unsubscribes everything and frees it. `async for frame in sub` and
    `await sub.next_async()` wait on the readiness fd with loop.add_reader."""

    def __init__(self, ptr):
        self._handle = _Handle(ptr, _lib.evr_subscriber_free, _lib.evr_subscriber_close, "subscriber")

    def subscribe(self, subscription=None, **kwargs):
        """Adds a subscription (SPEC §1): subscribe(stream="hashtag", tag="rust"), or one
        dict/str/bytes such as a client's WebSocket subscribe message."""
        raw = _options(subscription, kwargs, "subscription")
        with _Use(self._handle) as ptr:
            _check(_lib.evr_subscribe(ptr, raw, len(raw)))

    def unsubscribe(self, subscription=None, **kwargs):
        """Removes the subscription the same arguments would have created."""
        raw = _options(subscription, kwargs, "subscription")
        with _Use(self._handle) as ptr:
            _check(_lib.evr_unsubscribe(ptr, raw, len(raw)))

    def update(self, filters=None, **kwargs):
        """Replaces the viewer filters (languages, blocked_accounts, muted_accounts,
        blocked_domains); keys not given become empty."""
        raw = _options(filters, kwargs, "filters")
        with _Use(self._handle) as ptr:
            _check(_lib.evr_subscriber_update(ptr, raw, len(raw)))

    def next(self, timeout=None):
        """The next Frame, or None when nothing arrived in `timeout` seconds
        (0: don't wait; None: wait until a frame arrives or the subscriber closes).
        Raises Closed once the subscriber is closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ms = 250 if timeout is None else _timeout_ms(timeout)
        out = ctypes.c_void_p()
        while True:
            with _Use(self._handle) as ptr:
                status = _check(_lib.evr_subscriber_next(ptr, ms, _byref(out)))
                if status == CLOSED:
                    reason = _lib.evr_subscriber_closed(ptr)
            if status == OK:
                return _frame_from(out.value)
            if status == CLOSED:
                raise Closed(reason.decode() if reason else "closed")
            if timeout is None:
                continue  # waits in slices so Ctrl-C reaches the main thread
            remaining = deadline - time.monotonic()
            if status == EMPTY or remaining <= 0:
                return None
            ms = _timeout_ms(remaining)

    def drain(self):
        """Yields the frames waiting now without blocking (after the fd fired)."""
        while True:
            frame = self.next(0)
            if frame is None:
                return
            yield frame

    def fileno(self):
        """The readiness fd: readable while frames wait or after close. Owned by the
        subscriber: never read or close it, and stop polling it before close()."""
        fd = ctypes.c_int(-1)
        with _Use(self._handle) as ptr:
            _check(_lib.evr_subscriber_fd(ptr, _byref(fd)))
        return fd.value

    async def next_async(self, timeout=None):
        """Like next() but waits in the running asyncio loop (loop.add_reader on the fd)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            frame = self.next(0)
            if frame is not None:
                return frame
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            # Held busy while the fd is registered: a concurrent close() then only
            # wakes us, and the fd is freed after remove_reader.
            with _Use(self._handle) as ptr:
                fd = ctypes.c_int(-1)
                _check(_lib.evr_subscriber_fd(ptr, _byref(fd)))
                ready = loop.create_future()
                loop.add_reader(fd.value, lambda: ready.done() or ready.set_result(None))
                try:
                    await asyncio.wait_for(ready, remaining)
                except asyncio.TimeoutError:
                    pass
                finally:
                    loop.remove_reader(fd.value)

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            return await self.next_async()
        except Closed:
            raise StopAsyncIteration from None

    def stats(self):
        out = _native.SubscriberStatsC()
        with _Use(self._handle) as ptr:
            _check(_lib.evr_subscriber_get_stats(ptr, _byref(out)))
        return SubscriberStats(*(getattr(out, f) for f in SubscriberStats._fields))

    @property
    def closed(self):
        """None while open, else why it closed: "closed" or "slow consumer"."""
        try:
            with _Use(self._handle) as ptr:
                reason = _lib.evr_subscriber_closed(ptr)
        except Closed:
            return "closed"
        return reason.decode() if reason else None

    def close(self):
        """Unsubscribes everything and frees the subscriber; wakes any thread in next().
        Safe to call more than once and from any thread."""
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class RedisNode:
    """An engine's link to Redis, from Engine.attach_redis(). Its threads run
    until stop() or close() (or garbage collection); it keeps the routing domain
    alive, so the engine may be closed first. Usable as a context manager."""

    def __init__(self, ptr):
        # close() while another thread waits in wait_subscribed() stops the node
        # first, which ends that wait; the last call out frees it.
        self._handle = _Handle(ptr, _lib.evr_redis_node_free, _lib.evr_redis_node_stop, "redis node")

    def wait_subscribed(self, timeout=5.0):
        """True once the node is subscribed (messages published from now on are
        received), False if it was not within `timeout` seconds. Raises Closed
        once stopped."""
        with _Use(self._handle) as ptr:
            status = _check(_lib.evr_redis_node_wait_subscribed(ptr, _timeout_ms(timeout)))
        if status == CLOSED:
            raise Closed("redis node is stopped")
        return status == OK

    def stats(self):
        out = _native.RedisNodeStatsC()
        with _Use(self._handle) as ptr:
            _check(_lib.evr_redis_node_get_stats(ptr, _byref(out)))
        return RedisNodeStats(*(getattr(out, f) for f in RedisNodeStats._fields))

    def stop(self):
        """Stops receiving and refreshing presence keys; stats() still works. Idempotent."""
        with _Use(self._handle) as ptr:
            _check(_lib.evr_redis_node_stop(ptr))

    def close(self):
        """Stops the node and frees it; safe to call more than once."""
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class RedisPublisher:
    """Publishes events to Redis as Mastodon channel messages, so every attached
    node delivers them. `namespace` must match the nodes' redis_namespace.
    Raises IoError when Redis cannot be reached; it does not reconnect: after an
    IoError, close it and create a new one. Usable as a context manager."""

    def __init__(self, url, namespace=None):
        _require_redis()
        u = _text_bytes(url, "url")
        ns = b"" if namespace is None else _text_bytes(namespace, "namespace")
        out = ctypes.c_void_p()
        _check(_lib.evr_redis_publisher_new(u, len(u), ns, len(ns), _byref(out)))
        self._handle = _Handle(out.value, _lib.evr_redis_publisher_free, None, "redis publisher")

    def publish(self, event):
        """Content mode: publishes to every channel the event's content rules derive.
        `event` is bytes, str or dict. Returns RedisPublished(channels, receivers)."""
        raw = _json_bytes(event, "event")
        out = _native.RedisPublishedC()
        with _Use(self._handle) as ptr:
            _check(_lib.evr_redis_publish(ptr, raw, len(raw), _byref(out)))
        return RedisPublished(out.channels, out.receivers)

    def publish_channel(self, channel, message):
        """Channel mode: checks `channel` ("timeline:public") and `{"event":E,"payload":P}`,
        then publishes the message unchanged."""
        ch = _text_bytes(channel, "channel")
        raw = _json_bytes(message, "message")
        out = _native.RedisPublishedC()
        with _Use(self._handle) as ptr:
            _check(_lib.evr_redis_publish_channel(ptr, ch, len(ch), raw, len(raw), _byref(out)))
        return RedisPublished(out.channels, out.receivers)

    def close(self):
        """Closes the connection; safe to call more than once."""
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
