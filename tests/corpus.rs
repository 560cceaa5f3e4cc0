//! Golden tests over every file in `corpus/`: the channels each event routes
//! to, and the exact frames subscribers of every such channel receive, both
//! computed independently by the reference router from the file's bytes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::corpus::{Audience, corpus, events, with_targets};
use common::reference::derive;
use evroute::{ChannelKey, Engine, EngineConfig, ErrorKind, Next, Subscriber};

#[test]
fn routed_channels_match_the_reference_for_every_file() {
    for (name, bytes) in events() {
        let routed = evroute::event::parse_content(&bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let want = derive(&bytes).unwrap_or_else(|r| panic!("{name}: reference refused: {r:?}"));
        let channels: BTreeSet<String> =
            routed.channels.iter().filter(|k| k.is_redis_channel()).map(ToString::to_string).collect();
        let all_users = routed.channels.contains(&ChannelKey::AllUsers);
        assert_eq!(channels, want.channels, "{name}: channels");
        assert_eq!(all_users, want.all_users, "{name}: every-user-stream routing");
        assert_eq!(&*routed.name, want.name, "{name}: event name");
        assert_eq!(routed.payload.as_deref(), want.payload.as_deref(), "{name}: payload string");
        assert_eq!(routed.deletes.as_deref(), want.deletes.as_deref(), "{name}: deleted status");
        assert_eq!(routed.remember.as_deref(), want.remember.as_deref(), "{name}: remembered status");
    }
}

#[test]
fn frames_for_every_file_match_the_reference() {
    let events = events();
    // Every channel the corpus reaches gets a listener, plus a few extras.
    let mut audience = Audience::new(
        &events,
        &[
            ("{\"account\":\"999\"}", "{\"stream\":\"user\"}"),
            ("{\"languages\":[\"ja\"]}", "{\"stream\":\"public\"}"),
            ("{\"blocked_domains\":[\"mstdn.jp\"]}", "{\"stream\":\"public\",\"only_media\":\"true\"}"),
            ("{\"account\":\"42\"}", "{\"stream\":\"public:remote\",\"events\":[\"status.*\",\"delete\"]}"),
        ],
    );
    let mut total = 0;
    for (name, bytes) in &events {
        total += audience.publish(name, bytes);
    }
    // Every corpus event reached someone, most of them several subscribers.
    assert!(total >= events.len(), "only {total} frames for {} events", events.len());
}
#[test]
fn invalid_corpus_is_rejected_and_the_engine_stays_usable() {
    let invalid = corpus("invalid");
    assert!(!invalid.is_empty());
    let engine = Engine::new(EngineConfig::default());
    let sub = engine.subscriber_from_json(b"{\"account\":1}").unwrap();
    sub.subscribe(b"{\"stream\":\"user:notification\"}").unwrap();
    let good = corpus("community").into_iter().find(|(n, _)| n == "notification.nested_comment.json").unwrap().1;
    for (n, (name, bytes)) in invalid.iter().enumerate() {
        let err = engine.publish(bytes).expect_err(name);
        assert_eq!(err.kind(), ErrorKind::InvalidJson, "{name}: {err:?}");
        assert!(!err.message().is_empty(), "{name}: empty message");
        assert!(matches!(sub.next(Duration::ZERO), Next::Empty), "{name}: a rejected event delivered something");
        assert_eq!(engine.stats().rejected, n as u64 + 1);

        let stats = engine.publish(&good).unwrap();
        assert_eq!(stats.matched, 1);
        let Next::Frame(frame) = sub.next(Duration::ZERO) else { panic!("good event after {name} did not arrive") };
        assert_eq!(frame.event(), "notification.nested_comment");
        assert_eq!(frame.payload().unwrap().as_bytes(), &good[..]);
    }
}

fn one_frame(sub: &Subscriber) -> evroute::FrameRef {
    match sub.next(Duration::ZERO) {
        Next::Frame(f) => f,
        other => panic!("expected a frame, got {other:?}"),
    }
}

fn file(dir: &str, prefix: &str) -> Vec<u8> {
    corpus(dir).into_iter().find(|(n, _)| n.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix} missing")).1
}

#[test]
fn documented_delete_sse_bytes() {
    let engine = Engine::new(EngineConfig::default());
    let sub = engine.subscriber_from_json(b"{}").unwrap();
    sub.subscribe(b"{\"stream\":\"public\"}").unwrap();
    engine.publish(&file("mastodon", "11-")).unwrap();
    let update = one_frame(&sub);
    assert_eq!(update.event(), "update");
    engine.publish(&file("mastodon", "12-")).unwrap();
    let delete = one_frame(&sub);
    assert_eq!(delete.sse(), b"event: delete\ndata: 108914398911648589\n\n");
    assert_eq!(delete.ws(), br#"{"stream":["public"],"event":"delete","payload":"108914398911648589"}"#);
}

#[test]
fn documented_delete_websocket_bytes() {
    let engine = Engine::new(EngineConfig::default());
    let sub = engine.subscriber_from_json(b"{}").unwrap();
    sub.subscribe(b"{\"stream\":\"public\"}").unwrap();
    engine.publish_channel(b"timeline:public", br#"{"event":"delete","payload":"106692867363994015"}"#).unwrap();
    let frame = one_frame(&sub);
    assert_eq!(frame.ws(), br#"{"stream":["public"],"event":"delete","payload":"106692867363994015"}"#);
    assert_eq!(frame.sse(), b"event: delete\ndata: 106692867363994015\n\n");
    assert_eq!(frame.stream(), r#"["public"]"#);
}

#[test]
fn documented_filters_changed_without_payload() {
    let engine = Engine::new(EngineConfig::default());
    let sub = engine.subscriber_from_json(b"{\"account\":\"5\"}").unwrap();
    sub.subscribe(b"{\"stream\":\"user\"}").unwrap();
    let stats = engine.publish(&file("mastodon", "03-")).unwrap();
    assert_eq!(stats.matched, 1);
    let frame = one_frame(&sub);
    assert_eq!(frame.sse(), b"event: filters_changed\ndata: undefined\n\n");
    assert_eq!(frame.ws(), br#"{"stream":["user"],"event":"filters_changed"}"#);
    assert_eq!(frame.payload(), None);
    // The same through Mastodon's Redis channel.
    engine.publish_channel(b"timeline:5", br#"{"event":"filters_changed"}"#).unwrap();
    assert_eq!(one_frame(&sub).ws(), br#"{"stream":["user"],"event":"filters_changed"}"#);
}

#[test]
fn object_payloads_are_the_original_bytes() {
    let engine = Engine::new(EngineConfig::default());
    let sub = engine.subscriber_from_json(b"{\"account\":\"42\"}").unwrap();
    sub.subscribe(b"{\"stream\":\"direct\"}").unwrap();
    let bytes = with_targets(&file("mastodon", "18-"));
    engine.publish(&bytes).unwrap();
    let frame = one_frame(&sub);
    let text = std::str::from_utf8(&bytes).unwrap();
    let start = text.find("\"payload\": ").unwrap() + "\"payload\": ".len();
    let end = text.rfind(", \"recipients\"").unwrap();
    assert_eq!(frame.payload(), Some(&text[start..end]));
    assert_eq!(frame.sse(), format!("event: conversation\ndata: {}\n\n", &text[start..end]).as_bytes());
}
