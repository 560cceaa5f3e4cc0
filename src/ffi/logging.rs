//! `evr_set_log_callback`: the library logs through the `log` crate; a C
//! host receives those records through one process-wide callback.

use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int, c_void};

use log::{Level, LevelFilter, Log, Metadata, Record};
use parking_lot::RwLock;

use super::boundary::{Failure, status};
use super::evr_status::{self, *};
use crate::error::{Error, ErrorKind};

/// How much evroute logs, most severe first; a callback receives records at
/// its level and above (EVR_LOG_WARN: warnings and errors).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum evr_log_level {
    /// Nothing: the callback is never called.
    #[allow(dead_code)] // only passed in from C, as an int
    EVR_LOG_OFF = 0,
    /// Failures the library could not recover from by itself.
    EVR_LOG_ERROR = 1,
    /// Failures it recovers from (a Redis connection lost and retried, a
    /// malformed message skipped).
    EVR_LOG_WARN = 2,
    /// Notable events (a Redis connection re-established).
    EVR_LOG_INFO = 3,
    /// Detail for debugging.
    EVR_LOG_DEBUG = 4,
    /// Very verbose detail.
    EVR_LOG_TRACE = 5,
}

use evr_log_level::*;

/// Receives one log record. `target` is the module that logged
/// ("evroute::redis_node"), `message` the text; both are NUL-terminated and
/// valid only during the call. Called from any thread, including the
/// library's own background threads, possibly concurrently; it must not call
/// evr_set_log_callback() and must not unwind.
pub type evr_log_fn = Option<
    unsafe extern "C" fn(user_data: *mut c_void, level: evr_log_level, target: *const c_char, message: *const c_char),
>;

struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, evr_log_level, *const c_char, *const c_char),
    user_data: *mut c_void,
}

// SAFETY: the caller of evr_set_log_callback() promises that the callback and
// its user_data may be used from any thread.
unsafe impl Send for Sink {}
unsafe impl Sync for Sink {}

/// The installed callback. A record is delivered while holding the read
/// lock, so evr_set_log_callback() returns only once no call to the old
/// callback is running.
static SINK: RwLock<Option<Sink>> = RwLock::new(None);

struct CallbackLogger;

static LOGGER: CallbackLogger = CallbackLogger;

thread_local! {
    static MESSAGE: RefCell<String> = const { RefCell::new(String::new()) };
}

fn c_text(text: &str) -> CString {
    // An interior NUL would cut the text short; CString refuses it.
    CString::new(text.replace('\0', "\\0")).unwrap_or_default()
}

impl Log for CallbackLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let sink = SINK.read();
        let Some(sink) = sink.as_ref() else { return };
        let level = match record.level() {
            Level::Error => EVR_LOG_ERROR,
            Level::Warn => EVR_LOG_WARN,
            Level::Info => EVR_LOG_INFO,
            Level::Debug => EVR_LOG_DEBUG,
            Level::Trace => EVR_LOG_TRACE,
        };
        let message = MESSAGE.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            std::fmt::write(&mut *buf, *record.args()).ok();
            c_text(&buf)
        });
        let target = c_text(record.target());
        // SAFETY: the callback's contract (evr_set_log_callback); both strings outlive the call.
        unsafe { (sink.callback)(sink.user_data, level, target.as_ptr(), message.as_ptr()) };
    }

    fn flush(&self) {}
}

/// The filter of an evr_log_level given as an int: a C caller may pass any value.
fn level_filter(level: c_int) -> Result<LevelFilter, Failure> {
    const LEVELS: [LevelFilter; 6] = [
        LevelFilter::Off,
        LevelFilter::Error,
        LevelFilter::Warn,
        LevelFilter::Info,
        LevelFilter::Debug,
        LevelFilter::Trace,
    ];
    usize::try_from(level).ok().and_then(|i| LEVELS.get(i).copied()).ok_or_else(|| {
        Failure::from(Error::new(
            ErrorKind::InvalidConfig,
            format!("evr_set_log_callback: level {level} is not an evr_log_level (0 to 5)"),
        ))
    })
}

/// Sends the library's log records at `level` (an evr_log_level) and above to `callback`,
/// replacing any callback set before; `callback` NULL (or EVR_LOG_OFF)
/// stops logging. Without a callback evroute logs nothing: it never writes
/// to stderr itself. When this returns, the previous callback is not
/// running and will not be called again, so its user_data may be freed.
///
/// The callback is process-wide (the `log` crate has one logger per
/// process): EVR_ERR_INVALID_CONFIG when the process already installed
/// another `log` logger, for example a Rust host linking evroute as a
/// crate (which then receives the records itself).
///
/// Thread-safety: any thread, but not from inside the callback.
///
/// # Safety
/// `callback` is NULL or a function following evr_log_fn's contract, and it
/// may be called with `user_data` from any thread until it is replaced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_set_log_callback(
    level: c_int,
    callback: evr_log_fn,
    user_data: *mut c_void,
) -> evr_status {
    status(|| {
        let filter = level_filter(level)?;
        // set_logger fails when a logger exists: ours (fine) or someone else's.
        if log::set_logger(&LOGGER).is_err() && !std::ptr::addr_eq(log::logger(), &LOGGER) {
            return Err(Failure::from(Error::new(
                ErrorKind::InvalidConfig,
                "evr_set_log_callback: this process already installed another logger for the log crate",
            )));
        }
        let sink = callback.map(|callback| Sink { callback, user_data });
        let filter = if sink.is_some() { filter } else { LevelFilter::Off };
        *SINK.write() = sink;
        log::set_max_level(filter);
        Ok(EVR_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::ffi::CStr;

    static SEEN: Mutex<Vec<(evr_log_level, String, String)>> = Mutex::new(Vec::new());

    unsafe extern "C" fn record(
        user_data: *mut c_void,
        level: evr_log_level,
        target: *const c_char,
        message: *const c_char,
    ) {
        assert_eq!(user_data as usize, 42);
        // SAFETY: NUL-terminated strings valid during the call.
        let (target, message) = unsafe { (CStr::from_ptr(target), CStr::from_ptr(message)) };
        SEEN.lock().push((level, target.to_string_lossy().into_owned(), message.to_string_lossy().into_owned()));
    }

    // One test: the callback is process-wide state.
    #[test]
    fn records_at_the_level_and_above_reach_the_callback_until_it_is_removed() {
        let user_data = 42 as *mut c_void;
        // SAFETY: `record` follows the contract and ignores user_data but for the check.
        assert_eq!(unsafe { evr_set_log_callback(EVR_LOG_WARN as c_int, Some(record), user_data) }, EVR_OK);
        log::info!(target: "evroute::test", "not at WARN");
        log::warn!(target: "evroute::test", "lost {} of {}", 1, 2);
        log::error!(target: "evroute::test", "nul\0inside");
        let from_thread = std::thread::spawn(|| log::warn!(target: "evroute::test", "from a thread"));
        from_thread.join().unwrap();
        let seen: Vec<_> = SEEN.lock().drain(..).filter(|(_, target, _)| target == "evroute::test").collect();
        assert_eq!(
            seen,
            [
                (EVR_LOG_WARN, "evroute::test".to_owned(), "lost 1 of 2".to_owned()),
                (EVR_LOG_ERROR, "evroute::test".to_owned(), "nul\\0inside".to_owned()),
                (EVR_LOG_WARN, "evroute::test".to_owned(), "from a thread".to_owned()),
            ]
        );

        // SAFETY: as above.
        assert_eq!(unsafe { evr_set_log_callback(EVR_LOG_TRACE as c_int, Some(record), user_data) }, EVR_OK);
        log::debug!(target: "evroute::test", "debug now");
        // SAFETY: NULL removes the callback.
        assert_eq!(unsafe { evr_set_log_callback(EVR_LOG_TRACE as c_int, None, std::ptr::null_mut()) }, EVR_OK);
        log::error!(target: "evroute::test", "after removal");
        // SAFETY: an out-of-range level is refused before anything changes.
        assert_eq!(unsafe { evr_set_log_callback(6, Some(record), user_data) }, EVR_ERR_INVALID_CONFIG);
        assert_eq!(unsafe { evr_set_log_callback(-1, Some(record), user_data) }, EVR_ERR_INVALID_CONFIG);
        let seen: Vec<_> =
            SEEN.lock().drain(..).filter(|(_, target, _)| target == "evroute::test").map(|r| r.2).collect();
        assert_eq!(seen, ["debug now"]);
        assert_eq!(log::max_level(), LevelFilter::Off);
    }
}
