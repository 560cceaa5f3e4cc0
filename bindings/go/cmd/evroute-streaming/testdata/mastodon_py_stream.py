"""Mastodon.py's own streaming client against evroute-streaming (used by e2e_test.go).

Usage: mastodon_py_stream.py BASE_URL TOKEN
Prints READY once the stream is started, then the first update it receives as
one JSON line, and exits without waiting for the stream thread.
"""
import json
import os
import sys
import threading
import warnings

from mastodon import Mastodon, StreamListener

# Mastodon.py probes REST endpoints this server does not have, warns, and falls
# back to the base URL for streaming.
warnings.simplefilter("ignore")

base, token = sys.argv[1], sys.argv[2]
api = Mastodon(access_token=token, api_base_url=base, version_check_mode="none", request_timeout=5)
received = threading.Event()
first = {}


class Listener(StreamListener):
    def on_update(self, status):
        if not first:
            first.update(event="update", id=status["id"])
            received.set()


handle = api.stream_public(Listener(), run_async=True)
print("READY", flush=True)
if not received.wait(20):
    sys.exit("no update within 20 s")
print(json.dumps(first), flush=True)
# handle.close() would wait for the stream thread, blocked until the next heartbeat.
os._exit(0)
