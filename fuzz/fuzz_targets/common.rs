//! Checks shared by the fuzz targets: frame bytes (SPEC §4) and counter
//! conservation (SPEC §6), asserted so that libFuzzer reports a violation as
//! a crash.
#![allow(dead_code)]

use std::time::Duration;

use evroute::event::RoutedEvent;
use evroute::{Engine, Frame, Next, Subscriber};

/// Subscriptions that cover every stream kind, so most routable events reach
/// someone. Account "1" matches the recipients used in seeds.
pub const STREAMS: &[&str] = &[
    r#"{"stream":"public"}"#,
    r#"{"stream":"public:local"}"#,
    r#"{"stream":"public:remote:media"}"#,
    r#"{"stream":"public","only_media":true}"#,
    r#"{"stream":"hashtag","tag":"Rust"}"#,
    r#"{"stream":"hashtag:local","tag":"caturday"}"#,
    r#"{"stream":"user"}"#,
    r#"{"stream":"user:notification"}"#,
    r#"{"stream":"direct"}"#,
    r#"{"stream":"list","list":"1"}"#,
    r#"{"stream":"public","events":["status.*","delete"]}"#,
];

/// One subscriber per stream (plus one with viewer filters on `public`).
pub fn subscribers(engine: &Engine) -> Vec<Subscriber> {
    let mut subs: Vec<Subscriber> = STREAMS
        .iter()
        .map(|s| {
            let sub = engine.subscriber_from_json(br#"{"account":"1"}"#).unwrap();
            assert!(sub.subscribe(s.as_bytes()).unwrap(), "{s}");
            sub
        })
        .collect();
    let filtered = engine
        .subscriber_from_json(
            br#"{"account":"1","languages":["en"],"blocked_accounts":["2"],"blocked_domains":["example.org"]}"#,
        )
        .unwrap();
    filtered.subscribe(br#"{"stream":"public"}"#).unwrap();
    subs.push(filtered);
    subs
}

/// Asserts that a frame's bytes are well-formed and agree with its fields.
pub fn check_frame(frame: &Frame) {
    check_frame_bytes(frame.sse(), frame.ws(), frame.event(), frame.payload(), frame.stream());
}

/// The same checks on the parts as the C ABI hands them out.
pub fn check_frame_bytes(sse: &[u8], ws: &[u8], event: &str, payload: Option<&str>, stream: &str) {
    assert!(sse.starts_with(b"event: "), "SSE start: {sse:?}");
    assert!(sse.ends_with(b"\n\n"), "SSE end: {sse:?}");
    let head = format!("event: {event}\n");
    assert!(sse.starts_with(head.as_bytes()), "SSE event line");
    // Exactly one blank line: the frame cannot end early.
    assert_eq!(sse.windows(2).filter(|w| w == b"\n\n").count(), 1, "SSE frame breaks: {sse:?}");
    match payload {
        None => assert_eq!(&sse[head.len()..], b"data: undefined\n\n"),
        Some(p) => {
            let data: Vec<&[u8]> = sse[head.len()..sse.len() - 2].split(|&b| b == b'\n').collect();
            assert!(data.iter().all(|l| l.starts_with(b"data: ")), "SSE data lines");
            // The data lines, joined, give the payload back (CRLF/CR become LF).
            let joined: Vec<u8> = data.iter().map(|l| &l[6..]).collect::<Vec<_>>().join(&b"\n"[..]);
            assert_eq!(joined, p.replace("\r\n", "\n").replace('\r', "\n").into_bytes());
        }
    }
    assert!(!event.is_empty() && !event.contains(['\r', '\n']));
    let ws: serde_json::Value = serde_json::from_slice(ws).expect("WS frame is JSON");
    let obj = ws.as_object().expect("WS frame is an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let want: &[&str] = if payload.is_some() { &["event", "payload", "stream"] } else { &["event", "stream"] };
    assert_eq!(keys, want, "WS keys");
    assert_eq!(obj["event"].as_str(), Some(event));
    assert_eq!(obj.get("payload").map(|p| p.as_str().expect("payload is a string")), payload);
    let stream: serde_json::Value = serde_json::from_str(stream).expect("stream array is JSON");
    assert!(stream.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|s| s.is_string())));
    assert_eq!(obj["stream"], stream);
}

/// Drains a subscriber, checking each frame; returns how many it read.
pub fn drain(sub: &Subscriber) -> u64 {
    let mut n = 0;
    loop {
        match sub.next(Duration::ZERO) {
            Next::Frame(f) => {
                check_frame(&f);
                n += 1;
            }
            Next::Empty | Next::Closed(_) => return n,
            Next::Timeout => panic!("a zero timeout cannot time out"),
        }
    }
}

/// Every subscriber's `matched == read + depth + dropped`, and the engine's
/// totals equal the subscribers' (none was closed or dropped yet).
pub fn check_counters(engine: &Engine, subs: &[Subscriber]) {
    let (mut matched, mut delivered, mut dropped) = (0, 0, 0);
    for s in subs {
        let q = s.stats();
        assert_eq!(q.matched, q.read + q.depth + q.dropped, "{q:?}");
        assert!(q.delivered <= q.matched);
        matched += q.matched;
        delivered += q.delivered;
        dropped += q.dropped;
    }
    let e = engine.stats();
    assert_eq!((e.matched, e.delivered, e.dropped), (matched, delivered, dropped), "{e:?}");
}

/// A known-good event for `public` (and `hashtag` Rust): after any input,
/// it must still be delivered.
pub const GOOD_STATUS: &[u8] = br#"{"event":"update","payload":{"id":"77","visibility":"public","reblog":null,"in_reply_to_account_id":null,"language":"en","account":{"id":"9","acct":"nine"},"media_attachments":[],"mentions":[],"tags":[{"name":"rust"}]}}"#;

/// `bytes` as a client reads JSON (`JSON.parse`: of two equal keys the last
/// wins), written out again with one key each. The status text inside an
/// update's string payload is rewritten the same way. `None` when
/// serde_json refuses the input (depth, lone surrogates, huge numbers).
pub fn as_a_client_reads_it(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut doc: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let status_event = matches!(doc.get("event").and_then(|e| e.as_str()), Some("update" | "status.update"));
    if status_event
        && let Some(payload) = doc.get_mut("payload")
        && let Some(text) = payload.as_str()
    {
        let inner: serde_json::Value = serde_json::from_str(text).ok()?;
        *payload = serde_json::Value::String(serde_json::to_string(&inner).ok()?);
    }
    serde_json::to_vec(&doc).ok()
}

/// The differential check against the repeated-key filter bypass: routing
/// the event as a client reads it gives the same channels, filter facts and
/// delete routing, and the same payload once parsed. An event that routed on
/// one copy of a repeated key but delivered another fails here.
pub fn check_routes_on_delivered_bytes(accepted: &RoutedEvent<'_>, as_read: evroute::Result<RoutedEvent<'_>>) {
    let as_read = as_read.expect("the event as a client reads it is refused, the original was accepted");
    let (mut accepted, mut as_read) = (accepted.clone().into_owned(), as_read.into_owned());
    let (a, b) = (accepted.payload.take(), as_read.payload.take());
    match (a.as_deref(), b.as_deref()) {
        (None, None) => {}
        (Some(a), Some(b)) => {
            let parsed = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
            match (parsed(a), parsed(b)) {
                (Some(x), Some(y)) => assert_eq!(x, y, "the delivered payload means something else to a client"),
                _ => assert_eq!(a, b, "payload text"),
            }
        }
        _ => panic!("payload present in one reading only: {a:?} / {b:?}"),
    }
    assert_eq!(accepted, as_read, "routed on other bytes than a client reads");
}
