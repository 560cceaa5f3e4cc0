//! Per-channel history, event ids and the resume ordering point (SPEC §12).
//!
//! Each published event gets a sequence number from one per-engine counter
//! and the id text `<epoch>:<seq>`. After its fan-out, the event (its routing
//! facts and the frames already built for it) goes once into an `Arc` that
//! the ring of every channel it was routed to points to: history costs a
//! pointer per channel, not a copy.
//!
//! Rings are bounded by `max_events` (oldest appended first out) and by
//! `max_age` (checked on every append to the ring, and for every ring by a
//! sweep at most every `max_age / 4`, which also removes emptied rings).
//! Memory is thus bounded by the events of the last `max_age`, at most
//! `max_events` per channel.
//!
//! The ordering point is `order`: a publish holds it from taking its
//! sequence number until its event is fanned out and in the rings, and a
//! resume holds it while it queues the replay (see `Subscriber::resume` for
//! the rule built on it).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ahash::AHashMap;
use parking_lot::Mutex;

use crate::channel::ChannelKey;
use crate::config::HistoryConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::event::RoutedEvent;
use crate::frame::{EventId, FrameCache};

/// One published event as history keeps it.
pub(crate) struct Retained {
    pub seq: u64,
    /// Name and viewer-filter facts (the payload lives in the frames).
    pub event: RoutedEvent<'static>,
    at: Instant,
    /// Frames built at publish, plus those a resume builds for other
    /// streams or id variants.
    frames: Mutex<FrameCache>,
    /// Rings still holding it; its bytes leave the counters with the last.
    rings: AtomicUsize,
    bytes: AtomicUsize,
}

#[derive(Default)]
struct Ring {
    entries: VecDeque<Arc<Retained>>,
    /// Largest seq this ring let go of: a resume from an older seq has a gap.
    evicted_max: u64,
}

struct Rings {
    map: AHashMap<ChannelKey, Ring>,
    /// Largest seq expired by age from any ring, so also from rings that no
    /// longer exist: a resume from an older seq has a gap.
    expired_max: u64,
    next_sweep: Instant,
}

pub(crate) struct History {
    config: HistoryConfig,
    epoch: Box<str>,
    next_seq: AtomicU64,
    pub order: Mutex<()>,
    rings: Mutex<Rings>,
    entries: AtomicU64,
    bytes: AtomicU64,
}

/// Bytes an entry costs beyond the shared frames: its slot in a ring.
const ENTRY_BYTES: usize = size_of::<Arc<Retained>>();

impl History {
    pub fn new(config: HistoryConfig) -> History {
        History {
            config,
            epoch: new_epoch(),
            next_seq: AtomicU64::new(1),
            order: Mutex::new(()),
            rings: Mutex::new(Rings { map: AHashMap::new(), expired_max: 0, next_sweep: Instant::now() }),
            entries: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The next event's position. Call with `order` held.
    pub fn next_id(&self) -> EventId {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        EventId { seq, text: format!("{}:{seq}", self.epoch).into() }
    }

    /// Ring entries and their bytes (entry slots plus each retained event's
    /// frames once).
    pub fn counts(&self) -> (u64, u64) {
        (self.entries.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    /// Puts a published event into the ring of each of `channels`. Call with
    /// `order` held.
    pub fn record(&self, seq: u64, event: RoutedEvent<'static>, frames: FrameCache, channels: &[ChannelKey]) {
        if channels.is_empty() {
            return;
        }
        let now = Instant::now();
        let bytes = frames.heap_bytes() + size_of::<Retained>() + channels.len() * ENTRY_BYTES;
        let retained = Arc::new(Retained {
            seq,
            event,
            at: now,
            frames: Mutex::new(frames),
            rings: AtomicUsize::new(channels.len()),
            bytes: AtomicUsize::new(bytes),
        });
        self.entries.fetch_add(channels.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let mut rings = self.rings.lock();
        let Rings { map, expired_max, .. } = &mut *rings;
        for key in channels {
            // The key is cloned (a copy of its name) only for a new ring.
            let ring = match map.get_mut(key) {
                Some(ring) => ring,
                None => map.entry(key.clone()).or_default(),
            };
            self.expire(ring, now, expired_max);
            ring.entries.push_back(Arc::clone(&retained));
            if ring.entries.len() > self.config.max_events
                && let Some(old) = ring.entries.pop_front()
            {
                ring.evicted_max = ring.evicted_max.max(old.seq);
                self.release(&old);
            }
        }
        if now >= rings.next_sweep {
            self.sweep(&mut rings, now);
        }
    }

    /// Drops the entries of `ring` older than `max_age`.
    fn expire(&self, ring: &mut Ring, now: Instant, expired_max: &mut u64) {
        while let Some(front) = ring.entries.front() {
            let seq = front.seq;
            if now.duration_since(front.at) <= self.config.max_age {
                break;
            }
            *expired_max = (*expired_max).max(seq);
            ring.evicted_max = ring.evicted_max.max(seq);
            let old = ring.entries.pop_front();
            if let Some(old) = old {
                self.release(&old);
            }
        }
    }

    fn sweep(&self, rings: &mut Rings, now: Instant) {
        let Rings { map, expired_max, next_sweep } = rings;
        map.retain(|_, ring| {
            self.expire(ring, now, expired_max);
            !ring.entries.is_empty()
        });
        *next_sweep = now + (self.config.max_age / 4).max(Duration::from_millis(100));
    }

    /// One ring let go of `old`.
    fn release(&self, old: &Retained) {
        self.entries.fetch_sub(1, Ordering::Relaxed);
        if old.rings.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.bytes.fetch_sub(old.bytes.load(Ordering::Relaxed) as u64, Ordering::Relaxed);
        }
    }

    /// Adds to `out` the retained events of `keys` with a seq above `from`,
    /// in no particular order (an event on several keys appears once per
    /// key). Returns false when one of those rings let go of such an event,
    /// that is, when the history no longer reaches back to `from`. Call with
    /// `order` held.
    pub fn collect(&self, keys: &[ChannelKey], from: u64, out: &mut Vec<Arc<Retained>>) -> bool {
        let now = Instant::now();
        let mut rings = self.rings.lock();
        let Rings { map, expired_max, .. } = &mut *rings;
        let mut complete = true;
        for key in keys {
            match map.get_mut(key) {
                Some(ring) => {
                    self.expire(ring, now, expired_max);
                    complete &= ring.evicted_max <= from;
                    out.extend(ring.entries.iter().filter(|r| r.seq > from).cloned());
                }
                // No ring: nothing was published here, or all of it expired.
                None => complete &= *expired_max <= from,
            }
        }
        complete
    }

    /// Runs `f` on the frames of a retained event, which may build (once)
    /// those the publish did not need; they count in the history's bytes.
    /// Call with `order` held.
    pub fn with_frames<T>(&self, retained: &Retained, f: impl FnOnce(&mut FrameCache) -> T) -> T {
        let mut frames = retained.frames.lock();
        let before = frames.heap_bytes();
        let out = f(&mut frames);
        // Only a retained event is counted (`order` keeps releases away).
        let grown = frames.heap_bytes() - before;
        if grown > 0 && retained.rings.load(Ordering::Relaxed) > 0 {
            retained.bytes.fetch_add(grown, Ordering::Relaxed);
            self.bytes.fetch_add(grown as u64, Ordering::Relaxed);
        }
        out
    }
}

/// Parses `<epoch>:<seq>` into its parts.
pub fn parse_id(text: &str) -> Result<(&str, u64)> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidId,
            format!("malformed event id {text:?}: expected <epoch>:<seq>, as in the id of a frame"),
        )
    };
    let (epoch, seq) = text.split_once(':').ok_or_else(bad)?;
    if epoch.is_empty() || epoch.len() > 32 || !epoch.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad());
    }
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok((epoch, seq.parse().map_err(|_| bad())?))
}

/// Eight random base-32 characters. std's `RandomState` is seeded from the
/// operating system's randomness; the clock is mixed in for good measure.
fn new_epoch() -> Box<str> {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    let mut x = h.finish();
    const DIGITS: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let mut epoch = String::with_capacity(8);
    for _ in 0..8 {
        epoch.push(DIGITS[(x & 31) as usize] as char);
        x >>= 5;
    }
    epoch.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameBody;

    fn key(name: &str) -> ChannelKey {
        ChannelKey::parse(name).unwrap()
    }

    fn publish(h: &History, channels: &[&str]) -> u64 {
        let id = h.next_id();
        let seq = id.seq;
        let frames = FrameCache::new(FrameBody::with_id("update", Some("{}"), Some(id), None));
        let event = RoutedEvent {
            name: "update".into(),
            payload: None,
            channels: Default::default(),
            status: None,
            remember: None,
            deletes: None,
            local: None,
            queued_at: None,
        };
        h.record(seq, event, frames, &channels.iter().map(|c| key(c)).collect::<Vec<_>>());
        seq
    }

    fn seqs(h: &History, keys: &[&str], from: u64) -> (Vec<u64>, bool) {
        let mut out = Vec::new();
        let complete = h.collect(&keys.iter().map(|k| key(k)).collect::<Vec<_>>(), from, &mut out);
        let mut seqs: Vec<u64> = out.iter().map(|r| r.seq).collect();
        seqs.sort_unstable();
        (seqs, complete)
    }

    #[test]
    fn ids_parse_and_malformed_ids_are_named() {
        assert_eq!(parse_id("k3x9:17").unwrap(), ("k3x9", 17));
        for bad in ["", "17", ":1", "k3x9:", "k3x9:-1", "k3x9:1:2", "k 9:1", "k3x9:99999999999999999999"] {
            let e = parse_id(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidId);
            assert!(e.message().contains("malformed event id"), "{e}");
        }
        let a = new_epoch();
        assert_eq!(a.len(), 8);
        assert!(parse_id(&format!("{a}:0")).is_ok());
        assert_ne!(a, new_epoch());
    }

    #[test]
    fn rings_keep_the_newest_events_and_report_what_they_lost() {
        let h = History::new(HistoryConfig { max_events: 3, max_age: Duration::from_secs(60) });
        let all: Vec<u64> = (0..5).map(|_| publish(&h, &["timeline:public", "timeline:1"])).collect();
        publish(&h, &["timeline:2"]);
        assert_eq!(seqs(&h, &["timeline:public"], 0), (all[2..].to_vec(), false));
        assert_eq!(seqs(&h, &["timeline:public"], all[1]), (all[2..].to_vec(), true));
        assert_eq!(seqs(&h, &["timeline:public"], all[3]), (vec![all[4]], true));
        // A channel without a ring had nothing published (nothing expired).
        assert_eq!(seqs(&h, &["timeline:3"], 0), (vec![], true));
        // Entries: 3 + 3 + 1; the evicted events' bytes are gone.
        assert_eq!(h.counts().0, 7);
        let bytes = h.counts().1;
        publish(&h, &["timeline:public", "timeline:1"]);
        assert_eq!(h.counts().0, 7);
        assert!(h.counts().1.abs_diff(bytes) < 64, "{bytes} then {}", h.counts().1);
    }

    #[test]
    fn old_events_expire_and_empty_rings_go() {
        let h = History::new(HistoryConfig { max_events: 10, max_age: Duration::from_millis(30) });
        let old = publish(&h, &["timeline:1"]);
        std::thread::sleep(Duration::from_millis(150));
        let new = publish(&h, &["timeline:2"]);
        assert_eq!(h.rings.lock().map.len(), 1, "the sweep removed the expired ring");
        assert_eq!(seqs(&h, &["timeline:1"], 0), (vec![], false));
        assert_eq!(seqs(&h, &["timeline:1"], old), (vec![], true));
        assert_eq!(seqs(&h, &["timeline:2"], old), (vec![new], true));
        assert_eq!(h.counts().0, 1);
    }
}
