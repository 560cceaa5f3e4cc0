//! The event scanner against the tape-based parser it replaced
//! (`evroute::event::reference`, feature `reference`): corpus events with
//! random byte-level damage, and hand-picked edge cases of the JSON grammar,
//! must get the same result from both, field for field and error for error.
#![cfg(feature = "reference")]

mod common;

use common::corpus::events;
use evroute::ErrorKind;
use evroute::event::reference::differences;
use proptest::prelude::*;

fn same(input: &[u8]) {
    if let Some(d) = differences(input) {
        panic!("{}: {d}", String::from_utf8_lossy(input));
    }
    same_paths(input);
}

/// Values at the edges of RFC 8259 and of simd-json's ranges, placed where
/// routing reads them (ids, names, payloads) and where it only skips them.
const EDGES: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "1.5",
    "1e5",
    "1E+2",
    "0.5e-3",
    "1e400",
    "-1e400",
    "1e-400",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "9223372036854775808",
    "123456789012345678901234567890",
    "01",
    "-",
    "1.",
    ".5",
    "+1",
    "1e",
    "1e+",
    "-a",
    "0x1",
    "true",
    "truex",
    "nul",
    "null",
    "false",
    "[]",
    "{}",
    "[1,]",
    "{\"a\":1,}",
    "[1 2]",
    r#""""#,
    r#""\u0041""#,
    r#""\ud83d\ude00""#,
    r#""\ud800""#,
    r#""\udc00""#,
    r#""\ud800\u0041""#,
    r#""\ud800x""#,
    r#""\u00G0""#,
    r#""\x""#,
    r#""\/""#,
    r#""\U0041""#,
    "\"a\u{1}b\"",
    "\"a\tb\"",
    "\"a\u{7f}b\"",
    r#""a:b""#,
    r#""""#,
    r#""a\nb""#,
    "\"unterminated",
    r#""\"#,
    "[",
    "{",
    "]",
    "}",
    "",
    " ",
    "\u{b}1",
    "\u{c}1",
    r#"{"name":"Rust"}"#,
    r#"[{"name":"a"},"b",{"name":"\u0062"}]"#,
    r#"{"id":"1","id":"2"}"#,
];

#[test]
fn edge_values_everywhere_routing_looks() {
    let inner =
        |field: &str, v: &str| format!(r#"{{"visibility":"public","account":{{"id":"1","acct":"a"}},{field}:{v}}}"#);
    let status = |field: &str, v: &str| format!(r#"{{"event":"update","payload":{}}}"#, inner(field, v));
    for v in EDGES {
        let cases = [
            format!(r#"{{"event":{v},"payload":"1"}}"#),
            format!(r#"{{"event":"delete","payload":{v}}}"#),
            format!(r#"{{"event":"x","recipients":[{v}],"lists":{v}}}"#),
            format!(r#"{{"event":"x","payload":{{"skipped":{v}}}}}"#),
            format!(r#"{{"event":"x","payload":{v},"payload2":[[[{v}]]]}}"#),
            status(r#""id""#, v),
            status(r#""tags""#, v),
            status(r#""tags""#, &format!("[{v}]")),
            status(r#""mentions""#, &format!(r#"[{{"id":{v}}}]"#)),
            status(r#""reblog""#, &format!(r#"{{"account":{{"id":{v}}}}}"#)),
            status(r#""in_reply_to_account_id""#, v),
            status(r#""media_attachments""#, v),
            status(r#""language""#, v),
            status(r#""card""#, &format!(r#"{{"x":{v},"x":1}}"#)),
            format!(r#"{{"type":"status.created","data":{{"tags":[{v}],"medias":{v}}}}}"#),
            format!(r#"{{"type":"status.x","data":{{"status":{{"tags":[{v}]}}}}}}"#),
            format!(r#"{{"type":"notification.x","data":{{"recipients":[{v}]}}}}"#),
            format!(r#"{{"event":"update","payload":{}}}"#, evroute::internal::quote(&inner(r#""x""#, v))),
            v.to_string(),
        ];
        for case in cases {
            same(case.as_bytes());
        }
    }
}

#[test]
fn nesting_limit_and_invalid_utf8_match() {
    for depth in [1000, 1023, 1024, 1025, 5000] {
        let deep = format!(r#"{{"event":"x","payload":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth));
        same(deep.as_bytes());
    }
    let err = evroute::event::parse_content(format!("[{}]", "[".repeat(1024)).as_bytes()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidJson);
    assert!(err.message().contains("nesting too deep"), "{err}");
    same(b"{\"event\":\"x\xff\"}");
    same(b"\xef\xbb\xbf{\"event\":\"x\"}");
}

#[test]
fn every_corpus_event_agrees() {
    for (name, bytes) in events() {
        assert!(differences(&bytes).is_none(), "{name}: {:?}", differences(&bytes));
    }
}

/// Bytes that steer damage towards the grammar's corners.
const NOISE: &[u8] = b"{}[]\":,\\u0e+-.1 \t\nxtfn\x01\xc3\xa9";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    ))]

    /// A corpus event with a few random edits: the scanner and the reference
    /// give the same result.
    #[test]
    fn damaged_events_agree(file in any::<prop::sample::Index>(), edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<prop::sample::Index>(), 1usize..6), 1..4)) {
        let events = events();
        let mut bytes = events[file.index(events.len())].1.clone();
        for (at, op, pick, len) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            let end = (i + len).min(bytes.len());
            match op {
                0 => { bytes.drain(i..end); }
                1 => bytes.insert(i, NOISE[pick.index(NOISE.len())]),
                2 => bytes[i] = NOISE[pick.index(NOISE.len())],
                _ => {
                    let copy = bytes[i..end].to_vec();
                    let j = pick.index(bytes.len());
                    bytes.splice(j..j, copy);
                }
            }
        }
        if let Some(d) = differences(&bytes) {
            prop_assert!(false, "{}: {}", String::from_utf8_lossy(&bytes), d);
        }
        same_paths(&bytes);
    }

    /// Strings dense in backslash runs, quotes and escapes, and other
    /// values, shifted to every offset of a 64-byte block: the SIMD scanner
    /// agrees with the portable one, on the document and on a prefix of it.
    #[test]
    fn escapes_across_block_edges_agree(
        shift in 0usize..130,
        parts in prop::collection::vec((0u8..8, 0usize..6, any::<prop::sample::Index>()), 1..12),
    ) {
        let mut doc = format!(r#"{{"event":"x","{}":["#, "k".repeat(shift));
        for (kind, n, pick) in parts {
            match kind {
                0 => doc.push_str(&format!(r#""{}""#, r"\".repeat(n))),
                1 => doc.push_str(&format!(r#""a{}"b""#, r"\".repeat(n))),
                2 => doc.push_str(&format!(r#""{}{}""#, "x".repeat(n * 11), r"\u00e9".repeat(n % 3))),
                3 => doc.push_str(&format!(r#"{}"""#, " ".repeat(n * 13))),
                4 => doc.push_str([r#""\ud83d\ude00""#, r#""\ud83d""#, "-1.5e3", "true", "null", "{}", "[]", r#""\/""#][n % 8]),
                5 => doc.push(char::from(NOISE[pick.index(NOISE.len())])),
                6 => doc.push_str(&format!(r#"{{"{}":{n}}}"#, r#"\""#.repeat(n))),
                _ => doc.push_str(&"\t".repeat(n * 7)),
            }
            doc.push(',');
        }
        doc.push_str("0]}");
        same_paths(doc.as_bytes());
        same_paths(&doc.as_bytes()[..doc.len() - 1 - shift % 7]);
    }
}

/// Every snippet at every offset across two block edges: in an array, as
/// the whole document (inputs shorter than a block, tails), after a key,
/// and as a key.
#[test]
fn snippets_at_every_block_offset_agree() {
    let snippets = [
        r#""\\""#,
        r#""\\\\""#,
        r#""\"""#,
        r#""\\\"""#,
        r#""a\\\\\\\"b""#,
        r#""\u0041\ud83d\ude00""#,
        r#""\ud83d\u0041""#,
        r#""\x""#,
        "\"a\u{1}b\"",
        "\"a\u{c}b\"",
        "\u{c}",
        "\u{1a}",
        r#""é€😀""#,
        r#""""#,
        "12345678901234567890",
        "-0.5e-3",
        "1.",
        "truex",
        "nul",
        // Literals are compared as words: short, long and near misses.
        "true",
        "false",
        "null",
        "fals",
        "falsy",
        "falsee",
        "tru",
        "t",
        "nulL",
        // Escapes of one character are checked without the `\u` path.
        r#""\b\f\n\r\t\/\\\"""#,
        r#""\u""#,
        r#""\a\v""#,
        r#"[1,2,{"a":[]}]"#,
        r#"{"a":1,}"#,
        "\"unterminated",
        "\\",
        r#"1"a""#,
    ];
    for snippet in snippets {
        for pad in 0..140 {
            let ws = " ".repeat(pad);
            same_paths(format!("[{ws}{snippet}]").as_bytes());
            same_paths(format!("{ws}{snippet}").as_bytes());
            same_paths(format!(r#"{{"{}":{snippet}}}"#, "k".repeat(pad)).as_bytes());
            same_paths(format!("{{{ws}{snippet}:1}}").as_bytes());
        }
    }
}

/// The SIMD scanner (when this CPU has AVX2 and PCLMULQDQ) against the
/// portable one: the same document for every input the portable scanner
/// accepts, a refusal for every other.
fn same_paths(input: &[u8]) {
    match evroute::event::reference::scanner_paths_differ(input) {
        Ok(None) => {}
        Ok(Some(d)) => panic!("{}: {d}", String::from_utf8_lossy(input)),
        Err(why) => {
            #[cfg(target_arch = "x86_64")]
            assert!(!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("pclmulqdq")), "{why}");
            eprintln!("SIMD scanner not compared: {why}");
        }
    }
}

#[test]
fn simd_and_portable_scanners_agree_on_the_corpus() {
    for (_, bytes) in events() {
        same_paths(&bytes);
    }
}
