//! Concurrency: publishers, churning subscribers and drainers at once. With
//! queues large enough that nothing drops, every stable subscriber gets each
//! event exactly once per matching subscription, in each publisher's order,
//! and the engine's counters add up with the subscribers'.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use evroute::{Engine, EngineConfig, Next, Subscriber};

const PUBLISHERS: usize = 4;
const EVENTS: usize = 5000;
const CHURNERS: usize = 2;

fn status(t: usize, i: usize) -> String {
    format!(
        r#"{{"id":"{t}-{i}","visibility":"public","language":"en","account":{{"id":"9","acct":"nine"}},"reblog":null,"in_reply_to_account_id":null,"media_attachments":[],"mentions":[],"tags":[{{"name":"Rust"}}],"seq":"{t}:{i}"}}"#
    )
}

/// Every 4th event goes through channel mode to `timeline:public` only.
fn via_channel(i: usize) -> bool {
    i % 4 == 3
}

fn publish(engine: &Engine, t: usize, i: usize) {
    let stats = if via_channel(i) {
        engine.publish_channel(
            b"timeline:public",
            format!(r#"{{"event":"update","payload":{}}}"#, status(t, i)).as_bytes(),
        )
    } else {
        engine.publish(format!(r#"{{"event":"update","payload":{},"recipients":["1"]}}"#, status(t, i)).as_bytes())
    };
    let stats = stats.unwrap();
    assert_eq!(stats.dropped, 0);
}

/// (publisher, sequence number) from a frame's payload.
fn seq(payload: &str) -> (usize, usize) {
    let at = payload.find("\"seq\":\"").expect("seq in payload") + 7;
    let rest = &payload[at..];
    let (t, rest) = rest.split_once(':').unwrap();
    let i = &rest[..rest.find('"').unwrap()];
    (t.parse().unwrap(), i.parse().unwrap())
}

struct Stable {
    name: &'static str,
    account: Option<&'static str>,
    subscriptions: &'static [&'static str],
    /// Frames expected for event `i` of any publisher.
    frames_for: fn(usize) -> usize,
}

const STABLE: &[Stable] = &[
    Stable {
        name: "user 1",
        account: Some("1"),
        subscriptions: &[r#"{"stream":"user"}"#],
        frames_for: |i| usize::from(!via_channel(i)),
    },
    Stable { name: "public", account: None, subscriptions: &[r#"{"stream":"public"}"#], frames_for: |_| 1 },
    Stable {
        name: "hashtag + public:local",
        account: None,
        subscriptions: &[r#"{"stream":"hashtag","tag":"rust"}"#, r#"{"stream":"public:local"}"#],
        frames_for: |i| if via_channel(i) { 0 } else { 2 },
    },
];

fn drain_until(sub: &Subscriber, want: usize, deadline: Instant) -> Vec<(String, usize, usize)> {
    let mut got = Vec::with_capacity(want);
    while got.len() < want && Instant::now() < deadline {
        match sub.next(Duration::from_millis(50)) {
            Next::Frame(f) => {
                let (t, i) = seq(f.payload().unwrap());
                got.push((f.stream().to_string(), t, i));
            }
            Next::Timeout | Next::Empty => {}
            Next::Closed(why) => panic!("stable subscriber closed: {why}"),
        }
    }
    got
}

#[test]
fn concurrent_publish_subscribe_and_drain_lose_nothing() {
    let engine = Engine::new(EngineConfig { queue_capacity: 1 << 16, ..EngineConfig::default() });
    let stable: Vec<Arc<Subscriber>> = STABLE
        .iter()
        .map(|s| {
            let json = match s.account {
                Some(a) => format!(r#"{{"account":"{a}"}}"#),
                None => "{}".to_string(),
            };
            let sub = engine.subscriber_from_json(json.as_bytes()).unwrap();
            for subscription in s.subscriptions {
                assert!(sub.subscribe(subscription.as_bytes()).unwrap());
            }
            Arc::new(sub)
        })
        .collect();

    let done = Arc::new(AtomicBool::new(false));
    let retired: Arc<Mutex<Vec<Subscriber>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(60);

    let drainers: Vec<_> = STABLE
        .iter()
        .zip(&stable)
        .map(|(s, sub)| {
            let sub = Arc::clone(sub);
            let want = PUBLISHERS * (0..EVENTS).map(s.frames_for).sum::<usize>();
            thread::spawn(move || drain_until(&sub, want, deadline))
        })
        .collect();

    let churners: Vec<_> = (0..CHURNERS)
        .map(|c| {
            let engine = engine.clone();
            let done = Arc::clone(&done);
            let retired = Arc::clone(&retired);
            thread::spawn(move || {
                let streams = [
                    r#"{"stream":"public"}"#,
                    r#"{"stream":"user"}"#,
                    r#"{"stream":"hashtag","tag":"RUST"}"#,
                    r#"{"stream":"public:local","only_media":false}"#,
                    r#"{"stream":"user:notification"}"#,
                ];
                let mut round = 0usize;
                while !done.load(Ordering::Relaxed) {
                    round += 1;
                    let sub =
                        engine.subscriber_from_json(format!(r#"{{"account":"{}"}}"#, round % 3).as_bytes()).unwrap();
                    for k in 0..=(round % streams.len()) {
                        sub.subscribe(streams[(k + c) % streams.len()].as_bytes()).unwrap();
                    }
                    let _ = sub.next(Duration::from_micros(200));
                    if round.is_multiple_of(2) {
                        sub.unsubscribe(streams[c % streams.len()].as_bytes()).unwrap();
                    }
                    while let Next::Frame(_) = sub.next(Duration::ZERO) {}
                    sub.close();
                    retired.lock().unwrap().push(sub);
                }
                round
            })
        })
        .collect();

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|t| {
            let engine = engine.clone();
            thread::spawn(move || {
                for i in 0..EVENTS {
                    publish(&engine, t, i);
                }
            })
        })
        .collect();

    for p in publishers {
        p.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let rounds: usize = churners.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(rounds > 0, "churners never ran");

    for ((s, sub), drainer) in STABLE.iter().zip(&stable).zip(drainers) {
        let got = drainer.join().unwrap();
        let want = PUBLISHERS * (0..EVENTS).map(s.frames_for).sum::<usize>();
        assert_eq!(got.len(), want, "{}: frames received", s.name);
        let unique: BTreeSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "{}: duplicated frames", s.name);
        for (stream, t, i) in &got {
            assert!((s.frames_for)(*i) > 0, "{}: got {stream} {t}:{i}, which it does not listen to", s.name);
        }
        // Per publisher, arrival order is publish order (two frames of one
        // event, on different subscriptions, may come in either order).
        let mut last: BTreeMap<usize, usize> = BTreeMap::new();
        for (_, t, i) in &got {
            let prev = last.insert(*t, *i);
            assert!(prev.is_none_or(|p| p <= *i), "{}: publisher {t} out of order: {prev:?} then {i}", s.name);
        }
        assert!(matches!(sub.next(Duration::ZERO), Next::Empty), "{}: extra frames", s.name);
        let q = sub.stats();
        assert_eq!(
            (q.matched, q.delivered, q.dropped, q.read, q.depth),
            (want as u64, want as u64, 0, want as u64, 0),
            "{}",
            s.name
        );
    }

    let stats = engine.stats();
    assert_eq!(stats.published, (PUBLISHERS * EVENTS) as u64);
    assert_eq!(stats.rejected, 0);
    // Queues are large enough that every match was enqueued.
    assert_eq!(stats.matched, stats.delivered, "{stats:?}");
    let retired = retired.lock().unwrap();
    let (mut matched, mut delivered, mut dropped) = (0, 0, 0);
    for q in stable.iter().map(|s| s.stats()).chain(retired.iter().map(Subscriber::stats)) {
        matched += q.matched;
        delivered += q.delivered;
        dropped += q.dropped;
    }
    // The only drops are frames discarded when retired subscribers closed.
    assert_eq!((matched, delivered, dropped), (stats.matched, stats.delivered, stats.dropped), "{stats:?}");
    // A retired subscriber's frames were each read or discarded by close().
    for q in retired.iter().map(Subscriber::stats) {
        assert_eq!(q.matched, q.delivered, "{q:?}");
        assert_eq!(q.read + q.dropped, q.delivered, "{q:?}");
        assert_eq!(q.depth, 0, "{q:?}");
    }
}

/// Several threads wait in `next` on one subscriber (the header allows it)
/// and a burst of frames arrives at once: each frame wakes a reader, so
/// every frame is taken within a fraction of the readers' long timeout.
fn burst_wakes_every_reader(readers: usize) {
    const ROUNDS: usize = 6;
    const TIMEOUT: Duration = Duration::from_secs(10);
    let engine = Engine::new(EngineConfig::default());
    let sub = Arc::new(engine.subscriber_from_json(b"{}").unwrap());
    sub.subscribe(br#"{"stream":"public"}"#).unwrap();
    for round in 0..ROUNDS {
        let threads: Vec<_> = (0..readers)
            .map(|_| {
                let sub = Arc::clone(&sub);
                thread::spawn(move || match sub.next(TIMEOUT) {
                    Next::Frame(_) => Instant::now(),
                    other => panic!("reader got {other:?} instead of a frame"),
                })
            })
            .collect();
        // Let every reader block in `next` before the burst.
        thread::sleep(Duration::from_millis(100));
        let sent = Instant::now();
        for i in 0..readers {
            engine
                .publish_channel(
                    b"timeline:public",
                    format!(r#"{{"event":"update","payload":{}}}"#, status(round, i)).as_bytes(),
                )
                .unwrap();
        }
        for t in threads {
            let waited = t.join().unwrap().saturating_duration_since(sent);
            assert!(waited < Duration::from_secs(2), "{readers} readers, round {round}: a frame waited {waited:?}");
        }
        assert!(matches!(sub.next(Duration::ZERO), Next::Empty));
    }
}

#[test]
fn two_readers_each_wake_for_a_burst() {
    burst_wakes_every_reader(2);
}

#[test]
fn four_readers_each_wake_for_a_burst() {
    burst_wakes_every_reader(4);
}

/// Status ids of a subscriber's frames, split into updates and deletes.
fn updates_and_deletes(sub: &Subscriber) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut updates, mut deletes) = (BTreeSet::new(), BTreeSet::new());
    loop {
        match sub.next(Duration::ZERO) {
            Next::Frame(f) if f.event() == "delete" => assert!(deletes.insert(f.payload().unwrap().to_string())),
            Next::Frame(f) => {
                let payload = f.payload().unwrap();
                let at = payload.find("\"id\":\"").unwrap() + 6;
                let id = &payload[at..at + payload[at..].find('"').unwrap()];
                assert!(updates.insert(id.to_string()));
            }
            Next::Empty => return (updates, deletes),
            other => panic!("{other:?}"),
        }
    }
}

/// Content-mode deletes while subscriptions keep arriving: a subscription
/// receives a status's delete exactly when it received the status. A long
/// list of listeners makes each update's walk slow, so new subscriptions
/// join while it runs.
#[test]
fn deletes_reach_exactly_the_receivers_of_updates_while_subscribing() {
    const STATUSES: usize = 300;
    const JOINS: usize = 400;
    const LAG: usize = 5;
    let engine =
        Engine::new(EngineConfig { queue_capacity: 1 << 16, delete_memory: 1 << 16, ..EngineConfig::default() });
    let early: Vec<Subscriber> = (0..1000)
        .map(|_| {
            let sub = engine.subscriber_from_json(b"{}").unwrap();
            sub.subscribe(br#"{"stream":"public:local"}"#).unwrap();
            sub
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let joiners: Vec<_> = (0..2)
        .map(|j| {
            let engine = engine.clone();
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let mut subs = Vec::new();
                while !done.load(Ordering::Relaxed) && subs.len() < JOINS {
                    let sub = engine.subscriber_from_json(b"{}").unwrap();
                    let stream: &[u8] =
                        if j == 0 { br#"{"stream":"public:local"}"# } else { br#"{"stream":"hashtag","tag":"rust"}"# };
                    sub.subscribe(stream).unwrap();
                    subs.push(sub);
                    thread::yield_now();
                }
                subs
            })
        })
        .collect();
    let publishers: Vec<_> = (0..2)
        .map(|t| {
            let engine = engine.clone();
            thread::spawn(move || {
                let delete = |i: usize| {
                    engine.publish(format!(r#"{{"event":"delete","payload":"{t}-{i}"}}"#).as_bytes()).unwrap();
                };
                for i in 0..STATUSES {
                    engine.publish(format!(r#"{{"event":"update","payload":{}}}"#, status(t, i)).as_bytes()).unwrap();
                    if i >= LAG {
                        delete(i - LAG);
                    }
                }
                (STATUSES - LAG..STATUSES).for_each(delete);
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let late: Vec<Subscriber> = joiners.into_iter().flat_map(|j| j.join().unwrap()).collect();
    assert!(late.len() > 50, "only {} subscriptions joined during the run", late.len());
    let mut late_receivers = 0;
    for (n, sub) in early.iter().chain(&late).enumerate() {
        let (updates, deletes) = updates_and_deletes(sub);
        let missing: Vec<_> = updates.difference(&deletes).collect();
        let stray: Vec<_> = deletes.difference(&updates).collect();
        assert!(
            missing.is_empty() && stray.is_empty(),
            "subscriber {n}: no delete for {missing:?}, delete without update for {stray:?}"
        );
        late_receivers += usize::from(n >= early.len() && !updates.is_empty());
    }
    for sub in &early {
        assert_eq!(sub.stats().read, 2 * 2 * STATUSES as u64);
    }
    assert!(late_receivers > 0, "no late subscription received an update");
}
