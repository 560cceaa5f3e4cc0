//! Fan-out of one event to N subscribers on one stream (ns per delivery),
//! next to the floor (`evroute::baseline::Floor`: a reference-count bump and
//! a pointer store into N separate rings) at the same N, in the same run.
//! Only the publish is timed, in thread CPU time (the machine is shared);
//! queues and rings are drained between iterations. Prints `publish ÷ floor`
//! per N at the end.

mod common;

use std::cell::{Cell, OnceCell};
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use evroute::baseline::{Floor, thread_cpu_time};

/// Total time and deliveries measured by one benchmark function.
#[derive(Default)]
struct Tally {
    time: Cell<Duration>,
    deliveries: Cell<u64>,
}

impl Tally {
    fn add(&self, time: Duration, deliveries: u64) {
        self.time.set(self.time.get() + time);
        self.deliveries.set(self.deliveries.get() + deliveries);
    }
    fn ns_per_delivery(&self) -> f64 {
        self.time.get().as_nanos() as f64 / self.deliveries.get().max(1) as f64
    }
}

fn fanout(c: &mut Criterion) {
    let event = common::public_status();
    let mut g = c.benchmark_group("fanout");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(3));
    let mut report = Vec::new();
    for n in [1_000usize, 10_000, 100_000, 1_000_000] {
        g.throughput(Throughput::Elements(n as u64));
        let (publish, floor) = (Tally::default(), Tally::default());
        // Built on first use: criterion runs a closure only when its
        // benchmark passes the command line's filter, and the 1M engine
        // alone takes seconds and hundreds of MB.
        {
            let setup = OnceCell::new();
            g.bench_with_input(BenchmarkId::new("publish", n), &n, |b, &n| {
                let (engine, subs) = setup.get_or_init(|| common::public_subscribers(n, 16));
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = thread_cpu_time();
                        let stats = engine.publish(&event).unwrap();
                        total += thread_cpu_time() - start;
                        assert_eq!(stats.delivered, n as u64);
                        common::drain(subs);
                    }
                    publish.add(total, iters * n as u64);
                    total
                })
            });
        }
        {
            let mut rings = None;
            let item = Arc::new(event.clone());
            g.bench_with_input(BenchmarkId::new("floor", n), &n, |b, &n| {
                let rings = rings.get_or_insert_with(|| Floor::new(n));
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = thread_cpu_time();
                        assert_eq!(rings.publish(&item), n as u64);
                        total += thread_cpu_time() - start;
                        rings.drain();
                    }
                    floor.add(total, iters * n as u64);
                    total
                })
            });
        }
        report.push((n, publish.ns_per_delivery(), floor.ns_per_delivery()));
    }
    g.finish();
    // Scales a filter left out measured nothing.
    for (n, p, f) in report.into_iter().filter(|(_, p, f)| *p > 0.0 && *f > 0.0) {
        println!("fanout {n:>9}: publish {p:7.1} ns/delivery, floor {f:6.1} ns/delivery, publish/floor {:.2}", p / f);
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);
