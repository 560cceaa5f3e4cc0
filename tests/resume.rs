//! Event ids, history and resume (SPEC §12).
//!
//! The reference for "what a client would have seen without disconnecting"
//! is a twin subscriber: same options and subscriptions, created at the
//! start, never disconnected, with a queue that never overflows. The live
//! path it uses is checked against the independent reference router in
//! `model.rs`. Which events the history has lost is modelled independently
//! (a list of the last `max_events` seqs per channel).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use evroute::{Engine, ErrorKind, Frame, Next, Subscriber};
use proptest::prelude::*;

/// What a client receives of one frame: its id and the bytes it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Got {
    id: String,
    ws: String,
    sse: String,
}

fn got(frame: &Frame) -> Got {
    Got {
        id: frame.id().expect("history on: every frame has an id").to_string(),
        ws: String::from_utf8(frame.ws().to_vec()).unwrap(),
        sse: String::from_utf8(frame.sse().to_vec()).unwrap(),
    }
}

fn seq_of(id: &str) -> u64 {
    id.rsplit_once(':').unwrap().1.parse().unwrap()
}

fn engine(max_events: usize) -> Engine {
    let config = format!(r#"{{"queue_capacity":1000000,"history":{{"max_events":{max_events},"max_age_s":3600}}}}"#);
    Engine::from_json(config.as_bytes()).unwrap()
}

fn drain(sub: &Subscriber) -> Vec<Got> {
    let mut out = Vec::new();
    while let Next::Frame(f) = sub.next(Duration::ZERO) {
        out.push(got(&f));
    }
    out
}

fn connect(engine: &Engine, options: &str, subscriptions: &[&str]) -> Subscriber {
    let sub = engine.subscriber_from_json(options.as_bytes()).unwrap();
    for s in subscriptions {
        sub.subscribe(s.as_bytes()).unwrap();
    }
    sub
}

fn status(id: u64, language: &str) -> String {
    format!(
        r#"{{"id":"{id}","visibility":"public","language":"{language}","account":{{"id":"9","acct":"nine"}},"mentions":[],"tags":[{{"name":"Rust"}}]}}"#
    )
}

fn update(engine: &Engine, channel: &str, id: u64, language: &str) {
    let message = format!(r#"{{"event":"update","payload":{}}}"#, status(id, language));
    engine.publish_channel(channel.as_bytes(), message.as_bytes()).unwrap();
}

const PUBLIC: &str = r#"{"stream":"public"}"#;

#[test]
fn resume_replays_what_was_missed_then_live_frames() {
    let engine = engine(100);
    let twin = connect(&engine, "{}", &[PUBLIC]);
    let first = connect(&engine, "{}", &[PUBLIC]);
    for i in 0..5 {
        update(&engine, "timeline:public", i, "en");
    }
    let mut seen: Vec<Got> = (0..2).map(|_| drain_one(&first)).collect();
    drop(first);
    update(&engine, "timeline:public", 5, "en");
    let second = connect(&engine, "{}", &[PUBLIC]);
    let resumed = second.resume(&seen[1].id).unwrap();
    assert_eq!((resumed.replayed, resumed.gap), (4, false));
    update(&engine, "timeline:public", 6, "en");
    seen.extend(drain(&second));
    assert_eq!(seen, drain(&twin));
    assert_eq!(seen.len(), 7);
    let s = second.stats();
    assert_eq!((s.matched, s.read, s.depth, s.dropped), (5, 5, 0, 0));
}

fn drain_one(sub: &Subscriber) -> Got {
    match sub.next(Duration::ZERO) {
        Next::Frame(f) => got(&f),
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[test]
fn ids_are_in_the_bytes_only_for_event_ids_subscribers() {
    let plain_engine = Engine::default();
    let engine = engine(10);
    let plain = connect(&plain_engine, "{}", &[PUBLIC]);
    let quiet = connect(&engine, "{}", &[PUBLIC]);
    let ided = connect(&engine, r#"{"event_ids":true}"#, &[PUBLIC]);
    for e in [&plain_engine, &engine] {
        update(e, "timeline:public", 1, "en");
        e.publish_channel(b"timeline:public", br#"{"event":"delete","payload":"1"}"#).unwrap();
    }
    let epoch = engine.epoch().unwrap();
    assert_eq!(epoch.len(), 8);
    for n in 1..=2 {
        let (Next::Frame(p), Next::Frame(q), Next::Frame(i)) =
            (plain.next(Duration::ZERO), quiet.next(Duration::ZERO), ided.next(Duration::ZERO))
        else {
            panic!("three frames expected");
        };
        // Without event_ids the bytes are those of an engine without history.
        assert_eq!((p.sse(), p.ws()), (q.sse(), q.ws()));
        assert_eq!(p.id(), None);
        let id = format!("{epoch}:{n}");
        assert_eq!(q.id(), Some(id.as_str()));
        assert_eq!(i.id(), Some(id.as_str()));
        assert_eq!(i.sse(), [format!("id: {id}\n").as_bytes(), q.sse()].concat());
        let ws = String::from_utf8(q.ws().to_vec()).unwrap();
        assert_eq!(i.ws(), format!("{},\"id\":\"{id}\"}}", &ws[..ws.len() - 1]).as_bytes());
    }
    // Both subscribers share one body: the id variant adds only its own bytes.
    assert!(Engine::default().epoch().is_none());
}

#[test]
fn replay_goes_through_viewer_and_event_filters() {
    let engine = engine(100);
    let options = r#"{"languages":["en"],"event_ids":true}"#;
    let subs: &[&str] = &[PUBLIC, r#"{"stream":"hashtag","tag":"rust","events":["delete"]}"#];
    let twin = connect(&engine, options, subs);
    let start = format!("{}:0", engine.epoch().unwrap());
    for i in 0..6 {
        let channel = if i % 2 == 0 { "timeline:public" } else { "timeline:hashtag:rust" };
        update(&engine, channel, i, if i % 3 == 0 { "de" } else { "en" });
        let delete = format!(r#"{{"event":"delete","payload":"{i}"}}"#);
        engine.publish_channel(channel.as_bytes(), delete.as_bytes()).unwrap();
    }
    let sub = connect(&engine, options, subs);
    assert!(!sub.resume(&start).unwrap().gap);
    let replayed = drain(&sub);
    let expected = drain(&twin);
    assert_eq!(replayed, expected);
    // public: updates 2, 4 (0 is "de") and 3 deletes; hashtag: the 3 deletes only.
    assert_eq!(expected.len(), 2 + 3 + 3);
}

#[test]
fn annotated_frames_carry_ids_and_are_replayed_annotated() {
    let engine = engine(100);
    let dune = r#"{"event_ids":true,"keyword_filters":[{"id":"5","title":"Sci-fi","context":["public"],"expires_at":null,"filter_action":"warn","keywords":[{"keyword":"dune","whole_word":true}]}]}"#;
    let twin = connect(&engine, dune, &[PUBLIC]);
    let start = format!("{}:0", engine.epoch().unwrap());
    for (i, text) in ["Dune again", "nothing"].iter().enumerate() {
        let message = format!(
            r#"{{"event":"update","payload":{{"id":"{i}","visibility":"public","language":"en","content":"<p>{text}</p>","spoiler_text":"","account":{{"id":"9","acct":"nine"}}}}}}"#
        );
        engine.publish_channel(b"timeline:public", message.as_bytes()).unwrap();
    }
    let live = drain(&twin);
    assert_eq!(live.len(), 2);
    for (n, g) in live.iter().enumerate() {
        assert!(g.sse.starts_with(&format!("id: {}\nevent: update\n", g.id)), "{}", g.sse);
        assert!(g.ws.ends_with(&format!(r#","id":"{}"}}"#, g.id)), "{}", g.ws);
        assert!(g.ws.contains(r#"\"filtered\":["#), "annotated: {}", g.ws);
        assert_eq!(g.ws.contains("keyword_matches"), n == 0, "{}", g.ws);
    }
    let sub = connect(&engine, dune, &[PUBLIC]);
    assert!(!sub.resume(&start).unwrap().gap);
    assert_eq!(drain(&sub), live);
}

#[test]
fn an_event_on_several_channels_is_replayed_once_per_subscription() {
    let engine = engine(100);
    let subs: &[&str] = &[PUBLIC, r#"{"stream":"public:local"}"#, r#"{"stream":"hashtag","tag":"Rust"}"#];
    let twin = connect(&engine, "{}", subs);
    let start = format!("{}:0", engine.epoch().unwrap());
    for i in 0..3 {
        let event = format!(r#"{{"event":"update","payload":{}}}"#, status(i, "en"));
        engine.publish(event.as_bytes()).unwrap();
    }
    let sub = connect(&engine, "{}", subs);
    assert!(!sub.resume(&start).unwrap().gap);
    let (mut replayed, mut expected) = (drain(&sub), drain(&twin));
    assert_eq!(replayed.len(), 9);
    // Within one event, live frames come in index order, replayed ones in
    // subscription order.
    replayed.sort_by(|a, b| (seq_of(&a.id), &a.ws).cmp(&(seq_of(&b.id), &b.ws)));
    expected.sort_by(|a, b| (seq_of(&a.id), &a.ws).cmp(&(seq_of(&b.id), &b.ws)));
    assert_eq!(replayed, expected);
}

#[test]
fn frames_queued_between_subscribe_and_resume_are_merged_in_order() {
    let engine = engine(100);
    let twin = connect(&engine, "{}", &[PUBLIC]);
    update(&engine, "timeline:public", 0, "en");
    let last = drain(&twin)[0].id.clone();
    update(&engine, "timeline:public", 1, "en");
    let sub = connect(&engine, "{}", &[PUBLIC]);
    update(&engine, "timeline:public", 2, "en");
    update(&engine, "timeline:public", 3, "en");
    assert_eq!(sub.stats().depth, 2);
    assert!(!sub.resume(&last).unwrap().gap);
    let got = drain(&sub);
    assert_eq!(got, drain(&twin));
    assert_eq!(got.len(), 3);
    let s = sub.stats();
    assert_eq!((s.matched, s.delivered, s.read), (3, 3, 3));
    let e = engine.stats();
    assert_eq!((e.matched, e.delivered), (4 + 3, 4 + 3));
}

#[test]
fn frames_the_client_already_saw_are_not_queued_again() {
    let engine = engine(100);
    let old = connect(&engine, "{}", &[PUBLIC]);
    update(&engine, "timeline:public", 0, "en");
    // The client reconnects while its old connection still delivers.
    let new = connect(&engine, "{}", &[PUBLIC]);
    update(&engine, "timeline:public", 1, "en");
    update(&engine, "timeline:public", 2, "en");
    let seen = drain(&old);
    assert_eq!(seen.len(), 3);
    drop(old);
    assert!(!new.resume(&seen[2].id).unwrap().gap);
    update(&engine, "timeline:public", 3, "en");
    let got = drain(&new);
    assert_eq!(got.len(), 1);
    assert_eq!(seq_of(&got[0].id), seq_of(&seen[2].id) + 1);
    let s = new.stats();
    assert_eq!((s.matched, s.delivered, s.read, s.depth, s.dropped), (1, 1, 1, 0, 0));
}

#[test]
fn gaps_are_reported_and_what_is_retained_is_delivered() {
    let engine = engine(3);
    let twin = connect(&engine, "{}", &[PUBLIC]);
    for i in 0..5 {
        update(&engine, "timeline:public", i, "en");
    }
    let all = drain(&twin);
    let epoch = engine.epoch().unwrap();

    // The history no longer reaches back to the first event.
    let sub = connect(&engine, "{}", &[PUBLIC]);
    assert!(sub.resume(&all[0].id).unwrap().gap);
    assert_eq!(drain(&sub), all[2..]);
    // It does reach back to the second.
    let sub = connect(&engine, "{}", &[PUBLIC]);
    assert!(!sub.resume(&all[1].id).unwrap().gap);
    assert_eq!(drain(&sub), all[2..]);

    // An id from another engine run: everything retained, and a gap.
    let other = if epoch == "x" { "y" } else { "x" };
    let sub = connect(&engine, "{}", &[PUBLIC]);
    assert!(sub.resume(&format!("{other}:4")).unwrap().gap);
    assert_eq!(drain(&sub), all[2..]);

    // A queue too small for the replay.
    let small = connect(&engine, r#"{"queue_capacity":2}"#, &[PUBLIC]);
    let r = small.resume(&all[1].id).unwrap();
    assert!(r.gap);
    assert_eq!(drain(&small), all[3..]);
    let small = connect(&engine, r#"{"queue_capacity":2,"overflow":"disconnect"}"#, &[PUBLIC]);
    assert!(small.resume(&all[1].id).unwrap().gap);
    assert_eq!(small.closed(), Some("slow consumer"));
    assert!(small.resume(&all[1].id).is_err());

    // No history at all.
    let off = Engine::default();
    let sub = connect(&off, "{}", &[PUBLIC]);
    assert!(sub.resume(&all[1].id).unwrap().gap);

    // Malformed ids are errors naming the id.
    for bad in ["", "42", "abc:", ":7", "abc:1x", "a-b:1"] {
        let e = sub.resume(bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidId);
        assert!(e.message().contains(&format!("{bad:?}")), "{e}");
    }
}

#[test]
fn memory_stays_bounded_under_a_long_run() {
    let engine = engine(8);
    let sub = connect(&engine, "{}", &[PUBLIC]);
    let mut peak = (0, 0);
    let mut at_half = (0, 0);
    let n = 60_000u64;
    for i in 0..n {
        // 500 hashtag channels plus the public one.
        let channel =
            if i % 2 == 0 { "timeline:public".to_string() } else { format!("timeline:hashtag:t{}", i % 1000) };
        update(&engine, &channel, i, "en");
        drain(&sub);
        let s = engine.stats();
        peak = (peak.0.max(s.history_entries), peak.1.max(s.history_bytes));
        if i == n / 2 {
            at_half = (s.history_entries, s.history_bytes);
        }
    }
    let s = engine.stats();
    assert_eq!(s.history_entries, 501 * 8);
    assert_eq!(peak.0, 501 * 8);
    assert_eq!(at_half.0, s.history_entries);
    // The same events in, the same bytes held (the payload's digits vary a little).
    assert!(s.history_bytes.abs_diff(at_half.1) * 100 < s.history_bytes, "{} vs {}", s.history_bytes, at_half.1);
    assert!(s.history_bytes < 501 * 8 * 2048, "{}", s.history_bytes);
}

#[test]
fn old_events_expire() {
    let engine = Engine::from_json(br#"{"history":{"max_events":1000,"max_age_s":1}}"#).unwrap();
    let sub = connect(&engine, "{}", &[PUBLIC]);
    for i in 0..50 {
        update(&engine, &format!("timeline:hashtag:t{i}"), i, "en");
    }
    update(&engine, "timeline:public", 50, "en");
    let last = match sub.next(Duration::ZERO) {
        Next::Frame(f) => f.id().unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(engine.stats().history_entries, 51);
    thread::sleep(Duration::from_millis(1300));
    update(&engine, "timeline:public", 51, "en");
    // The sweep dropped every expired ring, not only the one published to.
    let s = engine.stats();
    assert_eq!(s.history_entries, 1);
    assert!(s.history_bytes < 2048, "{}", s.history_bytes);
    // The expired event was seen: no gap. From before it: a gap.
    let again = connect(&engine, "{}", &[PUBLIC]);
    assert!(!again.resume(&last).unwrap().gap);
    assert_eq!(drain(&again).len(), 1);
    let start = format!("{}:0", engine.epoch().unwrap());
    let again = connect(&engine, "{}", &[PUBLIC]);
    assert!(again.resume(&start).unwrap().gap);
    assert_eq!(drain(&again).len(), 1);
    // A channel whose ring expired away entirely also reports the gap.
    let tag = connect(&engine, "{}", &[r#"{"stream":"hashtag","tag":"t3"}"#]);
    assert!(tag.resume(&start).unwrap().gap);
    assert!(drain(&tag).is_empty());
}

// ---- model test: random interleavings against the twin and a ring model ----

const CHANNELS: &[&str] = &["timeline:public", "timeline:hashtag:rust", "timeline:1", "timeline:2"];
const SUBSCRIPTIONS: &[(&str, &[usize])] = &[
    (PUBLIC, &[0]),
    (r#"{"stream":"hashtag","tag":"Rust"}"#, &[1]),
    (r#"{"stream":"user"}"#, &[2]),
    (r#"{"stream":"public","events":["delete"]}"#, &[0]),
];
const MAX_EVENTS: usize = 6;

#[derive(Clone, Debug)]
enum Op {
    /// Channel, language (for the viewer filter), delete instead of update.
    Publish(usize, bool, bool),
    /// Client, frames to read.
    Read(usize, usize),
    /// Client, publishes between subscribing and resuming.
    Reconnect(usize, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..CHANNELS.len(), any::<bool>(), any::<bool>()).prop_map(|(c, l, d)| Op::Publish(c, l, d)),
        2 => (0..3usize, 0..4usize).prop_map(|(c, n)| Op::Read(c, n)),
        1 => (0..3usize, 0..3u8).prop_map(|(c, p)| Op::Reconnect(c, p)),
    ]
}

struct Client {
    options: String,
    subscriptions: Vec<&'static str>,
    channels: Vec<usize>,
    twin: Subscriber,
    conn: Subscriber,
    seen: Vec<Got>,
    last: String,
    /// Seqs the model says this client can never get back.
    lost: Vec<u64>,
}

struct Model {
    engine: Engine,
    /// The last `MAX_EVENTS` seqs published to each channel.
    rings: Vec<VecDeque<u64>>,
    /// Channel of each seq.
    channel_of: BTreeMap<u64, usize>,
    next_seq: u64,
    next_status: u64,
}

impl Model {
    fn publish(&mut self, channel: usize, english: bool, delete: bool) {
        self.next_status += 1;
        let message = if delete {
            format!(r#"{{"event":"delete","payload":"{}"}}"#, self.next_status)
        } else {
            format!(r#"{{"event":"update","payload":{}}}"#, status(self.next_status, if english { "en" } else { "de" }))
        };
        self.engine.publish_channel(CHANNELS[channel].as_bytes(), message.as_bytes()).unwrap();
        self.next_seq += 1;
        self.channel_of.insert(self.next_seq, channel);
        let ring = &mut self.rings[channel];
        ring.push_back(self.next_seq);
        if ring.len() > MAX_EVENTS {
            ring.pop_front();
        }
    }
}

fn run_model(choices: &[(u8, bool, bool)], ops: &[Op]) -> Result<(), TestCaseError> {
    let engine = engine(MAX_EVENTS);
    let epoch = engine.epoch().unwrap().to_string();
    let mut clients: Vec<Client> = choices
        .iter()
        .map(|&(mask, filtered, ids)| {
            let subs: Vec<(&str, &[usize])> =
                SUBSCRIPTIONS.iter().enumerate().filter(|(i, _)| mask >> i & 1 == 1).map(|(_, s)| *s).collect();
            let subscriptions: Vec<&str> = subs.iter().map(|s| s.0).collect();
            let mut channels: Vec<usize> = subs.iter().flat_map(|s| s.1.iter().copied()).collect();
            channels.dedup();
            let options = format!(
                r#"{{"account":"1","event_ids":{ids}{}}}"#,
                if filtered { r#","languages":["en"]"# } else { "" }
            );
            Client {
                twin: connect(&engine, &options, &subscriptions),
                conn: connect(&engine, &options, &subscriptions),
                options,
                subscriptions,
                channels,
                seen: Vec::new(),
                last: format!("{epoch}:0"),
                lost: Vec::new(),
            }
        })
        .collect();
    let mut model = Model {
        engine: engine.clone(),
        rings: vec![VecDeque::new(); CHANNELS.len()],
        channel_of: BTreeMap::new(),
        next_seq: 0,
        next_status: 0,
    };
    let mut publishes = 0u64;
    for op in ops {
        match *op {
            Op::Publish(c, english, delete) => {
                model.publish(c, english, delete);
                publishes += 1;
            }
            Op::Read(k, n) => {
                let client = &mut clients[k];
                for _ in 0..n {
                    if let Next::Frame(f) = client.conn.next(Duration::ZERO) {
                        client.last = f.id().unwrap().to_string();
                        client.seen.push(got(&f));
                    }
                }
            }
            Op::Reconnect(k, between) => {
                let subscriptions = clients[k].subscriptions.clone();
                let conn = connect(&engine, &clients[k].options, &subscriptions);
                // The old connection goes after the new one subscribed, as
                // when a client reconnects before the server noticed.
                clients[k].conn = conn;
                for i in 0..between {
                    model.publish(i as usize % CHANNELS.len(), true, false);
                    publishes += 1;
                }
                let client = &mut clients[k];
                let last = seq_of(&client.last);
                // Lost: published to one of its channels after `last` and
                // no longer in that channel's ring.
                let mut lost: Vec<u64> = model
                    .channel_of
                    .range(last + 1..)
                    .filter(|(seq, c)| client.channels.contains(c) && !model.rings[**c].contains(seq))
                    .map(|(seq, _)| *seq)
                    .collect();
                let resumed = client.conn.resume(&client.last).unwrap();
                prop_assert_eq!(resumed.gap, !lost.is_empty(), "gap after {}: lost {:?}", client.last, lost);
                client.lost.append(&mut lost);
            }
        }
    }
    prop_assert_eq!(engine.stats().published, publishes);
    for client in &mut clients {
        let mut seen = std::mem::take(&mut client.seen);
        seen.extend(drain(&client.conn));
        let expected: Vec<Got> =
            drain(&client.twin).into_iter().filter(|g| !client.lost.contains(&seq_of(&g.id))).collect();
        prop_assert_eq!(seen, expected, "client {}", client.options);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn resumed_clients_see_what_they_would_have_seen(
        choices in proptest::collection::vec((1u8..16, any::<bool>(), any::<bool>()), 3),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run_model(&choices, &ops)?;
    }
}

// ---- threads: 4 publishers, clients cut and resumed at random points ----

#[test]
fn four_publishers_and_resuming_clients_lose_and_repeat_nothing() {
    const PUBLISHERS: usize = 4;
    const EVENTS: u64 = 3000;
    const CLIENTS: usize = 4;
    let engine = engine(1_000_000);
    let specs: [(&str, &[&str]); CLIENTS] = [
        ("{}", &[PUBLIC]),
        (r#"{"event_ids":true,"languages":["en"]}"#, &[PUBLIC, r#"{"stream":"hashtag","tag":"rust"}"#]),
        (r#"{"account":"1"}"#, &[r#"{"stream":"user"}"#, r#"{"stream":"hashtag","tag":"rust"}"#]),
        (r#"{"account":"2","event_ids":true}"#, &[r#"{"stream":"user"}"#, PUBLIC]),
    ];
    let twins: Vec<Subscriber> = specs.iter().map(|(o, s)| connect(&engine, o, s)).collect();
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = specs
        .iter()
        .enumerate()
        .map(|(k, &(options, subs))| {
            let (engine, done) = (engine.clone(), Arc::clone(&done));
            let first = connect(&engine, options, subs);
            thread::spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(k as u64 + 1);
                let mut next = move |n: u64| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng % n
                };
                let (mut conn, mut seen, mut last) = (first, Vec::new(), None::<String>);
                let mut resumes = 0;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    for _ in 0..next(50) {
                        match conn.next(Duration::from_micros(200)) {
                            Next::Frame(f) => {
                                last = Some(f.id().unwrap().to_string());
                                seen.push(got(&f));
                            }
                            Next::Timeout | Next::Empty => break,
                            Next::Closed(why) => panic!("closed: {why}"),
                        }
                    }
                    if finished {
                        seen.extend(drain(&conn));
                        return (seen, resumes);
                    }
                    if next(4) == 0
                        && let Some(last) = &last
                    {
                        drop(conn);
                        thread::sleep(Duration::from_micros(next(2000)));
                        conn = connect(&engine, options, subs);
                        assert!(!conn.resume(last).unwrap().gap, "history covers everything here");
                        resumes += 1;
                    }
                }
            })
        })
        .collect();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|t| {
            let engine = engine.clone();
            thread::spawn(move || {
                for i in 0..EVENTS {
                    let id = t as u64 * EVENTS + i;
                    let channel =
                        ["timeline:public", "timeline:hashtag:rust", "timeline:1", "timeline:2"][i as usize % 4];
                    update(&engine, channel, id, if i % 5 == 0 { "de" } else { "en" });
                }
            })
        })
        .collect();
    let start = Instant::now();
    publishers.into_iter().for_each(|p| p.join().unwrap());
    done.store(true, Ordering::Release);
    let mut total_resumes = 0;
    for (k, client) in clients.into_iter().enumerate() {
        let (seen, resumes) = client.join().unwrap();
        total_resumes += resumes;
        let expected = drain(&twins[k]);
        assert!(!expected.is_empty());
        assert_eq!(seen.len(), expected.len(), "client {k} after {resumes} resumes");
        assert!(seen == expected, "client {k}: the same frames in the same order");
    }
    assert!(total_resumes >= CLIENTS, "{total_resumes} resumes in {:?}", start.elapsed());
}
