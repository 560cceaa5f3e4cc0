//! An `arbitrary`-driven sequence of C ABI calls (SPEC §7, §12), made through the
//! real `extern "C"` functions. After every step: statuses are in the set
//! each call documents, frames are byte-valid, and per-subscriber and
//! engine counters add up. Everything is freed at the end, so AddressSanitizer
//! reports leaks and use-after-free. Pointers are only ever live handles or
//! NULL; a NULL buffer is passed with length 0 (allowed) or a non-zero length
//! (must be EVR_ERR_NULL).
//!
//! Ready sets (docs/protocol.md "Ready sets") are checked against a model of
//! the host rule: a subscriber whose token was taken is held until a drain
//! reports it emptied or closed; any other attached subscriber with frames
//! waiting (or newly closed) must be listed, so a take that empties the set
//! returns it (no lost wakeup). Tagged `delete` messages (payload
//! `TAG_BASE + n`) carry a known `queued_at` and must come out of each
//! subscriber in publish order.
#![no_main]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::ffi::CStr;
use std::ptr::{null, null_mut};

use arbitrary::Arbitrary;
use common::{GOOD_STATUS, STREAMS, check_frame_bytes};
use evroute::ffi::*;
use libfuzzer_sys::fuzz_target;

use evr_status::*;

const ENGINE_CONFIGS: &[&str] = &[
    "",
    r#"{"queue_capacity":2}"#,
    r#"{"queue_capacity":1,"overflow":"drop_newest"}"#,
    r#"{"queue_capacity":2,"overflow":"disconnect"}"#,
    r#"{"delete_memory":1,"queue_capacity":3}"#,
    r#"{"redis_namespace":"ns"}"#,
    r#"{"max_event_bytes":300}"#,
    r#"{"queue_capacity":0}"#,
    r#"{"history":{"max_events":3,"max_age_s":60},"queue_capacity":4}"#,
    r#"{"history":{}}"#,
];

const SUBSCRIBERS: &[&str] = &[
    "",
    r#"{"account":"1"}"#,
    r#"{"account":1,"queue_capacity":2,"overflow":"disconnect"}"#,
    r#"{"account":"2","queue_capacity":1,"overflow":"drop_newest"}"#,
    r#"{"account":"1","languages":["en"],"blocked_accounts":["9"]}"#,
    r#"{"queue_capacity":3,"overflow":"drop_oldest"}"#,
    r#"{"acount":1}"#,
    r#"{"account":"1","event_ids":true}"#,
    r#"{"event_ids":true,"queue_capacity":2,"overflow":"disconnect"}"#,
];

const SUBSCRIPTIONS: &[&str] = &[r#"{"stream":"nope"}"#, r#"{"stream":"hashtag"}"#, r#"{"stream":"user","events":[]}"#];

/// Last ids for resume; the ids of frames held are added to these.
const LAST_IDS: &[&str] = &["abc:0", "zz:7", "17", ":1", "a:", "a:b", "a:99999999999999999999"];

const UPDATES: &[&str] =
    &[r#"{"languages":["de"]}"#, "{}", r#"{"blocked_domains":["example.org"]}"#, r#"{"account":"3"}"#];

const EVENTS: &[&str] = &[
    include_str!("../../corpus/mastodon/01-update-108914327388663283.json"),
    include_str!("../../corpus/mastodon/02-notification-68739215.json"),
    include_str!("../../corpus/mastodon/03-filters_changed-undefined.json"),
    include_str!("../../corpus/mastodon/18-conversation-819516.json"),
    include_str!("../../corpus/community/status.created.json"),
    include_str!("../../corpus/community/notification.mention.json"),
    include_str!("../../corpus/invalid/notification.contribution-trailing-comma.json"),
    r#"{"event":"notification","payload":{"id":"5"},"recipients":[1,"2"]}"#,
    r#"{"event":"conversation","payload":{"id":"6"},"recipients":["1"]}"#,
    r#"{"event":"delete","payload":"77","lists":[1]}"#,
    r#"{"event":"update","payload":{"id":"1"}}"#,
];

const CHANNELS: &[&str] = &[
    "timeline:public",
    "ns:timeline:public",
    "timeline:1",
    "timeline:1:notifications",
    "timeline:hashtag:rust",
    "timeline:list:1",
    "timeline:direct:1",
    "timeline:public:local:media",
    "timeline:nope",
];

const MESSAGES: &[&str] = &[
    r#"{"event":"delete","payload":"77"}"#,
    r#"{"event":"filters_changed"}"#,
    r#"{"event":"notification","payload":{"id":"5"}}"#,
    r#"{"event":"update","payload":"{\"id\":\"3\",\"account\":{\"id\":\"4\",\"acct\":\"x@example.org\"}}"}"#,
    "{\"event\":\"update\",\"payload\":{\n \"id\": \"8\",\r\n \"account\": {\"id\": 9}}}",
];

/// Payloads of tagged `delete` messages are `TAG_BASE + n`, n counting publishes.
const TAG_BASE: u64 = 900_000_000;

/// `queued_at` values a message may carry that are not a non-negative
/// integer: the frame reports 0.
const BAD_QUEUED_AT: &[&str] =
    &["-5", "1.5", "null", "\"soon\"", "{}", "[]", "true", "1e3", "18446744073709551616", "\"-1\""];

/// The `queued_at` of a tagged message.
#[derive(Arbitrary, Debug)]
enum QueuedAt {
    Absent,
    Valid(u64),
    /// A decimal string, as ids may be (the engine takes it).
    Quoted(u32),
    Invalid(u8),
}

impl QueuedAt {
    /// The member to add to the message, and the value frames must report.
    fn member(&self) -> (String, u64) {
        match self {
            QueuedAt::Absent => (String::new(), 0),
            QueuedAt::Valid(v) => (format!(r#","queued_at":{v}"#), *v),
            QueuedAt::Quoted(v) => (format!(r#","queued_at":"{v}""#), u64::from(*v)),
            QueuedAt::Invalid(i) => {
                (format!(r#","queued_at":{}"#, BAD_QUEUED_AT[usize::from(*i) % BAD_QUEUED_AT.len()]), 0)
            }
        }
    }
}

/// A `(ptr, len)` byte input.
#[derive(Arbitrary, Debug)]
enum Input {
    /// `(NULL, 0)`: the empty input, allowed everywhere.
    Empty,
    /// `(NULL, n)` with `n > 0`: must be EVR_ERR_NULL.
    NullWithLen(u16),
    /// An entry of the call's table of realistic inputs.
    Known(u8),
    /// A prefix of such an entry (a short length over a real buffer).
    Prefix(u8, u16),
    Bytes(Vec<u8>),
}

impl Input {
    /// The bytes to pass (None: a NULL pointer) and the length.
    fn resolve(&self, table: &[&str], extra: &[&str]) -> (Option<Vec<u8>>, usize) {
        let pick = |i: u8| {
            let all = table.len() + extra.len();
            let i = usize::from(i) % all;
            if i < table.len() { table[i] } else { extra[i - table.len()] }
        };
        match self {
            Input::Empty => (None, 0),
            Input::NullWithLen(n) => (None, usize::from(*n).max(1)),
            Input::Known(i) => {
                let b = pick(*i).as_bytes().to_vec();
                let n = b.len();
                (Some(b), n)
            }
            Input::Prefix(i, cut) => {
                let b = pick(*i).as_bytes().to_vec();
                let n = usize::from(*cut) % (b.len() + 1);
                (Some(b), n)
            }
            Input::Bytes(b) => (Some(b.clone()), b.len()),
        }
    }

    fn is_null_with_len(&self) -> bool {
        matches!(self, Input::NullWithLen(_))
    }
}

fn ptr_of(b: &Option<Vec<u8>>) -> *const u8 {
    b.as_ref().map_or(null(), |v| v.as_ptr())
}

#[derive(Arbitrary, Debug)]
enum Op {
    NewSubscriber(Input),
    FreeSubscriber(u8),
    CloseSubscriber(u8),
    Subscribe(u8, Input),
    Unsubscribe(u8, Input),
    Update(u8, Input),
    Publish(Input, bool),
    PublishChannel(Input, Input, bool),
    Next(u8, bool),
    /// evr_subscriber_next_batch (or, with an encoding, evr_subscriber_next_iov).
    NextBatch(u8, u8, Option<bool>),
    /// evr_subscriber_read of the SSE (false) or WS (true) bytes into a
    /// buffer of this size, with or without the `queued_at` and `emptied` outs.
    Read(u8, bool, u16, u8, bool),
    /// A `delete` on this channel (None: timeline:public) with a tag
    /// payload and a `queued_at`.
    PublishTagged(Option<u8>, QueuedAt),
    NewReadySet,
    FreeReadySet(u8),
    /// Attaches subscriber, set (made when none is live), token (`% 8`, so
    /// tokens collide).
    Attach(u8, u8, u8),
    /// A new subscriber of `public` (this SUBSCRIBERS config), attached as Attach.
    NewAttached(u8, u8, u8),
    /// evr_ready_set_take with this max (`% 5`); `all`: until none is left.
    Take(u8, u8, bool),
    /// The host drains a held subscriber: up to `rounds` reads, as Read.
    Drain(u8, bool, u16, u8, u8),
    /// The host's loop: one take (max `% 4 + 1`), then a Drain of each token.
    Host(u8, u8, bool, u16, u8, u8),
    ReadFrame(u8),
    FreeFrame(u8),
    Fd(u8),
    Resume(u8, Input),
    NullHandles(u8),
    /// Frees the engine (its subscribers stay usable) and makes a new one.
    ReplaceEngine(Input),
}

#[derive(Arbitrary, Debug)]
struct Plan {
    engine_config: Input,
    ops: Vec<Op>,
}

#[derive(Default)]
struct EngineModel {
    ptr: Option<*mut evr_engine>,
    published: u64,
    rejected: u64,
    /// Counters of freed subscribers, at the time they were freed.
    retired: (u64, u64, u64),
}

struct Sub {
    ptr: *mut evr_subscriber,
    engine: usize,
    reads: u64,
    /// The set (index into `World::sets`) and token it is attached with.
    set: Option<(usize, u64)>,
    /// Its own readiness fd was asked for (it can no longer be attached).
    fd_asked: bool,
    /// The host took its token and has not yet drained it empty.
    held: bool,
    /// A host drain saw EVR_CLOSED: nothing more is owed for it.
    closed_seen: bool,
    /// The tag of the last tagged frame read (None: none yet, or resumed).
    last_tag: Option<u64>,
}

#[derive(Default)]
struct SetModel {
    /// None once freed (attached subscribers keep the set alive).
    ptr: Option<*mut evr_ready_set>,
    /// Tokens of attached live subscribers, to the subscriber.
    tokens: HashMap<u64, *mut evr_subscriber>,
    /// Tokens that must be listed: their subscriber needs the host and is not held.
    owed: BTreeSet<u64>,
}

struct World {
    /// Timed waits left (each costs a millisecond).
    waits: u32,
    engines: Vec<EngineModel>,
    subs: Vec<Sub>,
    frames: Vec<*mut evr_frame>,
    sets: Vec<SetModel>,
    /// `queued_at` of tagged publish n (those that were accepted or not).
    tags: Vec<u64>,
}

fn last_error() -> String {
    // SAFETY: evr_last_error() never returns NULL and is NUL-terminated.
    unsafe { CStr::from_ptr(evr_last_error()) }.to_string_lossy().into_owned()
}

/// Checks a status against the set a call documents; errors carry a message.
fn expect_status(got: evr_status, allowed: &[evr_status], what: &str) {
    assert!(allowed.contains(&got), "{what}: unexpected {got:?} ({})", last_error());
    if (got as i32) < 0 {
        assert!(!last_error().is_empty(), "{what}: {got:?} without a message");
    }
}

fn expect_null_error(got: evr_status, what: &str) {
    assert_eq!(got, EVR_ERR_NULL, "{what}");
    assert!(last_error().contains("NULL"), "{what}: {}", last_error());
}

fn sub_stats(s: *const evr_subscriber) -> evr_subscriber_stats {
    let mut q = evr_subscriber_stats::default();
    // SAFETY: `s` is a live subscriber; `q` is writable.
    assert_eq!(unsafe { evr_subscriber_get_stats(s, &mut q) }, EVR_OK);
    q
}

fn is_closed(s: *const evr_subscriber) -> bool {
    // SAFETY: `s` is a live subscriber; the result is NULL or a static C string.
    let reason = unsafe { evr_subscriber_closed(s) };
    if reason.is_null() {
        return false;
    }
    // SAFETY: non-NULL: a static NUL-terminated string.
    let text = unsafe { CStr::from_ptr(reason) }.to_str().unwrap();
    assert!(text == "closed" || text == "slow consumer", "{text}");
    true
}

/// Reads one of the frame's byte strings through its accessor.
fn part<'a>(
    f: *const evr_frame,
    get: unsafe extern "C" fn(*const evr_frame, *mut usize) -> *const u8,
) -> Option<&'a [u8]> {
    let mut len = usize::MAX;
    // SAFETY: `f` is a live frame; `len` is writable.
    let p = unsafe { get(f, &mut len) };
    if p.is_null() {
        assert_eq!(len, 0, "a NULL part has length 0");
        return None;
    }
    // SAFETY: the accessor returns `len` bytes valid until the frame is freed.
    Some(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A frame's id, checked to be `<alphanumeric epoch>:<digits>`.
fn frame_id(f: *const evr_frame) -> Option<String> {
    let id = std::str::from_utf8(part(f, evr_frame_id)?).expect("id is UTF-8").to_owned();
    let (epoch, seq) = id.split_once(':').expect("id has a colon");
    assert!(!epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
    assert!(seq.parse::<u64>().is_ok_and(|n| n > 0), "{id}");
    Some(id)
}

fn check_abi_frame(f: *const evr_frame) {
    let mut sse = part(f, evr_frame_sse).expect("SSE bytes");
    let mut ws = part(f, evr_frame_ws).expect("WS bytes").to_vec();
    // An `event_ids` frame: the id line first in SSE and the last key in WS;
    // without them it is the frame of SPEC §4.
    if let Some(id) = frame_id(f)
        && let Some(rest) = sse.strip_prefix(format!("id: {id}\n").as_bytes())
    {
        sse = rest;
        let key = format!(",\"id\":\"{id}\"}}");
        assert!(ws.ends_with(key.as_bytes()), "WS of an id frame ends with its id");
        ws.truncate(ws.len() - key.len());
        ws.push(b'}');
    }
    let event = std::str::from_utf8(part(f, evr_frame_event).expect("event")).expect("event is UTF-8");
    let stream = std::str::from_utf8(part(f, evr_frame_stream).expect("stream")).expect("stream is UTF-8");
    let payload = part(f, evr_frame_payload).map(|p| std::str::from_utf8(p).expect("payload is UTF-8"));
    check_frame_bytes(sse, &ws, event, payload, stream);
}

/// The tag of a tagged `delete` (see [`TAG_BASE`]).
fn tag_of(event: &[u8], payload: Option<&[u8]>) -> Option<u64> {
    if event != b"delete" {
        return None;
    }
    std::str::from_utf8(payload?).ok()?.parse::<u64>().ok()?.checked_sub(TAG_BASE)
}

fn frame_tag(f: *const evr_frame) -> Option<u64> {
    tag_of(part(f, evr_frame_event)?, part(f, evr_frame_payload))
}

/// The tag in one frame's SSE or WS bytes.
fn tag_in_bytes(frame: &[u8], ws: bool) -> Option<u64> {
    let (start, end): (&[u8], u8) =
        if ws { (br#""event":"delete","payload":""#, b'"') } else { (b"event: delete\ndata: ", b'\n') };
    let at = frame.windows(start.len()).position(|w| w == start)? + start.len();
    let len = frame[at..].iter().position(|&b| b == end)?;
    tag_of(b"delete", Some(&frame[at..at + len]))
}

fn readable(fd: i32) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) == 1 }
}

fn set_fd(set: *const evr_ready_set) -> i32 {
    let mut fd = -1;
    // SAFETY: a live set; `fd` writable.
    assert_eq!(unsafe { evr_ready_set_fd(set, &mut fd) }, EVR_OK);
    assert!(fd >= 0);
    fd
}

impl World {
    fn engine(&self) -> *mut evr_engine {
        self.engines.last().and_then(|e| e.ptr).expect("a current engine")
    }

    fn pick(&self, i: u8) -> Option<usize> {
        (!self.subs.is_empty()).then(|| usize::from(i) % self.subs.len())
    }

    /// A set whose handle is live.
    fn pick_set(&self, i: u8) -> Option<usize> {
        let live: Vec<usize> = (0..self.sets.len()).filter(|&k| self.sets[k].ptr.is_some()).collect();
        (!live.is_empty()).then(|| live[usize::from(i) % live.len()])
    }

    /// A tagged frame read from subscriber `i`, with its `queued_at` when
    /// the call reported it: tags come in publish order (a frame per
    /// matching subscription, so a tag may repeat), with their message's
    /// `queued_at`.
    fn saw(&mut self, i: usize, tag: Option<u64>, queued_at: Option<u64>) {
        let Some((t, &want)) = tag.and_then(|t| Some((t, self.tags.get(usize::try_from(t).ok()?)?))) else {
            return;
        };
        if let Some(got) = queued_at {
            assert_eq!(got, want, "queued_at of tagged message {t}");
        }
        let s = &mut self.subs[i];
        assert!(s.last_tag.is_none_or(|l| l <= t), "tagged message {t} after {:?}", s.last_tag);
        s.last_tag = Some(t);
    }

    /// The host rule's model: an attached subscriber that is not held and
    /// has frames waiting, or closed unseen, is owed a listing. A live set
    /// owing one polls readable.
    fn owe_listings(&mut self) {
        for s in &self.subs {
            let Some((k, token)) = s.set else { continue };
            if self.sets[k].ptr.is_none() || s.held {
                continue;
            }
            if sub_stats(s.ptr).depth > 0 || (is_closed(s.ptr) && !s.closed_seen) {
                self.sets[k].owed.insert(token);
            }
        }
        for set in &self.sets {
            if let Some(p) = set.ptr {
                assert!(
                    set.owed.is_empty() || readable(set_fd(p)),
                    "tokens {:?} owed, the fd is not readable",
                    set.owed
                );
            }
        }
    }

    /// evr_ready_set_take once, or until none is left: the fd is readable
    /// exactly when a token comes; each token is of an attached live
    /// subscriber, now held; after taking all, none is owed.
    /// Returns the subscribers taken.
    fn take(&mut self, k: u8, max: usize, all: bool) -> Vec<*mut evr_subscriber> {
        let Some(k) = self.pick_set(k) else { return Vec::new() };
        let set = self.sets[k].ptr.unwrap();
        let mut tokens = [u64::MAX; 4];
        let mut taken = Vec::new();
        loop {
            let was_readable = readable(set_fd(set));
            let mut n = usize::MAX;
            // SAFETY: live set; `tokens` has room for max <= 4; `n` writable.
            let st = unsafe { evr_ready_set_take(set, tokens.as_mut_ptr(), max, &mut n) };
            if max == 0 {
                expect_status(st, &[EVR_ERR_INVALID_CONFIG], "take");
                assert_eq!(n, usize::MAX, "a failed take wrote n");
                return taken;
            }
            assert_eq!(st, EVR_OK, "take");
            assert!(n <= max);
            assert_eq!(was_readable, n > 0, "the set's fd was readable: {was_readable}, tokens taken: {n}");
            for &token in &tokens[..n] {
                let Some(&ptr) = self.sets[k].tokens.get(&token) else {
                    panic!("take returned token {token}, of no attached live subscriber");
                };
                self.sets[k].owed.remove(&token);
                self.subs.iter_mut().find(|s| s.ptr == ptr).unwrap().held = true;
                taken.push(ptr);
            }
            if !all || n == 0 {
                break;
            }
        }
        if all {
            assert!(self.sets[k].owed.is_empty(), "lost wakeup: tokens {:?} not listed", self.sets[k].owed);
            assert!(!readable(set_fd(set)));
        }
        taken
    }

    /// Attaches subscriber `i` to a set (made when none is live) under
    /// `token % 8`, refused as documented.
    fn attach(&mut self, i: usize, k: u8, token: u8) {
        if self.pick_set(k).is_none() {
            self.new_set();
        }
        let Some(k) = self.pick_set(k) else { return };
        let token = u64::from(token % 8);
        let s = &self.subs[i];
        let refusal = if s.fd_asked {
            Some("readiness fd is in use".to_owned())
        } else if s.set.is_some() {
            Some("already attached to a ready set".to_owned())
        } else if self.sets[k].tokens.contains_key(&token) {
            Some(format!("token {token} is already attached"))
        } else {
            None
        };
        // SAFETY: live subscriber and set.
        let st = unsafe { evr_subscriber_attach_ready_set(s.ptr, self.sets[k].ptr.unwrap(), token) };
        match refusal {
            Some(why) => {
                expect_status(st, &[EVR_ERR_INVALID_CONFIG], "attach");
                assert!(last_error().contains(&why), "attach refused: {} (want {why})", last_error());
            }
            None => {
                assert_eq!(st, EVR_OK, "attach ({})", last_error());
                self.sets[k].tokens.insert(token, s.ptr);
                self.subs[i].set = Some((k, token));
            }
        }
    }

    fn new_set(&mut self) {
        if self.sets.len() >= 4 {
            return;
        }
        let mut out = null_mut();
        // SAFETY: `out` writable.
        assert_eq!(unsafe { evr_ready_set_new(&mut out) }, EVR_OK);
        assert!(!readable(set_fd(out)), "a new set lists nothing");
        self.sets.push(SetModel { ptr: Some(out), ..SetModel::default() });
    }

    /// The host drains held subscriber `i` until it is emptied or closed,
    /// but stops after `rounds` reads even with frames left: it stays held,
    /// and a later Drain comes back to it.
    fn drain(&mut self, i: usize, ws: bool, cap: u16, max: u8, rounds: u8) {
        for _ in 0..=rounds % 3 {
            let (st, emptied) = self.read(i, ws, cap, max % 4 + 1, true);
            let s = &mut self.subs[i];
            if (st == EVR_OK && emptied) || st == EVR_EMPTY || st == EVR_CLOSED {
                s.held = false;
                s.closed_seen |= st == EVR_CLOSED;
                return;
            }
        }
    }

    /// evr_subscriber_read (see Op::Read); returns the status and `*emptied`.
    fn read(&mut self, i: usize, ws: bool, cap: u16, max: u8, outs: bool) -> (evr_status, bool) {
        let s = self.subs[i].ptr;
        let (before, closed) = (sub_stats(s), is_closed(s));
        let (cap, max) = (usize::from(cap % 4096), usize::from(max % 5));
        let enc = if ws { evr_encoding::EVR_ENCODING_WS } else { evr_encoding::EVR_ENCODING_SSE };
        let mut buf = vec![0u8; cap];
        let mut lens = [usize::MAX; 4];
        let mut queued_at = [u64::MAX; 4];
        let mut emptied = -1;
        let (mut n, mut used) = (usize::MAX, usize::MAX);
        let (qa, em) = if outs { (queued_at.as_mut_ptr(), &raw mut emptied) } else { (null_mut(), null_mut()) };
        // SAFETY: live subscriber; `buf` has `cap` bytes, `lens` and
        // `queued_at` room for max <= 4; outs writable or NULL.
        let st = unsafe {
            evr_subscriber_read(s, 0, enc, buf.as_mut_ptr(), cap, lens.as_mut_ptr(), qa, max, &mut n, &mut used, em)
        };
        let want = match (max, closed, before.depth) {
            (0, _, _) => vec![EVR_ERR_INVALID_CONFIG],
            (_, true, _) => vec![EVR_CLOSED],
            (_, false, 0) => vec![EVR_EMPTY],
            _ => vec![EVR_OK, EVR_BUFFER_TOO_SMALL],
        };
        expect_status(st, &want, "read");
        match st {
            EVR_OK => {
                assert!(n >= 1 && n as u64 <= before.depth.min(max as u64) && used <= cap, "{n} {used}");
                assert_eq!(lens[..n].iter().sum::<usize>(), used);
                let mut at = 0;
                for (k, &len) in lens[..n].iter().enumerate() {
                    let frame = &buf[at..at + len];
                    if ws {
                        assert!(frame.starts_with(br#"{"stream":["#) && frame.ends_with(b"}"));
                    } else {
                        let start = frame.starts_with(b"event: ") || frame.starts_with(b"id: ");
                        assert!(start && frame.ends_with(b"\n\n"));
                    }
                    self.saw(i, tag_in_bytes(frame, ws), outs.then_some(queued_at[k]));
                    at += len;
                }
                self.subs[i].reads += n as u64;
                if outs {
                    let left = sub_stats(s).depth;
                    assert_eq!(emptied, i32::from(left == 0), "emptied with {left} frames left");
                }
            }
            EVR_BUFFER_TOO_SMALL => {
                assert!(used > cap && used != usize::MAX && n == usize::MAX, "{used} {n}");
                assert_eq!(sub_stats(s).depth, before.depth, "a refused frame stays queued");
            }
            _ => assert_eq!((n, used), (usize::MAX, usize::MAX), "a failed call wrote its out-parameters"),
        }
        if st != EVR_OK {
            assert_eq!((emptied, queued_at[0]), (-1, u64::MAX), "a failed call wrote emptied or queued_at");
        }
        (st, emptied == 1)
    }

    /// Per subscriber: matched == read + depth + dropped, reads as counted
    /// here. Per live engine: its counters equal its subscribers' sums.
    fn check_invariants(&self) {
        let mut sums = vec![(0u64, 0u64, 0u64, 0u64, true); self.engines.len()];
        for s in &self.subs {
            let q = sub_stats(s.ptr);
            assert_eq!(q.matched, q.read + q.depth + q.dropped, "{q:?}");
            assert!(q.delivered <= q.matched, "{q:?}");
            assert_eq!(q.read, s.reads, "{q:?}");
            let closed = is_closed(s.ptr);
            if closed {
                assert_eq!(q.depth, 0);
            }
            let e = &mut sums[s.engine];
            e.0 += q.matched;
            e.1 += q.delivered;
            e.2 += q.dropped;
            e.3 += 1;
            e.4 &= closed;
        }
        for (model, sum) in self.engines.iter().zip(sums) {
            let Some(ptr) = model.ptr else { continue };
            let mut st = evr_engine_stats::default();
            // SAFETY: live engine, writable out.
            assert_eq!(unsafe { evr_engine_get_stats(ptr, &mut st) }, EVR_OK);
            assert_eq!((st.published, st.rejected), (model.published, model.rejected), "{st:?}");
            let (rm, rd, rx) = model.retired;
            assert_eq!((st.matched, st.delivered, st.dropped), (sum.0 + rm, sum.1 + rd, sum.2 + rx), "{st:?}");
            assert_eq!(st.subscribers, sum.3, "{st:?}");
            if sum.4 {
                assert_eq!(st.subscriptions, 0, "closed subscribers keep subscriptions: {st:?}");
            }
        }
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::NewSubscriber(input) => {
                if self.subs.len() >= 12 {
                    return;
                }
                let (b, len) = input.resolve(SUBSCRIBERS, &[]);
                let mut out = null_mut();
                // SAFETY: live engine; `b` holds `len` bytes or is NULL; `out` writable.
                let st = unsafe { evr_subscriber_new(self.engine(), ptr_of(&b), len, &mut out) };
                if input.is_null_with_len() {
                    return expect_null_error(st, "subscriber_new");
                }
                expect_status(
                    st,
                    &[EVR_OK, EVR_ERR_INVALID_UTF8, EVR_ERR_INVALID_JSON, EVR_ERR_INVALID_CONFIG],
                    "subscriber_new",
                );
                if st == EVR_OK {
                    assert!(!out.is_null());
                    self.subs.push(Sub {
                        ptr: out,
                        engine: self.engines.len() - 1,
                        reads: 0,
                        set: None,
                        fd_asked: false,
                        held: false,
                        closed_seen: false,
                        last_tag: None,
                    });
                } else {
                    assert!(out.is_null(), "a failed call wrote its out-parameter");
                }
            }
            Op::FreeSubscriber(i) => {
                let Some(i) = self.pick(*i) else { return };
                let s = self.subs.swap_remove(i);
                if let Some((k, token)) = s.set {
                    // Detached: its token is no longer listed nor owed.
                    self.sets[k].tokens.remove(&token);
                    self.sets[k].owed.remove(&token);
                }
                let q = sub_stats(s.ptr);
                // SAFETY: live subscriber, not used again.
                unsafe { evr_subscriber_free(s.ptr) };
                // Freeing discards the queued frames, counted as dropped.
                let r = &mut self.engines[s.engine].retired;
                r.0 += q.matched;
                r.1 += q.delivered;
                r.2 += q.dropped + q.depth;
            }
            Op::CloseSubscriber(i) => {
                let Some(i) = self.pick(*i) else { return };
                let s = self.subs[i].ptr;
                let before = sub_stats(s);
                // SAFETY: live subscriber.
                assert_eq!(unsafe { evr_subscriber_close(s) }, EVR_OK);
                assert!(is_closed(s));
                let after = sub_stats(s);
                assert_eq!((after.dropped, after.depth), (before.dropped + before.depth, 0));
            }
            Op::Subscribe(i, input) | Op::Unsubscribe(i, input) => {
                let Some(i) = self.pick(*i) else { return };
                let s = self.subs[i].ptr;
                let (b, len) = input.resolve(STREAMS, SUBSCRIPTIONS);
                let subscribe = matches!(op, Op::Subscribe(..));
                // SAFETY: live subscriber; `b` holds `len` bytes or is NULL.
                let st = unsafe {
                    if subscribe { evr_subscribe(s, ptr_of(&b), len) } else { evr_unsubscribe(s, ptr_of(&b), len) }
                };
                if input.is_null_with_len() {
                    return expect_null_error(st, "subscribe");
                }
                expect_status(
                    st,
                    &[EVR_OK, EVR_ERR_INVALID_UTF8, EVR_ERR_INVALID_JSON, EVR_ERR_INVALID_SUBSCRIPTION],
                    "subscribe",
                );
            }
            Op::Update(i, input) => {
                let Some(i) = self.pick(*i) else { return };
                let (b, len) = input.resolve(UPDATES, &[]);
                // SAFETY: live subscriber; `b` holds `len` bytes or is NULL.
                let st = unsafe { evr_subscriber_update(self.subs[i].ptr, ptr_of(&b), len) };
                if input.is_null_with_len() {
                    return expect_null_error(st, "update");
                }
                expect_status(
                    st,
                    &[EVR_OK, EVR_ERR_INVALID_UTF8, EVR_ERR_INVALID_JSON, EVR_ERR_INVALID_CONFIG],
                    "update",
                );
            }
            Op::Publish(input, with_stats) => {
                let (b, len) = input.resolve(EVENTS, &[std::str::from_utf8(GOOD_STATUS).unwrap()]);
                let mut stats = evr_publish_stats { matched: u64::MAX, delivered: u64::MAX, dropped: u64::MAX };
                let out: *mut evr_publish_stats = if *with_stats { &mut stats } else { null_mut() };
                // SAFETY: live engine; `b` holds `len` bytes or is NULL; `out` NULL or writable.
                let st = unsafe { evr_publish(self.engine(), ptr_of(&b), len, out) };
                self.after_publish(st, input.is_null_with_len(), *with_stats, &stats, "publish");
            }
            Op::PublishChannel(channel, message, with_stats) => {
                let (c, clen) = channel.resolve(CHANNELS, &[]);
                let (m, mlen) = message.resolve(MESSAGES, &[std::str::from_utf8(GOOD_STATUS).unwrap()]);
                let mut stats = evr_publish_stats { matched: u64::MAX, delivered: u64::MAX, dropped: u64::MAX };
                let out: *mut evr_publish_stats = if *with_stats { &mut stats } else { null_mut() };
                // SAFETY: as for evr_publish, with two inputs.
                let st = unsafe { evr_publish_channel(self.engine(), ptr_of(&c), clen, ptr_of(&m), mlen, out) };
                let null = channel.is_null_with_len() || message.is_null_with_len();
                self.after_publish(st, null, *with_stats, &stats, "publish_channel");
            }
            Op::Next(i, wait) => {
                let Some(i) = self.pick(*i) else { return };
                let s = self.subs[i].ptr;
                let (before, closed) = (sub_stats(s), is_closed(s));
                let wait = *wait && self.waits > 0;
                self.waits -= u32::from(wait);
                let mut frame = null_mut();
                // SAFETY: live subscriber; `frame` writable.
                let st = unsafe { evr_subscriber_next(s, u32::from(wait), &mut frame) };
                let want = match (closed, before.depth > 0, wait) {
                    (true, _, _) => EVR_CLOSED,
                    (false, true, _) => EVR_OK,
                    (false, false, false) => EVR_EMPTY,
                    (false, false, true) => EVR_TIMEOUT,
                };
                assert_eq!(st, want, "next");
                if st == EVR_OK {
                    assert!(!frame.is_null());
                    self.subs[i].reads += 1;
                    check_abi_frame(frame);
                    // SAFETY: a live frame.
                    self.saw(i, frame_tag(frame), Some(unsafe { evr_frame_queued_at(frame) }));
                    if self.frames.len() >= 16 {
                        // SAFETY: a live frame, not used again.
                        unsafe { evr_frame_free(self.frames.swap_remove(0)) };
                    }
                    self.frames.push(frame);
                } else {
                    assert!(frame.is_null());
                }
            }
            Op::NextBatch(i, max, iov) => {
                let Some(i) = self.pick(*i) else { return };
                let s = self.subs[i].ptr;
                let (before, closed) = (sub_stats(s), is_closed(s));
                let max = usize::from(*max % 5);
                let mut frames = [null_mut(); 4];
                let mut bytes = [evr_bytes { ptr: null(), len: 0 }; 4];
                let mut n = usize::MAX;
                let enc =
                    if *iov == Some(true) { evr_encoding::EVR_ENCODING_WS } else { evr_encoding::EVR_ENCODING_SSE };
                // SAFETY: live subscriber; `frames` and `bytes` have room for max <= 4; `n` writable.
                let st = unsafe {
                    match iov {
                        None => evr_subscriber_next_batch(s, 0, frames.as_mut_ptr(), max, &mut n),
                        Some(_) => {
                            evr_subscriber_next_iov(s, 0, enc, frames.as_mut_ptr(), bytes.as_mut_ptr(), max, &mut n)
                        }
                    }
                };
                let want = match (max, closed, before.depth) {
                    (0, _, _) => EVR_ERR_INVALID_CONFIG,
                    (_, true, _) => EVR_CLOSED,
                    (_, false, 0) => EVR_EMPTY,
                    _ => EVR_OK,
                };
                assert_eq!(st, want, "next_batch ({})", last_error());
                if st != EVR_OK {
                    assert_eq!(n, usize::MAX, "a failed call wrote its out-parameter");
                    return;
                }
                assert_eq!(n as u64, before.depth.min(max as u64));
                self.subs[i].reads += n as u64;
                for (k, &f) in frames[..n].iter().enumerate() {
                    check_abi_frame(f);
                    // SAFETY: a live frame.
                    self.saw(i, frame_tag(f), Some(unsafe { evr_frame_queued_at(f) }));
                    if iov.is_some() {
                        let get = if *iov == Some(true) { evr_frame_ws } else { evr_frame_sse };
                        let whole = part(f, get).unwrap();
                        assert_eq!((bytes[k].ptr, bytes[k].len), (whole.as_ptr(), whole.len()), "iov entry {k}");
                    }
                }
                // SAFETY: `n` live frames, not used again.
                unsafe { evr_frames_free(frames.as_ptr(), n) };
            }
            Op::Read(i, ws, cap, max, outs) => {
                let Some(i) = self.pick(*i) else { return };
                self.read(i, *ws, *cap, *max, *outs);
            }
            Op::PublishTagged(channel, queued_at) => {
                let channel = channel.map_or("timeline:public", |c| CHANNELS[usize::from(c) % CHANNELS.len()]);
                let (member, want) = queued_at.member();
                let n = self.tags.len() as u64;
                let message = format!(r#"{{"event":"delete","payload":"{}"{member}}}"#, TAG_BASE + n);
                self.tags.push(want);
                // SAFETY: live engine; both buffers hold their lengths.
                let st = unsafe {
                    evr_publish_channel(
                        self.engine(),
                        channel.as_ptr(),
                        channel.len(),
                        message.as_ptr(),
                        message.len(),
                        null_mut(),
                    )
                };
                self.after_publish(st, false, false, &evr_publish_stats::default(), "publish tagged");
            }
            Op::NewReadySet => self.new_set(),
            Op::FreeReadySet(k) => {
                let Some(k) = self.pick_set(*k) else { return };
                // SAFETY: a live set, not used again; attached subscribers keep it alive.
                unsafe { evr_ready_set_free(self.sets[k].ptr.take().unwrap()) };
                self.sets[k].owed.clear();
            }
            Op::Attach(i, k, token) => {
                if let Some(i) = self.pick(*i) {
                    self.attach(i, *k, *token);
                }
            }
            Op::NewAttached(config, k, token) => {
                self.run(&Op::NewSubscriber(Input::Known(*config)));
                let s = self.subs.last().map(|s| s.ptr);
                let public = br#"{"stream":"public"}"#;
                // SAFETY: a live subscriber; the buffer holds its length.
                if let Some(s) = s.filter(|&s| unsafe { evr_subscribe(s, public.as_ptr(), public.len()) } == EVR_OK) {
                    let i = self.subs.iter().position(|x| x.ptr == s).unwrap();
                    self.attach(i, *k, *token);
                }
            }
            Op::Take(k, max, all) => {
                self.take(*k, usize::from(*max % 5), *all);
            }
            Op::Drain(i, ws, cap, max, rounds) => {
                let held: Vec<usize> = (0..self.subs.len()).filter(|&i| self.subs[i].held).collect();
                let Some(&i) = held.get(usize::from(*i) % held.len().max(1)) else { return };
                self.drain(i, *ws, *cap, *max, *rounds);
            }
            Op::Host(k, max, ws, cap, rmax, rounds) => {
                for ptr in self.take(*k, usize::from(*max % 4 + 1), false) {
                    // A token taken twice (listed twice) may be drained already.
                    if let Some(i) = self.subs.iter().position(|s| s.ptr == ptr && s.held) {
                        self.drain(i, *ws, *cap, *rmax, *rounds);
                    }
                }
            }
            Op::ReadFrame(i) => {
                if !self.frames.is_empty() {
                    // Frames outlive their subscriber and engine.
                    check_abi_frame(self.frames[usize::from(*i) % self.frames.len()]);
                }
            }
            Op::FreeFrame(i) => {
                if !self.frames.is_empty() {
                    let f = self.frames.swap_remove(usize::from(*i) % self.frames.len());
                    // SAFETY: a live frame, not used again.
                    unsafe { evr_frame_free(f) };
                }
            }
            Op::Fd(i) => {
                let Some(i) = self.pick(*i) else { return };
                let s = self.subs[i].ptr;
                let mut fd = -1;
                // SAFETY: live subscriber; `fd` writable.
                let st = unsafe { evr_subscriber_fd(s, &mut fd) };
                if self.subs[i].set.is_some() {
                    expect_status(st, &[EVR_ERR_INVALID_CONFIG], "fd of an attached subscriber");
                    return assert_eq!(fd, -1);
                }
                assert_eq!(st, EVR_OK);
                self.subs[i].fd_asked = true;
                assert!(fd >= 0);
                let want = sub_stats(s).depth > 0 || is_closed(s);
                assert_eq!(readable(fd), want, "the readiness fd disagrees with the queue");
            }
            Op::Resume(i, input) => {
                let Some(i) = self.pick(*i) else { return };
                let s = self.subs[i].ptr;
                let held: Vec<String> = self.frames.iter().filter_map(|&f| frame_id(f)).collect();
                let held: Vec<&str> = held.iter().map(String::as_str).collect();
                let (b, len) = input.resolve(LAST_IDS, &held);
                let closed = is_closed(s);
                let reads = sub_stats(s).read;
                // SAFETY: live subscriber; `b` holds `len` bytes or is NULL.
                let st = unsafe { evr_subscriber_resume(s, ptr_of(&b), len) };
                // Replayed frames come before those queued: order starts over.
                self.subs[i].last_tag = None;
                if input.is_null_with_len() {
                    return expect_null_error(st, "resume");
                }
                let well_formed = b.as_ref().and_then(|b| std::str::from_utf8(&b[..len]).ok()).is_some_and(|id| {
                    id.split_once(':').is_some_and(|(e, n)| {
                        (1..=32).contains(&e.len())
                            && e.bytes().all(|c| c.is_ascii_alphanumeric())
                            && !n.is_empty()
                            && n.bytes().all(|c| c.is_ascii_digit())
                            && n.parse::<u64>().is_ok()
                    })
                });
                let allowed: &[evr_status] = match (well_formed, closed) {
                    (true, true) => &[EVR_ERR_INVALID_SUBSCRIPTION],
                    (true, false) => &[EVR_OK, EVR_GAP],
                    (false, _) => &[EVR_ERR_INVALID_ID, EVR_ERR_INVALID_UTF8],
                };
                expect_status(st, allowed, "resume");
                assert_eq!(sub_stats(s).read, reads, "resume reads nothing");
            }
            Op::NullHandles(which) => self.null_handles(*which),
            Op::ReplaceEngine(config) => {
                let old = self.engine();
                // SAFETY: live engine, not used again; subscribers keep the domain alive.
                unsafe { evr_engine_free(old) };
                self.engines.last_mut().unwrap().ptr = None;
                self.new_engine(config);
            }
        }
    }

    fn after_publish(&mut self, st: evr_status, null: bool, with_stats: bool, stats: &evr_publish_stats, what: &str) {
        if null {
            return expect_null_error(st, what);
        }
        expect_status(
            st,
            &[
                EVR_OK,
                EVR_ERR_INVALID_UTF8,
                EVR_ERR_INVALID_JSON,
                EVR_ERR_INVALID_EVENT,
                EVR_ERR_INVALID_CHANNEL,
                EVR_ERR_TOO_LARGE,
            ],
            what,
        );
        let model = self.engines.last_mut().unwrap();
        if st == EVR_OK {
            model.published += 1;
            if with_stats {
                assert!(stats.delivered <= stats.matched && stats.matched < 1 << 20, "{stats:?}");
            }
        } else {
            model.rejected += 1;
            if with_stats {
                assert_eq!(stats.matched, u64::MAX, "a failed publish wrote its stats");
            }
        }
    }

    /// NULL handles and out-parameters: EVR_ERR_NULL, NULL results, no-ops.
    fn null_handles(&mut self, which: u8) {
        let json = br#"{"stream":"public"}"#;
        let mut frame = null_mut();
        let mut len = 0usize;
        // SAFETY: every pointer is NULL or live/writable, lengths match buffers.
        unsafe {
            match which % 9 {
                0 => {
                    evr_engine_free(null_mut());
                    evr_subscriber_free(null_mut());
                    evr_frame_free(null_mut());
                }
                1 => {
                    expect_null_error(evr_subscribe(null(), json.as_ptr(), json.len()), "subscribe NULL");
                    expect_null_error(evr_unsubscribe(null(), json.as_ptr(), json.len()), "unsubscribe NULL");
                    expect_null_error(evr_subscriber_update(null(), null(), 0), "update NULL");
                    expect_null_error(evr_subscriber_close(null()), "close NULL");
                    assert!(evr_subscriber_closed(null()).is_null());
                }
                2 => {
                    expect_null_error(evr_publish(null(), GOOD_STATUS.as_ptr(), GOOD_STATUS.len(), null_mut()), "pub");
                    let c = b"timeline:public";
                    let r = evr_publish_channel(null(), c.as_ptr(), c.len(), GOOD_STATUS.as_ptr(), 9, null_mut());
                    expect_null_error(r, "publish_channel NULL");
                }
                3 => {
                    let r = evr_subscriber_new(self.engine(), null(), 0, null_mut());
                    expect_null_error(r, "subscriber_new out NULL");
                    expect_null_error(evr_subscriber_new(null(), null(), 0, &mut null_mut()), "subscriber_new NULL");
                }
                4 => {
                    let mut n = 0;
                    let mut frames = [null_mut(); 1];
                    let sse = evr_encoding::EVR_ENCODING_SSE;
                    expect_null_error(evr_subscriber_next_batch(null(), 0, frames.as_mut_ptr(), 1, &mut n), "batch");
                    let r = evr_subscriber_read(
                        null(),
                        0,
                        sse,
                        [0u8; 1].as_mut_ptr(),
                        1,
                        null_mut(),
                        null_mut(),
                        1,
                        &mut n,
                        &mut n,
                        null_mut(),
                    );
                    expect_null_error(r, "read NULL");
                    evr_frames_free(null(), 3);
                    expect_null_error(evr_subscriber_next(null(), 0, &mut frame), "next NULL");
                    if let Some(s) = self.subs.first() {
                        expect_null_error(evr_subscriber_next(s.ptr, 0, null_mut()), "next out NULL");
                    }
                    assert!(frame.is_null());
                }
                5 => {
                    assert!(evr_frame_sse(null(), &mut len).is_null());
                    assert!(evr_frame_payload(null(), &mut len).is_null());
                    assert!(evr_frame_id(null(), &mut len).is_null());
                    expect_null_error(evr_subscriber_resume(null(), b"a:1".as_ptr(), 3), "resume NULL");
                    if let Some(&f) = self.frames.first() {
                        assert!(evr_frame_ws(f, null_mut()).is_null());
                        assert!(evr_frame_event(f, null_mut()).is_null());
                    }
                }
                6 => {
                    let mut es = evr_engine_stats::default();
                    let mut ss = evr_subscriber_stats::default();
                    let mut fd = 0;
                    expect_null_error(evr_engine_get_stats(null(), &mut es), "engine stats NULL");
                    expect_null_error(evr_engine_get_stats(self.engine(), null_mut()), "engine stats out NULL");
                    expect_null_error(evr_subscriber_get_stats(null(), &mut ss), "sub stats NULL");
                    expect_null_error(evr_subscriber_fd(null(), &mut fd), "fd NULL");
                    if let Some(s) = self.subs.first() {
                        expect_null_error(evr_subscriber_get_stats(s.ptr, null_mut()), "sub stats out NULL");
                        expect_null_error(evr_subscriber_fd(s.ptr, null_mut()), "fd out NULL");
                    }
                }
                7 => {
                    let (mut fd, mut n, mut tokens) = (0, 0, [0u64; 1]);
                    evr_ready_set_free(null_mut());
                    expect_null_error(evr_ready_set_new(null_mut()), "set_new out NULL");
                    expect_null_error(evr_ready_set_fd(null(), &mut fd), "set_fd NULL");
                    expect_null_error(evr_ready_set_take(null(), tokens.as_mut_ptr(), 1, &mut n), "take NULL");
                    expect_null_error(evr_subscriber_attach_ready_set(null(), null(), 1), "attach NULL");
                    if let Some(set) = self.sets.iter().find_map(|s| s.ptr) {
                        expect_null_error(evr_ready_set_fd(set, null_mut()), "set_fd out NULL");
                        expect_null_error(evr_ready_set_take(set, null_mut(), 1, &mut n), "take tokens NULL");
                        expect_null_error(evr_ready_set_take(set, tokens.as_mut_ptr(), 1, null_mut()), "take n NULL");
                        expect_null_error(evr_subscriber_attach_ready_set(null(), set, 1), "attach sub NULL");
                    }
                    if let Some(s) = self.subs.first() {
                        expect_null_error(evr_subscriber_attach_ready_set(s.ptr, null(), 1), "attach set NULL");
                    }
                    assert_eq!(evr_frame_queued_at(null()), 0);
                }
                _ => {
                    let c = br#"{"queue_capacity":4}"#;
                    expect_null_error(evr_engine_new(c.as_ptr(), c.len(), null_mut()), "engine_new out NULL");
                    let mut e = null_mut();
                    expect_null_error(evr_engine_new(null(), 3, &mut e), "engine_new NULL config");
                    assert!(e.is_null());
                }
            }
        }
    }

    fn new_engine(&mut self, config: &Input) {
        let (b, len) = config.resolve(ENGINE_CONFIGS, &[]);
        let mut out = null_mut();
        // SAFETY: `b` holds `len` bytes or is NULL; `out` writable.
        let st = unsafe { evr_engine_new(ptr_of(&b), len, &mut out) };
        if config.is_null_with_len() {
            expect_null_error(st, "engine_new");
        } else {
            expect_status(
                st,
                &[EVR_OK, EVR_ERR_INVALID_UTF8, EVR_ERR_INVALID_JSON, EVR_ERR_INVALID_CONFIG],
                "engine_new",
            );
        }
        if st != EVR_OK {
            assert!(out.is_null());
            // SAFETY: (NULL, 0) means defaults; `out` writable.
            assert_eq!(unsafe { evr_engine_new(null(), 0, &mut out) }, EVR_OK);
        }
        assert!(!out.is_null());
        self.engines.push(EngineModel { ptr: Some(out), ..EngineModel::default() });
    }

    /// Frees everything, in an order that also exercises frames outliving
    /// their subscribers and engines.
    fn free_all(mut self) {
        // Sets first: attached subscribers keep them alive.
        for set in &mut self.sets {
            // SAFETY: NULL or a live set, not used again.
            unsafe { evr_ready_set_free(set.ptr.take().unwrap_or(null_mut())) };
        }
        for e in &mut self.engines {
            if let Some(p) = e.ptr.take() {
                // SAFETY: live engine, not used again.
                unsafe { evr_engine_free(p) };
            }
        }
        for s in self.subs.drain(..) {
            // SAFETY: live subscriber, not used again.
            unsafe { evr_subscriber_free(s.ptr) };
        }
        for f in self.frames.drain(..) {
            check_abi_frame(f);
            // SAFETY: live frame, not used again.
            unsafe { evr_frame_free(f) };
        }
    }
}

fuzz_target!(|plan: Plan| {
    // SAFETY: evr_version() returns a static NUL-terminated string.
    assert_eq!(unsafe { CStr::from_ptr(evr_version()) }.to_str(), Ok(evroute::VERSION));
    let mut world = World {
        waits: 2,
        engines: Vec::new(),
        subs: Vec::new(),
        frames: Vec::new(),
        sets: Vec::new(),
        tags: Vec::new(),
    };
    world.new_engine(&plan.engine_config);
    for op in plan.ops.iter().take(256) {
        world.run(op);
        world.owe_listings();
        world.check_invariants();
    }
    world.free_all();
});
