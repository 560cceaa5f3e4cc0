//! A subscriber's viewer state (its viewer filters and §11 keyword filters)
//! as publishes read it: without a lock, and for most viewers without
//! loading the state at all.
//!
//! The rule. A state is immutable and replaced as a whole. `set` (called
//! with the writers serialized, see [`Viewer::set`]) swaps the state pointer
//! (an `ArcSwapOption`), then stores the tag that summarizes the new state.
//! A reader decides from exactly one of the two, never from both:
//! - from the tag alone when it says enough: no state, or keyword filters
//!   alone with the key of their set (whose result the publish may already
//!   know for this event);
//! - otherwise from the state it loads, as a whole, ignoring the tag.
//!
//! The tag is one atomic word and always the summary of some state that was
//! current (the old one or the new one), and a loaded state is the old one
//! or the new one; so a publish running while `set` replaces the state sees
//! one or the other, never a mix. Between the two stores a reader may find
//! the new state beside the old tag (or the reverse while the next `set`
//! runs); each alone is consistent, which is all a reader relies on.
//!
//! Freeing: a loaded state is an arc-swap guard, which keeps its state
//! alive (paying its debt with a reference count if the state is swapped
//! out meanwhile), so the old state is freed by whichever of the writer or
//! the last reader lets go of it last. A reader that decided from the tag
//! alone holds nothing: a set's key is only compared, never followed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwapOption, Guard};

use crate::filter::ViewerFilters;
use crate::keyword::{FilterSet, SetKey};

/// A viewer's filters with its keyword filters interned in the engine.
pub(crate) struct ViewerState {
    /// `Some` for a filter-annotated viewer (§11), with its set's key (so
    /// that the set itself is loaded once per event, not per viewer).
    pub keywords: Option<(SetKey, Arc<FilterSet>)>,
    /// `None` when only keyword filters are set: nothing to check.
    pub filters: Option<ViewerFilters>,
}

/// What the tag says about the current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peek {
    /// No viewer state: nothing to filter, nothing to annotate.
    Nothing,
    /// Keyword filters alone, of the set with this key.
    Keywords(SetKey),
    /// Anything else: load the state.
    State,
}

/// Tag bits: bit 0 is set when there is a state; bit 1 when it is keyword
/// filters alone, whose packed set key is the rest of the word.
const HAS_STATE: u64 = 1;
const KEYWORDS_ONLY: u64 = 2;

/// A subscriber's viewer state and its tag: 16 bytes in the subscriber.
pub(crate) struct Viewer {
    tag: AtomicU64,
    state: ArcSwapOption<ViewerState>,
}

impl Viewer {
    pub fn new(state: Option<Arc<ViewerState>>) -> Viewer {
        Viewer { tag: AtomicU64::new(tag(state.as_deref())), state: ArcSwapOption::new(state) }
    }

    /// What the tag says; see the rule above.
    #[inline]
    pub fn peek(&self) -> Peek {
        // Acquire: pairs with `set`'s release, so a publish that follows an
        // update (ordered by other means) sees its tag.
        let tag = self.tag.load(Ordering::Acquire);
        if tag & HAS_STATE == 0 {
            Peek::Nothing
        } else if tag & KEYWORDS_ONLY != 0 {
            Peek::Keywords(SetKey::unpack(tag >> 2))
        } else {
            Peek::State
        }
    }

    /// The current state, kept alive while the guard lives.
    #[inline]
    pub fn load(&self) -> Guard<Option<Arc<ViewerState>>> {
        self.state.load()
    }

    /// Replaces the state and returns the old one, which the caller drops
    /// outside its locks (the last viewer of a filter set unregisters it
    /// from the engine). Callers must not run `set` on one viewer
    /// concurrently (the engine holds the subscriber's subscriptions lock):
    /// two interleaved writers could leave one's tag beside the other's
    /// state.
    pub fn set(&self, state: Option<Arc<ViewerState>>) -> Option<Arc<ViewerState>> {
        let summary = tag(state.as_deref());
        let old = self.state.swap(state);
        self.tag.store(summary, Ordering::Release);
        old
    }
}

/// The tag summarizing `state`.
fn tag(state: Option<&ViewerState>) -> u64 {
    match state {
        None => 0,
        Some(ViewerState { filters: None, keywords: Some((key, _)) }) => {
            key.pack().map_or(HAS_STATE, |packed| packed << 2 | KEYWORDS_ONLY | HAS_STATE)
        }
        Some(_) => HAS_STATE,
    }
}
