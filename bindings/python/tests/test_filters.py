"""SPEC §11 through the Python binding: keyword filters and the filtered
annotation, blocked_by_accounts, subscription origin, atomic updates."""

import json

import pytest

import evroute

STATUS = {
    "id": "1", "visibility": "public", "reblog": None, "in_reply_to_account_id": None,
    "content": "<p>Read Dune</p>", "account": {"id": "1", "acct": "alice"},
    "media_attachments": [], "mentions": [], "tags": [],
}
STATUS_JSON = json.dumps(STATUS, separators=(",", ":"))
DUNE = [{"id": "5", "title": "Sci-fi", "context": ["public"], "expires_at": None,
         "filter_action": "hide", "keywords": [{"keyword": "dune", "whole_word": True}]}]


def publish(eng):
    eng.publish('{"event":"update","payload":%s}' % STATUS_JSON)


def test_filtered_annotation_blocked_by_and_origin():
    with evroute.Engine() as eng:
        annotated = eng.subscriber(keyword_filters=DUNE)
        empty = eng.subscriber(keyword_filters=[])
        plain = eng.subscriber()
        blocked = eng.subscriber(blocked_by_accounts=[1])
        remote = eng.subscriber()
        for s in (annotated, empty, plain, blocked):
            s.subscribe(stream="public")
        remote.subscribe(stream="public", origin="remote")
        publish(eng)
        body = STATUS_JSON[:-1]
        assert annotated.next(0).payload == body + (
            ',"filtered":[{"filter":{"id":"5","title":"Sci-fi","context":["public"],'
            '"expires_at":null,"filter_action":"hide"},"keyword_matches":["Dune"],"status_matches":null}]}')
        assert empty.next(0).payload == body + ',"filtered":[]}'
        assert plain.next(0).payload == STATUS_JSON
        assert blocked.next(0) is None
        assert remote.next(0) is None


def test_update_replaces_state_and_bad_filters_keep_it():
    with evroute.Engine() as eng:
        sub = eng.subscriber(keyword_filters=DUNE)
        sub.subscribe(stream="public")
        with pytest.raises(evroute.InvalidConfig, match=r'keyword_filters\[0\] \(id "7"\): keywords is missing'):
            sub.update(keyword_filters=[{"id": "7", "title": "t"}])
        with pytest.raises(evroute.InvalidConfig, match="filter_action"):
            sub.update(keyword_filters=[{"id": "7", "keywords": [], "filter_action": "mute"}])
        publish(eng)
        assert '"keyword_matches":["Dune"]' in sub.next(0).payload
        sub.update(blocked_accounts=["9"])
        publish(eng)
        assert sub.next(0).payload == STATUS_JSON
        with pytest.raises(evroute.InvalidSubscription, match="origin"):
            sub.subscribe(stream="list", list="1", origin="local")
