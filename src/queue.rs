//! One bounded frame queue per subscriber (SPEC §6).
//!
//! A `parking_lot` mutex around a `VecDeque` of shared frames: a publish
//! holds it for one push, so it never blocks on a slow reader. The deque is
//! allocated on first push, so an idle subscriber costs no buffer. Readers
//! wait on a condvar with a timeout, or poll an optional readiness fd
//! (src/readiness.rs) that is readable exactly while the queue is non-empty
//! or closed.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::Result;
use crate::frame::Frame;
use crate::readiness::ReadyFd;

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
}

/// What a read from a subscriber produced.
#[derive(Debug)]
pub enum Next {
    Frame(Arc<Frame>),
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
    /// This many frames were taken (0: the oldest did not fit).
    Taken(usize),
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

// Field order is fixed (repr(C)) so that what a push touches (lock, deque,
// capacity, policy, closed flag) shares the first cache line of the queue.
#[repr(C)]
struct State {
    frames: VecDeque<Arc<Frame>>,
    capacity: usize,
    overflow: Overflow,
    closed: Option<CloseReason>,
    waiters: u32,
    notifier: Option<ReadyFd>,
    counts: Counts,
}

#[repr(C)]
pub struct Queue {
    state: Mutex<State>,
    ready: Condvar,
}

impl Queue {
    pub fn new(capacity: usize, overflow: Overflow) -> Queue {
        Queue {
            state: Mutex::new(State {
                frames: VecDeque::new(),
                capacity: capacity.max(1),
                overflow,
                closed: None,
                waiters: 0,
                notifier: None,
                counts: Counts::default(),
            }),
            ready: Condvar::new(),
        }
    }

    /// Hints the queue's hot cache lines in ahead of a push.
    #[inline(always)]
    pub fn prefetch(&self) {
        let base: *const Queue = self;
        crate::index::prefetch(base);
        crate::index::prefetch(base.cast::<u8>().wrapping_add(64));
    }

    pub fn push(&self, frame: &Arc<Frame>) -> PushOutcome {
        let mut st = self.state.lock();
        if st.closed.is_some() {
            return PushOutcome::default();
        }
        let mut outcome = PushOutcome { accepted: true, ..PushOutcome::default() };
        if st.frames.len() >= st.capacity {
            match st.overflow {
                Overflow::DropOldest => {
                    st.frames.pop_front();
                    st.counts.dropped += 1;
                    outcome.dropped += 1;
                }
                Overflow::DropNewest => {
                    st.counts.dropped += 1;
                    outcome.dropped = 1;
                    return outcome;
                }
                Overflow::Disconnect => {
                    let discarded = st.frames.len() as u64 + 1;
                    st.counts.dropped += discarded;
                    outcome.dropped = discarded;
                    Self::close_locked(&mut st, CloseReason::SlowConsumer);
                    outcome.disconnected = true;
                    drop(st);
                    self.ready.notify_all();
                    return outcome;
                }
            }
        }
        let was_empty = st.frames.is_empty();
        st.frames.push_back(Arc::clone(frame));
        st.counts.delivered += 1;
        outcome.delivered = true;
        if was_empty && let Some(fd) = &st.notifier {
            fd.signal();
        }
        // One wakeup per frame, not only on empty → non-empty: with several
        // readers waiting, a burst of frames must wake as many of them.
        if st.waiters > 0 {
            self.ready.notify_one();
        }
        outcome
    }

    /// Takes the oldest frame, waiting up to `timeout` (zero: don't wait).
    pub fn pop(&self, timeout: Duration) -> Next {
        let mut taken = None;
        match self.pop_batch(timeout, 1, |_| true, |f| taken = Some(f)) {
            Batch::Taken(_) => taken.map_or(Next::Empty, Next::Frame),
            Batch::Empty => Next::Empty,
            Batch::Timeout => Next::Timeout,
            Batch::Closed(reason) => Next::Closed(reason),
        }
    }

    /// Takes up to `max` of the oldest frames in one lock, oldest first,
    /// while `fits` accepts them, handing each to `take`. Waits up to
    /// `timeout` for a first frame, as `pop` does. `Taken(0)` means frames
    /// wait but `fits` refused the oldest (it stays queued).
    pub fn pop_batch(
        &self,
        timeout: Duration,
        max: usize,
        mut fits: impl FnMut(&Frame) -> bool,
        mut take: impl FnMut(Arc<Frame>),
    ) -> Batch {
        let mut st = self.state.lock();
        let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
        loop {
            if let Some(reason) = st.closed {
                return Batch::Closed(reason.as_str());
            }
            if !st.frames.is_empty() {
                let mut n = 0;
                while n < max {
                    match st.frames.front() {
                        Some(f) if fits(f) => {}
                        _ => break,
                    }
                    take(st.frames.pop_front().expect("front checked"));
                    n += 1;
                }
                st.counts.read += n as u64;
                if st.frames.is_empty()
                    && let Some(fd) = &st.notifier
                {
                    fd.clear();
                }
                return Batch::Taken(n);
            }
            let Some(deadline) = deadline else {
                return Batch::Empty;
            };
            st.waiters += 1;
            let timed_out = self.ready.wait_until(&mut st, deadline).timed_out();
            st.waiters -= 1;
            if timed_out && st.frames.is_empty() && st.closed.is_none() {
                return Batch::Timeout;
            }
        }
    }

    /// Takes every queued frame out as if it had never been delivered (its
    /// `delivered` count is withdrawn), for a resume that queues them again
    /// in order among replayed frames.
    pub fn take_unread(&self) -> Vec<Arc<Frame>> {
        let mut st = self.state.lock();
        let frames: Vec<Arc<Frame>> = st.frames.drain(..).collect();
        st.counts.delivered -= frames.len() as u64;
        if let Some(fd) = &st.notifier
            && st.closed.is_none()
        {
            fd.clear();
        }
        frames
    }

    fn close_locked(st: &mut State, reason: CloseReason) {
        if st.closed.is_none() {
            st.closed = Some(reason);
            st.frames = VecDeque::new();
            // Readable on close, so a poller comes to read the closed status.
            if let Some(fd) = &st.notifier {
                fd.signal();
            }
        }
    }

    /// Closes the queue: waiting and later reads return `Closed(reason)`.
    /// Returns how many queued frames were discarded (counted as dropped).
    pub fn close(&self, reason: CloseReason) -> u64 {
        let mut st = self.state.lock();
        let discarded = if st.closed.is_some() { 0 } else { st.frames.len() as u64 };
        st.counts.dropped += discarded;
        Self::close_locked(&mut st, reason);
        drop(st);
        self.ready.notify_all();
        discarded
    }

    pub fn stats(&self) -> QueueStats {
        let st = self.state.lock();
        let depth = st.frames.len() as u64;
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
        self.state.lock().closed.map(CloseReason::as_str)
    }

    /// A file descriptor that polls readable while frames are waiting or the
    /// queue is closed. Created on first call; owned by the queue. Hosts poll
    /// it and must not read from it.
    pub fn ready_fd(&self) -> Result<RawFd> {
        let mut st = self.state.lock();
        if st.notifier.is_none() {
            let fd = ReadyFd::new()?;
            if !st.frames.is_empty() || st.closed.is_some() {
                fd.signal();
            }
            st.notifier = Some(fd);
        }
        Ok(st.notifier.as_ref().map(ReadyFd::fd).unwrap_or(-1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameBody;

    fn frame(n: u32) -> Arc<Frame> {
        Arc::new(Frame::new(&FrameBody::new("update", Some(&n.to_string())), &Arc::from("[\"public\"]")))
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
        let q = Queue::new(2, Overflow::DropOldest);
        let dropped: u64 = (0..5).map(|n| q.push(&frame(n)).dropped).sum();
        assert_eq!(dropped, 3);
        assert_eq!(payloads(&q), ["3", "4"]);
        let s = q.stats();
        assert_eq!((s.matched, s.delivered, s.dropped, s.read, s.depth), (5, 5, 3, 2, 0));
    }

    #[test]
    fn drop_newest_keeps_the_oldest_frames() {
        let q = Queue::new(2, Overflow::DropNewest);
        for n in 0..5 {
            q.push(&frame(n));
        }
        assert_eq!(payloads(&q), ["0", "1"]);
        let s = q.stats();
        assert_eq!(s.matched, s.read + s.depth + s.dropped);
    }

    #[test]
    fn disconnect_closes_the_slow_consumer() {
        let q = Queue::new(2, Overflow::Disconnect);
        q.push(&frame(0));
        q.push(&frame(1));
        assert_eq!(q.push(&frame(2)).dropped, 3);
        assert!(matches!(q.pop(Duration::ZERO), Next::Closed(SLOW_CONSUMER)));
        // A closed queue takes no part in later publishes.
        assert_eq!(q.push(&frame(3)), PushOutcome::default());
        let s = q.stats();
        assert_eq!((s.matched, s.dropped, s.depth), (3, 3, 0));
    }

    #[test]
    fn pop_batch_takes_in_order_up_to_max_while_frames_fit() {
        let q = Queue::new(8, Overflow::DropOldest);
        let fd = q.ready_fd().unwrap();
        for n in 0..5 {
            q.push(&frame(n));
        }
        let mut got = Vec::new();
        assert_eq!(q.pop_batch(Duration::ZERO, 2, |_| true, |f| got.push(f)), Batch::Taken(2));
        // `fits` refuses the third frame offered: it and the rest stay queued.
        let mut offered = 0;
        let fits = |_: &Frame| {
            offered += 1;
            offered < 3
        };
        assert_eq!(q.pop_batch(Duration::ZERO, 10, fits, |f| got.push(f)), Batch::Taken(2));
        let names: Vec<_> = got.iter().map(|f| f.payload().unwrap().to_string()).collect();
        assert_eq!(names, ["0", "1", "2", "3"]);
        assert_eq!(q.pop_batch(Duration::ZERO, 10, |_| false, |_| unreachable!()), Batch::Taken(0));
        let s = q.stats();
        assert_eq!((s.matched, s.read, s.depth), (5, 4, 1));
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, zero timeout.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 1, "a frame still waits");
        assert_eq!(q.pop_batch(Duration::ZERO, 10, |_| true, |_| {}), Batch::Taken(1));
        // SAFETY: as above.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 0, "drained: not readable");
        assert_eq!(q.pop_batch(Duration::ZERO, 10, |_| true, |_| {}), Batch::Empty);
        assert_eq!(q.pop_batch(Duration::from_millis(2), 10, |_| true, |_| {}), Batch::Timeout);
        q.close(CloseReason::Closed);
        assert_eq!(q.pop_batch(Duration::ZERO, 10, |_| true, |_| {}), Batch::Closed("closed"));
    }

    #[test]
    fn waiting_times_out_or_wakes_on_push() {
        let q = Arc::new(Queue::new(4, Overflow::DropOldest));
        assert!(matches!(q.pop(Duration::ZERO), Next::Empty));
        assert!(matches!(q.pop(Duration::from_millis(5)), Next::Timeout));
        let q2 = Arc::clone(&q);
        let t = std::thread::spawn(move || q2.pop(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        q.push(&frame(7));
        assert!(matches!(t.join().unwrap(), Next::Frame(f) if f.payload() == Some("7")));
    }

    #[test]
    fn ready_fd_is_readable_exactly_while_frames_wait() {
        let q = Queue::new(4, Overflow::DropOldest);
        let fd = q.ready_fd().unwrap();
        let readable = || {
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, zero timeout.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        assert!(!readable());
        q.push(&frame(1));
        q.push(&frame(2));
        assert!(readable());
        q.pop(Duration::ZERO);
        assert!(readable());
        q.pop(Duration::ZERO);
        assert!(!readable());
        q.close(CloseReason::Closed);
        assert!(readable());
        assert_eq!(q.ready_fd().unwrap(), fd);
    }
}
