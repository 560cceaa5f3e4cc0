//! Event parsing (SPEC §3): bytes in, routing keys out. This stage decides
//! which channels an event goes to and extracts what viewer filters need; it
//! never touches subscribers or queues.

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::channel::{ChannelKey, normalize_tag};
use crate::error::{Error, ErrorKind, Result};
use crate::filter::StatusKeys;
use crate::json::{Json, Parser, Scan, in_input, repeated_key_error};

/// Everything the engine needs to deliver one event. Its text borrows the
/// event's bytes wherever they hold it as is (the payload, the name, ids
/// without escapes): extraction copies nothing it can point to.
/// [`RoutedEvent::into_owned`] makes one that outlives the bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutedEvent<'a> {
    pub name: Cow<'a, str>,
    /// The payload string of §4; `None` when the event has no payload.
    pub payload: Option<Cow<'a, str>>,
    /// Index keys the event goes to, without duplicates.
    pub channels: SmallVec<[ChannelKey; 8]>,
    /// Present for `update` and `status.update`: what viewer filters check.
    pub status: Option<StatusKeys<'a>>,
    /// A content-mode status to remember for later deletes.
    pub remember: Option<Cow<'a, str>>,
    /// A content-mode `delete`: the status id whose receivers it also reaches.
    pub deletes: Option<Cow<'a, str>>,
    /// For statuses: whether the status is local (subscription `origin`).
    pub local: Option<bool>,
    /// The message's `queued_at` (ms since the Unix epoch), which Rails
    /// sets when it publishes; hosts measure delivery latency from it.
    pub queued_at: Option<u64>,
}

impl RoutedEvent<'_> {
    fn add(&mut self, key: ChannelKey) {
        if !self.channels.contains(&key) {
            self.channels.push(key);
        }
    }

    /// The same event, owning its text.
    pub fn into_owned(self) -> RoutedEvent<'static> {
        let owned = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        RoutedEvent {
            name: owned(self.name),
            payload: self.payload.map(owned),
            channels: self.channels,
            status: self.status.map(StatusKeys::into_owned),
            remember: self.remember.map(owned),
            deletes: self.deletes.map(owned),
            local: self.local,
            queued_at: self.queued_at,
        }
    }
}

/// Routing facts of a Mastodon Status.
struct StatusFacts<'a> {
    keys: StatusKeys<'a>,
    id: Option<Cow<'a, str>>,
    public: bool,
    local: bool,
    media: bool,
    reply_to_other: bool,
    tags: TagSet<'a>,
}

/// A status's normalized tags, without duplicates.
type TagSet<'a> = SmallVec<[Cow<'a, str>; 4]>;

/// `value`, refused if it is an object with a repeated key. Every object
/// routing reads goes through here: the frame carries the payload's bytes,
/// which a client parses taking the last of two equal keys, while a lookup
/// takes the first, so a repeated key would route (and filter) on one value
/// and deliver another. `place` names the object in the error.
fn checked<'d, J: Json<'d>>(value: J, place: &str) -> Result<J> {
    if let Some(key) = value.repeated_key() {
        return Err(repeated_key_error(&key, place));
    }
    Ok(value)
}

/// The member `key` of `object`, checked as above.
fn checked_get<'d, J: Json<'d>>(object: J, key: &str, place: &str) -> Result<Option<J>> {
    object.get(key).map(|v| checked(v, place)).transpose()
}

fn is_status_event(name: &str) -> bool {
    name == "update" || name == "status.update"
}

fn event_name<'d, J: Json<'d>>(value: Option<J>, key: &str) -> Result<Cow<'d, str>> {
    let value = value.ok_or_else(|| Error::event(format!("missing {key:?}")))?;
    let name = value.string().ok_or_else(|| Error::event(format!("{key:?} must be a string")))?;
    if name.is_empty() {
        return Err(Error::event(format!("{key:?} must not be empty")));
    }
    if name.contains(['\r', '\n']) {
        return Err(Error::event(format!("{key:?} must not contain a line break")));
    }
    Ok(name)
}

/// The members of a Mastodon message routing reads, picked out in one pass
/// (its keys are unique: checked before).
struct Envelope<J> {
    event: Option<J>,
    payload: Option<J>,
    recipients: Option<J>,
    lists: Option<J>,
    queued_at: Option<J>,
}

impl<'d, J: Json<'d>> Envelope<J> {
    fn of(doc: J) -> Envelope<J> {
        let mut e = Envelope { event: None, payload: None, recipients: None, lists: None, queued_at: None };
        for (key, value) in doc.members() {
            let slot = match &*key {
                "event" => &mut e.event,
                "payload" => &mut e.payload,
                "recipients" => &mut e.recipients,
                "lists" => &mut e.lists,
                "queued_at" => &mut e.queued_at,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        e
    }
}

/// The payload string: a string payload's text, otherwise the payload's
/// original JSON bytes, passed through. `doc` is the message.
fn payload_text<'a, 'd, J: Json<'d>>(doc: J, payload: Option<J>, input: &'a [u8]) -> Option<Cow<'a, str>> {
    let value = payload?;
    if let Some(s) = value.string() {
        return Some(in_input(input, s));
    }
    let bytes = &input[doc.raw_member("payload", value, input)?];
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    // SAFETY: the parser checked that the input is UTF-8, and a value starts
    // and ends next to ASCII delimiters.
    Some(Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) }))
}

/// A Mastodon message's `queued_at` (ms): a non-negative integer, or one in
/// a string as ids may be. It only feeds a metric, so any other value is
/// ignored rather than losing the event over it.
fn queued_at<'d, J: Json<'d>>(value: Option<J>) -> Option<u64> {
    value?.id().ok()?.parse().ok()
}

/// An optional id: absent and `null` are `None`.
fn optional_id<'a, 'd, J: Json<'d>>(input: &'a [u8], value: Option<J>, what: &str) -> Result<Option<Cow<'a, str>>> {
    match value {
        Some(v) if !v.is_null() => {
            v.id().map(|id| Some(in_input(input, id))).map_err(|e| Error::event(format!("{what}: {e}")))
        }
        _ => Ok(None),
    }
}

/// An optional array of ids (`recipients`, `lists`), deduplicated in
/// first-seen order.
fn id_list<'d, J: Json<'d>>(value: Option<J>, what: &str) -> Result<Vec<Box<str>>> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let items = value.items().ok_or_else(|| Error::event(format!("{what} must be an array of ids")))?;
    let mut out: Vec<Box<str>> = Vec::new();
    for item in items {
        let id = item.id().map_err(|e| Error::event(format!("{what}: {e}")))?;
        if !out.iter().any(|o| **o == *id) {
            out.push(id.into());
        }
    }
    Ok(out)
}

fn non_empty_array<'d, J: Json<'d>>(value: J) -> bool {
    value.items().is_some_and(|mut a| a.next().is_some())
}

/// The items of `value` when it is an array, none otherwise.
fn items_or_none<'d, J: Json<'d>>(value: Option<J>) -> impl Iterator<Item = J> {
    value.and_then(J::items).into_iter().flatten()
}

/// The members of a status routing reads.
#[derive(Clone, Copy)]
enum StatusMember {
    Id,
    Account,
    Visibility,
    Reblog,
    InReplyToAccountId,
    MediaAttachments,
    Language,
    Mentions,
    Tags,
}

/// Which member `key` is: told apart by length and first byte, so that the
/// other keys of a status (most of them) cost no string compare.
#[inline(always)]
fn status_member(key: &str) -> Option<StatusMember> {
    use StatusMember::*;
    let k = key.as_bytes();
    Some(match (k.len(), *k.first()?) {
        (2, b'i') if k == b"id" => Id,
        (7, b'a') if k == b"account" => Account,
        (10, b'v') if k == b"visibility" => Visibility,
        (6, b'r') if k == b"reblog" => Reblog,
        (22, b'i') if k == b"in_reply_to_account_id" => InReplyToAccountId,
        (17, b'm') if k == b"media_attachments" => MediaAttachments,
        (8, b'l') if k == b"language" => Language,
        (8, b'm') if k == b"mentions" => Mentions,
        (4, b't') if k == b"tags" => Tags,
        _ => return None,
    })
}

/// One pass over the status object's keys, picking out what routing needs;
/// text in `input` is borrowed.
fn status_facts<'a, 'd, J: Json<'d>>(input: &'a [u8], status: J) -> Result<StatusFacts<'a>> {
    use StatusMember::*;
    let object = checked(status, "payload")?;
    if !object.is_object() {
        return Err(Error::event("a status payload must be a JSON object"));
    }
    let (mut account, mut reblog, mut reply_to, mut id) = (None, None, None, None);
    let (mut public, mut media, mut language) = (false, false, None);
    let mut mentions = SmallVec::new();
    let mut tags = TagSet::new();
    for (key, value) in object.members() {
        let Some(member) = status_member(&key) else { continue };
        match member {
            Id => id = optional_id(input, Some(value), "status id")?,
            Account => account = checked(value, "payload.account")?.is_object().then_some(value),
            Visibility => public = value.string().is_some_and(|v| v == "public"),
            Reblog => reblog = (!value.is_null()).then_some(checked(value, "payload.reblog")?),
            InReplyToAccountId => reply_to = optional_id(input, Some(value), "in_reply_to_account_id")?,
            MediaAttachments => media = non_empty_array(value),
            Language => language = value.string().map(|l| in_input(input, l)),
            Mentions => {
                for m in items_or_none(Some(value)) {
                    let id = checked(m, "payload.mentions[]")?.get("id");
                    if let Some(mention) = optional_id(input, id, "mention id")? {
                        mentions.push(mention);
                    }
                }
            }
            Tags => {
                for t in items_or_none(Some(value)) {
                    push_tag(input, &mut tags, checked(t, "payload.tags[]")?.get("name").and_then(J::string));
                }
            }
        }
    }
    let account = account.ok_or_else(|| Error::event("status payload has no account"))?;
    let author = optional_id(input, account.get("id"), "status account id")?
        .ok_or_else(|| Error::event("status account has no id"))?;
    let domain = match account.get("acct").and_then(J::string).map(|a| in_input(input, a)) {
        Some(Cow::Borrowed(acct)) => acct.split_once('@').map(|(_, d)| lowercase(d)),
        Some(Cow::Owned(acct)) => acct.split_once('@').map(|(_, d)| Cow::Owned(d.to_lowercase())),
        None => None,
    };
    let reblog_author = match reblog {
        Some(r) => optional_id(
            input,
            checked_get(r, "account", "payload.reblog.account")?.and_then(|a| a.get("id")),
            "reblog account id",
        )?,
        None => None,
    };
    Ok(StatusFacts {
        id,
        public: public && reblog.is_none(),
        local: domain.is_none(),
        media,
        reply_to_other: reply_to.as_ref().is_some_and(|r| *r != author),
        tags,
        keys: StatusKeys { language, author, mentions, reblog_author, domain },
    })
}

/// `s` lowercased, borrowed when it already is (ASCII without capitals).
fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

fn push_tag<'a>(input: &'a [u8], tags: &mut TagSet<'a>, raw: Option<Cow<'_, str>>) {
    if let Some(raw) = raw {
        let raw = in_input(input, raw);
        // Most tags are normalized already (lowercase ASCII letters, digits and `_`).
        let tag = if raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            raw
        } else {
            Cow::Owned(normalize_tag(&raw))
        };
        if !tag.is_empty() && !tags.contains(&tag) {
            tags.push(tag);
        }
    }
}

/// Status facts of an `update` payload, which may be an object or (as older
/// Mastodon versions publish it) a string holding the status JSON.
fn update_facts<'a, 'd, P: Parser, J: Json<'d>>(input: &'a [u8], payload: Option<J>) -> Result<StatusFacts<'a>> {
    let payload = payload.ok_or_else(|| Error::event("an update event needs a status payload"))?;
    match payload.string() {
        // Its text is not in `input` (quotes in a string are escaped): the facts own theirs.
        Some(text) => P::parse(text.as_bytes(), |status| status_facts(input, status))
            .map_err(|e| Error::event(format!("status payload string: {e}"))),
        None => status_facts(input, payload),
    }
}

fn route_public_status(ev: &mut RoutedEvent<'_>, facts: &StatusFacts<'_>) {
    if !facts.public {
        return;
    }
    for tag in &facts.tags {
        ev.add(ChannelKey::Hashtag { tag: (**tag).into(), local: false });
        if facts.local {
            ev.add(ChannelKey::Hashtag { tag: (**tag).into(), local: true });
        }
    }
    if !facts.reply_to_other {
        for media in [false, true] {
            if media && !facts.media {
                continue;
            }
            ev.add(ChannelKey::Public { local: None, media });
            ev.add(ChannelKey::Public { local: Some(facts.local), media });
        }
    }
}

/// Content mode: works out the channels from the event itself.
pub fn parse_content(input: &[u8]) -> Result<RoutedEvent<'_>> {
    content::<Scan>(input)
}

/// The parsers the scanner replaced, walking simd-json's tape: the reference
/// of the differential tests and the `extract_diff` fuzz target.
#[cfg(feature = "reference")]
pub mod reference {
    use super::*;
    use crate::json::TapeParser;
    pub use crate::json::scan::scanner_paths_differ;

    pub fn parse_content(input: &[u8]) -> Result<RoutedEvent<'_>> {
        content::<TapeParser>(input)
    }

    pub fn parse_channel_message(channel: ChannelKey, input: &[u8]) -> Result<RoutedEvent<'_>> {
        channel_message::<TapeParser>(channel, input)
    }

    /// Where the product parsers and the reference disagree on `input`, in
    /// content mode and in channel mode: accept or reject, every extracted
    /// field, the error kind and the error message, up to what follows
    /// `invalid JSON: ` (the scanner words JSON errors its own way and names
    /// other byte positions than simd-json).
    pub fn differences(input: &[u8]) -> Option<String> {
        let up_to_json_detail = |e: &Error| {
            let m = e.message();
            m.find("invalid JSON: ").map_or(m, |at| &m[..at]).to_owned()
        };
        let channel = ChannelKey::Public { local: None, media: false };
        let pairs = [
            ("content", super::parse_content(input), parse_content(input)),
            ("channel", super::parse_channel_message(channel.clone(), input), parse_channel_message(channel, input)),
        ];
        for (mode, ours, reference) in pairs {
            let same = match (&ours, &reference) {
                (Ok(a), Ok(b)) => a == b,
                (Err(a), Err(b)) => a.kind() == b.kind() && up_to_json_detail(a) == up_to_json_detail(b),
                _ => false,
            };
            if !same {
                return Some(format!("{mode} mode: scanner {ours:?}, reference {reference:?}"));
            }
        }
        None
    }
}

fn content<P: Parser>(input: &[u8]) -> Result<RoutedEvent<'_>> {
    P::parse(input, |doc| {
        if !checked(doc, "")?.is_object() {
            return Err(Error::event("an event must be a JSON object"));
        }
        let envelope = Envelope::of(doc);
        if envelope.event.is_some() {
            mastodon_envelope::<P, _>(doc, envelope, input)
        } else if doc.get("type").is_some() {
            community_event(doc, input)
        } else {
            Err(Error::event("missing \"event\" (Mastodon envelope) or \"type\" (community event)"))
        }
    })
}

fn mastodon_envelope<'a, 'd, P: Parser, J: Json<'d>>(
    doc: J,
    envelope: Envelope<J>,
    input: &'a [u8],
) -> Result<RoutedEvent<'a>> {
    let name = event_name(envelope.event, "event")?;
    let recipients = id_list(envelope.recipients, "recipients")?;
    let lists = id_list(envelope.lists, "lists")?;
    let mut ev = RoutedEvent {
        name: in_input(input, name),
        payload: payload_text(doc, envelope.payload, input),
        queued_at: queued_at(envelope.queued_at),
        ..Default::default()
    };
    let home_and_lists = |ev: &mut RoutedEvent<'_>| {
        for r in &recipients {
            ev.add(ChannelKey::User(r.clone()));
        }
        for l in &lists {
            ev.add(ChannelKey::List(l.clone()));
        }
    };
    match &*ev.name {
        "update" | "status.update" => {
            let facts = update_facts::<P, _>(input, envelope.payload)?;
            route_public_status(&mut ev, &facts);
            home_and_lists(&mut ev);
            ev.remember = facts.id;
            ev.local = Some(facts.local);
            ev.status = Some(facts.keys);
        }
        "notification" | "notifications_merged" => {
            for r in &recipients {
                ev.add(ChannelKey::Notifications(r.clone()));
            }
        }
        "conversation" => {
            for r in &recipients {
                ev.add(ChannelKey::Direct(r.clone()));
            }
        }
        "announcement" | "announcement.reaction" | "announcement.delete" | "filters_changed" => {
            if recipients.is_empty() {
                ev.add(ChannelKey::AllUsers);
            }
            home_and_lists(&mut ev);
        }
        "delete" => {
            let id = envelope
                .payload
                .filter(|p| !p.is_null())
                .ok_or_else(|| Error::event("a delete event needs the deleted status id as payload"))?;
            ev.deletes = Some(in_input(input, id.id().map_err(|e| Error::event(format!("delete payload: {e}")))?));
            home_and_lists(&mut ev);
        }
        _ => home_and_lists(&mut ev),
    }
    Ok(ev)
}

fn community_event<'a, 'd, J: Json<'d>>(doc: J, input: &'a [u8]) -> Result<RoutedEvent<'a>> {
    let name = in_input(input, event_name(doc.get("type"), "type")?);
    let data = checked_get(doc, "data", "data")?
        .filter(|d| d.is_object())
        .ok_or_else(|| Error::event(format!("community event {name:?} has no \"data\" object")))?;
    let whole = std::str::from_utf8(input.trim_ascii()).map_err(Error::utf8)?;
    let mut ev = RoutedEvent { payload: Some(whole.into()), ..Default::default() };
    if name.starts_with("notification.") {
        for r in id_list(data.get("recipients"), "data.recipients")? {
            ev.add(ChannelKey::Notifications(r));
        }
    } else if let Some(action) = name.strip_prefix("status.") {
        let (status, place) = match action {
            "created" | "updated" | "deleted" | "restored" => (data, "data.tags[]"),
            _ => (
                checked_get(data, "status", "data.status")?
                    .filter(|s| s.is_object())
                    .ok_or_else(|| Error::event(format!("{name} event has no \"data.status\" object")))?,
                "data.status.tags[]",
            ),
        };
        ev.local = Some(true);
        let media = status.get("medias").is_some_and(non_empty_array);
        let mut tags = TagSet::new();
        for t in items_or_none(status.get("tags")) {
            let t = checked(t, place)?;
            push_tag(input, &mut tags, t.string().or_else(|| t.get("name").and_then(J::string)));
        }
        for tag in &tags {
            ev.add(ChannelKey::Hashtag { tag: (**tag).into(), local: false });
            ev.add(ChannelKey::Hashtag { tag: (**tag).into(), local: true });
        }
        for m in [false, true] {
            if !m || media {
                ev.add(ChannelKey::Public { local: None, media: m });
                ev.add(ChannelKey::Public { local: Some(true), media: m });
            }
        }
    }
    ev.name = name;
    Ok(ev)
}

/// Channel mode: a Mastodon Redis message on an already-parsed channel.
pub fn parse_channel_message(channel: ChannelKey, input: &[u8]) -> Result<RoutedEvent<'_>> {
    channel_message::<Scan>(channel, input)
}

fn channel_message<P: Parser>(channel: ChannelKey, input: &[u8]) -> Result<RoutedEvent<'_>> {
    P::parse(input, |doc| {
        if !checked(doc, "")?.is_object() {
            return Err(Error::event("a channel message must be a JSON object"));
        }
        let envelope = Envelope::of(doc);
        let name = event_name(envelope.event, "event")?;
        let mut ev = RoutedEvent {
            name: in_input(input, name),
            payload: payload_text(doc, envelope.payload, input),
            queued_at: queued_at(envelope.queued_at),
            ..Default::default()
        };
        if is_status_event(&ev.name) {
            let facts = update_facts::<P, _>(input, envelope.payload)?;
            ev.local = Some(facts.local);
            ev.status = Some(facts.keys);
        }
        ev.channels.push(channel);
        Ok(ev)
    })
}

/// One line of an events file (`evroute route`, `evroute publish`).
#[derive(Debug, PartialEq, Eq)]
pub enum EventsLine<'a> {
    /// `{"channel": C, "message": M}`: M's text when M is a JSON string,
    /// otherwise M's JSON bytes.
    Channel { channel: String, message: std::borrow::Cow<'a, [u8]> },
    /// Anything else is a content-mode event; publishing it reports what is
    /// wrong with it (bad JSON, UTF-8, a missing `event`).
    Content(&'a [u8]),
}

/// Reads one events-file line. An object with `event` or `type` is a
/// content-mode event; one with `channel` is a channel record, which needs a
/// string `channel` and a `message`.
pub fn parse_events_line(line: &[u8]) -> Result<EventsLine<'_>> {
    let channel = Scan::parse(line, |doc| {
        if !checked(doc, "")?.is_object() || doc.get("event").is_some() || doc.get("type").is_some() {
            return Ok(None);
        }
        let Some(channel) = doc.get("channel") else { return Ok(None) };
        let channel = channel.string().ok_or_else(|| Error::channel("\"channel\" must be a string"))?.into_owned();
        let message = doc.get("message").ok_or_else(|| Error::event("a channel record needs a \"message\""))?;
        let message = match message.string() {
            Some(text) => text.into_owned().into_bytes(),
            // Keys are unique (checked above), so this is the message read.
            None => {
                let span =
                    doc.raw_member("message", message, line).ok_or_else(|| Error::event("unreadable \"message\""))?;
                line[span].to_vec()
            }
        };
        Ok(Some((channel, message)))
    });
    match channel {
        Ok(Some((channel, message))) => Ok(EventsLine::Channel { channel, message: message.into() }),
        Ok(None) => Ok(EventsLine::Content(line)),
        Err(e) if matches!(e.kind(), ErrorKind::InvalidJson | ErrorKind::InvalidUtf8) => Ok(EventsLine::Content(line)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn content(s: &str) -> Result<RoutedEvent<'static>> {
        parse_content(s.as_bytes()).map(RoutedEvent::into_owned)
    }

    fn names(ev: &RoutedEvent<'_>) -> Vec<String> {
        ev.channels.iter().map(|c| c.to_string()).collect()
    }

    const STATUS: &str = r#"{"id":"9","visibility":"public","reblog":null,"in_reply_to_account_id":null,
        "language":"en","account":{"id":"1","acct":"alice"},"media_attachments":[{"id":"m"}],
        "mentions":[{"id":2}],"tags":[{"name":"Rust"},{"name":"rust"}]}"#;

    #[test]
    fn public_local_status_with_media_and_tags() {
        let ev =
            content(&format!(r#"{{"event":"update","payload":{STATUS},"recipients":[5,"5"],"lists":["3"]}}"#)).unwrap();
        assert_eq!(
            names(&ev),
            [
                "timeline:hashtag:rust",
                "timeline:hashtag:rust:local",
                "timeline:public",
                "timeline:public:local",
                "timeline:public:media",
                "timeline:public:local:media",
                "timeline:5",
                "timeline:list:3",
            ]
        );
        assert_eq!(ev.remember.as_deref(), Some("9"));
        assert_eq!(ev.payload.as_deref(), Some(STATUS));
        let keys = ev.status.unwrap();
        assert_eq!(&*keys.author, "1");
        assert_eq!(keys.mentions.as_slice(), &["2"]);
        assert_eq!(keys.domain, None);
    }

    #[test]
    fn status_members_are_told_apart_exactly() {
        let names = [
            "id",
            "account",
            "visibility",
            "reblog",
            "in_reply_to_account_id",
            "media_attachments",
            "language",
            "mentions",
            "tags",
        ];
        for (n, name) in names.iter().enumerate() {
            assert_eq!(status_member(name).map(|m| m as usize), Some(n), "{name}");
            // Same length and first byte, another last byte.
            let near = format!("{}_", &name[..name.len() - 1]);
            assert!(status_member(&near).is_none(), "{near}");
        }
        for other in ["", "i", "reblogged", "in_reply_to_id", "text", "Id", "uri"] {
            assert!(status_member(other).is_none(), "{other}");
        }
    }

    #[test]
    fn extraction_borrows_the_event_bytes() {
        let input =
            format!(r#"{{"event":"update","payload":{}}}"#, STATUS.replace("\"alice\"", "\"alice@Example.org\""));
        let ev = parse_content(input.as_bytes()).unwrap();
        let borrowed = |c: &Cow<'_, str>| matches!(c, Cow::Borrowed(_));
        assert!(
            borrowed(&ev.name) && borrowed(ev.payload.as_ref().unwrap()) && borrowed(ev.remember.as_ref().unwrap())
        );
        let keys = ev.status.as_ref().unwrap();
        assert!(borrowed(&keys.author) && borrowed(&keys.mentions[0]) && borrowed(keys.language.as_ref().unwrap()));
        // Lowercasing and escapes make copies.
        assert!(matches!(&keys.domain, Some(Cow::Owned(d)) if d == "example.org"));
        let lower = input.replace("Example", "example");
        let ev = parse_content(lower.as_bytes()).unwrap();
        assert!(matches!(ev.status.unwrap().domain, Some(Cow::Borrowed("example.org"))));
        let escaped = input.replace(r#""language":"en""#, r#""language":"\u0065n""#);
        let ev = parse_content(escaped.as_bytes()).unwrap();
        assert!(matches!(ev.status.unwrap().language, Some(Cow::Owned(l)) if l == "en"));
    }

    #[test]
    fn replies_to_others_skip_public_timelines_but_keep_tags() {
        let status = STATUS.replace(r#""in_reply_to_account_id":null"#, r#""in_reply_to_account_id":"8""#);
        let ev = content(&format!(r#"{{"event":"update","payload":{status}}}"#)).unwrap();
        assert_eq!(names(&ev), ["timeline:hashtag:rust", "timeline:hashtag:rust:local"]);
        let self_reply = STATUS.replace(r#""in_reply_to_account_id":null"#, r#""in_reply_to_account_id":1"#);
        let ev = content(&format!(r#"{{"event":"update","payload":{self_reply}}}"#)).unwrap();
        assert!(names(&ev).contains(&"timeline:public".to_string()));
    }

    #[test]
    fn remote_unlisted_and_reblogs_stay_off_public_timelines() {
        let remote = STATUS.replace(r#""acct":"alice""#, r#""acct":"bob@Example.org""#);
        let ev = content(&format!(r#"{{"event":"update","payload":{remote}}}"#)).unwrap();
        assert!(names(&ev).contains(&"timeline:public:remote".to_string()));
        assert!(!names(&ev).contains(&"timeline:hashtag:rust:local".to_string()));
        assert_eq!(ev.status.unwrap().domain.as_deref(), Some("example.org"));
        let unlisted = STATUS.replace(r#""visibility":"public""#, r#""visibility":"unlisted""#);
        assert!(content(&format!(r#"{{"event":"update","payload":{unlisted}}}"#)).unwrap().channels.is_empty());
        let reblog = STATUS.replace(r#""reblog":null"#, r#""reblog":{"account":{"id":"4"}}"#);
        let ev = content(&format!(r#"{{"event":"update","payload":{reblog},"recipients":[1]}}"#)).unwrap();
        assert_eq!(names(&ev), ["timeline:1"]);
        assert_eq!(ev.status.unwrap().reblog_author.as_deref(), Some("4"));
    }

    #[test]
    fn other_mastodon_events() {
        let ev = content(r#"{"event":"notification","payload":{"id":"1"},"recipients":[7]}"#).unwrap();
        assert_eq!(names(&ev), ["timeline:7:notifications"]);
        let ev = content(r#"{"event":"conversation","payload":{},"recipients":["7"]}"#).unwrap();
        assert_eq!(names(&ev), ["timeline:direct:7"]);
        let ev = content(r#"{"event":"filters_changed"}"#).unwrap();
        assert_eq!(ev.channels.as_slice(), &[ChannelKey::AllUsers]);
        assert_eq!(ev.payload, None);
        let ev = content(r#"{"event":"announcement.delete","payload":"1","recipients":[3]}"#).unwrap();
        assert_eq!(names(&ev), ["timeline:3"]);
        assert_eq!(ev.payload.as_deref(), Some("1"));
        let ev = content(r#"{"event":"delete","payload":12,"lists":[4]}"#).unwrap();
        assert_eq!(ev.deletes.as_deref(), Some("12"));
        assert_eq!(names(&ev), ["timeline:list:4"]);
        let ev = content(r#"{"event":"custom","payload":"x","recipients":[1],"lists":[2]}"#).unwrap();
        assert_eq!(names(&ev), ["timeline:1", "timeline:list:2"]);
    }

    #[test]
    fn community_events() {
        let ev = content(r#"{"type":"notification.mention","data":{"recipients":[1,2]}}"#).unwrap();
        assert_eq!(names(&ev), ["timeline:1:notifications", "timeline:2:notifications"]);
        let input = r#" {"type":"status.created","data":{"medias":[1],"tags":["Go",{"name":"RUST"}]}} "#;
        let ev = content(input).unwrap();
        assert_eq!(ev.payload.as_deref(), Some(input.trim()));
        assert_eq!(
            names(&ev),
            [
                "timeline:hashtag:go",
                "timeline:hashtag:go:local",
                "timeline:hashtag:rust",
                "timeline:hashtag:rust:local",
                "timeline:public",
                "timeline:public:local",
                "timeline:public:media",
                "timeline:public:local:media",
            ]
        );
        let ev = content(r#"{"type":"status.follow","data":{"status":{"medias":[]}}}"#).unwrap();
        assert_eq!(names(&ev), ["timeline:public", "timeline:public:local"]);
        let err = content(r#"{"type":"status.follow","data":{}}"#).unwrap_err();
        assert!(err.message().contains("data.status"), "{err}");
    }

    #[test]
    fn bad_input_names_the_problem() {
        let cases: &[(&[u8], ErrorKind, &str)] = &[
            (b"{\"event\":\"update\",", ErrorKind::InvalidJson, "invalid JSON"),
            (b"{\"event\":\"\xff\"}", ErrorKind::InvalidUtf8, "UTF-8"),
            (b"{\"payload\":1}", ErrorKind::InvalidEvent, "missing"),
            (b"[1]", ErrorKind::InvalidEvent, "object"),
            (b"{\"event\":\"update\",\"payload\":{\"id\":\"1\"}}", ErrorKind::InvalidEvent, "account"),
            (b"{\"event\":\"delete\"}", ErrorKind::InvalidEvent, "status id"),
            (b"{\"event\":\"a\\nb\"}", ErrorKind::InvalidEvent, "line break"),
            (b"{\"event\":\"x\",\"recipients\":5}", ErrorKind::InvalidEvent, "recipients"),
        ];
        for (input, kind, needle) in cases {
            let err = parse_content(input).unwrap_err();
            assert_eq!(err.kind(), *kind, "{err}");
            assert!(err.message().contains(needle), "{err} should mention {needle}");
        }
    }

    #[test]
    fn events_lines_are_channel_records_or_content_events() {
        let line = br#"{"channel":"timeline:public","message":"{\"event\":\"delete\",\"payload\":\"1\"}"}"#;
        let want = EventsLine::Channel {
            channel: "timeline:public".into(),
            message: br#"{"event":"delete","payload":"1"}"#.as_slice().into(),
        };
        assert_eq!(parse_events_line(line).unwrap(), want);
        let line = br#"{"channel":"timeline:public","message":{"event":"delete","payload":"1"}}"#;
        assert_eq!(parse_events_line(line).unwrap(), want);
        for content in [&br#"{"event":"delete","payload":"1","channel":"x"}"#[..], b"{\"event\"", b"[1]", b"{}"] {
            assert_eq!(parse_events_line(content).unwrap(), EventsLine::Content(content));
        }
        let err = parse_events_line(br#"{"channel":"timeline:public"}"#).unwrap_err();
        assert_eq!((err.kind(), err.message()), (ErrorKind::InvalidEvent, "a channel record needs a \"message\""));
        assert_eq!(parse_events_line(br#"{"channel":7,"message":"x"}"#).unwrap_err().kind(), ErrorKind::InvalidChannel);
        let err = parse_events_line(br#"{"channel":"a","message":"x","message":"y"}"#).unwrap_err();
        assert_eq!(err.message(), r#"duplicate key "message""#);
    }

    #[test]
    fn channel_mode_accepts_string_status_payloads() {
        let msg = format!(r#"{{"event":"update","payload":{}}}"#, crate::json::quote(STATUS));
        let ev = parse_channel_message(ChannelKey::parse("timeline:public").unwrap(), msg.as_bytes()).unwrap();
        assert_eq!(ev.payload.as_deref(), Some(STATUS));
        assert_eq!(&*ev.status.unwrap().author, "1");
        assert_eq!(ev.remember, None);
    }
}
