//! A deliberately naive reference router, written from SPEC.md §1–§6 and §11.
//! Publishing scans every subscriber and subscription; channels, filters and
//! frame bytes are all derived here, independently of the engine's code.

use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

use super::json::{J, Node, parse, quote};

/// Why the reference refused an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Json,
    Subscription,
    Event,
}

/// The frame one subscription receives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Expected {
    pub ws: String,
    pub sse: String,
    pub event: String,
    pub payload: Option<String>,
    pub stream: String,
}

#[derive(Clone, Debug, Default)]
pub struct Filters {
    pub languages: Option<BTreeSet<String>>,
    pub blocked_accounts: BTreeSet<String>,
    pub muted_accounts: BTreeSet<String>,
    pub blocked_domains: BTreeSet<String>,
    pub blocked_by_accounts: BTreeSet<String>,
    /// `Some` for a filter-annotated viewer.
    pub keyword_filters: Option<Vec<KeywordFilter>>,
}

/// One keyword filter, with the regular expression Mastodon builds for it.
#[derive(Clone, Debug)]
pub struct KeywordFilter {
    /// The `filter` object of a result, as JSON.
    pub json: String,
    pub expires_at: Option<String>,
    pub regex: Option<regex::Regex>,
}

impl KeywordFilter {
    fn parse(f: &Node) -> KeywordFilter {
        let id = f.get("id").and_then(Node::id).expect("reference: filter id");
        let title = f.get("title").and_then(Node::str).unwrap_or_default();
        let context: Vec<String> =
            f.get("context").map(Node::items).unwrap_or_default().iter().map(|c| quote(c.str().unwrap())).collect();
        let expires_at = f.get("expires_at").and_then(Node::str).map(str::to_string);
        let action = f.get("filter_action").and_then(Node::str).unwrap_or("warn");
        let json = format!(
            "{{\"id\":{},\"title\":{},\"context\":[{}],\"expires_at\":{},\"filter_action\":{}}}",
            quote(&id),
            quote(title),
            context.join(","),
            expires_at.as_deref().map_or("null".to_string(), quote),
            quote(action)
        );
        // streaming/index.js: escape, `\b` on a side that is a word
        // character, join with `|`, flag `i`. `\b` and `\w` are ASCII there.
        let alternatives: Vec<String> = f
            .get("keywords")
            .map(Node::items)
            .unwrap_or_default()
            .iter()
            .map(|k| {
                let keyword = k.get("keyword").and_then(Node::str).unwrap();
                let mut expr = String::new();
                for c in keyword.chars() {
                    if ".*+?^${}()|[]\\".contains(c) {
                        expr.push('\\');
                    }
                    expr.push(c);
                }
                let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                if k.get("whole_word").is_some_and(|w| matches!(w.value, J::Bool(true))) {
                    if word(expr.chars().next()) {
                        expr = format!("(?-u:\\b){expr}");
                    }
                    if word(expr.chars().next_back()) {
                        expr = format!("{expr}(?-u:\\b)");
                    }
                }
                expr
            })
            .collect();
        let regex = (!alternatives.is_empty()).then(|| {
            regex::RegexBuilder::new(&alternatives.join("|")).case_insensitive(true).build().expect("reference regex")
        });
        KeywordFilter { json, expires_at, regex }
    }

    /// `expires_at` values in the tests are whole ISO strings; they compare
    /// as text.
    fn expired(&self, now_iso: &str) -> bool {
        self.expires_at.as_deref().is_some_and(|t| t < now_iso)
    }
}

/// The text content of the little HTML the tests generate: tags removed,
/// five entities and decimal references decoded.
fn text_content(html: &str) -> String {
    static TAG: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"<[^>]*>").unwrap());
    static ENTITY: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"&(amp|lt|gt|quot|#39|#[0-9]+);").unwrap());
    let stripped = TAG.replace_all(html, "");
    ENTITY
        .replace_all(&stripped, |c: &regex::Captures| match &c[1] {
            "amp" => "&".to_string(),
            "lt" => "<".to_string(),
            "gt" => ">".to_string(),
            "quot" => "\"".to_string(),
            n => char::from_u32(n[1..].parse().unwrap()).unwrap().to_string(),
        })
        .into_owned()
}

/// The `filtered` value for a viewer's filters and a status (§11).
fn filtered(filters: &[KeywordFilter], s: &StatusFacts) -> String {
    static BR: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"<br\s*/?>").unwrap());
    let html = BR.replace_all(&s.searchable, "\n").replace("</p><p>", "\n\n");
    let text = text_content(&html);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Years the tests use are 2020 (past) and 2099 (future): the year suffices.
    let now_iso = format!("{}-", 1970 + now / 31_557_600);
    let mut results = Vec::new();
    for f in filters {
        if f.expired(&now_iso) || text.is_empty() {
            continue;
        }
        if let Some(m) = f.regex.as_ref().and_then(|r| r.find(&text)) {
            results.push(format!(
                "{{\"filter\":{},\"keyword_matches\":[{}],\"status_matches\":null}}",
                f.json,
                quote(m.as_str())
            ));
        }
    }
    format!("[{}]", results.join(","))
}

#[derive(Clone, Debug)]
pub struct RefSubscription {
    /// Unique per creation: a re-created subscription is a new one.
    pub uid: u64,
    pub stream: String,
    pub array: String,
    pub channels: BTreeSet<String>,
    pub events: Option<Vec<String>>,
    /// `Some(true)`: local statuses only; `Some(false)`: remote only.
    pub origin: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct RefSubscriber {
    pub account: Option<String>,
    pub filters: Filters,
    pub subs: Vec<RefSubscription>,
}

/// What the viewer filters of §5 look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusFacts {
    pub id: Option<String>,
    pub author: String,
    pub acct: String,
    pub language: Option<String>,
    pub mentions: Vec<String>,
    pub reblog_author: Option<String>,
    /// §11's fields joined, still HTML.
    pub searchable: String,
    /// The payload object has a `filtered` key already.
    pub has_filtered: bool,
}

/// The reference's own reading of a content-mode event (§3b).
#[derive(Clone, Debug, Default)]
pub struct Derived {
    pub name: String,
    pub payload: Option<String>,
    pub channels: BTreeSet<String>,
    /// Announcement-like events without recipients: every `user` subscription.
    pub all_users: bool,
    pub status: Option<StatusFacts>,
    pub remember: Option<String>,
    pub deletes: Option<String>,
    /// Community `status.*` events count as local.
    pub community_status: bool,
}

/// Hashtag normalization of §2 for the inputs the tests use. Unknown
/// non-ASCII characters panic: the table must be extended knowingly.
pub fn norm_tag(tag: &str) -> String {
    let mut out = String::new();
    for c in tag.chars() {
        let folded: &str = match c {
            'a'..='z' | '0'..='9' | '_' => {
                out.push(c);
                continue;
            }
            'A'..='Z' => {
                out.push(c.to_ascii_lowercase());
                continue;
            }
            c if c.is_ascii() => "",
            // Fullwidth forms are NFKC-compatible with ASCII.
            '\u{FF21}'..='\u{FF3A}' => {
                out.push((b'a' + (c as u32 - 0xFF21) as u8) as char);
                continue;
            }
            '\u{FF41}'..='\u{FF5A}' => {
                out.push((b'a' + (c as u32 - 0xFF41) as u8) as char);
                continue;
            }
            '\u{FF10}'..='\u{FF19}' => {
                out.push((b'0' + (c as u32 - 0xFF10) as u8) as char);
                continue;
            }
            'é' | 'É' | 'è' | 'È' | 'ê' | 'ë' => "e",
            'à' | 'á' | 'â' | 'ä' | 'À' | 'Á' | 'Ä' => "a",
            'ö' | 'ó' | 'Ö' => "o",
            'ü' | 'ú' | 'Ü' => "u",
            'ç' | 'Ç' => "c",
            'ñ' | 'Ñ' => "n",
            // Combining acute: NFKC composes it with the letter before, which
            // the folder then strips back to that letter.
            '\u{301}' => "",
            // Mastodon's folder maps one character to one: 'ß' is kept.
            'ß' | '·' | '\u{200C}' => {
                out.push(c);
                continue;
            }
            '\u{3040}'..='\u{30FF}' | '\u{4E00}'..='\u{9FFF}' => {
                out.push(c);
                continue;
            }
            '！' | '＃' | '\u{3000}' | '、' | '。' => "",
            other => panic!("reference norm_tag does not know {other:?} (U+{:04X})", other as u32),
        };
        out.push_str(folded);
    }
    out
}

/// Mastodon's `isTruthy` as §2 states it.
fn truthy(node: Option<&Node>) -> bool {
    let Some(node) = node else { return false };
    match &node.value {
        J::Bool(b) => *b,
        J::Num(n) => n != "0",
        J::Str(s) => !matches!(s.as_str(), "0" | "f" | "F" | "false" | "FALSE" | "off" | "OFF"),
        _ => true,
    }
}

fn id_list(node: Option<&Node>) -> Vec<String> {
    node.map(|n| n.items().iter().filter_map(Node::id).collect()).unwrap_or_default()
}

fn id_set(node: Option<&Node>) -> BTreeSet<String> {
    id_list(node).into_iter().collect()
}

pub fn parse_filters(doc: &Node) -> Filters {
    Filters {
        languages: doc
            .get("languages")
            .filter(|n| !n.is_null())
            .map(|n| n.items().iter().filter_map(|l| l.str().map(str::to_string)).collect()),
        blocked_accounts: id_set(doc.get("blocked_accounts")),
        muted_accounts: id_set(doc.get("muted_accounts")),
        blocked_domains: n_strs(doc.get("blocked_domains")),
        blocked_by_accounts: id_set(doc.get("blocked_by_accounts")),
        keyword_filters: doc
            .get("keyword_filters")
            .filter(|n| !n.is_null())
            .map(|n| n.items().iter().map(KeywordFilter::parse).collect()),
    }
}

fn n_strs(node: Option<&Node>) -> BTreeSet<String> {
    node.map(|n| n.items().iter().filter_map(|s| s.str().map(str::to_string)).collect()).unwrap_or_default()
}

impl Filters {
    /// §5: true when the frame may be delivered.
    pub fn allows(&self, s: &StatusFacts) -> bool {
        if let Some(langs) = &self.languages {
            match &s.language {
                Some(l) if langs.contains(l) => {}
                _ => return false,
            }
        }
        let hidden = |id: &String| self.blocked_accounts.contains(id) || self.muted_accounts.contains(id);
        if hidden(&s.author)
            || self.blocked_by_accounts.contains(&s.author)
            || s.mentions.iter().any(hidden)
            || s.reblog_author.as_ref().is_some_and(hidden)
        {
            return false;
        }
        if let Some((_, domain)) = s.acct.split_once('@')
            && self.blocked_domains.contains(domain)
        {
            return false;
        }
        true
    }
}

/// Parses a subscription for a subscriber with `account`:
/// (stream name, stream array JSON, channels, events filter, origin).
#[allow(clippy::type_complexity)]
pub fn parse_subscription(
    bytes: &[u8],
    account: Option<&str>,
) -> Result<(String, String, BTreeSet<String>, Option<Vec<String>>, Option<bool>), Refusal> {
    let doc = parse(bytes).map_err(|_| Refusal::Json)?;
    if !doc.is_object() {
        return Err(Refusal::Subscription);
    }
    let stream = doc.get("stream").and_then(Node::str).ok_or(Refusal::Subscription)?;
    let media = truthy(doc.get("only_media"));
    let events = match doc.get("events") {
        None => None,
        Some(n) => Some(
            n.items()
                .iter()
                .map(|e| e.str().map(str::to_string).ok_or(Refusal::Subscription))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let one = |c: String| BTreeSet::from([c]);
    let need_account = || account.map(str::to_string).ok_or(Refusal::Subscription);
    let (name, array, channels) = match stream {
        "public" | "public:local" | "public:remote" | "public:media" | "public:local:media" | "public:remote:media" => {
            let name =
                if media && !stream.ends_with(":media") { format!("{stream}:media") } else { stream.to_string() };
            (name.clone(), format!("[{}]", quote(&name)), one(format!("timeline:{name}")))
        }
        "hashtag" | "hashtag:local" => {
            let tag = doc.get("tag").and_then(Node::str).ok_or(Refusal::Subscription)?;
            let suffix = if stream == "hashtag:local" { ":local" } else { "" };
            let array = format!("[{},{}]", quote(stream), quote(tag));
            (stream.to_string(), array, one(format!("timeline:hashtag:{}{suffix}", norm_tag(tag))))
        }
        "list" => {
            let list = doc.get("list").and_then(Node::id).ok_or(Refusal::Subscription)?;
            (stream.to_string(), format!("[\"list\",{}]", quote(&list)), one(format!("timeline:list:{list}")))
        }
        "user" => {
            let a = need_account()?;
            let channels = BTreeSet::from([format!("timeline:{a}"), format!("timeline:{a}:notifications")]);
            (stream.to_string(), "[\"user\"]".to_string(), channels)
        }
        "user:notification" => {
            let a = need_account()?;
            (stream.to_string(), "[\"user:notification\"]".to_string(), one(format!("timeline:{a}:notifications")))
        }
        "direct" => {
            let a = need_account()?;
            (stream.to_string(), "[\"direct\"]".to_string(), one(format!("timeline:direct:{a}")))
        }
        _ => return Err(Refusal::Subscription),
    };
    let origin = match doc.get("origin").and_then(Node::str) {
        None => None,
        Some(_) if !viewer_filtered(&name) => return Err(Refusal::Subscription),
        Some("local") => Some(true),
        Some("remote") => Some(false),
        Some(_) => return Err(Refusal::Subscription),
    };
    Ok((name, array, channels, events, origin))
}

fn status_facts(p: &Node) -> Result<StatusFacts, Refusal> {
    let account = p.get("account").filter(|a| a.is_object()).ok_or(Refusal::Event)?;
    Ok(StatusFacts {
        id: p.get("id").and_then(Node::id),
        author: account.get("id").and_then(Node::id).unwrap_or_default(),
        acct: account.get("acct").and_then(Node::str).unwrap_or_default().to_string(),
        language: p.get("language").and_then(Node::str).map(str::to_string),
        mentions: p
            .get("mentions")
            .map(|m| m.items().iter().filter_map(|x| x.get("id").and_then(Node::id)).collect())
            .unwrap_or_default(),
        reblog_author: p.get("reblog").and_then(|r| r.get("account")).and_then(|a| a.get("id")).and_then(Node::id),
        searchable: {
            let s = |n: Option<&Node>| n.and_then(Node::str).unwrap_or_default().to_string();
            let mut parts = vec![s(p.get("spoiler_text")), s(p.get("content"))];
            let options = p.get("poll").and_then(|x| x.get("options")).map(Node::items).unwrap_or_default();
            parts.extend(options.iter().map(|o| s(o.get("title"))));
            let media = p.get("media_attachments").map(Node::items).unwrap_or_default();
            parts.extend(media.iter().map(|m| s(m.get("description"))));
            parts.join("\n\n")
        },
        has_filtered: p.get("filtered").is_some(),
    })
}

fn add_public(channels: &mut BTreeSet<String>, local: bool, media: bool) {
    let scope = if local { "local" } else { "remote" };
    channels.insert("timeline:public".into());
    channels.insert(format!("timeline:public:{scope}"));
    if media {
        channels.insert("timeline:public:media".into());
        channels.insert(format!("timeline:public:{scope}:media"));
    }
}

fn payload_string(bytes: &[u8], node: Option<&Node>) -> Option<String> {
    let node = node?;
    match &node.value {
        J::Str(s) => Some(s.clone()),
        _ => Some(String::from_utf8(bytes[node.start..node.end].to_vec()).unwrap()),
    }
}

/// §3b: the channels of a content-mode event.
pub fn derive(bytes: &[u8]) -> Result<Derived, Refusal> {
    let doc = parse(bytes).map_err(|_| Refusal::Json)?;
    if !doc.is_object() {
        return Err(Refusal::Event);
    }
    let mut d = Derived::default();
    if let Some(event) = doc.get("event") {
        d.name = event.str().ok_or(Refusal::Event)?.to_string();
        let payload = doc.get("payload");
        d.payload = payload_string(bytes, payload);
        let recipients = id_list(doc.get("recipients"));
        let lists = id_list(doc.get("lists"));
        let to_users = |d: &mut Derived| {
            for r in &recipients {
                d.channels.insert(format!("timeline:{r}"));
            }
        };
        let to_lists = |d: &mut Derived| {
            for l in &lists {
                d.channels.insert(format!("timeline:list:{l}"));
            }
        };
        match d.name.as_str() {
            "update" | "status.update" => {
                let p = payload.ok_or(Refusal::Event)?;
                let facts = status_facts(p)?;
                let local = !facts.acct.contains('@');
                let public = p.get("visibility").and_then(Node::str) == Some("public");
                let reblog = p.get("reblog").is_some_and(|r| !r.is_null());
                if public && !reblog {
                    for tag in p.get("tags").map(Node::items).unwrap_or_default() {
                        let n = norm_tag(tag.get("name").and_then(Node::str).unwrap_or_default());
                        d.channels.insert(format!("timeline:hashtag:{n}"));
                        if local {
                            d.channels.insert(format!("timeline:hashtag:{n}:local"));
                        }
                    }
                    let reply_to = p.get("in_reply_to_account_id").and_then(Node::id);
                    if reply_to.is_none_or(|r| r == facts.author) {
                        let media = !p.get("media_attachments").map(Node::items).unwrap_or_default().is_empty();
                        add_public(&mut d.channels, local, media);
                    }
                }
                to_users(&mut d);
                to_lists(&mut d);
                d.remember = facts.id.clone();
                d.status = Some(facts);
            }
            "notification" | "notifications_merged" => {
                for r in &recipients {
                    d.channels.insert(format!("timeline:{r}:notifications"));
                }
            }
            "conversation" => {
                for r in &recipients {
                    d.channels.insert(format!("timeline:direct:{r}"));
                }
            }
            "announcement" | "announcement.reaction" | "announcement.delete" | "filters_changed" => {
                if doc.get("recipients").is_none() {
                    d.all_users = true;
                } else {
                    to_users(&mut d);
                }
            }
            "delete" => {
                d.deletes = payload.and_then(Node::id);
                to_users(&mut d);
                to_lists(&mut d);
            }
            _ => {
                to_users(&mut d);
                to_lists(&mut d);
            }
        }
    } else if let Some(kind) = doc.get("type") {
        d.name = kind.str().ok_or(Refusal::Event)?.to_string();
        d.payload = Some(String::from_utf8(bytes[doc.start..doc.end].to_vec()).unwrap());
        let data = doc.get("data");
        if d.name.starts_with("notification.") {
            for r in id_list(data.and_then(|x| x.get("recipients"))) {
                d.channels.insert(format!("timeline:{r}:notifications"));
            }
        } else if d.name.starts_with("status.") {
            d.community_status = true;
            let own =
                matches!(d.name.as_str(), "status.created" | "status.updated" | "status.deleted" | "status.restored");
            let status = if own { data } else { data.and_then(|x| x.get("status")) };
            let media = !status.and_then(|s| s.get("medias")).map(Node::items).unwrap_or_default().is_empty();
            add_public(&mut d.channels, true, media);
            for tag in status.and_then(|s| s.get("tags")).map(Node::items).unwrap_or_default() {
                let name = tag.str().or_else(|| tag.get("name").and_then(Node::str)).unwrap_or_default();
                let n = norm_tag(name);
                d.channels.insert(format!("timeline:hashtag:{n}"));
                d.channels.insert(format!("timeline:hashtag:{n}:local"));
            }
        }
    } else {
        return Err(Refusal::Event);
    }
    Ok(d)
}

/// The payload a subscription receives: with `filtered` appended for a
/// filter-annotated viewer on a public or hashtag stream (§11).
fn annotated(
    subscriber: &RefSubscriber,
    s: &RefSubscription,
    status: Option<&StatusFacts>,
    payload: Option<&str>,
) -> Option<String> {
    let payload = payload?;
    match (status, &subscriber.filters.keyword_filters) {
        (Some(facts), Some(filters)) if viewer_filtered(&s.stream) && !facts.has_filtered => {
            let close = payload.rfind('}').expect("status payload is an object");
            let open = payload.find('{').unwrap();
            let comma = if payload[open + 1..close].trim().is_empty() { "" } else { "," };
            Some(format!("{}{comma}\"filtered\":{}}}", &payload[..close], filtered(filters, facts)))
        }
        _ => Some(payload.to_string()),
    }
}

/// §4 frame bytes.
pub fn frame(array: &str, event: &str, payload: Option<&str>) -> Expected {
    let mut ws = format!("{{\"stream\":{array},\"event\":{}", quote(event));
    let mut sse = format!("event: {event}\n");
    match payload {
        Some(p) => {
            ws.push_str(&format!(",\"payload\":{}", quote(p)));
            for line in p.replace("\r\n", "\n").replace('\r', "\n").split('\n') {
                sse.push_str(&format!("data: {line}\n"));
            }
        }
        None => sse.push_str("data: undefined\n"),
    }
    ws.push('}');
    sse.push('\n');
    Expected { ws, sse, event: event.to_string(), payload: payload.map(str::to_string), stream: array.to_string() }
}

fn event_allowed(events: &Option<Vec<String>>, name: &str) -> bool {
    match events {
        None => true,
        Some(list) => list.iter().any(|e| match e.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('.') => name.starts_with(prefix),
            _ => e == name,
        }),
    }
}

fn viewer_filtered(stream: &str) -> bool {
    stream.starts_with("public") || stream.starts_with("hashtag")
}

/// The naive router: subscribers in creation order (`None` once dropped).
pub struct Reference {
    pub subscribers: Vec<Option<RefSubscriber>>,
    next_uid: u64,
    /// status id → (time of its latest update, subscriptions that got it)
    memory: HashMap<String, (u64, BTreeSet<u64>)>,
    clock: u64,
    memory_cap: usize,
}

impl Reference {
    pub fn new(memory_cap: usize) -> Reference {
        Reference { subscribers: Vec::new(), next_uid: 0, memory: HashMap::new(), clock: 0, memory_cap }
    }

    /// Adds a subscriber from the §7 subscriber JSON; returns its index.
    pub fn add_subscriber(&mut self, json: &[u8]) -> usize {
        let doc = parse(json).expect("reference: subscriber JSON");
        self.subscribers.push(Some(RefSubscriber {
            account: doc.get("account").and_then(Node::id),
            filters: parse_filters(&doc),
            subs: Vec::new(),
        }));
        self.subscribers.len() - 1
    }

    pub fn remove_subscriber(&mut self, i: usize) {
        self.subscribers[i] = None;
    }

    pub fn update(&mut self, i: usize, json: &[u8]) {
        let doc = parse(json).expect("reference: filters JSON");
        self.subscribers[i].as_mut().unwrap().filters = parse_filters(&doc);
    }

    pub fn subscribe(&mut self, i: usize, json: &[u8]) -> Result<bool, Refusal> {
        let sub = self.subscribers[i].as_mut().unwrap();
        let (stream, array, channels, events, origin) = parse_subscription(json, sub.account.as_deref())?;
        if sub.subs.iter().any(|s| s.channels == channels) {
            return Ok(false);
        }
        self.next_uid += 1;
        sub.subs.push(RefSubscription { uid: self.next_uid, stream, array, channels, events, origin });
        Ok(true)
    }

    pub fn unsubscribe(&mut self, i: usize, json: &[u8]) -> Result<bool, Refusal> {
        let sub = self.subscribers[i].as_mut().unwrap();
        let (_, _, channels, _, _) = parse_subscription(json, sub.account.as_deref())?;
        let before = sub.subs.len();
        sub.subs.retain(|s| s.channels != channels);
        Ok(sub.subs.len() != before)
    }

    /// Content mode; returns (subscriber index, frame) for every delivery.
    pub fn publish(&mut self, bytes: &[u8]) -> Result<Vec<(usize, Expected)>, Refusal> {
        let d = derive(bytes)?;
        let remembered = d.deletes.as_ref().and_then(|id| self.memory.remove(id)).map(|(_, s)| s).unwrap_or_default();
        let mut out = Vec::new();
        let mut receivers = BTreeSet::new();
        for (i, subscriber) in self.subscribers.iter().enumerate() {
            let Some(subscriber) = subscriber else { continue };
            for s in &subscriber.subs {
                let hit = !s.channels.is_disjoint(&d.channels)
                    || (d.all_users && s.stream == "user")
                    || remembered.contains(&s.uid);
                if !hit || !event_allowed(&s.events, &d.name) {
                    continue;
                }
                let local = match &d.status {
                    Some(facts) => Some(!facts.acct.contains('@')),
                    None => d.community_status.then_some(true),
                };
                if s.origin.is_some_and(|o| local.is_some_and(|l| l != o)) {
                    continue;
                }
                if let Some(facts) = &d.status
                    && viewer_filtered(&s.stream)
                    && !subscriber.filters.allows(facts)
                {
                    continue;
                }
                receivers.insert(s.uid);
                let payload = annotated(subscriber, s, d.status.as_ref(), d.payload.as_deref());
                out.push((i, frame(&s.array, &d.name, payload.as_deref())));
            }
        }
        if let Some(id) = d.remember {
            self.clock += 1;
            let entry = self.memory.entry(id).or_default();
            entry.0 = self.clock;
            entry.1.extend(receivers);
            while self.memory.len() > self.memory_cap {
                let oldest = self.memory.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| k.clone()).unwrap();
                self.memory.remove(&oldest);
            }
        }
        Ok(out)
    }

    /// Channel mode (§3a): `channel` must already be a normalized name.
    pub fn publish_channel(&mut self, channel: &str, message: &[u8]) -> Result<Vec<(usize, Expected)>, Refusal> {
        let doc = parse(message).map_err(|_| Refusal::Json)?;
        let name = doc.get("event").and_then(Node::str).ok_or(Refusal::Event)?.to_string();
        let payload = payload_string(message, doc.get("payload"));
        let facts = match name.as_str() {
            "update" | "status.update" => Some(status_facts(doc.get("payload").ok_or(Refusal::Event)?)?),
            _ => None,
        };
        let mut out = Vec::new();
        for (i, subscriber) in self.subscribers.iter().enumerate() {
            let Some(subscriber) = subscriber else { continue };
            for s in &subscriber.subs {
                if !s.channels.contains(channel) || !event_allowed(&s.events, &name) {
                    continue;
                }
                if let (Some(o), Some(facts)) = (s.origin, &facts)
                    && o == facts.acct.contains('@')
                {
                    continue;
                }
                if let Some(facts) = &facts
                    && viewer_filtered(&s.stream)
                    && !subscriber.filters.allows(facts)
                {
                    continue;
                }
                let payload = annotated(subscriber, s, facts.as_ref(), payload.as_deref());
                out.push((i, frame(&s.array, &name, payload.as_deref())));
            }
        }
        Ok(out)
    }
}
