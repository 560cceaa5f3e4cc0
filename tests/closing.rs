//! Closing subscribers: a slow consumer leaves the index, and frames discarded
//! at close are counted by the engine as well as the subscriber.

use std::time::Duration;

use evroute::{Engine, EngineConfig, Next};

const DELETE: &[u8] = br#"{"event":"delete","payload":"1"}"#;

/// A subscriber closed as a "slow consumer" leaves the index, as `close()` does.
#[test]
fn slow_consumer_disconnect_unsubscribes() {
    let engine = Engine::new(EngineConfig::default());
    let slow = engine.subscriber_from_json(br#"{"queue_capacity":1,"overflow":"disconnect"}"#).unwrap();
    slow.subscribe(br#"{"stream":"public"}"#).unwrap();
    engine.publish_channel(b"timeline:public", DELETE).unwrap();
    engine.publish_channel(b"timeline:public", DELETE).unwrap();
    assert!(matches!(slow.next(Duration::ZERO), Next::Closed("slow consumer")));
    let later = engine.publish_channel(b"timeline:public", DELETE).unwrap();
    assert_eq!(later.matched, 0, "a closed subscriber still matched: {later:?}");
    assert_eq!(engine.stats().subscriptions, 0);
}

/// Frames still queued when a subscriber is closed count as dropped for the
/// engine too, so the engine's `dropped` is the sum of its subscribers'.
#[test]
fn engine_dropped_is_the_sum_of_subscriber_dropped() {
    let engine = Engine::new(EngineConfig::default());
    let sub = engine.subscriber_from_json(b"{}").unwrap();
    sub.subscribe(br#"{"stream":"public"}"#).unwrap();
    for _ in 0..3 {
        engine.publish_channel(b"timeline:public", DELETE).unwrap();
    }
    sub.close();
    assert_eq!(
        engine.stats().dropped,
        sub.stats().dropped,
        "engine {:?} vs subscriber {:?}",
        engine.stats(),
        sub.stats()
    );
}
