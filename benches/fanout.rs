//! Fan-out of one event to N subscribers on one stream (ns per delivery).
//! Only `publish` is timed; queues are drained between iterations.

mod common;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn fanout(c: &mut Criterion) {
    let event = common::public_status();
    let mut g = c.benchmark_group("fanout");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(3));
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        let (engine, subs) = common::public_subscribers(n, 16);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let stats = engine.publish(&event).unwrap();
                    total += start.elapsed();
                    assert_eq!(stats.delivered, n as u64);
                    common::drain(&subs);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
