//! Bounded memory of recently routed statuses, so that a content-mode
//! `delete` reaches exactly the subscriptions that received the status.
//!
//! Storing every receiver would cost 8 bytes per delivery. Instead each
//! status keeps how it was routed: its channel keys, a watermark (the first
//! subscription sequence number that did not exist yet) and the few
//! subscriptions on those channels that were filtered out. At delete time,
//! the receivers are the current listeners of those channels that are older
//! than the watermark and not excluded; unsubscribed ones are gone already.

use std::collections::VecDeque;

use ahash::AHashMap;
use smallvec::SmallVec;

use crate::channel::ChannelKey;

/// How one update of a status was routed.
#[derive(Clone, Debug)]
pub struct Routing {
    pub channels: SmallVec<[ChannelKey; 8]>,
    pub watermark: u64,
    /// Sorted sequence numbers of subscriptions that did not receive it.
    pub excluded: Box<[u64]>,
}

impl Routing {
    pub fn received(&self, seq: u64) -> bool {
        seq < self.watermark && self.excluded.binary_search(&seq).is_err()
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

    pub fn len(&self) -> usize {
        self.statuses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(w: u64) -> Routing {
        Routing { channels: SmallVec::new(), watermark: w, excluded: vec![2].into() }
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
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn receivers_are_older_and_not_excluded() {
        let r = routing(5);
        assert!(r.received(1));
        assert!(!r.received(2));
        assert!(!r.received(5));
    }

    #[test]
    fn order_stays_bounded_under_rerecording() {
        let mut r = RecentStatuses::new(4);
        for i in 0..10_000u64 {
            r.record(format!("{}", i % 3).into(), routing(i));
        }
        assert!(r.order.len() <= 2 * 4 + 64 + 1);
        assert_eq!(r.len(), 3);
    }
}
