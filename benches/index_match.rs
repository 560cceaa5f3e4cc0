//! Index match at 1M subscriptions over 100k tags, 10k lists and 100k
//! accounts: ns per event, without delivery (`Engine::count_matches`).

mod common;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use evroute::{Engine, SubscriberOptions};

const TAGS: usize = 100_000;
const LISTS: usize = 10_000;
const ACCOUNTS: usize = 100_000;
const SUBSCRIPTIONS: usize = 1_000_000;

fn matching(c: &mut Criterion) {
    let engine = Engine::default();
    let mut subs = Vec::with_capacity(SUBSCRIPTIONS);
    for i in 0..SUBSCRIPTIONS {
        let account = (i % ACCOUNTS).to_string();
        let sub = engine.subscriber(SubscriberOptions { account: Some(account), ..Default::default() });
        let json = match i % 10 {
            0..5 => format!(r#"{{"stream":"hashtag","tag":"t{}"}}"#, i % TAGS),
            5..8 => format!(r#"{{"stream":"list","list":{}}}"#, i % LISTS),
            _ => r#"{"stream":"user"}"#.to_string(),
        };
        sub.subscribe(json.as_bytes()).unwrap();
        subs.push(sub);
    }
    // Unlisted (no public timelines): 3 tags, 20 home timelines, 2 lists.
    let mut v: serde_json::Value = serde_json::from_str(common::STATUSES[1]).unwrap();
    v["payload"]["visibility"] = "unlisted".into();
    v["payload"]["tags"] = serde_json::json!([{"name": "t17"}, {"name": "t4242"}, {"name": "t99999"}]);
    v["recipients"] = (0..20).map(|i| serde_json::json!((i * 4999).to_string())).collect();
    v["lists"] = serde_json::json!([7, 9001]);
    let event = serde_json::to_vec(&v).unwrap();
    let expected = engine.count_matches(&event).unwrap();
    assert!(expected > 0);
    let mut g = c.benchmark_group("index_match_1M");
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    g.bench_function(format!("event_matching_{expected}"), |b| {
        b.iter(|| assert_eq!(engine.count_matches(&event).unwrap(), expected))
    });
    g.bench_function("parse_only", |b| b.iter(|| std::hint::black_box(evroute::event::parse_content(&event).unwrap())));
    g.finish();
    drop(subs);
}

criterion_group!(benches, matching);
criterion_main!(benches);
