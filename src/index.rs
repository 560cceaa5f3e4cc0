//! The subscription index: channel key → the subscriptions listening to it.
//! Publishing costs O(channels of the event + matches), never O(subscribers).
//!
//! Layout and locking, top to bottom:
//! - 64 shards, chosen by the key's hash, each a `parking_lot::RwLock` around
//!   the set of channel lists (each list holds its key). Shard locks are
//!   held only to find, create or drop a list, never while delivering.
//! - Each `ChannelList` is an array of entry pointers with a `Mutex` that
//!   only writers hold for their O(1) change. A walk (a publish) holds it
//!   just long enough to register and take a snapshot (the array and its
//!   length), then visits the entries without any lock. So subscribing and
//!   unsubscribing never wait for a fan-out in progress, and a fan-out never
//!   waits for more than one writer's few nanoseconds.
//! - Writers never move an entry a walk may be looking at: while walks are
//!   registered, an unsubscribe leaves a hole (a null slot) that the next
//!   subscribe fills; once none is, holes are filled from the end (the
//!   swap-remove of a quiet list). A walk skips holes, and skips entries
//!   stamped at or above its watermark (they joined after its snapshot,
//!   possibly into a hole it had not reached yet).
//! - Memory a walk may still read is not freed under it: an unsubscribed
//!   entry's reference and an outgrown array are retired and released once
//!   every walk that started before is over. Walks register under one of
//!   two counters by the parity of the list's epoch; a writer moves to the
//!   next epoch when the walks of the previous one are over, and then
//!   releases what was retired during it (a two-epoch grace period).
//! - A list whose last entry leaves is removed from its shard and marked
//!   dead; an insert or walk that raced with the removal sees the mark and
//!   retries. Each entry holds a reference to each of its lists, so the
//!   pointers it keeps for its removal stay valid.
//!
//! Lock order is list → shard (removal); no path holds a shard lock while
//! taking a list lock, so there is no cycle. An insert holds the locks of
//! all its entry's lists at once, taken in address order, so two inserts
//! never wait on each other in a cycle.
//!
//! Stamps: an insert numbers its entry while it holds the locks of all the
//! entry's lists, and a walk reads the next number (its watermark) while it
//! holds the list's lock (or, for a missing list, the shard's). So for one
//! list, an entry still listed when the walk reaches it is visited exactly
//! when its stamp is below that walk's watermark; an entry inserted later
//! has a stamp at or above it. The delete memory (`recent.rs`) relies on
//! this.
//!
//! Order within a list is not subscription order: it changes on removal.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use ahash::{AHashSet, RandomState};
use parking_lot::{Mutex, MutexGuard, RwLock};
use smallvec::SmallVec;

use crate::channel::ChannelKey;

const SHARDS: usize = 64;

/// What the index stores: something with one [`Member`] slot per key and a
/// stamp the index assigns, kept alive by references the index takes.
///
/// # Safety
/// `retain` must keep the entry's memory valid (and in place) until a
/// matching `release`; the index reads entries it holds a reference to
/// from any thread.
pub unsafe trait Indexed: Sized + Send + Sync {
    fn members(&self) -> &Members<Self>;
    /// What `set_stamp` stored, read relaxed; see "Stamps" above.
    fn stamp(&self) -> u64;
    /// Written once by [`Index::insert`], relaxed, under the locks of the
    /// entry's lists. Stamps count inserts from 0 (an entry may keep fewer
    /// than 64 bits of it: 2^56 inserts take centuries).
    fn set_stamp(&self, stamp: u64);
    /// Takes one reference to this entry.
    fn retain(&self);
    /// Gives back one reference taken by `retain`.
    ///
    /// # Safety
    /// `this` came from an entry that `retain` was called on, once per call.
    unsafe fn release(this: *const Self);
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

/// Most keys one entry may have: an insert holds that many list locks at once.
pub const MAX_KEYS: usize = 8;

/// Why [`Index::insert`] refused an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// Not as many keys as member slots, none, or more than [`MAX_KEYS`].
    KeyCount,
    /// The same key twice.
    RepeatedKey,
    /// The entry is in the index already.
    AlreadyListed,
}

/// Where an entry is listed for one of its keys: the list (one reference
/// to it, taken on insert) and the position in it.
pub struct Member<T: Indexed> {
    list: AtomicPtr<ChannelList<T>>,
    pos: AtomicU32,
}

impl<T: Indexed> Default for Member<T> {
    fn default() -> Self {
        Member { list: AtomicPtr::new(ptr::null_mut()), pos: AtomicU32::new(0) }
    }
}

/// An entry's member slots: one inline (most entries have one key), the
/// rest boxed.
pub struct Members<T: Indexed> {
    first: Member<T>,
    rest: Option<Box<MoreMembers<T>>>,
}

struct MoreMembers<T: Indexed>(Box<[Member<T>]>);

impl<T: Indexed> Members<T> {
    /// Slots for `keys` keys (at least one).
    pub fn new(keys: usize) -> Members<T> {
        let rest = (keys > 1).then(|| Box::new(MoreMembers((1..keys).map(|_| Member::default()).collect())));
        Members { first: Member::default(), rest }
    }

    fn iter(&self) -> impl Iterator<Item = &Member<T>> {
        std::iter::once(&self.first).chain(self.rest.iter().flat_map(|r| r.0.iter()))
    }

    fn len(&self) -> usize {
        1 + self.rest.as_ref().map_or(0, |r| r.0.len())
    }

    /// The keys the entry is listed under, in insertion order; none when
    /// it is not in the index. Call it where inserts and removals of this
    /// entry cannot run concurrently.
    pub fn keys(&self) -> impl Iterator<Item = &ChannelKey> {
        self.iter().filter_map(|m| {
            // SAFETY: a non-null list pointer is a reference this entry
            // holds until `remove` takes it (not concurrently, see above).
            unsafe { m.list.load(Ordering::Acquire).as_ref() }.map(|l| &l.key)
        })
    }
}

impl<T: Indexed> Drop for Members<T> {
    fn drop(&mut self) {
        for m in self.iter() {
            let list = m.list.swap(ptr::null_mut(), Ordering::Acquire);
            debug_assert!(list.is_null(), "an entry dropped while listed");
            if !list.is_null() {
                // SAFETY: the reference taken on insert; never used again.
                drop(unsafe { Arc::from_raw(list) });
            }
        }
    }
}

/// What a writer retired: freed once the walks that may see it are over.
enum Retired<T: Indexed> {
    Entry(*const T),
    /// An outgrown array, only kept until then.
    Slots {
        _array: Box<[AtomicPtr<T>]>,
    },
}

impl<T: Indexed> Drop for Retired<T> {
    fn drop(&mut self) {
        if let Retired::Entry(e) = *self {
            // SAFETY: the list's reference to an entry it no longer lists.
            unsafe { T::release(e) }
        }
    }
}

/// The parts of a list only churn needs, allocated on first use.
struct Churn<T: Indexed> {
    /// Null slots below `len`, left by removals while walks were registered.
    holes: Vec<u32>,
    /// Retired during epochs of each parity.
    retired: [Vec<Retired<T>>; 2],
}

struct ListState<T: Indexed> {
    slots: Box<[AtomicPtr<T>]>,
    /// Slots in use, holes included.
    len: u32,
    live: u32,
    epoch: u32,
    dead: bool,
    churn: Option<Box<Churn<T>>>,
}

pub struct ChannelList<T: Indexed> {
    key: ChannelKey,
    state: Mutex<ListState<T>>,
    /// Walks in progress, by the parity of the epoch they registered in.
    walkers: [AtomicU32; 2],
    /// Something is retired: the walk that ends last tries to release it.
    retired: AtomicBool,
}

// SAFETY: the raw pointers are references to `T: Send + Sync` entries, read
// and released under the rules above.
unsafe impl<T: Indexed> Send for ChannelList<T> {}
// SAFETY: as above.
unsafe impl<T: Indexed> Sync for ChannelList<T> {}

impl<T: Indexed> ChannelList<T> {
    fn new(key: ChannelKey) -> ChannelList<T> {
        ChannelList {
            key,
            state: Mutex::new(ListState { slots: Box::new([]), len: 0, live: 0, epoch: 0, dead: false, churn: None }),
            walkers: [AtomicU32::new(0), AtomicU32::new(0)],
            retired: AtomicBool::new(false),
        }
    }

    fn no_walkers(&self) -> bool {
        self.walkers.iter().all(|w| w.load(Ordering::Acquire) == 0)
    }

    /// Lists `entry` (whose reference the caller took) and returns its position.
    fn push(&self, st: &mut ListState<T>, entry: *const T) -> u32 {
        st.live += 1;
        if let Some(hole) = st.churn.as_mut().and_then(|c| c.holes.pop()) {
            st.slots[hole as usize].store(entry.cast_mut(), Ordering::Release);
            return hole;
        }
        if st.len as usize == st.slots.len() {
            let cap = (st.slots.len() * 2).max(st.slots.len() + 4);
            let grown: Box<[AtomicPtr<T>]> = (0..cap)
                .map(|i| AtomicPtr::new(st.slots.get(i).map_or(ptr::null_mut(), |p| p.load(Ordering::Relaxed))))
                .collect();
            let old = std::mem::replace(&mut st.slots, grown);
            self.retire(st, Retired::Slots { _array: old });
        }
        let pos = st.len;
        st.slots[pos as usize].store(entry.cast_mut(), Ordering::Release);
        st.len += 1;
        pos
    }

    /// Frees `what` now if no walk is registered, else once the walks
    /// registered so far are over.
    fn retire(&self, st: &mut ListState<T>, what: Retired<T>) {
        if self.no_walkers() {
            return;
        }
        let churn = st.churn.get_or_insert_with(Default::default);
        churn.retired[(st.epoch & 1) as usize].push(what);
        self.retired.store(true, Ordering::Relaxed);
    }

    /// Moves to the next epochs while the walks of the previous one are
    /// over, releasing what was retired then; with no walk registered,
    /// fills the holes from the end.
    fn tidy(&self, st: &mut ListState<T>) {
        let Some(churn) = st.churn.as_mut() else { return };
        for _ in 0..2 {
            let previous = (st.epoch.wrapping_add(1) & 1) as usize;
            if self.walkers[previous].load(Ordering::Acquire) != 0 {
                break;
            }
            churn.retired[previous].clear();
            st.epoch = st.epoch.wrapping_add(1);
        }
        if churn.retired.iter().all(Vec::is_empty) {
            self.retired.store(false, Ordering::Relaxed);
        }
        if !self.no_walkers() {
            return;
        }
        let list: *const ChannelList<T> = self;
        while let Some(hole) = churn.holes.pop() {
            while st.len > 0 && st.slots[st.len as usize - 1].load(Ordering::Relaxed).is_null() {
                st.len -= 1;
            }
            if hole >= st.len {
                continue;
            }
            st.len -= 1;
            let moved = st.slots[st.len as usize].swap(ptr::null_mut(), Ordering::Relaxed);
            st.slots[hole as usize].store(moved, Ordering::Release);
            // SAFETY: listed, so the list holds a reference to it.
            let moved = unsafe { &*moved };
            if let Some(m) = moved.members().iter().find(|m| ptr::eq(m.list.load(Ordering::Relaxed), list)) {
                m.pos.store(hole, Ordering::Relaxed);
            }
        }
    }
}

impl<T: Indexed> Default for Churn<T> {
    fn default() -> Self {
        Churn { holes: Vec::new(), retired: [Vec::new(), Vec::new()] }
    }
}

impl<T: Indexed> Drop for ChannelList<T> {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        for slot in &st.slots[..st.len as usize] {
            let entry = slot.load(Ordering::Relaxed);
            if !entry.is_null() {
                // SAFETY: the list's reference to an entry it lists.
                unsafe { T::release(entry) }
            }
        }
    }
}

/// A shard's handle on a list, hashed and compared by the list's key.
struct Listed<T: Indexed>(Arc<ChannelList<T>>);

impl<T: Indexed> PartialEq for Listed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}
impl<T: Indexed> Eq for Listed<T> {}
impl<T: Indexed> Hash for Listed<T> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.key.hash(h)
    }
}
impl<T: Indexed> Borrow<ChannelKey> for Listed<T> {
    fn borrow(&self) -> &ChannelKey {
        &self.0.key
    }
}

type Shard<T> = RwLock<AHashSet<Listed<T>>>;

pub struct Index<T: Indexed> {
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

/// Deregisters a walk, also when the visitor panics.
struct Walk<'a, T: Indexed> {
    list: &'a ChannelList<T>,
    parity: usize,
}

impl<T: Indexed> Drop for Walk<'_, T> {
    fn drop(&mut self) {
        self.list.walkers[self.parity].fetch_sub(1, Ordering::Release);
        if self.list.retired.load(Ordering::Relaxed)
            && let Some(mut st) = self.list.state.try_lock()
        {
            self.list.tidy(&mut st);
        }
    }
}

impl<T: Indexed> Index<T> {
    pub fn new() -> Index<T> {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::new(AHashSet::new())).collect(),
            hasher: RandomState::new(),
            generation: AtomicU64::new(0),
            next_stamp: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &ChannelKey) -> &Shard<T> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn list_or_create(&self, key: &ChannelKey) -> Arc<ChannelList<T>> {
        if let Some(list) = self.shard(key).read().get(key) {
            return Arc::clone(&list.0);
        }
        let mut shard = self.shard(key).write();
        if let Some(list) = shard.get(key) {
            return Arc::clone(&list.0);
        }
        self.generation.fetch_add(1, Ordering::Relaxed);
        let list = Arc::new(ChannelList::new(key.clone()));
        shard.insert(Listed(Arc::clone(&list)));
        list
    }

    /// Adds `entry` to the list of each of `keys` and stamps it, all under
    /// the locks of those lists. Its member slots record where.
    pub fn insert(&self, entry: &T, keys: &[ChannelKey]) -> Result<(), InsertError> {
        let members = entry.members();
        if keys.is_empty() || keys.len() != members.len() || keys.len() > MAX_KEYS {
            return Err(InsertError::KeyCount);
        }
        if keys.iter().enumerate().any(|(i, k)| keys[..i].contains(k)) {
            return Err(InsertError::RepeatedKey);
        }
        if members.iter().any(|m| !m.list.load(Ordering::Relaxed).is_null()) {
            return Err(InsertError::AlreadyListed);
        }
        loop {
            let lists: SmallVec<[Arc<ChannelList<T>>; 4]> = keys.iter().map(|k| self.list_or_create(k)).collect();
            let mut order: SmallVec<[usize; 4]> = (0..lists.len()).collect();
            order.sort_unstable_by_key(|&i| Arc::as_ptr(&lists[i]));
            let mut guards: SmallVec<[Option<MutexGuard<'_, ListState<T>>>; 4]> = lists.iter().map(|_| None).collect();
            for i in order {
                guards[i] = Some(lists[i].state.lock());
            }
            let mut guards: SmallVec<[MutexGuard<'_, ListState<T>>; 4]> = guards.into_iter().flatten().collect();
            if guards.iter().any(|st| st.dead) {
                // A removal emptied one of them meanwhile: look the lists up again.
                continue;
            }
            entry.set_stamp(self.next_stamp.fetch_add(1, Ordering::Relaxed));
            for ((st, list), member) in guards.iter_mut().zip(&lists).zip(members.iter()) {
                entry.retain();
                let pos = list.push(st, entry);
                member.pos.store(pos, Ordering::Relaxed);
                member.list.store(Arc::into_raw(Arc::clone(list)).cast_mut(), Ordering::Release);
            }
            return Ok(());
        }
    }

    /// Removes an entry previously inserted; a no-op for one that is not
    /// listed. The caller guarantees that inserts and removals of one entry
    /// do not run concurrently (the subscriber serializes its own changes).
    pub fn remove(&self, entry: &T) {
        for member in entry.members().iter() {
            let list_ptr = member.list.load(Ordering::Acquire);
            // SAFETY: a non-null list pointer is the reference this entry
            // took on insert; only this (serialized) removal gives it back.
            let Some(list) = (unsafe { list_ptr.as_ref() }) else { continue };
            let mut st = list.state.lock();
            // Under the lock: a compaction moving this entry updates `pos`.
            let pos = member.pos.load(Ordering::Relaxed);
            member.list.store(ptr::null_mut(), Ordering::Relaxed);
            let taken = st.slots[pos as usize].swap(ptr::null_mut(), Ordering::Relaxed);
            debug_assert!(ptr::eq(taken, entry), "index entry out of place");
            st.live -= 1;
            list.retire(&mut st, Retired::Entry(taken));
            st.churn.get_or_insert_with(Default::default).holes.push(pos);
            list.tidy(&mut st);
            if st.live == 0 && !st.dead {
                let mut shard = self.shard(&list.key).write();
                if shard.get(&list.key).is_some_and(|l| ptr::eq(Arc::as_ptr(&l.0), list)) {
                    shard.remove(&list.key);
                }
                st.dead = true;
                self.generation.fetch_add(1, Ordering::Relaxed);
            }
            drop(st);
            // SAFETY: that reference, given back once the lock is released.
            drop(unsafe { Arc::from_raw(list_ptr) });
        }
    }

    /// Calls `f` on every entry listening to `key`, without holding a lock
    /// while it runs. Returns the walk's watermark: the entries visited are
    /// those of this list stamped below it (see "Stamps" above).
    pub fn for_each(&self, key: &ChannelKey, mut f: impl FnMut(&T)) -> u64 {
        loop {
            let list = {
                let shard = self.shard(key).read();
                match shard.get(key) {
                    Some(list) => Arc::clone(&list.0),
                    // Whoever creates the list stamps its entries after this.
                    None => return self.next_stamp.load(Ordering::Relaxed),
                }
            };
            let (watermark, slots, walk) = {
                let st = list.state.lock();
                if st.dead {
                    // Emptied and replaced meanwhile: walk the current list.
                    continue;
                }
                let parity = (st.epoch & 1) as usize;
                list.walkers[parity].fetch_add(1, Ordering::Relaxed);
                let slots: *const [AtomicPtr<T>] = &st.slots[..st.len as usize];
                (self.next_stamp.load(Ordering::Relaxed), slots, Walk { list: &list, parity })
            };
            // SAFETY: the array is retired, not freed, while this walk is
            // registered; so is every entry it lists (see the top).
            let slots = unsafe { &*slots };
            // SAFETY: as above, a non-null slot is a live entry.
            let entry = |i: usize| slots.get(i).and_then(|p| unsafe { p.load(Ordering::Acquire).as_ref() });
            for i in 0..slots.len() {
                if let Some(ahead) = slots.get(i + PREFETCH_ENTRY) {
                    // An entry's first 48 bytes, wherever a line boundary falls.
                    let ahead = ahead.load(Ordering::Relaxed);
                    prefetch(ahead);
                    prefetch(ahead.cast::<u8>().wrapping_add(48));
                }
                if let Some(ahead) = entry(i + PREFETCH_TARGET) {
                    ahead.prefetch_targets();
                }
                if let Some(ahead) = entry(i + PREFETCH_LATE) {
                    ahead.prefetch_late();
                }
                if let Some(e) = entry(i)
                    && e.stamp() < watermark
                {
                    f(e);
                }
            }
            drop(walk);
            return watermark;
        }
    }

    /// Every key that has at least one entry.
    pub fn keys(&self) -> Vec<ChannelKey> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(shard.read().iter().map(|l| l.0.key.clone()));
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
        members: Members<E>,
        stamp: AtomicU64,
    }

    // SAFETY: every `E` lives in an `Arc` (see `e`).
    unsafe impl Indexed for E {
        fn members(&self) -> &Members<E> {
            &self.members
        }
        fn stamp(&self) -> u64 {
            self.stamp.load(Ordering::Relaxed)
        }
        fn set_stamp(&self, stamp: u64) {
            self.stamp.store(stamp, Ordering::Relaxed);
        }
        fn retain(&self) {
            // SAFETY: `self` is in an `Arc`.
            unsafe { Arc::increment_strong_count(self) }
        }
        unsafe fn release(this: *const E) {
            // SAFETY: a reference taken by `retain`.
            unsafe { Arc::decrement_strong_count(this) }
        }
    }

    fn e(id: u32, keys: &[&str]) -> Arc<E> {
        let keys: Vec<ChannelKey> = keys.iter().map(|k| ChannelKey::parse(k).unwrap()).collect();
        Arc::new(E { id, members: Members::new(keys.len().max(1)), keys, stamp: AtomicU64::new(u64::MAX) })
    }

    fn insert(ix: &Index<E>, x: &Arc<E>) -> Result<(), InsertError> {
        ix.insert(x.as_ref(), &x.keys)
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
        entries.iter().for_each(|x| insert(&ix, x).unwrap());
        assert_eq!(
            entries[3].members.keys().map(|k| k.to_string()).collect::<Vec<_>>(),
            ["timeline:public", "timeline:1"]
        );
        for i in [0, 5, 9, 3] {
            ix.remove(&entries[i as usize]);
        }
        assert_eq!(entries[3].members.keys().count(), 0);
        assert_eq!(ids(&ix, "timeline:public"), [1, 2, 4, 6, 7, 8]);
        assert_eq!(ids(&ix, "timeline:1"), [1, 2, 4, 6, 7, 8]);
        let gen_before = ix.generation();
        for i in [1, 2, 4, 6, 7, 8] {
            ix.remove(&entries[i]);
        }
        assert!(ix.keys().is_empty());
        assert_ne!(ix.generation(), gen_before);
        insert(&ix, &entries[0]).unwrap();
        assert_eq!(ids(&ix, "timeline:public"), [0]);
        ix.remove(&entries[0]);
        // The index gave back every reference it took.
        assert!(entries.iter().all(|x| Arc::strong_count(x) == 1));
    }

    #[test]
    fn entries_with_the_wrong_key_count_or_repeated_keys_are_refused() {
        let ix: Index<E> = Index::new();
        let four = e(1, &["timeline:1", "timeline:2", "timeline:3", "timeline:4"]);
        assert_eq!(ix.insert(four.as_ref(), &four.keys[..3]), Err(InsertError::KeyCount));
        let twice = e(2, &["timeline:1", "timeline:public", "timeline:1"]);
        assert_eq!(insert(&ix, &twice), Err(InsertError::RepeatedKey));
        assert!(ix.keys().is_empty(), "a refused entry left something behind");
        let three = e(3, &["timeline:1", "timeline:2", "timeline:3"]);
        insert(&ix, &three).unwrap();
        assert_eq!(insert(&ix, &three), Err(InsertError::AlreadyListed));
        assert_eq!(ids(&ix, "timeline:3"), [3]);
    }

    #[test]
    fn a_walk_visits_exactly_the_entries_stamped_below_its_watermark() {
        let ix = Index::new();
        let public = ChannelKey::parse("timeline:public").unwrap();
        let before = ix.for_each(&public, |_| panic!("no entries yet"));
        let a = e(1, &["timeline:public"]);
        let b = e(2, &["timeline:1", "timeline:public"]);
        insert(&ix, &a).unwrap();
        insert(&ix, &b).unwrap();
        let mut seen = Vec::new();
        let watermark = ix.for_each(&public, |x| seen.push(x.stamp.load(Ordering::Relaxed)));
        assert!(seen.iter().all(|&s| before <= s && s < watermark), "{seen:?} vs {before}..{watermark}");
        assert_eq!(seen.len(), 2);
        let c = e(3, &["timeline:public"]);
        insert(&ix, &c).unwrap();
        assert!(c.stamp.load(Ordering::Relaxed) >= watermark);
    }

    #[test]
    fn writers_during_a_walk_leave_holes_and_never_move_what_it_may_visit() {
        let ix = Index::new();
        let entries: Vec<_> = (0..20).map(|i| e(i, &["timeline:public"])).collect();
        entries.iter().for_each(|x| insert(&ix, x).unwrap());
        let public = ChannelKey::parse("timeline:public").unwrap();
        let (mut seen, mut late) = (Vec::new(), Vec::new());
        let mut step = 0;
        ix.for_each(&public, |x| {
            seen.push(x.id);
            // Inside the walk: remove the entries not visited yet with odd
            // ids, and insert new ones (which must not be visited).
            if step == 0 {
                for y in entries.iter().filter(|y| y.id % 2 == 1 && !seen.contains(&y.id)) {
                    ix.remove(y);
                }
                for id in 100..105 {
                    let n = e(id, &["timeline:public"]);
                    insert(&ix, &n).unwrap();
                    late.push(n);
                }
            }
            step += 1;
        });
        let first = seen[0];
        seen.sort();
        let expected: Vec<u32> = (0..20).filter(|i| i % 2 == 0 || *i == first).collect();
        assert_eq!(seen, expected, "each listed entry visited once, new ones not at all");
        // Walks are over: the next removal compacts, and everything added
        // during the walk is listed.
        ix.remove(&entries[0]);
        let mut now: Vec<u32> = (2..20).filter(|i| i % 2 == 0 || *i == first).collect();
        now.extend(100..105);
        now.sort();
        now.dedup();
        assert_eq!(ids(&ix, "timeline:public"), now);
        for x in entries.iter().chain(&late) {
            ix.remove(x);
        }
        assert!(ix.keys().is_empty());
        assert!(entries.iter().chain(&late).all(|x| Arc::strong_count(x) == 1), "a reference was not given back");
    }
}
