//! Small JSON helpers shared by the parsing stages: strict parsing with
//! distinct UTF-8 and JSON errors, id normalization, locating the raw bytes of
//! a top-level value (so payloads pass through untouched), and escaping.

use std::borrow::Cow;
use std::cell::RefCell;
use std::ops::Range;

use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;
use simd_json::tape::{Tape, Value as TapeValue};
use smallvec::SmallVec;

use crate::error::{Error, ErrorKind, Result};

pub(crate) mod scan;
#[cfg(target_arch = "x86_64")]
mod simd;

/// Parses `bytes` (copied into `scratch`, which simd-json rewrites in place)
/// and hands the document to `f`. UTF-8 is checked first so that the error
/// names the real problem. An object with a repeated key anywhere is refused
/// with an error of kind `repeat` (`duplicate key "K" in a.b[]`): the DOM
/// would keep one of the two values silently.
pub fn with_document<R>(
    bytes: &[u8],
    scratch: &mut Vec<u8>,
    repeat: ErrorKind,
    f: impl FnOnce(&Value<'_>) -> Result<R>,
) -> Result<R> {
    std::str::from_utf8(bytes).map_err(Error::utf8)?;
    scratch.clear();
    scratch.extend_from_slice(bytes);
    // simd-json's buffers are reused per thread: fresh ones for every small
    // document (a subscription) cost an aligned allocation and, interleaved
    // with long-lived allocations, left ~50 B of heap holes per subscriber.
    let mut buffers =
        DOC_BUFFERS.with(|b| b.borrow_mut().take()).unwrap_or_else(|| simd_json::Buffers::new(bytes.len()));
    let doc = simd_json::to_borrowed_value_with_buffers(scratch, &mut buffers);
    if bytes.len() <= 1 << 16 {
        DOC_BUFFERS.with(|b| *b.borrow_mut() = Some(buffers));
    }
    let doc = doc.map_err(|e| Error::json(describe_json_error(&e)))?;
    if let Some(message) = scan::first_repeated_key(bytes) {
        return Err(Error::new(repeat, message));
    }
    f(&doc)
}

thread_local! {
    static DOC_BUFFERS: RefCell<Option<simd_json::Buffers>> = const { RefCell::new(None) };
}

/// simd-json's error names are terse ("InternalError"); say what a person
/// would look for, and where.
fn describe_json_error(e: &simd_json::Error) -> String {
    use simd_json::ErrorType as T;
    let what = match e.error() {
        T::Eof => "unexpected end of input",
        T::TrailingData => "unexpected data after the JSON value",
        T::ExpectedObjectKey | T::KeyMustBeAString => "expected an object key (a trailing comma?)",
        T::ExpectedArrayContent => "expected an array element (a trailing comma?)",
        T::ExpectedObjectColon => "expected ':' after an object key",
        T::UnterminatedString => "unterminated string",
        T::InvalidEscape | T::InvalidUnicodeEscape | T::InvalidUnicodeCodepoint => "invalid escape in a string",
        T::InvalidNumber | T::InvalidExponent | T::Overflow => "invalid number",
        T::DepthLimitExceeded => "nesting too deep",
        T::NoStructure => "no JSON value",
        _ => "syntax error",
    };
    match e.character() {
        Some(c) => format!("{what} at byte {} (near {c:?})", e.index()),
        None => format!("{what} at byte {}", e.index()),
    }
}

/// Reused per thread by [`with_tape`]: simd-json's buffers and tape.
struct TapeScratch {
    input: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Option<Tape<'static>>,
}

thread_local! {
    static TAPE_SCRATCH: RefCell<Option<TapeScratch>> = const { RefCell::new(None) };
}

/// Parses `bytes` into simd-json's tape (no per-object allocation, unlike a
/// DOM) and hands its root to `f`. The hot path parses this way; buffers are
/// reused per thread. Re-entrant: a nested call gets fresh buffers.
pub fn with_tape<R>(bytes: &[u8], f: impl FnOnce(TapeValue<'_, '_>) -> Result<R>) -> Result<R> {
    std::str::from_utf8(bytes).map_err(Error::utf8)?;
    let mut scratch = TAPE_SCRATCH.with(|s| s.borrow_mut().take()).unwrap_or_else(|| TapeScratch {
        input: Vec::new(),
        buffers: simd_json::Buffers::new(bytes.len()),
        tape: None,
    });
    scratch.input.clear();
    scratch.input.extend_from_slice(bytes);
    let mut tape = scratch.tape.take().unwrap_or_else(Tape::null).reset();
    let result = match simd_json::fill_tape(&mut scratch.input, &mut scratch.buffers, &mut tape) {
        Ok(()) => f(tape.as_value()),
        Err(e) => Err(Error::json(describe_json_error(&e))),
    };
    scratch.tape = Some(tape.reset());
    // Don't keep a huge buffer alive for the thread's lifetime after one large event.
    if scratch.input.capacity() <= 1 << 20 {
        TAPE_SCRATCH.with(|s| *s.borrow_mut() = Some(scratch));
    }
    result
}

/// What routing reads from a parsed document. The scanner ([`scan`])
/// implements it for the product; simd-json's tape (feature `reference`) for
/// the differential tests, so both run the same routing code.
pub(crate) trait Json<'d>: Copy {
    /// The member `key` of an object (`None` for other values).
    fn get(self, key: &str) -> Option<Self>;
    fn is_object(self) -> bool;
    fn is_null(self) -> bool;
    /// An object's members in order, keys decoded (none for other values).
    fn members(self) -> impl Iterator<Item = (Cow<'d, str>, Self)>;
    /// An array's items (`None` for other values).
    fn items(self) -> Option<impl Iterator<Item = Self>>;
    /// A string's text, decoded.
    fn string(self) -> Option<Cow<'d, str>>;
    /// The first key an object repeats.
    fn repeated_key(self) -> Option<Cow<'d, str>> {
        repeated_key(self.members().map(|(k, _)| k))
    }
    /// An id: see [`id_text`].
    fn id(self) -> std::result::Result<Cow<'d, str>, String>;
    /// Where `value`, the member `key` of `self`, is in `input`, `self` being
    /// the root of the document `input`.
    fn raw_member(self, key: &str, value: Self, input: &[u8]) -> Option<Range<usize>>;
}

/// A way to parse a document into [`Json`] values.
pub(crate) trait Parser {
    type Value<'d>: Json<'d>;
    fn parse<R>(bytes: &[u8], f: impl FnOnce(Self::Value<'_>) -> Result<R>) -> Result<R>;
}

/// The product parser: the validating scanner.
pub(crate) struct Scan;

impl Parser for Scan {
    type Value<'d> = scan::Value<'d>;
    fn parse<R>(bytes: &[u8], f: impl FnOnce(scan::Value<'_>) -> Result<R>) -> Result<R> {
        scan::with_scan(bytes, f)
    }
}

impl<'d> Json<'d> for scan::Value<'d> {
    fn get(self, key: &str) -> Option<Self> {
        scan::Value::get(self, key)
    }
    fn is_object(self) -> bool {
        self.kind() == scan::Kind::Object
    }
    fn is_null(self) -> bool {
        self.kind() == scan::Kind::Null
    }
    fn members(self) -> impl Iterator<Item = (Cow<'d, str>, Self)> {
        scan::Value::members(self)
    }
    fn items(self) -> Option<impl Iterator<Item = Self>> {
        scan::Value::items(self)
    }
    fn string(self) -> Option<Cow<'d, str>> {
        self.str()
    }
    fn repeated_key(self) -> Option<Cow<'d, str>> {
        scan::Value::repeated_key(self)
    }
    fn id(self) -> std::result::Result<Cow<'d, str>, String> {
        scan::Value::id(self)
    }
    fn raw_member(self, _key: &str, value: Self, _input: &[u8]) -> Option<Range<usize>> {
        Some(value.range())
    }
}

/// The parser the scanner replaced: simd-json's tape, walked.
#[cfg(feature = "reference")]
pub(crate) struct TapeParser;

#[cfg(feature = "reference")]
#[derive(Clone, Copy)]
pub(crate) struct TapeJson<'d>(TapeValue<'d, 'd>);

#[cfg(feature = "reference")]
impl Parser for TapeParser {
    type Value<'d> = TapeJson<'d>;
    fn parse<R>(bytes: &[u8], f: impl FnOnce(TapeJson<'_>) -> Result<R>) -> Result<R> {
        with_tape(bytes, |v| f(TapeJson(v)))
    }
}

#[cfg(feature = "reference")]
impl<'d> Json<'d> for TapeJson<'d> {
    fn get(self, key: &str) -> Option<Self> {
        self.0.get(key).map(TapeJson)
    }
    fn is_object(self) -> bool {
        self.0.is_object()
    }
    fn is_null(self) -> bool {
        self.0.is_null()
    }
    fn members(self) -> impl Iterator<Item = (Cow<'d, str>, Self)> {
        let object = self.0.as_object();
        object.into_iter().flat_map(|o| o.iter().map(|(k, v)| (Cow::Borrowed(k), TapeJson(v))).collect::<Vec<_>>())
    }
    fn items(self) -> Option<impl Iterator<Item = Self>> {
        self.0.as_array().map(|a| a.iter().map(TapeJson).collect::<Vec<_>>().into_iter())
    }
    fn string(self) -> Option<Cow<'d, str>> {
        self.0.into_string().map(Cow::Borrowed)
    }
    fn id(self) -> std::result::Result<Cow<'d, str>, String> {
        id_text(&self.0).map(|id| Cow::Owned(id.into_string()))
    }
    fn raw_member(self, key: &str, _value: Self, input: &[u8]) -> Option<Range<usize>> {
        top_level_span(input, key)
    }
}

/// `text` with the lifetime of `input` when it lies in `input` (as the
/// scanner's strings without escapes do), else copied: what routing
/// extracts borrows the event's bytes instead of copying them.
pub(crate) fn in_input<'a>(input: &'a [u8], text: Cow<'_, str>) -> Cow<'a, str> {
    let (start, len) = (text.as_ptr() as usize, text.len());
    let base = input.as_ptr() as usize;
    match text {
        Cow::Borrowed(_) if start >= base && start + len <= base + input.len() => {
            let bytes = &input[start - base..start - base + len];
            // SAFETY: these are the very bytes of `text`, a `str`.
            Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) })
        }
        text => Cow::Owned(text.into_owned()),
    }
}

/// The first key that `keys` repeats, if any. Parsers disagree on which of
/// two equal keys wins (simd-json's lookup takes the first, `JSON.parse` the
/// last), so evroute refuses objects with a repeated key instead of picking.
/// Linear: a [`KeyFilter`] sends only likely repeats to the exact comparison.
pub fn repeated_key<K: AsRef<str>>(keys: impl Iterator<Item = K>) -> Option<K> {
    let mut seen: SmallVec<[K; 32]> = SmallVec::new();
    let mut filter = KeyFilter::default();
    for key in keys {
        if filter.insert(key.as_ref().as_bytes()) && seen.iter().any(|k| k.as_ref() == key.as_ref()) {
            return Some(key);
        }
        seen.push(key);
    }
    None
}

/// A 1024-bit filter on a hash of a key's length and its first and last
/// eight bytes (Mastodon's keys share lengths and ends, as
/// `followers_count` and `following_count`).
#[derive(Default)]
pub(crate) struct KeyFilter([u64; 16]);

impl KeyFilter {
    /// Adds `key`; returns whether it may have been added before.
    #[inline]
    pub(crate) fn insert(&mut self, key: &[u8]) -> bool {
        let word = |w: &[u8]| u64::from_le_bytes(w.try_into().expect("eight bytes"));
        let (head, tail) = match key.len() {
            8.. => (word(&key[..8]), word(&key[key.len() - 8..])),
            _ => (key.iter().fold(0, |h, &c| h << 8 | u64::from(c)), 0),
        };
        // The top bits of the product are the well-mixed ones.
        let h = ((head ^ tail.rotate_left(31) ^ key.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize;
        let (slot, bit) = (&mut self.0[h / 64], 1u64 << (h % 64));
        let seen = *slot & bit != 0;
        *slot |= bit;
        seen
    }
}

/// The error for a repeated key; `place` says which object, when not the top.
pub fn repeated_key_error(key: &str, place: &str) -> Error {
    if place.is_empty() {
        Error::event(format!("duplicate key {}", quote(key)))
    } else {
        Error::event(format!("duplicate key {} in {place}", quote(key)))
    }
}

/// An id as evroute writes it: `7` and `"7"` are both `7`.
/// Returns `Err` with a reason when the value cannot be an id.
pub fn id_text<V: ValueAsScalar + TypedValue>(value: &V) -> std::result::Result<Box<str>, String> {
    if let Some(s) = value.as_str() {
        return check_id(s).map(Box::from);
    }
    if let Some(n) = value.as_u64() {
        return Ok(n.to_string().into_boxed_str());
    }
    if let Some(n) = value.as_i64() {
        return Ok(n.to_string().into_boxed_str());
    }
    Err(format!("an id must be a string or an integer, got {}", type_name(value)))
}

/// Ids become parts of channel names, so they may not be empty, contain `:`
/// or control characters.
pub fn check_id(s: &str) -> std::result::Result<&str, String> {
    if s.is_empty() {
        return Err("an id must not be empty".into());
    }
    // Mastodon's ids are decimal numbers.
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(s);
    }
    // Control characters are C0, DEL and C1: in ASCII text, one byte test each.
    let bad_ascii = |b: u8| b == b':' || b < 0x20 || b == 0x7f;
    let bad = if s.is_ascii() { s.bytes().any(bad_ascii) } else { s.chars().any(|c| c == ':' || c.is_control()) };
    if bad {
        return Err(format!("id {s:?} contains ':' or a control character"));
    }
    Ok(s)
}

pub fn type_name<V: TypedValue>(value: &V) -> &'static str {
    match value.value_type() {
        ValueType::Null => "null",
        ValueType::Bool => "a boolean",
        ValueType::String => "a string",
        ValueType::Array => "an array",
        ValueType::Object => "an object",
        _ => "a number",
    }
}

/// Byte range of the value of the last top-level `key` in the JSON object
/// `input`. `input` must already be known to be valid JSON.
pub fn top_level_span(input: &[u8], key: &str) -> Option<Range<usize>> {
    let mut i = skip_ws(input, 0);
    if input.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let mut found = None;
    loop {
        i = skip_ws(input, i);
        match input.get(i)? {
            b'}' => return found,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return found,
        }
        let key_end = skip_string(input, i)?;
        let raw_key = &input[i + 1..key_end - 1];
        let matches = if raw_key.contains(&b'\\') {
            decode_string(&input[i..key_end]).as_deref() == Some(key)
        } else {
            raw_key == key.as_bytes()
        };
        i = skip_ws(input, key_end);
        if input.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(input, i + 1);
        let value_end = skip_value(input, i)?;
        if matches {
            found = Some(i..value_end);
        }
        i = value_end;
    }
}

/// Decodes one JSON string literal (with its quotes).
pub fn decode_string(literal: &[u8]) -> Option<String> {
    let mut scratch = literal.to_vec();
    let value = simd_json::to_borrowed_value(&mut scratch).ok()?;
    value.as_str().map(str::to_owned)
}

fn skip_ws(input: &[u8], mut i: usize) -> usize {
    while matches!(input.get(i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
        i += 1;
    }
    i
}

/// `input[i]` is `"`; returns the index just past the closing quote.
fn skip_string(input: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', input.get(i..)?)?;
        if input[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

fn skip_value(input: &[u8], i: usize) -> Option<usize> {
    match input.get(i)? {
        b'"' => skip_string(input, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match input.get(j)? {
                    b'"' => {
                        j = skip_string(input, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while let Some(&c) = input.get(j) {
                if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                    break;
                }
                j += 1;
            }
            Some(j)
        }
    }
}

/// Appends `s` as the inside of a JSON string literal, escaping exactly what
/// `JSON.stringify` escapes so that frames match Mastodon's byte for byte.
pub fn escape_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    let mut start = 0;
    for (i, b) in needing_escape(bytes) {
        out.extend_from_slice(&bytes[start..i]);
        match short_escape(b) {
            Some(escape) => out.extend_from_slice(&[b'\\', escape]),
            None => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// The length `escape_into` gives `s`, without writing it. Frames count a
/// whole payload this way once per event (the history sizes every retained
/// event), and a status is text full of quotes that seldom holds a control
/// character: so quotes and backslashes are counted in one pass that
/// compiles to vector code, and only text with a control character takes
/// the walk over the bytes that need escaping.
pub fn escaped_len(s: &str) -> usize {
    let bytes = s.as_bytes();
    let (mut quotes, mut control) = (0, false);
    // u8 counters over at most 255 bytes cannot overflow, and vectorize.
    for chunk in bytes.chunks(255) {
        let (mut q, mut c) = (0u8, 0u8);
        for &b in chunk {
            q += u8::from(b == b'"') + u8::from(b == b'\\');
            c |= u8::from(b < 0x20);
        }
        quotes += usize::from(q);
        control |= c != 0;
    }
    if !control {
        return bytes.len() + quotes;
    }
    bytes.len() + needing_escape(bytes).map(|(_, b)| if short_escape(b).is_some() { 1 } else { 5 }).sum::<usize>()
}

/// The letter after the backslash of a two-byte escape; `None` for a
/// control character written `\u00XX`.
fn short_escape(b: u8) -> Option<u8> {
    match b {
        b'"' | b'\\' => Some(b),
        b'\n' => Some(b'n'),
        b'\r' => Some(b'r'),
        b'\t' => Some(b't'),
        0x08 => Some(b'b'),
        0x0c => Some(b'f'),
        _ => None,
    }
}

/// The positions and values of the bytes that need escaping (control
/// characters, `"` and `\\`); runs of eight that need none are skipped a
/// word at a time.
fn needing_escape(bytes: &[u8]) -> impl Iterator<Item = (usize, u8)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        loop {
            while let Some(chunk) = bytes.get(i..i + 8) {
                if needs_escape(u64::from_le_bytes(chunk.try_into().expect("eight bytes"))) {
                    break;
                }
                i += 8;
            }
            let &b = bytes.get(i)?;
            i += 1;
            if b < 0x20 || b == b'"' || b == b'\\' {
                return Some((i - 1, b));
            }
        }
    })
}

/// Whether any of the eight bytes of `w` is a control character, `"` or `\\`.
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    (below(w, 0x20) | below(w ^ (ONES * b'"' as u64), 1) | below(w ^ (ONES * b'\\' as u64), 1)) != 0
}

/// `s` as a complete JSON string literal.
pub fn quote(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    escape_into(&mut out, s);
    out.push(b'"');
    String::from_utf8(out).expect("escaping keeps UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_finds_last_top_level_key_not_nested_ones() {
        let input = br#"{"a":{"payload":1}, "payload" : {"x":"}\"{"} ,"b":[1,2]}"#;
        let span = top_level_span(input, "payload").unwrap();
        assert_eq!(&input[span], br#"{"x":"}\"{"}"#);
        let dup = br#"{"payload":"1","payload":2}"#;
        assert_eq!(&dup[top_level_span(dup, "payload").unwrap()], b"2");
        assert_eq!(top_level_span(br#"{"event":"x"}"#, "payload"), None);
    }

    #[test]
    fn repeated_keys_are_found_wherever_they_are() {
        // Same length, first and last byte: the filter collides, the compare decides.
        assert_eq!(repeated_key(["axb", "ayb", "azb"].into_iter()), None);
        assert_eq!(repeated_key(["axb", "ayb", "axb"].into_iter()), Some("axb"));
        let many: Vec<String> = (0..300).map(|i| format!("key{i}")).collect();
        assert_eq!(repeated_key(many.iter().map(String::as_str)), None);
        for at in [0, 150, 299] {
            let with_repeat = many.iter().map(String::as_str).chain([many[at].as_str()]);
            assert_eq!(repeated_key(with_repeat), Some(many[at].as_str()));
        }
        assert_eq!(repeated_key(["", ""].into_iter()), Some(""));
    }

    #[test]
    fn in_input_borrows_only_text_inside_the_input() {
        let input = br#"{"a":"xyz"}"#;
        let inside = std::str::from_utf8(&input[6..9]).unwrap();
        assert!(matches!(in_input(input, Cow::Borrowed(inside)), Cow::Borrowed("xyz")));
        let elsewhere = String::from("xyz");
        assert!(matches!(in_input(input, Cow::Borrowed(elsewhere.as_str())), Cow::Owned(s) if s == "xyz"));
        assert!(matches!(in_input(input, Cow::Owned("xyz".into())), Cow::Owned(s) if s == "xyz"));
        let whole = std::str::from_utf8(input).unwrap();
        assert!(matches!(in_input(input, Cow::Borrowed(whole)), Cow::Borrowed(s) if s.len() == input.len()));
        assert!(matches!(in_input(&input[..5], Cow::Borrowed(inside)), Cow::Owned(_)));
    }

    #[test]
    fn span_matches_escaped_keys() {
        let input = br#"{"p\u0061yload":"abc"}"#;
        assert_eq!(&input[top_level_span(input, "payload").unwrap()], br#""abc""#);
    }

    #[test]
    fn escaping_matches_json_stringify() {
        assert_eq!(quote("a\"b\\c\nd\u{1}é\u{2028}"), "\"a\\\"b\\\\c\\nd\\u0001é\u{2028}\"");
        // Every byte that needs escaping, at every offset of the word-at-a-time scan.
        for special in ['"', '\\', '\n', '\u{0}', '\u{1f}', '\u{7f}', 'é'] {
            for at in 0..20 {
                let s: String = (0..20).map(|i| if i == at { special } else { 'x' }).collect();
                let slow: String = s
                    .chars()
                    .map(|c| match c {
                        '"' => "\\\"".to_string(),
                        '\\' => "\\\\".to_string(),
                        '\n' => "\\n".to_string(),
                        c if (c as u32) < 0x20 => format!("\\u{:04x}", c as u32),
                        c => c.to_string(),
                    })
                    .collect();
                assert_eq!(quote(&s), format!("\"{slow}\""), "{special:?} at {at}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn escaped_len_is_the_length_escape_into_writes(
            s in "(?s:.{0,40})|[\\x00-\\x20\"\\\\a-z]{0,40}|[\\x00-\\x20\"\\\\a-z{}:,é]{0,600}|[\"\\\\a]{250,700}",
        ) {
            let mut out = Vec::new();
            escape_into(&mut out, &s);
            proptest::prop_assert_eq!(escaped_len(&s), out.len());
        }
    }

    #[test]
    fn ids_accept_strings_and_integers() {
        let mut s = br#"[7,"7","x:y",1.5]"#.to_vec();
        let v = simd_json::to_borrowed_value(&mut s).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(&*id_text(&a[0]).unwrap(), "7");
        assert_eq!(&*id_text(&a[1]).unwrap(), "7");
        assert!(id_text(&a[2]).unwrap_err().contains("':'"));
        assert!(id_text(&a[3]).is_err());
    }

    #[test]
    fn ids_refuse_colons_and_every_control_character() {
        for bad in ["a:b", "1\n", "\u{1f}", "x\u{7f}", "é\u{85}", "\u{9f}é", "é:"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        for good in ["108914327388663283", "é1", "a\u{a0}b", "~"] {
            assert_eq!(check_id(good), Ok(good));
        }
    }
}
