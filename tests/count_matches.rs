//! `Engine::count_matches` agrees with `publish` and delivers nothing.

use std::time::Duration;

use evroute::{Engine, Next};

#[test]
fn count_matches_applies_filters_without_delivering() {
    let engine = Engine::default();
    let all = engine.subscriber(Default::default());
    all.subscribe(br#"{"stream":"public"}"#).unwrap();
    let english = engine.subscriber_from_json(br#"{"languages":["en"]}"#).unwrap();
    english.subscribe(br#"{"stream":"public"}"#).unwrap();
    let tag = engine.subscriber(Default::default());
    tag.subscribe(br#"{"stream":"hashtag","tag":"Rust"}"#).unwrap();
    let event = br#"{"event":"update","payload":{"id":"1","visibility":"public","language":"de",
        "account":{"id":"9","acct":"a"},"tags":[{"name":"rust"}],"mentions":[],"media_attachments":[]}}"#;

    assert_eq!(engine.count_matches(event).unwrap(), 2);
    assert!(matches!(all.next(Duration::ZERO), Next::Empty));
    assert_eq!(engine.stats().published, 0);
    assert_eq!(engine.publish(event).unwrap().matched, 2);
    assert!(engine.count_matches(b"{").is_err());
}
