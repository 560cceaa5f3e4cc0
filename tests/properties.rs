//! Properties (proptest):
//! - a generated valid status routes identically in both input modes: the
//!   channels content mode derives, fed back through channel mode, give
//!   every subscriber the same frames;
//! - arbitrary JSON values never make parsing panic: every entry point
//!   returns `Ok` or an error with a message.

use std::time::Duration;

use evroute::event::parse_content;
use evroute::{ChannelKey, Engine, EngineConfig, Next, Subscriber};
use proptest::prelude::*;

/// A JSON string literal (serde-less: the point is an independent writer).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An id written as a JSON integer or string (SPEC §1: both are the same id).
fn id() -> impl Strategy<Value = String> {
    (1u32..5, any::<bool>()).prop_map(|(n, as_int)| if as_int { n.to_string() } else { quote(&n.to_string()) })
}

fn status() -> impl Strategy<Value = String> {
    let visibility = prop::sample::select(vec!["public", "public", "unlisted", "private", "direct"]);
    let acct = prop::sample::select(vec!["alice", "bob@example.org", "carol@Other.social"]);
    let tags =
        prop::collection::vec(prop::sample::select(vec!["Rust", "rust", "Café", "ＲＵＳＴ", "caturday", "#!"]), 0..3);
    let language = prop::sample::select(vec!["null", "\"en\"", "\"de\""]);
    (
        (1u64..1000, visibility, id(), acct, any::<bool>()),
        (prop::option::of(id()), prop::option::of(id()), prop::collection::vec(id(), 0..2)),
        (tags, language, any::<bool>()),
    )
        .prop_map(|((sid, vis, author, acct, media), (reblog, reply, mentions), (tags, lang, pretty))| {
            let reblog = reblog.map_or("null".into(), |r| format!(r#"{{"account":{{"id":{r}}}}}"#));
            let reply = reply.unwrap_or_else(|| "null".into());
            let mentions: Vec<String> = mentions.iter().map(|m| format!(r#"{{"id":{m}}}"#)).collect();
            let tags: Vec<String> = tags.iter().map(|t| format!(r#"{{"name":{}}}"#, quote(t))).collect();
            let media = if media { r#"[{"id":"m1","type":"image"}]"# } else { "[]" };
            let sep = if pretty { ",\n  " } else { "," };
            [
                format!(r#""id":"{sid}""#),
                format!(r#""visibility":"{vis}""#),
                format!(r#""account":{{"id":{author},"acct":{}}}"#, quote(acct)),
                format!(r#""reblog":{reblog}"#),
                format!(r#""in_reply_to_account_id":{reply}"#),
                format!(r#""language":{lang}"#),
                format!(r#""media_attachments":{media}"#),
                format!(r#""mentions":[{}]"#, mentions.join(",")),
                format!(r#""tags":[{}]"#, tags.join(",")),
                r#""content":"<p>a \"quoted\" line\nand more</p>""#.to_string(),
            ]
            .join(sep)
        })
        .prop_map(|members| format!("{{{members}}}"))
}

/// `(content-mode event, event name, payload text)`.
fn update_event() -> impl Strategy<Value = (String, &'static str, String)> {
    let name = prop::sample::select(vec!["update", "status.update"]);
    (name, status(), prop::collection::vec(id(), 0..3), prop::collection::vec(id(), 0..2)).prop_map(
        |(name, payload, recipients, lists)| {
            let event = format!(
                r#"{{"event":"{name}","payload":{payload},"recipients":[{}],"lists":[{}]}}"#,
                recipients.join(","),
                lists.join(",")
            );
            (event, name, payload)
        },
    )
}

/// Subscribers covering every stream an update can reach, with and without
/// viewer filters and event filters.
const SUBSCRIBERS: &[(&str, &[&str])] = &[
    ("{}", &[r#"{"stream":"public"}"#, r#"{"stream":"public:local"}"#, r#"{"stream":"public:remote"}"#]),
    ("{}", &[r#"{"stream":"public:media"}"#, r#"{"stream":"public:local","only_media":true}"#]),
    ("{}", &[r#"{"stream":"public:remote:media"}"#, r#"{"stream":"hashtag","tag":"rust"}"#]),
    ("{}", &[r#"{"stream":"hashtag:local","tag":"RUST"}"#, r#"{"stream":"hashtag","tag":"cafe"}"#]),
    (r#"{"account":"1"}"#, &[r#"{"stream":"user"}"#, r#"{"stream":"list","list":"1"}"#]),
    (r#"{"account":2}"#, &[r#"{"stream":"user","events":["status.*"]}"#, r#"{"stream":"list","list":2}"#]),
    (r#"{"account":"3","languages":["en"]}"#, &[r#"{"stream":"public"}"#, r#"{"stream":"hashtag","tag":"Rust"}"#]),
    (
        r#"{"blocked_accounts":["2"],"muted_accounts":[3],"blocked_domains":["example.org"]}"#,
        &[r#"{"stream":"public"}"#, r#"{"stream":"hashtag:local","tag":"caturday"}"#],
    ),
    ("{}", &[r#"{"stream":"public","events":["update"]}"#]),
];

fn subscribe_all(engine: &Engine) -> Vec<Subscriber> {
    SUBSCRIBERS
        .iter()
        .map(|(json, subs)| {
            let sub = engine.subscriber_from_json(json.as_bytes()).unwrap();
            for s in *subs {
                assert!(sub.subscribe(s.as_bytes()).unwrap(), "{s}");
            }
            sub
        })
        .collect()
}

/// Every frame queued now, as sorted WS texts (the order across the
/// channels of one event is not part of the contract).
fn frames(sub: &Subscriber) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match sub.next(Duration::ZERO) {
            Next::Frame(f) => out.push(String::from_utf8(f.ws().to_vec()).unwrap()),
            Next::Empty => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn content_mode_and_channel_mode_route_identically((event, name, payload) in update_event()) {
        let content = Engine::default();
        let channel = Engine::new(EngineConfig { redis_namespace: Some("ns".into()), ..EngineConfig::default() });
        let (by_content, by_channel) = (subscribe_all(&content), subscribe_all(&channel));

        let routed = parse_content(event.as_bytes()).unwrap();
        let stats = content.publish(event.as_bytes()).unwrap();
        let message = format!(r#"{{"event":"{name}","payload":{payload}}}"#);
        let mut matched = 0;
        for key in &routed.channels {
            prop_assert!(key.is_redis_channel() && *key != ChannelKey::AllUsers, "{key:?}");
            matched += channel.publish_channel(channel.channel_name(key).as_bytes(), message.as_bytes()).unwrap().matched;
        }
        prop_assert_eq!(stats.matched, matched);
        for (i, (a, b)) in by_content.iter().zip(&by_channel).enumerate() {
            let (fa, fb) = (frames(a), frames(b));
            // Content mode: at most one frame per subscription per publish.
            prop_assert!(fa.len() <= SUBSCRIBERS[i].1.len(), "subscriber {}: {:?}", i, fa);
            prop_assert_eq!(fa, fb, "subscriber {} ({})", i, SUBSCRIBERS[i].0);
        }
    }
}

/// Arbitrary JSON text, written without serde; object keys are drawn from
/// evroute's vocabulary half the time so that deep paths get exercised.
fn json_value() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "event",
            "payload",
            "recipients",
            "lists",
            "stream",
            "tag",
            "list",
            "only_media",
            "events",
            "visibility",
            "reblog",
            "account",
            "acct",
            "id",
            "tags",
            "name",
            "mentions",
            "media_attachments",
            "language",
            "in_reply_to_account_id",
            "type",
            "data",
            "status",
            "medias",
            "languages",
            "blocked_accounts",
            "queue_capacity",
            "overflow",
            "redis_namespace",
            "max_event_bytes",
            "delete_memory",
        ])
        .prop_map(str::to_string),
        "\\PC{0,6}",
    ];
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        prop::sample::select(vec!["update", "public", "hashtag", "user", "delete", "status.created", "1", "a@b", "*"])
            .prop_map(quote),
        "\\PC{0,12}".prop_map(|s| quote(&s)),
        Just("\"\\ud83d\\ude00 \\u0000 \\/\"".to_string()),
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|members| {
                let members: Vec<String> = members.iter().map(|(k, v)| format!("{}: {v}", quote(k))).collect();
                format!("{{ {} }}", members.join(", "))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsing_arbitrary_json_never_panics(value in json_value(), wrap in 0u8..4) {
        // Also as the payload of an envelope, where most routing code runs.
        let text = match wrap {
            0 => value,
            1 => format!(r#"{{"event":"update","payload":{value},"recipients":[1]}}"#),
            2 => format!(r#"{{"type":"status.created","data":{value}}}"#),
            _ => format!(r#"{{"event":"delete","payload":{value}}}"#),
        };
        let bytes = text.as_bytes();
        let engine = Engine::default();
        let sub = engine.subscriber_from_json(br#"{"account":"1"}"#).unwrap();
        sub.subscribe(br#"{"stream":"user"}"#).unwrap();
        sub.subscribe(br#"{"stream":"public"}"#).unwrap();

        let parsed = parse_content(bytes);
        let published = engine.publish(bytes);
        prop_assert_eq!(parsed.is_ok(), published.is_ok());
        if let Err(e) = &published {
            prop_assert!(!e.message().is_empty());
            prop_assert_eq!(sub.stats().matched, 0, "a rejected event delivered frames");
        }
        for result in [
            engine.publish_channel(b"timeline:public", bytes).map(|_| ()),
            engine.subscriber_from_json(bytes).map(|_| ()),
            sub.subscribe(bytes).map(|_| ()),
            sub.unsubscribe(bytes).map(|_| ()),
            sub.update(bytes),
            EngineConfig::from_json(bytes).map(|_| ()),
        ] {
            if let Err(e) = result {
                prop_assert!(!e.message().is_empty(), "{:?}", e.kind());
            }
        }
        let e = engine.stats();
        prop_assert_eq!(e.published + e.rejected, 2);
        let q = sub.stats();
        prop_assert_eq!(q.matched, q.read + q.depth + q.dropped);
    }
}
