//! Bounded memory of recently routed statuses, so that a content-mode
//! `delete` reaches exactly the subscriptions that received the status.
//!
//! Storing every receiver would cost 8 bytes per delivery. Instead each
//! status keeps how it was routed: its channel keys, each with the watermark
//! of the update's walk of that channel, and the few subscriptions on those
//! channels that were filtered out. At delete time, the receivers are the
//! current listeners of each channel stamped below its watermark and not
//! excluded; unsubscribed ones are gone already.
//!
//! The ordering rules that make this exact, in one place:
//! 1. A subscription's sequence number is its index stamp, assigned while
//!    the index holds the write locks of all its channel lists (index.rs).
//! 2. A walk reads its watermark while holding the list's read lock (or the
//!    shard's, when the list does not exist). By 1, the walk visits exactly
//!    the subscriptions of that list stamped below the watermark; one that
//!    joins later, even during the walk, is stamped at or above it. A single
//!    watermark read before the whole walk was not enough: a subscription
//!    stamped after the read could join a list before the walk reached it,
//!    receive the update and never its delete.
//! 3. Every visited subscription either received the update or is in
//!    `excluded` (filtered out), so "stamped below the watermark and not
//!    excluded" is exactly "received it", for subscriptions still listening.
//! 4. A subscription is stamped once; unsubscribing and subscribing again
//!    makes a new one with a new stamp, which gets no delete.
//! 5. The routing is recorded after the walk and taken by the delete before
//!    its walk, both under the `RecentStatuses` mutex; an update and a
//!    delete of the same id published concurrently are unordered, as any
//!    two concurrent publishes are.

use std::collections::VecDeque;

use ahash::AHashMap;

use crate::channel::ChannelKey;

/// How one update of a status was routed.
#[derive(Clone, Debug)]
pub struct Routing {
    /// Each channel with the watermark of the update's walk of it.
    pub channels: Box<[(ChannelKey, u64)]>,
    /// Sorted sequence numbers of subscriptions that did not receive it.
    pub excluded: Box<[u64]>,
}

impl Routing {
    /// Whether the subscription `seq`, met on a channel whose walk had
    /// `watermark`, received the update.
    pub fn received(&self, watermark: u64, seq: u64) -> bool {
        seq < watermark && self.excluded.binary_search(&seq).is_err()
    }
}

/// At most this many routings are kept per status (a status edited many
/// times keeps its latest updates).
const ROUTINGS_PER_STATUS: usize = 8;

pub struct RecentStatuses {
    capacity: usize,
    statuses: AHashMap<Box<str>, (u64, Vec<Routing>)>,
    /// Insertion order with a generation, so re-recorded statuses move to
    /// the back without a search; stale pairs are skipped on eviction.
    order: VecDeque<(Box<str>, u64)>,
    next_generation: u64,
}

impl RecentStatuses {
    pub fn new(capacity: usize) -> RecentStatuses {
        RecentStatuses { capacity, statuses: AHashMap::new(), order: VecDeque::new(), next_generation: 0 }
    }

    pub fn record(&mut self, id: Box<str>, routing: Routing) {
        if self.capacity == 0 {
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let slot = self.statuses.entry(id.clone()).or_insert_with(|| (generation, Vec::new()));
        slot.0 = generation;
        if slot.1.len() == ROUTINGS_PER_STATUS {
            slot.1.remove(0);
        }
        slot.1.push(routing);
        self.order.push_back((id, generation));
        while self.statuses.len() > self.capacity {
            let Some((old, g)) = self.order.pop_front() else {
                break;
            };
            if self.statuses.get(&old).is_some_and(|(cur, _)| *cur == g) {
                self.statuses.remove(&old);
            }
        }
        if self.order.len() > 2 * self.capacity + 64 {
            let statuses = &self.statuses;
            self.order.retain(|(id, g)| statuses.get(id).is_some_and(|(cur, _)| cur == g));
        }
    }

    /// Forgets a status and returns how it was routed.
    pub fn take(&mut self, id: &str) -> Option<Vec<Routing>> {
        self.statuses.remove(id).map(|(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(w: u64) -> Routing {
        Routing { channels: vec![(ChannelKey::AllUsers, w)].into(), excluded: vec![2].into() }
    }

    #[test]
    fn evicts_the_least_recently_recorded() {
        let mut r = RecentStatuses::new(2);
        r.record("a".into(), routing(1));
        r.record("b".into(), routing(2));
        r.record("a".into(), routing(3));
        r.record("c".into(), routing(4));
        assert!(r.take("b").is_none());
        assert_eq!(r.take("a").unwrap().len(), 2);
        assert!(r.take("a").is_none());
        assert_eq!(r.statuses.len(), 1);
    }

    #[test]
    fn receivers_are_older_and_not_excluded() {
        let r = routing(5);
        assert!(r.received(5, 1));
        assert!(!r.received(5, 2));
        assert!(!r.received(5, 5));
    }

    #[test]
    fn order_stays_bounded_under_rerecording() {
        let mut r = RecentStatuses::new(4);
        for i in 0..10_000u64 {
            r.record(format!("{}", i % 3).into(), routing(i));
        }
        assert!(r.order.len() <= 2 * 4 + 64 + 1);
        assert_eq!(r.statuses.len(), 3);
    }
}
