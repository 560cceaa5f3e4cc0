//! Routing-key extraction on corpus statuses (MB/s), against serde_json
//! deserializing only the same fields into a typed struct, and against
//! simd-json only building its tape of the same input (copy + UTF-8 check +
//! `fill_tape` with reused buffers, extracting nothing): issue 13's baseline.
//! After criterion's groups, `extract/vs_tape` times extraction and the tape
//! build in alternating rounds (thread CPU time) and prints GB/s and their
//! ratio, and the ratio of the scan alone.

mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Deserialize;
use serde::de::IgnoredAny;

#[derive(Deserialize)]
#[allow(dead_code)]
struct Envelope {
    event: String,
    payload: Status,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Status {
    id: String,
    visibility: String,
    language: Option<String>,
    in_reply_to_account_id: Option<String>,
    reblog: Option<IgnoredAny>,
    account: Account,
    mentions: Vec<Account>,
    tags: Vec<Tag>,
    media_attachments: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Account {
    id: String,
    acct: String,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Tag {
    name: String,
}

fn extraction(c: &mut Criterion) {
    let bytes: usize = common::STATUSES.iter().map(|s| s.len()).sum();
    let mut g = c.benchmark_group("extract");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("evroute_parse_content", |b| {
        b.iter(|| {
            for s in common::STATUSES {
                std::hint::black_box(evroute::event::parse_content(s.as_bytes()).unwrap());
            }
        })
    });
    g.bench_function("serde_json_typed", |b| {
        b.iter(|| {
            for s in common::STATUSES {
                std::hint::black_box(serde_json::from_str::<Envelope>(s).unwrap());
            }
        })
    });
    let mut tape = evroute::baseline::TapeBuild::default();
    g.bench_function("simd_json_tape", |b| {
        b.iter(|| {
            for s in common::STATUSES {
                std::hint::black_box(tape.build(s.as_bytes()));
            }
        })
    });
    g.finish();
    let inputs: Vec<&[u8]> = common::STATUSES.iter().map(|s| s.as_bytes()).collect();
    let run = evroute::baseline::extraction_vs_tape(&inputs, 400, 10);
    println!(
        "extract/vs_tape: extraction {:.3} GB/s, simd-json tape build {:.3} GB/s, extraction / tape {:.2}x (the scan alone {:.2}x; against the tape build without the engine's extra UTF-8 check {:.2}x)",
        run.extract_gb_per_s(),
        run.tape_gb_per_s(),
        run.ratio(),
        run.scan_ratio(),
        run.bare_ratio()
    );
    // Where the time goes per status: the scan, routing on the scanned
    // document (extraction minus the scan), and the tape build, in ns.
    for (n, input) in inputs.iter().enumerate() {
        let (rounds, passes) = (200, 10);
        let run = evroute::baseline::extraction_vs_tape(&[input], rounds, passes);
        let ns = |d: std::time::Duration| d.as_nanos() as f64 / (rounds * passes) as f64;
        println!(
            "extract/status {n} ({} B): extraction {:.0} ns = scan {:.0} + routing {:.0}; tape build {:.0} ns",
            input.len(),
            ns(run.extract),
            ns(run.scan),
            ns(run.extract) - ns(run.scan),
            ns(run.tape)
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = extraction
}
criterion_main!(benches);
