//! The Redis node's ingest parser (`src/redis_ingest.rs`) against the
//! `redis` crate's, which the node used before: one buffer of `message`
//! pushes carrying the corpus statuses, as one socket read hands it over.
//! Both take every message's channel and payload; the crate's path is the
//! one the node had (`Parser::parse_value`, then `Msg::from_owned_value`).

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn pushes() -> (Vec<u8>, usize) {
    let mut buf = Vec::new();
    let mut count = 0;
    for _ in 0..8 {
        for status in common::STATUSES {
            let channel = b"timeline:public";
            let payload = status.as_bytes();
            buf.extend_from_slice(b"*3\r\n$7\r\nmessage\r\n");
            buf.extend_from_slice(format!("${}\r\n", channel.len()).as_bytes());
            buf.extend_from_slice(channel);
            buf.extend_from_slice(format!("\r\n${}\r\n", payload.len()).as_bytes());
            buf.extend_from_slice(payload);
            buf.extend_from_slice(b"\r\n");
            count += 1;
        }
    }
    (buf, count)
}

/// The node's former path: `count` messages, and their payload bytes.
fn redis_crate(buf: &[u8], count: usize) -> (usize, usize) {
    let mut reader = std::io::BufReader::new(buf);
    let mut parser = redis::Parser::new();
    let (mut messages, mut bytes) = (0, 0);
    for _ in 0..count {
        let value = parser.parse_value(&mut reader).unwrap();
        let msg = redis::Msg::from_owned_value(value).unwrap();
        std::hint::black_box(msg.get_channel_name());
        messages += 1;
        bytes += msg.get_payload_bytes().len();
    }
    (messages, bytes)
}

fn parse(c: &mut Criterion) {
    let (buf, count) = pushes();
    let payload_bytes: usize = 8 * common::STATUSES.iter().map(|s| s.len()).sum::<usize>();
    assert_eq!(evroute::ingest_bench::messages(&buf).unwrap(), (count, payload_bytes));
    assert_eq!(redis_crate(&buf, count), (count, payload_bytes));
    let mut g = c.benchmark_group("redis_ingest");
    g.throughput(Throughput::Elements(count as u64));
    g.bench_function("evroute", |b| b.iter(|| evroute::ingest_bench::messages(std::hint::black_box(&buf)).unwrap()));
    g.bench_function("redis_crate", |b| b.iter(|| redis_crate(std::hint::black_box(&buf), count)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = parse
}
criterion_main!(benches);
