//! The keyword-filter scenario of `evroute bench` (SPEC §11): every
//! subscriber on `public`, 10% of them with keyword filters drawn from 1,000
//! distinct lists of 1–10 keywords (`evroute::filter_bench`), against the
//! same subscribers without filters. The two engines alternate in chunks of
//! events so both see the same machine load; only publishes are timed.
//! Evaluation alone (text scan and 1,000 lists, text extraction apart) is
//! timed on the same status. Times are the thread's CPU time, so that a busy
//! machine preempting the benchmark does not count as its cost.

use std::time::Duration;

use evroute::baseline::thread_cpu_time as cpu_time;
use evroute::filter_bench;
use evroute::keyword::now_ms;
use indicatif::ProgressBar;
use serde_json::{Value, json};

const DISTINCT_LISTS: usize = 1000;
/// Events per chunk; queues (capacity 64) are drained between chunks.
const CHUNK: usize = 16;
const CHUNKS: usize = 8;
const EVALUATIONS: usize = 2000;
/// Evaluations are also timed in blocks of this many, for a median that a
/// block slowed by another process on the shared cores does not move.
const EVALUATION_BLOCK: usize = 100;

pub fn run(n: usize, pb: &ProgressBar) -> Result<Value, String> {
    let event = filter_bench::status_event();
    let lists = filter_bench::filter_lists(DISTINCT_LISTS);
    crate::bench::phase(pb, "filters: subscribing", 1);
    let (plain, plain_subs) = filter_bench::subscribers(n, None).map_err(|e| e.to_string())?;
    let (filtered, filtered_subs) = filter_bench::subscribers(n, Some(&lists)).map_err(|e| e.to_string())?;
    crate::bench::phase(pb, "filters: publish vs plain", CHUNKS);
    let mut times = [Duration::ZERO; 2];
    let mut ratios = Vec::new();
    for chunk in 0..=CHUNKS {
        let mut chunk_times = [Duration::ZERO; 2];
        for (slot, (engine, subs)) in [(&plain, &plain_subs), (&filtered, &filtered_subs)].into_iter().enumerate() {
            let start = cpu_time();
            for _ in 0..CHUNK {
                let stats = engine.publish(&event).map_err(|e| e.to_string())?;
                if stats.delivered != n as u64 {
                    return Err(format!("filters: {} deliveries, expected {n}", stats.delivered));
                }
            }
            // Chunk 0 warms up (queue buffers, the automaton).
            chunk_times[slot] = cpu_time() - start;
            if chunk > 0 {
                times[slot] += chunk_times[slot];
            }
            filter_bench::drain(subs);
        }
        if chunk > 0 {
            ratios.push(chunk_times[1].as_secs_f64() / chunk_times[0].as_secs_f64());
        }
        pb.inc(1);
    }
    ratios.sort_by(f64::total_cmp);
    let per_event = |d: Duration| d.as_secs_f64() * 1e6 / (CHUNKS * CHUNK) as f64;

    crate::bench::phase(pb, "filters: evaluation", 1);
    let status = std::str::from_utf8(&event).map_err(|e| e.to_string())?;
    let status = status.get(status.find("\"payload\"").unwrap_or(0)..).unwrap_or("");
    let status = status.get(status.find('{').unwrap_or(0)..status.rfind('}').unwrap_or(0)).unwrap_or("");
    let text = evroute::text::status_text(status).ok_or("filters: no status text")?;
    let (registry, sets) = filter_bench::registry(&lists).map_err(|e| e.to_string())?;
    let now = now_ms();
    let matching = filter_bench::evaluate_all(&registry, &sets, &text, now);
    let mut blocks = Vec::new();
    for _ in 0..EVALUATIONS / EVALUATION_BLOCK {
        let start = cpu_time();
        for _ in 0..EVALUATION_BLOCK {
            std::hint::black_box(filter_bench::evaluate_all(&registry, &sets, &text, now));
        }
        blocks.push(cpu_time() - start);
    }
    let evaluate: Duration = blocks.iter().sum();
    blocks.sort();
    let evaluate_median = blocks[blocks.len() / 2].as_secs_f64() * 1e6 / EVALUATION_BLOCK as f64;
    let start = cpu_time();
    for _ in 0..EVALUATIONS {
        std::hint::black_box(evroute::text::status_text(status));
    }
    let extract = cpu_time() - start;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / EVALUATIONS as f64;
    Ok(json!({
        "subscribers": n,
        "filtered_share": 0.1,
        "distinct_lists": DISTINCT_LISTS,
        "matching_lists": matching,
        "plain_us_per_publish": per_event(times[0]),
        "filtered_us_per_publish": per_event(times[1]),
        "ratio": times[1].as_secs_f64() / times[0].as_secs_f64(),
        "ratio_chunks": { "median": ratios[ratios.len() / 2], "min": ratios[0], "max": ratios[ratios.len() - 1] },
        "evaluate_us_per_event": per(evaluate),
        "evaluate_us_median_block": evaluate_median,
        "text_us_per_event": per(extract),
    }))
}
