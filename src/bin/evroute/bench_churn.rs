//! Two targets of issue 13 in `evroute bench`, independent of the scale:
//!
//! - Churn: publish to 10,000 `public` subscribers while another thread
//!   subscribes and unsubscribes on the same list at 100,000 operations per
//!   second, against the same publishes with the churner paused. Quiet and
//!   churned chunks alternate so both see the same machine load; each round
//!   gives one ratio (quiet time ÷ churned time, i.e. the throughput kept)
//!   and the median is reported with the spread. Times are the publishing
//!   thread's CPU time (a busy machine preempting it is not its cost); wall
//!   time is reported beside it.
//! - Idle memory: RSS growth per idle subscriber with one subscription, half
//!   on `public` and half on one of 100,000 hashtags (the workload of
//!   `examples/idle_memory.rs`), in a child process with a fresh heap.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use evroute::baseline::thread_cpu_time as cpu_time;
use evroute::{Engine, EngineConfig, Next, Subscriber};
use indicatif::ProgressBar;
use serde_json::{Value, json};

const CHURN_SUBSCRIBERS: usize = 10_000;
const CHURN_PER_SEC: u64 = 100_000;
/// Publishes per chunk; queues (capacity 64) are drained between chunks.
const CHUNK: usize = 32;
const ROUNDS: usize = 15;

/// Subscribe/unsubscribe pairs on `public` at `CHURN_PER_SEC` operations per
/// second, counted over the time `active` is set, until `stop`.
fn churner(engine: Engine, active: Arc<AtomicBool>, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    let sub = engine.subscriber(Default::default());
    let mut ops = 0u64;
    let mut active_time = Duration::ZERO;
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if active.load(Ordering::Relaxed) {
            active_time += now - last;
        }
        last = now;
        let due = (active_time.as_secs_f64() * CHURN_PER_SEC as f64) as u64;
        if !active.load(Ordering::Relaxed) || ops >= due {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        sub.subscribe(br#"{"stream":"public"}"#).expect("valid subscription");
        sub.unsubscribe(br#"{"stream":"public"}"#).expect("valid subscription");
        ops += 2;
        done.store(ops, Ordering::Relaxed);
    }
}

fn drain(subs: &[Subscriber]) {
    for s in subs {
        while let Next::Frame(f) = s.next(Duration::ZERO) {
            std::hint::black_box(f);
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn churn(event: &[u8], pb: &ProgressBar) -> Result<Value, String> {
    crate::bench::phase(pb, "churn: subscribing", 1);
    let engine = Engine::new(EngineConfig { queue_capacity: 64, ..EngineConfig::default() });
    let subs: Vec<Subscriber> = (0..CHURN_SUBSCRIBERS)
        .map(|_| {
            let s = engine.subscriber(Default::default());
            s.subscribe(br#"{"stream":"public"}"#).map(|_| s).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let (active, stop, done) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let thread = {
        let (e, a, s, d) = (engine.clone(), Arc::clone(&active), Arc::clone(&stop), Arc::clone(&done));
        std::thread::spawn(move || churner(e, a, s, d))
    };
    crate::bench::phase(pb, "churn: publish quiet vs churned", ROUNDS);
    let (mut cpu_ratios, mut wall_ratios) = (Vec::new(), Vec::new());
    let mut churn_wall = Duration::ZERO;
    let mut quiet_cpu = Duration::ZERO;
    let mut result = Ok(());
    // Round 0 warms up (queue buffers, the churner's allocations).
    for round in 0..=ROUNDS {
        let mut cpu = [Duration::ZERO; 2];
        let mut wall = [Duration::ZERO; 2];
        for (slot, churning) in [false, true].into_iter().enumerate() {
            active.store(churning, Ordering::Relaxed);
            let (c0, w0) = (cpu_time(), Instant::now());
            for _ in 0..CHUNK {
                if let Err(e) = engine.publish(event) {
                    result = Err(e.to_string());
                }
            }
            (cpu[slot], wall[slot]) = (cpu_time() - c0, w0.elapsed());
            active.store(false, Ordering::Relaxed);
            drain(&subs);
        }
        if round > 0 {
            cpu_ratios.push(cpu[0].as_secs_f64() / cpu[1].as_secs_f64());
            wall_ratios.push(wall[0].as_secs_f64() / wall[1].as_secs_f64());
            churn_wall += wall[1];
            quiet_cpu += cpu[0];
        }
        pb.inc(1);
    }
    stop.store(true, Ordering::Relaxed);
    thread.join().map_err(|_| "churn: the churner panicked")?;
    result?;
    let ops = done.load(Ordering::Relaxed) as f64;
    let spread = |v: &[f64]| (v[0], v[v.len() - 1]);
    let cpu_median = median(&mut cpu_ratios);
    let wall_median = median(&mut wall_ratios);
    Ok(json!({
        "subscribers": CHURN_SUBSCRIBERS,
        "target_ops_per_sec": CHURN_PER_SEC,
        "achieved_ops_per_sec": ops / churn_wall.as_secs_f64().max(1e-9),
        "rounds": ROUNDS,
        "publishes_per_chunk": CHUNK,
        "quiet_us_per_publish_cpu": quiet_cpu.as_secs_f64() * 1e6 / (ROUNDS * CHUNK) as f64,
        "ratio_cpu_median": cpu_median,
        "ratio_cpu_min_max": spread(&cpu_ratios),
        "ratio_wall_median": wall_median,
        "ratio_wall_min_max": spread(&wall_ratios),
    }))
}

/// The workload of `examples/idle_memory.rs`.
fn idle_subscribers(engine: &Engine, n: usize) -> Vec<Subscriber> {
    (0..n)
        .map(|i| {
            let s = engine.subscriber(Default::default());
            let tag = format!(r#"{{"stream":"hashtag","tag":"t{}"}}"#, i % 100_000);
            s.subscribe(if i.is_multiple_of(2) { br#"{"stream":"public"}"# } else { tag.as_bytes() })
                .expect("valid subscription");
            s
        })
        .collect()
}

/// Run in a child process (fresh heap): prints the RSS growth per idle
/// subscriber in bytes.
pub fn idle_probe(n: usize) -> ExitCode {
    let engine = Engine::default();
    let before = crate::bench::rss_bytes();
    let subs = idle_subscribers(&engine, n.max(1));
    let after = crate::bench::rss_bytes();
    println!("{}", after.saturating_sub(before) as f64 / subs.len() as f64);
    ExitCode::SUCCESS
}

pub fn measure_idle(n: usize) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe).args(["bench", "--idle-probe", &n.to_string()]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}
