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
//!   that raced with the removal sees the mark and retries.
//!
//! Lock order is list → shard (removal); no path holds a shard lock while
//! taking a list lock, so there is no cycle.
//!
//! Order within a list is not subscription order: it changes on removal.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use ahash::{AHashMap, RandomState};
use parking_lot::RwLock;

use crate::channel::ChannelKey;

const SHARDS: usize = 64;

/// What the index stores: something with keys and one position slot per key.
pub trait Indexed {
    fn keys(&self) -> &[ChannelKey];
    /// Position of this entry in the list of `keys()[i]`.
    fn slot(&self, i: usize) -> &AtomicU32;
    /// Hints the memory the visitor will touch next for this entry (beyond
    /// the entry itself) into cache. Only a hint: it must not block.
    fn prefetch_targets(&self) {}
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
const PREFETCH_ENTRY: usize = 8;
const PREFETCH_TARGET: usize = 4;

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

    pub fn insert(&self, entry: &Arc<T>) {
        for (i, key) in entry.keys().iter().enumerate() {
            loop {
                let list = self.list_or_create(key);
                let mut st = list.state.write();
                if st.dead {
                    continue;
                }
                entry.slot(i).store(st.entries.len() as u32, Ordering::Relaxed);
                st.entries.push((Arc::clone(entry), i as u8));
                break;
            }
        }
    }

    /// Removes an entry previously inserted. The caller guarantees it is not
    /// removed twice (the subscriber serializes its own changes).
    pub fn remove(&self, entry: &Arc<T>) {
        for (i, key) in entry.keys().iter().enumerate() {
            let Some(list) = self.list(key) else { continue };
            let mut st = list.state.write();
            let pos = entry.slot(i).load(Ordering::Relaxed) as usize;
            if !st.entries.get(pos).is_some_and(|(e, _)| Arc::ptr_eq(e, entry)) {
                debug_assert!(false, "index entry out of place");
                continue;
            }
            st.entries.swap_remove(pos);
            if let Some((moved, slot)) = st.entries.get(pos) {
                moved.slot(*slot as usize).store(pos as u32, Ordering::Relaxed);
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

    /// Calls `f` on every entry listening to `key`, under the list's read lock.
    pub fn for_each(&self, key: &ChannelKey, mut f: impl FnMut(&Arc<T>)) {
        let Some(list) = self.list(key) else { return };
        let st = list.state.read();
        let entries = &st.entries;
        for (i, (entry, _)) in entries.iter().enumerate() {
            if let Some((ahead, _)) = entries.get(i + PREFETCH_ENTRY) {
                prefetch(Arc::as_ptr(ahead));
            }
            if let Some((ahead, _)) = entries.get(i + PREFETCH_TARGET) {
                ahead.prefetch_targets();
            }
            f(entry);
        }
    }

    /// Number of entries listening to `key`.
    pub fn len(&self, key: &ChannelKey) -> usize {
        self.list(key).map_or(0, |l| l.state.read().entries.len())
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
    }

    impl Indexed for E {
        fn keys(&self) -> &[ChannelKey] {
            &self.keys
        }
        fn slot(&self, i: usize) -> &AtomicU32 {
            &self.slots[i]
        }
    }

    fn e(id: u32, keys: &[&str]) -> Arc<E> {
        Arc::new(E {
            id,
            keys: keys.iter().map(|k| ChannelKey::parse(k).unwrap()).collect(),
            slots: Default::default(),
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
        entries.iter().for_each(|x| ix.insert(x));
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
        ix.insert(&entries[0]);
        assert_eq!(ids(&ix, "timeline:public"), [0]);
    }
}
