//! Every bad input of SPEC §2 and §3 is refused with the right error kind and
//! a message that names the problem, and nobody else's queue or
//! subscriptions change.

mod common;

use std::time::Duration;

use common::drain;
use common::reference::frame;
use evroute::{Engine, EngineConfig, Error, ErrorKind, Next, Subscriber};

const LIMIT: usize = 4096;

/// (what, channel, message, expected kind, words one of which the message names)
type ChannelCase<'a> = (&'a str, &'a [u8], Vec<u8>, ErrorKind, &'a [&'a str]);
/// (what, subscriber, subscription JSON, expected kind, words named)
type SubscriptionCase<'a> = (&'a str, &'a Subscriber, &'a [u8], ErrorKind, &'a [&'a str]);

struct Bystanders {
    engine: Engine,
    user: Subscriber,
    tag: Subscriber,
}

const UPDATE: &str = r#"{"event":"update","payload":{"id":"1","visibility":"public","language":"en","account":{"id":"3","acct":"c"},"tags":[{"name":"Rust"}],"media_attachments":[],"mentions":[],"reblog":null,"in_reply_to_account_id":null},"recipients":["1"]}"#;
const UPDATE_PAYLOAD: &str = r#"{"id":"1","visibility":"public","language":"en","account":{"id":"3","acct":"c"},"tags":[{"name":"Rust"}],"media_attachments":[],"mentions":[],"reblog":null,"in_reply_to_account_id":null}"#;

impl Bystanders {
    /// Two subscribers with frames waiting, so damage would show.
    fn new() -> Bystanders {
        let engine = Engine::new(EngineConfig { max_event_bytes: LIMIT, ..EngineConfig::default() });
        let user = engine.subscriber_from_json(br#"{"account":"1"}"#).unwrap();
        user.subscribe(br#"{"stream":"user"}"#).unwrap();
        user.subscribe(br#"{"stream":"public:local"}"#).unwrap();
        let tag = engine.subscriber_from_json(b"{}").unwrap();
        tag.subscribe(br#"{"stream":"hashtag","tag":"rust"}"#).unwrap();
        engine.publish(UPDATE.as_bytes()).unwrap();
        engine.publish_channel(b"timeline:hashtag:rust", br#"{"event":"delete","payload":"9"}"#).unwrap();
        Bystanders { engine, user, tag }
    }

    fn snapshot(&self) -> String {
        format!("{:?} {:?} {:?} {:?}", self.user.stats(), self.user.streams(), self.tag.stats(), self.tag.streams())
    }

    /// The queues still hold exactly what the two good publishes put there.
    fn verify(&self) {
        let mut user = drain(&self.user);
        user.sort();
        let mut want = vec![
            frame(r#"["user"]"#, "update", Some(UPDATE_PAYLOAD)),
            frame(r#"["public:local"]"#, "update", Some(UPDATE_PAYLOAD)),
        ];
        want.sort();
        assert_eq!(user, want);
        assert_eq!(
            drain(&self.tag),
            vec![
                frame(r#"["hashtag","rust"]"#, "update", Some(UPDATE_PAYLOAD)),
                frame(r#"["hashtag","rust"]"#, "delete", Some("9"))
            ]
        );
    }
}

fn check<T>(what: &str, result: Result<T, Error>, kind: ErrorKind, mention: &[&str]) {
    let Err(err) = result else { panic!("{what}: accepted, expected {kind:?}") };
    assert_eq!(err.kind(), kind, "{what}: {err:?}");
    let message = err.message().to_lowercase();
    assert!(
        mention.iter().any(|m| message.contains(&m.to_lowercase())),
        "{what}: message {:?} names none of {mention:?}",
        err.message()
    );
}

#[test]
fn bad_content_events() {
    let b = Bystanders::new();
    let before = b.snapshot();
    let published = b.engine.stats().published;
    let huge = format!(r#"{{"event":"update","payload":{{"content":"{}"}}}}"#, "x".repeat(LIMIT));
    let cases: Vec<(&str, Vec<u8>, ErrorKind, &[&str])> = vec![
        ("empty input", b"".to_vec(), ErrorKind::InvalidJson, &["json", "empty"]),
        ("truncated JSON", br#"{"event":"upd"#.to_vec(), ErrorKind::InvalidJson, &["json"]),
        ("trailing comma", br#"{"event":"x","payload":"1",}"#.to_vec(), ErrorKind::InvalidJson, &["json"]),
        ("trailing garbage", br#"{"event":"x"} x"#.to_vec(), ErrorKind::InvalidJson, &["json"]),
        (
            "invalid UTF-8",
            b"{\"event\":\"update\",\"payload\":\"\xff\xfe\"}".to_vec(),
            ErrorKind::InvalidUtf8,
            &["utf-8", "utf8"],
        ),
        ("not an object", b"[1,2]".to_vec(), ErrorKind::InvalidEvent, &["object"]),
        ("no event or type", br#"{"payload":{"id":"1"}}"#.to_vec(), ErrorKind::InvalidEvent, &["event"]),
        ("event not a string", br#"{"event":5,"payload":"1"}"#.to_vec(), ErrorKind::InvalidEvent, &["event"]),
        (
            "update without account",
            br#"{"event":"update","payload":{"id":"1","visibility":"public"},"recipients":["1"]}"#.to_vec(),
            ErrorKind::InvalidEvent,
            &["account"],
        ),
        (
            "status.update without account",
            br#"{"event":"status.update","payload":{"id":"1","visibility":"public"}}"#.to_vec(),
            ErrorKind::InvalidEvent,
            &["account"],
        ),
        ("over the size limit", huge.into_bytes(), ErrorKind::TooLarge, &["large", "limit", "4096"]),
    ];
    for (n, (what, bytes, kind, mention)) in cases.iter().enumerate() {
        check(what, b.engine.publish(bytes), *kind, mention);
        assert_eq!(b.snapshot(), before, "{what}: bystanders changed");
        let stats = b.engine.stats();
        assert_eq!(stats.rejected, n as u64 + 1, "{what}: rejected counter");
        assert_eq!(stats.published, published, "{what}: published counter");
    }
    b.verify();
}

#[test]
fn bad_channel_messages() {
    let b = Bystanders::new();
    let before = b.snapshot();
    let good = br#"{"event":"delete","payload":"5"}"#;
    let huge = format!(r#"{{"event":"x","payload":"{}"}}"#, "y".repeat(LIMIT));
    let cases: Vec<ChannelCase> = vec![
        (
            "unknown channel",
            b"timeline:nowhere:at:all",
            good.to_vec(),
            ErrorKind::InvalidChannel,
            &["timeline:nowhere:at:all"],
        ),
        ("channel without timeline prefix", b"public", good.to_vec(), ErrorKind::InvalidChannel, &["public"]),
        (
            "hashtag channel without a tag",
            b"timeline:hashtag:",
            good.to_vec(),
            ErrorKind::InvalidChannel,
            &["timeline:hashtag:"],
        ),
        ("channel not UTF-8", b"timeline:\xff", good.to_vec(), ErrorKind::InvalidUtf8, &["utf-8", "utf8"]),
        ("message not JSON", b"timeline:public", b"{".to_vec(), ErrorKind::InvalidJson, &["json"]),
        (
            "message not UTF-8",
            b"timeline:public",
            b"{\"event\":\"\xc3\"}".to_vec(),
            ErrorKind::InvalidUtf8,
            &["utf-8", "utf8"],
        ),
        (
            "message without event",
            b"timeline:public",
            br#"{"payload":"1"}"#.to_vec(),
            ErrorKind::InvalidEvent,
            &["event"],
        ),
        ("message not an object", b"timeline:public", br#""delete""#.to_vec(), ErrorKind::InvalidEvent, &["object"]),
        (
            "message over the size limit",
            b"timeline:public",
            huge.into_bytes(),
            ErrorKind::TooLarge,
            &["large", "limit", "4096"],
        ),
    ];
    for (what, channel, message, kind, mention) in &cases {
        check(what, b.engine.publish_channel(channel, message), *kind, mention);
        assert_eq!(b.snapshot(), before, "{what}: bystanders changed");
    }
    assert_eq!(b.engine.stats().rejected, cases.len() as u64);
    b.verify();
}

#[test]
fn bad_subscriptions_leave_every_subscription_as_it_was() {
    let b = Bystanders::new();
    // One subscriber with an account, one without; both already subscribed.
    let anon = b.engine.subscriber_from_json(b"{}").unwrap();
    anon.subscribe(br#"{"stream":"public:local"}"#).unwrap();
    let before = b.snapshot();
    let cases: Vec<SubscriptionCase> = vec![
        ("unknown stream", &b.user, br#"{"stream":"bogus"}"#, ErrorKind::InvalidSubscription, &["Unknown stream type"]),
        ("no stream", &b.user, br#"{"tag":"rust"}"#, ErrorKind::InvalidSubscription, &["stream"]),
        ("stream not a string", &b.user, br#"{"stream":["public"]}"#, ErrorKind::InvalidSubscription, &["stream"]),
        (
            "hashtag without tag",
            &b.user,
            br#"{"stream":"hashtag"}"#,
            ErrorKind::InvalidSubscription,
            &["Missing tag name parameter"],
        ),
        (
            "hashtag:local without tag",
            &b.user,
            br#"{"stream":"hashtag:local"}"#,
            ErrorKind::InvalidSubscription,
            &["Missing tag name parameter"],
        ),
        (
            "hashtag with empty tag",
            &b.user,
            br#"{"stream":"hashtag","tag":""}"#,
            ErrorKind::InvalidSubscription,
            &["tag"],
        ),
        (
            "list without list",
            &b.user,
            br#"{"stream":"list"}"#,
            ErrorKind::InvalidSubscription,
            &["Missing list name parameter"],
        ),
        ("user without account", &anon, br#"{"stream":"user"}"#, ErrorKind::InvalidSubscription, &["account"]),
        (
            "user:notification without account",
            &anon,
            br#"{"stream":"user:notification"}"#,
            ErrorKind::InvalidSubscription,
            &["account"],
        ),
        ("direct without account", &anon, br#"{"stream":"direct"}"#, ErrorKind::InvalidSubscription, &["account"]),
        ("malformed JSON", &b.user, br#"{"stream":"public""#, ErrorKind::InvalidJson, &["json"]),
        ("not an object", &b.user, br#""public""#, ErrorKind::InvalidSubscription, &["object"]),
        (
            "invalid UTF-8",
            &b.user,
            b"{\"stream\":\"hashtag\",\"tag\":\"\xff\"}",
            ErrorKind::InvalidUtf8,
            &["utf-8", "utf8"],
        ),
    ];
    for (what, sub, json, kind, mention) in &cases {
        check(&format!("subscribe: {what}"), sub.subscribe(json), *kind, mention);
        check(&format!("unsubscribe: {what}"), sub.unsubscribe(json), *kind, mention);
        assert_eq!(b.snapshot(), before, "{what}: subscriptions or queues changed");
        assert_eq!(anon.streams(), vec![r#"["public:local"]"#], "{what}: anon's subscriptions changed");
    }
    // The earlier subscriptions still route.
    b.engine.publish(UPDATE.as_bytes()).unwrap();
    assert_eq!(drain(&anon).len(), 1);
    let _ = drain(&b.user);
    let _ = drain(&b.tag);
    assert_eq!(b.user.stats().depth, 0);
}

#[test]
fn bad_configuration_and_filters() {
    check(
        "unknown overflow",
        Engine::from_json(br#"{"overflow":"sometimes"}"#),
        ErrorKind::InvalidConfig,
        &["overflow"],
    );
    check("zero queue", Engine::from_json(br#"{"queue_capacity":0}"#), ErrorKind::InvalidConfig, &["queue_capacity"]);
    check("misspelt key", Engine::from_json(br#"{"queue_capacty":8}"#), ErrorKind::InvalidConfig, &["queue_capacty"]);
    check("config not JSON", Engine::from_json(b"{"), ErrorKind::InvalidJson, &["json"]);

    let b = Bystanders::new();
    let before = b.snapshot();
    check(
        "subscriber misspelt key",
        b.engine.subscriber_from_json(br#"{"acount":"1"}"#),
        ErrorKind::InvalidConfig,
        &["acount"],
    );
    check(
        "subscriber overflow",
        b.engine.subscriber_from_json(br#"{"overflow":"never"}"#),
        ErrorKind::InvalidConfig,
        &["overflow"],
    );
    check("subscriber not JSON", b.engine.subscriber_from_json(b"{\"account\""), ErrorKind::InvalidJson, &["json"]);
    check("filters not JSON", b.user.update(b"[\"en\""), ErrorKind::InvalidJson, &["json"]);
    assert_eq!(b.snapshot(), before);
    assert!(b.user.closed().is_none());
    b.verify();
    // The subscriber whose update failed still receives.
    b.engine.publish(UPDATE.as_bytes()).unwrap();
    assert!(matches!(b.user.next(Duration::ZERO), Next::Frame(_)));
}
