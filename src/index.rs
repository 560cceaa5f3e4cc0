//! The subscription index: channel key → the subscriptions listening to it.
//! Publishing costs O(channels of the event + matches), never O(subscribers).
//!
//! Layout and locking, top to bottom:
//! - 64 shards, chosen by the key's hash, each a `parking_lot::RwLock` around
//!   a map from key to an `Arc<ChannelList>`. Shard locks are held only to
//!   find or create a list, never while delivering, so a writer on one
//!   channel never stalls publishers on another.
//! - Each `ChannelList` has its own `RwLock` over a plain `Vec` of entries.
//!   A publish iterates it under a read lock (many publishers fan out from
//!   one channel at once). Subscribe pushes, unsubscribe `swap_remove`s using
//!   the position each entry records for each of its keys, so both are O(1)
//!   inside the lock and writers hold it for nanoseconds. A writer waits only
//!   for fan-outs already in progress on that one channel.
//! - An emptied list is removed from its shard and marked dead; an insert
//!   or walk that raced with the removal sees the mark and retries.
//!
//! Lock order is list → shard (removal); no path holds a shard lock while
//! taking a list lock, so there is no cycle. An insert holds the write locks
//! of all its entry's lists at once, taken in address order, so two inserts
//! never wait on each other in a cycle.
//!
//! Stamps: an insert numbers its entry while it holds the write locks of all
//! the entry's lists, and a walk reads the next number (its watermark) while
//! it holds the list's read lock (or, for a missing list, the shard's). So
//! for one list, an entry is visited by a walk exactly when its stamp is
//! below that walk's watermark; an entry inserted later has a stamp at or
//! above it. The delete memory (`recent.rs`) relies on this.
//!
//! Order within a list is not subscription order: it changes on removal.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use ahash::{AHashMap, RandomState};
use parking_lot::{RwLock, RwLockWriteGuard};
use smallvec::SmallVec;

use crate::channel::ChannelKey;

const SHARDS: usize = 64;

/// What the index stores: something with keys, one position slot per key
/// and a stamp the index assigns.
pub trait Indexed {
    /// Distinct keys, at most as many as `slots()` (and [`MAX_KEYS`]).
    fn keys(&self) -> &[ChannelKey];
    /// `slots()[i]` is the position of this entry in the list of `keys()[i]`.
    fn slots(&self) -> &[AtomicU32];
    /// Written once by [`Index::insert`]; see "Stamps" above.
    fn stamp(&self) -> &AtomicU64;
    /// Hints the memory the visitor will touch next for this entry (beyond
    /// the entry itself) into cache. Only a hint: it must not block.
    fn prefetch_targets(&self) {}
    /// Hints memory reached through what `prefetch_targets` brought in
    /// (called a few entries later, when that has arrived).
    fn prefetch_late(&self) {}
}

/// Asks the CPU to pull the cache line at `p` in; a no-op elsewhere.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// How far ahead a walk prefetches entries, and their targets. A fan-out to
/// 100k subscribers misses cache on every entry; fetching ahead overlaps the
/// misses instead of taking them one after another.
const PREFETCH_ENTRY: usize = 16;
const PREFETCH_TARGET: usize = 8;
const PREFETCH_LATE: usize = 4;

/// Most keys one entry may have: each list records which of its entry's keys
/// it is in as a `u8`, and an insert holds that many list locks at once.
pub const MAX_KEYS: usize = 8;

/// Why [`Index::insert`] refused an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// More keys than slots, or than [`MAX_KEYS`].
    TooManyKeys,
    /// The same key twice.
    RepeatedKey,
}

struct ListState<T> {
    entries: Vec<(Arc<T>, u8)>,
    dead: bool,
}

struct ChannelList<T> {
    state: RwLock<ListState<T>>,
}

type Shard<T> = RwLock<AHashMap<ChannelKey, Arc<ChannelList<T>>>>;

pub struct Index<T> {
    shards: Box<[Shard<T>]>,
    hasher: RandomState,
    generation: AtomicU64,
    next_stamp: AtomicU64,
}

impl<T: Indexed> Default for Index<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Indexed> Index<T> {
    pub fn new() -> Index<T> {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::new(AHashMap::new())).collect(),
            hasher: RandomState::new(),
            generation: AtomicU64::new(0),
            next_stamp: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &ChannelKey) -> &Shard<T> {
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        &self.shards[(std::hash::Hasher::finish(&h) as usize) % SHARDS]
    }

    fn list(&self, key: &ChannelKey) -> Option<Arc<ChannelList<T>>> {
        self.shard(key).read().get(key).cloned()
    }

    fn list_or_create(&self, key: &ChannelKey) -> Arc<ChannelList<T>> {
        if let Some(list) = self.list(key) {
            return list;
        }
        let mut shard = self.shard(key).write();
        let list = shard.entry(key.clone()).or_insert_with(|| {
            self.generation.fetch_add(1, Ordering::Relaxed);
            Arc::new(ChannelList { state: RwLock::new(ListState { entries: Vec::new(), dead: false }) })
        });
        Arc::clone(list)
    }

    /// Adds `entry` to the list of each of its keys and stamps it, all under
    /// the write locks of those lists.
    pub fn insert(&self, entry: &Arc<T>) -> Result<(), InsertError> {
        let keys = entry.keys();
        if keys.len() > entry.slots().len() || keys.len() > MAX_KEYS {
            return Err(InsertError::TooManyKeys);
        }
        if keys.iter().enumerate().any(|(i, k)| keys[..i].contains(k)) {
            return Err(InsertError::RepeatedKey);
        }
        loop {
            let lists: SmallVec<[Arc<ChannelList<T>>; 4]> = keys.iter().map(|k| self.list_or_create(k)).collect();
            let mut order: SmallVec<[usize; 4]> = (0..lists.len()).collect();
            order.sort_unstable_by_key(|&i| Arc::as_ptr(&lists[i]));
            let mut guards: SmallVec<[Option<RwLockWriteGuard<'_, ListState<T>>>; 4]> =
                lists.iter().map(|_| None).collect();
            for i in order {
                guards[i] = Some(lists[i].state.write());
            }
            let mut guards: SmallVec<[RwLockWriteGuard<'_, ListState<T>>; 4]> = guards.into_iter().flatten().collect();
            if guards.iter().any(|st| st.dead) {
                // A removal emptied one of them meanwhile: look the lists up again.
                continue;
            }
            entry.stamp().store(self.next_stamp.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
            for (i, st) in guards.iter_mut().enumerate() {
                entry.slots()[i].store(st.entries.len() as u32, Ordering::Relaxed);
                st.entries.push((Arc::clone(entry), i as u8));
            }
            return Ok(());
        }
    }

    /// Removes an entry previously inserted. The caller guarantees it is not
    /// removed twice (the subscriber serializes its own changes).
    pub fn remove(&self, entry: &Arc<T>) {
        for (i, key) in entry.keys().iter().enumerate() {
            let Some(list) = self.list(key) else { continue };
            let mut st = list.state.write();
            let pos = entry.slots()[i].load(Ordering::Relaxed) as usize;
            if !st.entries.get(pos).is_some_and(|(e, _)| Arc::ptr_eq(e, entry)) {
                debug_assert!(false, "index entry out of place");
                continue;
            }
            st.entries.swap_remove(pos);
            if let Some((moved, slot)) = st.entries.get(pos) {
                moved.slots()[*slot as usize].store(pos as u32, Ordering::Relaxed);
            }
            if st.entries.is_empty() {
                let mut shard = self.shard(key).write();
                if shard.get(key).is_some_and(|l| Arc::ptr_eq(l, &list)) {
                    shard.remove(key);
                }
                st.dead = true;
                self.generation.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Calls `f` on every entry listening to `key`, under the list's read
    /// lock. Returns the walk's watermark: the entries visited are exactly
    /// those of this list stamped below it (see "Stamps" above).
    pub fn for_each(&self, key: &ChannelKey, mut f: impl FnMut(&Arc<T>)) -> u64 {
        loop {
            let list = {
                let shard = self.shard(key).read();
                match shard.get(key) {
                    Some(list) => Arc::clone(list),
                    // Whoever creates the list stamps its entries after this.
                    None => return self.next_stamp.load(Ordering::Relaxed),
                }
            };
            let st = list.state.read();
            if st.dead {
                // Emptied and replaced meanwhile: walk the current list.
                continue;
            }
            let watermark = self.next_stamp.load(Ordering::Relaxed);
            let entries = &st.entries;
            for (i, (entry, _)) in entries.iter().enumerate() {
                if let Some((ahead, _)) = entries.get(i + PREFETCH_ENTRY) {
                    // An entry's first 48 bytes, wherever a line boundary falls.
                    prefetch(Arc::as_ptr(ahead));
                    prefetch(Arc::as_ptr(ahead).cast::<u8>().wrapping_add(48));
                }
                if let Some((ahead, _)) = entries.get(i + PREFETCH_TARGET) {
                    ahead.prefetch_targets();
                }
                if let Some((ahead, _)) = entries.get(i + PREFETCH_LATE) {
                    ahead.prefetch_late();
                }
                f(entry);
            }
            return watermark;
        }
    }

    /// Every key that has at least one entry.
    pub fn keys(&self) -> Vec<ChannelKey> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(shard.read().keys().cloned());
        }
        out
    }

    /// Changes whenever a key gains its first entry or loses its last.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E {
        id: u32,
        keys: Vec<ChannelKey>,
        slots: [AtomicU32; 3],
        stamp: AtomicU64,
    }

    impl Indexed for E {
        fn keys(&self) -> &[ChannelKey] {
            &self.keys
        }
        fn slots(&self) -> &[AtomicU32] {
            &self.slots
        }
        fn stamp(&self) -> &AtomicU64 {
            &self.stamp
        }
    }

    fn e(id: u32, keys: &[&str]) -> Arc<E> {
        Arc::new(E {
            id,
            keys: keys.iter().map(|k| ChannelKey::parse(k).unwrap()).collect(),
            slots: Default::default(),
            stamp: AtomicU64::new(u64::MAX),
        })
    }

    fn ids(ix: &Index<E>, key: &str) -> Vec<u32> {
        let mut out = Vec::new();
        ix.for_each(&ChannelKey::parse(key).unwrap(), |e| out.push(e.id));
        out.sort();
        out
    }

    #[test]
    fn insert_remove_keep_positions_consistent() {
        let ix = Index::new();
        let entries: Vec<_> = (0..10).map(|i| e(i, &["timeline:public", "timeline:1"])).collect();
        entries.iter().for_each(|x| ix.insert(x).unwrap());
        for i in [0, 5, 9, 3] {
            ix.remove(&entries[i as usize]);
        }
        assert_eq!(ids(&ix, "timeline:public"), [1, 2, 4, 6, 7, 8]);
        assert_eq!(ids(&ix, "timeline:1"), [1, 2, 4, 6, 7, 8]);
        let gen_before = ix.generation();
        for i in [1, 2, 4, 6, 7, 8] {
            ix.remove(&entries[i]);
        }
        assert!(ix.keys().is_empty());
        assert_ne!(ix.generation(), gen_before);
        ix.insert(&entries[0]).unwrap();
        assert_eq!(ids(&ix, "timeline:public"), [0]);
    }

    #[test]
    fn entries_beyond_their_slots_or_with_repeated_keys_are_refused() {
        let ix = Index::new();
        let four = e(1, &["timeline:1", "timeline:2", "timeline:3", "timeline:4"]);
        assert_eq!(ix.insert(&four), Err(InsertError::TooManyKeys));
        let twice = e(2, &["timeline:1", "timeline:public", "timeline:1"]);
        assert_eq!(ix.insert(&twice), Err(InsertError::RepeatedKey));
        assert!(ix.keys().is_empty(), "a refused entry left something behind");
        ix.insert(&e(3, &["timeline:1", "timeline:2", "timeline:3"])).unwrap();
        assert_eq!(ids(&ix, "timeline:3"), [3]);
    }

    #[test]
    fn a_walk_visits_exactly_the_entries_stamped_below_its_watermark() {
        let ix = Index::new();
        let public = ChannelKey::parse("timeline:public").unwrap();
        let before = ix.for_each(&public, |_| panic!("no entries yet"));
        let a = e(1, &["timeline:public"]);
        let b = e(2, &["timeline:1", "timeline:public"]);
        ix.insert(&a).unwrap();
        ix.insert(&b).unwrap();
        let mut seen = Vec::new();
        let watermark = ix.for_each(&public, |x| seen.push(x.stamp.load(Ordering::Relaxed)));
        assert!(seen.iter().all(|&s| before <= s && s < watermark), "{seen:?} vs {before}..{watermark}");
        assert_eq!(seen.len(), 2);
        let c = e(3, &["timeline:public"]);
        ix.insert(&c).unwrap();
        assert!(c.stamp.load(Ordering::Relaxed) >= watermark);
    }
}
