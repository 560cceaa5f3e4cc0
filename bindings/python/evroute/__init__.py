"""evroute: Python bindings for the evroute event-routing engine.

docs/protocol.md in the repository is the reference for what the keyword
arguments, streams, frames and errors below mean.

The package is a cffi extension (API mode) compiled against include/evroute.h
and linked with the Rust library, so it needs no shared library, path or
environment variable at run time. Every C call releases the GIL, so a thread
waiting in `next()` does not block the others.

    import evroute
    with evroute.Engine(queue_capacity=1024) as engine:
        sub = engine.subscriber(account="42", languages=["en"])
        sub.subscribe(stream="hashtag", tag="rust")
        engine.publish({"event": "update", "payload": {...}})
        frame = sub.next(timeout=0.5)   # Frame or None; frame.sse, frame.ws

Threads: engines and subscribers may be used from any number of threads.
close() may be called at any time from any thread: it wakes a thread blocked
in next() (which then raises Closed) and frees the C handle once no call is
using it, so a handle is never freed twice or while in use.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import math
import threading
import time
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

try:
    from ._evroute import ffi, lib
except ImportError as e:  # e.g. bindings/python on sys.path instead of the installed package
    raise ImportError(
        f"evroute: the compiled extension evroute._evroute is missing ({e}); install the package "
        "with `pip install ./bindings/python` from the repository instead of importing the source tree"
    ) from e

__all__ = [
    "Engine", "Subscriber", "ReadySet", "Frame", "PublishStats", "EngineStats", "SubscriberStats",
    "Error", "Closed", "NullArgument", "InvalidUtf8", "InvalidJson", "InvalidSubscription",
    "InvalidChannel", "InvalidEvent", "TooLarge", "InvalidConfig", "IoError", "Panic", "InvalidId",
    "lib_version", "lib_path", "set_log_level",
    "RedisNode", "RedisPublisher", "RedisNodeStats", "RedisPublished", "SystemMessage",
]

OK, EMPTY, TIMEOUT, CLOSED, GAP = lib.EVR_OK, lib.EVR_EMPTY, lib.EVR_TIMEOUT, lib.EVR_CLOSED, lib.EVR_GAP

#: What the functions taking JSON accept: encoded JSON (bytes or str) or a dict to encode.
JsonArg = Union[bytes, bytearray, memoryview, str, Dict[str, Any], None]
Text = Union[str, bytes, bytearray, memoryview]

_NULL = ffi.NULL
_new = ffi.new
_gc = ffi.gc
_PUBLISH_STATS = ffi.typeof("evr_publish_stats *")
_SIZE_OUT = ffi.typeof("size_t *")
_object_new = object.__new__
_publish_channel = lib.evrpy_publish_channel
_next = lib.evrpy_next
_status = lib.evrpy_status
_frame_free = lib.evr_frame_free
_HANDLE_CLOSED = lib.EVRPY_HANDLE_CLOSED
_buffer = ffi.buffer
_string = ffi.string
_read = lib.evrpy_read
_BUFFER_TOO_SMALL = lib.EVR_BUFFER_TOO_SMALL
_SSE, _WS = lib.EVR_ENCODING_SSE, lib.EVR_ENCODING_WS


class _Scratch(threading.local):
    """Per-thread C buffers that read_sse()/read_ws() copy into, grown as needed,
    so a read allocates one bytes object per batch (SSE) and none per call here."""

    def __init__(self) -> None:
        self.buf = _new("uint8_t[]", 1)
        self.lens = _new("size_t[]", 1)
        self.out = _new("size_t[3]")

    def get(self, max_bytes: int, max_frames: int) -> Any:
        if len(self.buf) < max_bytes:
            self.buf = _new("uint8_t[]", max_bytes)
        if len(self.lens) < max_frames:
            self.lens = _new("size_t[]", max_frames)
        return self.buf, self.lens, self.out


_scratch = _Scratch()


class Error(Exception):
    """Any evroute failure. `status` is the C evr_status, `message` the C message
    (docs/protocol.md, "Errors")."""

    status: Optional[int] = None

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class Closed(Error):
    """The subscriber (or engine) is closed; `message` says why ("closed", "slow consumer")."""

    status = CLOSED


class NullArgument(Error):
    status = lib.EVR_ERR_NULL


class InvalidUtf8(Error):
    status = lib.EVR_ERR_INVALID_UTF8


class InvalidJson(Error):
    status = lib.EVR_ERR_INVALID_JSON


class InvalidSubscription(Error):
    status = lib.EVR_ERR_INVALID_SUBSCRIPTION


class InvalidChannel(Error):
    status = lib.EVR_ERR_INVALID_CHANNEL


class InvalidEvent(Error):
    status = lib.EVR_ERR_INVALID_EVENT


class TooLarge(Error):
    status = lib.EVR_ERR_TOO_LARGE


class InvalidConfig(Error):
    status = lib.EVR_ERR_INVALID_CONFIG


class IoError(Error):
    status = lib.EVR_ERR_IO


class Panic(Error):
    """A bug inside evroute was caught at the boundary; close the handles involved."""

    status = lib.EVR_ERR_PANIC


class InvalidId(Error):
    """Subscriber.resume() got an id that is not `<epoch>:<seq>`."""

    status = lib.EVR_ERR_INVALID_ID


_ERRORS = {cls.status: cls for cls in (
    NullArgument, InvalidUtf8, InvalidJson, InvalidSubscription, InvalidChannel,
    InvalidEvent, TooLarge, InvalidConfig, IoError, Panic, InvalidId,
)}


def _raise(status: int) -> None:
    """Raises the Error of a negative status. Must run on the thread that made
    the call: evr_last_error() is thread-local."""
    message = _string(lib.evr_last_error()).decode("utf-8", "replace")
    raise _ERRORS.get(status, Error)(message, status)


class PublishStats:
    """What one publish did: matched, delivered, dropped (docs/protocol.md,
    "Counters"). Compares equal to the tuple of its fields and unpacks like
    one. It reads the C struct only when a field is used: most callers of the
    hot publish path never look."""

    __slots__ = ("_c",)
    _fields = ("matched", "delivered", "dropped")

    def __init__(self, matched: int, delivered: int, dropped: int) -> None:
        self._c = _new(_PUBLISH_STATS, (matched, delivered, dropped))

    @property
    def matched(self) -> int:
        return self._c.matched

    @property
    def delivered(self) -> int:
        return self._c.delivered

    @property
    def dropped(self) -> int:
        return self._c.dropped

    def __iter__(self) -> Iterator[int]:
        c = self._c
        return iter((c.matched, c.delivered, c.dropped))

    def __len__(self) -> int:
        return 3

    def _asdict(self) -> Dict[str, int]:
        return dict(zip(self._fields, self))

    def __getitem__(self, index: int) -> int:
        return tuple(self)[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (PublishStats, tuple)):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "PublishStats(matched={}, delivered={}, dropped={})".format(*self)


def _publish_stats(c: Any) -> PublishStats:
    stats = _object_new(PublishStats)  # skips __init__, which would copy
    stats._c = c
    return stats


class EngineStats(NamedTuple):
    published: int
    rejected: int
    matched: int
    delivered: int
    dropped: int
    subscribers: int
    subscriptions: int
    #: History ring entries (one per retained event and channel) and their bytes.
    history_entries: int
    history_bytes: int


class SubscriberStats(NamedTuple):
    matched: int
    delivered: int
    dropped: int
    read: int
    depth: int


class RedisNodeStats(NamedTuple):
    received: int
    rejected: int
    ignored: int
    reconnects: int
    presence_keys: int
    subscriptions: int
    system_received: int
    system_dropped: int


class SystemMessage(NamedTuple):
    """A message of a system channel the host listens to (RedisNode.listen_system)."""
    channel: str  # as listened to, without the namespace
    payload: bytes  # as published, e.g. b'{"event":"kill"}'


class RedisPublished(NamedTuple):
    channels: int
    receivers: int


def _fields(cls: Any, cdata: Any) -> Any:
    return cls(*(getattr(cdata, f) for f in cls._fields))


def lib_version() -> str:
    """The version of the linked evroute library (evr_version())."""
    return _string(lib.evr_version()).decode()


def lib_path() -> str:
    """The path of the extension module that carries the evroute library."""
    from . import _evroute

    return _evroute.__file__


def _live() -> Dict[str, int]:
    """How many engines, subscribers, Redis nodes, publishers and ready sets are not freed
    yet: a check for leaks and double frees."""
    return {name: lib.evrpy_live(kind) for name, kind in (
        ("engines", lib.EVRPY_ENGINE), ("subscribers", lib.EVRPY_SUBSCRIBER),
        ("redis_nodes", lib.EVRPY_REDIS_NODE), ("redis_publishers", lib.EVRPY_REDIS_PUBLISHER),
        ("ready_sets", lib.EVRPY_READY_SET))}


# evr_log_level -> logging level (TRACE below DEBUG).
_PY_LEVELS = {lib.EVR_LOG_ERROR: logging.ERROR, lib.EVR_LOG_WARN: logging.WARNING, lib.EVR_LOG_INFO: logging.INFO,
              lib.EVR_LOG_DEBUG: logging.DEBUG, lib.EVR_LOG_TRACE: 5}


@ffi.def_extern()
def evrpy_log(_user_data: Any, level: int, target: Any, message: Any) -> None:
    """The evr_log_fn: runs on whichever thread logged, often the library's own."""
    name = _string(target).decode("utf-8", "replace").replace("::", ".")  # "evroute.redis_node"
    logging.getLogger(name).log(_PY_LEVELS.get(level, logging.ERROR), "%s", _string(message).decode("utf-8", "replace"))


def set_log_level(level: int) -> None:
    """Sends the records the evroute library logs at `level` (a logging level)
    and above to the logging module, as loggers named after the Rust module
    ("evroute.redis_node"). At import the level is logging.INFO; a level above
    logging.ERROR turns it off. The library itself never writes to stderr."""
    for c_level, bound in ((lib.EVR_LOG_TRACE, 5), (lib.EVR_LOG_DEBUG, logging.DEBUG), (lib.EVR_LOG_INFO, logging.INFO),
                           (lib.EVR_LOG_WARN, logging.WARNING), (lib.EVR_LOG_ERROR, logging.ERROR)):
        if level <= bound:
            break
    else:
        c_level = lib.EVR_LOG_OFF
    callback = _NULL if c_level == lib.EVR_LOG_OFF else lib.evrpy_log
    status = lib.evr_set_log_callback(c_level, callback, _NULL)
    if status < 0:
        _raise(status)


set_log_level(logging.INFO)
# The library's threads may still log while the interpreter shuts down; stop first.
atexit.register(lib.evr_set_log_callback, lib.EVR_LOG_OFF, _NULL, _NULL)


def _text_bytes(value: Text, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


def _json_bytes(value: JsonArg, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if value is None:
        return b""
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")  # lone surrogates reach the C UTF-8 check
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    raise TypeError(f"{what} must be bytes, str or dict, not {type(value).__name__}")


def _options(positional: JsonArg, keywords: Dict[str, Any], what: str) -> bytes:
    """One JSON argument given either as a dict/str/bytes or as keyword arguments."""
    if positional is not None and keywords:
        raise TypeError(f"give {what} either as one argument or as keywords, not both")
    return _json_bytes(positional if positional is not None else keywords, what)


class _Handle:
    """Owns one C handle through an evrpy_handle (see _build_ffi.py): the C
    object is freed exactly once, by close() or garbage collection, and
    never while a call on another thread still uses it."""

    __slots__ = ("h", "_kind")

    def __init__(self, kind: int, ptr: Any, name: str) -> None:
        h = lib.evrpy_handle_new(kind, ptr)  # owns ptr from here, even when it fails
        if h == _NULL:
            raise MemoryError(f"evroute: no memory for a {name} handle")
        self.h = _gc(h, lib.evrpy_dispose)
        self._kind = name

    def acquire(self) -> Any:
        """The C object, held until release(); raises Closed once closed."""
        ptr = lib.evrpy_acquire(self.h)
        if ptr == _NULL:
            raise Closed(f"{self._kind} is closed")
        return ptr

    def release(self) -> None:
        lib.evrpy_release(self.h)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(ptr, *args) on the live C object; raises Closed once closed."""
        ptr = self.acquire()
        try:
            return fn(ptr, *args)
        finally:
            lib.evrpy_release(self.h)

    def check(self, fn: Callable[..., int], *args: Any) -> int:
        """call(), raising the Error of a negative status."""
        status = self.call(fn, *args)
        if status < 0:
            _raise(status)
        return status

    def stats(self, fn: Callable[..., int], ctype: str, cls: Any) -> Any:
        """A counters struct read by fn(ptr, out), as the NamedTuple cls."""
        out = _new(ctype)
        self.check(fn, out)
        return _fields(cls, out)

    @property
    def closing(self) -> bool:
        return bool(lib.evrpy_closed(self.h))

    def close(self) -> None:
        lib.evrpy_close(self.h)


def _frame_bytes(getter: Any, frame: Any) -> Optional[bytes]:
    n = _new(_SIZE_OUT)
    p = getter(frame, n)
    return None if p == _NULL else _buffer(p, n[0])[:]


class Frame:
    """One delivery. It holds the C frame and reads each field when it is
    accessed (docs/protocol.md, "Frames"); the C frame is freed with the object.

    event: str; payload: str or None (absent payload); stream: list of str;
    sse and ws: the exact bytes to write to an SSE or WebSocket client;
    id: the event id "<epoch>:<seq>" when the engine keeps history, else None;
    queued_at: the message's queued_at in ms since the Unix epoch, else None."""

    __slots__ = ("_frame",)

    def __init__(self, frame: Any) -> None:
        self._frame = frame

    @property
    def sse(self) -> bytes:
        return _frame_bytes(lib.evr_frame_sse, self._frame) or b""

    @property
    def ws(self) -> bytes:
        return _frame_bytes(lib.evr_frame_ws, self._frame) or b""

    @property
    def event(self) -> str:
        return (_frame_bytes(lib.evr_frame_event, self._frame) or b"").decode("utf-8")

    @property
    def payload(self) -> Optional[str]:
        raw = _frame_bytes(lib.evr_frame_payload, self._frame)
        return None if raw is None else raw.decode("utf-8")

    @property
    def stream(self) -> List[str]:
        return json.loads(_frame_bytes(lib.evr_frame_stream, self._frame) or b"[]")

    @property
    def id(self) -> Optional[str]:
        raw = _frame_bytes(lib.evr_frame_id, self._frame)
        return None if raw is None else raw.decode("ascii")

    @property
    def queued_at(self) -> Optional[int]:
        """The message's queued_at (ms since the Unix epoch; Rails sets it), or None."""
        return lib.evr_frame_queued_at(self._frame) or None

    def __repr__(self) -> str:
        return f"Frame(event={self.event!r}, stream={self.stream!r}, sse={len(self.sse)} bytes)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frame) and (self.sse, self.ws) == (other.sse, other.ws)

    __hash__ = None  # type: ignore[assignment]


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _timeout_ms(seconds: float) -> int:
    if seconds < 0:
        raise ValueError("timeout must be >= 0 or None")
    # Round up so a tiny positive timeout still waits.
    return min(math.ceil(seconds * 1000), 0xFFFFFFFF)


class Engine:
    """One routing domain. Keyword arguments are the engine config keys
    (docs/protocol.md, "Engine config": queue_capacity, overflow, max_event_bytes,
    delete_memory, redis_namespace, and history={"max_events": N, "max_age_s": S}
    for Subscriber.resume()).

    Usable as a context manager; close() frees it. Subscribers stay usable after
    their engine is closed (they keep the routing domain alive)."""

    def __init__(self, config: JsonArg = None, **kwargs: Any) -> None:
        raw = _options(config, kwargs, "engine config")
        out = _new("evr_engine **")
        status = lib.evr_engine_new(raw, len(raw), out)
        if status < 0:
            _raise(status)
        self._handle = _Handle(lib.EVRPY_ENGINE, out[0], "engine")

    def subscriber(self, options: JsonArg = None, **kwargs: Any) -> Subscriber:
        """A new Subscriber; keyword arguments are the subscriber keys
        (docs/protocol.md, "Subscriber options": account, languages, blocked_accounts,
        muted_accounts, blocked_domains, blocked_by_accounts, keyword_filters,
        queue_capacity, overflow, event_ids). keyword_filters, even [], makes the
        subscriber filter-annotated: statuses on public and hashtag streams carry
        Mastodon's "filtered" key."""
        raw = _options(options, kwargs, "subscriber options")
        out = _new("evr_subscriber **")
        self._handle.check(lib.evr_subscriber_new, raw, len(raw), out)
        return Subscriber(out[0])

    def publish(self, event: JsonArg) -> PublishStats:
        """Content mode: routes an event by its own content (docs/protocol.md,
        "Event modes"). `event` is bytes, str or dict. Returns PublishStats."""
        raw = _json_bytes(event, "event")
        stats = _new(_PUBLISH_STATS)
        self._handle.check(lib.evr_publish, raw, len(raw), stats)
        return _publish_stats(stats)

    def publish_channel(self, channel: Text, message: JsonArg) -> PublishStats:
        """Channel mode: a Mastodon Redis channel ("timeline:public") and
        `{"event":E,"payload":P}` (docs/protocol.md, "Event modes")."""
        ch = channel.encode("utf-8", "surrogatepass") if channel.__class__ is str else _text_bytes(channel, "channel")
        raw = message if message.__class__ is bytes else _json_bytes(message, "message")
        stats = _new(_PUBLISH_STATS)
        status = _publish_channel(self._handle.h, ch, len(ch), raw, len(raw), stats)
        if status < 0:
            _raise(status)
        if status == _HANDLE_CLOSED:
            raise Closed("engine is closed")
        return _publish_stats(stats)

    def attach_redis(self, url: Text, **options: Any) -> RedisNode:
        """Attaches this engine to Redis and returns the running RedisNode
        (docs/protocol.md, "Redis").

        It PSUBSCRIBEs `[<redis_namespace>:]timeline:*` (or, with
        subscribe="channels", SUBSCRIBEs exactly the channels local subscribers
        listen to), routes every message in channel mode and keeps Mastodon's
        presence keys. Keyword options: subscribe ("pattern" or "channels"),
        presence_ttl_secs, presence_refresh_secs, poll_interval_ms, backoff_min_ms,
        backoff_max_ms, connect_timeout_ms. An unreachable Redis is retried in the
        background: use wait_subscribed() to know when messages arrive."""
        u = _text_bytes(url, "url")
        raw = _json_bytes(options, "redis options") if options else b""
        out = _new("evr_redis_node **")
        self._handle.check(lib.evr_redis_node_attach, u, len(u), raw, len(raw), out)
        return RedisNode(out[0])

    def stats(self) -> EngineStats:
        return self._handle.stats(lib.evr_engine_get_stats, "evr_engine_stats *", EngineStats)

    @property
    def closed(self) -> bool:
        return self._handle.closing

    def close(self) -> None:
        """Frees the engine; safe to call more than once."""
        self._handle.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Subscriber:
    """One client connection: a bounded frame queue plus subscriptions.

    Create it with Engine.subscriber(). Usable as a context manager; close()
    unsubscribes everything and frees it. `async for frame in sub` and
    `await sub.next_async()` wait on the readiness fd with loop.add_reader."""

    def __init__(self, ptr: Any) -> None:
        self._handle = _Handle(lib.EVRPY_SUBSCRIBER, ptr, "subscriber")

    def _call_json(self, fn: Any, raw: bytes) -> None:
        self._handle.check(fn, raw, len(raw))

    def subscribe(self, subscription: JsonArg = None, **kwargs: Any) -> None:
        """Adds a subscription (docs/protocol.md, "Subscriptions"):
        subscribe(stream="hashtag", tag="rust"), or one dict/str/bytes such as a
        client's WebSocket subscribe message. origin="local" or "remote" keeps one
        side of a public or hashtag stream."""
        self._call_json(lib.evr_subscribe, _options(subscription, kwargs, "subscription"))

    def unsubscribe(self, subscription: JsonArg = None, **kwargs: Any) -> None:
        """Removes the subscription the same arguments would have created."""
        self._call_json(lib.evr_unsubscribe, _options(subscription, kwargs, "subscription"))

    def resume(self, last_id: Text) -> bool:
        """Replays what the client missed since `last_id`, the "<epoch>:<seq>" id
        of the last frame it saw (SSE Last-Event-ID): retained frames in order and
        through the same filters, then live frames with no gap and no duplicate.
        Call after subscribing, before reading. Returns True when events may be
        missing (id from another engine run, history too short or off, queue too
        small); what was retained is delivered anyway and the client should be
        told. Raises InvalidId for a malformed id."""
        raw = _text_bytes(last_id, "last_id")
        return self._handle.check(lib.evr_subscriber_resume, raw, len(raw)) == GAP

    def update(self, filters: JsonArg = None, **kwargs: Any) -> None:
        """Replaces the viewer state as a whole (docs/protocol.md, "Viewer
        filters"); keys not given become empty, and without keyword_filters the
        subscriber is no longer filter-annotated. On error the old state stays."""
        self._call_json(lib.evr_subscriber_update, _options(filters, kwargs, "filters"))

    def _next(self, ms: int) -> Union[Frame, int]:
        """One evr_subscriber_next: a Frame, or EMPTY/TIMEOUT; raises Closed."""
        ptr = _next(self._handle.h, ms)
        if ptr:
            frame = _object_new(Frame)  # skips __init__: a Python call per frame
            frame._frame = _gc(ptr, _frame_free)
            return frame
        status = _status()
        if status == CLOSED or status == _HANDLE_CLOSED:
            raise Closed(self.closed or "closed")
        if status < 0:
            _raise(status)
        return status

    def next(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The next Frame, or None when nothing arrived in `timeout` seconds
        (0: don't wait; None: wait until a frame arrives or the subscriber closes).
        Raises Closed once the subscriber is closed."""
        if timeout == 0:
            got = self._next(0)
            return None if got.__class__ is int else got  # type: ignore[return-value]
        got = self._wait(self._next, timeout)
        return None if got.__class__ is int else got  # type: ignore[no-any-return]

    def _wait(self, step: Callable[[int], Any], timeout: Optional[float]) -> Any:
        """step(ms) until it returns something other than a status (EMPTY or
        TIMEOUT) or `timeout` seconds pass (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        ms = 250 if timeout is None else _timeout_ms(timeout)
        while True:
            got = step(ms)
            if got.__class__ is not int:
                return got
            if deadline is None:
                continue  # waits in slices so Ctrl-C reaches the main thread
            remaining = deadline - time.monotonic()
            if got == EMPTY or remaining <= 0:
                return got
            ms = _timeout_ms(remaining)

    def _read(self, encoding: int, ms: int, max_bytes: int, max_frames: int) -> Any:
        """One evrpy_read into this thread's scratch buffers: (frames, bytes, buf,
        lens, emptied), or EMPTY/TIMEOUT; raises Closed. A frame longer than max_bytes gets
        a buffer of its size, so frames waiting always yield at least one."""
        if max_bytes <= 0 or max_frames <= 0:
            raise ValueError("max_bytes and max_frames must be positive")
        # SSE frames delimit themselves: no lengths, and no frame limit but max_bytes.
        sse = encoding == _SSE
        while True:
            buf, lens, out = _scratch.get(max_bytes, 1 if sse else max_frames)
            status = _read(self._handle.h, ms, encoding, buf, max_bytes, _NULL if sse else lens, max_frames, out)
            if status == OK:
                return out[0], out[1], buf, lens, out[2] != 0
            if status == _BUFFER_TOO_SMALL:
                max_bytes = out[1]
                continue
            if status == CLOSED or status == _HANDLE_CLOSED:
                raise Closed(self.closed or "closed")
            if status < 0:
                _raise(status)
            return status

    def _read_waiting(self, encoding: int, timeout: Optional[float], max_bytes: int, max_frames: int) -> Any:
        """_read() with next()'s timeout rules."""
        if timeout == 0:
            return self._read(encoding, 0, max_bytes, max_frames)
        return self._wait(lambda ms: self._read(encoding, ms, max_bytes, max_frames), timeout)

    def read_sse(self, timeout: Optional[float] = 0, max_bytes: int = 65536) -> bytes:
        """The SSE bytes of the frames waiting, oldest first, back to back and ready
        for the socket: whole frames up to max_bytes (at least one frame), taken and
        copied in one C call with no Python object per frame. b"" when nothing
        arrived within `timeout` seconds (0: don't wait; None: until a frame
        arrives). Raises Closed once the subscriber is closed."""
        got = self._read_waiting(_SSE, timeout, max_bytes, max_bytes)  # a frame is > 1 byte
        if got.__class__ is not tuple:
            return b""
        return _buffer(got[2], got[1])[:]

    def read_ws(self, timeout: Optional[float] = 0, max_bytes: int = 65536, max_frames: int = 256) -> List[bytes]:
        """Like read_sse() for WebSocket: the messages of up to max_frames waiting
        frames (one bytes each, to send as separate messages); [] when none."""
        got = self._read_waiting(_WS, timeout, max_bytes, max_frames)
        return [] if got.__class__ is not tuple else _messages(got)

    def drain_sse(self, max_bytes: int = 65536) -> Tuple[bytes, bool]:
        """read_sse() without waiting, and whether the queue was left empty: a
        ReadySet host drains a token's subscriber until that is True (b"", True
        when nothing waits). Raises Closed once the subscriber is closed."""
        got = self._read(_SSE, 0, max_bytes, max_bytes)
        if got.__class__ is not tuple:
            return b"", True
        return _buffer(got[2], got[1])[:], got[4]

    def drain_ws(self, max_bytes: int = 65536, max_frames: int = 256) -> Tuple[List[bytes], bool]:
        """read_ws() without waiting, and whether the queue was left empty (see
        drain_sse())."""
        got = self._read(_WS, 0, max_bytes, max_frames)
        if got.__class__ is not tuple:
            return [], True
        return _messages(got), got[4]

    def attach_ready_set(self, ready_set: "ReadySet", token: int) -> None:
        """Attaches this subscriber to `ready_set` under `token` (an int in
        [0, 2**64), unique within the set): its frames then list the token in the
        set instead of making fileno() readable. Raises InvalidConfig, naming
        the problem, when the token is taken, the subscriber is already attached,
        or fileno() was called; Closed when either is closed."""
        ptr = ready_set._handle.acquire()
        try:
            self._handle.check(lib.evr_subscriber_attach_ready_set, ptr, token)
        finally:
            ready_set._handle.release()

    def drain(self) -> Iterator[Frame]:
        """Yields the frames waiting now without blocking (after the fd fired)."""
        while True:
            frame = self.next(0)
            if frame is None:
                return
            yield frame

    def fileno(self) -> int:
        """The readiness fd: readable while frames wait or after close. Owned by the
        subscriber: never read or close it, and stop polling it before close().
        Raises InvalidConfig once the subscriber is attached to a ReadySet."""
        out = _new("int *", -1)
        self._handle.check(lib.evr_subscriber_fd, out)
        return out[0]

    async def next_async(self, timeout: Optional[float] = None) -> Optional[Frame]:
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
            handle = self._handle
            ptr = handle.acquire()
            try:
                out = _new("int *", -1)
                status = lib.evr_subscriber_fd(ptr, out)
                if status < 0:
                    _raise(status)
                fd = out[0]
                ready = loop.create_future()
                loop.add_reader(fd, _set_once, ready)
                try:
                    await asyncio.wait_for(ready, remaining)
                except asyncio.TimeoutError:
                    pass
                finally:
                    loop.remove_reader(fd)
            finally:
                handle.release()

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self

    async def __anext__(self) -> Frame:
        try:
            frame = await self.next_async()
        except Closed:
            raise StopAsyncIteration from None
        assert frame is not None  # no timeout: next_async returns a frame or raises
        return frame

    def stats(self) -> SubscriberStats:
        return self._handle.stats(lib.evr_subscriber_get_stats, "evr_subscriber_stats *", SubscriberStats)

    @property
    def closed(self) -> Optional[str]:
        """None while open, else why it closed: "closed" or "slow consumer"."""
        try:
            reason = self._handle.call(lib.evr_subscriber_closed)
        except Closed:
            return "closed"
        return None if reason == _NULL else _string(reason).decode()

    def close(self) -> None:
        """Unsubscribes everything and frees the subscriber; wakes any thread in next().
        Safe to call more than once and from any thread."""
        self._handle.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _messages(got: Any) -> List[bytes]:
    """The WebSocket messages of a _read() result, one bytes each."""
    frames, size, buf, lens = got[0], got[1], got[2], got[3]
    data = _buffer(buf, size)[:]
    out, start = [], 0
    for i in range(frames):
        end = start + lens[i]
        out.append(data[start:end])
        start = end
    return out


class ReadySet:
    """One readiness fd for many subscribers (docs/protocol.md, "Ready sets").

    Attach subscribers with Subscriber.attach_ready_set(set, token); the set's
    fileno() polls readable while it lists tokens of subscribers with frames
    waiting (or closed), and take() hands them out. After taking a token, drain
    its subscriber (drain_sse()/drain_ws()) until it reports the queue emptied or
    raises Closed; if you stop earlier, coming back to it is yours, as no new
    token comes while frames are left. A token may come for a queue that is
    already empty; take() never returns the token of a subscriber closed
    before the take began."""

    def __init__(self) -> None:
        out = _new("evr_ready_set **")
        status = lib.evr_ready_set_new(out)
        if status < 0:
            _raise(status)
        self._handle = _Handle(lib.EVRPY_READY_SET, out[0], "ready set")

    def fileno(self) -> int:
        """The set's fd (level-triggered). Owned by the set: never read or close it."""
        out = _new("int *", -1)
        self._handle.check(lib.evr_ready_set_fd, out)
        return out[0]

    def take(self, max_tokens: int = 256) -> List[int]:
        """Up to max_tokens listed tokens, oldest first ([] when none)."""
        if max_tokens <= 0:
            raise ValueError("max_tokens must be positive")
        tokens, n = _new("uint64_t[]", max_tokens), _new("size_t *")
        self._handle.check(lib.evr_ready_set_take, tokens, max_tokens, n)
        return list(tokens[0:n[0]])

    def close(self) -> None:
        """Releases the set; attached subscribers keep the engine's side of it
        until they are closed. Safe to call more than once."""
        self._handle.close()

    def __enter__(self) -> ReadySet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RedisNode:
    """An engine's link to Redis, from Engine.attach_redis(). Its threads run
    until stop() or close() (or garbage collection); it keeps the routing domain
    alive, so the engine may be closed first. Usable as a context manager."""

    def __init__(self, ptr: Any) -> None:
        # close() while another thread waits in wait_subscribed() stops the node
        # first, which ends that wait; the last call out frees it.
        self._handle = _Handle(lib.EVRPY_REDIS_NODE, ptr, "redis node")

    def wait_subscribed(self, timeout: float = 5.0) -> bool:
        """True once the node is subscribed (messages published from now on are
        received), False if it was not within `timeout` seconds. Raises Closed
        once stopped."""
        return self._wait(lib.evr_redis_node_wait_subscribed, timeout)

    def wait_synced(self, timeout: float = 5.0) -> bool:
        """True once the node receives every channel this engine's subscribers
        listen to now (in the channels mode a new channel is subscribed within a
        poll interval), False if not within `timeout` seconds. Raises Closed
        once stopped."""
        return self._wait(lib.evr_redis_node_wait_synced, timeout)

    def _wait(self, fn: Any, timeout: float) -> bool:
        status = self._handle.check(fn, _timeout_ms(timeout))
        if status == CLOSED:
            raise Closed("redis node is stopped")
        return status == OK

    def stats(self) -> RedisNodeStats:
        return self._handle.stats(lib.evr_redis_node_get_stats, "evr_redis_node_stats *", RedisNodeStats)

    def listen_system(self, channel: Text) -> None:
        """Listens to a system channel, Mastodon's "timeline:access_token:<id>" or
        "timeline:system:<account>" (without the namespace): the node receives it
        next to the channels it routes (again after a reconnect; wait_synced()
        covers it), keeps no presence key for it and queues its messages for
        next_system(). Reference-counted: each call needs one unlisten_system().
        Raises InvalidChannel for a channel outside "timeline:" or one the engine routes."""
        c = _text_bytes(channel, "channel")
        self._handle.check(lib.evr_redis_node_listen_system, c, len(c))

    def unlisten_system(self, channel: Text) -> bool:
        """Ends one listen_system() of the channel (the last one unsubscribes it);
        False when it was not listened to."""
        c = _text_bytes(channel, "channel")
        return self._handle.check(lib.evr_redis_node_unlisten_system, c, len(c)) == OK

    def next_system(self, timeout: float = 0) -> Optional[SystemMessage]:
        """The next message of a listened system channel, or None when none came
        within `timeout` seconds. Raises Closed once the node is stopped and every
        message received before was handed out."""
        out = _new("evr_system_message **")
        status = self._handle.check(lib.evr_redis_node_next_system, _timeout_ms(timeout), out)
        if status == CLOSED:
            raise Closed("redis node is stopped")
        if status != OK:
            return None
        msg = out[0]
        try:
            channel = _frame_bytes(lib.evr_system_message_channel, msg)
            payload = _frame_bytes(lib.evr_system_message_payload, msg)
        finally:
            lib.evr_system_message_free(msg)
        assert channel is not None and payload is not None
        return SystemMessage(channel.decode("utf-8"), payload)

    def stop(self) -> None:
        """Stops receiving and refreshing presence keys; stats() still works. Idempotent."""
        self._handle.check(lib.evr_redis_node_stop)

    def close(self) -> None:
        """Stops the node and frees it; safe to call more than once."""
        self._handle.close()

    def __enter__(self) -> RedisNode:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RedisPublisher:
    """Publishes events to Redis as Mastodon channel messages, so every attached
    node delivers them (docs/protocol.md, "Redis"). `namespace` must match the
    nodes' redis_namespace. Raises IoError when Redis cannot be reached; it does
    not reconnect: after an IoError, close it and create a new one. Usable as a
    context manager."""

    def __init__(self, url: Text, namespace: Optional[Text] = None) -> None:
        u = _text_bytes(url, "url")
        ns = b"" if namespace is None else _text_bytes(namespace, "namespace")
        out = _new("evr_redis_publisher **")
        status = lib.evr_redis_publisher_new(u, len(u), ns, len(ns), out)
        if status < 0:
            _raise(status)
        self._handle = _Handle(lib.EVRPY_REDIS_PUBLISHER, out[0], "redis publisher")

    def publish(self, event: JsonArg) -> RedisPublished:
        """Content mode: publishes to every channel the event's content rules derive.
        `event` is bytes, str or dict. Returns RedisPublished(channels, receivers)."""
        raw = _json_bytes(event, "event")
        out = _new("evr_redis_published *")
        self._handle.check(lib.evr_redis_publish, raw, len(raw), out)
        return RedisPublished(out.channels, out.receivers)

    def publish_channel(self, channel: Text, message: JsonArg) -> RedisPublished:
        """Channel mode: checks `channel` ("timeline:public") and `{"event":E,"payload":P}`,
        then publishes the message unchanged."""
        ch = _text_bytes(channel, "channel")
        raw = _json_bytes(message, "message")
        out = _new("evr_redis_published *")
        self._handle.check(lib.evr_redis_publish_channel, ch, len(ch), raw, len(raw), out)
        return RedisPublished(out.channels, out.receivers)

    def close(self) -> None:
        """Closes the connection; safe to call more than once."""
        self._handle.close()

    def __enter__(self) -> RedisPublisher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
