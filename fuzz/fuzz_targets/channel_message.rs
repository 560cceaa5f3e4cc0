//! An arbitrary channel and message into channel mode (SPEC §3a). The input
//! is `channel \n message`; the engine has the Redis namespace "ns", so both
//! `timeline:…` and `ns:timeline:…` are channels.
#![no_main]

mod common;

use std::time::Duration;

use common::{GOOD_STATUS, check_counters, drain, subscribers};
use evroute::{Engine, EngineConfig, ErrorKind, Next};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (channel, message) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let engine = Engine::new(EngineConfig {
        redis_namespace: Some("ns".into()),
        max_event_bytes: 1 << 16,
        ..Default::default()
    });
    let subs = subscribers(&engine);
    let listened = engine.active_channels();
    let key = engine.parse_channel(channel);
    if let Ok(key) = &key {
        // Names round-trip: the namespaced name parses back to the same key.
        let name = engine.channel_name(key);
        assert!(name.starts_with("ns:timeline:"), "{name}");
        assert_eq!(engine.parse_channel(name.as_bytes()).as_ref(), Ok(key));
    }
    match engine.publish_channel(channel, message) {
        Err(e) => {
            assert!(matches!(
                e.kind(),
                ErrorKind::InvalidUtf8
                    | ErrorKind::InvalidJson
                    | ErrorKind::InvalidEvent
                    | ErrorKind::InvalidChannel
                    | ErrorKind::TooLarge
            ));
            if key.is_err() {
                assert!(matches!(e.kind(), ErrorKind::InvalidUtf8 | ErrorKind::InvalidChannel));
            }
            assert!(!e.message().is_empty());
            assert!(subs.iter().all(|s| s.stats().matched == 0), "a rejected message delivered frames");
            let st = engine.stats();
            assert_eq!((st.published, st.rejected), (0, 1));
        }
        Ok(stats) => {
            let key = key.expect("publish_channel accepted a channel parse_channel refused");
            assert_eq!((stats.delivered, stats.dropped), (stats.matched, 0));
            if !listened.contains(&engine.channel_name(&key)) {
                assert_eq!(stats.matched, 0, "delivered on a channel nobody listens to");
            }
            let depth: u64 = subs.iter().map(|s| s.stats().depth).sum();
            assert_eq!(depth, stats.delivered);
            let ev = evroute::event::parse_channel_message(key.clone(), message)
                .expect("publish_channel accepted a message the parser refuses");
            if let Some(canonical) = common::as_a_client_reads_it(message) {
                let again = evroute::event::parse_channel_message(key.clone(), &canonical);
                common::check_routes_on_delivered_bytes(&ev, again);
            }
            for s in &subs {
                assert!(s.stats().depth <= 1);
                if let Next::Frame(f) = s.next(Duration::ZERO) {
                    common::check_frame(&f);
                    assert_eq!(f.event(), &*ev.name);
                    assert_eq!(f.payload(), ev.payload.as_deref());
                }
            }
        }
    }
    check_counters(&engine, &subs);
    let after = engine.publish_channel(b"ns:timeline:public", GOOD_STATUS).unwrap();
    assert!(after.delivered >= 2, "{after:?}");
    assert_eq!(drain(&subs[0]), 1);
    for s in &subs {
        drain(s);
    }
    check_counters(&engine, &subs);
});
