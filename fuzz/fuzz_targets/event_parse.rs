//! Arbitrary bytes into content-mode `publish` (SPEC §3b).
#![no_main]

mod common;

use common::{GOOD_STATUS, check_counters, drain, subscribers};
use evroute::{Engine, EngineConfig, ErrorKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let engine = Engine::new(EngineConfig { delete_memory: 8, ..EngineConfig::default() });
    let subs = subscribers(&engine);
    let parsed = evroute::event::parse_content(data);
    match engine.publish(data) {
        Err(e) => {
            let again = parsed.expect_err("publish rejected what parse_content accepted");
            assert_eq!(e.kind(), again.kind());
            assert!(matches!(e.kind(), ErrorKind::InvalidUtf8 | ErrorKind::InvalidJson | ErrorKind::InvalidEvent));
            assert!(!e.message().is_empty());
            // A rejected event delivers nothing.
            assert!(subs.iter().all(|s| s.stats().matched == 0));
            let st = engine.stats();
            assert_eq!((st.published, st.rejected, st.matched), (0, 1, 0));
        }
        Ok(stats) => {
            let ev = parsed.expect("publish accepted what parse_content rejected");
            if let Some(canonical) = common::as_a_client_reads_it(data) {
                common::check_routes_on_delivered_bytes(&ev, evroute::event::parse_content(&canonical));
            }
            // Queues are far from full: every match is a delivery.
            assert_eq!((stats.delivered, stats.dropped), (stats.matched, 0));
            assert!(ev.channels.len() <= 64);
            let depth: u64 = subs.iter().map(|s| s.stats().depth).sum();
            assert_eq!(depth, stats.delivered);
            for s in &subs {
                // One subscription each: at most one frame per publish.
                assert!(s.stats().depth <= 1);
                if let evroute::Next::Frame(f) = s.next(std::time::Duration::ZERO) {
                    assert_eq!(f.event(), &*ev.name);
                    assert_eq!(f.payload(), ev.payload.as_deref());
                    common::check_frame(&f);
                }
            }
        }
    }
    check_counters(&engine, &subs);
    // The engine stays usable: a good status reaches `public` and `hashtag`.
    let after = engine.publish(GOOD_STATUS).unwrap();
    assert!(after.delivered >= 3, "{after:?}");
    assert_eq!(drain(&subs[0]), 1);
    assert_eq!(drain(&subs[4]), 1);
    for s in &subs {
        drain(s);
    }
    check_counters(&engine, &subs);
});
