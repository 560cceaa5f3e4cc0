//! The keyword-filter workload shared by `evroute bench` and the criterion
//! bench `keyword_filters`: subscribers on `public`, a share of them with
//! keyword filters drawn from a fixed number of distinct filter lists of
//! 1–10 keywords each. Keywords come from a vocabulary where one word in
//! forty occurs in the status, so some lists match and most do not.

use std::sync::Arc;

use crate::keyword::{FilterList, FilterSet, Registry};
use crate::{Engine, EngineConfig, Next, Result, Subscriber};

/// A public Mastodon status without tags or a `filtered` key (so viewers
/// get it annotated), ~3.5 KB: corpus/mastodon/13.
const STATUS: &str = include_str!("../corpus/mastodon/13-status.update-109348699525106378.json");

/// Words of the status text, part of the vocabulary.
const TEXT_WORDS: [&str; 25] = [
    "Feedly",
    "thumbnail",
    "images",
    "post",
    "NetNewsWire",
    "image",
    "boo",
    "RSS",
    "reader",
    "sized",
    "automatically",
    "clickthrough",
    "suggestions",
    "welcome",
    "default",
    "shows",
    "Gotta",
    "find",
    "full",
    "requiring",
    "thanks",
    "though",
    "just",
    "any",
    "very",
];
const VOCABULARY: usize = 1000;

/// The event every publish of the workload sends.
pub fn status_event() -> Vec<u8> {
    assert!(!STATUS.contains("\"filtered\""), "the corpus status changed: update filter_bench");
    STATUS.as_bytes().to_vec()
}

/// SplitMix64: the same workload on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// `count` distinct `keyword_filters` arrays (JSON), one to three filters
/// of 1–10 keywords in all.
pub fn filter_lists(count: usize) -> Vec<String> {
    let mut rng = Rng(42);
    (0..count)
        .map(|i| {
            let mut keywords = Vec::new();
            for _ in 0..1 + rng.below(10) {
                let w = rng.below(VOCABULARY);
                let word = TEXT_WORDS.get(w).map_or_else(|| format!("word{w}"), |t| t.to_string());
                keywords.push(format!("{{\"keyword\":\"{word}\",\"whole_word\":{}}}", rng.below(2) == 0));
            }
            let filters = 1 + rng.below(3.min(keywords.len()));
            let per = keywords.len().div_ceil(filters);
            let parts: Vec<String> = keywords
                .chunks(per)
                .enumerate()
                .map(|(f, k)| {
                    format!(
                        "{{\"id\":\"{}\",\"title\":\"list {i} filter {f}\",\"context\":[\"public\"],\"expires_at\":null,\"filter_action\":\"warn\",\"keywords\":[{}]}}",
                        i * 3 + f,
                        k.join(",")
                    )
                })
                .collect();
            format!("[{}]", parts.join(","))
        })
        .collect()
}

/// `n` subscribers on `public`; with `lists`, every tenth one has keyword
/// filters (subscriber `i` the list `i / 10 % lists.len()`).
pub fn subscribers(n: usize, lists: Option<&[String]>) -> Result<(Engine, Vec<Subscriber>)> {
    let engine = Engine::new(EngineConfig { queue_capacity: 64, ..EngineConfig::default() });
    let subs = (0..n)
        .map(|i| {
            let json = match lists {
                Some(lists) if i % 10 == 0 => format!("{{\"keyword_filters\":{}}}", lists[i / 10 % lists.len()]),
                _ => String::new(),
            };
            let s = engine.subscriber_from_json(json.as_bytes())?;
            s.subscribe(br#"{"stream":"public"}"#)?;
            Ok(s)
        })
        .collect::<Result<_>>()?;
    Ok((engine, subs))
}

/// A registry holding `lists`, interned, for timing evaluation alone.
pub fn registry(lists: &[String]) -> Result<(Registry, Vec<Arc<FilterSet>>)> {
    let registry = Registry::default();
    let sets = lists
        .iter()
        .map(|json| {
            crate::json::with_document(
                json.as_bytes(),
                &mut Vec::new(),
                crate::ErrorKind::InvalidConfig,
                FilterList::from_value,
            )
            .map(|list| registry.intern(list))
        })
        .collect::<Result<_>>()?;
    Ok((registry, sets))
}

/// Evaluates every set on the status text once: what one event costs the
/// engine when all of them listen. Returns how many sets matched.
pub fn evaluate_all(registry: &Registry, sets: &[Arc<FilterSet>], text: &str, now_ms: i64) -> usize {
    let mut event = registry.event(text.to_owned(), now_ms);
    sets.iter().filter(|s| event.evaluate(s).is_some()).count()
}

/// Takes every queued frame.
pub fn drain(subs: &[Subscriber]) {
    for s in subs {
        while let Next::Frame(f) = s.next(std::time::Duration::ZERO) {
            std::hint::black_box(f);
        }
    }
}
