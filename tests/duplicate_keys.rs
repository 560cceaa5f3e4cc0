//! Repeated JSON keys. simd-json's lookup takes the first of two equal keys,
//! while clients parse the delivered payload with `JSON.parse`, which takes
//! the last; routing on one and delivering the other bypassed viewer filters.
//! An event with a repeated key in any object the engine reads is refused
//! with `duplicate key "K"`; a repeated key elsewhere (for example inside a
//! status's `card`) is passed through, and then every frame agrees with the
//! reference router, which reads objects as `JSON.parse` does.

mod common;

use common::corpus::{Audience, events};
use common::json::{J, Node, parse, quote};
use evroute::{Engine, EngineConfig, ErrorKind, Next};
use proptest::prelude::*;

const STATUS_OK: &str = r#"{"id":"7","visibility":"public","account":{"id":"1","acct":"alice"},"content":"fine"}"#;
const STATUS_BLOCKED: &str =
    r#"{"id":"7","visibility":"public","account":{"id":"666","acct":"mallory"},"content":"from a blocked account"}"#;

/// The reported bypass: two `payload` members, the first clean, the second
/// from a blocked account. Refused in both modes; nothing is delivered.
#[test]
fn a_second_payload_cannot_slip_past_a_block() {
    let engine = Engine::new(EngineConfig::default());
    let sub = engine.subscriber_from_json(br#"{"blocked_accounts":["666"]}"#).unwrap();
    sub.subscribe(br#"{"stream":"public"}"#).unwrap();
    let event = format!(r#"{{"event":"update","payload":{STATUS_OK},"payload":{STATUS_BLOCKED}}}"#);
    let err = engine.publish(event.as_bytes()).unwrap_err();
    assert_eq!((err.kind(), err.message()), (ErrorKind::InvalidEvent, r#"duplicate key "payload""#));
    let err = engine.publish_channel(b"timeline:public", event.as_bytes()).unwrap_err();
    assert_eq!((err.kind(), err.message()), (ErrorKind::InvalidEvent, r#"duplicate key "payload""#));
    assert!(matches!(sub.next(std::time::Duration::ZERO), Next::Empty));
    assert_eq!(engine.stats().rejected, 2);
}

/// One repeated key in each object the engine reads, with the error it gets.
#[test]
fn every_object_the_engine_reads_refuses_repeated_keys() {
    let status = |inner: &str| format!(r#"{{"event":"update","payload":{{"visibility":"public",{inner}}}}}"#);
    let acct = r#""account":{"id":"1","acct":"a"}"#;
    let cases: Vec<(String, &str)> = vec![
        (r#"{"event":"update","event":"delete","payload":"1"}"#.into(), r#"duplicate key "event""#),
        // Escapes do not hide a repeat: keys compare after decoding.
        (r#"{"event":"delete","payload":"1","p\u0061yload":"2"}"#.into(), r#"duplicate key "payload""#),
        (r#"{"event":"x","recipients":["1"],"recipients":["2"]}"#.into(), r#"duplicate key "recipients""#),
        (status(&format!(r#"{acct},"language":"en","language":"de""#)), r#"duplicate key "language" in payload"#),
        (status(r#""account":{"id":"1","acct":"a","id":"666"}"#), r#"duplicate key "id" in payload.account"#),
        (status(&format!(r#"{acct},"reblog":{{"id":"2","id":"3"}}"#)), r#"duplicate key "id" in payload.reblog"#),
        (
            status(&format!(r#"{acct},"reblog":{{"account":{{"id":"2","id":"666"}}}}"#)),
            r#"duplicate key "id" in payload.reblog.account"#,
        ),
        (
            status(&format!(r#"{acct},"mentions":[{{"id":"2"}},{{"id":"3","id":"666"}}]"#)),
            r#"duplicate key "id" in payload.mentions[]"#,
        ),
        (status(&format!(r#"{acct},"tags":[{{"name":"a","name":"b"}}]"#)), r#"duplicate key "name" in payload.tags[]"#),
        (
            r#"{"type":"notification.x","data":{"recipients":[1],"recipients":[2]}}"#.into(),
            r#"duplicate key "recipients" in data"#,
        ),
        (
            r#"{"type":"status.created","data":{"tags":[{"name":"a","name":"b"}]}}"#.into(),
            r#"duplicate key "name" in data.tags[]"#,
        ),
        (
            r#"{"type":"status.follow","data":{"status":{"medias":[],"medias":[1]}}}"#.into(),
            r#"duplicate key "medias" in data.status"#,
        ),
        (
            r#"{"type":"status.follow","data":{"status":{"tags":[{"name":"a","name":"b"}]}}}"#.into(),
            r#"duplicate key "name" in data.status.tags[]"#,
        ),
        (r#"{"type":"a","type":"b","data":{}}"#.into(), r#"duplicate key "type""#),
    ];
    let engine = Engine::new(EngineConfig::default());
    for (event, message) in &cases {
        let err = engine.publish(event.as_bytes()).expect_err(event);
        assert_eq!((err.kind(), err.message()), (ErrorKind::InvalidEvent, *message), "{event}");
    }
    // A status inside a payload string (older Mastodon versions) is read too.
    let inner = r#"{"visibility":"public","account":{"id":"1","acct":"a","id":"2"}}"#;
    let event = format!(r#"{{"event":"update","payload":{}}}"#, quote(inner));
    let err = engine.publish_channel(b"timeline:public", event.as_bytes()).unwrap_err();
    assert_eq!(err.message(), r#"status payload string: duplicate key "id" in payload.account"#);
}

/// A repeat in an object routing never reads is delivered as it came.
#[test]
fn repeats_outside_what_routing_reads_pass_through() {
    let engine = Engine::new(EngineConfig::default());
    let sub = engine.subscriber_from_json(b"{}").unwrap();
    sub.subscribe(br#"{"stream":"public"}"#).unwrap();
    let payload = r#"{"visibility":"public","account":{"id":"1","acct":"a"},"card":{"url":"x","url":"y"}}"#;
    engine.publish(format!(r#"{{"event":"update","payload":{payload}}}"#).as_bytes()).unwrap();
    let Next::Frame(frame) = sub.next(std::time::Duration::ZERO) else { panic!("no frame") };
    assert_eq!(frame.payload(), Some(payload));
}

/// A path segment: an object member or an array item.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Item,
}

/// `payload.mentions[]`, the way the engine names places in its errors.
fn place(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Item => out.push_str("[]"),
        }
    }
    out
}

/// Every non-empty object in `node`, with its path.
fn objects<'a>(node: &'a Node, path: &mut Vec<Seg>, out: &mut Vec<(Vec<Seg>, &'a Node)>) {
    match &node.value {
        J::Obj(members) => {
            if !members.is_empty() {
                out.push((path.clone(), node));
            }
            for (k, v) in members {
                path.push(Seg::Key(k.clone()));
                objects(v, path, out);
                path.pop();
            }
        }
        J::Arr(items) => {
            for item in items {
                path.push(Seg::Item);
                objects(item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The objects the issue lists as read by routing, written from the event's
/// kind: the envelope, a status payload with its account, reblog, reblog
/// account, mention and tag items; a community event's data, its status
/// and the tag items.
fn engine_reads(doc: &Node, place: &str) -> bool {
    if place.is_empty() {
        return true;
    }
    if let Some(name) = doc.get("event").and_then(Node::str) {
        let status = matches!(name, "update" | "status.update") && doc.get("payload").is_some_and(Node::is_object);
        return status
            && [
                "payload",
                "payload.account",
                "payload.reblog",
                "payload.reblog.account",
                "payload.mentions[]",
                "payload.tags[]",
            ]
            .contains(&place);
    }
    let name = doc.get("type").and_then(Node::str).unwrap_or_default();
    match name.strip_prefix("status.") {
        Some("created" | "updated" | "deleted" | "restored") => ["data", "data.tags[]"].contains(&place),
        Some(_) => ["data", "data.status", "data.status.tags[]"].contains(&place),
        None => place == "data",
    }
}

/// Values a repeated key may carry: ones that would change routing or
/// filtering if the engine read them instead of the original.
const VALUES: &[&str] = &[
    r#""666""#,
    "666",
    "null",
    "[]",
    r#""public""#,
    r#""unlisted""#,
    r#""ja""#,
    r#"{"id":"666","acct":"mallory@blocked.example"}"#,
    r#"[{"name":"rust"},{"name":"evil"}]"#,
    r#"[{"id":"666"}]"#,
    r#"[{"id":"9"}]"#,
    r#""status.deleted""#,
    "{}",
];

/// A key written with its first character as a `\u` escape.
fn escaped(key: &str) -> String {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) if (c as u32) < 0x10000 => format!("\"\\u{:04x}{}", c as u32, &quote(chars.as_str())[1..]),
        _ => quote(key),
    }
}

/// `bytes` with a member added to one object: a key it already has, before
/// or after the original, with a value from `VALUES` or from elsewhere in the
/// document. Returns the new bytes, the object's place and the key.
fn add_repeat(bytes: &[u8], seed: u64) -> (Vec<u8>, Vec<Seg>, String) {
    let doc = parse(bytes).unwrap();
    let mut found = Vec::new();
    objects(&doc, &mut Vec::new(), &mut found);
    let mut rng = seed;
    let mut next = |n: usize| {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((rng >> 33) % n as u64) as usize
    };
    let (path, object) = found[next(found.len())].clone();
    let J::Obj(members) = &object.value else { unreachable!() };
    let (key, original) = &members[next(members.len())];
    let value = if next(3) == 0 {
        // Any value of the document, including the original's siblings.
        let mut all = Vec::new();
        objects(&doc, &mut Vec::new(), &mut all);
        let (_, other) = all[next(all.len())];
        let J::Obj(m) = &other.value else { unreachable!() };
        let v = &m[next(m.len())].1;
        String::from_utf8(bytes[v.start..v.end].to_vec()).unwrap()
    } else {
        let v = VALUES[next(VALUES.len())];
        // Keep the repeat a real difference.
        if v.as_bytes() == &bytes[original.start..original.end] { "\"other\"".to_string() } else { v.to_string() }
    };
    let key_text = if next(4) == 0 { escaped(key) } else { quote(key) };
    let mut out = bytes.to_vec();
    if next(2) == 0 {
        out.splice(object.start + 1..object.start + 1, format!("{key_text}:{value},").into_bytes());
    } else {
        out.splice(object.end - 1..object.end - 1, format!(",{key_text}:{value}").into_bytes());
    }
    (out, path, key.clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(400)
    ))]

    /// Every corpus event with one repeated key added anywhere: refused with
    /// the exact error when routing reads that object, otherwise delivered
    /// exactly as the reference (last key wins) delivers it. Channel mode
    /// gets the Mastodon events too.
    #[test]
    fn repeated_keys_are_refused_or_routed_on_the_delivered_bytes(file in any::<prop::sample::Index>(), seed in any::<u64>()) {
        let events = events();
        let (name, bytes) = &events[file.index(events.len())];
        let (mutated, path, key) = add_repeat(bytes, seed);
        let where_ = place(&path);
        let doc = parse(&mutated).unwrap();
        let label = format!("{name} with a repeated {key:?} in {where_:?}: {}", String::from_utf8_lossy(&mutated));
        let mut audience = Audience::new(std::slice::from_ref(&events[file.index(events.len())]), &[
            (r#"{"blocked_accounts":["666"]}"#, r#"{"stream":"public"}"#),
            (r#"{"languages":["en"]}"#, r#"{"stream":"public:local"}"#),
            ("{}", r#"{"stream":"hashtag","tag":"evil"}"#),
            (r#"{"account":"666"}"#, r#"{"stream":"user"}"#),
            (r#"{"account":"9"}"#, r#"{"stream":"user:notification"}"#),
        ]);
        let channel = doc.get("event").is_some();
        if engine_reads(&doc, &where_) {
            let want = if where_.is_empty() {
                format!("duplicate key {}", quote(&key))
            } else {
                format!("duplicate key {} in {where_}", quote(&key))
            };
            let err = audience.engine.publish(&mutated).expect_err(&label);
            prop_assert_eq!((err.kind(), err.message()), (ErrorKind::InvalidEvent, want.as_str()), "{}", label);
            if channel {
                let err = audience.engine.publish_channel(b"timeline:public", &mutated).expect_err(&label);
                prop_assert_eq!(err.message(), want.as_str(), "channel mode: {}", label);
            }
            prop_assert!(audience.subs.iter().all(|s| s.stats().matched == 0), "{}", label);
        } else {
            audience.publish(&label, &mutated);
            if channel {
                let got = audience.engine.publish_channel(b"timeline:public", &mutated);
                let want = audience.reference.publish_channel("timeline:public", &mutated);
                audience.compare(&format!("channel mode: {label}"), got, want);
            }
        }
    }
}

/// Subscriber, filter update, subscription and engine config JSON: a
/// repeated key anywhere is refused with its place, in the error kind of the
/// document; the same JSON without the repeat is accepted. A DOM keeps one of
/// two equal keys silently, so `{"languages":["en"],"languages":[]}` would
/// otherwise turn a filter off depending on the parser.
#[test]
fn subscriber_subscription_and_config_json_refuse_repeated_keys() {
    let engine = Engine::new(EngineConfig::default());
    let sub = engine.subscriber_from_json(b"{}").unwrap();
    let filters = r#"{"id":"5","title":"t","context":["public"],"filter_action":"warn","keywords":[{"keyword":"dune","whole_word":true}]}"#;
    type Check<'a> = &'a dyn Fn(&[u8]) -> evroute::Result<()>;
    let subscriber: Check = &|b| engine.subscriber_from_json(b).map(drop);
    let update: Check = &|b| sub.update(b);
    let subscribe: Check = &|b| sub.subscribe(b).map(drop);
    let config: Check = &|b| Engine::from_json(b).map(drop);
    let cases: Vec<(Check, ErrorKind, String, String, &str)> = vec![
        (
            subscriber,
            ErrorKind::InvalidConfig,
            r#"{"account":"1","languages":["en"]}"#.into(),
            r#"{"account":"1","languages":["en"],"languages":[]}"#.into(),
            r#"duplicate key "languages""#,
        ),
        (
            subscriber,
            ErrorKind::InvalidConfig,
            format!(r#"{{"keyword_filters":[{filters}]}}"#),
            format!(
                r#"{{"keyword_filters":[{}]}}"#,
                filters.replace(r#""whole_word":true"#, r#""whole_word":true,"keyword":"x""#)
            ),
            r#"duplicate key "keyword" in keyword_filters[].keywords[]"#,
        ),
        (
            update,
            ErrorKind::InvalidConfig,
            r#"{"blocked_accounts":["2"]}"#.into(),
            r#"{"blocked_accounts":["2"],"blocked_accounts":[]}"#.into(),
            r#"duplicate key "blocked_accounts""#,
        ),
        (
            subscribe,
            ErrorKind::InvalidSubscription,
            r#"{"type":"subscribe","stream":"hashtag","tag":"a"}"#.into(),
            r#"{"type":"subscribe","stream":"hashtag","tag":"a","t\u0061g":"b"}"#.into(),
            r#"duplicate key "tag""#,
        ),
        (
            config,
            ErrorKind::InvalidConfig,
            r#"{"queue_capacity":8,"history":{"max_events":5}}"#.into(),
            r#"{"queue_capacity":8,"history":{"max_events":5,"max_events":0}}"#.into(),
            r#"duplicate key "max_events" in history"#,
        ),
    ];
    for (check, kind, good, repeated, message) in cases {
        check(good.as_bytes()).unwrap_or_else(|e| panic!("{good}: {e}"));
        let err = check(repeated.as_bytes()).expect_err(&repeated);
        assert_eq!((err.kind(), err.message()), (kind, message), "{repeated}");
    }
}
