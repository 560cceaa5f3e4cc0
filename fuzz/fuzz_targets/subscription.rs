//! Arbitrary subscriber and subscription JSON (SPEC §1, §2, §7). The input
//! is lines: the first is the subscriber JSON; each later line is a
//! subscription to add, or with a `-` prefix to remove, or with `~` a
//! filter update.
#![no_main]

mod common;

use common::{GOOD_STATUS, check_frame};
use evroute::{Engine, ErrorKind, Next};
use libfuzzer_sys::fuzz_target;

fn check_consistent(engine: &Engine, streams: &[String]) {
    assert_eq!(engine.stats().subscriptions, streams.len() as u64);
    // Every stream listens to at least one Redis channel.
    assert_eq!(engine.active_channels().is_empty(), streams.is_empty());
    for s in streams {
        let v: serde_json::Value = serde_json::from_str(s).expect("stream array is JSON");
        assert!(v.as_array().is_some_and(|a| !a.is_empty() && a.iter().all(|x| x.is_string())), "{s}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let engine = Engine::default();
    let first = lines.next().unwrap_or_default();
    let sub = match engine.subscriber_from_json(first) {
        Ok(s) => s,
        Err(e) => {
            assert!(matches!(e.kind(), ErrorKind::InvalidUtf8 | ErrorKind::InvalidJson | ErrorKind::InvalidConfig));
            assert!(!e.message().is_empty());
            engine.subscriber_from_json(br#"{"account":"1"}"#).unwrap()
        }
    };
    assert_eq!(engine.stats().subscribers, 1);
    for line in lines.take(32) {
        let before = sub.streams();
        let after = match line.first() {
            Some(b'-') => match sub.unsubscribe(&line[1..]) {
                Ok(removed) => {
                    let now = sub.streams();
                    assert_eq!(now.len() + usize::from(removed), before.len());
                    now
                }
                Err(e) => {
                    assert!(matches!(
                        e.kind(),
                        ErrorKind::InvalidUtf8 | ErrorKind::InvalidJson | ErrorKind::InvalidSubscription
                    ));
                    sub.streams()
                }
            },
            Some(b'~') => {
                if let Err(e) = sub.update(&line[1..]) {
                    assert!(matches!(
                        e.kind(),
                        ErrorKind::InvalidUtf8 | ErrorKind::InvalidJson | ErrorKind::InvalidConfig
                    ));
                }
                sub.streams()
            }
            _ => match sub.subscribe(line) {
                Ok(added) => {
                    let now = sub.streams();
                    assert_eq!(now.len(), before.len() + usize::from(added));
                    if added {
                        assert_eq!(now[..before.len()], before[..]);
                        // The same request again is a no-op.
                        assert_eq!(sub.subscribe(line).map_err(|e| e.to_string()), Ok(false));
                    }
                    now
                }
                Err(e) => {
                    assert!(
                        matches!(
                            e.kind(),
                            ErrorKind::InvalidUtf8 | ErrorKind::InvalidJson | ErrorKind::InvalidSubscription
                        ),
                        "{e:?}"
                    );
                    assert!(!e.message().is_empty());
                    sub.streams()
                }
            },
        };
        if line.first() != Some(&b'-') && line.first() != Some(&b'~') && after.len() == before.len() {
            assert_eq!(after, before, "a refused or no-op subscription changed the others");
        }
        check_consistent(&engine, &after);
    }
    // Whatever was subscribed, publishing works and frames are well-formed.
    engine.publish(GOOD_STATUS).unwrap();
    while let Next::Frame(f) = sub.next(std::time::Duration::ZERO) {
        check_frame(&f);
    }
    let q = sub.stats();
    assert_eq!(q.matched, q.read + q.depth + q.dropped);
    drop(sub);
    let st = engine.stats();
    assert_eq!((st.subscribers, st.subscriptions), (0, 0));
    assert!(engine.active_channels().is_empty());
});
