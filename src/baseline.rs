//! Baselines that `evroute bench` and the criterion benches measure evroute
//! against, in the same run. Not part of the routing API.
//!
//! - [`MastodonRouter`]: the design of Mastodon's `streaming/index.js` (and
//!   of GoToSocial and Akkoma): parse each event once into a generic JSON
//!   value, look up channel → connections in a hash map, and for each
//!   connection run the viewer filters and serialize the WebSocket envelope.
//! - [`RedisServer`] / [`redis_fanout`]: Mastodon's own transport, a real
//!   `redis-server` on loopback with one pub/sub connection per subscriber.
//! - [`Floor`]: not a router but the least a fan-out can cost on this
//!   machine: bump a reference count and store a pointer into each of N
//!   separately allocated rings.
//! - [`TapeBuild`]: simd-json building its tape of an event and extracting
//!   nothing, the baseline of event extraction; [`extraction_vs_tape`] times
//!   the two on the same inputs in alternation.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

/// CPU time this thread has used. The machines benchmarks run on are
/// shared: a thread that is preempted does not count the time others ran,
/// which wall-clock time would.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec we own; CLOCK_THREAD_CPUTIME_ID is POSIX.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Slots per floor ring; a fan-out writes one slot per ring.
pub const FLOOR_SLOTS: usize = 16;

/// One subscriber's ring in the floor: head, tail and slots in one allocation.
struct FloorRing<T> {
    head: usize,
    tail: usize,
    slots: [Option<Arc<T>>; FLOOR_SLOTS],
}

/// The fan-out floor (issue 13): for each of N rings, one reference-count
/// increment and one pointer store, with no index, filter, lock or counter.
/// A full ring drops its oldest entry, as the engine's default policy does.
pub struct Floor<T> {
    // Boxed on purpose: one allocation per ring, scattered like subscribers.
    #[allow(clippy::vec_box)]
    rings: Vec<Box<FloorRing<T>>>,
}

impl<T> Floor<T> {
    pub fn new(n: usize) -> Floor<T> {
        let rings =
            (0..n).map(|_| Box::new(FloorRing { head: 0, tail: 0, slots: std::array::from_fn(|_| None) })).collect();
        Floor { rings }
    }

    /// Stores `item` in every ring; returns the number of deliveries.
    pub fn publish(&mut self, item: &Arc<T>) -> u64 {
        let rings = &mut self.rings;
        for i in 0..rings.len() {
            // The engine's index walk prefetches ahead; the floor does as well.
            if let Some(ahead) = rings.get(i + 16) {
                crate::index::prefetch::<FloorRing<T>>(&**ahead);
            }
            let ring = &mut rings[i];
            if ring.tail - ring.head == FLOOR_SLOTS {
                ring.slots[ring.head % FLOOR_SLOTS] = None;
                ring.head += 1;
            }
            ring.slots[ring.tail % FLOOR_SLOTS] = Some(Arc::clone(item));
            ring.tail += 1;
        }
        rings.len() as u64
    }

    /// Takes every stored entry out (dropping its reference); returns how many.
    pub fn drain(&mut self) -> u64 {
        let mut n = 0;
        for ring in &mut self.rings {
            while ring.head < ring.tail {
                std::hint::black_box(ring.slots[ring.head % FLOOR_SLOTS].take());
                ring.head += 1;
                n += 1;
            }
        }
        n
    }
}

/// What a baseline subscription is: Mastodon's stream names and params.
#[derive(Clone, Debug)]
pub enum BaselineStream {
    /// `public`, `public:local`, `public:remote`, `public:media`, ...
    Public(&'static str),
    Hashtag(String),
    List(String),
    User,
}

/// One WebSocket connection with its viewer filters and output buffer.
#[derive(Default)]
pub struct Connection {
    pub account: String,
    pub languages: Option<HashSet<String>>,
    pub blocked_accounts: HashSet<String>,
    pub muted_accounts: HashSet<String>,
    pub blocked_domains: HashSet<String>,
    /// Serialized envelopes waiting to be written to the socket.
    pub queue: VecDeque<String>,
}

impl Connection {
    /// Mastodon's per-listener checks, done on the parsed payload.
    fn allows(&self, status: &Value) -> bool {
        if let Some(langs) = &self.languages {
            match status.get("language").and_then(Value::as_str) {
                Some(l) if langs.contains(l) => {}
                _ => return false,
            }
        }
        let hidden = |id: Option<&Value>| {
            id.and_then(id_string)
                .is_some_and(|id| self.blocked_accounts.contains(&id) || self.muted_accounts.contains(&id))
        };
        if hidden(status.pointer("/account/id")) || hidden(status.pointer("/reblog/account/id")) {
            return false;
        }
        let mentions = status.get("mentions").and_then(Value::as_array);
        if mentions.is_some_and(|ms| ms.iter().any(|m| hidden(m.get("id")))) {
            return false;
        }
        let acct = status.pointer("/account/acct").and_then(Value::as_str).unwrap_or("");
        acct.split_once('@').is_none_or(|(_, domain)| !self.blocked_domains.contains(&domain.to_lowercase()))
    }
}

fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

struct Listener {
    connection: usize,
    stream: Vec<String>,
    viewer_filtered: bool,
}

#[derive(Serialize)]
struct Envelope<'a> {
    stream: &'a [String],
    event: &'a str,
    payload: &'a str,
}

/// Baseline (a): a Mastodon-style in-process router.
#[derive(Default)]
pub struct MastodonRouter {
    pub connections: Vec<Connection>,
    channels: HashMap<String, Vec<Listener>>,
}

impl MastodonRouter {
    pub fn new() -> MastodonRouter {
        MastodonRouter::default()
    }

    pub fn connect(&mut self, connection: Connection) -> usize {
        self.connections.push(connection);
        self.connections.len() - 1
    }

    pub fn subscribe(&mut self, connection: usize, stream: &BaselineStream) {
        let account = self.connections[connection].account.clone();
        let (channels, array, viewer_filtered) = match stream {
            BaselineStream::Public(name) => (vec![format!("timeline:{name}")], vec![name.to_string()], true),
            BaselineStream::Hashtag(tag) => {
                (vec![format!("timeline:hashtag:{}", tag.to_lowercase())], vec!["hashtag".into(), tag.clone()], true)
            }
            BaselineStream::List(id) => (vec![format!("timeline:list:{id}")], vec!["list".into(), id.clone()], false),
            BaselineStream::User => (
                vec![format!("timeline:{account}"), format!("timeline:{account}:notifications")],
                vec!["user".into()],
                false,
            ),
        };
        for channel in channels {
            self.channels.entry(channel).or_default().push(Listener {
                connection,
                stream: array.clone(),
                viewer_filtered,
            });
        }
    }

    /// Routes one content-mode Mastodon envelope; returns deliveries.
    pub fn publish(&mut self, event: &[u8]) -> serde_json::Result<u64> {
        let doc: Value = serde_json::from_slice(event)?;
        let name = doc.get("event").and_then(Value::as_str).unwrap_or_default();
        let payload = doc.get("payload").unwrap_or(&Value::Null);
        let channels = channels_of(name, payload, &doc);
        // Mastodon stringifies the payload once per listener; doing it once
        // per event makes this baseline faster than the real thing.
        let payload_text = match payload {
            Value::String(s) => s.clone(),
            other => serde_json::to_string(other)?,
        };
        let is_status = name == "update" || name == "status.update";
        let mut delivered = 0;
        for channel in &channels {
            let Some(listeners) = self.channels.get(channel) else {
                continue;
            };
            for l in listeners {
                let conn = &mut self.connections[l.connection];
                if l.viewer_filtered && is_status && !conn.allows(payload) {
                    continue;
                }
                let envelope = Envelope { stream: &l.stream, event: name, payload: &payload_text };
                conn.queue.push_back(serde_json::to_string(&envelope)?);
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    /// Empties every output buffer, as writing to the sockets would.
    pub fn drain(&mut self) -> u64 {
        let mut n = 0;
        for c in &mut self.connections {
            n += c.queue.len() as u64;
            c.queue.clear();
        }
        n
    }
}

/// The channels Mastodon's Rails side would publish an envelope to.
fn channels_of(name: &str, payload: &Value, doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let ids = |key: &str| -> Vec<String> {
        doc.get(key).and_then(Value::as_array).map(|a| a.iter().filter_map(id_string).collect()).unwrap_or_default()
    };
    match name {
        "update" | "status.update" => {
            let public = payload.get("visibility").and_then(Value::as_str) == Some("public")
                && payload.get("reblog").is_none_or(Value::is_null);
            let acct = payload.pointer("/account/acct").and_then(Value::as_str).unwrap_or("");
            let local = !acct.contains('@');
            if public {
                for tag in payload.get("tags").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(t) = tag.get("name").and_then(Value::as_str) {
                        let t = t.to_lowercase();
                        out.push(format!("timeline:hashtag:{t}"));
                        if local {
                            out.push(format!("timeline:hashtag:{t}:local"));
                        }
                    }
                }
                let author = payload.pointer("/account/id").and_then(id_string);
                let reply_to = payload.get("in_reply_to_account_id").and_then(id_string);
                if reply_to.is_none() || reply_to == author {
                    let scope = if local { "public:local" } else { "public:remote" };
                    out.push("timeline:public".into());
                    out.push(format!("timeline:{scope}"));
                    if payload.get("media_attachments").and_then(Value::as_array).is_some_and(|m| !m.is_empty()) {
                        out.push("timeline:public:media".into());
                        out.push(format!("timeline:{scope}:media"));
                    }
                }
            }
            out.extend(ids("recipients").into_iter().map(|id| format!("timeline:{id}")));
            out.extend(ids("lists").into_iter().map(|id| format!("timeline:list:{id}")));
        }
        "notification" => out.extend(ids("recipients").into_iter().map(|id| format!("timeline:{id}:notifications"))),
        _ => out.extend(ids("recipients").into_iter().map(|id| format!("timeline:{id}"))),
    }
    out
}

/// A `redis-server` on a free loopback port, stopped on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// Starts redis-server; `Ok(None)` when it is not installed.
    pub fn start() -> std::io::Result<Option<RedisServer>> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            // Unlimited pub/sub output buffers: a lagging reader must not
            // be disconnected mid-measurement.
            .args(["--client-output-buffer-limit", "pubsub 0 0 0", "--maxclients", "15000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let server = RedisServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = server.connect() {
                c.write_all(b"PING\r\n")?;
                let mut line = String::new();
                BufReader::new(&c).read_line(&mut line)?;
                if line.starts_with("+PONG") {
                    return Ok(Some(server));
                }
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("redis-server did not answer PING within 10 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect(&self) -> std::io::Result<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one Redis fan-out run measured.
#[derive(Clone, Copy, Debug)]
pub struct RedisRun {
    pub subscribers: usize,
    pub events: usize,
    pub deliveries: u64,
    pub elapsed: Duration,
}

/// Baseline (b): `subscribers` connections SUBSCRIBE to one channel, one
/// connection PUBLISHes `message` `events` times, and one thread reads every
/// subscriber socket with epoll until all deliveries have arrived. At most
/// two events are in flight, so Redis's output buffers stay bounded.
#[cfg(target_os = "linux")]
pub fn redis_fanout(
    server: &RedisServer,
    subscribers: usize,
    events: usize,
    message: &[u8],
) -> std::io::Result<RedisRun> {
    const CHANNEL: &str = "timeline:public";
    let mut conns = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let mut c = server.connect()?;
        c.write_all(format!("SUBSCRIBE {CHANNEL}\r\n").as_bytes())?;
        conns.push(c);
    }
    let confirm = format!("*3\r\n$9\r\nsubscribe\r\n${}\r\n{CHANNEL}\r\n:1\r\n", CHANNEL.len());
    let mut buf = vec![0u8; confirm.len()];
    for c in &mut conns {
        c.read_exact(&mut buf)?;
        if buf != confirm.as_bytes() {
            return Err(std::io::Error::other("unexpected SUBSCRIBE reply"));
        }
        c.set_nonblocking(true)?;
    }
    let per_delivery = format!("*3\r\n$7\r\nmessage\r\n${}\r\n{CHANNEL}\r\n${}\r\n\r\n", CHANNEL.len(), message.len())
        .len()
        + message.len();
    let per_event = (per_delivery * subscribers) as u64;

    // SAFETY: plain syscall; the result is checked.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: epfd is a fresh fd that nothing else owns; closed on return.
    let _epoll_guard = unsafe { OwnedFd::from_raw_fd(epfd) };
    for (i, c) in conns.iter().enumerate() {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
        // SAFETY: both fds are open; `ev` lives across the call.
        if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, c.as_raw_fd(), &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let mut publisher = server.connect()?;
    let mut replies = BufReader::new(publisher.try_clone()?);
    let mut command =
        format!("*3\r\n$7\r\nPUBLISH\r\n${}\r\n{CHANNEL}\r\n${}\r\n", CHANNEL.len(), message.len()).into_bytes();
    command.extend_from_slice(message);
    command.extend_from_slice(b"\r\n");

    let mut received: u64 = 0;
    let mut published = 0usize;
    let mut ready = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut chunk = vec![0u8; 1 << 16];
    let mut line = String::new();
    let start = Instant::now();
    loop {
        while published < events && received + 2 * per_event > published as u64 * per_event {
            publisher.write_all(&command)?;
            line.clear();
            replies.read_line(&mut line)?;
            if !line.starts_with(':') {
                return Err(std::io::Error::other(format!("PUBLISH failed: {line}")));
            }
            published += 1;
        }
        if received >= events as u64 * per_event {
            break;
        }
        // SAFETY: `ready` is a live buffer of `ready.len()` events.
        let n = unsafe { libc::epoll_wait(epfd, ready.as_mut_ptr(), ready.len() as i32, 1000) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for ev in &ready[..n as usize] {
            let c = &mut conns[ev.u64 as usize];
            loop {
                match c.read(&mut chunk) {
                    Ok(0) => {
                        return Err(std::io::Error::other("redis closed a subscriber connection"));
                    }
                    Ok(k) => received += k as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let elapsed = start.elapsed();
    // Reset instead of FIN on close, so repeated runs do not pile up
    // TIME_WAIT sockets and exhaust loopback ports.
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    for c in &conns {
        // SAFETY: valid socket fd; `linger` outlives the call.
        unsafe {
            libc::setsockopt(
                c.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }
    Ok(RedisRun { subscribers, events, deliveries: (events * subscribers) as u64, elapsed })
}

/// The Redis baseline reads thousands of sockets with epoll; elsewhere
/// `evroute bench` reports it as unavailable.
#[cfg(not(target_os = "linux"))]
pub fn redis_fanout(_: &RedisServer, _: usize, _: usize, _: &[u8]) -> std::io::Result<RedisRun> {
    Err(std::io::Error::other("the Redis baseline needs Linux (epoll)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(tags: &[&str], acct: &str, language: &str) -> String {
        let tags: Vec<_> = tags.iter().map(|t| serde_json::json!({ "name": t })).collect();
        serde_json::json!({
            "event": "update",
            "payload": { "id": "1", "visibility": "public", "reblog": null, "language": language,
                         "in_reply_to_account_id": null, "account": { "id": "9", "acct": acct },
                         "tags": tags, "mentions": [], "media_attachments": [] },
            "recipients": ["5"], "lists": [3],
        })
        .to_string()
    }

    #[test]
    fn mastodon_router_routes_and_filters_like_mastodon() {
        let mut r = MastodonRouter::new();
        let public = r.connect(Connection { account: "1".into(), ..Default::default() });
        let english = r.connect(Connection {
            account: "2".into(),
            languages: Some(["en".to_string()].into()),
            ..Default::default()
        });
        let tag = r.connect(Connection { account: "3".into(), ..Default::default() });
        let user = r.connect(Connection { account: "5".into(), ..Default::default() });
        let list = r.connect(Connection { account: "6".into(), ..Default::default() });
        r.subscribe(public, &BaselineStream::Public("public"));
        r.subscribe(english, &BaselineStream::Public("public:remote"));
        r.subscribe(tag, &BaselineStream::Hashtag("Rust".into()));
        r.subscribe(user, &BaselineStream::User);
        r.subscribe(list, &BaselineStream::List("3".into()));

        assert_eq!(r.publish(status(&["rust"], "a@remote.example", "de").as_bytes()).unwrap(), 4);
        assert!(r.connections[english].queue.is_empty());
        let frame: Value = serde_json::from_str(&r.connections[tag].queue[0]).unwrap();
        assert_eq!(frame["stream"], serde_json::json!(["hashtag", "Rust"]));
        assert_eq!(frame["event"], "update");
        let payload: Value = serde_json::from_str(frame["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload["account"]["acct"], "a@remote.example");
        assert_eq!(r.drain(), 4);
        assert_eq!(r.publish(status(&[], "a@remote.example", "en").as_bytes()).unwrap(), 4);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn redis_fanout_counts_every_delivery_or_skips_without_redis() {
        let Some(server) = RedisServer::start().unwrap() else {
            eprintln!("redis-server not installed: skipped");
            return;
        };
        let run = redis_fanout(&server, 20, 7, br#"{"event":"delete","payload":"1"}"#).unwrap();
        assert_eq!(run.deliveries, 140);
        assert_eq!((run.subscribers, run.events), (20, 7));
        assert!(run.elapsed > Duration::ZERO);
    }
}

/// simd-json building its tape of one input as the engine did before the
/// scanner (UTF-8 check, copy, `fill_tape` with reused buffers), extracting
/// nothing: what issue 13 compares extraction with.
pub struct TapeBuild {
    input: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Option<simd_json::tape::Tape<'static>>,
}

impl Default for TapeBuild {
    fn default() -> Self {
        TapeBuild {
            input: Vec::new(),
            buffers: simd_json::Buffers::new(4096),
            tape: Some(simd_json::tape::Tape::null()),
        }
    }
}

impl TapeBuild {
    /// Builds the tape of `bytes`; returns its length in nodes.
    pub fn build(&mut self, bytes: &[u8]) -> usize {
        std::str::from_utf8(bytes).expect("UTF-8 input");
        self.build_bare(bytes)
    }

    /// The same without the engine's own UTF-8 check first (simd-json's
    /// stage 1 checks UTF-8 too; the engine checked first to name the
    /// error): simd-json's tape build alone.
    pub fn build_bare(&mut self, bytes: &[u8]) -> usize {
        self.input.clear();
        self.input.extend_from_slice(bytes);
        let mut tape = self.tape.take().expect("a tape").reset();
        simd_json::fill_tape(&mut self.input, &mut self.buffers, &mut tape).expect("valid JSON");
        let nodes = tape.0.len();
        self.tape = Some(tape.reset());
        nodes
    }
}

/// [`extraction_vs_tape`]'s result: bytes processed by each side, the CPU time
/// each took, and medians over rounds of tape time ÷ extraction time.
#[derive(Clone, Copy, Debug)]
pub struct ExtractionRun {
    pub bytes: u64,
    pub extract: Duration,
    pub tape: Duration,
    /// The scan alone (UTF-8 and JSON checked, containers recorded), without
    /// routing on the scanned document.
    pub scan: Duration,
    /// [`TapeBuild::build_bare`].
    pub bare_tape: Duration,
    pub median_ratio: f64,
    pub median_scan_ratio: f64,
    pub median_bare_ratio: f64,
}

impl ExtractionRun {
    pub fn extract_gb_per_s(&self) -> f64 {
        self.bytes as f64 / self.extract.as_secs_f64() / 1e9
    }
    pub fn tape_gb_per_s(&self) -> f64 {
        self.bytes as f64 / self.tape.as_secs_f64() / 1e9
    }
    /// Extraction throughput ÷ tape-build throughput (above 1: faster), the
    /// median of the rounds: a round's parts run within a millisecond or so
    /// of each other, so load changes on a shared machine cancel out.
    pub fn ratio(&self) -> f64 {
        self.median_ratio
    }
    /// The same for the scan alone: how much of extraction is the scanner.
    pub fn scan_ratio(&self) -> f64 {
        self.median_scan_ratio
    }
    /// Extraction against the tape build without its extra UTF-8 check.
    pub fn bare_ratio(&self) -> f64 {
        self.median_bare_ratio
    }
}

/// `evroute::event::parse_content` against [`TapeBuild`] on `inputs`, in
/// `rounds` alternating rounds of `passes` passes over all inputs each, so
/// that both see the same machine load, each timed in this thread's CPU time
/// (time other processes run is not counted). Each round also times the
/// scan alone and the bare tape build. Every input must be an event that parses.
pub fn extraction_vs_tape(inputs: &[&[u8]], rounds: usize, passes: usize) -> ExtractionRun {
    let mut tape = TapeBuild::default();
    let total: usize = inputs.iter().map(|i| i.len()).sum();
    let mut run = ExtractionRun {
        bytes: 0,
        extract: Duration::ZERO,
        tape: Duration::ZERO,
        scan: Duration::ZERO,
        bare_tape: Duration::ZERO,
        median_ratio: f64::NAN,
        median_scan_ratio: f64::NAN,
        median_bare_ratio: f64::NAN,
    };
    let timed = |f: &mut dyn FnMut(&[u8])| {
        let start = thread_cpu_time();
        for _ in 0..passes {
            for input in inputs {
                f(input);
            }
        }
        thread_cpu_time() - start
    };
    let (mut ratios, mut scan_ratios, mut bare_ratios) =
        (Vec::with_capacity(rounds), Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for round in 0..=rounds {
        let extract = timed(&mut |input| {
            std::hint::black_box(crate::event::parse_content(input).expect("a valid event"));
        });
        let tape_time = timed(&mut |input| {
            std::hint::black_box(tape.build(input));
        });
        let scan = timed(&mut |input| {
            std::hint::black_box(crate::json::scan::with_scan(input, |v| Ok(v.range().len())).expect("valid JSON"));
        });
        let bare = timed(&mut |input| {
            std::hint::black_box(tape.build_bare(input));
        });
        // Round 0 warms up all four.
        if round > 0 {
            run.extract += extract;
            run.tape += tape_time;
            run.scan += scan;
            run.bare_tape += bare;
            run.bytes += (total * passes) as u64;
            ratios.push(tape_time.as_secs_f64() / extract.as_secs_f64().max(1e-12));
            scan_ratios.push(tape_time.as_secs_f64() / scan.as_secs_f64().max(1e-12));
            bare_ratios.push(bare.as_secs_f64() / extract.as_secs_f64().max(1e-12));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    run.median_ratio = median(ratios);
    run.median_scan_ratio = median(scan_ratios);
    run.median_bare_ratio = median(bare_ratios);
    run
}
