//! The validating scanner behind event parsing: checks the whole document
//! (RFC 8259 grammar, escapes, surrogate pairs, control characters, numbers in
//! range, nesting up to simd-json's 1024 levels; UTF-8 is checked before, in
//! bulk) and records only the containers routing may read, as spans into the
//! input. Strings are never copied or unescaped here: a value is decoded when
//! routing asks for it.
//!
//! Two scanners give the same documents. On x86-64 with AVX2 and PCLMULQDQ
//! (detected at run time), [`super::simd`] classifies 64-byte blocks into
//! token positions and [`walk`] checks the grammar over those positions only:
//! whitespace and string bodies are passed over by bitmask (no work per byte
//! or per token beyond the classification), escapes are checked
//! where they are. Everywhere else, and to word the error whenever the SIMD
//! scanner refuses an input, the portable scanner goes token by token and
//! skips string bodies sixteen bytes at a time.
//!
//! Which containers are recorded is decided by key as the scan goes: the root,
//! any object or array under a recorded object whose key routing follows
//! (`payload`, `account`, `tags`, ...), and the items of a recorded array, down
//! to depth 4 (`data.status.tags[]` is the deepest place routing reads). The
//! accessors of [`Value`] see everything else as leaves.

use std::borrow::Cow;
use std::cell::RefCell;

use crate::error::{Error, Result};

#[cfg(target_arch = "x86_64")]
use super::simd;

/// simd-json's default depth limit, kept so that the same documents parse.
const MAX_DEPTH: usize = 1024;
/// The deepest container routing reads (`data.status.tags[]`).
const RECORD_DEPTH: usize = 4;
const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    // In the order of `KINDS`.
    Null,
    Bool,
    /// An integer literal: no fraction, no exponent.
    Int,
    Float,
    Str,
    /// A string with at least one backslash escape.
    EscapedStr,
    Array,
    Object,
}

/// A value's bytes in the input (strings with their quotes), its kind and,
/// for a recorded container, its node. Packed in two words so that the scan
/// builds it in registers and stores it whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    /// start | end << 32
    pos: u64,
    /// node | kind << 32
    info: u64,
}

const KINDS: [Kind; 8] =
    [Kind::Null, Kind::Bool, Kind::Int, Kind::Float, Kind::Str, Kind::EscapedStr, Kind::Array, Kind::Object];

impl Span {
    #[inline(always)]
    fn new(start: usize, end: usize, kind: Kind, node: u32) -> Span {
        Span { pos: start as u64 | (end as u64) << 32, info: u64::from(node) | (kind as u64) << 32 }
    }
    fn start(self) -> u32 {
        self.pos as u32
    }
    fn end(self) -> u32 {
        (self.pos >> 32) as u32
    }
    fn kind(self) -> Kind {
        KINDS[(self.info >> 32) as usize & 7]
    }
    fn node(self) -> u32 {
        self.info as u32
    }
}

/// A member of a recorded container; array items have an empty key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Member {
    value: Span,
    /// The key's bytes between the quotes: start | end << 32, and the top bit
    /// set when the key has an escape.
    key: u64,
}

const ESCAPED_KEY: u64 = 1 << 63;

impl Member {
    fn key_range(self) -> std::ops::Range<usize> {
        self.key as u32 as usize..(self.key >> 32 & 0x7fff_ffff) as usize
    }
    fn key_escaped(self) -> bool {
        self.key & ESCAPED_KEY != 0
    }
}

/// A recorded container: its members are `members[first..first + len]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Node {
    first: u32,
    len: u32,
    /// An object that may repeat a key ([`SeenKeys`]); `false` is certain.
    suspect: bool,
}

/// An open container during the scan.
#[derive(Clone, Copy)]
struct Frame {
    object: bool,
    recorded: bool,
    /// Where its members start in the pending stack.
    base: u32,
    node: u32,
    start: u32,
    /// The key of the member being scanned (objects), as in [`Member`].
    key: u64,
    /// Whether the items of this array are recorded when they are containers.
    follow_items: bool,
    /// As [`Node::suspect`], so far.
    suspect: bool,
}

const _: () = assert!(std::mem::size_of::<Member>() == 24);

/// Buffers reused per thread by [`with_scan`].
#[derive(Default)]
struct Scratch {
    nodes: Vec<Node>,
    members: Vec<Member>,
    pending: Vec<Member>,
    frames: Vec<Frame>,
    seen: SeenKeys,
}

/// The buffers of one scan, from [`Scratch::start`].
struct Buffers<'s> {
    /// The recorded nodes and members, moved into the `Doc`.
    nodes: Vec<Node>,
    members: Vec<Member>,
    pending: &'s mut Vec<Member>,
    frames: &'s mut Vec<Frame>,
    seen: &'s mut SeenKeys,
}

impl Scratch {
    /// Empty buffers for one scan.
    fn start(&mut self) -> Buffers<'_> {
        let (mut nodes, mut members) = (std::mem::take(&mut self.nodes), std::mem::take(&mut self.members));
        nodes.clear();
        members.clear();
        self.pending.clear();
        self.frames.clear();
        self.seen.clear();
        Buffers { nodes, members, pending: &mut self.pending, frames: &mut self.frames, seen: &mut self.seen }
    }
}

const SEEN_BITS: u32 = 13;

/// The keys of the recorded objects of one scan, as slots of a table hashed
/// by key and object: a key whose slot is already taken may repeat an
/// earlier key of its object, and marks the object suspect; an object that
/// repeats a key is always suspect. So the duplicate-key check
/// ([`Value::repeated_key`]) compares keys only in suspect objects (about
/// one document in five or fewer, by chance), and the hashing runs in the
/// walk, beside its mispredicted branches, instead of in a second pass.
/// A slot holds the scan's generation, so the table is cleared only when
/// the generation wraps.
struct SeenKeys {
    slots: Box<[u8; 1 << SEEN_BITS]>,
    generation: u8,
}

impl Default for SeenKeys {
    fn default() -> SeenKeys {
        SeenKeys {
            slots: vec![0; 1 << SEEN_BITS].into_boxed_slice().try_into().expect("the table's size"),
            generation: 0,
        }
    }
}

impl SeenKeys {
    fn clear(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.slots.fill(0);
            self.generation = 1;
        }
    }

    /// Records `value` as the next member of the recorded container `top`;
    /// for an object, takes the slot of its key.
    #[inline(always)]
    fn record(&mut self, b: &[u8], top: &mut Frame, value: Span, pending: &mut Vec<Member>) {
        if !top.object {
            pending.push(Member { value, key: 0 });
            return;
        }
        let m = Member { value, key: top.key };
        let h = key_hash(b, m.key_range(), u64::from(top.node) << 32);
        let slot = &mut self.slots[(h >> (64 - SEEN_BITS)) as usize];
        let taken = *slot == self.generation;
        *slot = self.generation;
        // Escaped keys are compared decoded, not as hashed: their object is suspect.
        top.suspect |= taken | m.key_escaped();
        pending.push(m);
    }
}

/// The literal that starts with `c` (`t`, `f` or `n`) and its kind.
fn literal(c: u8) -> (&'static [u8], Kind) {
    match c {
        b't' => (b"true", Kind::Bool),
        b'f' => (b"false", Kind::Bool),
        _ => (b"null", Kind::Null),
    }
}

thread_local! {
    /// One per nesting level in use (a status in a string payload is
    /// scanned inside the scan of its message).
    static SCRATCH: RefCell<Vec<Scratch>> = const { RefCell::new(Vec::new()) };
}

/// A scanned document: the input and the recorded containers.
pub(crate) struct Doc<'a> {
    input: &'a [u8],
    nodes: Vec<Node>,
    members: Vec<Member>,
    root: Span,
}

/// Checks `bytes` (UTF-8, then JSON) and hands the scanned document's root to
/// `f`. Buffers are reused per thread; a nested call gets fresh ones.
pub(crate) fn with_scan<R>(bytes: &[u8], f: impl FnOnce(Value<'_>) -> Result<R>) -> Result<R> {
    check_utf8(bytes)?;
    pooled(|scratch| {
        scan(bytes, scratch, false).and_then(|doc| {
            let r = f(Value { doc: &doc, span: doc.root });
            scratch.nodes = doc.nodes;
            scratch.members = doc.members;
            r
        })
    })
}

/// Runs `f` with this thread's scratch buffers for the current nesting level.
fn pooled<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    let mut scratch = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    let result = f(&mut scratch);
    // Don't keep huge buffers alive for the thread's lifetime after one large event.
    if scratch.members.capacity() <= 1 << 14 && scratch.pending.capacity() <= 1 << 14 {
        SCRATCH.with(|s| s.borrow_mut().push(scratch));
    }
    result
}

/// UTF-8 first, so that the error names the real problem. `simdutf8` is fast
/// on the common valid case; `std` says where invalid input goes wrong.
pub(crate) fn check_utf8(bytes: &[u8]) -> Result<()> {
    if simdutf8::basic::from_utf8(bytes).is_err() {
        return Err(Error::utf8(std::str::from_utf8(bytes).expect_err("simdutf8 and std disagree")));
    }
    Ok(())
}

/// The first repeated key of any object in `bytes` (UTF-8 and JSON already
/// checked), as `duplicate key "K"` with the object's path (`a.b[]`), in
/// document order.
pub(crate) fn first_repeated_key(bytes: &[u8]) -> Option<String> {
    pooled(|scratch| {
        let doc = scan(bytes, scratch, true).ok()?;
        let mut path = String::new();
        let found = doc.repeat_below(doc.root, &mut path);
        (scratch.nodes, scratch.members) = (doc.nodes, doc.members);
        found
    })
}

/// Where the SIMD scanner and the portable scanner disagree on `bytes`
/// (valid UTF-8 or not), recording what events need and recording every
/// container: the SIMD scanner must give the same document for every input
/// the portable one accepts, and refuse every other. `Err` when this CPU
/// cannot run the SIMD scanner.
#[cfg(feature = "reference")]
pub fn scanner_paths_differ(bytes: &[u8]) -> std::result::Result<Option<String>, &'static str> {
    #[cfg(target_arch = "x86_64")]
    if let Some(widest) = simd::widest() {
        if check_utf8(bytes).is_err() {
            return Ok(None);
        }
        // Every classification this CPU runs: the narrower ones are what other CPUs run.
        for width in [simd::Width::Avx2, simd::Width::Avx512].into_iter().filter(|&w| w <= widest) {
            for record_all in [false, true] {
                let (mut a, mut b) = (Scratch::default(), Scratch::default());
                let simd = scan_simd_with(bytes, &mut a, record_all, width).map(|d| (d.nodes, d.members, d.root));
                let portable = scan_portable(bytes, &mut b, record_all).map(|d| (d.nodes, d.members, d.root));
                let same = match (&simd, &portable) {
                    (Some(s), Ok(p)) => s == p,
                    (None, Err(_)) => true,
                    _ => false,
                };
                if !same {
                    return Ok(Some(format!(
                        "{width:?}, record_all {record_all}: SIMD {simd:?}, portable {portable:?}"
                    )));
                }
            }
        }
        return Ok(None);
    }
    Err("the SIMD scanner needs x86-64 with AVX2 and PCLMULQDQ")
}

/// A scan failure: what, and where.
fn json_error(input: &[u8], at: usize, what: &str) -> Error {
    let near = (1..=4).find_map(|n| std::str::from_utf8(input.get(at..at + n)?).ok()).and_then(|s| s.chars().next());
    match near {
        Some(c) => Error::json(format!("{what} at byte {at} (near {c:?})")),
        None => Error::json(format!("{what} at byte {at}")),
    }
}

#[inline(always)]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    i
}

/// Scans with the SIMD scanner when the CPU has it, else (and to word the
/// error when the SIMD scanner refuses the input) with the portable one.
fn scan<'a>(input: &'a [u8], scratch: &mut Scratch, record_all: bool) -> Result<Doc<'a>> {
    if let Some(doc) = scan_simd(input, scratch, record_all) {
        return Ok(doc);
    }
    scan_portable(input, scratch, record_all)
}

/// The SIMD scanner: the grammar ([`walk`]) over the token positions of
/// [`simd::Tokens`], with the widest block classification the CPU runs.
/// `None` when the CPU lacks AVX2 or PCLMULQDQ, and for every input the
/// portable scanner refuses; for every other input, the same document as the
/// portable scanner.
#[cfg(target_arch = "x86_64")]
fn scan_simd<'a>(input: &'a [u8], scratch: &mut Scratch, record_all: bool) -> Option<Doc<'a>> {
    scan_simd_with(input, scratch, record_all, simd::widest()?)
}

#[cfg(target_arch = "x86_64")]
fn scan_simd_with<'a>(input: &'a [u8], scratch: &mut Scratch, record_all: bool, width: simd::Width) -> Option<Doc<'a>> {
    walk(input, &mut simd::Blocks::new(input, width)?.tokens(), scratch, record_all)
}

#[cfg(not(target_arch = "x86_64"))]
fn scan_simd<'a>(_: &'a [u8], _: &mut Scratch, _: bool) -> Option<Doc<'a>> {
    None
}

/// The portable scanner's loop over token positions instead of bytes:
/// whitespace has no positions and string bodies only their escapes. Bytes
/// between two positions are whitespace, string bodies, or the rest of a
/// number or literal, which is checked to end at whitespace or a structural
/// character.
#[cfg(target_arch = "x86_64")]
fn walk<'a>(input: &'a [u8], t: &mut simd::Tokens<'_, '_>, scratch: &mut Scratch, record_all: bool) -> Option<Doc<'a>> {
    let Buffers { mut nodes, mut members, pending, frames, seen } = scratch.start();
    let b = input;
    let mut i = t.next();
    let root;
    'value: loop {
        let c = *b.get(i)?;
        let mut done = match c {
            b'{' | b'[' => {
                if frames.len() >= MAX_DEPTH {
                    return None;
                }
                let object = c == b'{';
                open(b, i, object, frames, &mut nodes, pending.len(), record_all);
                let j = t.next();
                if *b.get(j)? == if object { b'}' } else { b']' } {
                    close(frames, pending, &mut nodes, &mut members, j + 1)
                } else {
                    i = if object { walk_key(b, j, frames.last_mut()?, t)? } else { j };
                    continue 'value;
                }
            }
            b'"' => {
                let (end, escaped) = walk_string(b, t)?;
                Span::new(i, end, if escaped { Kind::EscapedStr } else { Kind::Str }, NONE)
            }
            b't' => walk_literal(b, i, b"true", Kind::Bool)?,
            b'f' => walk_literal(b, i, b"false", Kind::Bool)?,
            b'n' => walk_literal(b, i, b"null", Kind::Null)?,
            b'-' | b'0'..=b'9' => {
                let (end, kind) = number(b, i, &|at, what| json_error(b, at, what)).ok()?;
                if !ends_token(b, end) {
                    return None;
                }
                Span::new(i, end, kind, NONE)
            }
            _ => return None,
        };
        loop {
            let Some(top) = frames.last_mut() else {
                root = done;
                break 'value;
            };
            if top.recorded {
                seen.record(b, top, done, pending);
            }
            let j = t.next();
            match (*b.get(j)?, top.object) {
                (b',', object) => {
                    let v = t.next();
                    i = if object { walk_key(b, v, top, t)? } else { v };
                    continue 'value;
                }
                (b'}', true) | (b']', false) => done = close(frames, pending, &mut nodes, &mut members, j + 1),
                _ => return None,
            }
        }
    }
    (t.next() == b.len() && t.strings_ok()).then_some(Doc { input, nodes, members, root })
}

/// Whether a number or literal that ends at b[i] ends there: the next
/// byte, if any, is whitespace or structural (anything else, the portable
/// scanner refuses).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn ends_token(b: &[u8], i: usize) -> bool {
    b.get(i).is_none_or(|&c| is_ws(c) || matches!(c, b',' | b':' | b'[' | b']' | b'{' | b'}'))
}

/// The literal `word` at b[i], whose first byte was read: its span, compared
/// as a word (not with `memcmp`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn walk_literal(b: &[u8], i: usize, word: &[u8], kind: Kind) -> Option<Span> {
    let end = i + word.len();
    let four = |bytes: &[u8]| u32::from_le_bytes(bytes.try_into().expect("four bytes"));
    let found = b.get(end - 4..end).is_some_and(|tail| four(tail) == four(&word[word.len() - 4..]));
    (found && ends_token(b, end)).then(|| Span::new(i, end, kind, NONE))
}

/// The string whose opening quote was the last position, from the ones that
/// follow (its escapes, then its closing quote): the index past the closing
/// quote and whether it has escapes, as [`string`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn walk_string(b: &[u8], t: &mut simd::Tokens<'_, '_>) -> Option<(usize, bool)> {
    let mut j = t.next();
    if *b.get(j)? == b'"' {
        return Some((j + 1, false));
    }
    // Escapes: a surrogate pair's second `\u` has a position of its own,
    // already checked with the first.
    let mut checked = 0;
    loop {
        match *b.get(j)? {
            b'"' => return (checked <= j).then_some((j + 1, true)),
            b'\\' if j >= checked => {
                checked = match b.get(j + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => j + 2,
                    _ => escape(b, j, &|at, what| json_error(b, at, what)).ok()?,
                }
            }
            b'\\' => {}
            _ => return None,
        }
        j = t.next();
    }
}

/// Reads `"key" :` at the position b[i] into `frame`, as [`key`]; returns
/// where the value starts.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn walk_key(b: &[u8], i: usize, frame: &mut Frame, t: &mut simd::Tokens<'_, '_>) -> Option<usize> {
    if *b.get(i)? != b'"' {
        return None;
    }
    let (end, escaped) = walk_string(b, t)?;
    frame.key = (i + 1) as u64 | ((end - 1) as u64) << 32 | if escaped { ESCAPED_KEY } else { 0 };
    let colon = t.next();
    if *b.get(colon)? != b':' {
        return None;
    }
    Some(t.next())
}

/// The scanner for every CPU: one pass over the bytes, token by token.
fn scan_portable<'a>(input: &'a [u8], scratch: &mut Scratch, record_all: bool) -> Result<Doc<'a>> {
    if input.len() >= 1 << 31 {
        return Err(Error::json("document too large"));
    }
    let Buffers { mut nodes, mut members, pending, frames, seen } = scratch.start();
    let b = input;
    let err = |at: usize, what: &str| json_error(input, at, what);
    let mut i = skip_ws(b, 0);
    if i == b.len() {
        return Err(err(i, "no JSON value"));
    }
    let root;
    'value: loop {
        // A value starts at b[i] (whitespace skipped).
        let Some(&c) = b.get(i) else { return Err(err(i, "unexpected end of input")) };
        let mut done = match c {
            b'{' | b'[' => {
                if frames.len() >= MAX_DEPTH {
                    return Err(err(i, "nesting too deep"));
                }
                let object = c == b'{';
                open(b, i, object, frames, &mut nodes, pending.len(), record_all);
                i = skip_ws(b, i + 1);
                if b.get(i) == Some(if object { &b'}' } else { &b']' }) {
                    i += 1;
                    close(frames, pending, &mut nodes, &mut members, i)
                } else {
                    if object {
                        i = key(b, i, frames.last_mut().expect("just pushed"), &err)?;
                    }
                    continue 'value;
                }
            }
            b'"' => {
                let (end, escaped) = string(b, i, &err)?;
                let kind = if escaped { Kind::EscapedStr } else { Kind::Str };
                let span = Span::new(i, end, kind, NONE);
                i = end;
                span
            }
            b't' | b'f' | b'n' => {
                let (word, kind) = literal(c);
                if !b[i..].starts_with(word) {
                    return Err(err(i, "invalid literal"));
                }
                let span = Span::new(i, i + word.len(), kind, NONE);
                i += word.len();
                span
            }
            b'-' | b'0'..=b'9' => {
                let (end, kind) = number(b, i, &err)?;
                let span = Span::new(i, end, kind, NONE);
                i = end;
                span
            }
            _ => return Err(err(i, "expected a JSON value")),
        };
        // `done` ended at i: attach it to its container, then go on to the
        // next member or close the container (which ends a value in turn).
        loop {
            let Some(top) = frames.last_mut() else {
                root = done;
                break 'value;
            };
            if top.recorded {
                seen.record(b, top, done, pending);
            }
            i = skip_ws(b, i);
            match (b.get(i), top.object) {
                (Some(b','), object) => {
                    i = skip_ws(b, i + 1);
                    if object {
                        i = key(b, i, top, &err)?;
                    }
                    continue 'value;
                }
                (Some(b'}'), true) | (Some(b']'), false) => {
                    i += 1;
                    done = close(frames, pending, &mut nodes, &mut members, i);
                }
                (None, _) => return Err(err(i, "unexpected end of input")),
                (Some(_), true) => return Err(err(i, "expected ',' or '}'")),
                (Some(_), false) => return Err(err(i, "expected ',' or ']'")),
            }
        }
    }
    let end = skip_ws(b, i);
    if end != b.len() {
        return Err(err(end, "unexpected data after the JSON value"));
    }
    Ok(Doc { input, nodes, members, root })
}

/// Pushes the container (`{` when `object`, else `[`) that starts at b[i],
/// recorded or not as the module documentation says.
#[inline(always)]
fn open(
    b: &[u8],
    i: usize,
    object: bool,
    frames: &mut Vec<Frame>,
    nodes: &mut Vec<Node>,
    pending: usize,
    record_all: bool,
) {
    let (recorded, follow_items) = match frames.last() {
        None => (true, false),
        Some(p) if p.object && p.recorded => {
            let follow = if frames.len() <= RECORD_DEPTH || record_all { followed(b, p.key) } else { None };
            (record_all || follow.is_some(), !object && follow == Some(true))
        }
        Some(p) => (record_all || p.recorded && frames.len() <= RECORD_DEPTH && p.follow_items, false),
    };
    let node = if recorded {
        nodes.push(Node::default());
        (nodes.len() - 1) as u32
    } else {
        NONE
    };
    frames.push(Frame {
        object,
        recorded,
        base: pending as u32,
        node,
        start: i as u32,
        key: 0,
        follow_items,
        suspect: false,
    });
}

/// Pops the innermost container, which ended at `end`; files its members
/// when it is recorded.
#[inline(always)]
fn close(
    frames: &mut Vec<Frame>,
    pending: &mut Vec<Member>,
    nodes: &mut [Node],
    members: &mut Vec<Member>,
    end: usize,
) -> Span {
    let f = frames.pop().expect("an open container");
    if f.recorded {
        file(&f, pending, nodes, members);
    }
    let kind = if f.object { Kind::Object } else { Kind::Array };
    Span::new(f.start as usize, end, kind, f.node)
}

/// Moves the members of the recorded container `f` from `pending` to its node.
#[inline(never)]
fn file(f: &Frame, pending: &mut Vec<Member>, nodes: &mut [Node], members: &mut Vec<Member>) {
    let base = f.base as usize;
    nodes[f.node as usize] =
        Node { first: members.len() as u32, len: (pending.len() - base) as u32, suspect: f.suspect };
    members.extend_from_slice(&pending[base..]);
    pending.truncate(base);
}

/// Reads `"key" :` at b[i] into `frame`; returns where the value starts.
#[inline(always)]
fn key(b: &[u8], i: usize, frame: &mut Frame, err: &impl Fn(usize, &str) -> Error) -> Result<usize> {
    if b.get(i) != Some(&b'"') {
        return Err(if i == b.len() {
            err(i, "unexpected end of input")
        } else {
            err(i, "expected an object key (a trailing comma?)")
        });
    }
    let (end, escaped) = string(b, i, err)?;
    frame.key = (i + 1) as u64 | ((end - 1) as u64) << 32 | if escaped { ESCAPED_KEY } else { 0 };
    let colon = skip_ws(b, end);
    if b.get(colon) != Some(&b':') {
        return Err(err(colon, "expected ':' after an object key"));
    }
    Ok(skip_ws(b, colon + 1))
}

/// Whether routing follows the member `key` (packed as in [`Member`]) into
/// its object or array value and, if so, whether it reads the items of an
/// array there beyond their count (`media_attachments` and `medias` are only
/// checked for emptiness).
fn followed(b: &[u8], key: u64) -> Option<bool> {
    let m = Member { value: Span::new(0, 0, Kind::Null, NONE), key };
    let raw = &b[m.key_range()];
    let decoded;
    let key = if m.key_escaped() {
        decoded = decode(raw)?;
        decoded.as_bytes()
    } else {
        raw
    };
    // Told apart by length and first byte, so that most keys cost no compare.
    match (key.len(), *key.first()?) {
        (7, b'p') if key == b"payload" => Some(true),
        (4, b'd') if key == b"data" => Some(true),
        (6, b's') if key == b"status" => Some(true),
        (7, b'a') if key == b"account" => Some(true),
        (6, b'r') if key == b"reblog" => Some(true),
        (8, b'm') if key == b"mentions" => Some(true),
        (4, b't') if key == b"tags" => Some(true),
        (10, b'r') if key == b"recipients" => Some(true),
        (5, b'l') if key == b"lists" => Some(true),
        (17, b'm') if key == b"media_attachments" => Some(false),
        (6, b'm') if key == b"medias" => Some(false),
        _ => None,
    }
}

/// The string starting at b[i] (`"`): returns the index past its closing
/// quote and whether it has escapes. Checks escapes, `\u` surrogate pairs
/// and refuses unescaped control characters.
#[inline(always)]
fn string(b: &[u8], i: usize, err: &impl Fn(usize, &str) -> Error) -> Result<(usize, bool)> {
    let mut j = find_special(b, i + 1);
    if j < b.len() && b[j] == b'"' {
        return Ok((j + 1, false));
    }
    let mut escaped = false;
    loop {
        match b.get(j) {
            None => return Err(err(i, "unterminated string")),
            Some(b'"') => return Ok((j + 1, escaped)),
            Some(b'\\') => {
                escaped = true;
                j = escape(b, j, err)?;
            }
            Some(_) => return Err(err(j, "control character in a string (escape it)")),
        }
        j = find_special(b, j);
    }
}

/// The escape at b[i] (`\\`): returns the index past it.
fn escape(b: &[u8], i: usize, err: &impl Fn(usize, &str) -> Error) -> Result<usize> {
    match b.get(i + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
        Some(b'u') => {
            let unit = hex4(b, i + 2).ok_or_else(|| err(i, "invalid escape in a string"))?;
            match unit {
                0xD800..=0xDBFF => {
                    let low = (b.get(i + 6..i + 8) == Some(b"\\u")).then(|| hex4(b, i + 8)).flatten();
                    match low {
                        Some(0xDC00..=0xDFFF) => Ok(i + 12),
                        _ => Err(err(i, "unpaired surrogate in a string")),
                    }
                }
                0xDC00..=0xDFFF => Err(err(i, "unpaired surrogate in a string")),
                _ => Ok(i + 6),
            }
        }
        None => Err(err(i, "unterminated string")),
        Some(_) => Err(err(i, "invalid escape in a string")),
    }
}

fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let digits = b.get(i..i + 4)?;
    digits.iter().try_fold(0u32, |n, &d| Some(n << 4 | (d as char).to_digit(16)?))
}

/// The index of the first `"`, `\\` or control character at or after `i`
/// (`b.len()` if none).
#[inline(always)]
fn find_special(b: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of the x86-64 baseline; loads are unaligned
        // and stay within `b` (i + 16 <= b.len()).
        unsafe {
            use std::arch::x86_64::*;
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let control = _mm_set1_epi8(0x1f);
            while i + 16 <= b.len() {
                let x = _mm_loadu_si128(b.as_ptr().add(i).cast());
                let hits = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)),
                    _mm_cmpeq_epi8(_mm_max_epu8(x, control), control),
                );
                let mask = _mm_movemask_epi8(hits);
                if mask != 0 {
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    while let Some(chunk) = b.get(i..i + 8) {
        if super::needs_escape(u64::from_le_bytes(chunk.try_into().expect("eight bytes"))) {
            break;
        }
        i += 8;
    }
    while i < b.len() && !matches!(b[i], b'"' | b'\\' | 0..=0x1f) {
        i += 1;
    }
    i
}

/// The number starting at b[i]: RFC 8259 grammar; integers must fit `u64`
/// (or `i64` when negative) and other numbers be finite, as simd-json wants.
fn number(b: &[u8], i: usize, err: &impl Fn(usize, &str) -> Error) -> Result<(usize, Kind)> {
    let digits = |mut j: usize| {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        j
    };
    let negative = b[i] == b'-';
    let int_start = i + usize::from(negative);
    let int_end = match b.get(int_start) {
        Some(b'0') => int_start + 1,
        Some(b'1'..=b'9') => digits(int_start + 1),
        _ => return Err(err(i, "invalid number")),
    };
    let mut j = int_end;
    let mut float = false;
    if b.get(j) == Some(&b'.') {
        let end = digits(j + 1);
        if end == j + 1 {
            return Err(err(i, "invalid number"));
        }
        (j, float) = (end, true);
    }
    let mut exponent = false;
    if matches!(b.get(j), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(b.get(j + 1), Some(b'+' | b'-')));
        let end = digits(j + 1 + sign);
        if end == j + 1 + sign {
            return Err(err(i, "invalid number"));
        }
        (j, float, exponent) = (end, true, true);
    }
    let text = || std::str::from_utf8(&b[i..j]).expect("ASCII digits");
    let in_range = if !float {
        // Eighteen digits fit both i64 and u64.
        int_end - int_start <= 18
            || if negative { text().parse::<i64>().is_ok() } else { text().parse::<u64>().is_ok() }
    } else if !exponent && int_end - int_start <= 300 {
        true
    } else {
        text().parse::<f64>().is_ok_and(f64::is_finite)
    };
    if !in_range {
        return Err(err(i, "number out of range"));
    }
    Ok((j, if float { Kind::Float } else { Kind::Int }))
}

/// Whether the key `raw`, which has escapes, is `key` (rare: kept out of
/// the lookup loop).
#[cold]
#[inline(never)]
fn escaped_key_is(raw: &[u8], key: &str) -> bool {
    decode(raw).is_some_and(|k| k == key)
}

/// Decodes the inside of a string literal (escapes checked by the scan).
fn decode(raw: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let text = std::str::from_utf8(raw).ok()?;
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let esc = rest.as_bytes();
        let (ch, used) = match esc.get(at + 1)? {
            b'"' => ('"', 2),
            b'\\' => ('\\', 2),
            b'/' => ('/', 2),
            b'b' => ('\u{8}', 2),
            b'f' => ('\u{c}', 2),
            b'n' => ('\n', 2),
            b'r' => ('\r', 2),
            b't' => ('\t', 2),
            b'u' => {
                let unit = hex4(esc, at + 2)?;
                if (0xD800..0xDC00).contains(&unit) {
                    let low = hex4(esc, at + 8)?;
                    (char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))?, 12)
                } else {
                    (char::from_u32(unit)?, 6)
                }
            }
            _ => return None,
        };
        out.push(ch);
        rest = &rest[at + used..];
    }
    out.push_str(rest);
    Some(out)
}

/// A hash of the key `input[range]` and `salt` (its length and first and
/// last eight bytes as little-endian words, zero-padded when shorter), well
/// mixed in the top bits. Without branches on the length, which varies
/// around eight from key to key.
#[inline(always)]
fn key_hash(input: &[u8], range: std::ops::Range<usize>, salt: u64) -> u64 {
    let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().expect("eight bytes"));
    let len = range.len();
    let (head, tail) = if range.end >= 8 && range.start + 8 <= input.len() {
        // When the key is shorter than eight bytes, the head word holds what
        // follows it: mask to the key; the tail word then counts for nothing.
        let head = word(&input[range.start..range.start + 8]) & ((1u128 << (8 * len.min(8))) - 1) as u64;
        (head, word(&input[range.end - 8..range.end]) & 0u64.wrapping_sub(u64::from(len >= 8)))
    } else {
        // Next to an end of the input (tiny documents): the same words.
        let key = &input[range];
        let mut padded = [0u8; 8];
        let n = len.min(8);
        padded[..n].copy_from_slice(&key[..n]);
        (word(&padded), if len >= 8 { word(&key[len - 8..]) } else { 0 })
    };
    (head ^ tail.rotate_left(31) ^ len as u64 ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A value of a scanned document. Containers that were not recorded have
/// no members or items to show.
#[derive(Clone, Copy)]
pub(crate) struct Value<'d> {
    doc: &'d Doc<'d>,
    span: Span,
}

impl<'d> Value<'d> {
    pub(crate) fn kind(self) -> Kind {
        self.span.kind()
    }

    /// Where the value is in the input (a string with its quotes).
    pub(crate) fn range(self) -> std::ops::Range<usize> {
        self.span.start() as usize..self.span.end() as usize
    }

    /// A string's text, decoded.
    pub(crate) fn str(self) -> Option<Cow<'d, str>> {
        let inner = self.span.start() as usize + 1..self.span.end() as usize - 1;
        match self.span.kind() {
            Kind::Str => Some(Cow::Borrowed(self.doc.text(inner))),
            Kind::EscapedStr => decode(&self.doc.input[inner]).map(Cow::Owned),
            _ => None,
        }
    }

    fn recorded(self) -> &'d [Member] {
        if self.span.node() == NONE {
            debug_assert!(
                !matches!(self.span.kind(), Kind::Object | Kind::Array),
                "routing read an unrecorded container"
            );
            return &[];
        }
        let node = self.doc.nodes[self.span.node() as usize];
        &self.doc.members[node.first as usize..(node.first + node.len) as usize]
    }

    /// An object's members in order (none for other values).
    pub(crate) fn members(self) -> impl Iterator<Item = (Cow<'d, str>, Value<'d>)> {
        let doc = self.doc;
        let members = if self.span.kind() == Kind::Object { self.recorded() } else { &[] };
        members.iter().map(move |m| (doc.key(m), Value { doc, span: m.value }))
    }

    /// An array's items (`None` for other values).
    pub(crate) fn items(self) -> Option<impl Iterator<Item = Value<'d>>> {
        let doc = self.doc;
        (self.span.kind() == Kind::Array).then(|| self.recorded().iter().map(move |m| Value { doc, span: m.value }))
    }

    /// The first key an object repeats; only a suspect object (see
    /// [`SeenKeys`]) can have one. There, keys without escapes are compared
    /// as they are in the input, without decoding: each sets one bit of a
    /// 4096-bit filter, by a hash of its length and first and last eight
    /// bytes, and only a key whose bit was already set is compared with the
    /// earlier keys byte for byte (Mastodon's objects have up to about 60
    /// keys).
    pub(crate) fn repeated_key(self) -> Option<Cow<'d, str>> {
        if self.span.kind() != Kind::Object {
            return None;
        }
        let members = self.recorded();
        if self.span.node() == NONE || !self.doc.nodes[self.span.node() as usize].suspect {
            return None;
        }
        if members.iter().any(|m| m.key_escaped()) {
            return super::repeated_key(self.members().map(|(k, _)| k));
        }
        let input = self.doc.input;
        let mut filter = [0u64; 64];
        for (n, m) in members.iter().enumerate() {
            let range = m.key_range();
            let h = (key_hash(input, range.clone(), 0) >> 52) as usize;
            let (word, bit) = (&mut filter[h / 64], 1u64 << (h % 64));
            let maybe = *word & bit != 0;
            *word |= bit;
            if maybe && members[..n].iter().any(|p| input[p.key_range()] == input[range.clone()]) {
                return Some(Cow::Borrowed(self.doc.text(range)));
            }
        }
        None
    }

    /// The member `key` of an object (the first, if repeated).
    pub(crate) fn get(self, key: &str) -> Option<Value<'d>> {
        if self.span.kind() != Kind::Object {
            return None;
        }
        let doc = self.doc;
        self.recorded()
            .iter()
            .find(|m| {
                let raw = &doc.input[m.key_range()];
                if m.key_escaped() { escaped_key_is(raw, key) } else { raw == key.as_bytes() }
            })
            .map(|m| Value { doc, span: m.value })
    }

    /// An id as [`super::id_text`] reads one: a string or an integer.
    pub(crate) fn id(self) -> std::result::Result<Cow<'d, str>, String> {
        let what = match self.span.kind() {
            Kind::Str | Kind::EscapedStr => {
                let text = self.str().ok_or("undecodable string")?;
                super::check_id(&text)?;
                return Ok(text);
            }
            Kind::Int => {
                let text = self.doc.text(self.span.start() as usize..self.span.end() as usize);
                // `-0` is the integer 0; other integers are written canonically.
                return Ok(Cow::Borrowed(if text == "-0" { "0" } else { text }));
            }
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Float => "a number",
            Kind::Array => "an array",
            Kind::Object => "an object",
        };
        Err(format!("an id must be a string or an integer, got {what}"))
    }
}

impl Doc<'_> {
    /// `input[range]` as text: the input is valid UTF-8 and every range the
    /// scan records starts and ends next to an ASCII delimiter.
    #[inline(always)]
    fn text(&self, range: std::ops::Range<usize>) -> &str {
        let bytes = &self.input[range];
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        // SAFETY: see above: UTF-8 checked before the scan, boundaries at ASCII bytes.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    #[inline(always)]
    fn key(&self, m: &Member) -> Cow<'_, str> {
        if m.key_escaped() {
            Cow::Owned(decode(&self.input[m.key_range()]).unwrap_or_default())
        } else {
            Cow::Borrowed(self.text(m.key_range()))
        }
    }

    /// The first repeated key at or below `span`, with `path` as its place.
    fn repeat_below(&self, span: Span, path: &mut String) -> Option<String> {
        let value = Value { doc: self, span };
        if span.kind() == Kind::Object
            && let Some(key) = value.repeated_key()
        {
            return Some(super::repeated_key_error(&key, path).message().to_owned());
        }
        let object = span.kind() == Kind::Object;
        for m in value.recorded() {
            if !matches!(m.value.kind(), Kind::Object | Kind::Array) {
                continue;
            }
            let len = path.len();
            if object {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&self.key(m));
            } else {
                path.push_str("[]");
            }
            let found = self.repeat_below(m.value, path);
            path.truncate(len);
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Across generations of the seen-keys table (it wraps every 255
    /// scans), a repeat is always found and distinct keys leave their
    /// objects unsuspected: no slot of an earlier scan counts.
    #[test]
    fn seen_keys_start_afresh_every_scan() {
        let distinct = br#"{"a":1,"b":{"a":2,"c":[{"a":3,"b":4}]},"payload":{"a":5,"account":{"a":6}}}"#;
        let repeated = br#"{"a":1,"payload":{"a":5,"account":{"b":6,"b":7}}}"#;
        let mut scratch = Scratch::default();
        for n in 0..600 {
            let input: &[u8] = if n % 3 == 0 { repeated } else { distinct };
            let doc = scan(input, &mut scratch, true).unwrap();
            assert_eq!(doc.nodes.iter().any(|node| node.suspect), n % 3 == 0, "scan {n}");
            let mut path = String::new();
            let want = (n % 3 == 0).then(|| r#"duplicate key "b" in payload.account"#.to_owned());
            assert_eq!(doc.repeat_below(doc.root, &mut path), want, "scan {n}");
        }
    }

    #[test]
    fn followed_keys_are_told_apart_exactly() {
        // The key between the quotes of `"k"`, packed as in `Member`.
        let followed_in = |k: &str| followed(format!("\"{k}\"").as_bytes(), 1 | (1 + k.len() as u64) << 32);
        for k in ["payload", "data", "status", "account", "reblog", "mentions", "tags", "recipients", "lists"] {
            assert_eq!(followed_in(k), Some(true), "{k}");
            assert_eq!(followed_in(&format!("{}_", &k[..k.len() - 1])), None, "{k}");
        }
        for k in ["media_attachments", "medias"] {
            assert_eq!(followed_in(k), Some(false), "{k}");
        }
        for k in ["", "p", "statuses", "account_id", "Tags", "medium"] {
            assert_eq!(followed_in(k), None, "{k}");
        }
    }

    proptest! {
        /// The table agrees with the plain check over decoded keys (first
        /// repeat in document order), on objects of every size around the
        /// table's limits, with short keys (down to the end of the input)
        /// and escaped ones.
        #[test]
        fn repeated_key_finds_the_first_repeat_like_the_plain_check(
            keys in prop::collection::vec("[ab]{0,3}|[a-c]{6,10}|k[0-9]{1,3}|a\\\\u0062", 0..300),
            distinct in any::<bool>(),
        ) {
            let mut keys = keys;
            if distinct {
                let mut seen = std::collections::HashSet::new();
                keys.retain(|k| seen.insert(k.clone()));
            }
            let members: Vec<String> = keys.iter().enumerate().map(|(n, k)| format!("\"{k}\":{n}")).collect();
            let input = format!("{{{}}}", members.join(","));
            let mut scratch = Scratch::default();
            let doc = scan(input.as_bytes(), &mut scratch, false).unwrap();
            let root = Value { doc: &doc, span: doc.root };
            let decoded: Vec<String> = keys.iter().map(|k| k.replace("\\u0062", "b")).collect();
            let want = crate::json::repeated_key(decoded.iter().map(String::as_str)).map(str::to_owned);
            prop_assert_eq!(root.repeated_key().map(Cow::into_owned), want);
        }
    }
}
