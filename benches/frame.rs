//! Frame encoding: SSE body plus one WebSocket frame per stream array.

mod common;

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use evroute::frame::{Frame, FrameBody};

fn encoding(c: &mut Criterion) {
    let payloads: Vec<String> = common::STATUSES
        .iter()
        .map(|s| {
            let v: serde_json::Value = serde_json::from_str(s).unwrap();
            v["payload"].to_string()
        })
        .collect();
    let bytes: usize = payloads.iter().map(String::len).sum();
    let stream: Arc<str> = Arc::from(r#"["hashtag","rust"]"#);
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("sse_and_ws", |b| {
        b.iter(|| {
            for p in &payloads {
                let body = FrameBody::new("update", Some(p));
                std::hint::black_box(Frame::new(&body, &stream));
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = encoding
}
criterion_main!(benches);
