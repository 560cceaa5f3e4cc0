//! Stress and soak tests, sized for CI (a few seconds each in release).
//! `tests/threads.rs` covers publishers + churn + drain with large queues;
//! this file adds filter updates mid-stream, the disconnect policy under
//! load, tiny queues under each overflow policy (drops counted exactly),
//! and memory staying bounded over a long loop.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use evroute::{
    Engine, EngineConfig, EngineStats, Next, Overflow, PublishStats, QueueStats, Subscriber, SubscriberOptions,
};

/// Tests here measure RSS and saturate the CPU: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A public, local status by account 9 carrying `seq` = "publisher:index".
fn status(t: usize, i: u64, lang: &str) -> String {
    format!(
        r#"{{"id":"{t}-{i}","visibility":"public","language":"{lang}","account":{{"id":"9","acct":"nine"}},"reblog":null,"in_reply_to_account_id":null,"media_attachments":[],"mentions":[{{"id":"5"}}],"tags":[{{"name":"Rust"}}],"seq":"{t}:{i}"}}"#
    )
}

fn seq(payload: &str) -> (usize, u64) {
    let at = payload.find("\"seq\":\"").expect("seq in payload") + 7;
    let (t, rest) = payload[at..].split_once(':').unwrap();
    (t.parse().unwrap(), rest[..rest.find('"').unwrap()].parse().unwrap())
}

fn add(total: &mut QueueStats, q: QueueStats) {
    total.matched += q.matched;
    total.delivered += q.delivered;
    total.dropped += q.dropped;
}

fn assert_conserved(q: &QueueStats, what: &str) {
    assert_eq!(q.matched, q.read + q.depth + q.dropped, "{what}: {q:?}");
    assert!(q.delivered <= q.matched, "{what}: {q:?}");
}

/// Closes a subscriber (so no later publish counts against it), then
/// returns its final counters.
fn retire(sub: Subscriber) -> QueueStats {
    sub.close();
    let q = sub.stats();
    assert_conserved(&q, "retired");
    q
}

const PUBLISHERS: usize = 3;
const RUN_FOR: Duration = Duration::from_millis(1500);
const MAX_EVENTS: u64 = 40_000;

/// 8 threads on one engine: 3 publishers (content and channel mode), a
/// churner (subscribe/unsubscribe), a filter updater, a disconnect-policy
/// prober and 2 drainers. Stable subscribers (large queues) lose and
/// duplicate nothing and see each publisher's order; every counter adds up.
#[test]
fn eight_threads_mixing_every_operation_lose_nothing() {
    let _serial = serial();
    let engine = Engine::new(EngineConfig { queue_capacity: 1 << 20, ..EngineConfig::default() });
    // Stable subscribers: each receives every event exactly once.
    let plain = engine.subscriber_from_json(br#"{"account":"1"}"#).unwrap();
    plain.subscribe(br#"{"stream":"public"}"#).unwrap();
    // Its filters are replaced all the time, always with ones that let the
    // events through (language "en" or "de", author 9 never blocked).
    let refiltered = engine.subscriber_from_json(br#"{"languages":["en","de"]}"#).unwrap();
    refiltered.subscribe(br#"{"stream":"hashtag","tag":"rust"}"#).unwrap();
    // Its filters toggle between letting everything through and blocking the
    // author: it gets a subsequence, in order.
    let toggled = engine.subscriber_from_json(b"{}").unwrap();
    toggled.subscribe(br#"{"stream":"public:local"}"#).unwrap();
    let stable = Arc::new([plain, refiltered, toggled]);

    let done = Arc::new(AtomicBool::new(false));
    let retired = Arc::new(Mutex::new(QueueStats::default()));
    let deadline = Instant::now() + RUN_FOR;

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|t| {
            let engine = engine.clone();
            thread::spawn(move || {
                let mut total = PublishStats::default();
                let mut i = 0;
                while i < MAX_EVENTS && Instant::now() < deadline {
                    let lang = if i % 2 == 0 { "en" } else { "de" };
                    let stats = if i % 3 == 2 {
                        let msg = format!(r#"{{"event":"update","payload":{}}}"#, status(t, i, lang));
                        // Channel mode: the hashtag channel only.
                        engine.publish_channel(b"timeline:hashtag:rust", msg.as_bytes())
                    } else {
                        engine.publish(format!(r#"{{"event":"update","payload":{}}}"#, status(t, i, lang)).as_bytes())
                    };
                    total += stats.unwrap();
                    i += 1;
                }
                (i, total)
            })
        })
        .collect();

    let churner = {
        let (engine, done, retired) = (engine.clone(), Arc::clone(&done), Arc::clone(&retired));
        thread::spawn(move || {
            let streams = [r#"{"stream":"public"}"#, r#"{"stream":"hashtag","tag":"RUST"}"#, r#"{"stream":"user"}"#];
            let mut rounds = 0u64;
            while !done.load(Ordering::Relaxed) {
                rounds += 1;
                let sub = engine.subscriber_from_json(br#"{"account":"1","queue_capacity":64}"#).unwrap();
                for s in &streams {
                    sub.subscribe(s.as_bytes()).unwrap();
                }
                while let Next::Frame(_) = sub.next(Duration::from_micros(100)) {}
                assert!(sub.unsubscribe(streams[(rounds % 3) as usize].as_bytes()).unwrap());
                let _ = sub.next(Duration::ZERO);
                let q = retire(sub);
                add(&mut retired.lock().unwrap(), q);
            }
            rounds
        })
    };

    let updater = {
        let (stable, done) = (Arc::clone(&stable), Arc::clone(&done));
        thread::spawn(move || {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let allow = if n.is_multiple_of(2) {
                    r#"{"languages":["de","en"],"blocked_accounts":["4"]}"#
                } else {
                    r#"{"languages":["en","de"],"muted_accounts":[7],"blocked_domains":["example.org"]}"#
                };
                stable[1].update(allow.as_bytes()).unwrap();
                let toggle = if n.is_multiple_of(2) { r#"{"blocked_accounts":["9"]}"# } else { "{}" };
                stable[2].update(toggle.as_bytes()).unwrap();
                thread::sleep(Duration::from_micros(200));
            }
            n
        })
    };

    let prober = {
        let (engine, done, retired) = (engine.clone(), Arc::clone(&done), Arc::clone(&retired));
        thread::spawn(move || {
            let mut disconnects = 0u64;
            while !done.load(Ordering::Relaxed) {
                let sub = engine.subscriber(SubscriberOptions {
                    queue_capacity: Some(4),
                    overflow: Some(Overflow::Disconnect),
                    ..SubscriberOptions::default()
                });
                sub.subscribe(br#"{"stream":"public"}"#).unwrap();
                // Never read: the fifth frame closes it.
                let wait_until = Instant::now() + Duration::from_secs(2);
                while sub.closed().is_none() && Instant::now() < wait_until && !done.load(Ordering::Relaxed) {
                    thread::yield_now();
                }
                if let Some(reason) = sub.closed() {
                    disconnects += 1;
                    assert_eq!(reason, "slow consumer");
                    assert!(matches!(sub.next(Duration::ZERO), Next::Closed("slow consumer")));
                    assert!(sub.subscribe(br#"{"stream":"public"}"#).is_err(), "a closed subscriber subscribed");
                    // The four queued frames and the one that overflowed.
                    let q = sub.stats();
                    assert_eq!((q.matched, q.delivered, q.dropped, q.read, q.depth), (5, 4, 5, 0, 0));
                    // The publish that closed it takes it out of the index when its walk ends.
                    let leave_by = Instant::now() + Duration::from_secs(5);
                    while !sub.streams().is_empty() && Instant::now() < leave_by {
                        thread::yield_now();
                    }
                    assert!(sub.streams().is_empty(), "a slow consumer stays in the index");
                }
                let q = retire(sub);
                add(&mut retired.lock().unwrap(), q);
            }
            disconnects
        })
    };

    // Drainers: one takes the plain subscriber, the other the filtered two.
    type Received = Vec<(usize, u64)>;
    let drain = |subs: Vec<usize>| {
        let (stable, done) = (Arc::clone(&stable), Arc::clone(&done));
        thread::spawn(move || {
            let mut got: Vec<Received> = vec![Vec::new(); subs.len()];
            loop {
                let finished = done.load(Ordering::Acquire);
                let mut any = false;
                for (k, &s) in subs.iter().enumerate() {
                    while let Next::Frame(f) = stable[s].next(Duration::from_micros(50)) {
                        got[k].push(seq(f.payload().unwrap()));
                        any = true;
                    }
                }
                // After the publishers are done, one last empty pass ends it.
                if finished && !any {
                    return got;
                }
            }
        })
    };
    let drain_plain = drain(vec![0]);
    let drain_filtered = drain(vec![1, 2]);

    let mut published = [0u64; PUBLISHERS];
    let mut publish_totals = PublishStats::default();
    for (t, p) in publishers.into_iter().enumerate() {
        let (n, total) = p.join().unwrap();
        published[t] = n;
        publish_totals += total;
    }
    done.store(true, Ordering::Release);
    let rounds = churner.join().unwrap();
    let updates = updater.join().unwrap();
    let disconnects = prober.join().unwrap();
    let got_plain = drain_plain.join().unwrap().remove(0);
    let mut got_filtered = drain_filtered.join().unwrap();
    let got_toggled = got_filtered.pop().unwrap();
    let got_refiltered = got_filtered.pop().unwrap();
    assert!(rounds > 0 && updates > 0, "churner {rounds}, updater {updates}");
    assert!(disconnects > 0, "no subscriber was disconnected as a slow consumer");

    let content_mode = |i: u64| i % 3 != 2;
    let expect = |filter: &dyn Fn(u64) -> bool| -> Received {
        (0..PUBLISHERS).flat_map(|t| (0..published[t]).filter(|&i| filter(i)).map(move |i| (t, i))).collect()
    };
    let sorted = |v: &Received| {
        let mut v = v.clone();
        v.sort_unstable();
        v
    };
    assert_eq!(sorted(&got_plain), expect(&content_mode), "public: lost or duplicated frames");
    assert_eq!(sorted(&got_refiltered), expect(&|_| true), "hashtag with refreshed filters: lost or duplicated");
    let toggled_all = expect(&content_mode);
    let toggled = sorted(&got_toggled);
    assert!(toggled.windows(2).all(|w| w[0] < w[1]), "public:local: duplicated frames");
    assert!(toggled.iter().all(|x| toggled_all.binary_search(x).is_ok()), "public:local: unexpected frames");
    for (name, got) in [("public", &got_plain), ("hashtag", &got_refiltered), ("public:local", &got_toggled)] {
        let mut last: BTreeMap<usize, u64> = BTreeMap::new();
        for &(t, i) in got {
            let prev = last.insert(t, i);
            assert!(prev.is_none_or(|p| p < i), "{name}: publisher {t} out of order: {prev:?} then {i}");
        }
    }

    // Counters add up: the engine's totals are the subscribers' sums, and
    // equal what the publishes reported plus what close() discarded.
    let mut total = *retired.lock().unwrap();
    let reads = [got_plain.len(), got_refiltered.len(), got_toggled.len()];
    for (sub, read) in stable.iter().zip(reads) {
        let q = sub.stats();
        assert_conserved(&q, "stable");
        assert_eq!((q.read, q.depth, q.dropped), (read as u64, 0, 0), "{q:?}");
        add(&mut total, q);
    }
    let e = engine.stats();
    assert_eq!(e.published, published.iter().sum::<u64>());
    assert_eq!((e.matched, e.delivered), (publish_totals.matched, publish_totals.delivered), "{e:?}");
    assert_eq!((e.matched, e.delivered, e.dropped), (total.matched, total.delivered, total.dropped), "{e:?}");
    assert!(e.dropped >= publish_totals.dropped, "{e:?}");
    assert_eq!(e.subscriptions, 3, "only the stable subscriptions remain: {e:?}");
}

/// One subscriber with a queue of 3, read slowly by one thread while
/// another publishes. Returns the frames read, the summed publish stats and
/// the subscriber's counters.
fn tiny_queue_run(overflow: Overflow, events: u64) -> (Vec<u64>, PublishStats, QueueStats, EngineStats) {
    let engine = Engine::default();
    let sub = Arc::new(engine.subscriber(SubscriberOptions {
        queue_capacity: Some(3),
        overflow: Some(overflow),
        ..SubscriberOptions::default()
    }));
    sub.subscribe(br#"{"stream":"public"}"#).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (sub, done) = (Arc::clone(&sub), Arc::clone(&done));
        thread::spawn(move || {
            let mut read = Vec::new();
            let mut n = 0u32;
            loop {
                let finished = done.load(Ordering::Acquire);
                match sub.next(Duration::ZERO) {
                    Next::Frame(f) => read.push(seq(f.payload().unwrap()).1),
                    Next::Closed(_) => return read,
                    Next::Empty | Next::Timeout if finished => return read,
                    Next::Empty | Next::Timeout => {}
                }
                n += 1;
                // Slower than the publisher, so the queue overflows.
                if n.is_multiple_of(4) {
                    thread::sleep(Duration::from_micros(100));
                }
            }
        })
    };
    let mut totals = PublishStats::default();
    for i in 0..events {
        let stats = engine.publish(format!(r#"{{"event":"update","payload":{}}}"#, status(0, i, "en")).as_bytes());
        totals += stats.unwrap();
    }
    done.store(true, Ordering::Release);
    let read = reader.join().unwrap();
    // Taken while the subscriber is alive: dropping it would also close it.
    (read, totals, sub.stats(), engine.stats())
}

#[test]
fn tiny_queues_count_drops_exactly_under_each_overflow_policy() {
    let _serial = serial();
    const EVENTS: u64 = 20_000;

    let (read, totals, q, e) = tiny_queue_run(Overflow::DropOldest, EVENTS);
    assert_eq!((q.matched, q.delivered), (EVENTS, EVENTS), "{q:?}");
    assert_eq!(q.read, read.len() as u64);
    assert_eq!(q.depth, 0, "the reader drained the queue");
    assert_eq!(q.dropped, EVENTS - q.read, "every frame not read was evicted and counted: {q:?}");
    assert!(q.dropped > 0, "the queue never overflowed: {q:?}");
    assert_eq!((totals.matched, totals.delivered, totals.dropped), (q.matched, q.delivered, q.dropped));
    assert_eq!(e.dropped, q.dropped);
    assert!(read.windows(2).all(|w| w[0] < w[1]), "drop_oldest: out of order");
    // Evicting the oldest keeps the newest: the last event is always read.
    assert_eq!(read.last(), Some(&(EVENTS - 1)));

    let (read, totals, q, e) = tiny_queue_run(Overflow::DropNewest, EVENTS);
    assert_eq!(q.matched, EVENTS, "{q:?}");
    assert_eq!((q.read, q.depth), (read.len() as u64, 0));
    assert_eq!(q.delivered, q.read, "refused frames are not delivered: {q:?}");
    assert_eq!(q.dropped, EVENTS - q.read, "{q:?}");
    assert!(q.dropped > 0, "the queue never overflowed: {q:?}");
    assert_eq!((totals.matched, totals.delivered, totals.dropped), (q.matched, q.delivered, q.dropped));
    assert_eq!(e.dropped, q.dropped);
    assert!(read.windows(2).all(|w| w[0] < w[1]), "drop_newest: out of order");
    // Refusing the newest keeps the oldest: the first event is always read.
    assert_eq!(read.first(), Some(&0));

    let (read, totals, q, e) = tiny_queue_run(Overflow::Disconnect, EVENTS);
    assert_conserved(&q, "disconnect");
    assert_eq!(q.depth, 0);
    assert_eq!(q.read, read.len() as u64);
    assert!(q.matched < EVENTS, "the slow consumer was never disconnected: {q:?}");
    // Disconnecting discards the 3 queued frames plus the one that overflowed.
    assert_eq!(q.dropped, 4, "{q:?}");
    assert_eq!(q.matched, q.read + 4);
    assert_eq!(read, (0..q.read).collect::<Vec<_>>(), "frames before the disconnect arrive in order");
    assert_eq!((totals.matched, totals.dropped), (q.matched, q.dropped));
    assert_eq!((e.dropped, e.subscriptions, e.published), (4, 0, EVENTS), "{e:?}");
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

/// Publishes into never-read tiny queues under each policy while
/// subscribers with ever-new hashtags come and go. After a warm-up, RSS
/// must not keep growing with the number of events.
#[test]
fn memory_stays_bounded_over_a_long_loop() {
    let _serial = serial();
    let engine = Engine::new(EngineConfig { delete_memory: 1024, ..EngineConfig::default() });
    let subs: Vec<Subscriber> = [Overflow::DropOldest, Overflow::DropNewest, Overflow::DropOldest]
        .into_iter()
        .map(|overflow| {
            let sub = engine.subscriber(SubscriberOptions {
                queue_capacity: Some(4),
                overflow: Some(overflow),
                ..SubscriberOptions::default()
            });
            sub.subscribe(br#"{"stream":"public"}"#).unwrap();
            sub.subscribe(br#"{"stream":"hashtag","tag":"rust"}"#).unwrap();
            sub
        })
        .collect();
    let dropped = AtomicU64::new(0);
    let round = |from: u64, to: u64| {
        for i in from..to {
            let ev = format!(r#"{{"event":"update","payload":{}}}"#, status(0, i, "en"));
            dropped.fetch_add(engine.publish(ev.as_bytes()).unwrap().dropped, Ordering::Relaxed);
            if i % 50 == 0 {
                // A short-lived subscriber with a never-seen tag and a disconnect policy.
                let tmp = engine.subscriber(SubscriberOptions {
                    queue_capacity: Some(1),
                    overflow: Some(Overflow::Disconnect),
                    ..SubscriberOptions::default()
                });
                tmp.subscribe(format!(r#"{{"stream":"hashtag","tag":"t{i}"}}"#).as_bytes()).unwrap();
                tmp.subscribe(br#"{"stream":"public"}"#).unwrap();
            }
        }
    };
    round(0, 20_000);
    let before = rss_bytes();
    round(20_000, 220_000);
    let after = rss_bytes();
    let growth = after.saturating_sub(before);
    assert!(growth < 16 << 20, "RSS grew by {} KiB over 200k events ({before} -> {after})", growth >> 10);
    let e = engine.stats();
    assert_eq!(e.subscribers, 3);
    assert_eq!(e.subscriptions, 6, "temporary subscriptions stay in the index: {e:?}");
    let mut total = QueueStats::default();
    for s in &subs {
        let q = s.stats();
        assert_conserved(&q, "long loop");
        assert_eq!(q.depth, 4, "{q:?}");
        add(&mut total, q);
    }
    // Temporary subscribers never held frames: every drop is a full queue's.
    assert_eq!((total.dropped, e.dropped), (dropped.load(Ordering::Relaxed), total.dropped));
    assert!(total.dropped > 3 * 200_000, "{total:?}");
}
