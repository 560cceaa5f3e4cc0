//! The corpus files as content-mode events, and an audience of subscribers
//! that listens to every channel they reach, run against both the engine and
//! the reference router.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use evroute::{Engine, EngineConfig, ErrorKind, PublishStats, Subscriber};

use super::drain;
use super::reference::{Expected, Reference, Refusal, derive};

pub fn corpus(dir: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(dir);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// The Mastodon corpus carries no recipients or lists; this adds recipients,
/// and lists for the events whose rules in §3b mention lists (the spec is
/// silent on lists for notifications, conversations and announcements).
pub fn with_targets(bytes: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap().trim_end();
    let body = text.strip_suffix('}').expect("corpus event is an object");
    let lists_unspecified = ["notification", "conversation", "announcement", "filters_changed"]
        .iter()
        .any(|e| text.starts_with(&format!("{{\"event\": \"{e}")));
    let lists = if lists_unspecified { "" } else { ", \"lists\": [9]" };
    format!("{body}, \"recipients\": [\"42\", 7]{lists}}}").into_bytes()
}

/// Every content-mode input the corpus gives, named for failure messages.
pub fn events() -> Vec<(String, Vec<u8>)> {
    let mastodon = corpus("mastodon");
    let community = corpus("community");
    assert!(mastodon.len() >= 18 && community.len() >= 38, "corpus missing: {} + {}", mastodon.len(), community.len());
    let mut out = Vec::new();
    for (name, bytes) in mastodon {
        out.push((format!("mastodon/{name}"), bytes.clone()));
        out.push((format!("mastodon/{name} +recipients,lists"), with_targets(&bytes)));
    }
    for (name, bytes) in community {
        out.push((format!("community/{name}"), bytes));
    }
    out
}

/// A subscriber that listens to `channel`, as (subscriber JSON, subscription JSON).
pub fn listener_for(channel: &str) -> (String, String) {
    let rest = channel.strip_prefix("timeline:").unwrap();
    if rest.starts_with("public") {
        return ("{}".into(), format!("{{\"stream\":\"{rest}\"}}"));
    }
    if let Some(tag) = rest.strip_prefix("hashtag:") {
        return match tag.strip_suffix(":local") {
            Some(t) => ("{}".into(), format!("{{\"stream\":\"hashtag:local\",\"tag\":\"{}\"}}", t.to_uppercase())),
            None => ("{}".into(), format!("{{\"stream\":\"hashtag\",\"tag\":\"#{tag}\"}}")),
        };
    }
    if let Some(list) = rest.strip_prefix("list:") {
        return ("{}".into(), format!("{{\"stream\":\"list\",\"list\":{list}}}"));
    }
    if let Some(id) = rest.strip_prefix("direct:") {
        return (format!("{{\"account\":\"{id}\"}}"), "{\"stream\":\"direct\"}".into());
    }
    if let Some(id) = rest.strip_suffix(":notifications") {
        return (format!("{{\"account\":{id}}}"), "{\"stream\":\"user:notification\"}".into());
    }
    (format!("{{\"account\":\"{rest}\"}}"), "{\"stream\":\"user\"}".into())
}

/// One subscriber per channel the events reach, plus `extra` (subscriber
/// JSON, subscription JSON) pairs, in the engine and in the reference.
pub struct Audience {
    pub engine: Engine,
    pub reference: Reference,
    pub subs: Vec<Subscriber>,
    pub plan: Vec<(String, String)>,
}

impl Audience {
    pub fn new(events: &[(String, Vec<u8>)], extra: &[(&str, &str)]) -> Audience {
        let mut channels = BTreeSet::new();
        for (_, bytes) in events {
            channels.extend(derive(bytes).unwrap().channels);
        }
        let mut plan: Vec<(String, String)> = channels.iter().map(|c| listener_for(c)).collect();
        plan.extend(extra.iter().map(|(a, b)| (a.to_string(), b.to_string())));
        let engine = Engine::new(EngineConfig { queue_capacity: 1 << 16, ..EngineConfig::default() });
        let mut reference = Reference::new(65_536);
        let mut subs: Vec<Subscriber> = Vec::new();
        for (subscriber, subscription) in &plan {
            let sub = engine.subscriber_from_json(subscriber.as_bytes()).unwrap();
            let i = reference.add_subscriber(subscriber.as_bytes());
            assert_eq!(i, subs.len());
            assert_eq!(
                sub.subscribe(subscription.as_bytes()).map_err(|e| e.kind()),
                reference.subscribe(i, subscription.as_bytes()).map_err(|_| ErrorKind::InvalidSubscription),
                "subscribe {subscription}"
            );
            subs.push(sub);
        }
        Audience { engine, reference, subs, plan }
    }

    /// Checks one publish against the reference's: the same number of
    /// matches and, for every subscriber, the same frames. Returns the
    /// number of frames.
    pub fn compare(
        &self,
        name: &str,
        got: evroute::Result<PublishStats>,
        want: Result<Vec<(usize, Expected)>, Refusal>,
    ) -> usize {
        let stats = got.unwrap_or_else(|e| panic!("{name}: engine refused: {e:?}"));
        let want = want.unwrap_or_else(|r| panic!("{name}: reference refused: {r:?}"));
        assert_eq!(stats.matched as usize, want.len(), "{name}: matched");
        assert_eq!(stats.delivered as usize, want.len(), "{name}: delivered");
        let total = want.len();
        let mut by_subscriber: BTreeMap<usize, Vec<Expected>> = BTreeMap::new();
        for (i, frame) in want {
            by_subscriber.entry(i).or_default().push(frame);
        }
        for (i, sub) in self.subs.iter().enumerate() {
            let mut got = drain(sub);
            let mut want = by_subscriber.remove(&i).unwrap_or_default();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{name}: frames of subscriber {:?}", self.plan[i]);
        }
        total
    }

    /// Publishes `bytes` in content mode to both and compares.
    pub fn publish(&mut self, name: &str, bytes: &[u8]) -> usize {
        let got = self.engine.publish(bytes);
        let want = self.reference.publish(bytes);
        self.compare(name, got, want)
    }
}
