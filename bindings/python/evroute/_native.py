"""Loads libevroute and declares the C ABI of include/evroute.h for ctypes."""

import ctypes
import ctypes.util
import os
from pathlib import Path

# The ABI this package was written against (EVR_VERSION_MAJOR/MINOR).
ABI_VERSION = (0, 1)

OK, EMPTY, TIMEOUT, CLOSED = 0, 1, 2, 3


class PublishStatsC(ctypes.Structure):
    _fields_ = [("matched", ctypes.c_uint64), ("delivered", ctypes.c_uint64), ("dropped", ctypes.c_uint64)]


class EngineStatsC(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("published", "rejected", "matched", "delivered", "dropped", "subscribers", "subscriptions")
    ]


class SubscriberStatsC(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("matched", "delivered", "dropped", "read", "depth")]


class RedisNodeStatsC(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("received", "rejected", "ignored", "reconnects", "presence_keys")]


class RedisPublishedC(ctypes.Structure):
    _fields_ = [("channels", ctypes.c_uint64), ("receivers", ctypes.c_uint64)]


def _candidates():
    env = os.environ.get("EVROUTE_LIB")
    if env:
        # An explicit choice is never silently replaced by another library.
        return [env]
    root = Path(__file__).resolve().parents[3]
    targets = []
    if os.environ.get("CARGO_TARGET_DIR"):
        targets.append(Path(os.environ["CARGO_TARGET_DIR"]))
    targets.append(root / "target")
    found = [str(t / profile / "libevroute.so") for t in targets for profile in ("release", "debug")]
    found = [p for p in found if os.path.exists(p)]
    system = ctypes.util.find_library("evroute")
    if system:
        found.append(system)
    return found


def _load():
    candidates = _candidates()
    if not candidates:
        raise ImportError(
            "evroute: libevroute.so not found; run `cargo build --release --lib` in the repository "
            "or set EVROUTE_LIB to the library's path"
        )
    lib = ctypes.CDLL(candidates[0])  # CDLL releases the GIL during every call
    _declare(lib)
    version = lib.evr_version().decode()
    major, minor = (int(x) for x in version.split(".")[:2])
    if (major, minor) != ABI_VERSION:
        raise ImportError(f"evroute: {candidates[0]} is version {version}, this package needs {ABI_VERSION}")
    return lib, candidates[0]


def _declare(lib):
    c = ctypes
    u8p, size, vp = c.c_char_p, c.c_size_t, c.c_void_p
    sizep = c.POINTER(c.c_size_t)
    status = c.c_int
    protos = {
        "evr_engine_new": (status, [u8p, size, c.POINTER(vp)]),
        "evr_engine_free": (None, [vp]),
        "evr_subscriber_new": (status, [vp, u8p, size, c.POINTER(vp)]),
        "evr_subscriber_update": (status, [vp, u8p, size]),
        "evr_subscriber_free": (None, [vp]),
        "evr_subscriber_close": (status, [vp]),
        "evr_subscriber_closed": (c.c_char_p, [vp]),
        "evr_subscribe": (status, [vp, u8p, size]),
        "evr_unsubscribe": (status, [vp, u8p, size]),
        "evr_publish": (status, [vp, u8p, size, c.POINTER(PublishStatsC)]),
        "evr_publish_channel": (status, [vp, u8p, size, u8p, size, c.POINTER(PublishStatsC)]),
        "evr_subscriber_next": (status, [vp, c.c_uint32, c.POINTER(vp)]),
        "evr_subscriber_fd": (status, [vp, c.POINTER(c.c_int)]),
        "evr_engine_get_stats": (status, [vp, c.POINTER(EngineStatsC)]),
        "evr_subscriber_get_stats": (status, [vp, c.POINTER(SubscriberStatsC)]),
        "evr_frame_sse": (vp, [vp, sizep]),
        "evr_frame_ws": (vp, [vp, sizep]),
        "evr_frame_event": (vp, [vp, sizep]),
        "evr_frame_payload": (vp, [vp, sizep]),
        "evr_frame_stream": (vp, [vp, sizep]),
        "evr_frame_free": (None, [vp]),
        "evr_last_error": (c.c_char_p, []),
        "evr_version": (c.c_char_p, []),
    }
    # Exported only by a library built with `--features redis`.
    if hasattr(lib, "evr_redis_node_attach"):
        protos.update({
            "evr_redis_node_attach": (status, [vp, u8p, size, u8p, size, c.POINTER(vp)]),
            "evr_redis_node_wait_subscribed": (status, [vp, c.c_uint32]),
            "evr_redis_node_get_stats": (status, [vp, c.POINTER(RedisNodeStatsC)]),
            "evr_redis_node_stop": (status, [vp]),
            "evr_redis_node_free": (None, [vp]),
            "evr_redis_publisher_new": (status, [u8p, size, u8p, size, c.POINTER(vp)]),
            "evr_redis_publish": (status, [vp, u8p, size, c.POINTER(RedisPublishedC)]),
            "evr_redis_publish_channel": (status, [vp, u8p, size, u8p, size, c.POINTER(RedisPublishedC)]),
            "evr_redis_publisher_free": (None, [vp]),
        })
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


lib, path = _load()
has_redis = hasattr(lib, "evr_redis_node_attach")


def has_symbol(name):
    return getattr(lib, name, None) is not None
