//! Subscribe/unsubscribe churn (ops/s), and publish throughput to 10k
//! public subscribers while another thread runs ~100k sub/unsub per second.
//! Publishes are timed in the publishing thread's CPU time, so that the
//! churner (or anything else) taking the CPU away is not counted as their
//! cost; `evroute bench` reports the same ratio with wall time beside it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use evroute::{Engine, SubscriberOptions};

fn churn_ops(c: &mut Criterion) {
    let engine = Engine::default();
    let base: Vec<_> = (0..100_000)
        .map(|i| {
            let s = engine.subscriber(Default::default());
            s.subscribe(format!(r#"{{"stream":"hashtag","tag":"t{}"}}"#, i % 1000).as_bytes()).unwrap();
            s
        })
        .collect();
    let sub = engine.subscriber(SubscriberOptions { account: Some("1".into()), ..Default::default() });
    let mut g = c.benchmark_group("churn");
    g.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(2));
    g.bench_function("subscribe_unsubscribe_pair", |b| {
        b.iter(|| {
            assert!(sub.subscribe(br#"{"stream":"hashtag","tag":"t7"}"#).unwrap());
            assert!(sub.unsubscribe(br#"{"stream":"hashtag","tag":"t7"}"#).unwrap());
        })
    });
    g.finish();
    drop(base);
}

/// Sub/unsub pairs at `per_sec` operations per second until `stop`.
fn churner(engine: Engine, stop: Arc<AtomicBool>, done: Arc<AtomicU64>, per_sec: u64) {
    let sub = engine.subscriber(Default::default());
    let start = Instant::now();
    let mut ops = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * per_sec as f64) as u64;
        if ops >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        sub.subscribe(br#"{"stream":"public"}"#).unwrap();
        sub.unsubscribe(br#"{"stream":"public"}"#).unwrap();
        ops += 2;
    }
    done.store(ops, Ordering::Relaxed);
}

fn publish_under_churn(c: &mut Criterion) {
    let event = common::public_status();
    let (engine, subs) = common::public_subscribers(10_000, 16);
    let mut g = c.benchmark_group("publish_10k");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    let mut measure = |name: &str| {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = common::cpu_time();
                    engine.publish(&event).unwrap();
                    total += common::cpu_time() - start;
                    common::drain(&subs);
                }
                total
            })
        });
    };
    measure("quiet");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let t = {
        let (e, s, d) = (engine.clone(), Arc::clone(&stop), Arc::clone(&done));
        std::thread::spawn(move || churner(e, s, d, 100_000))
    };
    measure("under_100k_churn_per_sec");
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    eprintln!("churn thread achieved {rate:.0} sub/unsub ops per second");
    g.finish();
}

criterion_group!(benches, churn_ops, publish_under_churn);
criterion_main!(benches);
