//! The panic boundary, status codes and the thread's last error: everything
//! every export needs, so the exports themselves stay one-liners around
//! the core API.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Error, ErrorKind};

/// The result of a fallible call. 0 is success, positive values are
/// non-error outcomes, negative values are errors (see evr_last_error()).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum evr_status {
    /// Success.
    EVR_OK = 0,
    /// evr_subscriber_next(): nothing queued and the timeout was 0.
    EVR_EMPTY = 1,
    /// evr_subscriber_next(): nothing arrived before the timeout.
    EVR_TIMEOUT = 2,
    /// evr_subscriber_next(): the subscriber is closed (see evr_subscriber_closed()).
    EVR_CLOSED = 3,
    /// evr_subscriber_read(): the oldest waiting frame is longer than the
    /// whole buffer; it stays queued and `*n_bytes` says how long it is.
    EVR_BUFFER_TOO_SMALL = 4,
    /// evr_subscriber_resume(): the history did not reach back to the last id
    /// (or it is from another engine run); what it still had was delivered.
    EVR_GAP = 5,
    /// A required pointer argument was NULL (or a NULL buffer with a non-zero length).
    EVR_ERR_NULL = -1,
    /// An input is not valid UTF-8.
    EVR_ERR_INVALID_UTF8 = -2,
    /// An input is not valid JSON.
    EVR_ERR_INVALID_JSON = -3,
    /// A subscription was refused (unknown stream, missing tag/list/account, ...).
    EVR_ERR_INVALID_SUBSCRIPTION = -4,
    /// A Redis channel name is not one evroute knows.
    EVR_ERR_INVALID_CHANNEL = -5,
    /// Well-formed JSON that is not a valid event or channel message.
    EVR_ERR_INVALID_EVENT = -6,
    /// An event above the engine's max_event_bytes.
    EVR_ERR_TOO_LARGE = -7,
    /// A bad engine or subscriber configuration (or filter update) value.
    EVR_ERR_INVALID_CONFIG = -8,
    /// An operating-system call failed (for example creating the readiness fd).
    EVR_ERR_IO = -9,
    /// A bug inside evroute was caught at the boundary. The handles used in
    /// the call should be freed and not used again.
    EVR_ERR_PANIC = -10,
    /// evr_subscriber_resume(): the last id is not `<epoch>:<seq>`.
    EVR_ERR_INVALID_ID = -11,
}

use evr_status::*;

impl From<ErrorKind> for evr_status {
    fn from(kind: ErrorKind) -> evr_status {
        match kind {
            ErrorKind::InvalidUtf8 => EVR_ERR_INVALID_UTF8,
            ErrorKind::InvalidJson => EVR_ERR_INVALID_JSON,
            ErrorKind::InvalidSubscription => EVR_ERR_INVALID_SUBSCRIPTION,
            ErrorKind::InvalidChannel => EVR_ERR_INVALID_CHANNEL,
            ErrorKind::InvalidEvent => EVR_ERR_INVALID_EVENT,
            ErrorKind::TooLarge => EVR_ERR_TOO_LARGE,
            ErrorKind::InvalidConfig => EVR_ERR_INVALID_CONFIG,
            ErrorKind::Io => EVR_ERR_IO,
            ErrorKind::InvalidId => EVR_ERR_INVALID_ID,
        }
    }
}

/// A failed call: the status to return and the message for evr_last_error().
pub(crate) struct Failure {
    status: evr_status,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure { status: e.kind().into(), message: e.message().to_owned() }
    }
}

pub(crate) fn null_argument(name: &str) -> Failure {
    Failure { status: EVR_ERR_NULL, message: format!("{name} is NULL") }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: String) {
    // An interior NUL would cut the message short; CString refuses it.
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// The thread's last error message; valid until the next failing call on
/// this thread.
pub(crate) fn last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Runs an export body so that no panic crosses into C: a panic becomes
/// `on_panic` and its message the thread's last error.
pub(crate) fn guard<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    // The body only borrows caller-owned handles; after a panic the caller is
    // told (EVR_ERR_PANIC) to drop them, so no broken state is observed.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            set_last_error(format!("internal error (panic): {what}"));
            on_panic
        }
    }
}

/// The body of every `evr_*_free`: NULL is a no-op, and a panic in a
/// destructor does not cross into C.
///
/// # Safety
/// `handle` is NULL or came from `Box::into_raw` and is not used again.
pub(crate) unsafe fn free_boxed<T>(handle: *mut T) {
    if !handle.is_null() {
        // SAFETY: per this function's contract.
        guard((), || drop(unsafe { Box::from_raw(handle) }));
    }
}

/// [`guard`] for calls that return a status.
pub(crate) fn status(body: impl FnOnce() -> Result<evr_status, Failure>) -> evr_status {
    guard(EVR_ERR_PANIC, || match body() {
        Ok(status) => status,
        Err(failure) => {
            set_last_error(failure.message);
            failure.status
        }
    })
}

/// [`guard`] for calls that return a pointer: NULL on failure.
pub(crate) fn pointer<T>(body: impl FnOnce() -> Result<*const T, Failure>) -> *const T {
    guard(std::ptr::null(), || match body() {
        Ok(p) => p,
        Err(failure) => {
            set_last_error(failure.message);
            std::ptr::null()
        }
    })
}

/// Borrows a handle, refusing NULL.
///
/// # Safety
/// `ptr` is NULL or points to a live `T` for the whole call.
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: non-NULL handles are live by the caller's contract.
    unsafe { ptr.as_ref() }.ok_or_else(|| null_argument(name))
}

/// Borrows a `(ptr, len)` input. `(NULL, 0)` is the empty input.
///
/// # Safety
/// When `len > 0`, `ptr` is NULL or points to `len` readable bytes.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize, name: &str) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(null_argument(name));
    }
    if len > isize::MAX as usize {
        return Err(Failure { status: EVR_ERR_TOO_LARGE, message: format!("{name}: length {len} is impossible") });
    }
    // SAFETY: non-NULL, len within isize, readable by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Checks that an out-parameter is present before any work is done, so a
/// created object is never lost for lack of a place to put it.
pub(crate) fn out_param<T>(ptr: *mut T, name: &str) -> Result<*mut T, Failure> {
    if ptr.is_null() { Err(null_argument(name)) } else { Ok(ptr) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: last_error() is a valid NUL-terminated string.
        unsafe { CStr::from_ptr(last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let got = status(|| panic!("boom {}", 7));
        assert_eq!(got, EVR_ERR_PANIC);
        assert_eq!(last(), "internal error (panic): boom 7");
        assert!(pointer::<u8>(|| panic!("static")).is_null());
        assert_eq!(last(), "internal error (panic): static");
    }

    #[test]
    fn errors_set_the_thread_local_message_only_on_their_thread() {
        assert_eq!(status(|| Err(Error::new(ErrorKind::TooLarge, "big\0ger").into())), EVR_ERR_TOO_LARGE);
        assert_eq!(last(), "big\\0ger");
        let other = std::thread::spawn(last).join().unwrap();
        assert_eq!(other, "");
        assert_eq!(status(|| Ok(EVR_EMPTY)), EVR_EMPTY);
        assert_eq!(last(), "big\\0ger", "success leaves the last error alone");
    }

    #[test]
    fn every_error_kind_maps_to_a_distinct_negative_status() {
        use ErrorKind::*;
        let kinds = [
            InvalidUtf8,
            InvalidJson,
            InvalidSubscription,
            InvalidChannel,
            InvalidEvent,
            TooLarge,
            InvalidConfig,
            Io,
            InvalidId,
        ];
        let mut codes: Vec<i32> = kinds.iter().map(|&k| evr_status::from(k) as i32).collect();
        assert!(codes.iter().all(|&c| c < 0 && c != EVR_ERR_NULL as i32 && c != EVR_ERR_PANIC as i32));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), kinds.len());
    }
}
