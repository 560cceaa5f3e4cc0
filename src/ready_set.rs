//! A ready set: many subscribers, one readiness fd. Each attached subscriber
//! has a token chosen by the host; the set lists the tokens of subscribers
//! that have frames (or were closed), and its fd (a [`ReadyFd`]) polls
//! readable while the list is non-empty. A host with thousands of
//! connections then waits on one fd per writer thread, and one wakeup hands
//! it every connection that has something to write, instead of one eventfd
//! write, poller wakeup and drain per connection.
//!
//! The rules (kept by `Queue` in src/queue.rs, which lists the tokens):
//! - A queue lists its token when it goes from empty to non-empty (under
//!   the queue lock), when it is closed while empty (a closed non-empty
//!   queue is already listed or held, see below), and on attach if frames
//!   already wait or it is closed.
//! - The host takes tokens with [`ReadySet::take`]. After taking a token it
//!   drains that subscriber until a drain reports the queue emptied (or
//!   closed). If it stops earlier (a byte cap, a socket that would block),
//!   it owns coming back to that subscriber: no new token comes, because
//!   the queue never went empty. A new token comes only after a drain
//!   emptied the queue, so no wakeup is lost: every non-empty queue is
//!   either listed or held by the host.
//! - A token may be listed while its queue is already empty (a resume took
//!   the frames back, or a token was listed twice): draining it reports
//!   empty at once. Hosts must take that in stride.
//! - Lock order: queue lock, then set lock; never the reverse. `take` holds
//!   only the set lock.
//! - The fd is written only when the list is non-empty and the fd is not
//!   already signalled (`signalled`), and cleared when `take` empties the
//!   list. Deferred listing (`list(token, true)`, for the Redis node's
//!   `push_deferring`) adds the token without writing, and only the first
//!   one since the last `flush` says a flush is owed (`flush_owed`), so the
//!   Redis node flushes each set once per read, not once per subscriber,
//!   and the set costs at most one fd write per read.
//! - Freeing a subscriber detaches it: its token is removed from the list
//!   and from the set, so `take` never returns the token of a subscriber
//!   freed before the `take` began. A token taken before its subscriber was
//!   freed is the host's to ignore. Tokens are unique within a set (attach
//!   refuses a token in use), so removing one never removes another
//!   subscriber's.

use std::collections::VecDeque;
use std::os::fd::RawFd;

use ahash::AHashSet;
use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::readiness::ReadyFd;

/// Tokens of subscribers with frames waiting, and the fd that says so.
pub struct ReadySet {
    fd: ReadyFd,
    state: Mutex<SetState>,
}

struct SetState {
    /// Oldest first, so a subscriber that got frames first is written first.
    listed: VecDeque<u64>,
    /// The fd has been written since the list was last emptied.
    signalled: bool,
    /// A deferred listing is waiting for a `flush`.
    flush_owed: bool,
    /// Tokens of the attached subscribers.
    attached: AHashSet<u64>,
}

impl ReadySet {
    pub fn new() -> Result<ReadySet> {
        Ok(ReadySet {
            fd: ReadyFd::new()?,
            state: Mutex::new(SetState {
                listed: VecDeque::new(),
                signalled: false,
                flush_owed: false,
                attached: AHashSet::new(),
            }),
        })
    }

    /// The fd that polls readable while tokens are listed. Owned by the
    /// set: poll it, never read, write or close it.
    pub fn fd(&self) -> RawFd {
        self.fd.fd()
    }

    /// Moves up to `out.len()` tokens out, oldest first; returns how many.
    /// The fd stops polling readable when the list empties.
    pub fn take(&self, out: &mut [u64]) -> usize {
        let mut st = self.state.lock();
        let n = out.len().min(st.listed.len());
        for (slot, token) in out.iter_mut().zip(st.listed.drain(..n)) {
            *slot = token;
        }
        if st.listed.is_empty() && st.signalled {
            st.signalled = false;
            self.fd.clear();
        }
        n
    }

    /// How many tokens are listed (tests and stats).
    pub fn len(&self) -> usize {
        self.state.lock().listed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves `token` for a subscriber being attached.
    pub(crate) fn attach(&self, token: u64) -> Result<()> {
        if self.state.lock().attached.insert(token) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("token {token} is already attached to this ready set (tokens must be unique within a set)"),
            ))
        }
    }

    /// Forgets `token`: its subscriber is being freed.
    pub(crate) fn detach(&self, token: u64) {
        let mut st = self.state.lock();
        st.attached.remove(&token);
        st.listed.retain(|&t| t != token);
        if st.listed.is_empty() && st.signalled {
            st.signalled = false;
            self.fd.clear();
        }
    }

    /// Lists `token`; writes the fd unless `defer`. A deferred listing
    /// returns true when the caller owes the set a `flush` (no earlier one
    /// is pending). Called under the token's queue lock.
    pub(crate) fn list(&self, token: u64, defer: bool) -> bool {
        let mut st = self.state.lock();
        st.listed.push_back(token);
        if defer {
            return !std::mem::replace(&mut st.flush_owed, true);
        }
        if !st.signalled {
            st.signalled = true;
            self.fd.signal();
        }
        false
    }

    /// Writes the fd if tokens are listed and it was not written yet.
    pub(crate) fn flush(&self) {
        let mut st = self.state.lock();
        st.flush_owed = false;
        if !st.listed.is_empty() && !st.signalled {
            st.signalled = true;
            self.fd.signal();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::frame::{Frame, FrameBody, FrameRef};
    use crate::queue::{Batch, CloseReason, Overflow, Queue};

    fn readable(set: &ReadySet) -> bool {
        let mut p = libc::pollfd { fd: set.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn the_fd_is_readable_exactly_while_tokens_are_listed() {
        let set = ReadySet::new().unwrap();
        assert!(!readable(&set));
        set.list(7, false);
        set.list(9, false);
        assert!(readable(&set));
        let mut out = [0u64; 1];
        assert_eq!(set.take(&mut out), 1);
        assert_eq!(out, [7], "oldest first");
        assert!(readable(&set), "9 is still listed");
        assert_eq!(set.take(&mut out), 1);
        assert_eq!(out, [9]);
        assert!(!readable(&set));
        assert_eq!(set.take(&mut out), 0);
    }

    #[test]
    fn deferred_listing_writes_the_fd_once_on_flush() {
        let set = ReadySet::new().unwrap();
        set.flush();
        assert!(!readable(&set), "nothing listed: no write");
        assert!(set.list(1, true), "the first deferred listing owes the flush");
        assert!(!set.list(2, true), "one flush covers the rest");
        assert!(!readable(&set));
        set.flush();
        assert!(readable(&set));
        assert!(set.state.lock().signalled);
        let mut out = [0u64; 8];
        assert_eq!(set.take(&mut out), 2);
        assert!(set.list(3, true), "after a flush, the next deferred listing owes one again");
        assert_eq!(set.take(&mut out), 1);
        set.flush();
        assert!(!readable(&set), "taken before the flush: no write");
    }

    #[test]
    fn tokens_are_unique_and_detach_unlists() {
        let set = ReadySet::new().unwrap();
        set.attach(5).unwrap();
        let err = set.attach(5).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.message().contains("token 5 is already attached"), "{}", err.message());
        set.attach(6).unwrap();
        set.list(5, false);
        set.list(6, false);
        set.list(5, false);
        set.detach(5);
        let mut out = [0u64; 8];
        assert_eq!(set.take(&mut out), 1);
        assert_eq!(out[0], 6);
        set.list(6, false);
        set.detach(6);
        assert!(!readable(&set), "the last listed token went: the fd is clear");
        set.attach(5).unwrap();
    }

    fn frame(n: u64) -> FrameRef {
        FrameRef::new(Frame::new(&FrameBody::new("update", Some(&n.to_string())), &Arc::from("[\"public\"]")))
    }

    fn poll_fd(set: &ReadySet, ms: i32) -> bool {
        let mut p = libc::pollfd { fd: set.fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    }

    /// What a producer thread does to one of the queues.
    #[derive(Clone, Debug)]
    enum Op {
        Push(usize),
        /// As the Redis node does for one read: deferred pushes, then one
        /// `signal` per queue that owed one.
        Deferred(Vec<usize>),
        Close(usize),
    }

    fn ops(queues: usize) -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            8 => (0..queues).prop_map(Op::Push),
            3 => proptest::collection::vec(0..queues, 1..6).prop_map(Op::Deferred),
            1 => (0..queues).prop_map(Op::Close),
        ];
        proptest::collection::vec(op, 1..80)
    }

    /// How the host handles one token: frames per read, and after how many
    /// reads it stops early (keeping the queue to come back to) if the
    /// queue is not emptied by then.
    #[derive(Clone, Copy, Debug)]
    struct HostStep {
        take: usize,
        per_read: usize,
        reads: usize,
    }

    fn host_steps() -> impl Strategy<Value = Vec<HostStep>> {
        proptest::collection::vec(
            (1..5usize, 1..4usize, 1..4usize).prop_map(|(take, per_read, reads)| HostStep { take, per_read, reads }),
            1..16,
        )
    }

    /// The host of the model test: takes tokens and drains by the rule.
    struct Host<'a> {
        qs: &'a [Queue],
        set: &'a ReadySet,
        got: Vec<Vec<u64>>,
        closed_seen: Vec<bool>,
        /// Queues it stopped draining early and must come back to.
        owned: Vec<usize>,
    }

    impl Host<'_> {
        /// Drains queue i as `s` says; true when it must come back.
        fn visit(&mut self, i: usize, s: HostStep) -> bool {
            for _ in 0..s.reads {
                let got = &mut self.got[i];
                match self.qs[i].pop_batch(
                    Duration::ZERO,
                    s.per_read,
                    |_| true,
                    |f| got.push(f.payload().unwrap().parse().unwrap()),
                ) {
                    Batch::Taken { emptied: true, .. } | Batch::Empty => return false,
                    Batch::Closed(_) => {
                        self.closed_seen[i] = true;
                        return false;
                    }
                    Batch::Taken { emptied: false, .. } => {}
                    Batch::Timeout => unreachable!("no wait"),
                }
            }
            true
        }

        /// Revisits the owed queues, then takes and drains; false when
        /// there was nothing to do.
        fn round(&mut self, s: HostStep) -> std::result::Result<bool, TestCaseError> {
            let mut busy = false;
            for i in std::mem::take(&mut self.owned) {
                busy = true;
                if self.visit(i, s) {
                    self.owned.push(i);
                }
            }
            let mut tokens = [0u64; 8];
            let n = self.set.take(&mut tokens[..s.take]);
            for &t in &tokens[..n] {
                busy = true;
                let i = (t - 100) as usize;
                prop_assert!(!self.owned.contains(&i), "token {} listed while its host still owes it a visit", t);
                if self.visit(i, s) {
                    self.owned.push(i);
                }
            }
            Ok(busy)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Producers push (now or deferred) and close from several threads
        /// while the host takes tokens and drains by the rule, sometimes
        /// stopping early. Against a reference of what each producer
        /// pushed: every frame arrives once and in order (or is counted
        /// dropped by a close), and when all is quiet no queue has frames
        /// without its token listed or held (no lost wakeup), and the fd is
        /// readable exactly while tokens are listed.
        #[test]
        fn no_lost_wakeup_and_no_frame_loss(
            queues in 1..5usize,
            producers in proptest::collection::vec(ops(4), 1..4),
            steps in host_steps(),
        ) {
            let set = Arc::new(ReadySet::new().unwrap());
            let qs: Arc<Vec<Queue>> = Arc::new((0..queues).map(|_| Queue::new(1 << 16, Overflow::DropNewest, ())).collect());
            for (i, q) in qs.iter().enumerate() {
                q.attach(&set, i as u64 + 100).unwrap();
            }
            let threads: Vec<_> = producers.into_iter().enumerate().map(|(p, ops)| {
                let qs = Arc::clone(&qs);
                std::thread::spawn(move || {
                    // Frame numbers: producer * 2^32 + sequence.
                    let mut seq = 0u64;
                    let mut next = || { seq += 1; ((p as u64) << 32) | seq };
                    // (queue, frame) of every accepted push.
                    let mut accepted = Vec::new();
                    for op in ops {
                        match op {
                            Op::Push(q) => {
                                let (q, n) = (q % qs.len(), next());
                                if qs[q].push(frame(n)).accepted { accepted.push((q, n)); }
                            }
                            Op::Deferred(list) => {
                                let mut owed = Vec::new();
                                for q in list {
                                    let (q, n) = (q % qs.len(), next());
                                    let out = qs[q].push_deferring(frame(n));
                                    if out.accepted { accepted.push((q, n)); }
                                    if out.signal_owed { owed.push(q); }
                                }
                                for q in owed { qs[q].signal(); }
                            }
                            Op::Close(q) => { qs[q % qs.len()].close(CloseReason::Closed); }
                        }
                    }
                    accepted
                })
            }).collect();

            let mut host = Host { qs: &qs, set: &set, got: vec![Vec::new(); queues], closed_seen: vec![false; queues], owned: Vec::new() };
            let mut step = 0;
            while threads.iter().any(|t| !t.is_finished()) {
                step += 1;
                if !host.round(steps[step % steps.len()])? && host.owned.is_empty() {
                    poll_fd(&set, 1);
                }
            }
            let pushed: Vec<(usize, u64)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
            while host.round(steps[step % steps.len()])? {
                step += 1;
            }
            prop_assert!(host.owned.is_empty());
            let Host { got, closed_seen, .. } = host;
            prop_assert!(set.is_empty() && !poll_fd(&set, 0), "quiet: nothing listed, fd clear");
            for (i, q) in qs.iter().enumerate() {
                let st = q.stats();
                prop_assert_eq!(st.depth, 0, "queue {} has frames but no token: a lost wakeup", i);
                prop_assert_eq!(st.read, got[i].len() as u64);
                let want: Vec<u64> = pushed.iter().filter(|(q, _)| *q == i).map(|&(_, n)| n).collect();
                prop_assert_eq!(st.matched, want.len() as u64);
                // In each producer's order, each frame once.
                for p in 0..4u64 {
                    let mine: Vec<u64> = got[i].iter().copied().filter(|n| n >> 32 == p).collect();
                    let sent: Vec<u64> = want.iter().copied().filter(|n| n >> 32 == p).collect();
                    prop_assert!(mine.windows(2).all(|w| w[0] < w[1]), "queue {}: out of order {:?}", i, mine);
                    prop_assert!(mine.iter().all(|n| sent.contains(n)));
                }
                if q.closed().is_some() {
                    prop_assert!(closed_seen[i], "queue {} closed but the host never heard", i);
                    prop_assert_eq!(st.read + st.dropped, want.len() as u64);
                } else {
                    let (mut all, mut sent) = (got[i].clone(), want.clone());
                    all.sort_unstable();
                    sent.sort_unstable();
                    prop_assert_eq!(all, sent, "queue {}: every frame once", i);
                }
            }
        }
    }

    /// A freed subscriber's token is never taken, even if listed; a token
    /// listed twice (frames taken back by a resume) drains empty at once.
    #[test]
    fn detached_queues_are_unlisted() {
        let set = Arc::new(ReadySet::new().unwrap());
        let a: Queue = Queue::new(8, Overflow::DropOldest, ());
        let b: Queue = Queue::new(8, Overflow::DropOldest, ());
        a.attach(&set, 1).unwrap();
        b.attach(&set, 2).unwrap();
        assert!(a.attach(&set, 3).is_err() && a.ready_fd().is_err());
        a.push(frame(1));
        b.push(frame(2));
        a.close(CloseReason::Closed);
        a.detach();
        let mut out = [0u64; 4];
        assert_eq!(set.take(&mut out), 1);
        assert_eq!(out[0], 2);
        assert_eq!(b.take_unread().len(), 1);
        b.push(frame(3));
        assert_eq!(set.take(&mut out), 1);
        assert!(matches!(b.pop_batch(Duration::ZERO, 4, |_| true, drop), Batch::Taken { n: 1, emptied: true }));
        a.detach();
        let c: Queue = Queue::new(8, Overflow::DropOldest, ());
        c.attach(&set, 1).unwrap();
    }
}
