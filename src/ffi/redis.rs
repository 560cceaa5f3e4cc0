//! The Redis scale-out (docs/protocol.md, "Redis") in the C ABI (cargo feature `redis`). In
//! the header these declarations are wrapped in `#if defined(EVR_FEATURE_REDIS)`:
//! C users define that macro when they link a library built with the feature.
//!
//! Ownership:
//! - `evr_redis_node` owns a [`RedisNode`], which holds its own clone of the
//!   engine, so it outlives the `evr_engine` handle it was attached to;
//! - `evr_redis_publisher` owns a [`Publisher`] and its connection;
//! - `evr_system_message` owns one message of a system channel.

use std::time::Duration;

use parking_lot::Mutex;

use super::boundary::{bytes, handle, out_param, pointer, status};
use super::{evr_engine, evr_status};
use crate::error::{Error, Result};
use crate::redis_node::{NextSystem, Published, Publisher, RedisNode, RedisNodeOptions, SystemMessage};
use evr_status::*;

/// An engine's link to Redis: two background threads that feed Redis
/// channel messages to the engine and keep Mastodon's presence keys. Free
/// with evr_redis_node_free().
pub struct evr_redis_node {
    node: RedisNode,
}

/// A connection that publishes events to Redis as Mastodon channel
/// messages. Free with evr_redis_publisher_free().
pub struct evr_redis_publisher {
    publisher: Mutex<Publisher>,
}

/// A message of a system channel the host listens to (see
/// evr_redis_node_listen_system()). Free with evr_system_message_free().
pub struct evr_system_message {
    message: SystemMessage,
}

/// Counters of an evr_redis_node, since it was attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct evr_redis_node_stats {
    /// Channel messages accepted by the engine.
    pub received: u64,
    /// Malformed messages on channels evroute routes (logged as warnings and skipped).
    pub rejected: u64,
    /// Messages on `timeline:*` channels evroute neither routes nor listens
    /// to as system channels (skipped).
    pub ignored: u64,
    /// Connections re-established after a Redis failure.
    pub reconnects: u64,
    /// Presence keys (`subscribed:<channel>`) currently kept alive.
    pub presence_keys: u64,
    /// Redis subscriptions of the ingest connection: 1 in the pattern mode,
    /// the number of channels in the channels mode; 0 while disconnected.
    pub subscriptions: u64,
    /// Messages of listened system channels queued for evr_redis_node_next_system().
    pub system_received: u64,
    /// Messages of listened system channels dropped because 4096 were
    /// already waiting (the host does not drain them).
    pub system_dropped: u64,
}

/// What one publish to Redis did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct evr_redis_published {
    /// Redis channels the message was published to.
    pub channels: u64,
    /// Sum of Redis's PUBLISH replies: how many Redis subscribers (nodes) got a copy.
    pub receivers: u64,
}

impl From<Published> for evr_redis_published {
    fn from(p: Published) -> Self {
        evr_redis_published { channels: p.channels, receivers: p.receivers }
    }
}

fn utf8<'a>(input: &'a [u8], name: &str) -> Result<&'a str> {
    std::str::from_utf8(input).map_err(|e| {
        let e = Error::utf8(e);
        Error::new(e.kind(), format!("{name}: {}", e.message()))
    })
}

/// Attaches the engine to Redis (docs/protocol.md, "Redis"): PSUBSCRIBEs
/// `[<namespace>:]timeline:*` (the namespace is the engine's
/// `redis_namespace`), or with `"subscribe":"channels"` SUBSCRIBEs exactly
/// the channels the engine's subscribers listen to (following them, and
/// again after a reconnect), feeds every message to channel mode and keeps the
/// presence keys `[<namespace>:]subscribed:<channel>` of the channels the
/// engine's subscribers listen to. `url` is a Redis URL
/// (`redis://127.0.0.1:6379/`). `options_json` is optional (`len` 0 means
/// Mastodon's timings and the pattern mode): `{"subscribe":"pattern",
/// "presence_ttl_secs":1080,"presence_refresh_secs":360,"poll_interval_ms":100,
/// "backoff_min_ms":100,"backoff_max_ms":5000,"connect_timeout_ms":2000,
/// "linger_ms":60000}`, every key optional, `subscribe` "pattern" or
/// "channels", every other value a positive integer; `linger_ms` (default:
/// none) keeps a channel subscribed that long after its last listener left
/// (channels mode; not a system channel), so a client resuming within it
/// misses nothing; unknown
/// keys are EVR_ERR_INVALID_CONFIG.
///
/// Fails only on bad arguments (a malformed URL is EVR_ERR_INVALID_CONFIG)
/// or when the threads cannot start (EVR_ERR_IO): an unreachable Redis is
/// retried in the background with backoff, and outages are logged (see
/// evr_set_log_callback()) and survived without touching subscribers (see
/// evr_redis_node_wait_subscribed()). On EVR_OK `*out` is a new node to free
/// with evr_redis_node_free(); it keeps the routing domain alive, so the
/// engine handle may be freed first.
///
/// Thread-safety: may be called from any thread, concurrently with any call
/// on the engine. Several nodes may be attached to one engine (each then
/// delivers every message once).
///
/// # Safety
/// `engine` is NULL or live; `url` and `options_json` point to `url_len` and
/// `options_len` readable bytes (or their length is 0); `out` is NULL or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_redis_node_attach(
    engine: *const evr_engine,
    url: *const u8,
    url_len: usize,
    options_json: *const u8,
    options_len: usize,
    out: *mut *mut evr_redis_node,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let engine = unsafe { handle(engine, "engine") }?;
        let out = out_param(out, "out")?;
        // SAFETY: per this function's contract.
        let (url, options) =
            unsafe { (bytes(url, url_len, "url")?, bytes(options_json, options_len, "options_json")?) };
        let options = RedisNodeOptions::from_json(options)?;
        let node = RedisNode::attach_with(&engine.engine, utf8(url, "url")?, options)?;
        let node = Box::new(evr_redis_node { node });
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { out.write(Box::into_raw(node)) };
        Ok(EVR_OK)
    })
}

/// Waits up to `timeout_ms` milliseconds (0: just check) until the node's
/// ingest connection is subscribed, so messages published from now on are
/// received. EVR_OK when subscribed, EVR_TIMEOUT when not (Redis
/// unreachable, or still connecting), EVR_CLOSED once the node was stopped.
///
/// Thread-safety: may be called from any thread; evr_redis_node_stop() from
/// another thread ends the wait with EVR_CLOSED.
///
/// # Safety
/// `node` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_redis_node_wait_subscribed(node: *const evr_redis_node, timeout_ms: u32) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let node = unsafe { handle(node, "node") }?;
        Ok(wait_status(&node.node, node.node.wait_subscribed(Duration::from_millis(timeout_ms.into()))))
    })
}

/// Waits up to `timeout_ms` milliseconds (0: just check) until the node
/// receives every channel the engine's subscribers listen to at the time of
/// the call: in the channels mode a new channel is subscribed within a poll
/// interval, and a host calls this after subscribing a client so that
/// nothing published from then on is missed. In the pattern mode it is
/// evr_redis_node_wait_subscribed(). EVR_OK, EVR_TIMEOUT (Redis unreachable,
/// or not yet subscribed), EVR_CLOSED once the node was stopped.
///
/// Thread-safety: may be called from any thread; evr_redis_node_stop() from
/// another thread ends the wait with EVR_CLOSED.
///
/// # Safety
/// `node` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_redis_node_wait_synced(node: *const evr_redis_node, timeout_ms: u32) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let node = unsafe { handle(node, "node") }?;
        Ok(wait_status(&node.node, node.node.wait_synced(Duration::from_millis(timeout_ms.into()))))
    })
}

/// The status of a node wait that returned `ready`.
fn wait_status(node: &RedisNode, ready: bool) -> evr_status {
    match (ready, node.is_stopped()) {
        (true, _) => EVR_OK,
        (false, true) => EVR_CLOSED,
        (false, false) => EVR_TIMEOUT,
    }
}

/// Stores the node's counters in `*out`.
///
/// Thread-safety: may be called from any thread at any time (it waits while
/// evr_redis_node_stop() runs).
///
/// # Safety
/// `node` is NULL or live; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_redis_node_get_stats(
    node: *const evr_redis_node,
    out: *mut evr_redis_node_stats,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let node = unsafe { handle(node, "node") }?;
        let out = out_param(out, "out")?;
        let s = node.node.stats();
        let stats = evr_redis_node_stats {
            received: s.received,
            rejected: s.rejected,
            ignored: s.ignored,
            reconnects: s.reconnects,
            presence_keys: s.presence_keys,
            subscriptions: s.subscriptions,
            system_received: s.system_received,
            system_dropped: s.system_dropped,
        };
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { out.write(stats) };
        Ok(EVR_OK)
    })
}

/// Listens to a system channel: Mastodon's `timeline:access_token:<id>` or
/// `timeline:system:<account>` (without the namespace; one starting with the
/// engine's `redis_namespace` is accepted too). The node receives it next to
/// the channels it routes (in the channels mode it SUBSCRIBEs it within a
/// poll interval, and again after a reconnect; see
/// evr_redis_node_wait_synced()), keeps no presence key for it, and queues
/// its messages for evr_redis_node_next_system() instead of routing them.
/// Reference-counted: each call needs one evr_redis_node_unlisten_system().
/// EVR_ERR_INVALID_CHANNEL for a channel outside `timeline:` or one the
/// engine routes; EVR_ERR_INVALID_UTF8 for bad UTF-8.
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `node` is NULL or live; `channel` points to `len` readable bytes (or `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_redis_node_listen_system(
    node: *const evr_redis_node,
    channel: *const u8,
    len: usize,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let (node, channel) = unsafe { (handle(node, "node")?, bytes(channel, len, "channel")?) };
        node.node.listen_system(utf8(channel, "channel")?)?;
        Ok(EVR_OK)
    })
}

/// Ends one evr_redis_node_listen_system() of the channel; the last one
/// unsubscribes it (channels mode). EVR_OK, or EVR_EMPTY when the channel
/// was not listened to; errors as evr_redis_node_listen_system().
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `node` is NULL or live; `channel` points to `len` readable bytes (or `len` is 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_redis_node_unlisten_system(
    node: *const evr_redis_node,
    channel: *const u8,
    len: usize,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let (node, channel) = unsafe { (handle(node, "node")?, bytes(channel, len, "channel")?) };
        Ok(if node.node.unlisten_system(utf8(channel, "channel")?)? { EVR_OK } else { EVR_EMPTY })
    })
}

/// Waits up to `timeout_ms` milliseconds (0: just check) for the next
/// message of a listened system channel (at most 4096 wait; more are
/// dropped and counted). EVR_OK with `*out` a new message to free with
/// evr_system_message_free(); EVR_TIMEOUT when none came; EVR_CLOSED once
/// the node is stopped and every message received before is handed out.
///
/// Thread-safety: may be called from any thread; evr_redis_node_stop() from
/// another thread ends the wait.
///
/// # Safety
/// `node` is NULL or live; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_redis_node_next_system(
    node: *const evr_redis_node,
    timeout_ms: u32,
    out: *mut *mut evr_system_message,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let node = unsafe { handle(node, "node") }?;
        let out = out_param(out, "out")?;
        Ok(match node.node.next_system(Duration::from_millis(timeout_ms.into())) {
            NextSystem::Message(message) => {
                let message = Box::new(evr_system_message { message });
                // SAFETY: checked non-NULL; writable by contract.
                unsafe { out.write(Box::into_raw(message)) };
                EVR_OK
            }
            NextSystem::Timeout => EVR_TIMEOUT,
            NextSystem::Closed => EVR_CLOSED,
        })
    })
}

/// # Safety
/// `message` is NULL or live; `len` is NULL or writable.
unsafe fn message_bytes(
    message: *const evr_system_message,
    len: *mut usize,
    part: impl FnOnce(&SystemMessage) -> &[u8],
) -> *const u8 {
    pointer(|| {
        // SAFETY: per the caller's contract.
        let message = unsafe { handle(message, "message") }?;
        let len = out_param(len, "len")?;
        let bytes = part(&message.message);
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { len.write(bytes.len()) };
        Ok(bytes.as_ptr())
    })
}

/// The message's channel as it was listened to (UTF-8, without the
/// namespace, not NUL-terminated); `*len` gets the length. Valid until
/// evr_system_message_free(). NULL when `message` or `len` is NULL.
///
/// Thread-safety: a message is immutable; any thread may read it.
///
/// # Safety
/// `message` is NULL or live; `len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_system_message_channel(message: *const evr_system_message, len: *mut usize) -> *const u8 {
    // SAFETY: per this function's contract.
    unsafe { message_bytes(message, len, |m| m.channel.as_bytes()) }
}

/// The message as published (Mastodon's `{"event":"kill"}`, unchecked
/// bytes); `*len` gets the length. Valid until evr_system_message_free().
/// NULL when `message` or `len` is NULL.
///
/// Thread-safety: a message is immutable; any thread may read it.
///
/// # Safety
/// `message` is NULL or live; `len` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_system_message_payload(message: *const evr_system_message, len: *mut usize) -> *const u8 {
    // SAFETY: per this function's contract.
    unsafe { message_bytes(message, len, |m| &m.payload) }
}

/// Frees a system message. NULL is a no-op.
///
/// Thread-safety: must not race with another call on the same message.
///
/// # Safety
/// `message` is NULL or a live message from evr_redis_node_next_system(), not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_system_message_free(message: *mut evr_system_message) {
    // SAFETY: the caller gives up this pointer from Box::into_raw.
    unsafe { super::boundary::free_boxed(message) }
}

/// Stops the node's threads and waits for them (about one poll interval,
/// at most a connect timeout). Nothing more is received from Redis and no
/// presence key is refreshed; the keys are left to expire, since another
/// node may share them. Subscribers are not affected. Idempotent: later
/// calls return EVR_OK at once.
///
/// Thread-safety: may be called from any thread, also while other threads
/// call evr_redis_node_wait_subscribed() or evr_redis_node_get_stats().
///
/// # Safety
/// `node` is NULL or live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_redis_node_stop(node: *const evr_redis_node) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let node = unsafe { handle(node, "node") }?;
        node.node.stop();
        Ok(EVR_OK)
    })
}

/// Stops the node (as evr_redis_node_stop()) and frees it. NULL is a no-op.
///
/// Thread-safety: must not race with another call on the same node.
///
/// # Safety
/// `node` is NULL or a live node from evr_redis_node_attach(), not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_redis_node_free(node: *mut evr_redis_node) {
    // SAFETY: the caller gives up this pointer from Box::into_raw.
    unsafe { super::boundary::free_boxed(node) }
}

/// Connects a publisher to Redis. `namespace` is Mastodon's
/// `REDIS_NAMESPACE` (`(NULL, 0)` for none); it must match the receiving
/// engines' `redis_namespace`. EVR_ERR_INVALID_CONFIG for a malformed URL,
/// EVR_ERR_IO when Redis cannot be reached (no retry). On EVR_OK `*out` is a
/// new publisher to free with evr_redis_publisher_free().
///
/// Thread-safety: may be called from any thread.
///
/// # Safety
/// `url` and `namespace` point to `url_len` and `namespace_len` readable
/// bytes (or their length is 0); `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_redis_publisher_new(
    url: *const u8,
    url_len: usize,
    namespace: *const u8,
    namespace_len: usize,
    out: *mut *mut evr_redis_publisher,
) -> evr_status {
    status(|| {
        let out = out_param(out, "out")?;
        // SAFETY: per this function's contract.
        let (url, namespace) = unsafe { (bytes(url, url_len, "url")?, bytes(namespace, namespace_len, "namespace")?) };
        let namespace = Some(utf8(namespace, "namespace")?).filter(|ns| !ns.is_empty());
        let publisher = Publisher::connect(utf8(url, "url")?, namespace)?;
        let publisher = Box::new(evr_redis_publisher { publisher: Mutex::new(publisher) });
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { out.write(Box::into_raw(publisher)) };
        Ok(EVR_OK)
    })
}

/// Content mode over Redis: publishes the event (the input of evr_publish()) as
/// `{"event":E,"payload":P}` to every channel its content rules derive, so
/// that every attached node delivers it. A `delete` also goes to the
/// channels of the status, when this publisher published it (bounded memory
/// of 65,536 statuses). `out` may be NULL when the counts are not needed.
/// Bad input is refused as by evr_publish() and nothing is published;
/// EVR_ERR_IO when Redis fails (the publisher does not reconnect: free it
/// and create a new one).
///
/// Thread-safety: may be called from any thread; calls on one publisher are
/// serialized.
///
/// # Safety
/// `publisher` is NULL or live; `event` points to `len` readable bytes (or
/// `len` is 0); `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_redis_publish(
    publisher: *const evr_redis_publisher,
    event: *const u8,
    len: usize,
    out: *mut evr_redis_published,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let (publisher, event) = unsafe { (handle(publisher, "publisher")?, bytes(event, len, "event")?) };
        let published = publisher.publisher.lock().publish_content(event)?;
        // SAFETY: NULL or writable by contract.
        if let Some(out) = unsafe { out.as_mut() } {
            *out = published.into();
        }
        Ok(EVR_OK)
    })
}

/// Channel mode over Redis: checks the channel (without namespace; one that
/// starts with the publisher's namespace is accepted too) and the message
/// `{"event":E,"payload":P}` as a node would, then publishes the message
/// unchanged. `out` may be NULL. Errors as evr_redis_publish().
///
/// Thread-safety: may be called from any thread; calls on one publisher are
/// serialized.
///
/// # Safety
/// `publisher` is NULL or live; `channel` and `message` point to `clen` and
/// `mlen` readable bytes (or their length is 0); `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_redis_publish_channel(
    publisher: *const evr_redis_publisher,
    channel: *const u8,
    clen: usize,
    message: *const u8,
    mlen: usize,
    out: *mut evr_redis_published,
) -> evr_status {
    status(|| {
        // SAFETY: per this function's contract.
        let publisher = unsafe { handle(publisher, "publisher") }?;
        // SAFETY: per this function's contract.
        let (channel, message) = unsafe { (bytes(channel, clen, "channel")?, bytes(message, mlen, "message")?) };
        let published = publisher.publisher.lock().publish_channel(utf8(channel, "channel")?, message)?;
        // SAFETY: NULL or writable by contract.
        if let Some(out) = unsafe { out.as_mut() } {
            *out = published.into();
        }
        Ok(EVR_OK)
    })
}

/// Closes the publisher's connection and frees it. NULL is a no-op.
///
/// Thread-safety: must not race with another call on the same publisher.
///
/// # Safety
/// `publisher` is NULL or a live publisher, not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn evr_redis_publisher_free(publisher: *mut evr_redis_publisher) {
    // SAFETY: the caller gives up this pointer from Box::into_raw.
    unsafe { super::boundary::free_boxed(publisher) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_checks_its_arguments_before_starting_anything() {
        let mut engine = std::ptr::null_mut();
        // SAFETY: valid arguments throughout; handles are freed below.
        unsafe {
            assert_eq!(super::super::evr_engine_new(std::ptr::null(), 0, &mut engine), EVR_OK);
            let url = b"redis://127.0.0.1:1/";
            let mut node = std::ptr::null_mut();
            let attach = |url: &[u8], options: &[u8], out| {
                evr_redis_node_attach(engine, url.as_ptr(), url.len(), options.as_ptr(), options.len(), out)
            };
            assert_eq!(attach(url, b"", std::ptr::null_mut()), EVR_ERR_NULL);
            assert_eq!(
                evr_redis_node_attach(std::ptr::null(), url.as_ptr(), url.len(), std::ptr::null(), 0, &mut node),
                EVR_ERR_NULL
            );
            assert_eq!(attach(b"not a url", b"", &mut node), EVR_ERR_INVALID_CONFIG);
            assert_eq!(attach(b"redis://\xff/", b"", &mut node), EVR_ERR_INVALID_UTF8);
            assert_eq!(attach(url, br#"{"ttl":1}"#, &mut node), EVR_ERR_INVALID_CONFIG);
            assert!(node.is_null(), "out is written only on EVR_OK");
            assert_eq!(evr_redis_node_stop(std::ptr::null()), EVR_ERR_NULL);
            assert_eq!(evr_redis_node_wait_subscribed(std::ptr::null(), 0), EVR_ERR_NULL);
            let mut message = std::ptr::null_mut();
            assert_eq!(evr_redis_node_next_system(std::ptr::null(), 0, &mut message), EVR_ERR_NULL);
            let mut len = 0;
            assert!(evr_system_message_channel(std::ptr::null(), &mut len).is_null());
            evr_system_message_free(std::ptr::null_mut());
            evr_redis_node_free(std::ptr::null_mut());
            evr_redis_publisher_free(std::ptr::null_mut());

            // Nothing listens on port 1: the node retries in the background.
            assert_eq!(attach(url, br#"{"poll_interval_ms":10,"connect_timeout_ms":50}"#, &mut node), EVR_OK);
            super::super::evr_engine_free(engine);
            assert_eq!(evr_redis_node_wait_subscribed(node, 30), EVR_TIMEOUT);
            let listen = |channel: &[u8]| evr_redis_node_listen_system(node, channel.as_ptr(), channel.len());
            let unlisten = |channel: &[u8]| evr_redis_node_unlisten_system(node, channel.as_ptr(), channel.len());
            assert_eq!(listen(b"timeline:public"), EVR_ERR_INVALID_CHANNEL);
            assert_eq!(listen(b"timeline:system:\xff"), EVR_ERR_INVALID_UTF8);
            assert_eq!(evr_redis_node_listen_system(node, std::ptr::null(), 3), EVR_ERR_NULL);
            assert_eq!(listen(b"timeline:system:1"), EVR_OK);
            assert_eq!(unlisten(b"timeline:system:1"), EVR_OK);
            assert_eq!(unlisten(b"timeline:system:1"), EVR_EMPTY);
            assert_eq!(evr_redis_node_next_system(node, 0, std::ptr::null_mut()), EVR_ERR_NULL);
            assert_eq!(evr_redis_node_next_system(node, 10, &mut message), EVR_TIMEOUT);
            assert!(message.is_null(), "out is written only on EVR_OK");
            assert_eq!(evr_redis_node_stop(node), EVR_OK);
            assert_eq!(evr_redis_node_stop(node), EVR_OK);
            assert_eq!(evr_redis_node_wait_subscribed(node, 1000), EVR_CLOSED);
            assert_eq!(evr_redis_node_next_system(node, 1000, &mut message), EVR_CLOSED);
            evr_redis_node_free(node);
        }
    }
}
