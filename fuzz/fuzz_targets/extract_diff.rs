//! Differential: the scanner that parses events against the tape-based parser
//! it replaced (`evroute::event::reference`, the same routing on simd-json's
//! tape) and against serde_json. Accept/reject, every extracted field and the
//! error must agree with the reference; accept/reject, the event name and the
//! payload with serde_json, which reads JSON independently of both. The
//! SIMD scanner and the portable one must give the same document (or both
//! refuse).
#![no_main]

use evroute::ErrorKind;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Containers nested more deeply than serde_json's recursion limit allows.
fn deeper_than_serde(data: &[u8]) -> bool {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in data {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'[' | b'{') => {
                depth += 1;
                max = max.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max >= 127
}

fuzz_target!(|data: &[u8]| {
    if let Some(difference) = evroute::event::reference::differences(data) {
        panic!("{difference}");
    }
    // The SIMD scanner (this CPU permitting) against the portable one.
    if let Ok(Some(difference)) = evroute::event::reference::scanner_paths_differ(data) {
        panic!("{difference}");
    }
    let ours = evroute::event::parse_content(data);
    // serde_json (arbitrary_precision: any number in range of the grammar).
    let serde: Result<Value, _> = serde_json::from_slice(data);
    match (&ours, &serde) {
        (Err(e), Ok(_)) if matches!(e.kind(), ErrorKind::InvalidJson | ErrorKind::InvalidUtf8) => {
            // The one thing evroute refuses and serde_json takes: numbers
            // outside u64/i64 (integers) or f64 (others), as simd-json did.
            assert!(e.message().contains("number out of range"), "serde_json accepts, evroute: {e}");
        }
        (Err(_), _) => {}
        (Ok(_), Err(e)) => assert!(deeper_than_serde(data), "evroute accepts, serde_json: {e}"),
        (Ok(ev), Ok(doc)) => {
            let name = doc.get("event").or_else(|| doc.get("type")).and_then(Value::as_str);
            assert_eq!(Some(&*ev.name), name, "event name");
            match doc.get("event").map(|_| doc.get("payload")) {
                // A Mastodon envelope: the payload's text, or its JSON.
                Some(Some(Value::String(text))) => assert_eq!(ev.payload.as_deref(), Some(text.as_str())),
                Some(Some(payload)) => {
                    let delivered: Value = serde_json::from_str(ev.payload.as_deref().expect("a payload")).unwrap();
                    assert_eq!(&delivered, payload, "payload bytes");
                }
                Some(None) => assert_eq!(ev.payload, None),
                // A community event: the whole event.
                None => {
                    let delivered: Value = serde_json::from_str(ev.payload.as_deref().expect("a payload")).unwrap();
                    assert_eq!(&delivered, doc, "community payload");
                }
            }
        }
    }
});
