//! One bounded frame queue per subscriber (SPEC §6).
//!
//! A spin lock around a ring of shared frames: a publish holds it for one
//! push, a reader for one batch, so it never blocks on a slow reader. The
//! ring is allocated on first push and grows by doubling up to the capacity,
//! so an idle subscriber costs no buffer. Readers wait (with a timeout) in
//! `parking_lot_core`'s parking lot, keyed by the queue's address, or poll an
//! optional readiness fd (src/readiness.rs) that is readable exactly while
//! the queue is non-empty or closed, or are attached to a ready set
//! (src/ready_set.rs, which has the rules) that lists the queue's token on
//! the same transitions.
//!
//! Why not a `parking_lot::Mutex`: a fan-out to N subscribers pays the lock
//! N times, and the mutex's release is an atomic read-modify-write (it must
//! look for parked threads), which also waits for the preceding stores to
//! reach cache. The spin lock's release is a plain store. Readers that wait
//! for frames do not spin on it: they park (see `pop_batch`).
//!
//! A fan-out touches thousands of queues in a row and would miss cache on
//! each queue's slot; `Queue::prefetch_slot` hints it in ahead of the push,
//! from the slot pointer and position the queue keeps in atomics, which a
//! prefetch may read outside the lock.
//!
//! The rules that make waiting safe (no lost wakeup):
//! - A reader that finds the ring empty counts itself in `waiters` under the
//!   lock, releases the lock and parks with a validation that takes the lock
//!   again and parks only if the ring is still empty and open. The parking
//!   lot runs the validation under its own bucket lock.
//! - A push or close decides whether to wake (`waiters > 0`) under the lock
//!   and unparks after releasing it; unparking takes the same bucket lock.
//!   So a frame pushed before the validation is seen by it, and a frame
//!   pushed after it finds the reader parked (or about to be, the bucket
//!   lock decides) and wakes it.
//! - Nothing holds the spin lock while it takes the bucket lock, except the
//!   validation inside it, so the two locks never wait on each other.
//! - A ready set's lock is taken under the spin lock, never the reverse.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot_core::{DEFAULT_PARK_TOKEN, DEFAULT_UNPARK_TOKEN, ParkResult};

use crate::error::Result;
use crate::error::{Error, ErrorKind};
use crate::frame::{Frame, FrameRef};
use crate::readiness::ReadyFd;
use crate::ready_set::ReadySet;

/// What a full queue does with one more frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Evict the oldest queued frame (counted as dropped).
    #[default]
    DropOldest,
    /// Refuse the new frame (counted as dropped).
    DropNewest,
    /// Close the subscriber with reason "slow consumer".
    Disconnect,
}

impl Overflow {
    pub fn from_name(name: &str) -> Option<Overflow> {
        match name {
            "drop_oldest" => Some(Overflow::DropOldest),
            "drop_newest" => Some(Overflow::DropNewest),
            "disconnect" => Some(Overflow::Disconnect),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Overflow::DropOldest => "drop_oldest",
            Overflow::DropNewest => "drop_newest",
            Overflow::Disconnect => "disconnect",
        }
    }
}

/// Per-subscriber counters. They always satisfy
/// `matched == read + depth + dropped`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Frames routed to this subscriber.
    pub matched: u64,
    /// Frames placed in the queue.
    pub delivered: u64,
    /// Frames that will never be read: evicted, refused, or discarded when
    /// the subscriber was disconnected.
    pub dropped: u64,
    /// Frames taken by the reader.
    pub read: u64,
    /// Frames waiting now.
    pub depth: u64,
}

/// The result of offering one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// False when the queue was already closed: nothing was counted.
    pub accepted: bool,
    pub delivered: bool,
    pub dropped: u64,
    /// This push closed the queue ("slow consumer").
    pub disconnected: bool,
    /// `push_deferring` left the readiness signal this push owed to the
    /// caller's `signal`.
    pub signal_owed: bool,
}

/// What a read from a subscriber produced.
#[derive(Debug)]
pub enum Next {
    Frame(FrameRef),
    /// Nothing queued (zero timeout).
    Empty,
    /// Nothing arrived in time.
    Timeout,
    /// The subscriber is closed ("slow consumer", or "closed" by its owner).
    Closed(&'static str),
}

/// What a batch read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// `n` frames were taken (0: the oldest did not fit); `emptied`: none
    /// is left (a ready set lists the queue again on its next push).
    Taken {
        n: usize,
        emptied: bool,
    },
    Empty,
    Timeout,
    Closed(&'static str),
}

pub const SLOW_CONSUMER: &str = "slow consumer";

/// Why a queue was closed; one byte instead of a string slice per queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Its owner closed or freed it.
    Closed,
    /// It overflowed under the `disconnect` policy.
    SlowConsumer,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Closed => "closed",
            CloseReason::SlowConsumer => SLOW_CONSUMER,
        }
    }
}

/// What a queue counts; `matched` is derived (`read + depth + dropped`).
#[derive(Clone, Copy, Default)]
struct Counts {
    delivered: u64,
    dropped: u64,
    read: u64,
}

/// The most frames a queue holds: larger capacities (`evroute route`'s
/// unbounded queues) are treated as this, so ring positions fit in a `u32`.
const MAX_CAPACITY: usize = 1 << 31;

/// What only the holder of the queue's lock touches.
struct State {
    /// Position of the oldest frame; `tail - head` frames wait (both count
    /// pushes and pops modulo 2^32, the slot is the position modulo the
    /// slot count).
    head: u32,
    capacity: u32,
    waiters: u32,
    overflow: Overflow,
    closed: Option<CloseReason>,
    /// Boxed: the queue has no room for a set and a token.
    notifier: Option<Box<Notifier>>,
    counts: Counts,
}

/// Who hears that a queue has frames (or closed).
enum Notifier {
    /// The queue's own readiness fd: readable while frames wait or closed.
    Fd(ReadyFd),
    /// A ready set, which lists `token` (src/ready_set.rs).
    Set { set: Arc<ReadySet>, token: u64 },
}

impl Notifier {
    /// The queue went from empty to non-empty, or was closed while empty;
    /// `defer`: leave the fd write to `Queue::signal`, and return whether
    /// this queue must be signalled (a set needs it once per flush, not
    /// once per queue).
    fn notify(&self, defer: bool) -> bool {
        match self {
            Notifier::Fd(fd) if !defer => {
                fd.signal();
                false
            }
            Notifier::Fd(_) => true,
            Notifier::Set { set, token } => set.list(*token, defer),
        }
    }

    /// A reader emptied the queue. A set's token is not listed then: the
    /// host took it before draining.
    fn emptied(&self) {
        if let Notifier::Fd(fd) = self {
            fd.clear();
        }
    }
}

/// A subscriber's queue: 64 bytes while idle (no slots until the first
/// push), so it adds no cache line to a fan-out and little to an idle
/// subscriber (issue 13's budget of 300 bytes per subscriber).
///
/// Waiting frames, oldest first, live in a power-of-two number of slots
/// (none until the first push; doubled when full, up to the capacity rounded
/// up to a power of two). Unlike a `VecDeque`, where the next push writes is
/// known from three fields the lock holder keeps in atomics (`slots`,
/// `tail`, `shift`), so a fan-out can prefetch it without the lock. Slots
/// outside the waiting frames hold `None`.
///
/// The lock is held for a handful of instructions (a push, a batch of pops).
/// Acquire is one compare-exchange, release one plain store. A thread that
/// finds it held spins briefly, then yields: the holder was preempted.
///
/// `extra` is the owner's (a subscriber keeps its flags there): two bytes
/// fit in what would be padding, so they cost the owner no word of its own.
#[repr(C)]
pub struct Queue<X = ()> {
    /// The slots, `1 << shift` of them; null before the first push.
    /// Written only under the lock; read relaxed by `prefetch_slot` too.
    slots: AtomicPtr<Option<FrameRef>>,
    /// Position where the next push writes; as `slots`.
    tail: AtomicU32,
    locked: AtomicBool,
    /// log2 of the slot count; as `slots`.
    shift: AtomicU8,
    pub extra: X,
    state: UnsafeCell<State>,
}

// The layout budget: the queue is 64 bytes of the subscriber's core.
const _: () = assert!(std::mem::size_of::<Queue>() == 64);

// SAFETY: `state` and the slots are reached only under the lock (acquire on
// lock, release on unlock); the frames are `Send + Sync`.
unsafe impl<X: Sync> Sync for Queue<X> {}
// SAFETY: as above; the queue owns its slots.
unsafe impl<X: Send> Send for Queue<X> {}

/// The queue's lock, held; gives the state and the ring.
struct Locked<'a, X> {
    q: &'a Queue<X>,
}

impl<X> Deref for Locked<'_, X> {
    type Target = State;
    fn deref(&self) -> &State {
        // SAFETY: this guard holds the lock.
        unsafe { &*self.q.state.get() }
    }
}

impl<X> DerefMut for Locked<'_, X> {
    fn deref_mut(&mut self) -> &mut State {
        // SAFETY: this guard holds the lock.
        unsafe { &mut *self.q.state.get() }
    }
}

impl<X> Drop for Locked<'_, X> {
    fn drop(&mut self) {
        self.q.locked.store(false, Ordering::Release);
    }
}

/// Slots taken out of a queue, with the frames they hold (`None` elsewhere);
/// dropped after the lock is released.
type Slots = Option<Box<[Option<FrameRef>]>>;

impl<X> Locked<'_, X> {
    fn len(&self) -> usize {
        self.q.tail.load(Ordering::Relaxed).wrapping_sub(self.head) as usize
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slots(&self) -> &[Option<FrameRef>] {
        let p = self.q.slots.load(Ordering::Relaxed);
        if p.is_null() {
            return &[];
        }
        // SAFETY: a non-null `slots` is an allocation of `1 << shift` slots
        // owned by the queue, reached only under the lock this guard holds.
        unsafe { std::slice::from_raw_parts(p, 1 << self.q.shift.load(Ordering::Relaxed)) }
    }

    fn slots_mut(&mut self) -> &mut [Option<FrameRef>] {
        let p = self.q.slots.load(Ordering::Relaxed);
        if p.is_null() {
            return &mut [];
        }
        // SAFETY: as in `slots`; `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(p, 1 << self.q.shift.load(Ordering::Relaxed)) }
    }

    fn front(&self) -> Option<&FrameRef> {
        if self.is_empty() {
            return None;
        }
        let slots = self.slots();
        slots[self.head as usize & (slots.len() - 1)].as_ref()
    }

    /// Appends a frame; the caller keeps `len() < capacity`.
    fn push_back(&mut self, frame: FrameRef) {
        if self.len() == self.slots().len() {
            self.grow();
        }
        let tail = self.q.tail.load(Ordering::Relaxed);
        let slots = self.slots_mut();
        let mask = slots.len() - 1;
        slots[tail as usize & mask] = Some(frame);
        self.q.tail.store(tail.wrapping_add(1), Ordering::Relaxed);
    }

    fn pop_front(&mut self) -> Option<FrameRef> {
        if self.is_empty() {
            return None;
        }
        let head = self.head;
        let slots = self.slots_mut();
        let mask = slots.len() - 1;
        let frame = slots[head as usize & mask].take();
        self.head = head.wrapping_add(1);
        frame
    }

    /// Doubles the slots (at least 4, at most the capacity rounded up to a
    /// power of two), the waiting frames first.
    fn grow(&mut self) {
        let len = self.len();
        let most = (self.capacity as usize).next_power_of_two().max(4);
        let size = (self.slots().len() * 2).clamp(4, most);
        let mut grown: Box<[Option<FrameRef>]> = (0..size).map(|_| None).collect();
        let head = self.head as usize;
        if let Some(mut old) = self.take_slots() {
            let mask = old.len() - 1;
            for (i, slot) in grown.iter_mut().enumerate().take(len) {
                *slot = old[(head + i) & mask].take();
            }
        }
        self.q.shift.store(size.trailing_zeros() as u8, Ordering::Relaxed);
        self.q.slots.store(Box::into_raw(grown).cast(), Ordering::Relaxed);
        self.q.tail.store(len as u32, Ordering::Relaxed);
    }

    /// Takes the slots out (the frames with them), leaving none.
    fn take_slots(&mut self) -> Slots {
        let p = self.q.slots.swap(std::ptr::null_mut(), Ordering::Relaxed);
        self.head = 0;
        self.q.tail.store(0, Ordering::Relaxed);
        if p.is_null() {
            return None;
        }
        let len = 1 << self.q.shift.load(Ordering::Relaxed);
        // SAFETY: the allocation `grow` made with this many slots, no
        // longer reachable from the queue.
        Some(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, len)) })
    }

    /// Takes every frame out, oldest first; the slots stay allocated.
    fn drain(&mut self) -> Vec<FrameRef> {
        let mut out = Vec::with_capacity(self.len());
        out.extend(std::iter::from_fn(|| self.pop_front()));
        out
    }
}

impl<X> Drop for Queue<X> {
    fn drop(&mut self) {
        drop(self.lock().take_slots());
    }
}

impl<X> Queue<X> {
    pub fn new(capacity: usize, overflow: Overflow, extra: X) -> Queue<X> {
        Queue {
            slots: AtomicPtr::new(std::ptr::null_mut()),
            tail: AtomicU32::new(0),
            locked: AtomicBool::new(false),
            shift: AtomicU8::new(0),
            extra,
            state: UnsafeCell::new(State {
                head: 0,
                capacity: capacity.clamp(1, MAX_CAPACITY) as u32,
                waiters: 0,
                overflow,
                closed: None,
                notifier: None,
                counts: Counts::default(),
            }),
        }
    }

    #[inline]
    fn lock(&self) -> Locked<'_, X> {
        if self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        Locked { q: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if spins < 64 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return;
            }
        }
    }

    /// Hints the queue (and the line after it, where the subscriber's
    /// flags are) in ahead of a push.
    #[inline(always)]
    pub fn prefetch(&self) {
        let base: *const Queue<X> = self;
        crate::index::prefetch(base);
        crate::index::prefetch(base.cast::<u8>().wrapping_add(std::mem::size_of::<Queue<X>>()));
    }

    /// Hints the slot the next push writes into cache; call it after
    /// `prefetch` has had time to bring the queue in. Relaxed reads outside
    /// the lock: a stale or torn combination only makes a useless prefetch,
    /// which never faults.
    #[inline(always)]
    pub fn prefetch_slot(&self) {
        let slots = self.slots.load(Ordering::Relaxed);
        let mask = (1u32 << (self.shift.load(Ordering::Relaxed) & 31)).wrapping_sub(1);
        let i = self.tail.load(Ordering::Relaxed) & mask;
        crate::index::prefetch(slots.wrapping_add(i as usize));
    }

    /// Offers one reference to a frame; refused or evicted references are
    /// dropped after the lock is released.
    pub fn push(&self, frame: FrameRef) -> PushOutcome {
        self.push_inner(frame, false)
    }

    /// Like `push`, except that the readiness fd is not signalled: when a
    /// signal is owed (`signal_owed`) the caller calls `signal` later, once
    /// for any number of pushes. Waiting readers are woken as by `push`.
    pub fn push_deferring(&self, frame: FrameRef) -> PushOutcome {
        self.push_inner(frame, true)
    }

    /// Signals the readiness fd if frames wait or the queue is closed (the
    /// reader may have taken them all since they were pushed). Only the
    /// Redis node defers signals.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn signal(&self) {
        let st = self.lock();
        match st.notifier.as_deref() {
            Some(Notifier::Fd(fd)) if !st.is_empty() || st.closed.is_some() => fd.signal(),
            // The token was listed at once; one write per set.
            Some(Notifier::Set { set, .. }) => set.flush(),
            _ => {}
        }
    }

    fn push_inner(&self, frame: FrameRef, defer: bool) -> PushOutcome {
        let mut st = self.lock();
        if st.closed.is_some() {
            return PushOutcome::default();
        }
        let mut outcome = PushOutcome { accepted: true, ..PushOutcome::default() };
        // Dropped after the lock is released: a frame's last reference may free it.
        let mut evicted = None;
        if st.len() >= st.capacity as usize {
            match st.overflow {
                Overflow::DropOldest => {
                    evicted = st.pop_front();
                    st.counts.dropped += 1;
                    outcome.dropped += 1;
                }
                Overflow::DropNewest => {
                    st.counts.dropped += 1;
                    outcome.dropped = 1;
                    return outcome;
                }
                Overflow::Disconnect => {
                    let discarded = st.len() as u64 + 1;
                    st.counts.dropped += discarded;
                    outcome.dropped = discarded;
                    let frames = Self::close_locked(&mut st, CloseReason::SlowConsumer);
                    outcome.disconnected = true;
                    drop(st);
                    drop(frames);
                    self.wake_all();
                    return outcome;
                }
            }
        }
        let was_empty = st.is_empty();
        st.push_back(frame);
        st.counts.delivered += 1;
        outcome.delivered = true;
        if was_empty && let Some(n) = &st.notifier {
            outcome.signal_owed = n.notify(defer);
        }
        // One wakeup per frame, not only on empty → non-empty: with several
        // readers waiting, a burst of frames must wake as many of them.
        let wake = st.waiters > 0;
        drop(st);
        drop(evicted);
        if wake {
            // SAFETY: the key is this queue's address, used only by its readers.
            unsafe { parking_lot_core::unpark_one(self.key(), |_| DEFAULT_UNPARK_TOKEN) };
        }
        outcome
    }

    /// The parking-lot key of this queue's waiting readers.
    fn key(&self) -> usize {
        self as *const Queue<X> as usize
    }

    fn wake_all(&self) {
        // SAFETY: as in `push`.
        unsafe { parking_lot_core::unpark_all(self.key(), DEFAULT_UNPARK_TOKEN) };
    }

    /// Takes the oldest frame, waiting up to `timeout` (zero: don't wait).
    pub fn pop(&self, timeout: Duration) -> Next {
        let mut taken = None;
        match self.pop_batch(timeout, 1, |_| true, |f| taken = Some(f)) {
            Batch::Taken { .. } => taken.map_or(Next::Empty, Next::Frame),
            Batch::Empty => Next::Empty,
            Batch::Timeout => Next::Timeout,
            Batch::Closed(reason) => Next::Closed(reason),
        }
    }

    /// Takes up to `max` of the oldest frames in one lock, oldest first,
    /// while `fits` accepts them, handing each to `take`. Waits up to
    /// `timeout` for a first frame, as `pop` does. `Taken { n: 0, .. }` means frames
    /// wait but `fits` refused the oldest (it stays queued).
    pub fn pop_batch(
        &self,
        timeout: Duration,
        max: usize,
        mut fits: impl FnMut(&Frame) -> bool,
        mut take: impl FnMut(FrameRef),
    ) -> Batch {
        let mut st = self.lock();
        let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
        loop {
            if let Some(reason) = st.closed {
                return Batch::Closed(reason.as_str());
            }
            if !st.is_empty() {
                let mut n = 0usize;
                while n < max {
                    match st.front() {
                        Some(f) if fits(f) => {}
                        _ => break,
                    }
                    take(st.pop_front().expect("front checked"));
                    n += 1;
                }
                st.counts.read += n as u64;
                let emptied = st.is_empty();
                if emptied && let Some(n) = &st.notifier {
                    n.emptied();
                }
                return Batch::Taken { n, emptied };
            }
            let Some(deadline) = deadline else {
                return Batch::Empty;
            };
            st.waiters += 1;
            drop(st);
            // Sleeps unless a frame arrived or the queue closed since the lock
            // was released (the rules at the top of this file).
            let idle = || {
                let st = self.lock();
                st.is_empty() && st.closed.is_none()
            };
            // SAFETY: the key is this queue's address; the callbacks neither
            // park nor unpark nor panic.
            let parked = unsafe {
                parking_lot_core::park(self.key(), idle, || {}, |_, _| {}, DEFAULT_PARK_TOKEN, Some(deadline))
            };
            st = self.lock();
            st.waiters -= 1;
            if parked == ParkResult::TimedOut && st.is_empty() && st.closed.is_none() {
                return Batch::Timeout;
            }
        }
    }

    /// Takes every queued frame out as if it had never been delivered (its
    /// `delivered` count is withdrawn), for a resume that queues them again
    /// in order among replayed frames.
    pub fn take_unread(&self) -> Vec<FrameRef> {
        let mut st = self.lock();
        let frames = st.drain();
        st.counts.delivered -= frames.len() as u64;
        if let Some(n) = &st.notifier
            && st.closed.is_none()
        {
            n.emptied();
        }
        frames
    }

    /// Marks the queue closed; returns its slots, for the caller to drop
    /// once the lock is released.
    fn close_locked(st: &mut Locked<'_, X>, reason: CloseReason) -> Slots {
        if st.closed.is_some() {
            return None;
        }
        st.closed = Some(reason);
        // Readable on close, so a poller comes to read the closed status.
        // A set lists the token only if it is not listed or held already
        // (the queue was empty).
        match st.notifier.as_deref() {
            Some(Notifier::Fd(fd)) => fd.signal(),
            Some(n @ Notifier::Set { .. }) if st.is_empty() => {
                n.notify(false);
            }
            _ => {}
        }
        st.take_slots()
    }

    /// Closes the queue: waiting and later reads return `Closed(reason)`.
    /// Returns how many queued frames were discarded (counted as dropped).
    pub fn close(&self, reason: CloseReason) -> u64 {
        let mut st = self.lock();
        let discarded = if st.closed.is_some() { 0 } else { st.len() as u64 };
        st.counts.dropped += discarded;
        let frames = Self::close_locked(&mut st, reason);
        drop(st);
        drop(frames);
        self.wake_all();
        discarded
    }

    pub fn stats(&self) -> QueueStats {
        let st = self.lock();
        let depth = st.len() as u64;
        let c = st.counts;
        QueueStats {
            matched: c.read + depth + c.dropped,
            delivered: c.delivered,
            dropped: c.dropped,
            read: c.read,
            depth,
        }
    }

    pub fn closed(&self) -> Option<&'static str> {
        self.lock().closed.map(CloseReason::as_str)
    }

    /// A file descriptor that polls readable while frames are waiting or the
    /// queue is closed. Created on first call; owned by the queue. Hosts poll
    /// it and must not read from it.
    /// An error once the queue is attached to a ready set.
    pub fn ready_fd(&self) -> Result<RawFd> {
        let mut st = self.lock();
        match st.notifier.as_deref() {
            Some(Notifier::Fd(fd)) => Ok(fd.fd()),
            Some(Notifier::Set { .. }) => Err(Error::new(
                ErrorKind::InvalidConfig,
                "the subscriber is attached to a ready set: poll the set's fd, it has no readiness fd of its own",
            )),
            None => {
                let fd = ReadyFd::new()?;
                if !st.is_empty() || st.closed.is_some() {
                    fd.signal();
                }
                let raw = fd.fd();
                st.notifier = Some(Box::new(Notifier::Fd(fd)));
                Ok(raw)
            }
        }
    }

    /// Attaches the queue to a ready set under `token` (unique within the
    /// set), listing it at once if frames wait or the queue is closed. An
    /// error when the queue already has a readiness fd or a set.
    pub fn attach(&self, set: &Arc<ReadySet>, token: u64) -> Result<()> {
        let mut st = self.lock();
        match st.notifier.as_deref() {
            Some(Notifier::Fd(_)) => {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    "the subscriber's own readiness fd is in use: it cannot also be attached to a ready set",
                ));
            }
            Some(Notifier::Set { .. }) => {
                return Err(Error::new(ErrorKind::InvalidConfig, "the subscriber is already attached to a ready set"));
            }
            None => {}
        }
        set.attach(token)?;
        let n = Notifier::Set { set: Arc::clone(set), token };
        if !st.is_empty() || st.closed.is_some() {
            n.notify(false);
        }
        st.notifier = Some(Box::new(n));
        Ok(())
    }

    /// Leaves the ready set, if any: the token is unlisted and free again.
    /// The queue is being freed (it is closed first, so nothing lists it).
    pub fn detach(&self) {
        let mut st = self.lock();
        if let Some(Notifier::Set { set, token }) = st.notifier.as_deref() {
            set.detach(*token);
            st.notifier = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::frame::FrameBody;

    fn frame(n: u32) -> FrameRef {
        FrameRef::new(Frame::new(&FrameBody::new("update", Some(&n.to_string())), &Arc::from("[\"public\"]")))
    }

    fn payloads(q: &Queue) -> Vec<String> {
        let mut out = Vec::new();
        while let Next::Frame(f) = q.pop(Duration::ZERO) {
            out.push(f.payload().unwrap().to_string());
        }
        out
    }

    #[test]
    fn drop_oldest_keeps_the_newest_frames() {
        let q = Queue::new(2, Overflow::DropOldest, ());
        let dropped: u64 = (0..5).map(|n| q.push(frame(n)).dropped).sum();
        assert_eq!(dropped, 3);
        assert_eq!(payloads(&q), ["3", "4"]);
        let s = q.stats();
        assert_eq!((s.matched, s.delivered, s.dropped, s.read, s.depth), (5, 5, 3, 2, 0));
    }

    #[test]
    fn drop_newest_keeps_the_oldest_frames() {
        let q = Queue::new(2, Overflow::DropNewest, ());
        for n in 0..5 {
            q.push(frame(n));
        }
        assert_eq!(payloads(&q), ["0", "1"]);
        let s = q.stats();
        assert_eq!(s.matched, s.read + s.depth + s.dropped);
    }

    #[test]
    fn disconnect_closes_the_slow_consumer() {
        let q = Queue::new(2, Overflow::Disconnect, ());
        q.push(frame(0));
        q.push(frame(1));
        assert_eq!(q.push(frame(2)).dropped, 3);
        assert!(matches!(q.pop(Duration::ZERO), Next::Closed(SLOW_CONSUMER)));
        // A closed queue takes no part in later publishes.
        assert_eq!(q.push(frame(3)), PushOutcome::default());
        let s = q.stats();
        assert_eq!((s.matched, s.dropped, s.depth), (3, 3, 0));
    }

    #[test]
    fn pop_batch_takes_in_order_up_to_max_while_frames_fit() {
        let q = Queue::new(8, Overflow::DropOldest, ());
        let fd = q.ready_fd().unwrap();
        for n in 0..5 {
            q.push(frame(n));
        }
        let mut got = Vec::new();
        assert_eq!(q.pop_batch(Duration::ZERO, 2, |_| true, |f| got.push(f)), Batch::Taken { n: 2, emptied: false });
        // `fits` refuses the third frame offered: it and the rest stay queued.
        let mut offered = 0;
        let fits = |_: &Frame| {
            offered += 1;
            offered < 3
        };
        assert_eq!(q.pop_batch(Duration::ZERO, 10, fits, |f| got.push(f)), Batch::Taken { n: 2, emptied: false });
        let names: Vec<_> = got.iter().map(|f| f.payload().unwrap().to_string()).collect();
        assert_eq!(names, ["0", "1", "2", "3"]);
        assert_eq!(
            q.pop_batch(Duration::ZERO, 10, |_| false, |_| unreachable!()),
            Batch::Taken { n: 0, emptied: false }
        );
        let s = q.stats();
        assert_eq!((s.matched, s.read, s.depth), (5, 4, 1));
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, zero timeout.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 1, "a frame still waits");
        assert_eq!(q.pop_batch(Duration::ZERO, 10, |_| true, |_| {}), Batch::Taken { n: 1, emptied: true });
        // SAFETY: as above.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 0, "drained: not readable");
        assert_eq!(q.pop_batch(Duration::ZERO, 10, |_| true, |_| {}), Batch::Empty);
        assert_eq!(q.pop_batch(Duration::from_millis(2), 10, |_| true, |_| {}), Batch::Timeout);
        q.close(CloseReason::Closed);
        assert_eq!(q.pop_batch(Duration::ZERO, 10, |_| true, |_| {}), Batch::Closed("closed"));
    }

    #[test]
    fn waiting_times_out_or_wakes_on_push() {
        let q = Arc::new(Queue::new(4, Overflow::DropOldest, ()));
        assert!(matches!(q.pop(Duration::ZERO), Next::Empty));
        assert!(matches!(q.pop(Duration::from_millis(5)), Next::Timeout));
        let q2 = Arc::clone(&q);
        let t = std::thread::spawn(move || q2.pop(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        q.push(frame(7));
        assert!(matches!(t.join().unwrap(), Next::Frame(f) if f.payload() == Some("7")));
    }

    /// Whether `fd` polls readable now.
    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn ready_fd_is_readable_exactly_while_frames_wait() {
        let q = Queue::new(4, Overflow::DropOldest, ());
        let fd = q.ready_fd().unwrap();
        let readable = || readable(fd);
        assert!(!readable());
        q.push(frame(1));
        q.push(frame(2));
        assert!(readable());
        q.pop(Duration::ZERO);
        assert!(readable());
        q.pop(Duration::ZERO);
        assert!(!readable());
        q.close(CloseReason::Closed);
        assert!(readable());
        assert_eq!(q.ready_fd().unwrap(), fd);
    }

    /// Ring positions count modulo 2^32: a queue whose positions wrap
    /// around keeps its frames in order, evicting the oldest when full.
    #[test]
    fn positions_wrap_around() {
        let q = Queue::new(8, Overflow::DropOldest, ());
        // Grow the ring to its full 8 slots, empty it, then move its
        // positions to just before the wrap (any equal pair is consistent
        // for an empty ring).
        for n in 0..8 {
            q.push(frame(n));
        }
        assert_eq!(payloads(&q).len(), 8);
        q.lock().head = u32::MAX - 2;
        q.tail.store(u32::MAX - 2, Ordering::Relaxed);
        let mut want = VecDeque::new();
        for n in 0..30 {
            q.push(frame(n));
            want.push_back(n.to_string());
            if want.len() > 8 {
                want.pop_front();
            }
            if n % 7 == 6 {
                let Next::Frame(f) = q.pop(Duration::ZERO) else { panic!("a frame waits") };
                assert_eq!(Some(f.payload().unwrap().to_string()), want.pop_front());
            }
        }
        assert_eq!(payloads(&q), Vec::from(want));
        assert_eq!(q.lock().slots().len(), 8, "the ring never grew past the capacity");
        let s = q.stats();
        assert_eq!((s.matched, s.read + s.depth + s.dropped), (38, 38));
    }

    #[test]
    fn deferred_pushes_leave_the_signal_to_the_caller() {
        let q = Queue::new(4, Overflow::DropOldest, ());
        let fd = q.ready_fd().unwrap();
        let readable = || readable(fd);
        q.signal();
        assert!(!readable(), "nothing waits: no signal");
        assert!(q.push_deferring(frame(1)).signal_owed);
        assert!(!q.push_deferring(frame(2)).signal_owed, "owed once, by the push that found the queue empty");
        assert!(!readable());
        q.signal();
        assert!(readable());
        q.pop_batch(Duration::ZERO, 8, |_| true, drop);
        assert!(!readable());
        assert!(q.push_deferring(frame(3)).signal_owed);
        q.pop(Duration::ZERO);
        q.signal();
        assert!(!readable(), "the reader took the frame before the signal: none is sent");
        assert!(!q.push(frame(4)).signal_owed, "push signals itself");
        assert!(readable());
    }

    fn number(f: &Frame) -> u32 {
        f.payload().unwrap().parse().unwrap()
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push,
        /// Up to `max` frames, refusing from the `fits`-th offered on.
        Pop {
            max: usize,
            fits: usize,
        },
        TakeUnread,
        Close,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => Just(Op::Push),
            3 => (1..6usize, 0..7usize).prop_map(|(max, fits)| Op::Pop { max, fits }),
            1 => Just(Op::TakeUnread),
            1 => Just(Op::Close),
        ]
    }

    fn policy() -> impl Strategy<Value = Overflow> {
        prop_oneof![Just(Overflow::DropOldest), Just(Overflow::DropNewest), Just(Overflow::Disconnect)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The ring (wrapping, growing, evicting) against a `VecDeque` model
        /// of the three policies and the counters.
        #[test]
        fn queue_matches_a_deque_model(
            capacity in 1..12usize,
            overflow in policy(),
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let q = Queue::new(capacity, overflow, ());
            let mut model: VecDeque<u32> = VecDeque::new();
            let (mut closed, mut delivered, mut dropped, mut read) = (false, 0u64, 0u64, 0u64);
            let mut next = 0u32;
            for op in ops {
                match op {
                    Op::Push => {
                        let out = q.push(frame(next));
                        if closed {
                            prop_assert_eq!(out, PushOutcome::default());
                        } else if model.len() < capacity || overflow == Overflow::DropOldest {
                            if model.len() == capacity {
                                model.pop_front();
                                dropped += 1;
                            }
                            model.push_back(next);
                            delivered += 1;
                            prop_assert!(out.delivered);
                        } else if overflow == Overflow::DropNewest {
                            dropped += 1;
                            prop_assert_eq!((out.delivered, out.dropped), (false, 1));
                        } else {
                            dropped += model.len() as u64 + 1;
                            prop_assert_eq!(out.dropped, model.len() as u64 + 1);
                            prop_assert!(out.disconnected);
                            model.clear();
                            closed = true;
                        }
                        next += 1;
                    }
                    Op::Pop { max, fits } => {
                        let mut offered = 0;
                        let mut got = Vec::new();
                        let batch = q.pop_batch(Duration::ZERO, max, |_| { offered += 1; offered <= fits }, |f| got.push(number(&f)));
                        if closed {
                            prop_assert!(matches!(batch, Batch::Closed(_)));
                        } else if model.is_empty() {
                            prop_assert_eq!(batch, Batch::Empty);
                        } else {
                            let want: Vec<u32> = model.drain(..max.min(fits).min(model.len())).collect();
                            prop_assert_eq!(batch, Batch::Taken { n: want.len(), emptied: model.is_empty() });
                            prop_assert_eq!(&got, &want);
                            read += want.len() as u64;
                        }
                    }
                    Op::TakeUnread => {
                        let got: Vec<u32> = q.take_unread().iter().map(|f| number(f)).collect();
                        let want: Vec<u32> = model.drain(..).collect();
                        delivered -= want.len() as u64;
                        prop_assert_eq!(got, want);
                    }
                    Op::Close => {
                        let discarded = q.close(CloseReason::Closed);
                        prop_assert_eq!(discarded, if closed { 0 } else { model.len() as u64 });
                        dropped += discarded;
                        model.clear();
                        closed = true;
                    }
                }
                let s = q.stats();
                prop_assert_eq!((s.delivered, s.dropped, s.read, s.depth), (delivered, dropped, read, model.len() as u64));
                prop_assert_eq!(s.matched, s.read + s.depth + s.dropped);
            }
        }
    }

    /// Several producers and one reader that waits: every frame arrives
    /// exactly once and in its producer's order, and no wakeup is lost (a
    /// lost one would leave the reader asleep until its timeout).
    #[test]
    fn concurrent_producers_and_a_waiting_reader() {
        const PRODUCERS: u32 = 4;
        const EACH: u32 = 20_000;
        for (capacity, overflow) in [(1 << 20, Overflow::DropNewest), (7, Overflow::DropOldest)] {
            let q = Arc::new(Queue::new(capacity, overflow, ()));
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|t| {
                    let q = Arc::clone(&q);
                    std::thread::spawn(move || {
                        for i in 0..EACH {
                            q.push(frame(t * EACH + i));
                            if i % 1000 == 0 {
                                // Let the reader catch up and wait again.
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    })
                })
                .collect();
            let total = u64::from(PRODUCERS * EACH);
            let mut last = [None::<u32>; PRODUCERS as usize];
            let mut got = 0u64;
            loop {
                // Every push counts in `matched`; while some are still to come,
                // each of them queues a frame and must wake this reader.
                let s = q.stats();
                if s.matched == total && s.depth == 0 {
                    break;
                }
                let mut taken = Vec::new();
                let (wait, start) = (Duration::from_secs(5), Instant::now());
                let batch = q.pop_batch(wait, 5, |_| true, |f| taken.push(number(&f)));
                // A reader woken by its timeout rather than by a push missed a wakeup.
                assert!(
                    matches!(batch, Batch::Taken { n, .. } if n > 0) && start.elapsed() < wait,
                    "lost wakeup: {batch:?} after {:?} with {} of {total} frames pushed",
                    start.elapsed(),
                    s.matched
                );
                for n in taken {
                    let (t, i) = ((n / EACH) as usize, n % EACH);
                    assert!(last[t].is_none_or(|l| l < i), "producer {t}: {i} after {:?}", last[t]);
                    last[t] = Some(i);
                    got += 1;
                }
            }
            for p in producers {
                p.join().unwrap();
            }
            let s = q.stats();
            assert_eq!(s.matched, u64::from(PRODUCERS * EACH));
            assert_eq!((s.read, s.depth), (got, 0));
            if overflow == Overflow::DropNewest {
                assert_eq!((got, s.dropped), (u64::from(PRODUCERS * EACH), 0), "nothing may drop below capacity");
            }
            assert_eq!(s.matched, s.read + s.dropped);
        }
    }

    /// Producers racing a `close`: every frame is counted once, as read,
    /// dropped or refused after the close, and waiting readers all wake.
    #[test]
    fn close_during_concurrent_pushes_wakes_every_reader() {
        let q = Arc::new(Queue::new(64, Overflow::DropOldest, ()));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || {
                    loop {
                        match q.pop(Duration::from_secs(10)) {
                            Next::Frame(_) => {}
                            Next::Closed(reason) => return reason,
                            other => panic!("reader: {other:?}"),
                        }
                    }
                })
            })
            .collect();
        let producers: Vec<_> = (0..3)
            .map(|t| {
                let q = Arc::clone(&q);
                std::thread::spawn(move || (0..5000).filter(|&i| q.push(frame(t * 5000 + i)).accepted).count() as u64)
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5));
        q.close(CloseReason::Closed);
        let accepted: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
        for r in readers {
            assert_eq!(r.join().unwrap(), "closed");
        }
        let s = q.stats();
        assert_eq!(s.matched, accepted);
        assert_eq!((s.depth, s.matched), (0, s.read + s.dropped));
    }
}
