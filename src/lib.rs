//! evroute: an embedded event-routing engine for Mastodon-style streaming.
//!
//! A host hands each event to [`Engine::publish`] (content mode) or
//! [`Engine::publish_channel`] (Mastodon's Redis channel mode). The engine
//! finds matching subscriptions through its index, encodes each frame once,
//! and places a shared copy in each matching [`Subscriber`]'s bounded queue.
//!
//! The hot path, one module per stage: [`event`] (bytes → routing keys),
//! `index` (keys → subscriptions), [`frame`] (encode once), `queue`
//! (bounded delivery); [`engine`] ties them together.

#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod baseline;
pub mod channel;
pub mod config;
pub mod engine;
pub mod error;
pub mod event;
pub mod ffi;
pub mod filter;
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod filter_bench;
pub mod frame;
pub(crate) mod history;
pub(crate) mod index;
pub(crate) mod json;
pub mod keyword;
pub(crate) mod queue;
mod readiness;
pub mod ready_set;
pub(crate) mod recent;
#[cfg(feature = "redis")]
mod redis_ingest;
/// The Redis node's RESP2 push parser, for `benches/redis_ingest.rs`.
#[cfg(all(feature = "bench", feature = "redis"))]
#[doc(hidden)]
pub mod ingest_bench {
    /// Parses every complete reply at the start of `buf` as the Redis node
    /// does: how many `message` pushes, and their payload bytes.
    pub fn messages(mut buf: &[u8]) -> std::io::Result<(usize, usize)> {
        let (mut messages, mut bytes) = (0, 0);
        while let Some((reply, used)) = crate::redis_ingest::parse(buf)? {
            if let crate::redis_ingest::Reply::Message { payload, .. } = reply {
                messages += 1;
                bytes += payload.len();
            }
            buf = &buf[used..];
        }
        Ok((messages, bytes))
    }
}
#[cfg(feature = "redis")]
pub mod redis_node;
pub(crate) mod small_list;
pub mod subscription;
pub mod text;
pub(crate) mod viewer;

pub use channel::{ChannelKey, Stream, normalize_tag};
pub use config::{EngineConfig, HistoryConfig, SubscriberOptions};
pub use engine::{Engine, EngineStats, PublishStats, Resumed, Subscriber};
pub use error::{Error, ErrorKind, Result};
pub use filter::{IdKey, IdSet, ViewerFilters};
pub use frame::{Frame, FrameRef};
pub use queue::{Batch, Next, Overflow, QueueStats};
pub use subscription::SubscriptionSpec;

/// What the `evroute` binary and the tests use from crate-private modules;
/// not a stable API.
#[doc(hidden)]
pub mod internal {
    pub use crate::json::{quote, top_level_span, with_document};
}

/// The crate version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
