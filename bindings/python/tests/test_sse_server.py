"""End to end: the example server in a subprocess, a real HTTP client, corpus events."""

import http.client
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import MASTODON, corpus, event_name, mastodon, payload_of, sse, with_fields

SERVER = Path(__file__).resolve().parents[1] / "examples" / "sse_server.py"


@pytest.fixture
def server(request):
    heartbeat = getattr(request, "param", 60)
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", "0", "--heartbeat", str(heartbeat)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        yield int(line.rsplit(":", 1)[1])
    finally:
        proc.terminate()
        proc.wait(10)


class Stream:
    def __init__(self, port, path):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.request("GET", "/api/v1/streaming/" + path)
        self.resp = self.conn.getresponse()
        self.buf = b""

    def read_until(self, size):
        deadline = time.monotonic() + 10
        while len(self.buf) < size and time.monotonic() < deadline:
            chunk = self.resp.read1(65536)
            if not chunk:
                break
            self.buf += chunk
        return self.buf

    def close(self):
        self.conn.close()


def post(port, body, query=""):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/publish" + query, body=body)
    resp = conn.getresponse()
    data = json.loads(resp.read())
    conn.close()
    return resp.status, data


def corpus_sse(prefix):
    doc = corpus(mastodon(prefix))
    return sse(event_name(doc), payload_of(doc))


def test_streams_deliver_exact_sse_frames(server):
    streams = {
        "public": Stream(server, "public"),
        "local": Stream(server, "public/local"),
        "tag": Stream(server, "hashtag?tag=" + quote("#TEST!")),
        "list": Stream(server, "list?list=5"),
        "user": Stream(server, "user?account=14715"),
    }
    for s in streams.values():
        assert s.resp.status == 200
        assert s.resp.getheader("Content-Type") == "text/event-stream"
        assert s.read_until(3) == b":)\n"  # subscribed from here on

    listed = with_fields(corpus(mastodon("01")), {"lists": [5]})
    for name in MASTODON:
        status, stats = post(server, corpus("mastodon/" + name))
        assert status == 200 and stats["dropped"] == 0
    assert post(server, listed)[1] == {"matched": 1, "delivered": 1, "dropped": 0}

    want = {
        "public": [corpus_sse(n) for n in ("07", "08", "10", "11", "12", "13", "14", "15", "16")],
        "local": [corpus_sse(n) for n in ("07", "11", "12", "13", "14", "15", "16")],
        "tag": [corpus_sse(n) for n in ("14", "15", "16")],
        "list": [sse("update", payload_of(listed))],
        "user": [sse("filters_changed", None)] + [corpus_sse(n) for n in ("04", "05", "06")],
    }
    for key, frames in want.items():
        expected = b":)\n" + b"".join(frames)
        assert streams[key].read_until(len(expected)) == expected, key
    # Nothing more arrives (a frame published next is the very next thing read).
    assert post(server, b'{"event":"delete","payload":"1"}', "?channel=timeline:public")[0] == 200
    expected = b":)\n" + b"".join(want["public"]) + sse("delete", b"1")
    assert streams["public"].read_until(len(expected)) == expected
    for s in streams.values():
        s.close()


@pytest.mark.parametrize("server", [0.1], indirect=True)
def test_heartbeats(server):
    s = Stream(server, "public/local")
    assert s.read_until(3 + 2 * len(b":thump\n")).startswith(b":)\n:thump\n:thump\n")
    s.close()


def test_errors(server):
    for path, code, message in (
        ("hashtag", 400, "Missing tag name parameter"),
        ("list", 400, "Missing list name parameter"),
        ("user", 401, "Missing access token"),
        ("nowhere", 404, "Not found"),
    ):
        conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
        conn.request("GET", "/api/v1/streaming/" + path)
        resp = conn.getresponse()
        assert resp.status == code
        assert message in json.loads(resp.read())["error"]
        conn.close()
    status, body = post(server, corpus("invalid/notification.contribution-trailing-comma.json"))
    assert status == 400 and body["kind"] == "InvalidJson" and body["error"]
    status, body = post(server, b'{"event":"delete","payload":"1"}', "?channel=bogus")
    assert status == 400 and body["kind"] == "InvalidChannel"


def test_with_curl(server):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl not installed")
    proc = subprocess.Popen([curl, "-sN", "--max-time", "10",
                             f"http://127.0.0.1:{server}/api/v1/streaming/public/remote"],
                            stdout=subprocess.PIPE)
    assert proc.stdout.read(3) == b":)\n"
    post(server, corpus(mastodon("08")))
    want = corpus_sse("08")
    assert proc.stdout.read(len(want)) == want
    proc.terminate()
    proc.wait(10)
