//! Frames (SPEC §4): encoded once per (event, stream array) and shared by
//! every subscriber that receives them.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::sync::{Arc, OnceLock};

use smallvec::SmallVec;

use crate::json::{escape_into, escaped_len};

/// The position of a published event (SPEC §12): its engine sequence number
/// and its `<epoch>:<seq>` text.
#[derive(Clone, Debug)]
pub struct EventId {
    pub seq: u64,
    pub text: Box<str>,
}

/// The part of a frame that does not depend on the stream: event name,
/// payload string, the SSE encoding and, with history on, the event id.
#[derive(Debug)]
pub struct FrameBody {
    event: Box<str>,
    payload: Payload,
    sse: Box<str>,
    id: Option<EventId>,
    /// `id: <id>\n` + `sse`, built on first use by an `event_ids` frame.
    sse_with_id: OnceLock<Box<[u8]>>,
    /// The payload's length escaped as a JSON string, for the history's
    /// count of WebSocket bytes; computed on first use.
    escaped_payload: OnceLock<usize>,
    /// The message's `queued_at` (ms since the Unix epoch), if it had one.
    queued_at: Option<u64>,
}

/// Where a body keeps its payload string.
#[derive(Debug)]
enum Payload {
    None,
    /// A payload without line breaks is kept once, as the SSE bytes' data
    /// line: `sse[start..end]`.
    InSse {
        start: usize,
        end: usize,
    },
    /// One with line breaks is split over several data lines: kept apart.
    Own(Box<str>),
}

impl FrameBody {
    pub fn new(event: &str, payload: Option<&str>) -> Arc<FrameBody> {
        Self::with_id(event, payload, None, None)
    }

    /// Like `new`, for an event that has a position in the history or a
    /// `queued_at`.
    pub fn with_id(event: &str, payload: Option<&str>, id: Option<EventId>, queued_at: Option<u64>) -> Arc<FrameBody> {
        let mut sse = String::with_capacity(event.len() + payload.as_ref().map_or(9, |p| p.len()) + 16);
        sse.push_str("event: ");
        sse.push_str(event);
        sse.push('\n');
        let payload = match payload {
            None => {
                sse.push_str("data: undefined\n");
                Payload::None
            }
            Some(text) => {
                let start = sse.len() + "data: ".len();
                // One data line per line of the payload, so a pretty-printed
                // payload cannot end the frame early.
                for line in split_lines(text) {
                    sse.push_str("data: ");
                    sse.push_str(line);
                    sse.push('\n');
                }
                match memchr::memchr2(b'\r', b'\n', text.as_bytes()) {
                    None => Payload::InSse { start, end: start + text.len() },
                    Some(_) => Payload::Own(text.into()),
                }
            }
        };
        sse.push('\n');
        Self::assemble(event.into(), payload, sse, id, queued_at)
    }

    fn assemble(
        event: Box<str>,
        payload: Payload,
        sse: String,
        id: Option<EventId>,
        queued_at: Option<u64>,
    ) -> Arc<FrameBody> {
        Arc::new(FrameBody {
            event,
            payload,
            sse: sse.into_boxed_str(),
            id,
            sse_with_id: OnceLock::new(),
            escaped_payload: OnceLock::new(),
            queued_at,
        })
    }

    /// Heap bytes this body holds (for the history counters), counting the
    /// SSE id variant, built on first read, when `with_id` frames exist.
    fn heap_bytes(&self, with_id: bool) -> usize {
        let id = self.id.as_ref().map_or(0, |id| id.text.len());
        let sse_with_id = if with_id { self.sse.len() + id + 5 } else { 0 };
        let own_payload = match &self.payload {
            Payload::Own(text) => text.len(),
            Payload::None | Payload::InSse { .. } => 0,
        };
        self.event.len() + own_payload + self.sse.len() + id + sse_with_id
    }

    pub fn event(&self) -> &str {
        &self.event
    }

    pub fn payload(&self) -> Option<&str> {
        match &self.payload {
            Payload::None => None,
            Payload::InSse { start, end } => Some(&self.sse[*start..*end]),
            Payload::Own(text) => Some(text),
        }
    }

    pub fn id(&self) -> Option<&EventId> {
        self.id.as_ref()
    }

    pub fn queued_at(&self) -> Option<u64> {
        self.queued_at
    }
}

/// Splits on CRLF, LF and CR, as the SSE standard reads line ends.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match memchr::memchr2(b'\r', b'\n', s.as_bytes()) {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
        }
    })
}

/// One delivery: immutable, shared through `Arc`.
#[derive(Debug)]
pub struct Frame {
    body: Arc<FrameBody>,
    stream: Arc<str>,
    /// The WebSocket message, encoded by the first reader that asks for it:
    /// a frame only SSE clients receive never pays for escaping its payload.
    ws: OnceLock<Box<[u8]>>,
    /// The `event_ids` variant: the id is part of the SSE and WebSocket bytes.
    with_id: bool,
}

impl Frame {
    pub fn new(body: &Arc<FrameBody>, stream: &Arc<str>) -> Frame {
        Self::encode(body, stream, false)
    }

    /// The frame of an `event_ids` subscriber: like `new`, with the id in
    /// both encodings when the body has one.
    pub fn with_id(body: &Arc<FrameBody>, stream: &Arc<str>) -> Frame {
        Self::encode(body, stream, body.id.is_some())
    }

    fn encode(body: &Arc<FrameBody>, stream: &Arc<str>, with_id: bool) -> Frame {
        Frame { body: Arc::clone(body), stream: Arc::clone(stream), ws: OnceLock::new(), with_id }
    }

    /// The id this frame's encodings carry, if any.
    fn carried_id(&self) -> Option<&EventId> {
        self.body.id.as_ref().filter(|_| self.with_id)
    }

    fn encode_ws(&self) -> Box<[u8]> {
        let body = &self.body;
        let mut ws = Vec::with_capacity(self.ws_len());
        ws.extend_from_slice(b"{\"stream\":");
        ws.extend_from_slice(self.stream.as_bytes());
        ws.extend_from_slice(b",\"event\":\"");
        escape_into(&mut ws, &body.event);
        ws.push(b'"');
        if let Some(payload) = body.payload() {
            ws.extend_from_slice(b",\"payload\":\"");
            escape_into(&mut ws, payload);
            ws.push(b'"');
        }
        if let Some(id) = self.carried_id() {
            // The id text is `<alphanumeric epoch>:<digits>`: nothing to escape.
            ws.extend_from_slice(b",\"id\":\"");
            ws.extend_from_slice(id.text.as_bytes());
            ws.push(b'"');
        }
        ws.push(b'}');
        debug_assert_eq!(ws.len(), self.ws_len());
        ws.into_boxed_slice()
    }

    /// The length of `ws()`, whether it is encoded yet or not.
    fn ws_len(&self) -> usize {
        if let Some(ws) = self.ws.get() {
            return ws.len();
        }
        let body = &self.body;
        // `{"stream":` `,"event":"` `"` … `}`, then `,"payload":"` `"` and `,"id":"` `"`.
        let mut len = 10 + self.stream.len() + 10 + escaped_len(&body.event) + 2;
        if let Some(payload) = body.payload() {
            len += 13 + *body.escaped_payload.get_or_init(|| escaped_len(payload));
        }
        if let Some(id) = self.carried_id() {
            len += 8 + id.text.len();
        }
        len
    }

    pub fn event(&self) -> &str {
        &self.body.event
    }

    /// The payload string; `None` when the event had no payload.
    pub fn payload(&self) -> Option<&str> {
        self.body.payload()
    }

    /// The stream array as JSON text, e.g. `["public"]`.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The message's `queued_at` (ms since the Unix epoch), if it had one.
    pub fn queued_at(&self) -> Option<u64> {
        self.body.queued_at
    }

    pub fn sse(&self) -> &[u8] {
        match &self.body.id {
            Some(id) if self.with_id => self.body.sse_with_id.get_or_init(|| {
                [b"id: ", id.text.as_bytes(), b"\n", self.body.sse.as_bytes()].concat().into_boxed_slice()
            }),
            _ => self.body.sse.as_bytes(),
        }
    }

    /// The SSE bytes as consecutive pieces (`id: `, the id, a line end,
    /// the body; empty but the last without an id), for a reader that
    /// copies them out: the `event_ids` variant then never needs its own
    /// contiguous copy (`sse` builds one on first use).
    pub fn sse_parts(&self) -> [&[u8]; 4] {
        let body = self.body.sse.as_bytes();
        match self.carried_id() {
            Some(id) => [b"id: ", id.text.as_bytes(), b"\n", body],
            None => [b"", b"", b"", body],
        }
    }

    pub fn ws(&self) -> &[u8] {
        self.ws.get_or_init(|| self.encode_ws())
    }

    /// The event's `<epoch>:<seq>`; `None` when the engine keeps no history.
    pub fn id(&self) -> Option<&str> {
        self.body.id.as_ref().map(|id| &*id.text)
    }

    /// The event's sequence number; `None` when the engine keeps no history.
    pub fn seq(&self) -> Option<u64> {
        self.body.id.as_ref().map(|id| id.seq)
    }
}

/// A counted reference to a frame, as `Arc<Frame>` is, with one more
/// operation: a fan-out takes references in bulk, one atomic add for many
/// deliveries ([`Credits`]), where cloning an `Arc` per queue costs one
/// atomic read-modify-write per delivery.
///
/// The count follows `Arc`'s rules: a clone adds with `Relaxed` (the new
/// reference comes from a live one, so the frame cannot go away meanwhile);
/// a drop subtracts with `Release`, and the drop that takes the count to
/// zero does an `Acquire` fence before freeing, so every use of the frame
/// through other references happens before it is freed.
pub struct FrameRef {
    shared: NonNull<Shared>,
}

/// The allocation behind a [`FrameRef`]. `repr(C)`: the C ABI hands out
/// pointers to `frame` and finds the start again (`FrameRef::from_raw`).
#[repr(C)]
struct Shared {
    refs: AtomicUsize,
    frame: Frame,
}

/// Above this many references, stop (as `Arc` does) rather than risk the
/// count wrapping around.
const MAX_REFS: usize = isize::MAX as usize;

// SAFETY: a FrameRef hands out only `&Frame`, and `Frame` is `Send + Sync`;
// the count is atomic.
unsafe impl Send for FrameRef {}
// SAFETY: as above.
unsafe impl Sync for FrameRef {}

impl FrameRef {
    pub fn new(frame: Frame) -> FrameRef {
        let shared = Box::new(Shared { refs: AtomicUsize::new(1), frame });
        FrameRef { shared: NonNull::from(Box::leak(shared)) }
    }

    fn shared(&self) -> &Shared {
        // SAFETY: this reference keeps the allocation alive.
        unsafe { self.shared.as_ref() }
    }

    /// Adds `n` references; `Relaxed` as for a clone.
    fn add_refs(&self, n: usize) {
        if self.shared().refs.fetch_add(n, Ordering::Relaxed) > MAX_REFS - n {
            std::process::abort();
        }
    }

    /// Whether both point to the same frame.
    pub fn ptr_eq(a: &FrameRef, b: &FrameRef) -> bool {
        a.shared == b.shared
    }

    /// Gives up this reference as a pointer to the frame (for the C ABI).
    pub(crate) fn into_raw(self) -> *const Frame {
        let frame = &self.shared().frame as *const Frame;
        std::mem::forget(self);
        frame
    }

    /// Takes back a reference that `into_raw` gave up.
    ///
    /// # Safety
    /// `frame` came from `into_raw` and is taken back once.
    pub(crate) unsafe fn from_raw(frame: *const Frame) -> FrameRef {
        let offset = std::mem::offset_of!(Shared, frame);
        // SAFETY: `frame` is the `frame` field of a live `Shared` (contract).
        let shared = unsafe { frame.byte_sub(offset) }.cast::<Shared>().cast_mut();
        // SAFETY: derived from a non-null pointer into an allocation.
        FrameRef { shared: unsafe { NonNull::new_unchecked(shared) } }
    }
}

impl Clone for FrameRef {
    fn clone(&self) -> FrameRef {
        self.add_refs(1);
        FrameRef { shared: self.shared }
    }
}

impl Drop for FrameRef {
    fn drop(&mut self) {
        if self.shared().refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        // SAFETY: that was the last reference; the allocation came from a Box.
        drop(unsafe { Box::from_raw(self.shared.as_ptr()) });
    }
}

impl std::ops::Deref for FrameRef {
    type Target = Frame;
    fn deref(&self) -> &Frame {
        &self.shared().frame
    }
}

impl std::fmt::Debug for FrameRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// References to one frame taken ahead of a fan-out: each [`Credits::take`]
/// hands one out without an atomic operation, refilling with one atomic add
/// (of a doubling amount) when none are left; those left over are given
/// back with one atomic subtraction on drop. A publish to N queues costs
/// O(log N) atomic operations on the frame's count instead of N.
///
/// Sound because `frame` itself holds a reference for as long as credits
/// exist: taken credits are real references (the count includes them), and
/// giving back the rest never takes the count below that one.
pub struct Credits {
    frame: FrameRef,
    left: usize,
    next_refill: usize,
}

impl Credits {
    pub fn new(frame: FrameRef) -> Credits {
        Credits { frame, left: 0, next_refill: 16 }
    }

    pub fn frame(&self) -> &FrameRef {
        &self.frame
    }

    /// One more reference to the frame.
    #[inline]
    pub fn take(&mut self) -> FrameRef {
        if self.left == 0 {
            self.frame.add_refs(self.next_refill);
            self.left = self.next_refill;
            self.next_refill = (self.next_refill * 2).min(1 << 16);
        }
        self.left -= 1;
        FrameRef { shared: self.frame.shared }
    }
}

impl Drop for Credits {
    fn drop(&mut self) {
        if self.left > 0 {
            // Never the last reference: `self.frame` still holds one.
            self.frame.shared().refs.fetch_sub(self.left, Ordering::Release);
        }
    }
}

/// Frames of one publish, one per distinct (stream array, id variant).
/// Streams are interned by the engine, so pointer equality almost always
/// decides. A variant is encoded only when some subscriber receives it.
pub struct FrameCache {
    body: Arc<FrameBody>,
    frames: SmallVec<[CachedFrame; 4]>,
}

/// A frame with its stream and whether it is the `event_ids` variant.
type CachedFrame = (Arc<str>, bool, Credits);

impl FrameCache {
    pub fn new(body: Arc<FrameBody>) -> FrameCache {
        FrameCache { body, frames: SmallVec::new() }
    }

    /// What every frame of this cache shares.
    pub fn body(&self) -> &Arc<FrameBody> {
        &self.body
    }

    /// The frame for `stream`; `with_id` asks for the `event_ids` variant
    /// (the same as the plain one when the event has no id).
    pub fn get(&mut self, stream: &Arc<str>, with_id: bool) -> &FrameRef {
        self.credits(stream, with_id).frame()
    }

    /// A reference to the frame `get` returns, for a delivery: no atomic
    /// operation most of the time (see [`Credits`]).
    #[inline]
    pub fn take(&mut self, stream: &Arc<str>, with_id: bool) -> FrameRef {
        self.credits(stream, with_id).take()
    }

    /// The cached frame for (`stream`, `with_id`), made the first time.
    fn credits(&mut self, stream: &Arc<str>, with_id: bool) -> &mut Credits {
        let with_id = with_id && self.body.id.is_some();
        let pos = self
            .frames
            .iter()
            .position(|(s, w, _)| Arc::ptr_eq(s, stream) && *w == with_id)
            .or_else(|| self.frames.iter().position(|(s, w, _)| **s == **stream && *w == with_id));
        let pos = match pos {
            Some(p) => p,
            None => {
                let frame = FrameRef::new(Frame::encode(&self.body, stream, with_id));
                self.frames.push((Arc::clone(stream), with_id, Credits::new(frame)));
                self.frames.len() - 1
            }
        };
        &mut self.frames[pos].2
    }

    /// Heap bytes of the body and of every frame made so far, counting each
    /// frame's WebSocket bytes as encoded: they are built by the first
    /// WebSocket reader, on another thread, at any time.
    pub fn heap_bytes(&self) -> usize {
        let with_id = self.frames.iter().any(|(_, w, _)| *w);
        self.body.heap_bytes(with_id) + self.frames.iter().map(|(_, _, f)| f.frame().ws_len()).sum::<usize>()
    }
}

/// JSON's white space.
const JSON_SPACE: [char; 4] = [' ', '\t', '\n', '\r'];

impl FrameCache {
    /// The frames of `plain`'s event with `"key":value` as its payload's last
    /// member (§11's `"filtered":[…]`). The payload and SSE bytes up to the
    /// object's closing brace are the plain ones, copied, so only the new
    /// member is written. `key` needs no escaping; `value` is compact JSON
    /// text without line breaks. `None` when the payload is not a JSON object.
    pub fn extended(plain: &FrameBody, key: &str, value: &str) -> Option<FrameCache> {
        debug_assert!(!value.contains(['\r', '\n']) && !key.contains(['"', '\\']));
        let payload = plain.payload()?;
        let head = payload.trim_end_matches(JSON_SPACE).strip_suffix('}')?;
        let empty = head.trim_start_matches(JSON_SPACE).strip_prefix('{')?.trim_matches(JSON_SPACE).is_empty();
        let tail = [if empty { "\"" } else { ",\"" }, key, "\":", value, "}"].concat();
        // Only line ends, `data: ` prefixes and white space follow the
        // payload's closing brace in the SSE bytes; the tail has no line end,
        // so it continues the payload's last data line.
        let brace = plain.sse.rfind('}')?;
        let sse = [&plain.sse[..brace], &tail, "\n\n"].concat();
        // A one-line payload stays one line: it ends where the tail does.
        let payload = match plain.payload {
            Payload::InSse { start, .. } => Payload::InSse { start, end: brace + tail.len() },
            _ => Payload::Own([head, &tail].concat().into()),
        };
        Some(FrameCache::new(FrameBody::assemble(plain.event.clone(), payload, sse, plain.id.clone(), plain.queued_at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(event: &str, payload: Option<&str>, stream: &str) -> Frame {
        Frame::new(&FrameBody::new(event, payload), &Arc::from(stream))
    }

    #[test]
    fn mastodon_documented_examples_are_byte_exact() {
        let f = frame("delete", Some("108914398911648589"), r#"["public"]"#);
        assert_eq!(f.sse(), b"event: delete\ndata: 108914398911648589\n\n");
        let f = frame("delete", Some("106692867363994015"), r#"["public"]"#);
        assert_eq!(f.ws(), br#"{"stream":["public"],"event":"delete","payload":"106692867363994015"}"#);
        let f = frame("filters_changed", None, r#"["user"]"#);
        assert_eq!(f.sse(), b"event: filters_changed\ndata: undefined\n\n");
        assert_eq!(f.ws(), br#"{"stream":["user"],"event":"filters_changed"}"#);
        assert_eq!(f.payload(), None);
    }

    #[test]
    fn object_payloads_are_escaped_into_a_string() {
        let f = frame("update", Some(r#"{"id":"1","content":"a\nb"}"#), r#"["hashtag","Rust"]"#);
        assert_eq!(
            f.ws(),
            br#"{"stream":["hashtag","Rust"],"event":"update","payload":"{\"id\":\"1\",\"content\":\"a\\nb\"}"}"#
        );
    }

    #[test]
    fn multi_line_payloads_become_several_data_lines() {
        let f = frame("update", Some("{\n  \"id\": \"1\"\r\n}"), r#"["public"]"#);
        assert_eq!(f.sse(), b"event: update\ndata: {\ndata:   \"id\": \"1\"\ndata: }\n\n");
    }

    #[test]
    fn a_one_line_payload_is_kept_once_in_the_sse_bytes() {
        let one = FrameBody::new("update", Some(r#"{"id":"1"}"#));
        assert!(matches!(one.payload, Payload::InSse { .. }));
        assert_eq!(one.payload(), Some(r#"{"id":"1"}"#));
        assert_eq!(one.heap_bytes(false), "update".len() + one.sse.len());
        let two = FrameBody::new("update", Some("{\n}"));
        assert!(matches!(two.payload, Payload::Own(_)));
        assert_eq!(two.heap_bytes(false), "update".len() + 3 + two.sse.len());
    }

    #[test]
    fn cache_shares_one_frame_per_stream() {
        let mut cache = FrameCache::new(FrameBody::new("update", Some("{}")));
        let a: Arc<str> = Arc::from(r#"["public"]"#);
        let b: Arc<str> = Arc::from(r#"["public"]"#);
        let first = FrameRef::clone(cache.get(&a, false));
        assert!(FrameRef::ptr_eq(&first, cache.get(&b, false)));
        // Without an id, the event_ids variant is the plain frame.
        assert!(FrameRef::ptr_eq(&first, cache.get(&b, true)));
        let other = FrameRef::clone(cache.get(&Arc::from(r#"["public:local"]"#), false));
        assert!(!FrameRef::ptr_eq(&first, &other));
        assert!(std::ptr::eq(first.sse(), other.sse()));
    }

    fn with_id(event: &str, payload: Option<&str>) -> Arc<FrameBody> {
        let id = EventId { seq: 17, text: "k3x9:17".into() };
        FrameBody::with_id(event, payload, Some(id), None)
    }

    #[test]
    fn id_variants_put_the_id_first_in_sse_and_last_in_ws() {
        let body = with_id("update", Some("{\"id\":\"1\"}"));
        let stream: Arc<str> = Arc::from(r#"["public"]"#);
        let plain = Frame::new(&body, &stream);
        let ided = Frame::with_id(&body, &stream);
        assert_eq!(plain.sse(), b"event: update\ndata: {\"id\":\"1\"}\n\n");
        assert_eq!(plain.ws(), br#"{"stream":["public"],"event":"update","payload":"{\"id\":\"1\"}"}"#);
        assert_eq!(ided.sse(), b"id: k3x9:17\nevent: update\ndata: {\"id\":\"1\"}\n\n");
        assert_eq!(ided.ws(), br#"{"stream":["public"],"event":"update","payload":"{\"id\":\"1\"}","id":"k3x9:17"}"#);
        assert_eq!((plain.id(), plain.seq()), (Some("k3x9:17"), Some(17)));
        assert_eq!(ided.id(), Some("k3x9:17"));
        let none = Frame::with_id(&with_id("filters_changed", None), &Arc::from(r#"["user"]"#));
        assert_eq!(none.sse(), b"id: k3x9:17\nevent: filters_changed\ndata: undefined\n\n");
        assert_eq!(none.ws(), br#"{"stream":["user"],"event":"filters_changed","id":"k3x9:17"}"#);
    }

    #[test]
    fn sse_parts_join_to_the_sse_bytes_without_building_them() {
        let body = with_id("update", Some("{}"));
        let stream: Arc<str> = Arc::from(r#"["public"]"#);
        for frame in [Frame::new(&body, &stream), Frame::with_id(&body, &stream)] {
            let joined = frame.sse_parts().concat();
            assert!(body.sse_with_id.get().is_none(), "the parts do not build the id variant");
            assert_eq!(joined, frame.sse());
        }
    }

    #[test]
    fn frames_without_history_have_no_id() {
        let f = frame("delete", Some("1"), r#"["public"]"#);
        assert_eq!((f.id(), f.seq()), (None, None));
        let f = Frame::with_id(&FrameBody::new("delete", Some("1")), &Arc::from(r#"["public"]"#));
        assert_eq!(f.sse(), b"event: delete\ndata: 1\n\n");
    }

    #[test]
    fn id_variants_are_encoded_only_on_demand_and_once() {
        let body = with_id("update", Some("{}"));
        let mut cache = FrameCache::new(Arc::clone(&body));
        let s: Arc<str> = Arc::from(r#"["public"]"#);
        let plain = FrameRef::clone(cache.get(&s, false));
        assert!(body.sse_with_id.get().is_none());
        let ided = FrameRef::clone(cache.get(&s, true));
        assert!(!FrameRef::ptr_eq(&plain, &ided));
        assert!(FrameRef::ptr_eq(&ided, cache.get(&s, true)));
        assert!(body.sse_with_id.get().is_none(), "SSE id bytes wait for the first sse() call");
        let first = ided.sse().as_ptr();
        let other = FrameRef::clone(cache.get(&Arc::from(r#"["public:local"]"#), true));
        assert_eq!(other.sse().as_ptr(), first, "one SSE id encoding per event");
    }

    /// The extended frames against frames encoded from the annotated payload
    /// written out in full.
    #[test]
    fn extended_frames_equal_frames_encoded_in_full() {
        let cases = [
            (r#"{"id":"1","content":"<p>a \"b\"</p>"}"#, r#"{"id":"1","content":"<p>a \"b\"</p>","filtered":[]}"#),
            ("{}", r#"{"filtered":[]}"#),
            ("{ }\n", r#"{ "filtered":[]}"#),
            ("{\n \"a\": 1\n}", "{\n \"a\": 1\n,\"filtered\":[]}"),
            ("{\r\n \"a\": \"}\"\r\n}\r\n \t", "{\r\n \"a\": \"}\"\r\n,\"filtered\":[]}"),
            ("\t{\"a\":{}}\r", "\t{\"a\":{},\"filtered\":[]}"),
        ];
        let streams: [Arc<str>; 2] = [Arc::from(r#"["public"]"#), Arc::from(r#"["hashtag","a}\"b"]"#)];
        for (payload, annotated) in cases {
            for id in [None, Some(EventId { seq: 9, text: "k3x9:9".into() })] {
                let plain = FrameBody::with_id("up}date", Some(payload), id.clone(), Some(5));
                let mut ext = FrameCache::extended(&plain, "filtered", "[]").unwrap();
                let full = FrameBody::with_id("up}date", Some(annotated), id, Some(5));
                assert_eq!(ext.body().payload(), Some(annotated));
                assert_eq!(ext.body().queued_at(), Some(5), "the annotated copy keeps queued_at");
                for stream in &streams {
                    for with_id in [false, true] {
                        let want = Frame::encode(&full, stream, with_id && full.id.is_some());
                        let got = FrameRef::clone(ext.get(stream, with_id));
                        assert_eq!((got.sse(), got.ws()), (want.sse(), want.ws()), "{payload:?} {stream} {with_id}");
                        assert!(FrameRef::ptr_eq(&got, ext.get(stream, with_id)));
                    }
                }
            }
        }
        let quoted =
            FrameCache::extended(&FrameBody::new("update", Some("{}")), "filtered", r#"["a\"\u00e9"]"#).unwrap();
        assert_eq!(quoted.body().payload(), Some(r#"{"filtered":["a\"\u00e9"]}"#));
        for payload in [None, Some("\"x\""), Some("[1]"), Some("{\"a\":1"), Some("}")] {
            assert!(
                FrameCache::extended(&FrameBody::new("update", payload), "filtered", "[]").is_none(),
                "{payload:?}"
            );
        }
    }

    /// WebSocket bytes are encoded on the first `ws()` only, and counted at
    /// their exact length before that.
    #[test]
    fn websocket_bytes_are_encoded_on_demand_and_counted_before() {
        let long = "x".repeat(100);
        let payloads = [None, Some("{\"a\":\"\\\"\u{1}\n\t é\"}"), Some(long.as_str())];
        for payload in payloads {
            for id in [None, Some(EventId { seq: 9, text: "k3x9:9".into() })] {
                let body = FrameBody::with_id("up\"date", payload, id, None);
                let mut cache = FrameCache::new(Arc::clone(&body));
                let streams: [Arc<str>; 2] = [Arc::from(r#"["public"]"#), Arc::from(r#"["hashtag","a\"b"]"#)];
                let frames: Vec<FrameRef> =
                    [(0, false), (1, true)].iter().map(|&(s, w)| cache.get(&streams[s], w).clone()).collect();
                let counted = cache.heap_bytes();
                for f in &frames {
                    assert!(f.ws.get().is_none(), "not encoded before the first ws()");
                    let expected = f.ws_len();
                    assert_eq!(f.ws().len(), expected);
                    assert!(std::ptr::eq(f.ws(), f.ws()), "encoded once");
                }
                assert_eq!(cache.heap_bytes(), counted, "the count did not change with the encoding");
            }
        }
    }

    /// A frame is freed exactly when its last reference goes, however the
    /// references were made: clones, credits taken in bulk on several
    /// threads (with credits left over), and the C ABI's raw pointers. The
    /// body's `Arc` count tells whether the frame still exists.
    #[test]
    fn frame_refs_and_credits_free_the_frame_once_with_the_last_reference() {
        let body = FrameBody::new("update", Some("{}"));
        let stream: Arc<str> = Arc::from(r#"["public"]"#);
        let alive = |b: &Arc<FrameBody>| Arc::strong_count(b) == 2;
        let mut credits = Credits::new(FrameRef::new(Frame::new(&body, &stream)));
        // Enough to refill several times (16, 32, 64, ...), leaving some over.
        let refs: Vec<FrameRef> = (0..1000).map(|_| credits.take()).collect();
        assert!(refs.iter().all(|r| FrameRef::ptr_eq(r, credits.frame())));
        let raw = credits.frame().clone().into_raw();
        drop(credits);
        assert!(alive(&body), "references taken from credits outlive them");
        let threads: Vec<_> = refs
            .chunks(250)
            .map(|chunk| {
                let chunk = chunk.to_vec();
                std::thread::spawn(move || {
                    let mut more = Credits::new(chunk[0].clone());
                    let extra: Vec<FrameRef> = (0..100).map(|_| more.take()).collect();
                    drop((chunk, more, extra));
                })
            })
            .collect();
        drop(refs);
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert!(alive(&body), "the raw pointer still holds a reference");
        // SAFETY: `raw` came from `into_raw` and is taken back once.
        let back = unsafe { FrameRef::from_raw(raw) };
        assert_eq!(back.payload(), Some("{}"));
        drop(back);
        assert_eq!(Arc::strong_count(&body), 1, "the frame was freed with its last reference");
    }
}
