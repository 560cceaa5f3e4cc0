//! SPEC §11 cost: evaluating 1,000 distinct keyword filter lists on one
//! status (text extraction apart), and publishing to 100k subscribers on
//! `public` of which 10% have filters drawn from those lists, next to the
//! same publish without filters, in the same run. Prints the ratio.
//! Publishes are timed in thread CPU time (the machine is shared).

use std::cell::Cell;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use evroute::baseline::thread_cpu_time;
use evroute::filter_bench;
use evroute::keyword::now_ms;

const SUBSCRIBERS: usize = 100_000;
const DISTINCT_LISTS: usize = 1000;

fn keyword_filters(c: &mut Criterion) {
    let event = filter_bench::status_event();
    let payload = std::str::from_utf8(&event).unwrap();
    let payload = &payload[payload.find("\"payload\"").unwrap()..];
    let status = &payload[payload.find('{').unwrap()..payload.rfind('}').unwrap()];
    let lists = filter_bench::filter_lists(DISTINCT_LISTS);
    let mut g = c.benchmark_group("keyword_filters");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(3));

    g.bench_function("status_text", |b| b.iter(|| evroute::text::status_text(std::hint::black_box(status))));
    let text = evroute::text::status_text(status).unwrap();
    let (registry, sets) = filter_bench::registry(&lists).unwrap();
    let now = now_ms();
    let matching = filter_bench::evaluate_all(&registry, &sets, &text, now);
    println!("keyword_filters: {matching} of {DISTINCT_LISTS} lists match the status");
    g.bench_function(BenchmarkId::new("scan_only", DISTINCT_LISTS), |b| {
        b.iter(|| registry.event(std::hint::black_box(&text).clone(), now))
    });
    g.bench_function(BenchmarkId::new("evaluate_all_lists", DISTINCT_LISTS), |b| {
        b.iter(|| filter_bench::evaluate_all(&registry, &sets, &text, now))
    });

    let times = [Cell::new(Duration::ZERO), Cell::new(Duration::ZERO)];
    let counts = [Cell::new(0u64), Cell::new(0u64)];
    for (slot, (name, lists)) in [("plain", None), ("filtered_10pct", Some(lists.as_slice()))].into_iter().enumerate() {
        let (engine, subs) = filter_bench::subscribers(SUBSCRIBERS, lists).unwrap();
        g.bench_function(BenchmarkId::new(format!("publish_{name}"), SUBSCRIBERS), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = thread_cpu_time();
                    let stats = engine.publish(&event).unwrap();
                    total += thread_cpu_time() - start;
                    assert_eq!(stats.delivered, SUBSCRIBERS as u64);
                    filter_bench::drain(&subs);
                }
                times[slot].set(times[slot].get() + total);
                counts[slot].set(counts[slot].get() + iters);
                total
            })
        });
    }
    g.finish();
    let per = |i: usize| times[i].get().as_secs_f64() * 1e6 / counts[i].get().max(1) as f64;
    println!(
        "keyword_filters: publish to {SUBSCRIBERS}: plain {:.0} us, 10% filtered {:.0} us, ratio {:.2}",
        per(0),
        per(1),
        per(1) / per(0)
    );
}

criterion_group!(benches, keyword_filters);
criterion_main!(benches);
