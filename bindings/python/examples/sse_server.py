#!/usr/bin/env python3
"""A Mastodon-style SSE streaming server on evroute, standard library only.

    pip install ./bindings/python    # once
    python3 bindings/python/examples/sse_server.py --port 4000
    curl -N 'http://127.0.0.1:4000/api/v1/streaming/hashtag?tag=rust'
    curl -d @corpus/mastodon/14-update-108914430312582020.json http://127.0.0.1:4000/publish

GET /api/v1/streaming/{public,public/local,public/remote,hashtag,hashtag/local,list,user,
user/notification,direct} streams SSE frames (query: tag, list, only_media; `account` stands
in for an access token). It writes `:)` once connected and `:thump` as a heartbeat, as Mastodon
does. POST /publish routes the body in content mode (docs/protocol.md); with ?channel=C it uses
channel mode instead. Each connection has one thread (ThreadingHTTPServer) blocked in
Subscriber.read_sse(), which releases the GIL while it waits and then copies the SSE bytes of
every waiting frame into one bytes object in one C call.
"""

import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import evroute

PREFIX = "/api/v1/streaming/"
STREAMS = {
    "public": "public", "public/local": "public:local", "public/remote": "public:remote",
    "hashtag": "hashtag", "hashtag/local": "hashtag:local", "list": "list",
    "user": "user", "user/notification": "user:notification", "direct": "direct",
}
NEEDS_ACCOUNT = {"user", "user:notification", "direct"}


class StreamingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, engine, heartbeat):
        super().__init__(address, Handler)
        self.engine = engine
        self.heartbeat = heartbeat
        self.live = set()
        self.live_lock = threading.Lock()

    def close_streams(self):
        """Ends every open stream: their threads' read_sse() raise Closed."""
        with self.live_lock:
            subs = list(self.live)
        for sub in subs:
            sub.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StreamingServer

    def log_message(self, fmt, *args):  # quiet by default
        if os.environ.get("SSE_SERVER_LOG"):
            super().log_message(fmt, *args)

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == PREFIX + "health":
            data = b"OK"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(data)
            return
        stream = STREAMS.get(url.path[len(PREFIX):]) if url.path.startswith(PREFIX) else None
        if stream is None:
            self.send_json(404, {"error": "Not found"})
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        account = query.get("account")
        if stream in NEEDS_ACCOUNT and not account:
            self.send_json(401, {"error": "Missing access token"})
            return
        subscription = {"stream": stream}
        for key in ("tag", "list", "only_media"):
            if key in query:
                subscription[key] = query[key]
        try:
            sub = self.server.engine.subscriber({"account": account} if account else {})
            sub.subscribe(subscription)
        except evroute.Error as e:
            sub.close()
            self.send_json(400, {"error": e.message})
            return
        with self.server.live_lock:
            self.server.live.add(sub)
        try:
            self.stream(sub)
        finally:
            with self.server.live_lock:
                self.server.live.discard(sub)
            sub.close()

    def stream(self, sub):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            # Subscribed before this is sent, so a client that read it misses nothing.
            self.write_chunk(b":)\n")
            while True:
                # Everything waiting (up to 64 KiB) goes out in one write.
                data = sub.read_sse(timeout=self.server.heartbeat)
                self.write_chunk(data or b":thump\n")
        except evroute.Closed:
            self.write_chunk(b"", final=True)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left

    def write_chunk(self, data, final=False):
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        if final:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_POST(self):
        url = urlsplit(self.path)
        if url.path != "/publish":
            self.send_json(404, {"error": "Not found"})
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        channel = parse_qs(url.query).get("channel")
        try:
            if channel:
                stats = self.server.engine.publish_channel(channel[-1], body)
            else:
                stats = self.server.engine.publish(body)
        except evroute.Error as e:
            self.send_json(400, {"error": e.message, "kind": type(e).__name__})
            return
        self.send_json(200, stats._asdict())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4000, help="0 picks a free port")
    parser.add_argument("--heartbeat", type=float, default=15.0, help="seconds between :thump lines")
    parser.add_argument("--engine", default="{}", help="engine config JSON (docs/protocol.md)")
    args = parser.parse_args()
    with evroute.Engine(args.engine) as engine:
        server = StreamingServer((args.host, args.port), engine, args.heartbeat)
        host, port = server.server_address[:2]
        print(f"listening on http://{host}:{port}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.close_streams()
            server.server_close()


if __name__ == "__main__":
    main()
