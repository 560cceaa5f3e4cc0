//! `evroute bench`: fan-out on a synthetic workload built from the corpus,
//! measured next to baseline (a), a Mastodon-style router, and baseline (b),
//! Redis pub/sub, in the same run.
//!
//! What is timed: `publish` calls only (enqueue into every matching queue).
//! Every 64 events (or sooner, once 100k deliveries wait) all queues are
//! drained outside the publish timer; the drain is timed separately and
//! "end to end" adds it. The baselines are timed the same way.
//!
//! A second measurement per scale puts every subscriber on one stream and
//! times the fan-out next to the floor (`baseline::Floor`), alternating
//! between the two in chunks so both see the same machine load.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use std::sync::Arc;

use evroute::baseline::{
    BaselineStream, Connection, FLOOR_SLOTS, Floor, MastodonRouter, RedisServer, redis_fanout, thread_cpu_time,
};
use evroute::{Engine, EngineConfig, Next, Subscriber};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

const USAGE: &str = "\
usage: evroute bench [--scale N[,N...]] [--events N] [--json] [--no-redis] [--one-stream] [--keyword-filters]
  --scale       subscriber counts to run (default 10000,100000; up to 1000000);
                none: only the churn and idle-memory measurements
  --events      events published per scale (default 2000)
  --json        print the results as JSON instead of a table
  --no-redis    skip baseline (b) even when redis-server is installed
  --one-stream  run only the one-stream publish against the floor
  --keyword-filters  run only the keyword-filter publish against the same without filters";

/// Status payloads from the Mastodon documentation (corpus/mastodon).
const STATUSES: [&str; 9] = [
    include_str!("../../../corpus/mastodon/01-update-108914327388663283.json"),
    include_str!("../../../corpus/mastodon/07-status.update-109348677773283527.json"),
    include_str!("../../../corpus/mastodon/08-update-108914354907984653.json"),
    include_str!("../../../corpus/mastodon/10-status.update-109348684737626801.json"),
    include_str!("../../../corpus/mastodon/11-update-108914398911648589.json"),
    include_str!("../../../corpus/mastodon/13-status.update-109348699525106378.json"),
    include_str!("../../../corpus/mastodon/14-update-108914430312582020.json"),
    include_str!("../../../corpus/mastodon/16-status.update-108914430312582020.json"),
    include_str!("../../../corpus/mastodon/17-status.update-108914327388663283.json"),
];
const NOTIFICATION: &str = include_str!("../../../corpus/mastodon/02-notification-68739215.json");

/// Queues are drained after this many events...
const DRAIN_EVERY: usize = 64;
/// ...or once this many deliveries wait. Baseline (a) holds one serialized
/// envelope (~3 KB) per delivery: 64 events × 25k deliveries at 100k
/// subscribers kept 4.3 GB alive between drains.
const DRAIN_DELIVERIES: u64 = 100_000;
/// One-stream run: events per scale come from this budget of deliveries.
const ONE_STREAM_DELIVERIES: usize = 10_000_000;
/// Baseline (a) stops after this long (or after all events).
const BASELINE_BUDGET: Duration = Duration::from_secs(4);
/// Redis baseline: connection cap (file descriptors) and deliveries per run.
const REDIS_MAX_SUBSCRIBERS: usize = 10_000;
const REDIS_DELIVERIES: usize = 500_000;
/// Idle-memory probe: subscribers with one subscription each.
const IDLE_SUBSCRIBERS: usize = 1_000_000;

struct Options {
    scales: Vec<usize>,
    events: usize,
    json: bool,
    redis: bool,
    one_stream_only: bool,
    keyword_only: bool,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        scales: vec![10_000, 100_000],
        events: 2000,
        json: false,
        redis: true,
        one_stream_only: false,
        keyword_only: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--scale" => {
                let scales = value("--scale")?;
                if scales == "none" {
                    o.scales.clear();
                    continue;
                }
                o.scales = scales
                    .split(',')
                    .map(|s| s.trim().replace('_', "").parse::<usize>().map_err(|_| format!("bad scale {s:?}")))
                    .collect::<Result<_, _>>()?;
                if o.scales.iter().any(|&n| n < 10) {
                    return Err("each scale must be at least 10 subscribers".into());
                }
            }
            "--events" => {
                o.events = value("--events")?.parse().map_err(|_| "--events needs a number".to_string())?;
                if o.events < DRAIN_EVERY {
                    return Err(format!("--events must be at least {DRAIN_EVERY}"));
                }
            }
            "--json" => o.json = true,
            "--no-redis" => o.redis = false,
            "--one-stream" => o.one_stream_only = true,
            "--keyword-filters" => o.keyword_only = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

pub fn run(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if let [flag, n] = args
        && flag == "--rss-probe"
    {
        return rss_probe(n.parse().unwrap_or(0));
    }
    if let [flag, n] = args
        && flag == "--idle-probe"
    {
        return crate::bench_churn::idle_probe(n.parse().unwrap_or(0));
    }
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("evroute bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match bench(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("evroute bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// xorshift64*: deterministic, so every run builds the same workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 1.0 < p
    }
    /// Skewed towards 0: a few popular tags, a long tail.
    fn popular(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64) * u * u * u) as usize
    }
}

#[derive(Clone)]
struct SubSpec {
    account: String,
    stream: BaselineStream,
    languages: Option<Vec<&'static str>>,
    blocked: Vec<String>,
}

impl SubSpec {
    fn subscriber_json(&self) -> String {
        let mut o = json!({ "account": self.account, "blocked_accounts": self.blocked });
        if let Some(l) = &self.languages {
            o["languages"] = json!(l);
        }
        o.to_string()
    }

    fn subscription_json(&self) -> String {
        match &self.stream {
            BaselineStream::Public(name) => json!({ "stream": name }),
            BaselineStream::Hashtag(tag) => json!({ "stream": "hashtag", "tag": tag }),
            BaselineStream::List(id) => json!({ "stream": "list", "list": id }),
            BaselineStream::User => json!({ "stream": "user" }),
        }
        .to_string()
    }
}

struct Workload {
    subs: Vec<SubSpec>,
    events: Vec<Vec<u8>>,
    /// A public status without tags, as Mastodon publishes it to Redis.
    public_event: Vec<u8>,
}

fn tag_name(i: usize) -> String {
    format!("tag{i}")
}

/// 40% public timelines (a fifth with viewer filters), 30% hashtags over a
/// skewed pool, 15% lists, 15% home timelines.
fn workload(n: usize, events: usize) -> Workload {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
    let tags = (n / 100).max(50);
    let lists = (n / 20).max(10);
    let subs = (0..n)
        .map(|i| {
            let roll = rng.below(100);
            let stream = match roll {
                0..20 => BaselineStream::Public("public"),
                20..30 => BaselineStream::Public("public:local"),
                30..36 => BaselineStream::Public("public:remote"),
                36..40 => BaselineStream::Public("public:media"),
                40..70 => BaselineStream::Hashtag(tag_name(rng.popular(tags))),
                70..85 => BaselineStream::List(rng.below(lists).to_string()),
                _ => BaselineStream::User,
            };
            let filtered = roll < 70 && rng.chance(0.2);
            SubSpec {
                account: i.to_string(),
                stream,
                languages: filtered.then(|| vec!["en", "de"]),
                blocked: if filtered { (0..3).map(|_| rng.below(n).to_string()).collect() } else { vec![] },
            }
        })
        .collect();
    let templates: Vec<Value> = STATUSES.iter().map(|s| serde_json::from_str(s).expect("corpus JSON")).collect();
    let notification: Value = serde_json::from_str(NOTIFICATION).expect("corpus JSON");
    let status_event = |rng: &mut Rng, public: bool, tag_count: usize| {
        let mut ev = templates[rng.below(templates.len())].clone();
        ev["event"] = json!("update");
        let p = &mut ev["payload"];
        let author = rng.below(n);
        p["visibility"] = json!(if public { "public" } else { "unlisted" });
        p["reblog"] = Value::Null;
        p["in_reply_to_account_id"] = if rng.chance(0.15) { json!(rng.below(n).to_string()) } else { Value::Null };
        p["account"]["id"] = json!(author.to_string());
        p["account"]["acct"] = if rng.chance(0.5) {
            json!(format!("user{author}"))
        } else {
            json!(format!("user{author}@remote{}.example", rng.below(50)))
        };
        p["language"] = json!(["en", "en", "en", "de", "ja"][rng.below(5)]);
        p["tags"] = (0..tag_count).map(|_| json!({ "name": tag_name(rng.popular(tags)) })).collect();
        ev["recipients"] = (0..20).map(|_| json!(rng.below(n).to_string())).collect();
        ev["lists"] = (0..2).map(|_| json!(rng.below(lists))).collect();
        ev
    };
    let mut out = Vec::with_capacity(events.min(1024));
    for _ in 0..events.min(1024) {
        let ev = if rng.chance(0.1) {
            let mut ev = notification.clone();
            ev["recipients"] = json!([rng.below(n).to_string()]);
            ev
        } else {
            let public = rng.chance(0.85);
            let tag_count = rng.below(4);
            status_event(&mut rng, public, tag_count)
        };
        out.push(serde_json::to_vec(&ev).expect("serializable"));
    }
    let mut public = status_event(&mut rng, true, 0);
    public["payload"]["in_reply_to_account_id"] = Value::Null;
    public.as_object_mut().map(|o| (o.remove("recipients"), o.remove("lists")));
    Workload { subs, events: out, public_event: serde_json::to_vec(&public).expect("serializable") }
}

pub(crate) fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// The process's peak resident set (VmHWM), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

fn build_subscribers(engine: &Engine, specs: &[SubSpec]) -> Result<Vec<Subscriber>, String> {
    specs
        .iter()
        .map(|s| {
            let sub = engine.subscriber_from_json(s.subscriber_json().as_bytes()).map_err(|e| e.to_string())?;
            sub.subscribe(s.subscription_json().as_bytes()).map_err(|e| e.to_string())?;
            Ok(sub)
        })
        .collect()
}

/// Run in a child process (fresh heap): RSS growth per idle subscriber with
/// one subscription. Prints the number of bytes.
fn rss_probe(n: usize) -> ExitCode {
    let specs = workload(n.max(1), 0).subs;
    let engine = Engine::new(EngineConfig::default());
    let before = rss_bytes();
    let subs = build_subscribers(&engine, &specs).expect("workload subscriptions are valid");
    let after = rss_bytes();
    println!("{}", (after.saturating_sub(before)) as f64 / subs.len() as f64);
    ExitCode::SUCCESS
}

fn measure_rss_per_subscriber(n: usize) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let out = std::process::Command::new(exe).args(["bench", "--rss-probe", &n.to_string()]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// When to drain: after DRAIN_EVERY events or DRAIN_DELIVERIES deliveries.
#[derive(Default)]
struct Pacer {
    events: usize,
    deliveries: u64,
}

impl Pacer {
    fn due(&mut self, delivered: u64) -> bool {
        self.events += 1;
        self.deliveries += delivered;
        let due = self.events == DRAIN_EVERY || self.deliveries >= DRAIN_DELIVERIES;
        if due {
            *self = Pacer::default();
        }
        due
    }
}

#[derive(Default)]
struct Timing {
    events: usize,
    deliveries: u64,
    publish: Duration,
    drain: Duration,
    drained: u64,
    latencies_ns: Vec<u64>,
}

impl Timing {
    fn per_sec(&self, n: f64, d: Duration) -> f64 {
        n / d.as_secs_f64().max(1e-9)
    }
    fn to_json(&self) -> Value {
        let mut lat = self.latencies_ns.clone();
        lat.sort_unstable();
        let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0) as f64 / 1000.0;
        let e2e = self.publish + self.drain;
        json!({
            "events": self.events,
            "deliveries": self.deliveries,
            "publish_seconds": self.publish.as_secs_f64(),
            "drain_seconds": self.drain.as_secs_f64(),
            "events_per_sec": self.per_sec(self.events as f64, self.publish),
            "deliveries_per_sec": self.per_sec(self.deliveries as f64, self.publish),
            "ns_per_delivery": self.publish.as_nanos() as f64 / self.deliveries.max(1) as f64,
            "drain_ns_per_frame": self.drain.as_nanos() as f64 / self.drained.max(1) as f64,
            "e2e_deliveries_per_sec": self.per_sec(self.deliveries as f64, e2e),
            "p50_publish_us": pct(0.5),
            "p99_publish_us": pct(0.99),
        })
    }
}

fn bar(opts: &Options, prefix: String) -> ProgressBar {
    let pb = if opts.json && !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} {msg:<28} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
}

pub(crate) fn phase(pb: &ProgressBar, msg: &'static str, len: usize) {
    pb.set_message(msg);
    pb.set_length(len as u64);
    pb.set_position(0);
}

fn run_evroute(w: &Workload, events: usize, pb: &ProgressBar) -> Result<Timing, String> {
    let engine = Engine::new(EngineConfig::default());
    phase(pb, "evroute: subscribing", 1);
    let subs = build_subscribers(&engine, &w.subs)?;
    let drain = |t: &mut Timing| {
        let start = Instant::now();
        for s in &subs {
            while let Next::Frame(f) = s.next(Duration::ZERO) {
                std::hint::black_box(f.ws());
                t.drained += 1;
            }
        }
        t.drain += start.elapsed();
    };
    // Warm-up: fault in queue buffers and frame caches.
    let mut warm = Timing::default();
    for ev in w.events.iter().take(DRAIN_EVERY) {
        engine.publish(ev).map_err(|e| e.to_string())?;
    }
    drain(&mut warm);
    phase(pb, "evroute: publishing", events);
    let mut t = Timing { latencies_ns: Vec::with_capacity(events), ..Timing::default() };
    let mut pacer = Pacer::default();
    for i in 0..events {
        let ev = &w.events[i % w.events.len()];
        let start = Instant::now();
        let stats = engine.publish(ev).map_err(|e| e.to_string())?;
        let took = start.elapsed();
        t.publish += took;
        t.latencies_ns.push(took.as_nanos() as u64);
        t.deliveries += stats.delivered;
        t.events += 1;
        if stats.dropped > 0 {
            return Err(format!("{} frames dropped: the measurement would not be comparable", stats.dropped));
        }
        if pacer.due(stats.delivered) {
            drain(&mut t);
        }
        pb.inc(1);
    }
    drain(&mut t);
    Ok(t)
}

/// Every subscriber on `public`, one public status per publish, against the
/// floor at the same count. The two alternate in chunks of FLOOR_SLOTS
/// events (a full ring or queue is drained between chunks, untimed) and are
/// timed in thread CPU time, so both see the same machine load and neither
/// counts time other processes ran. Reports the ratio of the totals and the
/// median, lowest and highest ratio of single chunks.
fn run_one_stream(event: &[u8], n: usize, pb: &ProgressBar) -> Result<Value, String> {
    let config = EngineConfig { queue_capacity: FLOOR_SLOTS, ..EngineConfig::default() };
    let engine = Engine::new(config);
    phase(pb, "one stream: subscribing", 1);
    let subs: Vec<Subscriber> = (0..n)
        .map(|_| {
            let s = engine.subscriber(Default::default());
            s.subscribe(br#"{"stream":"public"}"#).map(|_| s)
        })
        .collect::<evroute::Result<_>>()
        .map_err(|e| e.to_string())?;
    let mut floor = Floor::new(n);
    let item = Arc::new(event.to_vec());
    let chunks = (ONE_STREAM_DELIVERIES / n / FLOOR_SLOTS).clamp(2, 64);
    phase(pb, "one stream: publish vs floor", chunks);
    let (mut ours, mut theirs, mut drain) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut deliveries, mut drained) = (0u64, 0u64);
    let mut ratios = Vec::with_capacity(chunks);
    for chunk in 0..=chunks {
        // Chunk 0 warms up both (faults in queue buffers and rings).
        let start = thread_cpu_time();
        let mut delivered = 0;
        for _ in 0..FLOOR_SLOTS {
            let stats = engine.publish(event).map_err(|e| e.to_string())?;
            delivered += stats.delivered;
        }
        let publish = thread_cpu_time() - start;
        if delivered != (n * FLOOR_SLOTS) as u64 {
            return Err(format!("one stream: {delivered} deliveries, expected {}", n * FLOOR_SLOTS));
        }
        let start = thread_cpu_time();
        let mut taken = 0;
        for s in &subs {
            while let Next::Frame(f) = s.next(Duration::ZERO) {
                std::hint::black_box(f.ws());
                taken += 1;
            }
        }
        let took = thread_cpu_time() - start;
        let start = thread_cpu_time();
        for _ in 0..FLOOR_SLOTS {
            floor.publish(&item);
        }
        let floor_time = thread_cpu_time() - start;
        floor.drain();
        if chunk > 0 {
            ours += publish;
            theirs += floor_time;
            drain += took;
            deliveries += delivered;
            drained += taken;
            ratios.push(publish.as_secs_f64() / floor_time.as_secs_f64());
        }
        pb.inc(1);
    }
    ratios.sort_by(f64::total_cmp);
    let per = |d: Duration, k: u64| d.as_nanos() as f64 / k.max(1) as f64;
    let (publish_ns, floor_ns) = (per(ours, deliveries), per(theirs, deliveries));
    Ok(json!({
        "subscribers": n,
        "events": chunks * FLOOR_SLOTS,
        "clock": "thread CPU time",
        "publish_ns_per_delivery": publish_ns,
        "floor_ns_per_delivery": floor_ns,
        "ratio_floor": publish_ns / floor_ns,
        "ratio_floor_chunks": {
            "median": ratios[ratios.len() / 2],
            "min": ratios[0],
            "max": ratios[ratios.len() - 1],
        },
        "drain_ns_per_frame": per(drain, drained),
    }))
}

fn run_mastodon(w: &Workload, events: usize, pb: &ProgressBar) -> Result<Timing, String> {
    phase(pb, "baseline (a): subscribing", 1);
    let mut router = MastodonRouter::new();
    for s in &w.subs {
        let c = router.connect(Connection {
            account: s.account.clone(),
            languages: s.languages.as_ref().map(|l| l.iter().map(|x| x.to_string()).collect()),
            blocked_accounts: s.blocked.iter().cloned().collect(),
            ..Default::default()
        });
        router.subscribe(c, &s.stream);
    }
    let drain = |router: &mut MastodonRouter, t: &mut Timing| {
        let start = Instant::now();
        t.drained += router.drain();
        t.drain += start.elapsed();
    };
    phase(pb, "baseline (a): publishing", events);
    let mut t = Timing::default();
    let mut pacer = Pacer::default();
    for i in 0..events {
        if t.publish > BASELINE_BUDGET && t.events >= DRAIN_EVERY {
            break;
        }
        let ev = &w.events[i % w.events.len()];
        let start = Instant::now();
        let delivered = router.publish(ev).map_err(|e| e.to_string())?;
        let took = start.elapsed();
        t.publish += took;
        t.latencies_ns.push(took.as_nanos() as u64);
        t.deliveries += delivered;
        t.events += 1;
        if pacer.due(delivered) {
            drain(&mut router, &mut t);
        }
        pb.inc(1);
    }
    drain(&mut router, &mut t);
    Ok(t)
}

fn run_redis(server: &RedisServer, w: &Workload, n: usize, pb: &ProgressBar) -> Result<Value, String> {
    let subscribers = n.min(REDIS_MAX_SUBSCRIBERS);
    let events = (REDIS_DELIVERIES / subscribers).clamp(5, 500);
    phase(pb, "baseline (b): redis", 1);
    let run = redis_fanout(server, subscribers, events, &w.public_event).map_err(|e| format!("redis: {e}"))?;
    Ok(json!({
        "subscribers": run.subscribers,
        "events": run.events,
        "deliveries": run.deliveries,
        "seconds": run.elapsed.as_secs_f64(),
        "deliveries_per_sec": run.deliveries as f64 / run.elapsed.as_secs_f64(),
        "ns_per_delivery": run.elapsed.as_nanos() as f64 / run.deliveries as f64,
    }))
}

/// Event extraction on the corpus statuses against simd-json's tape build of
/// the same bytes, alternating (issue 13: ≥ 1 GB/s and ≥ 1.5× the tape).
fn run_extraction() -> Value {
    let inputs: Vec<&[u8]> = STATUSES.iter().map(|s| s.as_bytes()).collect();
    let run = evroute::baseline::extraction_vs_tape(&inputs, 200, 10);
    json!({
        "bytes": run.bytes,
        "extract_gb_per_s": run.extract_gb_per_s(),
        "tape_gb_per_s": run.tape_gb_per_s(),
        "ratio_tape": run.ratio(),
        "ratio_scan_tape": run.scan_ratio(),
        "ratio_bare_tape": run.bare_ratio(),
    })
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({ "cpu": cpu, "cores": cores, "evroute": evroute::VERSION })
}

fn bench(opts: &Options) -> Result<(), String> {
    if opts.one_stream_only {
        return bench_only(
            opts,
            "one_stream",
            |n, pb| run_one_stream(&workload(n, DRAIN_EVERY).public_event, n, pb),
            one_stream_line,
        );
    }
    if opts.keyword_only {
        return bench_only(opts, "keyword_filters", crate::bench_filters::run, keyword_line);
    }
    let redis = if opts.redis {
        match RedisServer::start() {
            Ok(Some(s)) => Some(s),
            Ok(None) => {
                eprintln!("redis-server not found: baseline (b) skipped (apt-get install redis-server)");
                None
            }
            Err(e) => {
                eprintln!("redis-server failed to start ({e}): baseline (b) skipped");
                None
            }
        }
    } else {
        None
    };
    let mut rows = Vec::new();
    for &n in &opts.scales {
        let pb = bar(opts, format!("{n}"));
        phase(&pb, "building workload", 1);
        let w = workload(n, opts.events);
        let ours = run_evroute(&w, opts.events, &pb)?;
        let one_stream = run_one_stream(&w.public_event, n, &pb)?;
        let filters = crate::bench_filters::run(n, &pb)?;
        let theirs = run_mastodon(&w, opts.events, &pb)?;
        let redis_row = match &redis {
            Some(server) => Some(run_redis(server, &w, n, &pb)?),
            None => None,
        };
        phase(&pb, "RSS probe (child process)", 1);
        let rss = measure_rss_per_subscriber(n);
        pb.finish_and_clear();
        let (ours, theirs) = (ours.to_json(), theirs.to_json());
        let ratio = |a: &Value, b: &Value, k: &str| a[k].as_f64().unwrap_or(0.0) / b[k].as_f64().unwrap_or(f64::NAN);
        rows.push(json!({
            "subscribers": n,
            "evroute": ours,
            "mastodon": theirs,
            "redis": redis_row,
            "rss_bytes_per_subscriber": rss,
            "one_stream": one_stream,
            "keyword_filters": filters,
            "ratio_mastodon": ratio(&ours, &theirs, "deliveries_per_sec"),
            "ratio_mastodon_e2e": ratio(&ours, &theirs, "e2e_deliveries_per_sec"),
            "ratio_redis": redis_row.as_ref().map(|r| ratio(&ours, r, "deliveries_per_sec")),
        }));
    }
    let extraction = run_extraction();
    let pb = bar(opts, "all".into());
    let churn = crate::bench_churn::churn(&workload(10, 0).public_event, &pb)?;
    phase(&pb, "idle memory probe (child process)", 1);
    let idle = crate::bench_churn::measure_idle(IDLE_SUBSCRIBERS);
    pb.finish_and_clear();
    let report = json!({
        "machine": machine(),
        "extraction": extraction,
        "churn": churn,
        "idle_subscribers": IDLE_SUBSCRIBERS,
        "idle_bytes_per_subscriber": idle,
        "drain_every": DRAIN_EVERY,
        "drain_deliveries": DRAIN_DELIVERIES,
        "scales": rows,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("serializable"));
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Runs one measurement alone at every scale.
fn bench_only(
    opts: &Options,
    name: &str,
    run: impl Fn(usize, &ProgressBar) -> Result<Value, String>,
    line: impl Fn(&Value) -> String,
) -> Result<(), String> {
    let mut rows = Vec::new();
    for &n in &opts.scales {
        let pb = bar(opts, format!("{n}"));
        rows.push(run(n, &pb)?);
        pb.finish_and_clear();
    }
    if opts.json {
        let report = json!({ "machine": machine(), name: rows });
        println!("{}", serde_json::to_string_pretty(&report).expect("serializable"));
    } else {
        for row in &rows {
            println!("{:>9} {}", row["subscribers"], line(row));
        }
    }
    Ok(())
}

/// The keyword-filter result in one line of text.
fn keyword_line(kf: &Value) -> String {
    let f = |k: &str| kf[k].as_f64().unwrap_or(f64::NAN);
    format!(
        "keyword filters (10% of subscribers, {} distinct lists, {} match): publish {:.0} us vs {:.0} us plain, ratio {:.2} (chunks: median {:.2}, {:.2}-{:.2}); evaluation {:.1} us/event (median block {:.1}), text {:.1} us/event",
        kf["distinct_lists"],
        kf["matching_lists"],
        f("filtered_us_per_publish"),
        f("plain_us_per_publish"),
        f("ratio"),
        kf["ratio_chunks"]["median"].as_f64().unwrap_or(f64::NAN),
        kf["ratio_chunks"]["min"].as_f64().unwrap_or(f64::NAN),
        kf["ratio_chunks"]["max"].as_f64().unwrap_or(f64::NAN),
        f("evaluate_us_per_event"),
        f("evaluate_us_median_block"),
        f("text_us_per_event"),
    )
}

/// The one-stream result in one line of text.
fn one_stream_line(one: &Value) -> String {
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let chunks = &one["ratio_floor_chunks"];
    format!(
        "one stream: publish {:.1} ns/delivery, floor {:.1} ns/delivery, publish/floor {:.2} (chunks: median {:.2}, {:.2}-{:.2}), drain {:.1} ns/frame ({})",
        f(one, "publish_ns_per_delivery"),
        f(one, "floor_ns_per_delivery"),
        f(one, "ratio_floor"),
        f(chunks, "median"),
        f(chunks, "min"),
        f(chunks, "max"),
        f(one, "drain_ns_per_frame"),
        one["clock"].as_str().unwrap_or("?"),
    )
}

fn print_table(report: &Value) {
    let m = &report["machine"];
    let peak = report["peak_rss_bytes"].as_u64().map_or("?".into(), |b| format!("{:.0} MB", b as f64 / 1e6));
    println!(
        "evroute {} on {} ({} cores)",
        m["evroute"].as_str().unwrap_or(""),
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"]
    );
    println!(
        "publish timed alone; queues drained every {DRAIN_EVERY} events or {DRAIN_DELIVERIES} deliveries outside the timer (e2e adds the drain); peak RSS {peak}"
    );
    let x = &report["extraction"];
    println!(
        "extraction (corpus statuses, thread CPU): {:.3} GB/s, simd-json tape build {:.3} GB/s, extraction / tape {:.2}x (the scan alone {:.2}x; against the tape build without the engine's extra UTF-8 check {:.2}x)\n",
        x["extract_gb_per_s"].as_f64().unwrap_or(f64::NAN),
        x["tape_gb_per_s"].as_f64().unwrap_or(f64::NAN),
        x["ratio_tape"].as_f64().unwrap_or(f64::NAN),
        x["ratio_scan_tape"].as_f64().unwrap_or(f64::NAN),
        x["ratio_bare_tape"].as_f64().unwrap_or(f64::NAN),
    );
    println!(
        "{:>9} {:<13} {:>9} {:>12} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "subs",
        "router",
        "events/s",
        "deliveries/s",
        "ns/deliv",
        "drain ns",
        "p50 us",
        "p99 us",
        "RSS/sub B",
        "x(a)",
        "x(b)"
    );
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    for row in report["scales"].as_array().into_iter().flatten() {
        let n = row["subscribers"].as_u64().unwrap_or(0);
        let rss = row["rss_bytes_per_subscriber"].as_f64().map_or("-".into(), |b| format!("{b:.0}"));
        let ratio_b = row["ratio_redis"].as_f64().map_or("-".into(), |r| format!("{r:.1}"));
        for (name, key) in [("evroute", "evroute"), ("(a) mastodon", "mastodon")] {
            let t = &row[key];
            let ours = key == "evroute";
            println!(
                "{:>9} {:<13} {:>9.0} {:>12.3e} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>9} {:>8} {:>8}",
                n,
                name,
                f(t, "events_per_sec"),
                f(t, "deliveries_per_sec"),
                f(t, "ns_per_delivery"),
                f(t, "drain_ns_per_frame"),
                f(t, "p50_publish_us"),
                f(t, "p99_publish_us"),
                if ours { rss.clone() } else { "-".into() },
                if ours { format!("{:.1}", f(row, "ratio_mastodon")) } else { "1.0".into() },
                if ours { ratio_b.clone() } else { "-".into() },
            );
        }
        if let Some(r) = row["redis"].as_object() {
            println!(
                "{:>9} {:<13} {:>9} {:>12.3e} {:>8.1} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8}",
                n,
                format!("(b) redis@{}", r["subscribers"]),
                "-",
                r["deliveries_per_sec"].as_f64().unwrap_or(f64::NAN),
                r["ns_per_delivery"].as_f64().unwrap_or(f64::NAN),
                "-",
                "-",
                "-",
                "-",
                "-",
                "1.0"
            );
        }
        println!("{:>9} e2e (publish+drain) deliveries/s ratio vs (a): {:.1}x", "", f(row, "ratio_mastodon_e2e"));
        println!("{:>9} {}", "", one_stream_line(&row["one_stream"]));
        println!("{:>9} {}", "", keyword_line(&row["keyword_filters"]));
    }
    let churn = &report["churn"];
    let pair = |v: &Value| format!("{:.2}-{:.2}", v[0].as_f64().unwrap_or(f64::NAN), v[1].as_f64().unwrap_or(f64::NAN));
    println!(
        "\nchurn: publish to {} public subscribers while {:.0} sub/unsub per second run on the same list keeps {:.0}% of quiet throughput (thread CPU, median of {} rounds, range {}; wall {:.0}%, range {}); quiet {:.0} us/publish",
        churn["subscribers"],
        churn["achieved_ops_per_sec"].as_f64().unwrap_or(f64::NAN),
        100.0 * churn["ratio_cpu_median"].as_f64().unwrap_or(f64::NAN),
        churn["rounds"],
        pair(&churn["ratio_cpu_min_max"]),
        100.0 * churn["ratio_wall_median"].as_f64().unwrap_or(f64::NAN),
        pair(&churn["ratio_wall_min_max"]),
        churn["quiet_us_per_publish_cpu"].as_f64().unwrap_or(f64::NAN),
    );
    println!(
        "idle memory: {} B per idle subscriber with one subscription ({} subscribers, half public, half on 100k hashtags)",
        report["idle_bytes_per_subscriber"].as_f64().map_or("?".into(), |b| format!("{b:.0}")),
        report["idle_subscribers"],
    );
}
