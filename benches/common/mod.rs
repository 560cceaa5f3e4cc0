//! Shared by the criterion benches: corpus payloads and builders.
#![allow(dead_code)]

use evroute::{Engine, EngineConfig, Next, Subscriber};

pub const STATUSES: [&str; 4] = [
    include_str!("../../corpus/mastodon/01-update-108914327388663283.json"),
    include_str!("../../corpus/mastodon/11-update-108914398911648589.json"),
    include_str!("../../corpus/mastodon/14-update-108914430312582020.json"),
    include_str!("../../corpus/mastodon/13-status.update-109348699525106378.json"),
];

/// A public, local, tag-less status that reaches `timeline:public`.
pub fn public_status() -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(STATUSES[1]).unwrap();
    let p = &mut v["payload"];
    p["visibility"] = "public".into();
    p["in_reply_to_account_id"] = serde_json::Value::Null;
    p["tags"] = serde_json::json!([]);
    serde_json::to_vec(&v).unwrap()
}

/// An engine with `n` subscribers on `public`, with queues large enough
/// for `depth` frames each.
pub fn public_subscribers(n: usize, depth: usize) -> (Engine, Vec<Subscriber>) {
    let engine = Engine::new(EngineConfig { queue_capacity: depth, ..EngineConfig::default() });
    let subs = (0..n)
        .map(|_| {
            let s = engine.subscriber(Default::default());
            s.subscribe(br#"{"stream":"public"}"#).unwrap();
            s
        })
        .collect();
    (engine, subs)
}

pub fn drain(subs: &[Subscriber]) {
    for s in subs {
        while let Next::Frame(f) = s.next(std::time::Duration::ZERO) {
            std::hint::black_box(f);
        }
    }
}

/// CPU time of the calling thread.
pub fn cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; this clock exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
