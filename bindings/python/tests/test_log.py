"""The library's log records reach the logging module (evr_set_log_callback)."""

import logging
import threading
import time

import evroute


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []  # list.append is atomic; Handler.handle() holds self.lock around emit

    def emit(self, record):
        self.records.append(record)

    def snapshot(self):
        return list(self.records)


def test_a_node_on_an_unreachable_redis_logs_a_warning_then_nothing_once_off():
    handler = Collect()
    logger = logging.getLogger("evroute")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        evroute.set_log_level(logging.WARNING)
        with evroute.Engine() as engine, engine.attach_redis(
                "redis://127.0.0.1:1/", backoff_min_ms=20, backoff_max_ms=20, poll_interval_ms=10):
            deadline = time.monotonic() + 10
            while not handler.snapshot() and time.monotonic() < deadline:
                time.sleep(0.01)
            records = handler.snapshot()
            assert records, "no record from the node"
            first = records[0]
            assert first.levelno == logging.WARNING
            assert first.name == "evroute.redis_node"
            assert "connection failed" in first.getMessage()
            assert first.thread != threading.get_ident()  # logged on the node's own thread

            evroute.set_log_level(logging.CRITICAL)  # above ERROR: off
            before = len(handler.snapshot())
            time.sleep(0.3)  # failures every 20 ms; every tenth is logged
            assert len(handler.snapshot()) == before
    finally:
        evroute.set_log_level(logging.INFO)
        logger.removeHandler(handler)
        logger.setLevel(old_level)
