//! Keyword filters and the `filtered` annotation (SPEC §11).
//!
//! Matching follows Mastodon's streaming server, which builds one regular
//! expression per filter: each keyword escaped, `\b` added on a whole-word
//! side that starts or ends with a word character, the keywords joined with
//! `|`, flag `i` and no `u`. Consequences kept here:
//! - word characters are ASCII `[A-Za-z0-9_]` only;
//! - case-insensitivity is the `i` flag without `u`: each UTF-16 code unit is
//!   canonicalized with `toUpperCase`, unless that gives several code units or
//!   maps a non-ASCII character to ASCII. So "ärger" matches "ÄRGER" and
//!   "дюна" matches "ДЮНА", "ß" does not match "SS", "ſ" does not match "s",
//!   and letters outside the BMP (surrogate pairs) match only themselves;
//! - the result is the regex's first match: the leftmost start, and at that
//!   start the first keyword in filter order.
//!
//! Cost: equal filter lists are interned engine-wide ([`Registry`]); every
//! distinct keyword (after folding) is a pattern of one Aho-Corasick
//! automaton, so a status's text is scanned once per event whatever the
//! number of viewers and filters; each interned list is then evaluated at
//! most once per event, from the pattern occurrences.

use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use ahash::AHashMap;
use aho_corasick::AhoCorasick;
use parking_lot::{Mutex, RwLock};
use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use crate::error::{Error, Result};
use crate::json::{id_text, quote, type_name};

/// One keyword of a filter.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Keyword {
    pub keyword: Box<str>,
    pub whole_word: bool,
}

/// One keyword filter of a viewer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeywordFilter {
    pub id: Box<str>,
    /// Milliseconds since the Unix epoch; `None` never expires.
    pub expires_at_ms: Option<i64>,
    pub keywords: Vec<Keyword>,
    /// The `filter` object of a result, encoded once:
    /// `{"id","title","context","expires_at","filter_action"}`.
    pub filter_json: Box<str>,
}

/// A viewer's keyword filters, in the viewer's order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FilterList(pub Vec<KeywordFilter>);

impl FilterList {
    /// Parses the `keyword_filters` array. Errors name the filter.
    pub fn from_value(value: &Value<'_>) -> Result<FilterList> {
        let items = value
            .as_array()
            .ok_or_else(|| Error::config(format!("keyword_filters must be an array, got {}", type_name(value))))?;
        items.iter().enumerate().map(|(i, item)| parse_filter(i, item)).collect::<Result<_>>().map(FilterList)
    }
}

fn parse_filter(index: usize, item: &Value<'_>) -> Result<KeywordFilter> {
    let name = |what: &str| {
        let id = item.get("id").and_then(|v| id_text(v).ok());
        match id {
            Some(id) => format!("keyword_filters[{index}] (id {id:?}): {what}"),
            None => format!("keyword_filters[{index}]: {what}"),
        }
    };
    let object = item
        .as_object()
        .ok_or_else(|| Error::config(name(&format!("a filter must be an object, got {}", type_name(item)))))?;
    for key in object.keys() {
        // `statuses` comes with Mastodon's Filter entity; status filters are the host's business.
        if !matches!(
            key.as_ref(),
            "id" | "title" | "context" | "expires_at" | "filter_action" | "keywords" | "statuses"
        ) {
            return Err(Error::config(name(&format!("unknown key {key:?}"))));
        }
    }
    let id = match item.get("id") {
        None => return Err(Error::config(name("id is missing"))),
        Some(v) => id_text(v).map_err(|e| Error::config(name(&format!("id: {e}"))))?,
    };
    let title = match item.get("title") {
        None => "",
        Some(v) => v.as_str().ok_or_else(|| Error::config(name("title must be a string")))?,
    };
    let mut context = Vec::new();
    if let Some(v) = item.get("context") {
        let list = v.as_array().ok_or_else(|| Error::config(name("context must be an array of strings")))?;
        for c in list {
            context.push(c.as_str().ok_or_else(|| Error::config(name("context must be an array of strings")))?);
        }
    }
    let expires_at_ms = match item.get("expires_at") {
        None => None,
        Some(v) if v.is_null() => None,
        Some(v) => {
            let text =
                v.as_str().ok_or_else(|| Error::config(name("expires_at must be a timestamp string or null")))?;
            Some(parse_timestamp(text).ok_or_else(|| {
                Error::config(name(&format!(
                    "expires_at {text:?} is not an ISO 8601 timestamp like 2026-12-01T00:00:00.000Z"
                )))
            })?)
        }
    };
    let action = match item.get("filter_action") {
        None => "warn",
        Some(v) => match v.as_str() {
            Some(a @ ("warn" | "hide")) => a,
            _ => return Err(Error::config(name("filter_action must be \"warn\" or \"hide\""))),
        },
    };
    let list = match item.get("keywords") {
        None => return Err(Error::config(name("keywords is missing"))),
        Some(v) => v.as_array().ok_or_else(|| Error::config(name("keywords must be an array")))?,
    };
    let mut keywords = Vec::with_capacity(list.len());
    for (k, kw) in list.iter().enumerate() {
        let bad = |what: &str| Error::config(name(&format!("keywords[{k}]: {what}")));
        let keyword = match kw.get("keyword") {
            None => return Err(bad("keyword is missing")),
            Some(v) => v.as_str().ok_or_else(|| bad(&format!("keyword must be a string, got {}", type_name(v))))?,
        };
        if keyword.is_empty() {
            return Err(bad("keyword must not be empty"));
        }
        let whole_word = match kw.get("whole_word") {
            None => false,
            Some(v) if v.is_null() => false,
            Some(v) => v.as_bool().ok_or_else(|| bad("whole_word must be a boolean"))?,
        };
        if kw.as_object().is_some_and(|o| o.keys().any(|key| !matches!(key.as_ref(), "keyword" | "whole_word" | "id")))
        {
            return Err(bad("unknown key (expected keyword, whole_word, id)"));
        }
        keywords.push(Keyword { keyword: keyword.into(), whole_word });
    }
    let mut json = format!("{{\"id\":{},\"title\":{},\"context\":[", quote(&id), quote(title));
    for (i, c) in context.iter().enumerate() {
        json.push_str(if i == 0 { "" } else { "," });
        json.push_str(&quote(c));
    }
    json.push_str("],\"expires_at\":");
    match expires_at_ms {
        Some(ms) => json.push_str(&quote(&iso_string(ms))),
        None => json.push_str("null"),
    }
    json.push_str(&format!(",\"filter_action\":\"{action}\"}}"));
    Ok(KeywordFilter { id, expires_at_ms, keywords, filter_json: json.into() })
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (RFC 3339; a space may stand
/// for `T`, as PostgreSQL writes it) to milliseconds since the epoch.
fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(r)?;
        digits.iter().all(u8::is_ascii_digit).then(|| digits.iter().fold(0, |n, d| n * 10 + (d - b'0') as i64))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[mo as usize - 1] || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        // Milliseconds, truncated as JavaScript's Date keeps them.
        ms = b[start..i.min(start + 3)].iter().fold(0, |n, d| n * 10 + (d - b'0') as i64);
        ms *= [100, 10, 1][(i - start).min(3) - 1];
    }
    let offset_min = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            (oh * 60 + om) * if *sign == b'-' { -1 } else { 1 }
        }
        _ => return None,
    };
    let seconds = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(seconds * 1000 + ms)
}

/// JavaScript's `Date.prototype.toISOString` (years 0 to 9999).
fn iso_string(ms: i64) -> String {
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, f) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60, rest % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{f:03}Z")
}

/// JavaScript's case canonicalization for a non-`u` regex with `i`.
pub fn fold_char(c: char) -> char {
    if (c as u32) < 0x80 {
        return c.to_ascii_uppercase();
    }
    if (c as u32) > 0xFFFF {
        return c;
    }
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) if (u as u32) >= 0x80 && (u as u32) <= 0xFFFF => u,
        _ => c,
    }
}

/// `s` folded with [`fold_char`].
pub fn fold(s: &str) -> String {
    s.chars().map(fold_char).collect()
}

/// `text` folded with [`fold_char`], and the byte offset in `text` of each
/// folded byte (plus the end) when folding changed byte lengths.
fn fold_mapped(text: &str) -> (String, Option<Vec<u32>>) {
    let mut folded = String::with_capacity(text.len());
    let mut offsets: Option<Vec<u32>> = None;
    for (i, c) in text.char_indices() {
        let f = fold_char(c);
        if f.len_utf8() != c.len_utf8() && offsets.is_none() {
            offsets = Some((0..folded.len() as u32).collect());
        }
        if let Some(map) = &mut offsets {
            map.extend(std::iter::repeat_n(i as u32, f.len_utf8()));
        }
        folded.push(f);
    }
    if let Some(map) = &mut offsets {
        map.push(text.len() as u32);
    }
    (folded, offsets)
}

fn is_word(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One distinct folded keyword, shared by every filter that uses it.
struct Pattern {
    text: Box<str>,
    refs: u32,
    /// Generation at which the pattern was added; a matcher built at a
    /// later or equal generation contains it.
    born: u64,
    /// Slots of the sets that use the pattern (once per use).
    owners: Vec<u32>,
}

/// A keyword of an interned list, resolved to its pattern.
#[derive(Clone, Copy)]
struct Key {
    pattern: u32,
    whole_word: bool,
    /// The pattern's `born`: a matcher older than this does not contain it
    /// (and may map the same id, freed and reused since, to another text).
    born: u64,
}

/// An interned filter list with its keywords resolved to patterns.
pub struct FilterSet {
    list: Arc<FilterList>,
    /// The keys of every filter, filter after filter.
    keys: Vec<Key>,
    /// Per filter, the end of its keys in `keys`.
    ends: Vec<u32>,
    /// The newest pattern this set uses (see [`Pattern::born`]).
    born: u64,
    /// A small number unique among live sets, for per-event bitsets.
    slot: u32,
    /// Creation order: sets newer than an event's candidate bitset are not
    /// in it.
    seq: u64,
    registry: Weak<RegistryInner>,
}

impl std::fmt::Debug for FilterSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterSet").field("filters", &self.list.0.len()).finish()
    }
}

impl FilterSet {
    pub fn filters(&self) -> &FilterList {
        &self.list
    }
}

impl Drop for FilterSet {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            let mut tables = registry.tables.lock();
            if tables.sets.get(&*self.list).is_some_and(|w| w.strong_count() == 0) {
                tables.sets.remove(&*self.list);
            }
            for key in &self.keys {
                let pattern = &mut tables.patterns[key.pattern as usize];
                pattern.refs -= 1;
                let position = pattern.owners.iter().position(|&o| o == self.slot);
                if let Some(i) = position {
                    pattern.owners.swap_remove(i);
                }
            }
            tables.free_slots.push(self.slot);
        }
    }
}

#[derive(Default)]
struct Tables {
    sets: AHashMap<Arc<FilterList>, Weak<FilterSet>>,
    by_text: AHashMap<Box<str>, u32>,
    patterns: Vec<Pattern>,
    /// Pattern slots freed by the last rebuild, for reuse.
    free: Vec<u32>,
    generation: u64,
    /// Set slots: freed ones, and the next never used.
    free_slots: Vec<u32>,
    next_slot: u32,
    /// Sets interned so far.
    set_seq: u64,
}

/// The automaton over every live pattern, as of one generation.
#[derive(Default)]
struct Matcher {
    generation: u64,
    automaton: Option<AhoCorasick>,
    /// Automaton pattern index → (pattern id, starts with a word character,
    /// ends with one).
    patterns: Vec<(u32, bool, bool)>,
}

#[derive(Default)]
struct RegistryInner {
    tables: Mutex<Tables>,
    matcher: RwLock<Arc<Matcher>>,
    /// Serializes rebuilds; publishers that find it taken use the old matcher.
    rebuilding: Mutex<()>,
}

/// The engine's interned keyword filter lists and their shared automaton.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

impl Registry {
    /// The interned set for `list`: equal lists share one set.
    pub fn intern(&self, list: FilterList) -> Arc<FilterSet> {
        let mut tables = self.inner.tables.lock();
        if let Some(set) = tables.sets.get(&list).and_then(Weak::upgrade) {
            return set;
        }
        let slot = tables.free_slots.pop().unwrap_or_else(|| {
            tables.next_slot += 1;
            tables.next_slot - 1
        });
        tables.set_seq += 1;
        let seq = tables.set_seq;
        let mut born = 0;
        let mut keys = Vec::new();
        let mut ends = Vec::with_capacity(list.0.len());
        for filter in &list.0 {
            for kw in &filter.keywords {
                let pattern = tables.pattern(fold(&kw.keyword));
                tables.patterns[pattern as usize].owners.push(slot);
                let key = Key { pattern, whole_word: kw.whole_word, born: tables.patterns[pattern as usize].born };
                born = born.max(key.born);
                keys.push(key);
            }
            ends.push(keys.len() as u32);
        }
        let list = Arc::new(list);
        let registry = Arc::downgrade(&self.inner);
        let set = Arc::new(FilterSet { list: Arc::clone(&list), keys, ends, born, slot, seq, registry });
        tables.sets.insert(list, Arc::downgrade(&set));
        set
    }

    /// Distinct filter lists alive.
    pub fn distinct_sets(&self) -> usize {
        self.inner.tables.lock().sets.values().filter(|w| w.strong_count() > 0).count()
    }

    /// The current matcher, rebuilt first when patterns were added since
    /// (unless another thread is rebuilding: sets newer than the matcher are
    /// then searched one by one, see [`EventMatches::occurrence`]).
    fn matcher(&self) -> Arc<Matcher> {
        let current = Arc::clone(&self.inner.matcher.read());
        let generation = self.inner.tables.lock().generation;
        if current.generation == generation {
            return current;
        }
        let Some(_guard) = self.inner.rebuilding.try_lock() else {
            return current;
        };
        let fresh = Arc::new(self.inner.tables.lock().build());
        *self.inner.matcher.write() = Arc::clone(&fresh);
        fresh
    }

    /// Starts the per-event state for the searchable `text` of a status.
    pub fn event(&self, text: String, now_ms: i64) -> EventMatches {
        let mut m = EventMatches::new(self.matcher(), text, now_ms);
        m.find_candidates(&self.inner.tables.lock());
        m
    }
}

impl Tables {
    fn pattern(&mut self, text: String) -> u32 {
        if let Some(&id) = self.by_text.get(text.as_str()) {
            self.patterns[id as usize].refs += 1;
            return id;
        }
        self.generation += 1;
        let pattern = Pattern { text: text.as_str().into(), refs: 1, born: self.generation, owners: Vec::new() };
        let id = match self.free.pop() {
            Some(id) => {
                self.patterns[id as usize] = pattern;
                id
            }
            None => {
                self.patterns.push(pattern);
                (self.patterns.len() - 1) as u32
            }
        };
        self.by_text.insert(text.into(), id);
        id
    }

    /// Builds the automaton of the live patterns and frees the dead ones.
    fn build(&mut self) -> Matcher {
        let mut texts = Vec::new();
        let mut patterns = Vec::new();
        for (id, p) in self.patterns.iter().enumerate() {
            if p.refs > 0 {
                texts.push(&*p.text);
                let first = p.text.chars().next();
                let last = p.text.chars().next_back();
                patterns.push((id as u32, is_word(first), is_word(last)));
            } else if !p.text.is_empty() {
                self.by_text.remove(&p.text);
                self.free.push(id as u32);
            }
        }
        let automaton = (!texts.is_empty()).then(|| AhoCorasick::new(&texts).expect("literal patterns always build"));
        for &id in &self.free {
            self.patterns[id as usize].text = "".into();
        }
        // A freed slot reused later gets a newer `born`, so sets using it are
        // not mistaken for ones this matcher covers.
        self.generation += 1;
        Matcher { generation: self.generation, automaton, patterns }
    }
}

/// What tells interned sets apart while they live: their slot and creation
/// number. Kept beside a viewer's set pointer, so that finding the set's
/// result for an event does not load the set itself (a cache miss per
/// viewer when a publish walks 100k subscribers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetKey {
    slot: u32,
    seq: u64,
}

impl FilterSet {
    pub fn key(&self) -> SetKey {
        SetKey { slot: self.slot, seq: self.seq }
    }
}

/// Bits of a packed [`SetKey`]: its slot, then its creation number.
const PACKED_SLOT_BITS: u32 = 22;
const PACKED_SEQ_BITS: u32 = 40;

impl SetKey {
    /// The key in the low 62 bits of a word, so that a viewer's tag can
    /// hold it (src/viewer.rs); `None` when the slot or creation number is
    /// too large for that (beyond 4M live sets, or 10^12 created): such
    /// keys are not packed rather than truncated, so packed keys never
    /// collide.
    pub fn pack(self) -> Option<u64> {
        (self.slot < 1 << PACKED_SLOT_BITS && self.seq < 1 << PACKED_SEQ_BITS)
            .then(|| self.seq << PACKED_SLOT_BITS | u64::from(self.slot))
    }

    /// The key [`SetKey::pack`] packed (higher bits are ignored).
    pub fn unpack(packed: u64) -> SetKey {
        SetKey {
            slot: (packed & ((1 << PACKED_SLOT_BITS) - 1)) as u32,
            seq: packed >> PACKED_SLOT_BITS & ((1 << PACKED_SEQ_BITS) - 1),
        }
    }
}

/// A number per interned set, for one event: what `Annotations` keeps per
/// set without hashing. Indexed by slot and checked against the creation
/// number, so a set freed during the event and another one given its slot
/// are not confused.
#[derive(Default)]
pub struct PerSet {
    /// By slot: (set creation number, value); 0 is empty (sets count from 1).
    entries: Vec<(u64, u32)>,
}

impl PerSet {
    pub fn get(&self, key: SetKey) -> Option<u32> {
        self.entries.get(key.slot as usize).filter(|(seq, _)| *seq == key.seq).map(|&(_, v)| v)
    }

    pub fn insert(&mut self, key: SetKey, value: u32) {
        let slot = key.slot as usize;
        if slot >= self.entries.len() {
            self.entries.resize((slot + 1).next_power_of_two(), (0, 0));
        }
        self.entries[slot] = (key.seq, value);
    }
}

/// Where a pattern first occurs in the text: anywhere, and where the
/// whole-word rule holds.
#[derive(Clone, Copy, Default)]
struct Occurrence {
    first: Option<(u32, u32)>,
    first_whole: Option<(u32, u32)>,
}

/// Keyword matching of one event: the text scanned once, each set's
/// result computed on demand.
pub struct EventMatches {
    matcher: Arc<Matcher>,
    text: String,
    /// Folded text and the original byte offset of each folded byte (only
    /// when folding changed byte lengths).
    folded: String,
    offsets: Option<Vec<u32>>,
    /// The occurrences of the patterns that occur, in pattern id order.
    occurrences: Vec<Occurrence>,
    /// Bit per pattern id: set when the pattern occurs. Most keys of most
    /// sets do not; this answers for them, and `rank` (bits set in the
    /// words before each word) finds the others' entry without hashing.
    touched: Vec<u64>,
    rank: Vec<u32>,
    /// Patterns newer than the matcher, searched one by one.
    searched: AHashMap<u32, Occurrence>,
    /// Bit per set slot: the sets that own a pattern that occurs, as of
    /// set sequence `.1`. Every other set of the matcher's patterns has no
    /// match, which is answered without looking at its keys.
    candidates: Option<(Vec<u64>, u64)>,
    now_ms: i64,
    /// The last result, lent out by `evaluate`.
    out: String,
}

impl EventMatches {
    fn new(matcher: Arc<Matcher>, text: String, now_ms: i64) -> EventMatches {
        let (folded, offsets) = if text.is_ascii() { (text.to_ascii_uppercase(), None) } else { fold_mapped(&text) };
        let mut m = EventMatches {
            matcher,
            text,
            folded,
            offsets,
            occurrences: Vec::new(),
            touched: Vec::new(),
            rank: Vec::new(),
            searched: AHashMap::new(),
            candidates: None,
            now_ms,
            out: String::new(),
        };
        m.scan();
        m
    }

    fn original(&self, folded_offset: usize) -> u32 {
        self.offsets.as_ref().map_or(folded_offset as u32, |map| map[folded_offset])
    }

    /// Notes one occurrence (folded byte range) of a pattern.
    fn record(&self, occ: &mut Occurrence, start: usize, end: usize, starts_word: bool, ends_word: bool) {
        let (start, end) = (self.original(start), self.original(end));
        let before = self.text[..start as usize].chars().next_back();
        let after = self.text[end as usize..].chars().next();
        let whole = !(starts_word && is_word(before) || ends_word && is_word(after));
        // Keep the smallest start (one pattern has one length).
        if occ.first.is_none_or(|(s, _)| start < s) {
            occ.first = Some((start, end));
        }
        if whole && occ.first_whole.is_none_or(|(s, _)| start < s) {
            occ.first_whole = Some((start, end));
        }
    }

    /// One pass of the automaton over the text, every occurrence of every
    /// pattern.
    fn scan(&mut self) {
        if self.text.is_empty() {
            return;
        }
        let Some(automaton) = &self.matcher.automaton else { return };
        let mut hits: Vec<(u32, usize, usize)> =
            automaton.find_overlapping_iter(&self.folded).map(|m| (m.pattern().as_u32(), m.start(), m.end())).collect();
        hits.sort_unstable_by_key(|h| h.0);
        let mut occurrences = Vec::new();
        let mut last = None;
        for (index, start, end) in hits {
            let (id, starts_word, ends_word) = self.matcher.patterns[index as usize];
            if last != Some(index) {
                last = Some(index);
                occurrences.push(Occurrence::default());
                let word = id as usize / 64;
                if word >= self.touched.len() {
                    self.touched.resize(word + 1, 0);
                }
                self.touched[word] |= 1 << (id % 64);
            }
            let occ = occurrences.last_mut().expect("pushed above");
            self.record(occ, start, end, starts_word, ends_word);
        }
        // Automaton order is pattern id order (`Tables::build`).
        self.occurrences = occurrences;
        let mut total = 0;
        self.rank = self
            .touched
            .iter()
            .map(|w| {
                total += w.count_ones();
                total - w.count_ones()
            })
            .collect();
    }

    /// Pattern ids that occur, in order.
    fn occurring(&self) -> impl Iterator<Item = u32> + '_ {
        self.touched.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let bit = w.trailing_zeros();
                    w &= w - 1;
                    i as u32 * 64 + bit
                })
            })
        })
    }

    /// Where the key's pattern occurs; `None` when it does not.
    fn occurrence(&self, key: &Key) -> Option<&Occurrence> {
        if key.born > self.matcher.generation {
            return self.searched.get(&key.pattern);
        }
        let (word, bit) = (key.pattern as usize / 64, 1u64 << (key.pattern % 64));
        let w = *self.touched.get(word)?;
        (w & bit != 0).then(|| &self.occurrences[(self.rank[word] + (w & (bit - 1)).count_ones()) as usize])
    }

    /// Occurrences of a pattern the matcher may not contain (added since it
    /// was built): searched directly, once per event.
    fn search(&mut self, set: &FilterSet, pattern: u32) {
        if self.searched.contains_key(&pattern) {
            return;
        }
        let mut occ = Occurrence::default();
        if let Some(registry) = set.registry.upgrade() {
            let text = registry.tables.lock().patterns[pattern as usize].text.clone();
            let (first, last) = (text.chars().next(), text.chars().next_back());
            for start in memchr::memmem::find_iter(self.folded.as_bytes(), text.as_bytes()) {
                self.record(&mut occ, start, start + text.len(), is_word(first), is_word(last));
            }
        }
        self.searched.insert(pattern, occ);
    }

    fn find_candidates(&mut self, tables: &Tables) {
        let mut bits = Vec::new();
        for id in self.occurring() {
            for &slot in tables.patterns.get(id as usize).map_or(&[][..], |p| &p.owners) {
                let word = slot as usize / 64;
                if word >= bits.len() {
                    bits.resize(word + 1, 0u64);
                }
                bits[word] |= 1 << (slot % 64);
            }
        }
        self.candidates = Some((bits, tables.set_seq));
    }

    /// The `filtered` array (JSON text) for one set; `None` for `[]`.
    /// Inlined: most sets are answered by their candidate bit.
    #[inline]
    pub fn evaluate(&mut self, set: &FilterSet) -> Option<&str> {
        if let Some((bits, seq)) = &self.candidates
            && set.seq <= *seq
            && set.born <= self.matcher.generation
            && bits.get(set.slot as usize / 64).is_none_or(|w| w & 1 << (set.slot % 64) == 0)
        {
            return None;
        }
        self.evaluate_keys(set)
    }

    #[inline(never)]
    fn evaluate_keys(&mut self, set: &FilterSet) -> Option<&str> {
        let generation = self.matcher.generation;
        if set.born > generation {
            for key in set.keys.iter().filter(|k| k.born > generation) {
                self.search(set, key.pattern);
            }
        }
        self.out.clear();
        let mut start_of = 0;
        for (filter, &end_of) in set.list.0.iter().zip(&set.ends) {
            let keys = &set.keys[start_of..end_of as usize];
            start_of = end_of as usize;
            if filter.expires_at_ms.is_some_and(|t| t < self.now_ms) {
                continue;
            }
            let mut best: Option<(u32, u32)> = None;
            for key in keys {
                let Some(occ) = self.occurrence(key) else { continue };
                let found = if key.whole_word { occ.first_whole } else { occ.first };
                if let Some((start, end)) = found
                    && best.is_none_or(|(s, _)| start < s)
                {
                    best = Some((start, end));
                }
            }
            if let Some((start, end)) = best {
                let matched = &self.text[start as usize..end as usize];
                let out = &mut self.out;
                out.push_str(if out.is_empty() { "[{\"filter\":" } else { ",{\"filter\":" });
                out.push_str(&filter.filter_json);
                out.push_str(",\"keyword_matches\":[");
                if matched.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
                    out.push_str(&quote(matched));
                } else {
                    out.push('"');
                    out.push_str(matched);
                    out.push('"');
                }
                out.push_str("],\"status_matches\":null}");
            }
        }
        if self.out.is_empty() {
            return None;
        }
        self.out.push(']');
        Some(&self.out)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(json: &str) -> Result<FilterList> {
        let mut bytes = json.as_bytes().to_vec();
        let doc = simd_json::to_borrowed_value(&mut bytes).unwrap();
        FilterList::from_value(&doc)
    }

    fn filter(keywords: &[(&str, bool)]) -> String {
        let kws: Vec<String> =
            keywords.iter().map(|(k, w)| format!("{{\"keyword\":{},\"whole_word\":{w}}}", quote(k))).collect();
        format!("{{\"id\":\"1\",\"title\":\"t\",\"keywords\":[{}]}}", kws.join(","))
    }

    /// The first match of a one-filter list on `text`, as keyword_matches[0].
    fn first_match(keywords: &[(&str, bool)], text: &str) -> Option<String> {
        let registry = Registry::default();
        let set = registry.intern(list(&format!("[{}]", filter(keywords))).unwrap());
        let mut event = registry.event(text.into(), 0);
        let out = event.evaluate(&set)?;
        let marker = "\"keyword_matches\":[";
        let i = out.find(marker)? + marker.len();
        let j = out[i..].find("],\"status_matches\"")?;
        let mut lit = out.as_bytes()[i..i + j].to_vec();
        Some(simd_json::to_borrowed_value(&mut lit).unwrap().as_str().unwrap().to_owned())
    }

    #[test]
    fn case_folding_follows_javascript_without_u() {
        assert_eq!(first_match(&[("ärger", false)], "So ein ÄRGER!").as_deref(), Some("ÄRGER"));
        assert_eq!(first_match(&[("Ärger", true)], "ärger").as_deref(), Some("ärger"));
        assert_eq!(first_match(&[("дюна", true)], "Фильм «ДЮНА»").as_deref(), Some("ДЮНА"));
        assert_eq!(first_match(&[("ДЮНА", false)], "дюна").as_deref(), Some("дюна"));
        assert_eq!(first_match(&[("ss", false)], "Straße"), None);
        assert_eq!(first_match(&[("s", false)], "ſ"), None);
        assert_eq!(first_match(&[("k", false)], "\u{212a}"), None);
        // Deseret capital and small letter: outside the BMP, no folding.
        assert_eq!(first_match(&[("\u{10400}", false)], "\u{10428}"), None);
        assert_eq!(fold_char('ǅ'), 'Ǆ');
    }

    #[test]
    fn whole_word_uses_ascii_word_characters() {
        assert_eq!(first_match(&[("cat", true)], "cat").as_deref(), Some("cat"));
        assert_eq!(first_match(&[("cat", true)], "concat"), None);
        assert_eq!(first_match(&[("cat", true)], "cats"), None);
        assert_eq!(first_match(&[("cat", true)], "(cat)").as_deref(), Some("cat"));
        assert_eq!(first_match(&[("cat", true)], "_cat"), None);
        assert_eq!(first_match(&[("cat", true)], "écat").as_deref(), Some("cat"));
        assert_eq!(first_match(&[("cat", true)], "catß").as_deref(), Some("cat"));
        // A side that is not a word character gets no boundary.
        assert_eq!(first_match(&[("#rust", true)], "a#rust").as_deref(), Some("#rust"));
        assert_eq!(first_match(&[("#rust", true)], "#rusty"), None);
        assert_eq!(first_match(&[("c++", true)], "abc++x").as_deref(), None);
        assert_eq!(first_match(&[("c++", true)], "c++x").as_deref(), Some("c++"));
        assert_eq!(first_match(&[("ärger", true)], "xärger").as_deref(), Some("ärger"));
        assert_eq!(first_match(&[("cat", false)], "concatenate").as_deref(), Some("cat"));
    }

    #[test]
    fn metacharacters_are_literal_and_first_match_wins() {
        assert_eq!(first_match(&[("a.b", false)], "axb a.b").as_deref(), Some("a.b"));
        assert_eq!(first_match(&[("(x|y)*", false)], "x (X|Y)*").as_deref(), Some("(X|Y)*"));
        assert_eq!(first_match(&[("$^\\[]{}?+", false)], "-$^\\[]{}?+-").as_deref(), Some("$^\\[]{}?+"));
        // Leftmost start first, then keyword order.
        assert_eq!(first_match(&[("bar", false), ("foo", false)], "foo bar").as_deref(), Some("foo"));
        assert_eq!(first_match(&[("foo", false), ("foobar", false)], "foobar").as_deref(), Some("foo"));
        assert_eq!(first_match(&[("foobar", false), ("foo", false)], "foobar").as_deref(), Some("foobar"));
        assert_eq!(first_match(&[("foo", true), ("foobar", false)], "foobar").as_deref(), Some("foobar"));
        assert_eq!(first_match(&[("cat", false)], ""), None);
    }

    #[test]
    fn results_keep_filter_order_skip_expired_and_share_sets() {
        let registry = Registry::default();
        let json = r#"[{"id":5,"title":"A","context":["home","public"],"expires_at":null,"filter_action":"hide","keywords":[{"keyword":"dune"}]},
            {"id":"6","title":"old","expires_at":"2020-01-01T00:00:00Z","keywords":[{"keyword":"dune"}]},
            {"id":"7","title":"B","context":[],"expires_at":"2030-01-01T00:00:00.5+01:00","keywords":[{"keyword":"spice","whole_word":true},{"keyword":"DUNE"}]}]"#;
        let a = registry.intern(list(json).unwrap());
        let b = registry.intern(list(json).unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(registry.distinct_sets(), 1);
        let now = parse_timestamp("2026-06-01T00:00:00Z").unwrap();
        let mut event = registry.event("Spice and Dune".into(), now);
        let out = event.evaluate(&a).unwrap();
        assert_eq!(
            out,
            r#"[{"filter":{"id":"5","title":"A","context":["home","public"],"expires_at":null,"filter_action":"hide"},"keyword_matches":["Dune"],"status_matches":null},{"filter":{"id":"7","title":"B","context":[],"expires_at":"2029-12-31T23:00:00.500Z","filter_action":"warn"},"keyword_matches":["Spice"],"status_matches":null}]"#
        );
        assert_eq!(registry.event("nothing".into(), now).evaluate(&a), None);
        drop((a, b));
        assert_eq!(registry.distinct_sets(), 0);
    }

    #[test]
    fn sets_added_after_the_matcher_are_searched_directly() {
        let registry = Registry::default();
        let old = registry.intern(list(&format!("[{}]", filter(&[("alpha", false)]))).unwrap());
        let matcher = registry.matcher();
        let new = registry.intern(list(&format!("[{}]", filter(&[("beta", true)]))).unwrap());
        let mut ev = EventMatches::new(matcher, "alpha beta".into(), 0);
        assert!(ev.evaluate(&old).unwrap().contains("\"alpha\""));
        assert!(ev.evaluate(&new).unwrap().contains("\"beta\""));
        // The next event rebuilds: both in one automaton.
        assert_eq!(registry.matcher().patterns.len(), 2);
        // Removing patterns does not rebuild; the next addition drops them
        // and reuses the freed slot under a new generation.
        drop(old);
        assert_eq!(registry.matcher().patterns.len(), 2);
        let third = registry.intern(list(&format!("[{}]", filter(&[("gamma", false)]))).unwrap());
        let mut ev = registry.event("alpha beta gamma".into(), 0);
        assert_eq!(ev.matcher.patterns.len(), 2);
        assert!(ev.evaluate(&third).unwrap().contains("\"gamma\""));
        assert!(ev.evaluate(&new).unwrap().contains("\"beta\""));
    }

    #[test]
    fn only_sets_owning_an_occurring_pattern_are_looked_at() {
        let registry = Registry::default();
        let one = |k: &str| list(&format!("[{}]", filter(&[(k, false)]))).unwrap();
        let (hit, miss) = (registry.intern(one("alpha")), registry.intern(one("beta")));
        let mut ev = registry.event("alpha".into(), 0);
        let (bits, _) = ev.candidates.clone().unwrap();
        assert_eq!(bits, [1 << hit.slot]);
        assert!(ev.evaluate(&hit).is_some() && ev.evaluate(&miss).is_none());
        // A set interned after the event (its pattern already in the
        // automaton) is not in the bitset and is evaluated in full.
        let late = registry.intern(list(&format!("[{}]", filter(&[("beta", false), ("alpha", true)]))).unwrap());
        assert!(ev.evaluate(&late).unwrap().contains("\"alpha\""));
        // Slots are reused once a set is gone.
        let slot = miss.slot;
        drop(miss);
        assert_eq!(registry.intern(one("gamma")).slot, slot);
    }

    #[test]
    fn many_patterns_are_found_across_bitset_words() {
        let registry = Registry::default();
        let sets: Vec<_> = (0..300)
            .map(|i| registry.intern(list(&format!("[{}]", filter(&[(&format!("w{i}x"), i % 2 == 0)]))).unwrap()))
            .collect();
        let occurring = [0, 63, 64, 65, 127, 128, 200, 299];
        let text: Vec<String> = occurring.iter().map(|i| format!("W{i}X")).collect();
        // w4x is whole-word only, w7x not.
        let mut event = registry.event(format!("{} w4xy aw7xb", text.join(" ")), 0);
        for (i, set) in sets.iter().enumerate() {
            let want = match i {
                7 => Some("\"keyword_matches\":[\"w7x\"]".to_string()),
                _ => occurring.contains(&i).then(|| format!("\"keyword_matches\":[\"W{i}X\"]")),
            };
            assert_eq!(
                event.evaluate(set).map(|r| r.contains(want.as_deref().unwrap_or("\0"))),
                want.map(|_| true),
                "{i}"
            );
        }
    }

    #[test]
    fn set_keys_pack_exactly_or_not_at_all() {
        for (slot, seq) in [(0, 1), (5, 77), ((1 << 22) - 1, (1 << 40) - 1)] {
            let key = SetKey { slot, seq };
            let packed = key.pack().expect("within the packed range");
            assert!(packed < 1 << 62);
            assert_eq!(SetKey::unpack(packed), key);
            assert_eq!(SetKey::unpack(packed | 3 << 62), key);
        }
        assert_eq!(SetKey { slot: 1 << 22, seq: 1 }.pack(), None);
        assert_eq!(SetKey { slot: 0, seq: 1 << 40 }.pack(), None);
    }

    #[test]
    fn per_set_values_do_not_pass_to_a_set_reusing_the_slot() {
        let registry = Registry::default();
        let one = |k: &str| list(&format!("[{}]", filter(&[(k, false)]))).unwrap();
        let (a, b) = (registry.intern(one("alpha")), registry.intern(one("beta")));
        let mut memo = PerSet::default();
        memo.insert(a.key(), 7);
        assert_eq!((memo.get(a.key()), memo.get(b.key())), (Some(7), None));
        let slot = a.slot;
        drop(a);
        let c = registry.intern(one("gamma"));
        assert_eq!(c.slot, slot);
        assert_eq!(memo.get(c.key()), None);
        memo.insert(c.key(), 3);
        assert_eq!(memo.get(c.key()), Some(3));
    }

    #[test]
    fn malformed_filters_are_named() {
        for (json, needle) in [
            (r#"{}"#, "keyword_filters must be an array"),
            (r#"[{"id":"5","title":"t"}]"#, "keyword_filters[0] (id \"5\"): keywords is missing"),
            (r#"[{"id":"5","keywords":[{"keyword":3}]}]"#, "(id \"5\"): keywords[0]: keyword must be a string"),
            (r#"[{"id":"5","keywords":[{"keyword":""}]}]"#, "must not be empty"),
            (r#"[{"id":"5","keywords":[],"expires_at":"tomorrow"}]"#, "(id \"5\"): expires_at \"tomorrow\""),
            (r#"[{"id":"5","keywords":[],"expires_at":"2026-02-30T00:00:00Z"}]"#, "expires_at"),
            (r#"[{"id":"5","keywords":[],"filter_action":"mute"}]"#, "(id \"5\"): filter_action"),
            (r#"[{"keywords":[]}]"#, "keyword_filters[0]: id is missing"),
            (r#"[{"id":"5","keywords":[],"contexts":[]}]"#, "unknown key \"contexts\""),
            (r#"[3]"#, "keyword_filters[0]: a filter must be an object"),
        ] {
            let err = list(json).unwrap_err();
            assert!(err.message().contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn timestamps_round_trip_like_javascript() {
        for (input, iso) in [
            ("2026-12-01T00:00:00.000Z", "2026-12-01T00:00:00.000Z"),
            ("2026-12-01 00:00:00+00:00", "2026-12-01T00:00:00.000Z"),
            ("2024-02-29T23:59:59.123456-02:30", "2024-03-01T02:29:59.123Z"),
            ("1969-12-31T23:59:59.9Z", "1969-12-31T23:59:59.900Z"),
        ] {
            assert_eq!(iso_string(parse_timestamp(input).unwrap()), iso, "{input}");
        }
        for bad in [
            "2026-12-01",
            "2026-13-01T00:00:00Z",
            "2026-12-01T00:00:00",
            "2026-12-01T24:00:00Z",
            "x026-12-01T00:00:00Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
