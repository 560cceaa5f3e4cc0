//! Cost of history (SPEC §12), in one run:
//! - `publish/off` and `publish/on`: one public status to 10k subscribers on
//!   an engine without and with history (1000 events per channel); `on_ids`
//!   is the same with every subscriber asking for `event_ids`. Prints the
//!   median `on ÷ off` of interleaved rounds at the end.
//! - `resume/1000`: a new subscriber resuming 1,000 retained frames into its
//!   queue (creating and draining the subscriber is not timed).
//! - `user/off`, `user/on`: the `user` case of the streaming benchmark on the
//!   engine alone: 1,000 subscribers on `user` (with `event_ids` when history
//!   is on, 256 events per channel as evroute-streaming keeps by default), a
//!   status published to each one's `timeline:<account>` in turn, as the
//!   Redis node does; thread CPU time per publish (draining is not timed).

mod common;

use std::cell::Cell;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use evroute::{Engine, Subscriber};

const SUBSCRIBERS: usize = 10_000;
const HISTORY: &str = r#""history":{"max_events":1000,"max_age_s":3600}"#;

fn engine(config: &str, options: &str, n: usize) -> (Engine, Vec<Subscriber>) {
    let engine = Engine::from_json(format!("{{\"queue_capacity\":16{config}}}").as_bytes()).unwrap();
    let subs = (0..n)
        .map(|_| {
            let s = engine.subscriber_from_json(options.as_bytes()).unwrap();
            s.subscribe(br#"{"stream":"public"}"#).unwrap();
            s
        })
        .collect();
    (engine, subs)
}

fn publish(c: &mut Criterion) {
    let event = common::public_status();
    let mut g = c.benchmark_group("history");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    let with_history = format!(",{HISTORY}");
    let variants = [
        ("off", engine("", "{}", SUBSCRIBERS)),
        ("on", engine(&with_history, "{}", SUBSCRIBERS)),
        ("on_ids", engine(&with_history, r#"{"event_ids":true}"#, SUBSCRIBERS)),
    ];
    let publish_once = |(engine, subs): &(Engine, Vec<Subscriber>)| {
        let start = Instant::now();
        let stats = engine.publish(&event).unwrap();
        let time = start.elapsed();
        assert_eq!(stats.delivered, SUBSCRIBERS as u64);
        common::drain(subs);
        time
    };
    for (name, variant) in &variants {
        g.bench_function(BenchmarkId::new("publish", name), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| publish_once(variant)).sum())
        });
    }
    // The ratios are medians over rounds that publish once to each engine,
    // starting with a different one each round, so that a noisy neighbour or
    // a cold cache weighs on all three alike.
    let rounds = 600;
    let mut times = vec![[0f64; 3]; rounds];
    for (round, t) in times.iter_mut().enumerate() {
        for k in 0..3 {
            let i = (round + k) % 3;
            t[i] = publish_once(&variants[i].1).as_secs_f64() * 1e6;
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let per_publish: Vec<(&str, f64, f64)> = (0..3)
        .map(|i| {
            let us = median(times.iter().map(|t| t[i]).collect());
            (variants[i].0, us, median(times.iter().map(|t| t[i] / t[0]).collect()))
        })
        .collect();
    drop(variants);

    let (engine, _) = engine(&with_history, "{}", 0);
    for _ in 0..1000 {
        engine.publish(&event).unwrap();
    }
    let start_id = format!("{}:0", engine.epoch().unwrap());
    let resume = Cell::new((Duration::ZERO, 0u64));
    g.throughput(Throughput::Elements(1000));
    g.bench_function(BenchmarkId::new("resume", 1000), |b| {
        b.iter_custom(|iters| {
            let mut time = Duration::ZERO;
            for _ in 0..iters {
                let sub = engine.subscriber_from_json(br#"{"queue_capacity":2000}"#).unwrap();
                sub.subscribe(br#"{"stream":"public"}"#).unwrap();
                let start = Instant::now();
                let resumed = sub.resume(&start_id).unwrap();
                time += start.elapsed();
                assert_eq!((resumed.replayed, resumed.gap), (1000, false));
                common::drain(std::slice::from_ref(&sub));
            }
            let (t, n) = resume.get();
            resume.set((t + time, n + iters));
            time
        })
    });
    g.finish();

    for (name, us, ratio) in &per_publish {
        println!(
            "history publish {name:>6}: median {us:8.1} µs per publish to {SUBSCRIBERS}, median ratio {ratio:.3}x off"
        );
    }
    let (t, n) = resume.get();
    println!("history resume 1000 frames: {:.1} µs", t.as_secs_f64() * 1e6 / n.max(1) as f64);
}

const USERS: usize = 1_000;

fn user_engine(history: bool) -> (Engine, Vec<Subscriber>, Vec<Vec<u8>>) {
    let config = if history {
        r#"{"queue_capacity":64,"history":{"max_events":256,"max_age_s":300}}"#
    } else {
        r#"{"queue_capacity":64}"#
    };
    let engine = Engine::from_json(config.as_bytes()).unwrap();
    let subs = (0..USERS)
        .map(|i| {
            let s = engine
                .subscriber_from_json(format!(r#"{{"account":{},"event_ids":{history}}}"#, i + 1).as_bytes())
                .unwrap();
            s.subscribe(br#"{"stream":"user"}"#).unwrap();
            s
        })
        .collect();
    let channels = (0..USERS).map(|i| format!("timeline:{}", i + 1).into_bytes()).collect();
    (engine, subs, channels)
}

fn user(c: &mut Criterion) {
    let message = common::STATUSES[1].as_bytes();
    let mut g = c.benchmark_group("history");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    for (name, history) in [("off", false), ("on", true)] {
        let (engine, subs, channels) = user_engine(history);
        let mut next = 0;
        g.bench_function(BenchmarkId::new("user", name), |b| {
            b.iter_custom(|iters| {
                // Thread CPU time, read around each run of publishes between
                // drains: a shared machine's preemptions do not count.
                let mut time = Duration::ZERO;
                let mut start = common::cpu_time();
                for _ in 0..iters {
                    let stats = engine.publish_channel(&channels[next], message).unwrap();
                    assert_eq!(stats.delivered, 1);
                    next += 1;
                    if next == USERS {
                        next = 0;
                        time += common::cpu_time() - start;
                        common::drain(&subs);
                        start = common::cpu_time();
                    }
                }
                time + (common::cpu_time() - start)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, publish, user);
criterion_main!(benches);
