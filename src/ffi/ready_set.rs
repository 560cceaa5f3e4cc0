//! Ready sets in the C ABI (src/ready_set.rs has the rules).
//!
//! Ownership: `evr_ready_set` holds one reference to a [`ReadySet`]; every
//! attached subscriber holds another, so the set (and its fd) lives until
//! the handle and all its subscribers are freed.

use std::ffi::c_int;
use std::sync::Arc;

use super::boundary::{handle, out_param, status};
use super::{evr_status, evr_subscriber};
use crate::error::{Error, ErrorKind};
use crate::ready_set::ReadySet;
use evr_status::*;

/// One readiness fd for many subscribers: it polls readable while the set
/// lists tokens of subscribers with frames waiting (or closed). Free with
/// evr_ready_set_free().
pub struct evr_ready_set {
    set: Arc<ReadySet>,
}

/// Creates a ready set. On EVR_OK `*out` is a new set to free with
/// evr_ready_set_free(). EVR_ERR_IO when its fd cannot be created.
///
/// A subscriber attached with evr_subscriber_attach_ready_set() has its
/// token listed when frames arrive in its empty queue, when it is closed,
/// and at once on attach if frames already wait. The host takes tokens with
/// evr_ready_set_take() and, for each, drains the subscriber with
/// evr_subscriber_read() until `*emptied` is 1 or the status is EVR_EMPTY
/// or EVR_CLOSED. If it stops earlier (a full socket, a byte cap) it must
/// come back to that subscriber itself: no new token is listed until a
/// drain empties the queue. A token may come when its queue is already
/// empty (the drain then says EVR_EMPTY); take never returns the token of
/// a subscriber freed before the take began.
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_ready_set_new(out: *mut *mut evr_ready_set) -> evr_status {
    status(|| {
        let out = out_param(out, "out")?;
        let set = Box::new(evr_ready_set { set: Arc::new(ReadySet::new()?) });
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { out.write(Box::into_raw(set)) };
        Ok(EVR_OK)
    })
}

/// Stores in `*out` the set's fd: level-triggered, readable (POLLIN) while
/// tokens are listed. Owned by the set: never read, write or close it.
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `set` is NULL or live; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_ready_set_fd(set: *const evr_ready_set, out: *mut c_int) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let set = unsafe { handle(set, "set") }?;
        let out = out_param(out, "out")?;
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { out.write(set.set.fd()) };
        Ok(EVR_OK)
    })
}

/// Moves up to `max` listed tokens, oldest first, into `tokens` and stores
/// how many in `*n` (0 when none is listed); the fd stops polling readable
/// once the list is empty. `max == 0` is EVR_ERR_INVALID_CONFIG.
///
/// Thread-safety: may be called from any thread; concurrent takes get
/// different tokens.
///
/// # Safety
/// `set` is NULL or live; `tokens` is NULL or has room for `max` values;
/// `n` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_ready_set_take(
    set: *const evr_ready_set,
    tokens: *mut u64,
    max: usize,
    n: *mut usize,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let set = unsafe { handle(set, "set") }?;
        let tokens = out_param(tokens, "tokens")?;
        let n = out_param(n, "n")?;
        if max == 0 {
            return Err(Error::new(ErrorKind::InvalidConfig, "max is 0: no token could be taken").into());
        }
        // SAFETY: `tokens` has room for `max` values by contract.
        let taken = set.set.take(unsafe { std::slice::from_raw_parts_mut(tokens, max) });
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { n.write(taken) };
        Ok(EVR_OK)
    })
}

/// Releases the handle's reference to the set; attached subscribers keep
/// it (and its fd) until they are freed. They stay attached: their tokens
/// are listed where nobody takes them, and they can neither be attached
/// again nor get an fd of their own, so free the set after its
/// subscribers (or read them without waiting). NULL is a no-op.
///
/// Thread-safety: must not race with another call on the same handle.
///
/// # Safety
/// `set` is NULL or a live set, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_ready_set_free(set: *mut evr_ready_set) {
    // SAFETY: the caller gives up this pointer from Box::into_raw.
    unsafe { super::boundary::free_boxed(set) }
}

/// Attaches a subscriber to a ready set under `token`, a value the host
/// chooses (a connection id, an index) and gets back from
/// evr_ready_set_take(). The subscriber then has no readiness fd of its
/// own. EVR_ERR_INVALID_CONFIG, with a message naming the problem, when
/// the token is already attached to this set, when the subscriber is
/// already attached to a set, or when its own fd was asked for
/// (evr_subscriber_fd()); evr_subscriber_fd() on an attached subscriber is
/// EVR_ERR_INVALID_CONFIG too. Freeing the subscriber detaches it.
///
/// Thread-safety: may be called from any thread, also while frames are
/// published to the subscriber.
///
/// # Safety
/// `subscriber` and `set` are NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_subscriber_attach_ready_set(
    subscriber: *const evr_subscriber,
    set: *const evr_ready_set,
    token: u64,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let (subscriber, set) = unsafe { (handle(subscriber, "subscriber")?, handle(set, "set")?) };
        subscriber.subscriber.attach_ready_set(&set.set, token)?;
        Ok(EVR_OK)
    })
}
