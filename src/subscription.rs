//! Subscription requests (SPEC §1, §2): the Mastodon WebSocket subscribe
//! message plus evroute's `events` extension, resolved into the index keys a
//! subscription listens to and the stream array its frames carry.

use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;
use smallvec::SmallVec;

use crate::channel::{ChannelKey, Stream, normalize_tag};
use crate::error::{Error, Result};
use crate::json::{id_text, quote, with_document};

/// Index keys of one subscription. Usually one; `user` has three (the home
/// and notification channels and the virtual every-user key) and spills.
pub type Keys = SmallVec<[ChannelKey; 1]>;

/// Which event names a subscription accepts: exact names and `prefix.*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFilter {
    exact: Vec<Box<str>>,
    /// Stored with the trailing dot, so `status.*` matches `status.created`
    /// but not `statuses`.
    prefixes: Vec<Box<str>>,
}

impl EventFilter {
    pub fn parse(value: &Value<'_>) -> Result<EventFilter> {
        let items = value.as_array().ok_or_else(|| Error::subscription("events must be an array of event names"))?;
        if items.is_empty() {
            return Err(Error::subscription("events must name at least one event (omit it to receive every event)"));
        }
        let mut filter = EventFilter { exact: Vec::new(), prefixes: Vec::new() };
        for item in items {
            let name = item
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Error::subscription("events must contain non-empty strings"))?;
            if name == "*" {
                filter.prefixes.push("".into());
            } else if let Some(prefix) = name.strip_suffix('*') {
                if !prefix.ends_with('.') {
                    return Err(Error::subscription(format!("event pattern {name:?} must have the form \"prefix.*\"")));
                }
                filter.prefixes.push(prefix.into());
            } else {
                filter.exact.push(name.into());
            }
        }
        Ok(filter)
    }

    pub fn allows(&self, event: &str) -> bool {
        self.exact.iter().any(|e| **e == *event) || self.prefixes.iter().any(|p| event.starts_with(&**p))
    }
}

/// Which statuses a public or hashtag subscription keeps (§11 `origin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Local,
    Remote,
}

impl Origin {
    /// Whether a status of this locality passes.
    pub fn allows(self, local: bool) -> bool {
        local == (self == Origin::Local)
    }
}

/// A parsed subscription request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// The stream after `only_media` has been folded in.
    pub stream: Stream,
    /// The tag as the client wrote it, or the list id.
    pub param: Option<Box<str>>,
    pub events: Option<EventFilter>,
    /// Keeps only local or only remote statuses; the frames still carry
    /// the stream asked for.
    pub origin: Option<Origin>,
}

/// Mastodon's truthiness for query-style flags (`isTruthy` in streaming/index.js).
fn truthy(value: Option<&Value<'_>>) -> bool {
    let Some(value) = value else { return false };
    if value.is_null() {
        return false;
    }
    if let Some(b) = value.as_bool() {
        return b;
    }
    if let Some(s) = value.as_str() {
        return !matches!(s, "" | "0" | "f" | "F" | "false" | "FALSE" | "off" | "OFF");
    }
    if let Some(n) = value.cast_f64() {
        return n != 0.0;
    }
    true
}

impl SubscriptionSpec {
    /// Parses `{"stream": S, "tag"?, "list"?, "only_media"?, "events"?, "origin"?}`;
    /// `type` and any other keys a Mastodon client sends are ignored.
    pub fn parse(bytes: &[u8]) -> Result<SubscriptionSpec> {
        let mut scratch = Vec::new();
        with_document(bytes, &mut scratch, crate::ErrorKind::InvalidSubscription, Self::from_value)
    }

    pub fn from_value(doc: &Value<'_>) -> Result<SubscriptionSpec> {
        if doc.as_object().is_none() {
            return Err(Error::subscription("a subscription must be a JSON object"));
        }
        let stream_name = match doc.get("stream") {
            None => return Err(Error::subscription("Missing stream name parameter")),
            Some(v) => v.as_str().ok_or_else(|| Error::subscription("Unknown stream type: stream must be a string"))?,
        };
        let mut stream = Stream::from_name(stream_name)
            .ok_or_else(|| Error::subscription(format!("Unknown stream type {stream_name:?}")))?;
        if let Stream::Public { scope, media: false } = stream
            && truthy(doc.get("only_media"))
        {
            stream = Stream::Public { scope, media: true };
        }
        let param = match stream {
            Stream::Hashtag { .. } => {
                let tag = doc.get("tag").and_then(|t| t.as_str()).unwrap_or("");
                if tag.is_empty() {
                    return Err(Error::subscription("Missing tag name parameter"));
                }
                if normalize_tag(tag).is_empty() {
                    return Err(Error::subscription(format!(
                        "Invalid tag name parameter {tag:?}: it has no letters or digits"
                    )));
                }
                Some(tag.into())
            }
            Stream::List => match doc.get("list") {
                None => return Err(Error::subscription("Missing list name parameter")),
                Some(v) if v.is_null() || v.as_str() == Some("") => {
                    return Err(Error::subscription("Missing list name parameter"));
                }
                Some(v) => Some(id_text(v).map_err(|e| Error::subscription(format!("Invalid list parameter: {e}")))?),
            },
            _ => None,
        };
        let events = match doc.get("events") {
            None => None,
            Some(v) if v.is_null() => None,
            Some(v) => Some(EventFilter::parse(v)?),
        };
        let origin = match doc.get("origin") {
            None => None,
            Some(v) if v.is_null() => None,
            Some(v) => {
                if !stream.viewer_filtered() {
                    return Err(Error::subscription(format!(
                        "origin applies only to public and hashtag streams, not {:?}",
                        stream.name()
                    )));
                }
                match v.as_str() {
                    Some("local") => Some(Origin::Local),
                    Some("remote") => Some(Origin::Remote),
                    _ => return Err(Error::subscription("origin must be \"local\" or \"remote\"")),
                }
            }
        };
        Ok(SubscriptionSpec { stream, param, events, origin })
    }

    /// The index keys this subscription listens to, for a subscriber with
    /// `account`.
    pub fn keys(&self, account: Option<&str>) -> Result<Keys> {
        let need_account = || {
            account.map(Box::<str>::from).ok_or_else(|| {
                Error::subscription(format!(
                    "Missing access token: stream {:?} needs a subscriber with an account",
                    self.stream.name()
                ))
            })
        };
        let mut keys = Keys::new();
        match self.stream {
            Stream::Public { scope, media } => keys.push(ChannelKey::public(scope, media)),
            Stream::Hashtag { local } => {
                let tag = normalize_tag(self.param.as_deref().unwrap_or_default());
                keys.push(ChannelKey::Hashtag { tag: tag.into(), local });
            }
            Stream::User => {
                let id = need_account()?;
                keys.push(ChannelKey::User(id.clone()));
                keys.push(ChannelKey::Notifications(id));
                keys.push(ChannelKey::AllUsers);
            }
            Stream::UserNotification => keys.push(ChannelKey::Notifications(need_account()?)),
            Stream::List => keys.push(ChannelKey::List(self.param.clone().unwrap_or_default())),
            Stream::Direct => keys.push(ChannelKey::Direct(need_account()?)),
        }
        Ok(keys)
    }

    /// The JSON stream array of §4, e.g. `["hashtag","Rust"]`.
    pub fn stream_json(&self) -> String {
        match (&self.stream, &self.param) {
            (Stream::Hashtag { .. } | Stream::List, Some(param)) => {
                format!("[{},{}]", quote(self.stream.name()), quote(param))
            }
            _ => format!("[{}]", quote(self.stream.name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Scope;

    fn parse(s: &str) -> Result<SubscriptionSpec> {
        SubscriptionSpec::parse(s.as_bytes())
    }

    #[test]
    fn only_media_follows_mastodon_truthiness() {
        for v in ["true", "1", "\"1\"", "\"t\"", "\"yes\"", "\"true\""] {
            let spec = parse(&format!(r#"{{"stream":"public:local","only_media":{v}}}"#)).unwrap();
            assert_eq!(spec.stream, Stream::Public { scope: Scope::Local, media: true }, "{v}");
        }
        for v in ["false", "0", "\"0\"", "\"f\"", "\"F\"", "\"false\"", "\"FALSE\"", "\"off\"", "\"OFF\"", "null"] {
            let spec = parse(&format!(r#"{{"stream":"public","only_media":{v}}}"#)).unwrap();
            assert_eq!(spec.stream, Stream::Public { scope: Scope::All, media: false }, "{v}");
        }
    }

    #[test]
    fn hashtag_keys_normalize_but_stream_keeps_the_tag_as_written() {
        let spec = parse(r##"{"type":"subscribe","stream":"hashtag","tag":"#Café"}"##).unwrap();
        assert_eq!(spec.keys(None).unwrap().as_slice(), &[ChannelKey::Hashtag { tag: "cafe".into(), local: false }]);
        assert_eq!(spec.stream_json(), r##"["hashtag","#Café"]"##);
    }

    #[test]
    fn mastodon_error_messages() {
        assert!(parse(r#"{"stream":"bogus"}"#).unwrap_err().message().contains("Unknown stream type"));
        assert!(parse(r#"{"stream":"hashtag"}"#).unwrap_err().message().contains("Missing tag name parameter"));
        assert!(parse(r#"{"stream":"list"}"#).unwrap_err().message().contains("Missing list name parameter"));
        let user = parse(r#"{"stream":"user"}"#).unwrap();
        assert!(user.keys(None).unwrap_err().message().contains("account"));
        assert_eq!(parse("{").unwrap_err().kind(), crate::ErrorKind::InvalidJson);
    }

    #[test]
    fn list_ids_may_be_integers() {
        let spec = parse(r#"{"stream":"list","list":12}"#).unwrap();
        assert_eq!(spec.stream_json(), r#"["list","12"]"#);
        assert_eq!(spec.keys(None).unwrap()[0], ChannelKey::List("12".into()));
    }

    #[test]
    fn event_filters_match_names_and_prefixes() {
        let spec = parse(r#"{"stream":"public","events":["update","status.*"]}"#).unwrap();
        let f = spec.events.unwrap();
        assert!(f.allows("update"));
        assert!(f.allows("status.created"));
        assert!(!f.allows("status"));
        assert!(!f.allows("delete"));
        assert!(parse(r#"{"stream":"public","events":[]}"#).is_err());
        assert!(parse(r#"{"stream":"public","events":["sta*"]}"#).is_err());
    }

    #[test]
    fn origin_only_on_public_and_hashtag_streams() {
        assert_eq!(parse(r#"{"stream":"public","origin":"local"}"#).unwrap().origin, Some(Origin::Local));
        let tag = parse(r#"{"stream":"hashtag","tag":"x","origin":"remote"}"#).unwrap();
        assert_eq!(tag.origin, Some(Origin::Remote));
        assert!(Origin::Remote.allows(false) && !Origin::Remote.allows(true));
        assert_eq!(parse(r#"{"stream":"public","origin":null}"#).unwrap().origin, None);
        assert!(parse(r#"{"stream":"public","origin":"mars"}"#).unwrap_err().message().contains("origin"));
        let err = parse(r#"{"stream":"list","list":1,"origin":"local"}"#).unwrap_err();
        assert!(err.message().contains("public and hashtag"), "{err}");
    }
}
