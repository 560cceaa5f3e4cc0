//! An ordered list that keeps its first item inline and the rest boxed:
//! 16 bytes for one pointer-sized item, where a `SmallVec` with one inline
//! item takes 24 and a `Vec` 24 plus an allocation. A subscriber keeps its
//! subscriptions in one; most have exactly one.

pub struct SmallList<T> {
    first: Option<T>,
    /// Never `Some` of an empty vector. Boxed: one word, where a `Vec` is three.
    #[expect(clippy::box_collection, reason = "a thin pointer is the point")]
    rest: Option<Box<Vec<T>>>,
}

impl<T> Default for SmallList<T> {
    fn default() -> Self {
        SmallList { first: None, rest: None }
    }
}

impl<T> SmallList<T> {
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.first.iter().chain(self.rest.iter().flat_map(|r| r.iter()))
    }

    pub fn push(&mut self, item: T) {
        if self.first.is_none() {
            self.first = Some(item);
        } else {
            self.rest.get_or_insert_with(Default::default).push(item);
        }
    }

    /// Removes the item at `pos`, keeping the order of the others.
    ///
    /// # Panics
    /// If `pos >= len()`.
    pub fn remove(&mut self, pos: usize) -> T {
        let item = if pos == 0 {
            let next = self.rest.as_mut().map(|r| r.remove(0));
            std::mem::replace(&mut self.first, next).expect("remove: position out of range")
        } else {
            self.rest.as_mut().filter(|r| pos <= r.len()).expect("remove: position out of range").remove(pos - 1)
        };
        if self.rest.as_ref().is_some_and(|r| r.is_empty()) {
            self.rest = None;
        }
        item
    }

    /// Takes every item out, in order, leaving the list empty.
    pub fn take_all(&mut self) -> Vec<T> {
        let list = std::mem::take(self);
        let mut out = list.rest.map_or_else(Vec::new, |r| *r);
        if let Some(first) = list.first {
            out.insert(0, first);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn one_pointer_item_fits_in_two_words() {
        assert_eq!(std::mem::size_of::<SmallList<Box<u8>>>(), 16);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push(u32),
        Remove(usize),
        TakeAll,
    }

    proptest! {
        /// Against a `Vec`: the same items in the same order.
        #[test]
        fn matches_a_vec(ops in proptest::collection::vec(prop_oneof![
            3 => any::<u32>().prop_map(Op::Push),
            2 => (0..6usize).prop_map(Op::Remove),
            1 => Just(Op::TakeAll),
        ], 1..60)) {
            let mut list = SmallList::default();
            let mut model = Vec::new();
            for op in ops {
                match op {
                    Op::Push(n) => {
                        list.push(n);
                        model.push(n);
                    }
                    Op::Remove(pos) if pos < model.len() => prop_assert_eq!(list.remove(pos), model.remove(pos)),
                    Op::Remove(_) => {}
                    Op::TakeAll => prop_assert_eq!(list.take_all(), std::mem::take(&mut model)),
                }
                prop_assert_eq!(list.iter().copied().collect::<Vec<_>>(), model.clone());
                prop_assert_eq!(list.rest.is_some(), model.len() > 1);
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn removing_past_the_end_panics() {
        let mut list = SmallList::default();
        list.push(1);
        list.remove(1);
    }
}
