//! Scale-out over Redis pub/sub (SPEC §9), compatible with Mastodon's
//! streaming server. Built with the `redis` feature.
//!
//! Receiving side: [`RedisNode::attach`] starts two threads, each with its
//! own connection that it re-opens with capped backoff when Redis goes away:
//! - *ingest* receives in one of two [`SubscribeMode`]s, PSUBSCRIBE
//!   `[<namespace>:]timeline:*` or SUBSCRIBE exactly the channels local
//!   subscribers listen to, and feeds every message to [`Engine::publish_channel`];
//! - *presence* keeps Mastodon's `[<namespace>:]subscribed:<channel>` keys
//!   (SET … EX 1080, refreshed every 360 s) for the channels local
//!   subscribers listen to, so that Mastodon's Rails side keeps publishing
//!   home, list and notification updates.
//!
//! Subscribers and their queues live in the engine and never notice a Redis
//! outage: delivery resumes once the ingest thread has subscribed again.
//!
//! System channels (Mastodon's `timeline:access_token:<id>` and
//! `timeline:system:<account>`) are not routed to subscribers: the host
//! listens to them with [`RedisNode::listen_system`], the ingest connection
//! receives them next to the routed channels (subscribed again after a
//! reconnect like those), they get no presence key, and their messages wait
//! in a bounded queue for [`RedisNode::next_system`].
//!
//! Publishing side: [`Publisher`] turns content-mode events (§3b) into the
//! Mastodon channel messages their routing rules derive, so that any node
//! can accept events and every node delivers them.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};

use crate::channel::{ChannelKey, strip_namespace, with_namespace};
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{self, EventsLine, RoutedEvent};
use crate::json::{quote, top_level_span, with_document};
use crate::recent::{RecentStatuses, Routing};
use crate::redis_ingest::{Ingest, Reply};

/// How a node receives (SPEC §9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SubscribeMode {
    /// One PSUBSCRIBE to `[<namespace>:]timeline:*`: every node receives every message.
    #[default]
    Pattern,
    /// SUBSCRIBE exactly the channels local subscribers listen to, as
    /// Mastodon's streaming server does: a node receives only what it delivers.
    /// The set follows the engine's index within a poll interval, in batched
    /// SUBSCRIBE/UNSUBSCRIBE commands, and is subscribed again after a reconnect.
    Channels,
}

impl SubscribeMode {
    pub fn parse(name: &str) -> Result<SubscribeMode> {
        match name {
            "pattern" => Ok(SubscribeMode::Pattern),
            "channels" => Ok(SubscribeMode::Channels),
            _ => Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("subscribe mode must be \"pattern\" or \"channels\", not {name:?}"),
            )),
        }
    }
}

/// Timings and mode of a [`RedisNode`]. The defaults are Mastodon's; tests shorten them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisNodeOptions {
    /// How the ingest connection subscribes.
    pub subscribe: SubscribeMode,
    /// Channels mode: how long a channel stays subscribed after its last
    /// local listener left, so that resuming clients find what was published
    /// meanwhile in the history. Zero: unsubscribed at once.
    pub linger: Duration,
    /// Lifetime of a presence key (Mastodon: 3 × 360 s). Whole seconds, at least 1.
    pub presence_ttl: Duration,
    /// How often presence keys of active channels are set again (Mastodon: 360 s).
    pub presence_refresh: Duration,
    /// How soon newly active channels get their key, and how soon a stop is noticed.
    pub poll_interval: Duration,
    /// First and longest wait between reconnection attempts.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub connect_timeout: Duration,
}

impl RedisNodeOptions {
    /// Parses the node options JSON; empty input means Mastodon's timings.
    /// Every value is a positive integer, except `subscribe` ("pattern" or
    /// "channels"); unknown keys are refused so that a misspelt interval does
    /// not silently fall back to a default.
    pub fn from_json(json: &[u8]) -> Result<RedisNodeOptions> {
        use simd_json::prelude::*;
        let mut options = RedisNodeOptions::default();
        if json.trim_ascii().is_empty() {
            return Ok(options);
        }
        with_document(json, &mut Vec::new(), crate::ErrorKind::InvalidConfig, |doc| {
            let object = doc.as_object().ok_or_else(|| Error::config("redis node options must be a JSON object"))?;
            for (key, value) in object.iter() {
                let n = || match value.as_u64() {
                    Some(n) if n > 0 => Ok(n),
                    _ => Err(Error::config(format!("{key} must be a positive integer"))),
                };
                match key.as_ref() {
                    "subscribe" => {
                        let mode = value.as_str().ok_or_else(|| Error::config("subscribe must be a string"))?;
                        options.subscribe = SubscribeMode::parse(mode)?;
                    }
                    "presence_ttl_secs" => options.presence_ttl = Duration::from_secs(n()?),
                    "presence_refresh_secs" => options.presence_refresh = Duration::from_secs(n()?),
                    "poll_interval_ms" => options.poll_interval = Duration::from_millis(n()?),
                    "backoff_min_ms" => options.backoff_min = Duration::from_millis(n()?),
                    "backoff_max_ms" => options.backoff_max = Duration::from_millis(n()?),
                    "connect_timeout_ms" => options.connect_timeout = Duration::from_millis(n()?),
                    "linger_ms" => options.linger = Duration::from_millis(n()?),
                    other => return Err(Error::config(format!("unknown redis node option {other:?}"))),
                }
            }
            if options.backoff_min > options.backoff_max {
                return Err(Error::config("backoff_min_ms must not exceed backoff_max_ms"));
            }
            Ok(options)
        })
    }
}

impl Default for RedisNodeOptions {
    fn default() -> Self {
        RedisNodeOptions {
            subscribe: SubscribeMode::Pattern,
            linger: Duration::ZERO,
            presence_ttl: Duration::from_secs(1080),
            presence_refresh: Duration::from_secs(360),
            poll_interval: Duration::from_millis(100),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// Counters of a [`RedisNode`], readable at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisNodeStats {
    /// Messages accepted by the engine.
    pub received: u64,
    /// Malformed messages on channels evroute routes; logged and skipped.
    pub rejected: u64,
    /// Messages on `timeline:*` channels evroute does not route (Mastodon's
    /// `timeline:system:…` and `timeline:access_token:…`); skipped silently.
    pub ignored: u64,
    /// Connections re-established after a failure (both threads).
    pub reconnects: u64,
    /// Presence keys currently kept alive.
    pub presence_keys: u64,
    /// Redis subscriptions of the ingest connection: 1 (the pattern) or the
    /// number of channels subscribed; 0 while disconnected.
    pub subscriptions: u64,
    /// Messages on listened system channels queued for the host.
    pub system_received: u64,
    /// Messages on listened system channels dropped because the host let
    /// [`SYSTEM_QUEUE`] of them wait.
    pub system_dropped: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    rejected: AtomicU64,
    ignored: AtomicU64,
    reconnects: AtomicU64,
    presence_keys: AtomicU64,
    subscriptions: AtomicU64,
    system_received: AtomicU64,
    system_dropped: AtomicU64,
}

/// How many system messages wait for the host at most. They are rare (a
/// `kill` per revoked token, a `filters_changed` per edit), so a full queue
/// means the host stopped draining it.
pub const SYSTEM_QUEUE: usize = 4096;

/// A message on a system channel, for the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemMessage {
    /// The channel as the host listened to it, without the namespace.
    pub channel: String,
    pub payload: Vec<u8>,
}

/// What [`RedisNode::next_system`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum NextSystem {
    Message(SystemMessage),
    Timeout,
    /// The node is stopped and no message is left.
    Closed,
}

/// The system channels the host listens to, reference-counted, by their
/// Redis name (with the namespace).
#[derive(Default)]
struct SystemChannels {
    listeners: HashMap<String, usize>,
    /// Bumped whenever the set of channels changes.
    generation: u64,
}

/// What both threads share. Dropping the node's `Sender` wakes them.
struct Shared {
    engine: Engine,
    client: redis::Client,
    options: RedisNodeOptions,
    pattern: String,
    stop: Receiver<()>,
    subscribed: AtomicBool,
    /// One past the index generation the ingest subscriptions reflect (0:
    /// none; u64::MAX in the pattern mode, which covers every channel).
    synced: AtomicU64,
    /// Set when ingest reconnected: Redis may have restarted empty, so the
    /// presence thread sets every key again even if its own connection survived.
    resync_presence: AtomicBool,
    counters: Counters,
    system: parking_lot::Mutex<SystemChannels>,
    /// One past the system generation the ingest subscriptions reflect, as `synced`.
    system_synced: AtomicU64,
    system_tx: Sender<SystemMessage>,
    system_rx: Receiver<SystemMessage>,
}

/// The channels mode's view of one ingest connection.
#[derive(Default)]
struct ChannelSet {
    /// Channels this connection has subscribed.
    subscribed: HashSet<String>,
    /// Subscribed channels nobody listens to any more, and since when.
    idle: HashMap<String, Instant>,
    /// The index and system generations `subscribed` reflects (None: not synchronised yet).
    generation: Option<(u64, u64)>,
    /// When the first idle channel's linger ends.
    due: Option<Instant>,
}

/// An engine's link to Redis. Dropping it (or [`RedisNode::stop`]) stops
/// both threads and waits for them; subscribers are not affected.
pub struct RedisNode {
    shared: Arc<Shared>,
    /// Dropped to stop the threads; `None` once stopped. Behind locks so
    /// that `stop` takes `&self` and ends waits on other threads.
    stop: parking_lot::Mutex<Option<Sender<()>>>,
    threads: parking_lot::Mutex<Vec<JoinHandle<()>>>,
}

impl RedisNode {
    /// Attaches with Mastodon's timings. Fails only on a malformed URL: an
    /// unreachable Redis is retried in the background (see [`RedisNode::wait_subscribed`]).
    pub fn attach(engine: &Engine, url: &str) -> Result<RedisNode> {
        Self::attach_with(engine, url, RedisNodeOptions::default())
    }

    pub fn attach_with(engine: &Engine, url: &str, options: RedisNodeOptions) -> Result<RedisNode> {
        let client = open_client(url)?;
        if options.presence_ttl.as_secs() == 0 || options.poll_interval.is_zero() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "presence_ttl must be at least 1 s and poll_interval above zero",
            ));
        }
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let (system_tx, system_rx) = crossbeam_channel::bounded(SYSTEM_QUEUE);
        let shared = Arc::new(Shared {
            pattern: with_namespace(engine.config().redis_namespace.as_deref(), "timeline:*"),
            engine: engine.clone(),
            client,
            options,
            stop: stop_rx,
            subscribed: AtomicBool::new(false),
            synced: AtomicU64::new(0),
            resync_presence: AtomicBool::new(false),
            counters: Counters::default(),
            system: parking_lot::Mutex::new(SystemChannels::default()),
            system_synced: AtomicU64::new(0),
            system_tx,
            system_rx,
        });
        let spawn = |name: &str, body: fn(&Shared)| {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || body(&shared))
                .map_err(|e| Error::new(ErrorKind::Io, format!("cannot start {name}: {e}")))
        };
        let threads = vec![
            spawn("evroute-redis-in", Shared::run_ingest)?,
            spawn("evroute-redis-presence", Shared::run_presence)?,
        ];
        Ok(RedisNode {
            shared,
            stop: parking_lot::Mutex::new(Some(stop_tx)),
            threads: parking_lot::Mutex::new(threads),
        })
    }

    /// The PSUBSCRIBE pattern of the pattern mode, e.g. `ns:timeline:*`.
    pub fn pattern(&self) -> &str {
        &self.shared.pattern
    }

    /// True while the ingest connection is subscribed.
    pub fn is_subscribed(&self) -> bool {
        self.shared.subscribed.load(Ordering::SeqCst)
    }

    /// Waits until the ingest connection is subscribed; false on timeout or
    /// once the node is stopped.
    pub fn wait_subscribed(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, RedisNode::is_subscribed)
    }

    /// True while the ingest connection is subscribed to every channel that
    /// local subscribers listened to at index generation `generation`
    /// ([`Engine::channel_generation`]); in the pattern mode, while subscribed.
    pub fn covers(&self, generation: u64) -> bool {
        self.is_subscribed() && self.shared.synced.load(Ordering::SeqCst) > generation
    }

    /// Waits until the ingest connection covers the channels local
    /// subscribers and the host's system channels listen to now, so that
    /// messages published to them from then on are received (in the channels
    /// mode a new channel is subscribed within a poll interval); false on
    /// timeout or once stopped.
    pub fn wait_synced(&self, timeout: Duration) -> bool {
        let generation = self.shared.engine.channel_generation();
        let system = self.shared.system.lock().generation;
        self.wait_until(timeout, |node| {
            node.covers(generation) && node.shared.system_synced.load(Ordering::SeqCst) > system
        })
    }

    /// Listens to a system channel (`timeline:access_token:<id>`,
    /// `timeline:system:<account>`, without the namespace; one that starts
    /// with it is accepted too): its messages are queued for
    /// [`RedisNode::next_system`] instead of being routed, and it gets no
    /// presence key. Reference-counted: each call needs one
    /// [`RedisNode::unlisten_system`]. Refused (`InvalidChannel`) for a
    /// channel outside `timeline:` (the pattern mode would not receive it)
    /// and for one the engine routes.
    pub fn listen_system(&self, channel: &str) -> Result<()> {
        let name = self.system_name(channel)?;
        let mut system = self.shared.system.lock();
        let listeners = system.listeners.entry(name).or_insert(0);
        *listeners += 1;
        if *listeners == 1 {
            system.generation += 1;
        }
        Ok(())
    }

    /// Ends one [`RedisNode::listen_system`] of the channel; the last one
    /// unsubscribes it (channels mode). False when it was not listened to.
    pub fn unlisten_system(&self, channel: &str) -> Result<bool> {
        let name = self.system_name(channel)?;
        let mut system = self.shared.system.lock();
        let Some(listeners) = system.listeners.get_mut(&name) else {
            return Ok(false);
        };
        *listeners -= 1;
        if *listeners == 0 {
            system.listeners.remove(&name);
            system.generation += 1;
        }
        Ok(true)
    }

    /// Waits up to `timeout` for the next message of a listened system
    /// channel. Messages received before a stop are still handed out; then
    /// [`NextSystem::Closed`].
    pub fn next_system(&self, timeout: Duration) -> NextSystem {
        let shared = &self.shared;
        if let Ok(message) = shared.system_rx.try_recv() {
            return NextSystem::Message(message);
        }
        if self.is_stopped() {
            return NextSystem::Closed;
        }
        crossbeam_channel::select! {
            recv(shared.system_rx) -> message => message.map_or(NextSystem::Closed, NextSystem::Message),
            recv(shared.stop) -> _ => match shared.system_rx.try_recv() {
                Ok(message) => NextSystem::Message(message),
                Err(_) => NextSystem::Closed,
            },
            default(timeout) => NextSystem::Timeout,
        }
    }

    fn system_name(&self, channel: &str) -> Result<String> {
        let namespace = self.shared.engine.config().redis_namespace.as_deref();
        let bare = strip_namespace(namespace, channel);
        if !bare.starts_with("timeline:") || bare.len() == "timeline:".len() {
            return Err(Error::channel(format!("system channel {channel:?} is not a timeline:* channel")));
        }
        if ChannelKey::parse(bare).is_ok() {
            return Err(Error::channel(format!("{channel:?} is a channel the engine routes, not a system channel")));
        }
        Ok(with_namespace(namespace, bare))
    }

    /// The index generation of the node's engine (see [`RedisNode::covers`]).
    pub fn channel_generation(&self) -> u64 {
        self.shared.engine.channel_generation()
    }

    pub fn stats(&self) -> RedisNodeStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RedisNodeStats {
            received: get(&c.received),
            rejected: get(&c.rejected),
            ignored: get(&c.ignored),
            reconnects: get(&c.reconnects),
            presence_keys: get(&c.presence_keys),
            subscriptions: get(&c.subscriptions),
            system_received: get(&c.system_received),
            system_dropped: get(&c.system_dropped),
        }
    }

    /// Stops both threads and waits for them (at most about one poll
    /// interval, or a connect timeout). Idempotent. Presence keys are left to
    /// expire: another node may share them.
    pub fn stop(&self) {
        self.stop.lock().take();
        for thread in self.threads.lock().drain(..) {
            let _ = thread.join();
        }
    }

    /// True once [`RedisNode::stop`] has begun.
    pub fn is_stopped(&self) -> bool {
        self.stop.lock().is_none()
    }

    /// Polls `ready` until it holds (true), or the timeout passes or the
    /// node is stopped (false; [`RedisNode::is_stopped`] tells which).
    fn wait_until(&self, timeout: Duration, ready: impl Fn(&RedisNode) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_stopped() {
                return false;
            }
            if ready(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.stop();
    }
}

fn open_client(url: &str) -> Result<redis::Client> {
    redis::Client::open(url).map_err(|e| Error::new(ErrorKind::InvalidConfig, format!("redis URL {url:?}: {e}")))
}

/// Mastodon's presence key of a channel: `[<ns>:]subscribed:timeline:…`
/// (streaming/index.js puts the prefix before `subscribed:`).
pub fn presence_key(namespace: Option<&str>, channel: &str) -> String {
    with_namespace(namespace, &format!("subscribed:{}", strip_namespace(namespace, channel)))
}

/// Capped exponential backoff that logs the first failure of a streak, then
/// every tenth, and the recovery.
struct Backoff {
    what: &'static str,
    next: Duration,
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    fn new(what: &'static str, options: &RedisNodeOptions) -> Backoff {
        Backoff { what, next: options.backoff_min, min: options.backoff_min, max: options.backoff_max, failures: 0 }
    }

    fn failed(&mut self, err: &dyn std::fmt::Display) -> Duration {
        if self.failures.is_multiple_of(10) {
            log::warn!("redis {} connection failed ({err}); retrying with backoff up to {:?}", self.what, self.max);
        }
        self.failures += 1;
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Returns true when this ends a streak of failures.
    fn succeeded(&mut self) -> bool {
        let recovered = self.failures > 0;
        if recovered {
            log::info!("redis {} reconnected after {} failed attempts", self.what, self.failures);
        }
        self.failures = 0;
        self.next = self.min;
        recovered
    }
}

impl Shared {
    fn stopped(&self) -> bool {
        matches!(self.stop.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Sleeps unless stopped first; returns false when stopped.
    fn pause(&self, wait: Duration) -> bool {
        !matches!(self.stop.recv_timeout(wait), Err(RecvTimeoutError::Disconnected))
    }

    /// Opens a connection with `open`, retrying with backoff; `None` once stopped.
    fn connect<C, E: std::fmt::Display>(
        &self,
        backoff: &mut Backoff,
        open: impl Fn(&Shared) -> std::result::Result<C, E>,
    ) -> Option<C> {
        loop {
            if self.stopped() {
                return None;
            }
            match open(self) {
                Ok(conn) => return Some(conn),
                Err(e) => {
                    let wait = backoff.failed(&e);
                    if !self.pause(wait) {
                        return None;
                    }
                }
            }
        }
    }

    fn run_ingest(&self) {
        let mut backoff = Backoff::new("ingest", &self.options);
        let open = |s: &Shared| Ingest::connect(s.client.get_connection_info(), s.options.connect_timeout);
        while let Some(mut conn) = self.connect(&mut backoff, open) {
            let result = self.listen(&mut conn, &mut backoff);
            self.subscribed.store(false, Ordering::SeqCst);
            self.synced.store(0, Ordering::SeqCst);
            self.system_synced.store(0, Ordering::SeqCst);
            self.counters.subscriptions.store(0, Ordering::Relaxed);
            match result {
                Ok(()) => return,
                Err(e) => {
                    let wait = backoff.failed(&e);
                    if !self.pause(wait) {
                        return;
                    }
                }
            }
        }
    }

    /// Subscribes and feeds messages until stopped (`Ok`) or the connection fails.
    fn listen(&self, conn: &mut Ingest, backoff: &mut Backoff) -> io::Result<()> {
        let mut channels = ChannelSet::default();
        match self.options.subscribe {
            SubscribeMode::Pattern => {
                conn.send(&[b"PSUBSCRIBE", self.pattern.as_bytes()])?;
                self.confirm(conn, 1)?;
                self.synced.store(u64::MAX, Ordering::SeqCst);
                self.system_synced.store(u64::MAX, Ordering::SeqCst);
                self.counters.subscriptions.store(1, Ordering::Relaxed);
            }
            SubscribeMode::Channels => self.sync_channels(conn, &mut channels)?,
        }
        // Short reads so that a stop is noticed; a partial reply stays buffered.
        conn.set_read_timeout(self.options.poll_interval)?;
        self.subscribed.store(true, Ordering::SeqCst);
        if backoff.succeeded() {
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            self.resync_presence.store(true, Ordering::SeqCst);
        }
        loop {
            if self.stopped() {
                return Ok(());
            }
            if self.options.subscribe == SubscribeMode::Channels
                && (channels.generation != Some(self.generations())
                    || channels.due.is_some_and(|due| Instant::now() >= due))
            {
                conn.set_read_timeout(self.options.connect_timeout)?;
                self.sync_channels(conn, &mut channels)?;
                conn.set_read_timeout(self.options.poll_interval)?;
            }
            if conn.fill()? {
                self.feed_read(conn, &mut 0)?;
            }
        }
    }

    /// Feeds every message read so far to the engine and counts
    /// subscription confirmations into `confirmed`. Readiness fds are
    /// signalled once for the whole read, not per message, so that a
    /// connection woken once writes all its frames of this read.
    fn feed_read(&self, conn: &mut Ingest, confirmed: &mut usize) -> io::Result<()> {
        let mut refused = None;
        crate::engine::signal_after(|| {
            conn.drain(|reply| match reply {
                Reply::Message { channel, payload } => self.feed(channel, payload),
                Reply::Confirmation => *confirmed += 1,
                Reply::Error(e) => refused = Some(String::from_utf8_lossy(e).into_owned()),
                Reply::Status(_) | Reply::Other => {}
            })
        })?;
        match refused {
            Some(e) => Err(io::Error::other(format!("redis refused a subscription command: {e}"))),
            None => Ok(()),
        }
    }

    /// Waits for `n` subscription confirmations (one per channel or pattern
    /// named in the commands just sent), feeding messages that come first.
    fn confirm(&self, conn: &mut Ingest, n: usize) -> io::Result<()> {
        let mut confirmed = 0;
        self.feed_read(conn, &mut confirmed)?;
        while confirmed < n {
            if !conn.fill()? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "redis did not confirm the subscriptions"));
            }
            self.feed_read(conn, &mut confirmed)?;
        }
        Ok(())
    }

    /// The index and system generations.
    fn generations(&self) -> (u64, u64) {
        (self.engine.channel_generation(), self.system.lock().generation)
    }

    /// Channels mode: brings the connection's subscriptions to the channels
    /// local subscribers and the host's system channels listen to, in one
    /// SUBSCRIBE and one UNSUBSCRIBE. It only reads the index (publishers
    /// never wait for it); the index keeps the reference count (a channel is
    /// active while anyone listens). A
    /// channel stays subscribed for `linger` after its last listener left, so
    /// that a client reconnecting within it can resume (SPEC §12) from a
    /// history that kept receiving.
    fn sync_channels(&self, conn: &mut Ingest, set: &mut ChannelSet) -> io::Result<()> {
        // Read the generations first: a change during the pass triggers another.
        let generation = self.engine.channel_generation();
        let mut active: HashSet<String> = self.engine.active_channels().into_iter().collect();
        let system_generation = {
            let system = self.system.lock();
            active.extend(system.listeners.keys().cloned());
            system.generation
        };
        let now = Instant::now();
        for channel in set.subscribed.difference(&active) {
            set.idle.entry(channel.clone()).or_insert(now);
        }
        set.idle.retain(|channel, _| !active.contains(channel));
        let removed: Vec<String> = set
            .idle
            .iter()
            .filter(|(channel, since)| now >= **since + self.linger(channel))
            .map(|(c, _)| c.clone())
            .collect();
        let added: Vec<&String> = active.difference(&set.subscribed).collect();
        for (command, channels) in [(&b"SUBSCRIBE"[..], added), (b"UNSUBSCRIBE", removed.iter().collect())] {
            if !channels.is_empty() {
                let args: Vec<&[u8]> = std::iter::once(command).chain(channels.iter().map(|c| c.as_bytes())).collect();
                conn.send(&args)?;
                self.confirm(conn, channels.len())?;
            }
        }
        for channel in &removed {
            set.idle.remove(channel);
            set.subscribed.remove(channel);
        }
        set.subscribed.extend(active);
        set.due = set.idle.iter().map(|(channel, since)| *since + self.linger(channel)).min();
        set.generation = Some((generation, system_generation));
        self.synced.store(generation + 1, Ordering::SeqCst);
        self.system_synced.store(system_generation + 1, Ordering::SeqCst);
        self.counters.subscriptions.store(set.subscribed.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// How long a channel stays subscribed after its last listener left: the
    /// linger for routed channels (their history keeps receiving for resuming
    /// clients), none for system channels, which have no history.
    fn linger(&self, channel: &str) -> Duration {
        if self.engine.parse_channel(channel.as_bytes()).is_ok() { self.options.linger } else { Duration::ZERO }
    }

    fn feed(&self, channel: &[u8], payload: &[u8]) {
        let c = &self.counters;
        let Ok(key) = self.engine.parse_channel(channel) else {
            self.feed_system(channel, payload);
            return;
        };
        match self.engine.publish_to(key, payload) {
            Ok(_) => {
                c.received.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let n = c.rejected.fetch_add(1, Ordering::Relaxed) + 1;
                // Enough to diagnose a bad publisher without flooding the log.
                if n <= 10 || n.is_multiple_of(1000) {
                    log::warn!("skipped a bad message on {} ({n} so far): {e}", String::from_utf8_lossy(channel));
                }
            }
        }
    }

    /// A message on a channel the engine does not route: queued for the host
    /// when it listens to that system channel, else ignored.
    fn feed_system(&self, channel: &[u8], payload: &[u8]) {
        let c = &self.counters;
        let listened = std::str::from_utf8(channel).is_ok_and(|name| self.system.lock().listeners.contains_key(name));
        if !listened {
            c.ignored.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let namespace = self.engine.config().redis_namespace.as_deref();
        let name = String::from_utf8_lossy(channel);
        let message =
            SystemMessage { channel: strip_namespace(namespace, &name).to_owned(), payload: payload.to_vec() };
        // Counted before it is sent, so a host that received it sees it counted.
        c.system_received.fetch_add(1, Ordering::Relaxed);
        match self.system_tx.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(message) | TrySendError::Disconnected(message)) => {
                c.system_received.fetch_sub(1, Ordering::Relaxed);
                let n = c.system_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n <= 10 || n.is_multiple_of(1000) {
                    log::warn!(
                        "dropped a message on system channel {} ({n} so far): the host does not drain them",
                        message.channel
                    );
                }
            }
        }
    }

    fn run_presence(&self) {
        let mut backoff = Backoff::new("presence", &self.options);
        let mut kept: HashSet<String> = HashSet::new();
        let open = |s: &Shared| s.client.get_connection_with_timeout(s.options.connect_timeout);
        while let Some(mut conn) = self.connect(&mut backoff, open) {
            if backoff.succeeded() {
                self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            // After a (re)connect every key is set again: Redis may have restarted empty.
            match self.keep_presence(&mut conn, &mut kept) {
                Ok(()) => return,
                Err(e) => {
                    let wait = backoff.failed(&e);
                    if !self.pause(wait) {
                        return;
                    }
                }
            }
        }
    }

    /// Sets presence keys until stopped (`Ok`) or the connection fails.
    fn keep_presence(&self, conn: &mut redis::Connection, kept: &mut HashSet<String>) -> redis::RedisResult<()> {
        conn.set_read_timeout(Some(self.options.connect_timeout))?;
        conn.set_write_timeout(Some(self.options.connect_timeout))?;
        let namespace = self.engine.config().redis_namespace.as_deref();
        let mut seen_generation = None;
        let mut next_refresh = Instant::now();
        loop {
            // Read the generation first: a change during the pass triggers another.
            let generation = self.engine.channel_generation();
            let refresh_all = self.resync_presence.swap(false, Ordering::SeqCst) || Instant::now() >= next_refresh;
            if refresh_all || seen_generation != Some(generation) {
                let active: HashSet<String> = self.engine.active_channels().into_iter().collect();
                let to_set: Vec<&String> = active.iter().filter(|c| refresh_all || !kept.contains(*c)).collect();
                if !to_set.is_empty() {
                    let mut pipe = redis::pipe();
                    for channel in to_set {
                        pipe.cmd("SET")
                            .arg(presence_key(namespace, channel))
                            .arg("1")
                            .arg("EX")
                            .arg(self.options.presence_ttl.as_secs())
                            .ignore();
                    }
                    pipe.query::<()>(conn)?;
                }
                // Channels nobody listens to any more are no longer refreshed.
                *kept = active;
                self.counters.presence_keys.store(kept.len() as u64, Ordering::Relaxed);
                seen_generation = Some(generation);
                if refresh_all {
                    next_refresh = Instant::now() + self.options.presence_refresh;
                }
            }
            if !self.pause(self.options.poll_interval) {
                return Ok(());
            }
        }
    }
}

/// The result of publishing one event to Redis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Redis channels the message was published to.
    pub channels: u64,
    /// Sum of PUBLISH replies: how many Redis subscribers (nodes) got a copy.
    pub receivers: u64,
}

/// The Mastodon channel message for a content-mode event:
/// `{"event":E,"payload":P}`, where P is the original JSON text of the
/// envelope's payload (an object stays an object, a string a string) or, for
/// a community webhook event, the whole event object. A node receiving it in
/// channel mode then builds frames byte-identical to content mode.
pub fn channel_message(routed: &RoutedEvent<'_>, input: &[u8]) -> Vec<u8> {
    let raw_payload: Option<&[u8]> = match top_level_span(input, "event") {
        Some(_) => top_level_span(input, "payload").map(|span| &input[span]),
        None => routed.payload.as_deref().map(str::as_bytes),
    };
    let mut out = Vec::with_capacity(input.len() + 32);
    out.extend_from_slice(b"{\"event\":");
    out.extend_from_slice(quote(&routed.name).as_bytes());
    if let Some(payload) = raw_payload {
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(payload);
    }
    out.push(b'}');
    out
}

/// Publishes events to Redis as Mastodon channel messages.
///
/// It keeps a bounded memory (65,536 statuses) of the channels each status
/// was published to, so that a later content-mode `delete` of that id goes
/// to the same channels (as Mastodon's RemoveStatusService does), plus its
/// `recipients` and `lists`. Announcements and `filters_changed` without
/// recipients go to every `timeline:<account>` whose presence key exists,
/// which is how Mastodon's PublishScheduledAnnouncementWorker reaches every
/// connected user.
pub struct Publisher {
    conn: redis::Connection,
    namespace: Option<String>,
    recent: RecentStatuses,
}

impl Publisher {
    pub fn connect(url: &str, namespace: Option<&str>) -> Result<Publisher> {
        let conn = open_client(url)?
            .get_connection_with_timeout(RedisNodeOptions::default().connect_timeout)
            .map_err(io_error)?;
        Ok(Self::new(conn, namespace))
    }

    pub fn new(conn: redis::Connection, namespace: Option<&str>) -> Publisher {
        Publisher {
            conn,
            namespace: namespace.filter(|ns| !ns.is_empty()).map(str::to_owned),
            recent: RecentStatuses::new(65_536),
        }
    }

    /// Content mode (§3b): publishes the event to each channel its rules derive.
    pub fn publish_content(&mut self, event: &[u8]) -> Result<Published> {
        let routed = event::parse_content(event)?;
        let message = channel_message(&routed, event);
        let mut channels: Vec<ChannelKey> = Vec::new();
        let mut add = |key: &ChannelKey| {
            if !channels.contains(key) {
                channels.push(key.clone());
            }
        };
        for key in &routed.channels {
            match key {
                ChannelKey::AllUsers => {
                    for user in self.present_user_channels()? {
                        add(&user);
                    }
                }
                key => add(key),
            }
        }
        if let Some(id) = routed.deletes.as_deref() {
            for routing in self.recent.take(id).into_iter().flatten() {
                routing.channels.iter().for_each(|(key, _)| add(key));
            }
        }
        if let Some(id) = routed.remember.as_deref() {
            // Only the channels matter here: the nodes deliver the delete.
            let channels = routed.channels.iter().map(|k| (k.clone(), 0)).collect();
            let routing = Routing { channels, excluded: Box::new([]) };
            self.recent.record(id.into(), routing);
        }
        let names: Vec<String> =
            channels.iter().map(|k| with_namespace(self.namespace.as_deref(), &k.to_string())).collect();
        self.publish_all(&names, &message)
    }

    /// Channel mode (§3a): checks the channel and message as a node would,
    /// then publishes the message unchanged. `channel` is given without
    /// namespace (one that starts with it is accepted too).
    pub fn publish_channel(&mut self, channel: &str, message: &[u8]) -> Result<Published> {
        let ns = self.namespace.as_deref();
        let bare = strip_namespace(ns, channel);
        let key = ChannelKey::parse(bare)?;
        event::parse_channel_message(key, message)?;
        self.publish_all(&[with_namespace(ns, bare)], message)
    }

    /// One line of an events file (the format of `evroute route`): a
    /// channel-mode record `{"channel": C, "message": M}` or a content-mode event.
    pub fn publish_record(&mut self, line: &[u8]) -> Result<Published> {
        match event::parse_events_line(line)? {
            EventsLine::Channel { channel, message } => self.publish_channel(&channel, &message),
            EventsLine::Content(event) => self.publish_content(event),
        }
    }

    /// `timeline:<account>` channels that some node keeps a presence key for.
    fn present_user_channels(&mut self) -> Result<Vec<ChannelKey>> {
        let prefix = with_namespace(self.namespace.as_deref(), "subscribed:");
        let pattern = format!("{prefix}timeline:*");
        let mut cursor: u64 = 0;
        let mut users = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut self.conn)
                .map_err(io_error)?;
            for key in keys {
                if let Ok(user @ ChannelKey::User(_)) = ChannelKey::parse(&key[prefix.len()..])
                    && !users.contains(&user)
                {
                    users.push(user);
                }
            }
            if next == 0 {
                users.sort();
                return Ok(users);
            }
            cursor = next;
        }
    }

    fn publish_all(&mut self, channels: &[String], message: &[u8]) -> Result<Published> {
        if channels.is_empty() {
            return Ok(Published::default());
        }
        let mut pipe = redis::pipe();
        for channel in channels {
            pipe.cmd("PUBLISH").arg(channel).arg(message);
        }
        let counts: Vec<u64> = pipe.query(&mut self.conn).map_err(io_error)?;
        Ok(Published { channels: channels.len() as u64, receivers: counts.iter().sum() })
    }
}

fn io_error(e: redis::RedisError) -> Error {
    Error::new(ErrorKind::Io, format!("redis: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_options_default_to_mastodon_and_refuse_unknown_or_bad_values() {
        assert_eq!(RedisNodeOptions::from_json(b"").unwrap(), RedisNodeOptions::default());
        let options =
            RedisNodeOptions::from_json(br#"{"presence_ttl_secs":3,"presence_refresh_secs":1,"poll_interval_ms":20}"#)
                .unwrap();
        assert_eq!(options.presence_ttl, Duration::from_secs(3));
        assert_eq!(options.presence_refresh, Duration::from_secs(1));
        assert_eq!(options.poll_interval, Duration::from_millis(20));
        assert_eq!(options.backoff_max, RedisNodeOptions::default().backoff_max);
        assert_eq!(options.subscribe, SubscribeMode::Pattern);
        assert_eq!(
            RedisNodeOptions::from_json(br#"{"subscribe":"channels"}"#).unwrap().subscribe,
            SubscribeMode::Channels
        );
        for (bad, kind) in [
            (&br#"{"presence_ttl":3}"#[..], ErrorKind::InvalidConfig),
            (br#"{"poll_interval_ms":0}"#, ErrorKind::InvalidConfig),
            (br#"{"backoff_min_ms":"5"}"#, ErrorKind::InvalidConfig),
            (br#"{"backoff_min_ms":900,"backoff_max_ms":100}"#, ErrorKind::InvalidConfig),
            (br#"[1]"#, ErrorKind::InvalidConfig),
            (br#"{"subscribe":"all"}"#, ErrorKind::InvalidConfig),
            (br#"{"subscribe":1}"#, ErrorKind::InvalidConfig),
            (br#"{"poll_interval_ms":}"#, ErrorKind::InvalidJson),
            (b"\xff", ErrorKind::InvalidUtf8),
        ] {
            assert_eq!(
                RedisNodeOptions::from_json(bad).err().map(|e| e.kind()),
                Some(kind),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn presence_keys_put_the_namespace_first() {
        assert_eq!(presence_key(None, "timeline:1"), "subscribed:timeline:1");
        assert_eq!(presence_key(Some("ns"), "ns:timeline:1"), "ns:subscribed:timeline:1");
    }

    #[test]
    fn channel_messages_keep_the_payload_type() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"event":"update","payload":{"id":"1","account":{"id":"2"}},"recipients":[2]}"#,
                r#"{"event":"update","payload":{"id":"1","account":{"id":"2"}}}"#,
            ),
            (r#"{"event":"delete","payload":"1"}"#, r#"{"event":"delete","payload":"1"}"#),
            (r#"{"event":"filters_changed","recipients":[3]}"#, r#"{"event":"filters_changed"}"#),
            (
                r#" {"type":"notification.mention","data":{"recipients":[1]}} "#,
                r#"{"event":"notification.mention","payload":{"type":"notification.mention","data":{"recipients":[1]}}}"#,
            ),
        ];
        for (input, expected) in cases {
            let routed = event::parse_content(input.as_bytes()).unwrap();
            assert_eq!(String::from_utf8(channel_message(&routed, input.as_bytes())).unwrap(), *expected);
        }
    }
}
