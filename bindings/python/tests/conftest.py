"""Shared helpers. Expected frames are built here from the corpus bytes and
SPEC §4, never taken from evroute itself."""

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CORPUS = REPO / "corpus"

# The mastodon corpus, in publish order.
MASTODON = sorted(p.name for p in (CORPUS / "mastodon").glob("*.json"))


def corpus(name):
    """A corpus file's bytes, e.g. corpus("mastodon/08-update-...json")."""
    return (CORPUS / name).read_bytes().rstrip(b"\n")


def mastodon(prefix):
    """The mastodon corpus file whose name starts with `prefix` ("08")."""
    (name,) = [n for n in MASTODON if n.startswith(prefix + "-")]
    return "mastodon/" + name


def payload_of(doc):
    """The payload string of a corpus envelope: the raw text of an object payload or
    the contents of a string payload. The corpus writes `"payload": ` before P and
    ends with P and one `}`."""
    key = b'"payload": '
    start = doc.index(key) + len(key)
    assert doc.endswith(b"}")
    body = doc[start:-1]
    if body.startswith(b'"'):
        body = body[1:body.index(b'"', 1)]
    return body


def json_escaped(raw):
    out = bytearray()
    for c in raw:
        ch = bytes([c])
        esc = {b'"': b'\\"', b"\\": b"\\\\", b"\n": b"\\n", b"\r": b"\\r", b"\t": b"\\t",
               b"\b": b"\\b", b"\f": b"\\f"}.get(ch)
        if esc:
            out += esc
        elif c < 0x20:
            out += b"\\u%04x" % c
        else:
            out += ch
    return bytes(out)


def sse(event, payload):
    """SPEC §4 SSE bytes; payload None = absent."""
    data = b"undefined" if payload is None else payload
    assert b"\n" not in data
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def ws(stream, event, payload):
    head = b'{"stream":' + json.dumps(stream, separators=(",", ":"), ensure_ascii=False).encode()
    head += b',"event":"' + event.encode() + b'"'
    if payload is None:
        return head + b"}"
    return head + b',"payload":"' + json_escaped(payload) + b'"}'


def event_name(doc):
    return json.loads(doc)["event"]


def with_fields(doc, fields):
    """The envelope with extra top-level keys (recipients, lists) put first."""
    extra = json.dumps(fields)[1:-1].encode()
    return b"{" + extra + b", " + doc[1:]


def statm_rss_pages():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1])


PAGE = os.sysconf("SC_PAGE_SIZE")
