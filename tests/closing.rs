//! Closing subscribers: a slow consumer leaves the index, and frames discarded
//! at close are counted by the engine as well as the subscriber.

use std::sync::{Arc, Barrier};
use std::thread;
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
    let q = sub.stats();
    assert_eq!((q.matched, q.delivered, q.dropped, q.read, q.depth), (3, 3, 3, 0, 0), "{q:?}");
    assert_eq!(engine.stats().dropped, 3, "{:?}", engine.stats());
}

/// `subscribe` racing `close` on another thread: the subscription is either
/// refused ("closed") or removed by the close; none stays in the index while
/// the handle lives on.
#[test]
fn a_subscription_racing_close_does_not_outlive_it() {
    let engine = Engine::new(EngineConfig::default());
    for round in 0..300 {
        let sub = Arc::new(engine.subscriber_from_json(b"{}").unwrap());
        let start = Arc::new(Barrier::new(2));
        let subscriber = {
            let (sub, start) = (Arc::clone(&sub), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                for n in 0.. {
                    let tag = format!(r#"{{"stream":"hashtag","tag":"t{n}"}}"#);
                    if let Err(e) = sub.subscribe(tag.as_bytes()) {
                        assert!(e.message().contains("closed"), "{e}");
                        return n;
                    }
                }
                unreachable!()
            })
        };
        start.wait();
        sub.close();
        let added = subscriber.join().unwrap();
        let stats = engine.stats();
        assert_eq!(
            (stats.subscriptions, engine.active_channels().len()),
            (0, 0),
            "round {round}: {added} subscriptions added, the handle still lives"
        );
        assert!(sub.streams().is_empty());
    }
}
