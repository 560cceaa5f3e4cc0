//! SPEC §11 through the engine: the `filtered` annotation, blocked-by,
//! subscription origin, atomic updates, and frames shared per result.

use std::sync::Arc;
use std::time::Duration;

use evroute::{Engine, ErrorKind, FrameRef, Next, Subscriber};

fn next(sub: &Subscriber) -> Option<FrameRef> {
    match sub.next(Duration::ZERO) {
        Next::Frame(f) => Some(f),
        _ => None,
    }
}

fn subscriber(engine: &Engine, json: &str, streams: &[&str]) -> Subscriber {
    let sub = engine.subscriber_from_json(json.as_bytes()).unwrap();
    for s in streams {
        sub.subscribe(s.as_bytes()).unwrap();
    }
    sub
}

fn status(id: u32, acct: &str, content: &str) -> String {
    format!(
        r#"{{"id":"{id}","visibility":"public","reblog":null,"in_reply_to_account_id":null,"spoiler_text":"","content":{},"account":{{"id":"{}","acct":"{acct}"}},"media_attachments":[],"mentions":[],"tags":[{{"name":"dune"}}]}}"#,
        evroute::internal::quote(content),
        if acct.contains('@') { 2 } else { 1 },
    )
}

fn update(payload: &str) -> Vec<u8> {
    format!(r#"{{"event":"update","payload":{payload}}}"#).into_bytes()
}

const DUNE: &str = r#"{"keyword_filters":[{"id":"5","title":"Sci-fi","context":["public"],"expires_at":null,"filter_action":"warn","keywords":[{"keyword":"dune","whole_word":true}]}]}"#;
const FILTER5: &str = r#"{"id":"5","title":"Sci-fi","context":["public"],"expires_at":null,"filter_action":"warn"}"#;

#[test]
fn annotated_viewers_get_filtered_others_the_untouched_payload() {
    let engine = Engine::default();
    let plain = subscriber(&engine, "{}", &[r#"{"stream":"public"}"#]);
    let annotated = subscriber(&engine, DUNE, &[r#"{"stream":"public"}"#, r#"{"stream":"hashtag","tag":"Dune"}"#]);
    let empty = subscriber(&engine, r#"{"keyword_filters":[]}"#, &[r#"{"stream":"public:local"}"#]);
    let payload = status(1, "alice", "<p>I read <b>Dune</b> &amp; more</p>");
    engine.publish(&update(&payload)).unwrap();

    let f = next(&plain).unwrap();
    assert_eq!(f.payload(), Some(payload.as_str()));
    let expected = format!(
        r#"{},"filtered":[{{"filter":{FILTER5},"keyword_matches":["Dune"],"status_matches":null}}]}}"#,
        payload.strip_suffix('}').unwrap()
    );
    let (mut public, mut hashtag) = (next(&annotated).unwrap(), next(&annotated).unwrap());
    if public.stream() != r#"["public"]"# {
        std::mem::swap(&mut public, &mut hashtag);
    }
    assert_eq!(public.payload(), Some(expected.as_str()));
    assert_eq!(public.stream(), r#"["public"]"#);
    assert_eq!(hashtag.stream(), r#"["hashtag","Dune"]"#);
    assert_eq!(hashtag.payload(), Some(expected.as_str()));
    // One encoding per result: both streams share the SSE bytes.
    assert!(std::ptr::eq(public.sse(), hashtag.sse()));
    assert_eq!(public.sse(), format!("event: update\ndata: {expected}\n\n").as_bytes());
    let f = next(&empty).unwrap();
    assert_eq!(f.payload().unwrap(), format!(r#"{},"filtered":[]}}"#, payload.strip_suffix('}').unwrap()));
}

#[test]
fn annotation_only_on_public_and_hashtag_status_events() {
    let engine = Engine::default();
    let viewer = engine
        .subscriber_from_json(
            r#"{"account":"9","keyword_filters":[{"id":"1","keywords":[{"keyword":"x"}]}]}"#.as_bytes(),
        )
        .unwrap();
    viewer.subscribe(br#"{"stream":"user"}"#).unwrap();
    viewer.subscribe(br#"{"stream":"public"}"#).unwrap();
    let payload = status(1, "alice", "x");
    // Home timeline: no annotation.
    engine.publish(format!(r#"{{"event":"update","payload":{payload},"recipients":["9"]}}"#).as_bytes()).unwrap();
    let frames: Vec<_> = std::iter::from_fn(|| next(&viewer)).collect();
    assert_eq!(frames.len(), 2);
    let home = frames.iter().find(|f| f.stream() == r#"["user"]"#).unwrap();
    assert_eq!(home.payload(), Some(payload.as_str()));
    let public = frames.iter().find(|f| f.stream() == r#"["public"]"#).unwrap();
    assert!(public.payload().unwrap().ends_with(r#""keyword_matches":["x"],"status_matches":null}]}"#));
    // Other events on public are untouched, and so is a payload that
    // already has `filtered` (as Mastodon's own payloads do).
    engine.publish_channel(b"timeline:public", br#"{"event":"delete","payload":"1"}"#).unwrap();
    assert_eq!(next(&viewer).unwrap().payload(), Some("1"));
    let prefiltered = payload.replace(r#""id":"1""#, r#""id":"2","filtered":[]"#);
    engine.publish(&update(&prefiltered)).unwrap();
    assert_eq!(next(&viewer).unwrap().payload(), Some(prefiltered.as_str()));
    // status.update is annotated too; a community status.updated is not.
    engine.publish(format!(r#"{{"event":"status.update","payload":{payload}}}"#).as_bytes()).unwrap();
    assert!(next(&viewer).unwrap().payload().unwrap().contains(r#""filtered":[{"#));
    let community = r#"{"event_id":1,"type":"status.updated","created":1.0,"data":{"content":"x"}}"#;
    engine.publish(community.as_bytes()).unwrap();
    assert_eq!(next(&viewer).unwrap().payload(), Some(community));
}

#[test]
fn equal_results_share_frames_and_equal_sets_are_interned() {
    let engine = Engine::default();
    let other = r#"{"keyword_filters":[{"id":"5","title":"Sci-fi","context":["public"],"expires_at":null,"filter_action":"warn","keywords":[{"keyword":"spice"},{"keyword":"DUNE","whole_word":true}]}]}"#;
    let subs: Vec<Subscriber> = (0..6)
        .map(|i| subscriber(&engine, if i % 2 == 0 { DUNE } else { other }, &[r#"{"stream":"public"}"#]))
        .collect();
    engine.publish(&update(&status(1, "alice", "dune!"))).unwrap();
    let frames: Vec<FrameRef> = subs.iter().map(|s| next(s).unwrap()).collect();
    // Two distinct sets, one distinct result: one frame for all.
    for f in &frames {
        assert!(FrameRef::ptr_eq(f, &frames[0]));
    }
    engine.publish(&update(&status(2, "alice", "spice"))).unwrap();
    let frames: Vec<FrameRef> = subs.iter().map(|s| next(s).unwrap()).collect();
    assert!(frames[0].payload().unwrap().ends_with(r#""filtered":[]}"#));
    assert!(frames[1].payload().unwrap().contains(r#""keyword_matches":["spice"]"#));
    assert!(FrameRef::ptr_eq(&frames[0], &frames[2]) && FrameRef::ptr_eq(&frames[1], &frames[3]));
}

#[test]
fn blocked_by_hides_only_the_authors_statuses() {
    let engine = Engine::default();
    let viewer = subscriber(&engine, r#"{"blocked_by_accounts":[1]}"#, &[r#"{"stream":"public"}"#]);
    engine.publish(&update(&status(1, "alice", "hi"))).unwrap();
    assert!(next(&viewer).is_none());
    let mentioning = status(2, "bob@remote.example", "hi").replace(r#""mentions":[]"#, r#""mentions":[{"id":"1"}]"#);
    engine.publish(&update(&mentioning)).unwrap();
    assert!(next(&viewer).is_some());
}

#[test]
fn origin_keeps_one_side_and_the_stream_asked_for() {
    let engine = Engine::default();
    let local = subscriber(&engine, "{}", &[r#"{"stream":"public","origin":"local"}"#]);
    let remote = subscriber(&engine, "{}", &[r#"{"stream":"hashtag","tag":"dune","origin":"remote"}"#]);
    engine.publish(&update(&status(1, "alice", "a"))).unwrap();
    engine.publish(&update(&status(2, "bob@remote.example", "b"))).unwrap();
    let l: Vec<_> = std::iter::from_fn(|| next(&local)).collect();
    let r: Vec<_> = std::iter::from_fn(|| next(&remote)).collect();
    assert_eq!(l.len(), 1);
    assert!(l[0].payload().unwrap().contains(r#""id":"1""#));
    assert_eq!(l[0].stream(), r#"["public"]"#);
    assert_eq!(r.len(), 1);
    assert!(r[0].payload().unwrap().contains(r#""id":"2""#));
    // Non-status events still pass.
    engine.publish_channel(b"timeline:public", br#"{"event":"delete","payload":"1"}"#).unwrap();
    assert!(next(&local).is_some());
}

#[test]
fn updates_replace_the_whole_state_and_bad_filters_keep_the_old_one() {
    let engine = Engine::default();
    let viewer = subscriber(&engine, DUNE, &[r#"{"stream":"public"}"#]);
    for (bad, needle) in [
        (r#"{"keyword_filters":[{"id":"7","title":"t"}]}"#, r#"keyword_filters[0] (id "7"): keywords is missing"#),
        (r#"{"keyword_filters":[{"id":"7","keywords":[{"keyword":1}]}]}"#, "keyword must be a string"),
        (r#"{"keyword_filters":[{"id":"7","keywords":[],"expires_at":"soon"}]}"#, "expires_at"),
        (r#"{"keyword_filters":[{"id":"7","keywords":[],"filter_action":"mute"}]}"#, "filter_action"),
        (r#"{"blocked_by_accounts":"1"}"#, "blocked_by_accounts"),
    ] {
        let err = viewer.update(bad.as_bytes()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.message().contains(needle), "{err}");
        let Err(err) = engine.subscriber_from_json(bad.as_bytes()) else { panic!("{bad} was accepted") };
        assert!(err.message().contains(needle), "{err}");
    }
    engine.publish(&update(&status(1, "alice", "dune"))).unwrap();
    assert!(next(&viewer).unwrap().payload().unwrap().contains(r#""keyword_matches":["dune"]"#));
    // Without keyword_filters the viewer is no longer annotated.
    viewer.update(br#"{"blocked_accounts":[3]}"#).unwrap();
    let payload = status(2, "alice", "dune");
    engine.publish(&update(&payload)).unwrap();
    assert_eq!(next(&viewer).unwrap().payload(), Some(payload.as_str()));
}

#[test]
fn concurrent_updates_are_seen_whole() {
    // State A blocks author 1 and annotates; state `{}` does neither. An
    // annotated frame of author 1 could only come from a mix of the two.
    let engine = Engine::default();
    let viewer = subscriber(&engine, "{}", &[r#"{"stream":"public"}"#]);
    let a = r#"{"blocked_by_accounts":[1],"keyword_filters":[{"id":"1","keywords":[{"keyword":"x"}]}]}"#;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|scope| {
        let (v, stop2) = (&viewer, Arc::clone(&stop));
        scope.spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                v.update(a.as_bytes()).unwrap();
                v.update(b"{}").unwrap();
            }
        });
        for i in 0..2000 {
            engine.publish(&update(&status(i, "alice", "x"))).unwrap();
            while let Some(f) = next(&viewer) {
                assert!(!f.payload().unwrap().contains("filtered"), "annotated frame from a blocked author");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[test]
fn concurrent_updates_between_keyword_sets_keep_each_sets_result() {
    // Publishes decide most keyword-only viewers from the set key in the
    // subscriber's tag, without loading its state (src/viewer.rs). A viewer
    // switching between sets 1 and 2 (and a state that also hides author 1)
    // must get the result of one of its states, and viewers that keep one
    // set must never get the other's result.
    let engine = Engine::default();
    let filter = |id: &str| format!(r#"[{{"id":"{id}","title":"t{id}","keywords":[{{"keyword":"x"}}]}}]"#);
    let states = [
        format!(r#"{{"keyword_filters":{}}}"#, filter("1")),
        format!(r#"{{"keyword_filters":{}}}"#, filter("2")),
        format!(r#"{{"blocked_by_accounts":[1],"keyword_filters":{}}}"#, filter("1")),
    ];
    let stable: Vec<(Subscriber, &str)> = (0..6)
        .map(|i| {
            let id = ["1", "2"][i % 2];
            (subscriber(&engine, &states[i % 2], &[r#"{"stream":"public"}"#]), id)
        })
        .collect();
    let toggled = subscriber(&engine, &states[0], &[r#"{"stream":"public"}"#]);
    let has = |p: &str, id: &str| p.contains(&format!(r#""filter":{{"id":"{id}""#));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for n in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                toggled.update(states[n % 3].as_bytes()).unwrap();
            }
        });
        for i in 0..2000 {
            let author = if i % 2 == 0 { "alice" } else { "bob@remote.example" };
            engine.publish(&update(&status(i, author, "x"))).unwrap();
            for (viewer, id) in &stable {
                let payload = next(viewer).unwrap().payload().unwrap().to_owned();
                assert!(has(&payload, id) && !has(&payload, ["2", "1"][(*id == "2") as usize]), "{payload}");
            }
            while let Some(f) = next(&toggled) {
                let payload = f.payload().unwrap();
                assert!(has(payload, "1") != has(payload, "2"), "not annotated by exactly one set: {payload}");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

mod common;

/// The searchable text of every corpus status and of hand-written HTML
/// (entities, nesting, raw-text elements, non-ASCII), against JSDOM's
/// output for the same input (tests/golden/searchable_text.js).
#[test]
fn searchable_text_matches_jsdom() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/searchable_text.json");
    let golden = common::json::parse(&std::fs::read(path).unwrap()).unwrap();
    assert!(golden.items().len() >= 15);
    for case in golden.items() {
        let name = case.get("name").and_then(|n| n.str()).unwrap();
        let status = case.get("status").and_then(|n| n.str()).unwrap();
        let text = case.get("text").and_then(|n| n.str()).unwrap();
        assert_eq!(evroute::text::status_text(status).as_deref(), Some(text), "{name}");
    }
}
