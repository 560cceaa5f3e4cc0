//! Golden tests over every file in `corpus/`: the channels each event routes
//! to, and the exact frames subscribers of every such channel receive, both
//! computed independently by the reference router from the file's bytes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::drain;
use common::reference::{Expected, Reference, derive};
use evroute::{ChannelKey, Engine, EngineConfig, ErrorKind, Next, Subscriber};

fn corpus(dir: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// The Mastodon corpus carries no recipients or lists; this adds recipients,
/// and lists for the events whose rules in §3b mention lists (the spec is
/// silent on lists for notifications, conversations and announcements).
fn with_targets(bytes: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap().trim_end();
    let body = text.strip_suffix('}').expect("corpus event is an object");
    let lists_unspecified = ["notification", "conversation", "announcement", "filters_changed"]
        .iter()
        .any(|e| text.starts_with(&format!("{{\"event\": \"{e}")));
    let lists = if lists_unspecified { "" } else { ", \"lists\": [9]" };
    format!("{body}, \"recipients\": [\"42\", 7]{lists}}}").into_bytes()
}

/// Every content-mode input the corpus gives, named for failure messages.
fn events() -> Vec<(String, Vec<u8>)> {
    let mastodon = corpus("mastodon");
    let community = corpus("community");
    assert!(mastodon.len() >= 18 && community.len() >= 38, "corpus missing: {} + {}", mastodon.len(), community.len());
    let mut out = Vec::new();
    for (name, bytes) in mastodon {
        out.push((format!("mastodon/{name}"), bytes.clone()));
        out.push((format!("mastodon/{name} +recipients,lists"), with_targets(&bytes)));
    }
    for (name, bytes) in community {
        out.push((format!("community/{name}"), bytes));
    }
    out
}

#[test]
fn routed_channels_match_the_reference_for_every_file() {
    let mut scratch = Vec::new();
    for (name, bytes) in events() {
        let routed = evroute::event::parse_content(&bytes, &mut scratch).unwrap_or_else(|e| panic!("{name}: {e:?}"));
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

/// A subscriber that listens to `channel`, as (subscriber JSON, subscription JSON).
fn listener_for(channel: &str) -> (String, String) {
    let rest = channel.strip_prefix("timeline:").unwrap();
    if rest.starts_with("public") {
        return ("{}".into(), format!("{{\"stream\":\"{rest}\"}}"));
    }
    if let Some(tag) = rest.strip_prefix("hashtag:") {
        return match tag.strip_suffix(":local") {
            Some(t) => ("{}".into(), format!("{{\"stream\":\"hashtag:local\",\"tag\":\"{}\"}}", t.to_uppercase())),
            None => ("{}".into(), format!("{{\"stream\":\"hashtag\",\"tag\":\"#{tag}\"}}")),
        };
    }
    if let Some(list) = rest.strip_prefix("list:") {
        return ("{}".into(), format!("{{\"stream\":\"list\",\"list\":{list}}}"));
    }
    if let Some(id) = rest.strip_prefix("direct:") {
        return (format!("{{\"account\":\"{id}\"}}"), "{\"stream\":\"direct\"}".into());
    }
    if let Some(id) = rest.strip_suffix(":notifications") {
        return (format!("{{\"account\":{id}}}"), "{\"stream\":\"user:notification\"}".into());
    }
    (format!("{{\"account\":\"{rest}\"}}"), "{\"stream\":\"user\"}".into())
}

#[test]
fn frames_for_every_file_match_the_reference() {
    let events = events();
    // Every channel the corpus reaches gets a listener, plus a few extras.
    let mut channels = BTreeSet::new();
    for (_, bytes) in &events {
        channels.extend(derive(bytes).unwrap().channels);
    }
    let mut plan: Vec<(String, String)> = channels.iter().map(|c| listener_for(c)).collect();
    plan.push(("{\"account\":\"999\"}".into(), "{\"stream\":\"user\"}".into()));
    plan.push(("{\"languages\":[\"ja\"]}".into(), "{\"stream\":\"public\"}".into()));
    plan.push((
        "{\"blocked_domains\":[\"mstdn.jp\"]}".into(),
        "{\"stream\":\"public\",\"only_media\":\"true\"}".into(),
    ));
    plan.push((
        "{\"account\":\"42\"}".into(),
        "{\"stream\":\"public:remote\",\"events\":[\"status.*\",\"delete\"]}".into(),
    ));

    let engine = Engine::new(EngineConfig { queue_capacity: 1 << 16, ..EngineConfig::default() });
    let mut reference = Reference::new(65_536);
    let mut subs: Vec<Subscriber> = Vec::new();
    for (subscriber, subscription) in &plan {
        let sub = engine.subscriber_from_json(subscriber.as_bytes()).unwrap();
        let i = reference.add_subscriber(subscriber.as_bytes());
        assert_eq!(i, subs.len());
        assert_eq!(
            sub.subscribe(subscription.as_bytes()).map_err(|e| e.kind()),
            reference.subscribe(i, subscription.as_bytes()).map_err(|_| ErrorKind::InvalidSubscription),
            "subscribe {subscription}"
        );
        subs.push(sub);
    }

    let mut total = 0;
    for (name, bytes) in &events {
        let stats = engine.publish(bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let want = reference.publish(bytes).unwrap();
        assert_eq!(stats.matched as usize, want.len(), "{name}: matched");
        assert_eq!(stats.delivered as usize, want.len(), "{name}: delivered");
        total += want.len();
        let mut by_subscriber: BTreeMap<usize, Vec<Expected>> = BTreeMap::new();
        for (i, frame) in want {
            by_subscriber.entry(i).or_default().push(frame);
        }
        for (i, sub) in subs.iter().enumerate() {
            let mut got = drain(sub);
            let mut want = by_subscriber.remove(&i).unwrap_or_default();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{name}: frames of subscriber {:?}", plan[i]);
        }
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

fn one_frame(sub: &Subscriber) -> std::sync::Arc<evroute::Frame> {
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
