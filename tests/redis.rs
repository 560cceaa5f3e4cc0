//! Scale-out over Redis (SPEC §9) against a real `redis-server`, started on
//! a free loopback port. Without `redis-server` on PATH the Redis tests say
//! so and return; scripts/test.d/60-redis.sh installs it first.
#![cfg(feature = "redis")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use evroute::redis_node::{
    NextSystem, Publisher, RedisNode, RedisNodeOptions, SubscribeMode, SystemMessage, channel_message,
};
use evroute::{Engine, EngineConfig, Next, Subscriber};

// ---------------------------------------------------------------- harness

fn redis_server_missing() -> bool {
    let missing = Command::new("redis-server").arg("--version").output().is_err();
    if missing {
        eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server); Redis tests not run");
    }
    missing
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = RedisServer { child, port };
        wait_until(Duration::from_secs(10), "redis-server to accept connections", || {
            server.try_conn().and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).ok()).is_some()
        });
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn try_conn(&self) -> Option<redis::Connection> {
        redis::Client::open(self.url()).ok()?.get_connection_with_timeout(Duration::from_secs(1)).ok()
    }

    fn conn(&self) -> redis::Connection {
        self.try_conn().expect("connect to redis-server")
    }

    fn ttl(&self, key: &str) -> i64 {
        redis::cmd("TTL").arg(key).query(&mut self.conn()).unwrap()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("evroute-redis-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One `evroute node` process; stdout lines arrive on a channel, stderr is kept.
struct NodeProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl NodeProcess {
    fn spawn(url: &str, subscribers: &Path) -> NodeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_evroute"))
            .args(["node", "--redis", url, "--subscribers"])
            .arg(subscribers)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start evroute node");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let _ = tx.send(line.unwrap());
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (err_pipe, err_text) = (child.stderr.take().unwrap(), Arc::clone(&stderr));
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let mut text = err_text.lock().unwrap();
                text.push_str(&line.unwrap());
                text.push('\n');
            }
        });
        let node = NodeProcess { child, lines, stderr };
        node.wait_log("subscribed to timeline:*");
        node
    }

    fn wait_log(&self, needle: &str) {
        wait_until(Duration::from_secs(15), &format!("node stderr to say {needle:?}"), || {
            self.stderr.lock().unwrap().contains(needle)
        });
    }

    /// Exactly `n` lines: waits for them, then checks nothing else follows.
    fn take(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => got.push(line),
                Err(_) => panic!("got {} of {n} lines: {got:#?}", got.len()),
            }
        }
        if let Ok(extra) = self.lines.recv_timeout(Duration::from_millis(300)) {
            panic!("unexpected extra line {extra}");
        }
        got
    }

    fn terminate(mut self) -> (ExitStatus, String) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let text = self.stderr.lock().unwrap().clone();
        (status, text)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------- test data

struct Sub {
    id: &'static str,
    /// Subscriber keys of §7, as the inside of a JSON object.
    options: &'static str,
    subscriptions: &'static [&'static str],
}

const NODE_A: &[Sub] = &[
    Sub { id: "a1", options: r#""account":1"#, subscriptions: &[r#"{"stream":"user"}"#] },
    Sub { id: "a2", options: "", subscriptions: &[r#"{"stream":"public:local"}"#] },
    Sub {
        id: "a3",
        options: r#""account":9,"blocked_accounts":["795442"]"#,
        subscriptions: &[r#"{"stream":"public"}"#],
    },
];

const NODE_B: &[Sub] = &[
    Sub { id: "b1", options: r#""account":7"#, subscriptions: &[r#"{"stream":"user:notification"}"#] },
    Sub {
        id: "b2",
        options: "",
        subscriptions: &[r#"{"stream":"hashtag","tag":"Test"}"#, r#"{"stream":"public:remote"}"#],
    },
    Sub { id: "b3", options: r#""account":3"#, subscriptions: &[r#"{"stream":"user"}"#, r#"{"stream":"direct"}"#] },
];

fn subscribers_file(dir: &Path, name: &str, subs: &[Sub]) -> PathBuf {
    let lines: Vec<String> = subs
        .iter()
        .map(|s| {
            let comma = if s.options.is_empty() { "" } else { "," };
            format!(r#"{{"id":"{}"{comma}{},"subscriptions":[{}]}}"#, s.id, s.options, s.subscriptions.join(","))
        })
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn corpus(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_owned()
}

fn with_recipients(event: &str, ids: &str) -> String {
    format!("{},\"recipients\":[{ids}]}}", event.strip_suffix('}').unwrap())
}

fn first_batch() -> Vec<String> {
    vec![
        with_recipients(&corpus("mastodon/08-update-108914354907984653.json"), "1"),
        with_recipients(&corpus("mastodon/02-notification-68739215.json"), "7"),
        corpus("mastodon/14-update-108914430312582020.json"),
        corpus("mastodon/15-delete-108914430312582020.json"),
        corpus("mastodon/04-announcement-1.json"),
        with_recipients(&corpus("mastodon/18-conversation-819516.json"), "3"),
        corpus("mastodon/10-status.update-109348684737626801.json"),
        corpus("community/notification.mention.json"),
        corpus("community/status.created.json"),
    ]
}

fn second_batch() -> Vec<String> {
    vec![
        corpus("mastodon/11-update-108914398911648589.json"),
        corpus("mastodon/12-delete-108914398911648589.json"),
        corpus("mastodon/03-filters_changed-undefined.json"),
        with_recipients(&corpus("mastodon/02-notification-68739215.json"), "7"),
    ]
}

/// A local engine with the same subscribers, published to in content mode:
/// what a node must print, per subscriber, byte for byte.
struct Reference {
    engine: Engine,
    subscribers: Vec<(&'static str, Subscriber)>,
}

impl Reference {
    fn new(subs: &[Sub]) -> Reference {
        let engine = Engine::new(EngineConfig { queue_capacity: 1 << 16, ..EngineConfig::default() });
        let subscribers = subs
            .iter()
            .map(|s| {
                let sub = engine.subscriber_from_json(format!("{{{}}}", s.options).as_bytes()).unwrap();
                for json in s.subscriptions {
                    assert!(sub.subscribe(json.as_bytes()).unwrap());
                }
                (s.id, sub)
            })
            .collect();
        Reference { engine, subscribers }
    }

    fn expect(&self, events: &[String]) -> HashMap<String, Vec<String>> {
        let mut lines: HashMap<String, Vec<String>> = HashMap::new();
        for event in events {
            self.engine.publish(event.as_bytes()).unwrap();
            for (id, sub) in &self.subscribers {
                while let Next::Frame(frame) = sub.next(Duration::ZERO) {
                    let ws = std::str::from_utf8(&frame.ws()[1..]).unwrap();
                    lines.entry(id.to_string()).or_default().push(format!("{{\"subscriber\":\"{id}\",{ws}"));
                }
            }
        }
        lines
    }
}

fn by_subscriber(lines: Vec<String>) -> HashMap<String, Vec<String>> {
    let mut grouped: HashMap<String, Vec<String>> = HashMap::new();
    for line in lines {
        let id = line.split('"').nth(3).unwrap().to_owned();
        grouped.entry(id).or_default().push(line);
    }
    grouped
}

fn total(expected: &HashMap<String, Vec<String>>) -> usize {
    expected.values().map(Vec::len).sum()
}

fn assert_delivered(node: &NodeProcess, expected: &HashMap<String, Vec<String>>) {
    let got = by_subscriber(node.take(total(expected)));
    for (id, lines) in expected {
        assert_eq!(got.get(id), Some(lines), "deliveries to {id}");
    }
    assert_eq!(got.len(), expected.len());
}

fn presence_keys_exist(server: &RedisServer, keys: &[&str]) -> bool {
    keys.iter().all(|k| server.ttl(k) > 0)
}

// ------------------------------------------------------------------ tests

#[test]
fn two_node_processes_share_events_and_survive_a_redis_restart() {
    if redis_server_missing() {
        return;
    }
    let port = free_port();
    let mut server = RedisServer::start(port);
    let dir = temp_dir("two-nodes");
    let (ref_a, ref_b) = (Reference::new(NODE_A), Reference::new(NODE_B));
    let node_a = NodeProcess::spawn(&server.url(), &subscribers_file(&dir, "a.ndjson", NODE_A));
    let node_b = NodeProcess::spawn(&server.url(), &subscribers_file(&dir, "b.ndjson", NODE_B));

    // Announcements without recipients find user streams by presence key.
    let presence = ["subscribed:timeline:1", "subscribed:timeline:3", "subscribed:timeline:7:notifications"];
    wait_until(Duration::from_secs(5), "presence keys", || presence_keys_exist(&server, &presence));
    for key in presence {
        let ttl = server.ttl(key);
        assert!((1..=1080).contains(&ttl), "{key} has TTL {ttl}");
    }

    // First batch through the CLI, published once for both nodes.
    let events = first_batch();
    let events_path = dir.join("events.ndjson");
    std::fs::write(&events_path, events.join("\n") + "\n").unwrap();
    let publish = Command::new(env!("CARGO_BIN_EXE_evroute"))
        .args(["publish", "--redis", &server.url()])
        .arg(&events_path)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&publish.stderr);
    assert!(publish.status.success(), "evroute publish failed: {report}");
    assert!(report.contains(&format!("{} events", events.len())), "{report}");
    let (expect_a, expect_b) = (ref_a.expect(&events), ref_b.expect(&events));
    assert!(expect_a.len() == NODE_A.len() && expect_b.len() == NODE_B.len(), "every subscriber gets something");
    assert_delivered(&node_a, &expect_a);
    assert_delivered(&node_b, &expect_b);

    // Redis dies and comes back empty on the same port.
    server.kill();
    node_a.wait_log("ingest connection failed");
    node_b.wait_log("ingest connection failed");
    server = RedisServer::start(port);
    wait_until(Duration::from_secs(15), "both nodes to subscribe again", || {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut server.conn()).unwrap();
        clients.lines().filter(|c| c.contains(" psub=1 ")).count() == 2
    });
    wait_until(Duration::from_secs(5), "presence keys after the restart", || presence_keys_exist(&server, &presence));

    // Second batch through the library; nobody re-subscribed.
    let events = second_batch();
    let mut publisher = Publisher::connect(&server.url(), None).unwrap();
    for event in &events {
        publisher.publish_content(event.as_bytes()).unwrap();
    }
    assert_delivered(&node_a, &ref_a.expect(&events));
    assert_delivered(&node_b, &ref_b.expect(&events));

    for node in [node_a, node_b] {
        let (status, log) = node.terminate();
        assert!(status.success(), "node exit {status}: {log}");
        assert!(log.contains("ingest reconnected"), "{log}");
        assert!(log.contains("rejected 0"), "{log}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn short_timings() -> RedisNodeOptions {
    RedisNodeOptions {
        subscribe: SubscribeMode::Pattern,
        linger: Duration::ZERO,
        presence_ttl: Duration::from_secs(2),
        presence_refresh: Duration::from_millis(500),
        poll_interval: Duration::from_millis(20),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(1),
    }
}

#[test]
fn presence_keys_follow_local_listeners_with_a_namespace() {
    if redis_server_missing() {
        return;
    }
    let server = RedisServer::start(free_port());
    let engine = Engine::from_json(br#"{"redis_namespace":"ns"}"#).unwrap();
    let public = engine.subscriber_from_json(b"").unwrap();
    public.subscribe(br#"{"stream":"public"}"#).unwrap();
    let node = RedisNode::attach_with(&engine, &server.url(), short_timings()).unwrap();
    assert_eq!(node.pattern(), "ns:timeline:*");
    assert!(node.wait_subscribed(Duration::from_secs(5)));

    // A channel gaining its first listener gets its key within a poll.
    let user = engine.subscriber_from_json(br#"{"account":5}"#).unwrap();
    user.subscribe(br#"{"stream":"user"}"#).unwrap();
    let user_keys = ["ns:subscribed:timeline:5", "ns:subscribed:timeline:5:notifications"];
    let public_key = "ns:subscribed:timeline:public";
    wait_until(Duration::from_secs(2), "presence keys", || presence_keys_exist(&server, &user_keys));
    assert!((1..=2).contains(&server.ttl(public_key)));
    assert_eq!(server.ttl("subscribed:timeline:5"), -2, "the namespace goes first");

    // Refreshed while listened to: alive well past one TTL.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(presence_keys_exist(&server, &user_keys) && server.ttl(public_key) > 0);

    // Not refreshed once the last listener left: it expires, others stay.
    drop(user);
    wait_until(Duration::from_secs(4), "user keys to expire", || user_keys.iter().all(|k| server.ttl(k) == -2));
    assert!(server.ttl(public_key) > 0);
    assert_eq!(node.stats().presence_keys, 1);

    // Ingest: a bad message is skipped, an unrouted channel ignored, a good one delivered.
    let mut conn = server.conn();
    let mut publish = |channel: &str, message: &str| {
        redis::cmd("PUBLISH").arg(channel).arg(message).query::<u64>(&mut conn).unwrap();
    };
    publish("ns:timeline:public", "{not json");
    publish("ns:timeline:system:1", r#"{"event":"kill"}"#);
    publish("timeline:public", r#"{"event":"delete","payload":"1"}"#); // other namespace
    let status = corpus("mastodon/08-update-108914354907984653.json");
    let sent = Publisher::connect(&server.url(), Some("ns")).unwrap().publish_content(status.as_bytes()).unwrap();
    assert_eq!((sent.channels, sent.receivers), (2, 2), "public and public:remote, one node each");
    let Next::Frame(frame) = public.next(Duration::from_secs(5)) else { panic!("no frame") };
    let local = Engine::default();
    let reference = local.subscriber_from_json(b"").unwrap();
    reference.subscribe(br#"{"stream":"public"}"#).unwrap();
    local.publish(status.as_bytes()).unwrap();
    let Next::Frame(expected) = reference.next(Duration::ZERO) else { panic!("no reference frame") };
    assert_eq!((frame.sse(), frame.ws()), (expected.sse(), expected.ws()));
    assert!(matches!(public.next(Duration::from_millis(200)), Next::Timeout));
    let stats = node.stats();
    assert_eq!((stats.received, stats.rejected, stats.ignored), (2, 1, 1), "{stats:?}");

    let started = Instant::now();
    node.stop();
    assert!(started.elapsed() < Duration::from_secs(1), "stop took {:?}", started.elapsed());
}

fn channels_options() -> RedisNodeOptions {
    RedisNodeOptions { subscribe: SubscribeMode::Channels, ..short_timings() }
}

fn numsub(server: &RedisServer, channel: &str) -> u64 {
    let reply: (String, u64) = redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query(&mut server.conn()).unwrap();
    reply.1
}

/// Channels mode: two nodes on one Redis each subscribe only the channels of
/// their own subscribers, follow them as they come and go, and subscribe
/// them all again after a Redis restart.
#[test]
fn channels_mode_receives_only_local_channels() {
    if redis_server_missing() {
        return;
    }
    let mut server = RedisServer::start(free_port());
    let channels = channels_options();
    let (a, b) = (Engine::default(), Engine::default());
    let sub_a = a.subscriber_from_json(b"").unwrap();
    sub_a.subscribe(br#"{"stream":"hashtag","tag":"alpha"}"#).unwrap();
    let sub_b = b.subscriber_from_json(b"").unwrap();
    sub_b.subscribe(br#"{"stream":"hashtag","tag":"beta"}"#).unwrap();
    // A second listener of the same channel on node A: still one Redis subscription.
    let sub_a2 = a.subscriber_from_json(b"").unwrap();
    sub_a2.subscribe(br#"{"stream":"hashtag","tag":"Alpha"}"#).unwrap();
    let node_a = RedisNode::attach_with(&a, &server.url(), channels.clone()).unwrap();
    let node_b = RedisNode::attach_with(&b, &server.url(), channels).unwrap();
    assert!(node_a.wait_subscribed(Duration::from_secs(5)) && node_b.wait_subscribed(Duration::from_secs(5)));
    let (alpha, beta) = ("timeline:hashtag:alpha", "timeline:hashtag:beta");
    wait_until(Duration::from_secs(2), "one subscription per channel", || {
        numsub(&server, alpha) == 1 && numsub(&server, beta) == 1
    });
    assert_eq!((node_a.stats().subscriptions, node_b.stats().subscriptions), (1, 1));

    let mut publisher = Publisher::connect(&server.url(), None).unwrap();
    let delete = |id: u32| format!(r#"{{"event":"delete","payload":"{id}"}}"#);
    assert_eq!(publisher.publish_channel(alpha, delete(1).as_bytes()).unwrap().receivers, 1);
    assert_eq!(publisher.publish_channel(beta, delete(2).as_bytes()).unwrap().receivers, 1);
    assert_eq!(publisher.publish_channel("timeline:public", delete(3).as_bytes()).unwrap().receivers, 0);
    let payload = |s: &Subscriber| match s.next(Duration::from_secs(5)) {
        Next::Frame(f) => f.payload().map(str::to_owned),
        other => panic!("no frame: {other:?}"),
    };
    assert_eq!(payload(&sub_a).as_deref(), Some("1"));
    assert_eq!(payload(&sub_a2).as_deref(), Some("1"));
    assert_eq!(payload(&sub_b).as_deref(), Some("2"));
    // A node counts a message once its publish has returned, which may be
    // after the subscriber already read the frame.
    wait_until(Duration::from_secs(2), "each node to count its one message", || {
        (node_a.stats().received, node_b.stats().received) == (1, 1)
    });
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!((node_a.stats().received, node_b.stats().received), (1, 1), "each node received only its channel");

    // A new channel is subscribed, and one whose last listener left is not.
    sub_b.subscribe(br#"{"stream":"public"}"#).unwrap();
    assert!(node_b.wait_synced(Duration::from_secs(2)));
    assert_eq!(numsub(&server, "timeline:public"), 1);
    drop(sub_a);
    assert_eq!(numsub(&server, alpha), 1, "sub_a2 still listens");
    drop(sub_a2);
    wait_until(Duration::from_secs(2), "alpha unsubscribed", || numsub(&server, alpha) == 0);
    assert_eq!(node_a.stats().subscriptions, 0);

    // With a linger, a channel whose last listener left stays subscribed for it.
    let lingering = Engine::default();
    let options = RedisNodeOptions { linger: Duration::from_millis(600), ..channels_options() };
    let node_c = RedisNode::attach_with(&lingering, &server.url(), options).unwrap();
    let sub_c = lingering.subscriber_from_json(b"").unwrap();
    sub_c.subscribe(br#"{"stream":"hashtag","tag":"gamma"}"#).unwrap();
    assert!(node_c.wait_synced(Duration::from_secs(2)));
    drop(sub_c);
    let left = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(numsub(&server, "timeline:hashtag:gamma"), 1, "kept while lingering");
    wait_until(Duration::from_secs(3), "gamma unsubscribed", || numsub(&server, "timeline:hashtag:gamma") == 0);
    assert!(left.elapsed() >= Duration::from_millis(600), "unsubscribed after {:?}", left.elapsed());
    drop(node_c);

    // After a restart every channel is subscribed again and delivery resumes.
    let port = server.port;
    server.kill();
    server = RedisServer::start(port);
    wait_until(Duration::from_secs(5), "resubscribed", || {
        numsub(&server, beta) == 1 && numsub(&server, "timeline:public") == 1
    });
    let mut publisher = Publisher::connect(&server.url(), None).unwrap();
    assert_eq!(publisher.publish_channel("timeline:public", delete(4).as_bytes()).unwrap().receivers, 1);
    assert_eq!(payload(&sub_b).as_deref(), Some("4"));
    assert!(node_b.stats().reconnects >= 1);
}

/// System channels (Mastodon's kill and filters_changed): the host listens
/// to them through the node, which subscribes them next to the routed
/// channels, again after a Redis restart, without presence keys, and queues
/// their messages for the host.
#[test]
fn system_channels_reach_the_host_without_presence_keys() {
    if redis_server_missing() {
        return;
    }
    let mut server = RedisServer::start(free_port());
    let engine = Engine::from_json(br#"{"redis_namespace":"ns"}"#).unwrap();
    // The linger is for routed channels (their history); system channels go at once.
    let options = RedisNodeOptions { linger: Duration::from_secs(60), ..channels_options() };
    let node = RedisNode::attach_with(&engine, &server.url(), options).unwrap();
    let user = engine.subscriber_from_json(br#"{"account":7}"#).unwrap();
    user.subscribe(br#"{"stream":"user:notification"}"#).unwrap();
    let (token, system) = ("timeline:access_token:70", "timeline:system:7");
    node.listen_system(token).unwrap();
    node.listen_system(system).unwrap();
    node.listen_system("ns:timeline:system:7").unwrap(); // a second listener, namespace given
    for bad in ["timeline:public", "timeline:7", "system:7", "timeline:", "ns:timeline:list:3"] {
        let err = node.listen_system(bad).unwrap_err();
        assert_eq!(err.kind(), evroute::ErrorKind::InvalidChannel, "{bad}: {err}");
    }
    assert!(node.wait_synced(Duration::from_secs(2)));
    for channel in ["ns:timeline:access_token:70", "ns:timeline:system:7", "ns:timeline:7:notifications"] {
        assert_eq!(numsub(&server, channel), 1, "{channel}");
    }
    let presence = "ns:subscribed:timeline:7:notifications";
    wait_until(Duration::from_secs(2), "the stream channel's presence key", || server.ttl(presence) > 0);
    for system_key in ["ns:subscribed:timeline:access_token:70", "ns:subscribed:timeline:system:7"] {
        assert_eq!(server.ttl(system_key), -2, "{system_key} must not exist");
    }
    assert_eq!(node.stats().presence_keys, 1);

    let mut conn = server.conn();
    let publish = |conn: &mut redis::Connection, channel: &str, message: &str| -> u64 {
        redis::cmd("PUBLISH").arg(channel).arg(message).query(conn).unwrap()
    };
    assert_eq!(publish(&mut conn, "ns:timeline:access_token:70", r#"{"event":"kill"}"#), 1);
    assert_eq!(publish(&mut conn, "ns:timeline:system:7", r#"{"event":"filters_changed"}"#), 1);
    let message = |channel: &str, payload: &str| {
        NextSystem::Message(SystemMessage { channel: channel.into(), payload: payload.as_bytes().to_vec() })
    };
    assert_eq!(node.next_system(Duration::from_secs(5)), message(token, r#"{"event":"kill"}"#));
    assert_eq!(node.next_system(Duration::from_secs(5)), message(system, r#"{"event":"filters_changed"}"#));
    assert_eq!(node.next_system(Duration::from_millis(50)), NextSystem::Timeout);
    assert!(matches!(user.next(Duration::ZERO), Next::Empty), "system messages are not routed");

    // Reference-counted: one listener of the system channel is left.
    assert!(node.unlisten_system(system).unwrap());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(numsub(&server, "ns:timeline:system:7"), 1);

    // A Redis restart: the system channels are subscribed again.
    let port = server.port;
    server.kill();
    server = RedisServer::start(port);
    wait_until(Duration::from_secs(5), "system channels resubscribed", || {
        numsub(&server, "ns:timeline:access_token:70") == 1 && numsub(&server, "ns:timeline:system:7") == 1
    });
    let mut conn = server.conn();
    assert_eq!(publish(&mut conn, "ns:timeline:access_token:70", r#"{"event":"kill","n":2}"#), 1);
    assert_eq!(node.next_system(Duration::from_secs(5)), message(token, r#"{"event":"kill","n":2}"#));
    wait_until(Duration::from_secs(2), "presence key set again", || server.ttl(presence) > 0);
    assert_eq!(server.ttl("ns:subscribed:timeline:system:7"), -2);

    // The last unlisten unsubscribes; an unknown channel is reported.
    assert!(node.unlisten_system(system).unwrap() && node.unlisten_system(token).unwrap());
    assert!(!node.unlisten_system(token).unwrap());
    wait_until(Duration::from_secs(2), "system channels unsubscribed", || {
        numsub(&server, "ns:timeline:access_token:70") == 0 && numsub(&server, "ns:timeline:system:7") == 0
    });
    assert_eq!(publish(&mut conn, "ns:timeline:access_token:70", r#"{"event":"kill"}"#), 0);
    let stats = node.stats();
    assert_eq!((stats.system_received, stats.system_dropped, stats.received), (3, 0, 0), "{stats:?}");

    // A message queued before the stop is still handed out, then Closed.
    node.listen_system(token).unwrap();
    assert!(node.wait_synced(Duration::from_secs(2)));
    assert_eq!(publish(&mut conn, "ns:timeline:access_token:70", r#"{"event":"kill"}"#), 1);
    wait_until(Duration::from_secs(2), "queued", || node.stats().system_received == 4);
    node.stop();
    assert_eq!(node.next_system(Duration::from_secs(1)), message(token, r#"{"event":"kill"}"#));
    assert_eq!(node.next_system(Duration::from_secs(1)), NextSystem::Closed);
}

/// The pattern mode receives every system channel; only listened ones reach the host.
#[test]
fn system_channels_in_the_pattern_mode() {
    if redis_server_missing() {
        return;
    }
    let server = RedisServer::start(free_port());
    let engine = Engine::default();
    let node = RedisNode::attach_with(&engine, &server.url(), short_timings()).unwrap();
    node.listen_system("timeline:system:1").unwrap();
    assert!(node.wait_synced(Duration::from_secs(5)));
    let mut conn = server.conn();
    for channel in ["timeline:system:2", "timeline:system:1"] {
        redis::cmd("PUBLISH").arg(channel).arg(r#"{"event":"kill"}"#).query::<u64>(&mut conn).unwrap();
    }
    let NextSystem::Message(m) = node.next_system(Duration::from_secs(5)) else { panic!("no system message") };
    assert_eq!(m.channel, "timeline:system:1");
    assert_eq!(node.next_system(Duration::from_millis(100)), NextSystem::Timeout);
    let stats = node.stats();
    assert_eq!((stats.system_received, stats.ignored), (1, 1), "{stats:?}");
    // Waiting threads are woken by a stop from another thread.
    let node = Arc::new(node);
    let waiter = {
        let node = Arc::clone(&node);
        std::thread::spawn(move || node.next_system(Duration::from_secs(30)))
    };
    std::thread::sleep(Duration::from_millis(100));
    node.stop();
    assert_eq!(waiter.join().unwrap(), NextSystem::Closed);
}

#[test]
fn attach_keeps_retrying_until_redis_appears() {
    if redis_server_missing() {
        return;
    }
    let port = free_port();
    let engine = Engine::default();
    let sub = engine.subscriber_from_json(b"").unwrap();
    sub.subscribe(br#"{"stream":"public:local"}"#).unwrap();
    let node = RedisNode::attach_with(&engine, &format!("redis://127.0.0.1:{port}/"), short_timings()).unwrap();
    assert!(!node.wait_subscribed(Duration::from_millis(300)));
    let server = RedisServer::start(port);
    assert!(node.wait_subscribed(Duration::from_secs(5)));
    wait_until(Duration::from_secs(2), "presence key", || server.ttl("subscribed:timeline:public:local") > 0);
    drop(node);
    assert!(RedisNode::attach(&engine, "not a url").is_err());
}

/// No Redis needed: every corpus event, sent as the channel messages that
/// `Publisher` would send, yields frames byte-identical to content mode.
#[test]
fn channel_messages_reproduce_content_mode_frames() {
    let subscriptions: &[&str] = &[
        r#"{"stream":"public"}"#,
        r#"{"stream":"public:local"}"#,
        r#"{"stream":"public:remote"}"#,
        r#"{"stream":"public:media"}"#,
        r#"{"stream":"hashtag","tag":"Test"}"#,
        r#"{"stream":"hashtag:local","tag":"TEST"}"#,
        r#"{"stream":"hashtag","tag":"piano"}"#,
        r#"{"stream":"user"}"#,
        r#"{"stream":"direct"}"#,
        r#"{"stream":"list","list":4}"#,
    ];
    let (mut checked, mut reached) = (0, 0);
    for dir in ["mastodon", "community"] {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(dir);
        let mut files: Vec<_> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let raw = std::fs::read_to_string(&file).unwrap();
            let mut event = raw.trim().to_owned();
            if dir == "mastodon" {
                event = format!("{},\"recipients\":[1],\"lists\":[4]}}", event.strip_suffix('}').unwrap());
            }
            let frames = |publish: &dyn Fn(&Engine)| -> Vec<(Vec<u8>, Vec<u8>)> {
                let engine = Engine::default();
                let sub = engine.subscriber_from_json(br#"{"account":1}"#).unwrap();
                for s in subscriptions {
                    sub.subscribe(s.as_bytes()).unwrap();
                }
                publish(&engine);
                let mut out = Vec::new();
                while let Next::Frame(f) = sub.next(Duration::ZERO) {
                    out.push((f.sse().to_vec(), f.ws().to_vec()));
                }
                out.sort();
                out
            };
            let content = frames(&|e| {
                e.publish(event.as_bytes()).unwrap();
            });
            let routed = evroute::event::parse_content(event.as_bytes()).unwrap();
            let message = channel_message(&routed, event.as_bytes());
            let channel = frames(&|e| {
                for key in routed.channels.iter().filter(|k| k.is_redis_channel()) {
                    e.publish_channel(key.to_string().as_bytes(), &message).unwrap();
                }
            });
            assert_eq!(channel, content, "{}", file.display());
            checked += 1;
            reached += !content.is_empty() as usize;
        }
    }
    assert!(checked >= 50 && reached >= 30, "{checked} corpus events, {reached} delivered");
}
