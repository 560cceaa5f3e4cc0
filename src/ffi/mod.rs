//! The C ABI (`include/evroute.h` is generated from this module
//! by cbindgen). A thin layer: each export checks its arguments, calls one
//! core method inside the panic boundary and converts the result.
//!
//! Ownership, declared once per handle:
//! - `evr_engine` owns an [`Engine`] (itself a shared reference to the
//!   routing domain, so subscribers keep it alive);
//! - `evr_subscriber` owns a [`Subscriber`];
//! - an `evr_frame` pointer is one [`FrameRef`] reference (`FrameRef::into_raw`),
//!   so a frame outlives its subscriber and engine, and handing one out
//!   allocates nothing.
//!
//! The Redis exports (`evr_redis_*`, cargo feature `redis`) live in `redis.rs`,
//! the log callback (`evr_set_log_callback`) in `logging.rs`, ready sets
//! (`evr_ready_set_*`) in `ready_set.rs`.

#![allow(non_camel_case_types)]

mod boundary;
mod logging;
mod ready_set;
#[cfg(feature = "redis")]
mod redis;

use std::ffi::{CStr, c_char, c_int};
use std::time::Duration;

use smallvec::SmallVec;

use crate::engine::{Engine, PublishStats, Subscriber};
use crate::error::{Error, ErrorKind};
use crate::frame::{Frame, FrameRef};
use crate::queue::{Batch, Next, SLOW_CONSUMER};

pub use boundary::evr_status;
use boundary::{bytes, guard, handle, out_param, pointer, status};
use evr_status::*;
pub use ready_set::*;

/// A routing domain. Free with evr_engine_free().
pub struct evr_engine {
    engine: Engine,
}

/// One client connection: a bounded frame queue, viewer filters and any
/// number of subscriptions. Free with evr_subscriber_free().
pub struct evr_subscriber {
    subscriber: Subscriber,
}

/// One immutable delivery, shared with every subscriber that received the
/// same frame. Free with evr_frame_free() or evr_frames_free().
pub struct evr_frame {
    // Never constructed: the pointer is a `FrameRef`'s frame (see `frame_into_raw`).
    _opaque: [u8; 0],
}

/// Gives up one frame reference as an `evr_frame` pointer.
fn frame_into_raw(frame: FrameRef) -> *mut evr_frame {
    frame.into_raw().cast_mut().cast()
}

/// Borrows the frame behind a pointer, refusing NULL.
///
/// # Safety
/// `frame` is NULL or came from `frame_into_raw` and was not freed.
unsafe fn frame_ref<'a>(frame: *const evr_frame) -> Result<&'a Frame, boundary::Failure> {
    // SAFETY: a non-NULL pointer is a live FrameRef's frame by the caller's contract.
    unsafe { handle(frame.cast::<Frame>(), "frame") }
}

/// Takes back the reference that `frame_into_raw` gave up.
///
/// # Safety
/// `frame` came from `frame_into_raw` and is not used again.
unsafe fn frame_release(frame: *mut evr_frame) {
    // SAFETY: per this function's contract.
    drop(unsafe { FrameRef::from_raw(frame.cast_const().cast::<Frame>()) });
}

/// What one publish did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct evr_publish_stats {
    /// Subscriptions that matched (after viewer and event filters).
    pub matched: u64,
    /// Frames placed in queues.
    pub delivered: u64,
    /// Frames dropped by overflow policies or closed subscribers.
    pub dropped: u64,
}

impl From<PublishStats> for evr_publish_stats {
    fn from(s: PublishStats) -> Self {
        evr_publish_stats { matched: s.matched, delivered: s.delivered, dropped: s.dropped }
    }
}

/// Engine-wide counters since the engine was created.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct evr_engine_stats {
    /// Events accepted by evr_publish() or evr_publish_channel().
    pub published: u64,
    /// Events rejected as bad input.
    pub rejected: u64,
    /// Subscription matches over all publishes.
    pub matched: u64,
    /// Frames placed in queues.
    pub delivered: u64,
    /// Frames dropped by overflow policies or closed subscribers.
    pub dropped: u64,
    /// Live subscribers.
    pub subscribers: u64,
    /// Live subscriptions.
    pub subscriptions: u64,
    /// History ring entries (one per retained event and channel); 0 when
    /// history is off.
    pub history_entries: u64,
    /// Bytes the history holds: entry slots plus each retained event's
    /// frames, counted once.
    pub history_bytes: u64,
}

/// One subscriber's counters. Always matched == read + depth + dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct evr_subscriber_stats {
    /// Frames routed to this subscriber.
    pub matched: u64,
    /// Frames placed in its queue.
    pub delivered: u64,
    /// Frames that will never be read (evicted, refused, or discarded on close).
    pub dropped: u64,
    /// Frames taken by evr_subscriber_next().
    pub read: u64,
    /// Frames waiting now.
    pub depth: u64,
}

/// Creates an engine from the engine config JSON
/// (`{"queue_capacity":1024,"overflow":"drop_oldest","max_event_bytes":1048576,"delete_memory":65536,"redis_namespace":null}`,
/// every key optional); `len == 0` means all defaults. On EVR_OK `*out` is a
/// new engine to free with evr_engine_free().
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `config_json` points to `len` readable bytes (or `len` is 0); `out` is
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_engine_new(config_json: *const u8, len: usize, out: *mut *mut evr_engine) -> evr_status {
    status(|| {
        let out = out_param(out, "out")?;
        // SAFETY: per this function's contract.
        let config = unsafe { bytes(config_json, len, "config_json") }?;
        let engine = Box::new(evr_engine { engine: Engine::from_json(config)? });
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { out.write(Box::into_raw(engine)) };
        Ok(EVR_OK)
    })
}

/// Frees an engine. Its subscribers stay usable (they keep the routing
/// domain alive) and its frames stay valid. NULL is a no-op.
///
/// Thread-safety: must not race with another call on the same engine.
///
/// # Safety
/// `engine` is NULL or a live engine from evr_engine_new(), not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_engine_free(engine: *mut evr_engine) {
    // SAFETY: the caller gives up this pointer from Box::into_raw.
    unsafe { boundary::free_boxed(engine) }
}

/// Creates a subscriber from the subscriber JSON (`{"account":"42","languages":["en"],
/// "blocked_accounts":[],"muted_accounts":[],"blocked_domains":[],"blocked_by_accounts":[],
/// "keyword_filters":[...],"queue_capacity":16,"overflow":"disconnect","event_ids":false}`,
/// every key optional; docs/protocol.md, "Subscriber options"); `len == 0`
/// means defaults. `account` is needed by the user, user:notification and
/// direct streams; `event_ids` puts each frame's id in its bytes (with history).
///
/// `blocked_by_accounts`: accounts that block the viewer; their statuses are
/// not delivered on public and hashtag streams (author only, as Mastodon).
/// `keyword_filters`: when present (even `[]`), `update` and `status.update`
/// payloads on public and hashtag streams get a last key `filtered`, as
/// Mastodon computes it. Each filter is `{"id":"5","title":"Spoilers",
/// "context":["public"],"expires_at":"2026-12-01T00:00:00.000Z" or null,
/// "filter_action":"warn" or "hide","keywords":[{"keyword":"dune","whole_word":true}]}`;
/// a malformed filter is EVR_ERR_INVALID_CONFIG with a message naming it.
/// On EVR_OK `*out` is a new subscriber to free with evr_subscriber_free().
///
/// Thread-safety: may be called from any thread, concurrently with any call
/// on the same engine.
///
/// # Safety
/// `engine` is NULL or live; `json` points to `len` readable bytes (or `len`
/// is 0); `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscriber_new(
    engine: *const evr_engine,
    json: *const u8,
    len: usize,
    out: *mut *mut evr_subscriber,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let engine = unsafe { handle(engine, "engine") }?;
        let out = out_param(out, "out")?;
        // SAFETY: per this function's contract.
        let json = unsafe { bytes(json, len, "json") }?;
        let subscriber = Box::new(evr_subscriber { subscriber: engine.engine.subscriber_from_json(json)? });
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { out.write(Box::into_raw(subscriber)) };
        Ok(EVR_OK)
    })
}

/// Replaces the subscriber's viewer state with the JSON object's
/// `languages`, `blocked_accounts`, `muted_accounts`, `blocked_domains`,
/// `blocked_by_accounts` and `keyword_filters` (see evr_subscriber_new());
/// absent keys become empty, and without `keyword_filters` the subscriber
/// is no longer filter-annotated. The state is replaced as a whole: a
/// concurrent publish sees the old state or the new one, never a mix.
/// Other keys, or a malformed value, are EVR_ERR_INVALID_CONFIG and keep
/// the previous state.
///
/// Thread-safety: may be called from any thread, concurrently with
/// publishes and reads.
///
/// # Safety
/// `subscriber` is NULL or live; `json` points to `len` readable bytes (or
/// `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscriber_update(
    subscriber: *const evr_subscriber,
    json: *const u8,
    len: usize,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let (subscriber, json) = unsafe { (handle(subscriber, "subscriber")?, bytes(json, len, "json")?) };
        subscriber.subscriber.update(json)?;
        Ok(EVR_OK)
    })
}

/// Frees a subscriber: unsubscribes everything and closes its queue. Frames
/// already taken stay valid. NULL is a no-op.
///
/// Thread-safety: must not race with another call on the same subscriber
/// (use evr_subscriber_close() to wake a thread blocked in
/// evr_subscriber_next() first).
///
/// # Safety
/// `subscriber` is NULL or a live subscriber, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscriber_free(subscriber: *mut evr_subscriber) {
    // SAFETY: the caller gives up this pointer from Box::into_raw.
    unsafe { boundary::free_boxed(subscriber) }
}

/// Unsubscribes everything and closes the queue without freeing the
/// subscriber: waiting and later evr_subscriber_next() calls return
/// EVR_CLOSED, and the readiness fd becomes readable.
///
/// Thread-safety: may be called from any thread, also while another thread
/// waits in evr_subscriber_next().
///
/// # Safety
/// `subscriber` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscriber_close(subscriber: *const evr_subscriber) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        unsafe { handle(subscriber, "subscriber") }?.subscriber.close();
        Ok(EVR_OK)
    })
}

/// Why the subscriber is closed: "slow consumer" (overflow policy
/// `disconnect`) or "closed" (evr_subscriber_close()); NULL while it is open
/// or when `subscriber` is NULL. The string is static.
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `subscriber` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscriber_closed(subscriber: *const evr_subscriber) -> *const c_char {
    pointer(|| {
        // SAFETY: per this function's contract.
        let subscriber = unsafe { handle(subscriber, "subscriber") }?;
        Ok(match subscriber.subscriber.closed() {
            None => std::ptr::null(),
            Some(SLOW_CONSUMER) => c"slow consumer".as_ptr(),
            Some(_) => c"closed".as_ptr(),
        })
    })
}

/// Adds a subscription from its JSON (`{"stream":S,"tag"?:T,"list"?:L,"only_media"?:B,
/// "events"?:[...],"origin"?:"local"|"remote"}`; `type` and other keys are
/// ignored, so a client's WebSocket subscribe message can be passed as is).
/// Streams: public, public:media, public:local, public:local:media,
/// public:remote, public:remote:media, hashtag and hashtag:local (with
/// `tag`), list (with `list`), user, user:notification and direct (with the
/// subscriber's `account`). `events` keeps only those event names or
/// `prefix.*` patterns. `origin`, on public and hashtag streams
/// only, keeps statuses of that origin; frames still carry the stream asked for.
/// A subscription that listens to the same channels as an existing one is
/// a no-op and also returns EVR_OK. A refused subscription leaves the others
/// as they were.
///
/// Thread-safety: may be called from any thread, concurrently with
/// publishes and reads.
///
/// # Safety
/// `subscriber` is NULL or live; `json` points to `len` readable bytes (or
/// `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscribe(subscriber: *const evr_subscriber, json: *const u8, len: usize) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let (subscriber, json) = unsafe { (handle(subscriber, "subscriber")?, bytes(json, len, "json")?) };
        subscriber.subscriber.subscribe(json)?;
        Ok(EVR_OK)
    })
}

/// Replays what the subscriber's client missed (docs/protocol.md, "Event ids,
/// history and resume"). `last_id` is the
/// `<epoch>:<seq>` id of the last frame the client saw (the SSE
/// `Last-Event-ID` header, or a WebSocket parameter). Call it after
/// evr_subscribe() and before the first evr_subscriber_next(). The queue then
/// holds, in seq order and through the same filters, every retained frame of
/// the subscriber's channels with a later seq (plus frames already queued
/// since subscribing), and live frames follow with no gap and no duplicate,
/// even while other threads publish.
///
/// Returns EVR_OK when nothing was lost, or EVR_GAP when some events may be
/// missing: the id is from another engine run, the history no longer
/// reaches back to it, history is off, or the queue could not hold the whole
/// replay. What was retained is delivered in both cases; on EVR_GAP the
/// host should tell its client (the streaming server sends `evroute.gap`).
/// A malformed id is EVR_ERR_INVALID_ID; a closed subscriber
/// EVR_ERR_INVALID_SUBSCRIPTION. The queue's capacity should exceed the
/// history's max_events, or a full replay overflows it (EVR_GAP).
///
/// Publishes wait while the replay is queued (about a microsecond per frame).
///
/// Thread-safety: may be called from any thread, concurrently with
/// publishes (frames the client already read are not taken back).
///
/// # Safety
/// `subscriber` is NULL or live; `last_id` points to `len` readable bytes
/// (or `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscriber_resume(
    subscriber: *const evr_subscriber,
    last_id: *const u8,
    len: usize,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let (subscriber, last_id) = unsafe { (handle(subscriber, "subscriber")?, bytes(last_id, len, "last_id")?) };
        let last_id = std::str::from_utf8(last_id).map_err(crate::Error::utf8)?;
        let resumed = subscriber.subscriber.resume(last_id)?;
        Ok(if resumed.gap { EVR_GAP } else { EVR_OK })
    })
}

/// Removes the subscription that the same JSON would have created. EVR_OK
/// also when there was none.
///
/// Thread-safety: may be called from any thread, concurrently with
/// publishes and reads.
///
/// # Safety
/// `subscriber` is NULL or live; `json` points to `len` readable bytes (or
/// `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_unsubscribe(subscriber: *const evr_subscriber, json: *const u8, len: usize) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let (subscriber, json) = unsafe { (handle(subscriber, "subscriber")?, bytes(json, len, "json")?) };
        subscriber.subscriber.unsubscribe(json)?;
        Ok(EVR_OK)
    })
}

/// Content mode: routes an event by its own content: a Mastodon envelope
/// `{"event":E,"payload":P,"recipients"?:[ids],"lists"?:[ids]}` or a community
/// webhook event `{"event_id":N,"type":T,"created":F,"data":{...}}`; the
/// channels each event goes to are in docs/protocol.md, "Content mode". `out` may
/// be NULL when the counts are not needed. A rejected event delivers
/// nothing and leaves the engine fully usable. Never blocks on a slow
/// subscriber.
///
/// Thread-safety: may be called from any thread, concurrently with any
/// other call on the engine and its subscribers.
///
/// # Safety
/// `engine` is NULL or live; `event` points to `len` readable bytes (or
/// `len` is 0); `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_publish(
    engine: *const evr_engine,
    event: *const u8,
    len: usize,
    out: *mut evr_publish_stats,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let (engine, event) = unsafe { (handle(engine, "engine")?, bytes(event, len, "event")?) };
        let stats = engine.engine.publish(event)?;
        // SAFETY: NULL or writable by contract.
        if let Some(out) = unsafe { out.as_mut() } {
            *out = stats.into();
        }
        Ok(EVR_OK)
    })
}

/// Channel mode: a Mastodon Redis channel, prefixed with the engine's
/// namespace if it has one (`timeline:public[:local|:remote][:media]`,
/// `timeline:hashtag:<tag>[:local]`, `timeline:<account>[:notifications]`,
/// `timeline:list:<id>`, `timeline:direct:<account>`; others are
/// EVR_ERR_INVALID_CHANNEL) and message `{"event":E,"payload":P}`. `out` may be
/// NULL when the counts are not needed.
///
/// Thread-safety: may be called from any thread, concurrently with any
/// other call on the engine and its subscribers.
///
/// # Safety
/// `engine` is NULL or live; `channel` and `message` point to `clen` and
/// `mlen` readable bytes (or their length is 0); `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_publish_channel(
    engine: *const evr_engine,
    channel: *const u8,
    clen: usize,
    message: *const u8,
    mlen: usize,
    out: *mut evr_publish_stats,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let engine = unsafe { handle(engine, "engine") }?;
        // SAFETY: per this function's contract.
        let (channel, message) = unsafe { (bytes(channel, clen, "channel")?, bytes(message, mlen, "message")?) };
        let stats = engine.engine.publish_channel(channel, message)?;
        // SAFETY: NULL or writable by contract.
        if let Some(out) = unsafe { out.as_mut() } {
            *out = stats.into();
        }
        Ok(EVR_OK)
    })
}

/// Takes the next frame, waiting up to `timeout_ms` milliseconds (0: don't
/// wait). Returns EVR_OK with a new frame in `*out` (free it with
/// evr_frame_free()), EVR_EMPTY (timeout 0, nothing queued), EVR_TIMEOUT, or
/// EVR_CLOSED once the subscriber is closed.
///
/// Thread-safety: may be called from any thread; several readers of one
/// subscriber each get different frames.
///
/// # Safety
/// `subscriber` is NULL or live; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscriber_next(
    subscriber: *const evr_subscriber,
    timeout_ms: u32,
    out: *mut *mut evr_frame,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let subscriber = unsafe { handle(subscriber, "subscriber") }?;
        let out = out_param(out, "out")?;
        Ok(match subscriber.subscriber.next(timeout(timeout_ms)) {
            Next::Frame(frame) => {
                // SAFETY: checked non-NULL; writable by contract.
                unsafe { out.write(frame_into_raw(frame)) };
                EVR_OK
            }
            Next::Empty => EVR_EMPTY,
            Next::Timeout => EVR_TIMEOUT,
            Next::Closed(_) => EVR_CLOSED,
        })
    })
}

/// Takes up to `max` frames at once (oldest first) into `frames[0..*n]`,
/// waiting up to `timeout_ms` for the first, with one lock and no
/// allocation. Returns EVR_OK with `*n >= 1` (free each frame with
/// evr_frame_free(), or all of them with evr_frames_free()), or, with `*n`
/// untouched, EVR_EMPTY, EVR_TIMEOUT or EVR_CLOSED as evr_subscriber_next().
/// `max == 0` is EVR_ERR_INVALID_CONFIG.
///
/// Thread-safety: as evr_subscriber_next().
///
/// # Safety
/// `subscriber` is NULL or live; `frames` is NULL or has room for `max`
/// pointers; `n` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscriber_next_batch(
    subscriber: *const evr_subscriber,
    timeout_ms: u32,
    frames: *mut *mut evr_frame,
    max: usize,
    n: *mut usize,
) -> evr_status {
    // SAFETY: per this function's contract.
    unsafe { next_batch(subscriber, timeout_ms, frames, max, n, |_, _| {}) }
}

/// A byte string inside a frame: the same layout as POSIX `struct iovec`
/// (`void *iov_base; size_t iov_len;`), so an array of them can go to
/// writev() as it is.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct evr_bytes {
    pub ptr: *const u8,
    pub len: usize,
}

/// evr_subscriber_next_batch() that also hands out one encoding of each
/// frame without copying: `iov[i]` points into `frames[i]` and stays valid
/// until that frame is freed. SSE bytes can go to a socket with
/// `writev(fd, (struct iovec *)iov, *n)`; WebSocket hosts send each
/// `iov[i]` as one message. Outcomes as for evr_subscriber_next_batch().
///
/// Thread-safety: as evr_subscriber_next().
///
/// # Safety
/// `subscriber` is NULL or live; `frames` and `iov` are NULL or have room
/// for `max` entries; `n` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscriber_next_iov(
    subscriber: *const evr_subscriber,
    timeout_ms: u32,
    encoding: evr_encoding,
    frames: *mut *mut evr_frame,
    iov: *mut evr_bytes,
    max: usize,
    n: *mut usize,
) -> evr_status {
    if iov.is_null() {
        return status(|| Err(boundary::null_argument("iov")));
    }
    let entry = |i: usize, frame: &Frame| {
        let bytes = encoding.of(frame);
        // SAFETY: i < max, and `iov` has room for `max` entries by contract.
        unsafe { iov.add(i).write(evr_bytes { ptr: bytes.as_ptr(), len: bytes.len() }) };
    };
    // SAFETY: per this function's contract.
    unsafe { next_batch(subscriber, timeout_ms, frames, max, n, entry) }
}

/// Which bytes of a frame evr_subscriber_read() copies.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum evr_encoding {
    /// Server-Sent Events: `event: E\ndata: P\n\n` (evr_frame_sse()).
    EVR_ENCODING_SSE = 0,
    /// The WebSocket message text (evr_frame_ws()).
    EVR_ENCODING_WS = 1,
}

impl evr_encoding {
    fn of(self, frame: &Frame) -> &[u8] {
        match self {
            evr_encoding::EVR_ENCODING_SSE => frame.sse(),
            evr_encoding::EVR_ENCODING_WS => frame.ws(),
        }
    }

    /// The same bytes in pieces, for a copy: SSE with an event id is not
    /// joined in memory first.
    fn parts(self, frame: &Frame) -> [&[u8]; 4] {
        match self {
            evr_encoding::EVR_ENCODING_SSE => frame.sse_parts(),
            evr_encoding::EVR_ENCODING_WS => [b"", b"", b"", frame.ws()],
        }
    }
}

/// Frames taken per lock by evr_subscriber_read(); their bytes are copied
/// after the lock is released.
const READ_CHUNK: usize = 64;

/// Copies one encoding of the waiting frames, oldest first and whole
/// frames only, into `buf` one after the other, up to `cap` bytes and
/// `max` frames, waiting up to `timeout_ms` for the first. The frames are
/// taken (as by evr_subscriber_next()); nothing is allocated per frame.
///
/// On EVR_OK, `*n_frames >= 1` frames were copied, `*n_bytes` bytes in
/// all, and when `lens` is not NULL `lens[i]` is the length of frame i (a
/// WebSocket host needs it to send each frame as its own message; SSE
/// bytes can go to the socket as they are). When `queued_at` is not NULL,
/// `queued_at[i]` is frame i's evr_frame_queued_at() (0: none), from which
/// a host measures delivery latency when it has written the bytes. EVR_EMPTY, EVR_TIMEOUT and
/// EVR_CLOSED are as for evr_subscriber_next(), with nothing written.
/// EVR_BUFFER_TOO_SMALL: the oldest frame alone is longer than `cap`; it
/// stays queued, and `*n_bytes` is its length (the one case where an
/// out-parameter is written without EVR_OK). `max == 0` is
/// EVR_ERR_INVALID_CONFIG.
///
/// `emptied` may be NULL. On EVR_OK, `*emptied` is 1 when the call took the
/// last waiting frame and 0 when frames are left (a byte or frame cap was
/// reached). A host of a ready set (evr_ready_set_new()) drains a token's
/// subscriber until this is 1 or the status is EVR_EMPTY or EVR_CLOSED; if
/// it stops earlier it must come back to that subscriber itself, since no
/// new token is listed while frames are left.
///
/// Thread-safety: as evr_subscriber_next(); several readers each get
/// different frames.
///
/// # Safety
/// `subscriber` is NULL or live; `buf` is NULL or has `cap` writable bytes;
/// `lens` and `queued_at` are NULL or have room for `max` values;
/// `n_frames`, `n_bytes` and `emptied` are NULL or writable.
#[allow(clippy::too_many_arguments)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscriber_read(
    subscriber: *const evr_subscriber,
    timeout_ms: u32,
    encoding: evr_encoding,
    buf: *mut u8,
    cap: usize,
    lens: *mut usize,
    queued_at: *mut u64,
    max: usize,
    n_frames: *mut usize,
    n_bytes: *mut usize,
    emptied: *mut c_int,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let subscriber = unsafe { handle(subscriber, "subscriber") }?;
        let buf = out_param(buf, "buf")?;
        let (n_frames, n_bytes) = (out_param(n_frames, "n_frames")?, out_param(n_bytes, "n_bytes")?);
        if max == 0 {
            return Err(Error::new(ErrorKind::InvalidConfig, "max is 0: no frame could be taken").into());
        }
        let (mut frames, mut used, mut needed) = (0usize, 0usize, 0usize);
        let mut left_empty;
        let mut wait = timeout(timeout_ms);
        let mut chunk: SmallVec<[FrameRef; READ_CHUNK]> = SmallVec::new();
        loop {
            let room = (max - frames).min(READ_CHUNK);
            let mut planned = used;
            let batch = subscriber.subscriber.next_batch(
                wait,
                room,
                |f| {
                    needed = encoding.parts(f).iter().map(|p| p.len()).sum();
                    let fits = needed <= cap - planned;
                    planned += if fits { needed } else { 0 };
                    fits
                },
                |f| chunk.push(f),
            );
            // Empty or closed after a full chunk: nothing is left either.
            left_empty = !matches!(batch, Batch::Taken { emptied: false, .. });
            for frame in chunk.drain(..) {
                let start = used;
                for bytes in encoding.parts(&frame) {
                    // SAFETY: the frame's parts fit from `start` (checked by
                    // `fits`) and `buf` has `cap` writable bytes by contract.
                    unsafe { buf.add(used).copy_from_nonoverlapping(bytes.as_ptr(), bytes.len()) };
                    used += bytes.len();
                }
                if !lens.is_null() {
                    // SAFETY: `lens` has room for `max` values by contract.
                    unsafe { lens.add(frames).write(used - start) };
                }
                if !queued_at.is_null() {
                    // SAFETY: `queued_at` has room for `max` values by contract.
                    unsafe { queued_at.add(frames).write(frame.queued_at().unwrap_or(0)) };
                }
                frames += 1;
            }
            match batch {
                // A full chunk: more may wait; take them without waiting.
                Batch::Taken { n, emptied: false } if n == room && frames < max && used < cap => wait = Duration::ZERO,
                _ if frames > 0 => break,
                Batch::Taken { .. } => {
                    // SAFETY: checked non-NULL; writable by contract.
                    unsafe { n_bytes.write(needed) };
                    return Ok(EVR_BUFFER_TOO_SMALL);
                }
                other => return Ok(batch_status(other)),
            }
        }
        // SAFETY: checked non-NULL; writable by contract.
        unsafe {
            n_frames.write(frames);
            n_bytes.write(used);
            if !emptied.is_null() {
                emptied.write(c_int::from(left_empty));
            }
        }
        Ok(EVR_OK)
    })
}

/// The body of the batch reads: takes up to `max` frames into `frames`,
/// calling `also(i, frame)` for each before it is handed out.
///
/// # Safety
/// `subscriber` is NULL or live; `frames` is NULL or has room for `max`
/// pointers; `n` is NULL or writable; `also` may write entry `i < max`.
unsafe fn next_batch(
    subscriber: *const evr_subscriber,
    timeout_ms: u32,
    frames: *mut *mut evr_frame,
    max: usize,
    n: *mut usize,
    mut also: impl FnMut(usize, &Frame),
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let subscriber = unsafe { handle(subscriber, "subscriber") }?;
        let frames = out_param(frames, "frames")?;
        let n = out_param(n, "n")?;
        if max == 0 {
            return Err(Error::new(ErrorKind::InvalidConfig, "max is 0: no frame could be taken").into());
        }
        let mut taken = 0;
        let batch = subscriber.subscriber.next_batch(
            timeout(timeout_ms),
            max,
            |_| true,
            |frame| {
                also(taken, &frame);
                // SAFETY: taken < max, and `frames` has room for `max` by contract.
                unsafe { frames.add(taken).write(frame_into_raw(frame)) };
                taken += 1;
            },
        );
        Ok(match batch {
            Batch::Taken { .. } => {
                // SAFETY: checked non-NULL; writable by contract.
                unsafe { n.write(taken) };
                EVR_OK
            }
            other => batch_status(other),
        })
    })
}

fn timeout(ms: u32) -> Duration {
    Duration::from_millis(ms.into())
}

/// The status of a read that took no frame.
fn batch_status(batch: Batch) -> evr_status {
    match batch {
        Batch::Taken { .. } => EVR_OK,
        Batch::Empty => EVR_EMPTY,
        Batch::Timeout => EVR_TIMEOUT,
        Batch::Closed(_) => EVR_CLOSED,
    }
}

/// Stores in `*out` a file descriptor that polls readable (POLLIN) while
/// frames are waiting or after the subscriber was closed, so a host event
/// loop can put it into poll/epoll instead of busy polling. It is
/// level-triggered: drain with evr_subscriber_next() until EVR_EMPTY. The
/// fd is owned by the subscriber and lives until evr_subscriber_free():
/// never read, write or close it. Repeated calls give the same fd.
/// EVR_ERR_IO when it cannot be created (for example no fds left);
/// EVR_ERR_INVALID_CONFIG when the subscriber is attached to a ready set
/// (evr_subscriber_attach_ready_set()), whose fd serves it instead.
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `subscriber` is NULL or live; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscriber_fd(subscriber: *const evr_subscriber, out: *mut c_int) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let subscriber = unsafe { handle(subscriber, "subscriber") }?;
        let out = out_param(out, "out")?;
        let fd = subscriber.subscriber.ready_fd()?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { out.write(fd) };
        Ok(EVR_OK)
    })
}

/// Stores the engine's counters in `*out`.
///
/// Thread-safety: may be called from any thread at any time.
///
/// # Safety
/// `engine` is NULL or live; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_engine_get_stats(engine: *const evr_engine, out: *mut evr_engine_stats) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let engine = unsafe { handle(engine, "engine") }?;
        let out = out_param(out, "out")?;
        let s = engine.engine.stats();
        let stats = evr_engine_stats {
            published: s.published,
            rejected: s.rejected,
            matched: s.matched,
            delivered: s.delivered,
            dropped: s.dropped,
            subscribers: s.subscribers,
            subscriptions: s.subscriptions,
            history_entries: s.history_entries,
            history_bytes: s.history_bytes,
        };
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { out.write(stats) };
        Ok(EVR_OK)
    })
}

/// Stores the subscriber's counters in `*out`.
///
/// Thread-safety: may be called from any thread at any time.
///
/// # Safety
/// `subscriber` is NULL or live; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscriber_get_stats(
    subscriber: *const evr_subscriber,
    out: *mut evr_subscriber_stats,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let subscriber = unsafe { handle(subscriber, "subscriber") }?;
        let out = out_param(out, "out")?;
        let s = subscriber.subscriber.stats();
        let stats = evr_subscriber_stats {
            matched: s.matched,
            delivered: s.delivered,
            dropped: s.dropped,
            read: s.read,
            depth: s.depth,
        };
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { out.write(stats) };
        Ok(EVR_OK)
    })
}

/// Gives one of a frame's byte strings and its length.
///
/// # Safety
/// `frame` is NULL or live; `len` is NULL or writable.
unsafe fn frame_bytes(
    frame: *const evr_frame,
    len: *mut usize,
    part: impl FnOnce(&Frame) -> Option<&[u8]>,
) -> *const u8 {
    pointer(|| {
        // SAFETY: per the caller's contract.
        let frame = unsafe { frame_ref(frame) }?;
        let len = out_param(len, "len")?;
        let (ptr, n) = part(frame).map_or((std::ptr::null(), 0), |b| (b.as_ptr(), b.len()));
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { len.write(n) };
        Ok(ptr)
    })
}

/// The frame's SSE bytes (`event: E\ndata: P\n\n`), not NUL-terminated;
/// `*len` gets the length. Valid until evr_frame_free(). NULL when `frame`
/// or `len` is NULL.
///
/// Thread-safety: a frame is immutable; any thread may read it.
///
/// # Safety
/// `frame` is NULL or live; `len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_frame_sse(frame: *const evr_frame, len: *mut usize) -> *const u8 {
    // SAFETY: per this function's contract.
    unsafe { frame_bytes(frame, len, |f| Some(f.sse())) }
}

/// The frame's WebSocket message (`{"stream":[...],"event":"E","payload":"..."}`),
/// not NUL-terminated; `*len` gets the length. Valid until evr_frame_free().
/// NULL when `frame` or `len` is NULL.
///
/// Thread-safety: a frame is immutable; any thread may read it.
///
/// # Safety
/// `frame` is NULL or live; `len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_frame_ws(frame: *const evr_frame, len: *mut usize) -> *const u8 {
    // SAFETY: per this function's contract.
    unsafe { frame_bytes(frame, len, |f| Some(f.ws())) }
}

/// The frame's event name (UTF-8, not NUL-terminated); `*len` gets the
/// length. Valid until evr_frame_free(). NULL when `frame` or `len` is NULL.
///
/// Thread-safety: a frame is immutable; any thread may read it.
///
/// # Safety
/// `frame` is NULL or live; `len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_frame_event(frame: *const evr_frame, len: *mut usize) -> *const u8 {
    // SAFETY: per this function's contract.
    unsafe { frame_bytes(frame, len, |f| Some(f.event().as_bytes())) }
}

/// When the message of the frame's event was queued, in milliseconds since
/// the Unix epoch: its `queued_at`, which Rails sets on every message it
/// publishes to Redis. 0 when the message had none, or `frame` is NULL.
///
/// Thread-safety: a frame is immutable; any thread may read it.
///
/// # Safety
/// `frame` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_frame_queued_at(frame: *const evr_frame) -> u64 {
    guard(0, || {
        // SAFETY: per this function's contract.
        unsafe { frame_ref(frame) }.map_or(0, |f| f.queued_at().unwrap_or(0))
    })
}

/// The frame's payload string (JSON text of an object payload, or the raw
/// string), not NUL-terminated; `*len` gets the length. NULL with `*len = 0`
/// when the event has no payload; NULL (len untouched) when `frame` or `len`
/// is NULL. Valid until evr_frame_free().
///
/// Thread-safety: a frame is immutable; any thread may read it.
///
/// # Safety
/// `frame` is NULL or live; `len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_frame_payload(frame: *const evr_frame, len: *mut usize) -> *const u8 {
    // SAFETY: per this function's contract.
    unsafe { frame_bytes(frame, len, |f| f.payload().map(str::as_bytes)) }
}

/// The frame's stream array as JSON text (e.g. `["hashtag","Rust"]`), not
/// NUL-terminated; `*len` gets the length. Valid until evr_frame_free().
/// NULL when `frame` or `len` is NULL.
///
/// Thread-safety: a frame is immutable; any thread may read it.
///
/// # Safety
/// `frame` is NULL or live; `len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_frame_stream(frame: *const evr_frame, len: *mut usize) -> *const u8 {
    // SAFETY: per this function's contract.
    unsafe { frame_bytes(frame, len, |f| Some(f.stream().as_bytes())) }
}

/// The frame's event id `<epoch>:<seq>` (ASCII, not NUL-terminated); `*len`
/// gets the length. It is present on every frame when the engine keeps
/// history, whether or not the subscriber asked for `"event_ids": true`
/// (which also puts it in the SSE and WebSocket bytes). NULL with
/// `*len = 0` when history is off; NULL (len untouched) when `frame` or
/// `len` is NULL. Valid until evr_frame_free().
///
/// Thread-safety: a frame is immutable; any thread may read it.
///
/// # Safety
/// `frame` is NULL or live; `len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_frame_id(frame: *const evr_frame, len: *mut usize) -> *const u8 {
    // SAFETY: per this function's contract.
    unsafe { frame_bytes(frame, len, |f| f.id().map(str::as_bytes)) }
}

/// Frees a frame taken by evr_subscriber_next() or
/// evr_subscriber_next_batch(). NULL is a no-op.
///
/// Thread-safety: any thread, once per frame.
///
/// # Safety
/// `frame` is NULL or a live frame, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_frame_free(frame: *mut evr_frame) {
    if !frame.is_null() {
        // SAFETY: the caller gives up this frame.
        guard((), || unsafe { frame_release(frame) });
    }
}

/// Frees the first `n` frames of `frames` (as evr_frame_free() on each; NULL
/// entries are skipped). NULL `frames` is a no-op.
///
/// Thread-safety: any thread, once per frame.
///
/// # Safety
/// `frames` is NULL or points to `n` entries, each NULL or a live frame not
/// used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_frames_free(frames: *const *mut evr_frame, n: usize) {
    if frames.is_null() || n == 0 {
        return;
    }
    guard((), || {
        // SAFETY: `n` readable entries by contract.
        for &frame in unsafe { std::slice::from_raw_parts(frames, n) } {
            if !frame.is_null() {
                // SAFETY: the caller gives up each frame.
                unsafe { frame_release(frame) };
            }
        }
    })
}

/// The message of the last failed call on this thread (NUL-terminated), or
/// "" when none failed yet. Valid until the next failed call on this
/// thread or until the thread exits; successful calls leave it alone.
/// Never NULL.
///
/// Thread-safety: thread-local; each thread sees its own last error.
#[unsafe(no_mangle)]
pub extern "C" fn evr_last_error() -> *const c_char {
    boundary::last_error()
}

const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(v) => v,
    Err(_) => panic!("the crate version contains a NUL"),
};

/// The library version, equal to Cargo.toml's and to the EVR_VERSION macro
/// of the header it was built with. Static; never NULL.
///
/// Thread-safety: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn evr_version() -> *const c_char {
    VERSION.as_ptr()
}
