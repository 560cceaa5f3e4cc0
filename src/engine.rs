//! The pipeline: parse routing keys (`event`) → look up the index (`index`)
//! → encode each frame once (`frame`) → enqueue (`queue`). Also the public
//! `Engine` and `Subscriber` handles.

use std::cell::RefCell;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ahash::{AHashMap, AHashSet};
use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::channel::{ChannelKey, strip_namespace, with_namespace};
use crate::config::{EngineConfig, SubscriberOptions, filters_from_json};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{self, RoutedEvent};
use crate::filter::ViewerFilters;
use crate::frame::{Frame, FrameBody, FrameCache, FrameRef};
use crate::history::{self, History};
use crate::index::{Index, Indexed, Members};
use crate::keyword::{self, EventMatches, FilterSet, PerSet, Registry, SetKey};
use crate::queue::{Batch, CloseReason, Next, Queue, QueueStats};
use crate::ready_set::ReadySet;
use crate::recent::{RecentStatuses, Routing};
use crate::small_list::SmallList;
use crate::subscription::{EventFilter, Keys, Origin, SubscriptionSpec};
use crate::viewer::{Peek, Viewer, ViewerState};

/// What one publish did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PublishStats {
    /// Subscriptions that matched (after viewer and event filters).
    pub matched: u64,
    /// Frames placed in queues.
    pub delivered: u64,
    /// Frames dropped by overflow policies or closed subscribers.
    pub dropped: u64,
}

impl std::ops::AddAssign for PublishStats {
    fn add_assign(&mut self, o: PublishStats) {
        self.matched += o.matched;
        self.delivered += o.delivered;
        self.dropped += o.dropped;
    }
}

/// Engine-wide counters, readable at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Events accepted by `publish` or `publish_channel`.
    pub published: u64,
    /// Events rejected as bad input.
    pub rejected: u64,
    pub matched: u64,
    pub delivered: u64,
    pub dropped: u64,
    /// Live subscribers and subscriptions.
    pub subscribers: u64,
    pub subscriptions: u64,
    /// History ring entries (one per event and channel) and the bytes they
    /// hold: entry slots plus each retained event's frames, counted once.
    pub history_entries: u64,
    pub history_bytes: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    rejected: AtomicU64,
    matched: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    subscribers: AtomicU64,
    subscriptions: AtomicU64,
}

/// The part of a subscriber that subscriptions in the index point to.
/// The queue comes first so that prefetching the core fetches the queue.
///
/// Layout budget (issue 13: at most 300 bytes per idle subscriber with one
/// subscription): 120 bytes, so that with the `Arc` counts (16) and glibc's
/// chunk header (8) it takes a 144-byte chunk. The queue 64 (with the flags
/// in its padding), the viewer state's tag and pointer 16, the subscription
/// list 24, the account 16. One more byte past 120 costs 16 per subscriber.
#[repr(C)]
pub(crate) struct SubscriberCore {
    queue: Queue<CoreFlags>,
    /// Right after the queue, so its tag (bytes 64..72) is in the second
    /// line `Queue::prefetch` brings in, whatever the core's 16-byte
    /// alignment. Read without a lock; written under `subscriptions`' lock
    /// (src/viewer.rs has the rule).
    viewer: Viewer,
    /// Owned here (not by the handle) so that a subscriber disconnected as a
    /// slow consumer can be taken out of the index after the publish. The
    /// `Arc` cycle core → subscription → core is broken by `unsubscribe_all`.
    subscriptions: Mutex<SmallList<Arc<Subscription>>>,
    account: Option<Box<str>>,
}

const _: () = assert!(std::mem::size_of::<SubscriberCore>() == 120);

/// A subscriber's flags, kept in its queue's padding.
struct CoreFlags {
    event_ids: bool,
}

/// One subscription as stored in the index. `repr(C)`, what a delivery
/// reads first: those 32 bytes lie within the 48 the index walk prefetches.
///
/// Layout budget: 56 bytes, so that with the `Arc` counts (16) and glibc's
/// chunk header (8) it takes an 80-byte chunk; hence a thin stream pointer
/// and the flags in the stamp's top byte.
#[repr(C)]
pub(crate) struct Subscription {
    core: Arc<SubscriberCore>,
    stream: StreamArray,
    events: Option<Box<EventFilter>>,
    /// The flags (`FLAG_*`, fixed at creation) in the top byte, the stamp
    /// the index assigns on insert in the rest; unique per subscription (a
    /// walk reads it for every entry).
    flags_seq: AtomicU64,
    /// Where the index lists it, which also gives its channel keys.
    members: Members<Subscription>,
}

const _: () = assert!(std::mem::size_of::<Subscription>() == 56);

/// Bits of a stamp: 2^56 subscribes, centuries at millions a second.
const SEQ_BITS: u32 = 56;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// Viewer filters apply (a public or hashtag stream).
const FLAG_VIEWER_FILTERED: u64 = 1;
/// Copied from the subscriber: frames carry their id.
const FLAG_EVENT_IDS: u64 = 2;
const FLAG_LOCAL: u64 = 4;
const FLAG_REMOTE: u64 = 8;

impl Subscription {
    fn seq(&self) -> u64 {
        // Written by the index under the list locks this is read under.
        self.flags_seq.load(Ordering::Relaxed) & SEQ_MASK
    }

    fn flag(&self, flag: u64) -> bool {
        self.flags_seq.load(Ordering::Relaxed) >> SEQ_BITS & flag != 0
    }

    fn event_ids(&self) -> bool {
        self.flag(FLAG_EVENT_IDS)
    }

    fn origin(&self) -> Option<Origin> {
        if self.flag(FLAG_LOCAL) { Some(Origin::Local) } else { self.flag(FLAG_REMOTE).then_some(Origin::Remote) }
    }

    /// What the viewer state's tag says, as this subscription reads it
    /// (streams that are not viewer-filtered ignore the state).
    #[inline]
    fn peek(&self) -> Peek {
        if self.flag(FLAG_VIEWER_FILTERED) { self.core.viewer.peek() } else { Peek::Nothing }
    }

    /// Loads the viewer state once, for both the filters and the
    /// annotation: a concurrent update is seen whole or not at all.
    fn viewer_state(&self) -> Option<arc_swap::Guard<Option<Arc<ViewerState>>>> {
        (self.peek() != Peek::Nothing).then(|| self.core.viewer.load())
    }

    /// The event, origin and viewer filters of this subscription.
    fn accepts(&self, ev: &RoutedEvent<'_>, state: Option<&ViewerState>) -> bool {
        self.events.as_ref().is_none_or(|f| f.allows(&ev.name))
            && self.origin().is_none_or(|o| ev.local.is_none_or(|local| o.allows(local)))
            && ev.status.as_ref().is_none_or(|s| state.and_then(|v| v.filters.as_ref()).is_none_or(|f| f.allows(s)))
    }
}

// SAFETY: every `Subscription` is created in an `Arc` (`subscribe_spec`).
unsafe impl Indexed for Subscription {
    fn members(&self) -> &Members<Subscription> {
        &self.members
    }
    fn stamp(&self) -> u64 {
        self.seq()
    }
    fn set_stamp(&self, stamp: u64) {
        debug_assert!(stamp < SEQ_MASK, "stamps ran out");
        let flags = self.flags_seq.load(Ordering::Relaxed) & !SEQ_MASK;
        self.flags_seq.store(flags | (stamp & SEQ_MASK), Ordering::Relaxed);
    }
    fn retain(&self) {
        // SAFETY: `self` is in an `Arc`.
        unsafe { Arc::increment_strong_count(self) }
    }
    unsafe fn release(this: *const Subscription) {
        // SAFETY: a reference taken by `retain`.
        unsafe { Arc::decrement_strong_count(this) }
    }
    fn prefetch_targets(&self) {
        self.core.queue.prefetch();
    }
    fn prefetch_late(&self) {
        self.core.queue.prefetch_slot();
    }
}

struct EngineInner {
    config: EngineConfig,
    index: Index<Subscription>,
    recent: Mutex<RecentStatuses>,
    counters: Counters,
    /// Interned stream arrays, so frame lookup is a pointer compare.
    streams: Mutex<StreamInterner>,
    /// Interned keyword filter lists and their automaton (§11).
    keywords: Registry,
    history: Option<History>,
}

/// Interned stream arrays and the set size at which to purge unused ones.
type StreamInterner = (AHashSet<StreamArray>, usize);

/// An interned stream array, as a thin pointer to the `Arc<str>` frames
/// are keyed by: a subscription spends one word on it, where the `Arc<str>`
/// would take two. Hashed and compared as the string, so the interner
/// finds it by `&str`.
#[derive(Clone)]
struct StreamArray(Arc<Arc<str>>);

impl StreamArray {
    fn json(&self) -> &Arc<str> {
        &self.0
    }
}

impl std::borrow::Borrow<str> for StreamArray {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq for StreamArray {
    fn eq(&self, other: &Self) -> bool {
        *self.0 == *other.0
    }
}

impl Eq for StreamArray {}

impl std::hash::Hash for StreamArray {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        str::hash(&self.0, h)
    }
}

/// One routing domain. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new(EngineConfig::default())
    }
}

impl Engine {
    pub fn new(config: EngineConfig) -> Engine {
        Engine {
            inner: Arc::new(EngineInner {
                recent: Mutex::new(RecentStatuses::new(config.delete_memory)),
                history: config.history.map(History::new),
                config,
                index: Index::new(),
                counters: Counters::default(),
                streams: Mutex::new((AHashSet::new(), 64)),
                keywords: Registry::default(),
            }),
        }
    }

    /// Builds an engine from the config JSON of §7 (empty = defaults).
    pub fn from_json(config: &[u8]) -> Result<Engine> {
        EngineConfig::from_json(config).map(Engine::new)
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn subscriber(&self, options: SubscriberOptions) -> Subscriber {
        let inner = &self.inner;
        inner.counters.subscribers.fetch_add(1, Ordering::Relaxed);
        let state = inner.viewer_state(options.filters);
        Subscriber {
            engine: Arc::clone(inner),
            core: Arc::new(SubscriberCore {
                queue: Queue::new(
                    options.queue_capacity.unwrap_or(inner.config.queue_capacity),
                    options.overflow.unwrap_or(inner.config.overflow),
                    CoreFlags { event_ids: options.event_ids },
                ),
                viewer: Viewer::new(state),
                account: options.account.map(Into::into),
                subscriptions: Mutex::new(SmallList::default()),
            }),
        }
    }

    /// Creates a subscriber from the subscriber JSON of §7 (empty = defaults).
    pub fn subscriber_from_json(&self, json: &[u8]) -> Result<Subscriber> {
        SubscriberOptions::from_json(json).map(|o| self.subscriber(o))
    }

    /// Content mode (§3b): works out the channels from the event itself.
    pub fn publish(&self, event: &[u8]) -> Result<PublishStats> {
        let routed = self.check_size(event).and_then(|_| event::parse_content(event));
        self.deliver_or_reject(routed)
    }

    /// Channel mode (§3a): a Mastodon Redis channel and message.
    pub fn publish_channel(&self, channel: &[u8], message: &[u8]) -> Result<PublishStats> {
        match self.parse_channel(channel) {
            Ok(key) => self.publish_to(key, message),
            Err(e) => self.deliver_or_reject(Err(e)),
        }
    }

    /// `publish_channel` with the channel already parsed (the Redis node
    /// parses it to tell routed channels from system ones).
    pub(crate) fn publish_to(&self, key: ChannelKey, message: &[u8]) -> Result<PublishStats> {
        let routed = self.check_size(message).and_then(|_| event::parse_channel_message(key, message));
        self.deliver_or_reject(routed)
    }

    /// Counts the subscriptions a content-mode event matches, after event
    /// and viewer filters, without encoding or enqueuing anything (and
    /// without the delete memory). Lets benchmarks time matching apart from
    /// delivery.
    #[doc(hidden)]
    pub fn count_matches(&self, event: &[u8]) -> Result<u64> {
        let ev = event::parse_content(event)?;
        let mut matched = 0;
        for key in &ev.channels {
            self.inner.index.for_each(key, |sub| {
                matched += sub.accepts(&ev, sub.viewer_state().as_deref().and_then(Option::as_deref)) as u64
            });
        }
        Ok(matched)
    }

    /// Parses a channel name, removing the configured namespace if present.
    pub fn parse_channel(&self, channel: &[u8]) -> Result<ChannelKey> {
        let name = std::str::from_utf8(channel).map_err(Error::utf8)?;
        ChannelKey::parse(strip_namespace(self.inner.config.redis_namespace.as_deref(), name))
    }

    /// The Redis name of a channel key, with the namespace.
    pub fn channel_name(&self, key: &ChannelKey) -> String {
        with_namespace(self.inner.config.redis_namespace.as_deref(), &key.to_string())
    }

    /// Redis channels (with namespace) that at least one subscription
    /// listens to. See [`Engine::channel_generation`] to notice changes.
    pub fn active_channels(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.inner.index.keys().iter().filter(|k| k.is_redis_channel()).map(|k| self.channel_name(k)).collect();
        names.sort();
        names
    }

    /// Changes whenever a channel gains its first or loses its last listener.
    pub fn channel_generation(&self) -> u64 {
        self.inner.index.generation()
    }

    pub fn stats(&self) -> EngineStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (history_entries, history_bytes) = self.inner.history.as_ref().map_or((0, 0), History::counts);
        EngineStats {
            published: get(&c.published),
            rejected: get(&c.rejected),
            matched: get(&c.matched),
            delivered: get(&c.delivered),
            dropped: get(&c.dropped),
            subscribers: get(&c.subscribers),
            subscriptions: get(&c.subscriptions),
            history_entries,
            history_bytes,
        }
    }

    /// The epoch part of this engine's event ids; `None` without history.
    pub fn epoch(&self) -> Option<&str> {
        self.inner.history.as_ref().map(History::epoch)
    }

    fn check_size(&self, bytes: &[u8]) -> Result<()> {
        let limit = self.inner.config.max_event_bytes;
        if bytes.len() > limit {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("event is {} bytes, above the limit of {limit} bytes", bytes.len()),
            ));
        }
        Ok(())
    }

    fn deliver_or_reject(&self, routed: Result<RoutedEvent<'_>>) -> Result<PublishStats> {
        let c = &self.inner.counters;
        match routed {
            Err(e) => {
                c.rejected.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
            Ok(ev) => {
                let stats = self.inner.deliver(ev);
                c.published.fetch_add(1, Ordering::Relaxed);
                c.matched.fetch_add(stats.matched, Ordering::Relaxed);
                c.delivered.fetch_add(stats.delivered, Ordering::Relaxed);
                c.dropped.fetch_add(stats.dropped, Ordering::Relaxed);
                Ok(stats)
            }
        }
    }
}

thread_local! {
    /// Subscribers owed a readiness signal by the publishes inside
    /// [`signal_after`] on this thread; `None` outside it.
    static OWED: RefCell<Option<Vec<Arc<SubscriberCore>>>> = const { RefCell::new(None) };
}

/// Runs `f`, whose publishes on this thread leave the readiness fds of the
/// queues they fill unsignalled until `f` returns; then signals each once.
/// The Redis node wraps one socket read's messages in it, so a connection
/// is woken once per read rather than for its first frame of it. Waiting
/// readers (`Subscriber::next`) are woken at once, as always.
// Only the Redis node defers signals.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn signal_after<T>(f: impl FnOnce() -> T) -> T {
    /// Signals on drop, so that a panic in `f` still wakes the readers.
    struct Flush;
    impl Drop for Flush {
        fn drop(&mut self) {
            for core in OWED.with(|owed| owed.borrow_mut().take()).into_iter().flatten() {
                core.queue.signal();
            }
        }
    }
    OWED.with(|owed| *owed.borrow_mut() = Some(Vec::new()));
    let _flush = Flush;
    f()
}

/// State of one publish while it walks the index.
struct Delivery<'a, 'e> {
    /// Subscribers this publish closed as slow consumers; they leave the
    /// index once the walk (which holds list locks) is over.
    disconnected: Vec<Arc<SubscriberCore>>,
    engine: &'a EngineInner,
    ev: &'a RoutedEvent<'e>,
    frames: FrameCache,
    stats: PublishStats,
    /// Subscriptions filtered out, kept only when the status is remembered.
    excluded: Option<Vec<u64>>,
    /// Set when several sources may name the same subscription.
    seen: Option<AHashSet<u64>>,
    /// Annotated frames, built when the first filter-annotated viewer comes.
    annotations: Option<Annotations>,
    /// Inside [`signal_after`]: readiness signals are owed, not sent.
    owed: Option<Vec<Arc<SubscriberCore>>>,
}

/// The `filtered` annotations of one status event (§11).
struct Annotations {
    /// `None` when the payload cannot be annotated (not an object, or it
    /// already has `filtered`): annotated viewers get the plain frame.
    matches: Option<EventMatches>,
    /// Interned set → its result, so each set is evaluated once.
    by_set: PerSet,
    /// `filtered` JSON → its frames, so each distinct result is encoded
    /// once; `empty` is the `[]` result, the most common one.
    by_result: AHashMap<String, usize>,
    empty: Option<usize>,
    frames: Vec<FrameCache>,
}

impl Annotations {
    fn new(engine: &EngineInner, payload: Option<&str>) -> Annotations {
        let matches = payload
            .filter(|p| crate::json::top_level_span(p.as_bytes(), "filtered").is_none())
            .and_then(crate::text::status_text)
            .map(|text| engine.keywords.event(text, keyword::now_ms()));
        Annotations { matches, by_set: PerSet::default(), by_result: AHashMap::new(), empty: None, frames: Vec::new() }
    }

    /// What `result` gave for the set with `key` if this event knows it
    /// already (`Some(None)`: the plain frames).
    #[inline]
    fn known(&self, key: SetKey) -> Option<Option<usize>> {
        match self.matches {
            None => Some(None),
            Some(_) => self.by_set.get(key).map(|i| Some(i as usize)),
        }
    }

    /// The frames (index in `frames`) for a viewer with keyword filters
    /// `set`, or `None` for the plain frames.
    fn result(&mut self, (key, set): &(SetKey, Arc<FilterSet>), plain: &FrameCache) -> Option<usize> {
        if let Some(i) = self.by_set.get(*key) {
            return Some(i as usize);
        }
        let frames = &mut self.frames;
        let i = match self.matches.as_mut()?.evaluate(set) {
            None => match self.empty {
                Some(i) => i,
                None => *self.empty.insert(Self::encode(frames, plain, "[]")?),
            },
            Some(filtered) => match self.by_result.get(filtered) {
                Some(&i) => i,
                None => {
                    let i = Self::encode(frames, plain, filtered)?;
                    self.by_result.insert(filtered.to_owned(), i);
                    i
                }
            },
        };
        self.by_set.insert(*key, i as u32);
        Some(i)
    }

    /// The frame for a viewer with keyword filters `set` (the `event_ids`
    /// variant when `with_id`), or `None` for the plain frame.
    fn frame(
        &mut self,
        set: &(SetKey, Arc<FilterSet>),
        plain: &FrameCache,
        stream: &Arc<str>,
        with_id: bool,
    ) -> Option<FrameRef> {
        let i = self.result(set, plain)?;
        Some(self.frames[i].get(stream, with_id).clone())
    }

    /// Adds the frames of one result; returns their index.
    fn encode(frames: &mut Vec<FrameCache>, plain: &FrameCache, filtered: &str) -> Option<usize> {
        frames.push(FrameCache::extended(plain.body(), "filtered", filtered)?);
        Some(frames.len() - 1)
    }
}

impl Delivery<'_, '_> {
    fn offer(&mut self, sub: &Subscription) {
        // Decided from the viewer's tag alone when it says enough (no state,
        // or keyword filters alone whose result this event knows), which
        // leaves the state unloaded; else from the state (src/viewer.rs).
        let known = match sub.peek() {
            Peek::Nothing => Some(None),
            Peek::Keywords(_) if self.ev.status.is_none() => Some(None),
            Peek::Keywords(key) => self.annotations.as_ref().and_then(|a| a.known(key)),
            Peek::State => None,
        };
        let guard = known.is_none().then(|| sub.core.viewer.load());
        let state = guard.as_deref().and_then(Option::as_deref);
        if !sub.accepts(self.ev, state) {
            if let Some(excluded) = &mut self.excluded {
                excluded.push(sub.seq());
            }
            return;
        }
        if let Some(seen) = &mut self.seen
            && !seen.insert(sub.seq())
        {
            return;
        }
        let annotated = match (known, state.and_then(|s| s.keywords.as_ref())) {
            (Some(known), _) => known,
            (None, Some(set)) if self.ev.status.is_some() => {
                let plain = &self.frames;
                let payload = plain.body().payload();
                self.annotations.get_or_insert_with(|| Annotations::new(self.engine, payload)).result(set, plain)
            }
            (None, _) => None,
        };
        // Taken from the publish's credits: no atomic operation per delivery.
        let frame = match (annotated, &mut self.annotations) {
            (Some(i), Some(a)) => a.frames[i].take(sub.stream.json(), sub.event_ids()),
            _ => self.frames.take(sub.stream.json(), sub.event_ids()),
        };
        let outcome = match &mut self.owed {
            Some(owed) => {
                let outcome = sub.core.queue.push_deferring(frame);
                if outcome.signal_owed {
                    owed.push(Arc::clone(&sub.core));
                }
                outcome
            }
            None => sub.core.queue.push(frame),
        };
        if !outcome.accepted {
            return;
        }
        if outcome.disconnected {
            self.disconnected.push(Arc::clone(&sub.core));
        }
        self.stats.matched += 1;
        self.stats.delivered += outcome.delivered as u64;
        self.stats.dropped += outcome.dropped;
    }
}

impl EngineInner {
    fn deliver(&self, mut ev: RoutedEvent<'_>) -> PublishStats {
        // With history, publishes run one at a time, from taking the seq
        // until the event is in the rings: see `Subscriber::resume`.
        let _order = self.history.as_ref().map(|h| h.order.lock());
        let id = self.history.as_ref().map(History::next_id);
        let seq = id.as_ref().map_or(0, |id| id.seq);
        // The frame body copies the payload into its bytes: the event keeps none.
        let payload = ev.payload.take();
        let earlier = ev.deletes.as_deref().and_then(|id| self.recent.lock().take(id));
        let mut d = Delivery {
            disconnected: Vec::new(),
            engine: self,
            ev: &ev,
            frames: FrameCache::new(FrameBody::with_id(&ev.name, payload.as_deref(), id, ev.queued_at)),
            stats: PublishStats::default(),
            excluded: ev.remember.as_ref().map(|_| Vec::new()),
            seen: earlier.as_ref().map(|_| AHashSet::new()),
            annotations: None,
            owed: OWED.with(|owed| owed.borrow_mut().take()),
        };
        // A remembered status keeps each channel's walk watermark (recent.rs).
        let mut walked: SmallVec<[(ChannelKey, u64); 8]> = SmallVec::new();
        for key in &ev.channels {
            let watermark = self.index.for_each(key, |sub| d.offer(sub));
            if ev.remember.is_some() {
                walked.push((key.clone(), watermark));
            }
        }
        for routing in earlier.iter().flatten() {
            for (key, watermark) in &routing.channels {
                self.index.for_each(key, |sub| {
                    if routing.received(*watermark, sub.seq()) {
                        d.offer(sub);
                    }
                });
            }
        }
        let Delivery { disconnected, frames, stats, excluded, owed, .. } = d;
        if owed.is_some() {
            OWED.with(|slot| *slot.borrow_mut() = owed);
        }
        for core in disconnected {
            self.unsubscribe_all(&core);
        }
        if let (Some(id), Some(mut excluded)) = (ev.remember.as_deref(), excluded) {
            excluded.sort_unstable();
            excluded.dedup();
            let routing = Routing { channels: walked.into_iter().collect(), excluded: excluded.into() };
            self.recent.lock().record(id.into(), routing);
        }
        if let Some(history) = &self.history {
            // A delete is kept on the channels of the status it deletes too.
            let mut channels = ev.channels.clone();
            for (key, _) in earlier.iter().flatten().flat_map(|r| &r.channels) {
                if !channels.contains(key) {
                    channels.push(key.clone());
                }
            }
            history.record(seq, ev.into_owned(), frames, &channels);
        }
        stats
    }

    fn unsubscribe_all(&self, core: &SubscriberCore) {
        let subs = core.subscriptions.lock().take_all();
        for sub in &subs {
            self.index.remove(sub);
        }
        self.counters.subscriptions.fetch_sub(subs.len() as u64, Ordering::Relaxed);
    }

    /// Closes the queue first: `subscribe_spec` checks it under the
    /// subscriptions lock, so a subscription added while this runs is either
    /// refused or already there for `unsubscribe_all` to remove.
    fn close_subscriber(&self, core: &SubscriberCore) {
        let discarded = core.queue.close(CloseReason::Closed);
        self.counters.dropped.fetch_add(discarded, Ordering::Relaxed);
        self.unsubscribe_all(core);
    }

    /// The stored form of a viewer's filters; `None` when there are none.
    fn viewer_state(&self, mut filters: ViewerFilters) -> Option<Arc<ViewerState>> {
        if filters.is_empty() {
            return None;
        }
        let keywords = filters.keyword_filters.take().map(|list| {
            let set = self.keywords.intern(list);
            (set.key(), set)
        });
        let filters = (!filters.is_empty()).then_some(filters);
        Some(Arc::new(ViewerState { filters, keywords }))
    }

    fn intern_stream(&self, stream: String) -> StreamArray {
        let mut guard = self.streams.lock();
        let (set, purge_at) = &mut *guard;
        if let Some(s) = set.get(stream.as_str()) {
            return s.clone();
        }
        if set.len() >= *purge_at {
            set.retain(|s| Arc::strong_count(&s.0) > 1);
            *purge_at = (set.len() * 2).max(64);
        }
        let interned = StreamArray(Arc::new(Arc::from(stream)));
        set.insert(interned.clone());
        interned
    }
}

/// What [`Subscriber::resume`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resumed {
    /// Frames put in the queue, in seq order (replayed ones, and ones that
    /// were already queued when resume was called).
    pub replayed: u64,
    /// Some events after the last id may be missing: the id is from another
    /// engine run, the history no longer reaches back to it, history is
    /// off, or the queue could not hold the whole replay.
    pub gap: bool,
}

/// One client connection: a queue, viewer filters and any number of
/// subscriptions. `Send + Sync`; dropping it unsubscribes everything.
pub struct Subscriber {
    engine: Arc<EngineInner>,
    core: Arc<SubscriberCore>,
}

impl Subscriber {
    /// Adds a subscription from its JSON (§1). Returns `false` when the
    /// subscriber already listens to the same channels (a no-op, as in
    /// Mastodon).
    pub fn subscribe(&self, json: &[u8]) -> Result<bool> {
        self.subscribe_spec(&SubscriptionSpec::parse(json)?)
    }

    pub fn subscribe_spec(&self, spec: &SubscriptionSpec) -> Result<bool> {
        let keys = spec.keys(self.core.account.as_deref())?;
        let mut subs = self.core.subscriptions.lock();
        // Under the lock: `close_subscriber` closes the queue, then takes it.
        if let Some(reason) = self.core.queue.closed() {
            return Err(Error::subscription(format!("the subscriber is closed ({reason})")));
        }
        if subs.iter().any(|s| s.members.keys().eq(keys.iter())) {
            return Ok(false);
        }
        let engine = &self.engine;
        let flags = [
            (spec.stream.viewer_filtered(), FLAG_VIEWER_FILTERED),
            (self.core.queue.extra.event_ids, FLAG_EVENT_IDS),
            (spec.origin == Some(Origin::Local), FLAG_LOCAL),
            (spec.origin == Some(Origin::Remote), FLAG_REMOTE),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |all, (_, flag)| all | flag);
        let sub = Arc::new(Subscription {
            flags_seq: AtomicU64::new(flags << SEQ_BITS | SEQ_MASK),
            core: Arc::clone(&self.core),
            stream: engine.intern_stream(spec.stream_json()),
            events: spec.events.clone().map(Box::new),
            members: Members::new(keys.len()),
        });
        engine.index.insert(&sub, &keys).map_err(|e| {
            Error::subscription(format!("a subscription with channels {keys:?} cannot be indexed: {e:?}"))
        })?;
        engine.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        subs.push(sub);
        Ok(true)
    }

    /// Removes the subscription that the same JSON would have created.
    /// Returns `false` when there was none.
    pub fn unsubscribe(&self, json: &[u8]) -> Result<bool> {
        let spec = SubscriptionSpec::parse(json)?;
        let keys = spec.keys(self.core.account.as_deref())?;
        let mut subs = self.core.subscriptions.lock();
        let Some(pos) = subs.iter().position(|s| s.members.keys().eq(keys.iter())) else {
            return Ok(false);
        };
        let sub = subs.remove(pos);
        self.engine.index.remove(&sub);
        self.engine.counters.subscriptions.fetch_sub(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Replays what the subscriber missed since `last_id` (`<epoch>:<seq>`,
    /// the id of the last frame its client saw): every retained frame of
    /// its subscriptions' channels with a later seq, through the same event
    /// and viewer filters, in seq order, followed by live frames with no gap
    /// and no duplicate while other threads publish. Call it after
    /// subscribing and before reading; each call replays from `last_id`
    /// again. A malformed id is an `InvalidId` error.
    ///
    /// The ordering rule. With history on, a publish holds the history's
    /// `order` lock from taking its seq until its frames are queued and its
    /// event is in the rings, so every subscriber receives frames in seq
    /// order (which is what lets one last id stand for everything a client
    /// saw). Resume holds the same lock while it fills the queue: at that
    /// moment every event with seq <= S (the last seq taken) is complete,
    /// fanned out and retained, and every event with seq > S will be fanned
    /// out after the replay is queued, to subscriptions already in the
    /// index. So seq <= S comes from history and seq > S live, with no
    /// overlap and no hole. Frames already queued (delivered live between
    /// subscribe and now, all <= S) are taken out and merged by seq with the
    /// replay without duplicates; those at or before `last_id` are dropped
    /// as already seen.
    ///
    /// Ids are per event: a client cut off between two frames of the same
    /// event (two of its subscriptions matched it) does not get the second.
    pub fn resume(&self, last_id: &str) -> Result<Resumed> {
        let (epoch, last) = history::parse_id(last_id)?;
        if let Some(reason) = self.core.queue.closed() {
            return Err(Error::subscription(format!("the subscriber is closed ({reason})")));
        }
        let Some(history) = &self.engine.history else {
            return Ok(Resumed { replayed: 0, gap: true });
        };
        // Copied out: a publish that disconnects a slow consumer takes this
        // lock while it holds `order`.
        let subs: SmallVec<[(Arc<Subscription>, Keys); 1]> = self
            .core
            .subscriptions
            .lock()
            .iter()
            .map(|s| (Arc::clone(s), s.members.keys().cloned().collect()))
            .collect();
        let order = history.order.lock();
        let same_epoch = epoch == history.epoch();
        let from = if same_epoch { last } else { 0 };
        let mut gap = !same_epoch;
        // (seq, subscription position, frame), sorted into delivery order.
        let mut replay: Vec<(u64, usize, FrameRef)> = Vec::new();
        let mut retained = Vec::new();
        for (pos, (sub, keys)) in subs.iter().enumerate() {
            retained.clear();
            gap |= !history.collect(keys, from, &mut retained);
            // One frame per event per subscription, as a live publish gives.
            retained.sort_unstable_by_key(|r| r.seq);
            retained.dedup_by_key(|r| r.seq);
            let guard = sub.viewer_state();
            let state = guard.as_deref().and_then(Option::as_deref);
            let keywords = state.and_then(|s| s.keywords.as_ref());
            for r in retained.iter().filter(|r| sub.accepts(&r.event, state)) {
                let frame = history.with_frames(r, |plain| {
                    // Annotated as a live publish would now (§11).
                    let annotated = keywords.filter(|_| r.event.status.is_some()).and_then(|set| {
                        let payload = plain.body().payload();
                        Annotations::new(&self.engine, payload).frame(set, plain, sub.stream.json(), sub.event_ids())
                    });
                    annotated.unwrap_or_else(|| plain.get(sub.stream.json(), sub.event_ids()).clone())
                });
                replay.push((r.seq, pos, frame));
            }
        }
        replay.sort_unstable_by_key(|(seq, pos, _)| (*seq, *pos));
        let from_history = replay.len();
        let queued = self.core.queue.take_unread();
        let taken = queued.len() as u64;
        for frame in queued {
            let seq = frame.seq().unwrap_or(0);
            let pos = subs.iter().position(|(s, _)| **s.stream.json() == *frame.stream()).unwrap_or(usize::MAX);
            let seen = same_epoch && seq <= from;
            if !seen && replay[..from_history].binary_search_by_key(&(seq, pos), |(q, p, _)| (*q, *p)).is_err() {
                replay.push((seq, pos, frame));
            }
        }
        // Stable: frames queued live keep their order within one seq.
        replay.sort_by_key(|(seq, pos, _)| (*seq, *pos));
        let mut stats = PublishStats::default();
        let mut disconnected = false;
        let replaying = replay.len() as u64;
        for (_, _, frame) in replay {
            let outcome = self.core.queue.push(frame);
            if !outcome.accepted {
                break;
            }
            stats.matched += 1;
            stats.delivered += outcome.delivered as u64;
            stats.dropped += outcome.dropped;
            disconnected |= outcome.disconnected;
        }
        drop(order);
        gap |= stats.dropped > 0 || stats.matched < replaying;
        let c = &self.engine.counters;
        c.matched.fetch_add(stats.matched, Ordering::Relaxed);
        c.matched.fetch_sub(taken, Ordering::Relaxed);
        c.delivered.fetch_add(stats.delivered, Ordering::Relaxed);
        c.delivered.fetch_sub(taken, Ordering::Relaxed);
        c.dropped.fetch_add(stats.dropped, Ordering::Relaxed);
        if disconnected {
            self.engine.unsubscribe_all(&self.core);
        }
        Ok(Resumed { replayed: stats.delivered, gap })
    }

    /// Replaces the viewer state from JSON with any of `languages`,
    /// `blocked_accounts`, `muted_accounts`, `blocked_domains`,
    /// `blocked_by_accounts`, `keyword_filters`; absent keys become empty
    /// (no `keyword_filters`: no longer filter-annotated). On error the
    /// previous state stays.
    pub fn update(&self, json: &[u8]) -> Result<()> {
        self.set_filters(filters_from_json(json)?);
        Ok(())
    }

    /// Replaces the viewer state as a whole: a concurrent publish sees the
    /// old state or the new one, never a mix.
    pub fn set_filters(&self, filters: ViewerFilters) {
        let state = self.engine.viewer_state(filters);
        // Writers one at a time (src/viewer.rs): under the subscriptions lock.
        let old = {
            let _writers = self.core.subscriptions.lock();
            self.core.viewer.set(state)
        };
        // Dropped outside the lock: the last viewer of a filter set
        // unregisters it from the engine.
        drop(old);
    }

    /// Takes the next frame, waiting up to `timeout` (zero: don't wait).
    pub fn next(&self, timeout: Duration) -> Next {
        self.core.queue.pop(timeout)
    }

    /// Takes up to `max` of the oldest frames at once, while `fits` accepts
    /// them, passing each to `take`; waits up to `timeout` for the first.
    /// See [`Batch`] for the outcomes.
    pub fn next_batch(
        &self,
        timeout: Duration,
        max: usize,
        fits: impl FnMut(&Frame) -> bool,
        take: impl FnMut(FrameRef),
    ) -> Batch {
        self.core.queue.pop_batch(timeout, max, fits, take)
    }

    /// A file descriptor that polls readable while frames wait or after the
    /// subscriber was closed. Owned by the subscriber: poll it, don't read
    /// or close it.
    pub fn ready_fd(&self) -> Result<RawFd> {
        self.core.queue.ready_fd()
    }

    /// Attaches the subscriber to a ready set under `token` instead of a
    /// readiness fd of its own (src/ready_set.rs has the rules). Refused
    /// when the token is taken in that set, or when the subscriber already
    /// has its readiness fd or a set. Freeing the subscriber detaches it.
    pub fn attach_ready_set(&self, set: &Arc<ReadySet>, token: u64) -> Result<()> {
        self.core.queue.attach(set, token)
    }

    pub fn stats(&self) -> QueueStats {
        self.core.queue.stats()
    }

    pub fn account(&self) -> Option<&str> {
        self.core.account.as_deref()
    }

    /// Stream arrays of the current subscriptions, in subscription order.
    pub fn streams(&self) -> Vec<String> {
        self.core.subscriptions.lock().iter().map(|s| s.stream.json().to_string()).collect()
    }

    /// Why the subscriber was closed, if it was.
    pub fn closed(&self) -> Option<&'static str> {
        self.core.queue.closed()
    }

    /// Unsubscribes everything and closes the queue; reads return `Closed`.
    /// Frames still queued are discarded and counted as dropped.
    pub fn close(&self) {
        self.engine.close_subscriber(&self.core);
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.engine.close_subscriber(&self.core);
        self.core.queue.detach();
        self.engine.counters.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside `signal_after`, publishes fill queues without signalling
    /// their readiness fds; each fd is signalled once when it returns.
    #[test]
    fn signal_after_signals_each_filled_queue_once_at_the_end() {
        let engine = Engine::new(EngineConfig::default());
        let subs: Vec<Subscriber> = (0..3)
            .map(|_| {
                let sub = engine.subscriber_from_json(b"").unwrap();
                sub.subscribe(br#"{"stream":"public"}"#).unwrap();
                sub
            })
            .collect();
        let fds: Vec<RawFd> = subs.iter().map(|s| s.ready_fd().unwrap()).collect();
        let readable = |fd: RawFd| {
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, zero timeout.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        let publish = |n: u32| {
            let message = format!(r#"{{"event":"delete","payload":"{n}"}}"#);
            engine.publish_channel(b"timeline:public", message.as_bytes()).unwrap();
        };
        signal_after(|| {
            (0..5).for_each(publish);
            assert!(fds.iter().all(|&fd| !readable(fd)), "no signal inside");
            assert_eq!(subs[0].stats().depth, 5, "the frames are queued");
        });
        assert!(fds.iter().all(|&fd| readable(fd)));
        publish(5);
        assert_eq!(subs[1].stats().depth, 6);
    }

    /// The flags share a word with the stamp: each subscription keeps its
    /// own through stamping, and none leaks into the stamp.
    #[test]
    fn flags_and_stamp_share_a_word() {
        let engine = Engine::default();
        let options = SubscriberOptions { event_ids: true, account: Some("7".into()), ..Default::default() };
        let sub = engine.subscriber(options);
        for json in [
            r#"{"stream":"hashtag","tag":"a","origin":"remote"}"#,
            r#"{"stream":"public","origin":"local"}"#,
            r#"{"stream":"user"}"#,
        ] {
            assert!(sub.subscribe(json.as_bytes()).unwrap());
        }
        let subs = sub.core.subscriptions.lock();
        let got: Vec<_> = subs.iter().map(|s| (s.flag(FLAG_VIEWER_FILTERED), s.event_ids(), s.origin())).collect();
        assert_eq!(got, [(true, true, Some(Origin::Remote)), (true, true, Some(Origin::Local)), (false, true, None)]);
        let seqs: Vec<_> = subs.iter().map(|s| s.seq()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "stamps in insert order: {seqs:?}");
        let first = subs.iter().next().unwrap();
        first.set_stamp(SEQ_MASK - 1);
        assert_eq!((first.seq(), first.event_ids(), first.origin()), (SEQ_MASK - 1, true, Some(Origin::Remote)));
    }

    /// A message's `queued_at` reaches every frame of it, annotated ones
    /// too; a value that is not a non-negative integer is ignored, never
    /// the event.
    #[test]
    fn frames_carry_the_queued_at_of_their_message() {
        let engine = Engine::default();
        let viewer = SubscriberOptions { account: Some("7".into()), ..Default::default() };
        let sub = engine.subscriber(viewer);
        sub.subscribe(br#"{"stream":"user"}"#).unwrap();
        let queued_at = |message: &str| {
            engine.publish_channel(b"timeline:7", message.as_bytes()).unwrap();
            match sub.next(Duration::ZERO) {
                Next::Frame(f) => f.queued_at(),
                _ => panic!("no frame for {message}"),
            }
        };
        assert_eq!(queued_at(r#"{"event":"delete","payload":"1","queued_at":1764550000123}"#), Some(1764550000123));
        assert_eq!(queued_at(r#"{"event":"delete","payload":"1","queued_at":"42"}"#), Some(42));
        assert_eq!(queued_at(r#"{"event":"delete","payload":"1"}"#), None);
        for bad in ["-5", "1.5", "null", "\"soon\"", "{}"] {
            let message = format!(r#"{{"event":"delete","payload":"1","queued_at":{bad}}}"#);
            assert_eq!(queued_at(&message), None, "{message}");
        }
        let status = r#"{"event":"update","payload":{"id":"1","account":{"id":"2","acct":"a"},"visibility":"public","reblog":null,"content":"x"},"queued_at":7}"#;
        assert_eq!(queued_at(status), Some(7));
    }
}
