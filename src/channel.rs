//! Streams, the Redis channels they listen to, and hashtag normalization
//! (SPEC §2). A [`ChannelKey`] is what the index is keyed by; its `Display`
//! form is the Mastodon channel name without namespace.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};
use crate::json::check_id;

/// Which part of the federated timeline a public stream covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    All,
    Local,
    Remote,
}

/// A Mastodon streaming API stream name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Public { scope: Scope, media: bool },
    Hashtag { local: bool },
    User,
    UserNotification,
    List,
    Direct,
}

impl Stream {
    pub fn from_name(name: &str) -> Option<Stream> {
        use Scope::*;
        Some(match name {
            "public" => Stream::Public { scope: All, media: false },
            "public:media" => Stream::Public { scope: All, media: true },
            "public:local" => Stream::Public { scope: Local, media: false },
            "public:local:media" => Stream::Public { scope: Local, media: true },
            "public:remote" => Stream::Public { scope: Remote, media: false },
            "public:remote:media" => Stream::Public { scope: Remote, media: true },
            "hashtag" => Stream::Hashtag { local: false },
            "hashtag:local" => Stream::Hashtag { local: true },
            "user" => Stream::User,
            "user:notification" => Stream::UserNotification,
            "list" => Stream::List,
            "direct" => Stream::Direct,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use Scope::*;
        match self {
            Stream::Public { scope: All, media: false } => "public",
            Stream::Public { scope: All, media: true } => "public:media",
            Stream::Public { scope: Local, media: false } => "public:local",
            Stream::Public { scope: Local, media: true } => "public:local:media",
            Stream::Public { scope: Remote, media: false } => "public:remote",
            Stream::Public { scope: Remote, media: true } => "public:remote:media",
            Stream::Hashtag { local: false } => "hashtag",
            Stream::Hashtag { local: true } => "hashtag:local",
            Stream::User => "user",
            Stream::UserNotification => "user:notification",
            Stream::List => "list",
            Stream::Direct => "direct",
        }
    }

    /// Viewer filters (§5) apply to public and hashtag streams only.
    pub fn viewer_filtered(self) -> bool {
        matches!(self, Stream::Public { .. } | Stream::Hashtag { .. })
    }
}

/// One index key: a Mastodon Redis channel, or the virtual key that every
/// `user` subscription also registers under so that announcements without
/// recipients reach all of them without a scan.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelKey {
    Public { local: Option<bool>, media: bool },
    Hashtag { tag: Box<str>, local: bool },
    User(Box<str>),
    Notifications(Box<str>),
    List(Box<str>),
    Direct(Box<str>),
    AllUsers,
}

impl ChannelKey {
    pub fn public(scope: Scope, media: bool) -> ChannelKey {
        let local = match scope {
            Scope::All => None,
            Scope::Local => Some(true),
            Scope::Remote => Some(false),
        };
        ChannelKey::Public { local, media }
    }

    /// True for keys that exist as Redis channels (everything but `AllUsers`).
    pub fn is_redis_channel(&self) -> bool {
        !matches!(self, ChannelKey::AllUsers)
    }

    /// Parses a Mastodon channel name (namespace already removed).
    pub fn parse(name: &str) -> Result<ChannelKey> {
        let unknown = || Error::channel(format!("unknown channel {name:?}"));
        let rest = name.strip_prefix("timeline:").ok_or_else(unknown)?;
        let key = match rest {
            "public" => ChannelKey::Public { local: None, media: false },
            "public:media" => ChannelKey::Public { local: None, media: true },
            "public:local" => ChannelKey::Public { local: Some(true), media: false },
            "public:local:media" => ChannelKey::Public { local: Some(true), media: true },
            "public:remote" => ChannelKey::Public { local: Some(false), media: false },
            "public:remote:media" => ChannelKey::Public { local: Some(false), media: true },
            _ => {
                if let Some(tag) = rest.strip_prefix("hashtag:") {
                    let (raw, local) = match tag.strip_suffix(":local") {
                        Some(t) => (t, true),
                        None => (tag, false),
                    };
                    let tag = normalize_tag(raw);
                    if tag.is_empty() {
                        return Err(Error::channel(format!("channel {name:?} has no usable tag")));
                    }
                    ChannelKey::Hashtag { tag: tag.into(), local }
                } else if let Some(id) = rest.strip_prefix("list:") {
                    ChannelKey::List(channel_id(name, id)?)
                } else if let Some(id) = rest.strip_prefix("direct:") {
                    ChannelKey::Direct(channel_id(name, id)?)
                } else if let Some(id) = rest.strip_suffix(":notifications") {
                    ChannelKey::Notifications(channel_id(name, id)?)
                } else if rest.starts_with("public") || rest.starts_with("hashtag") {
                    return Err(unknown());
                } else {
                    ChannelKey::User(channel_id(name, rest).map_err(|_| unknown())?)
                }
            }
        };
        Ok(key)
    }
}

fn channel_id(name: &str, id: &str) -> Result<Box<str>> {
    check_id(id).map(Box::from).map_err(|e| Error::channel(format!("channel {name:?}: {e}")))
}

impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelKey::Public { local, media } => {
                f.write_str("timeline:public")?;
                match local {
                    Some(true) => f.write_str(":local")?,
                    Some(false) => f.write_str(":remote")?,
                    None => {}
                }
                if *media {
                    f.write_str(":media")?;
                }
                Ok(())
            }
            ChannelKey::Hashtag { tag, local } => {
                write!(f, "timeline:hashtag:{tag}{}", if *local { ":local" } else { "" })
            }
            ChannelKey::User(id) => write!(f, "timeline:{id}"),
            ChannelKey::Notifications(id) => write!(f, "timeline:{id}:notifications"),
            ChannelKey::List(id) => write!(f, "timeline:list:{id}"),
            ChannelKey::Direct(id) => write!(f, "timeline:direct:{id}"),
            ChannelKey::AllUsers => f.write_str("(every user stream)"),
        }
    }
}

// Mastodon's ASCIIFolding table (app/lib/ascii_folding.rb): character i of
// FOLD_FROM becomes character i of FOLD_TO.
const FOLD_FROM: &str = "ÀÁÂÃÄÅàáâãäåĀāĂăĄąÇçĆćĈĉĊċČčÐðĎďĐđÈÉÊËèéêëĒēĔĕĖėĘęĚěĜĝĞğĠġĢģĤĥĦħÌÍÎÏìíîïĨĩĪīĬĭĮįİıĴĵĶķĸĹĺĻļĽľĿŀŁłÑñŃńŅņŇňŉŊŋÒÓÔÕÖØòóôõöøŌōŎŏŐőŔŕŖŗŘřŚśŜŝŞşŠšſŢţŤťŦŧÙÚÛÜùúûüŨũŪūŬŭŮůŰűŲųŴŵÝýÿŶŷŸŹźŻżŽž";
const FOLD_TO: &str = "AAAAAAaaaaaaAaAaAaCcCcCcCcCcDdDdDdEEEEeeeeEeEeEeEeEeGgGgGgGgHhHhIIIIiiiiIiIiIiIiIiJjKkkLlLlLlLlLlNnNnNnNnnNnOOOOOOooooooOoOoOoRrRrRrSsSsSsSssTtTtTtUUUUuuuuUuUuUuUuUuUuWwYyyYyYZzZzZz";

fn fold_to_ascii(c: char) -> char {
    if c.is_ascii() {
        return c;
    }
    match FOLD_FROM.chars().position(|f| f == c) {
        Some(i) => FOLD_TO.as_bytes()[i] as char,
        None => c,
    }
}

fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric()
        || matches!(c, '_' | '\u{00B7}' | '\u{200C}')
        // Thai vowel and tone marks that Mastodon keeps in hashtags.
        || ('\u{0E47}'..='\u{0E4E}').contains(&c)
}

/// `name` without the Redis namespace prefix `<ns>:`, when it has it. The
/// one place channel names lose their namespace.
pub fn strip_namespace<'a>(namespace: Option<&str>, name: &'a str) -> &'a str {
    namespace.and_then(|ns| name.strip_prefix(ns)).and_then(|rest| rest.strip_prefix(':')).unwrap_or(name)
}

/// `name` with the Redis namespace prefix `<ns>:`. The one place channel
/// names gain it.
pub fn with_namespace(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}:{name}"),
        None => name.to_owned(),
    }
}

/// Mastodon's hashtag normalization: NFKC, lowercase, ASCII folding, then
/// drop everything that cannot be part of a hashtag.
pub fn normalize_tag(tag: &str) -> String {
    // ASCII is its own NFKC form and folding; what remains is lowercasing
    // and keeping letters, digits and `_`.
    if tag.is_ascii() {
        return tag
            .bytes()
            .filter(|&b| b.is_ascii_alphanumeric() || b == b'_')
            .map(|b| b.to_ascii_lowercase() as char)
            .collect();
    }
    normalize_any_tag(tag)
}

fn normalize_any_tag(tag: &str) -> String {
    let lowered = tag.nfkc().collect::<String>().to_lowercase();
    lowered.chars().map(fold_to_ascii).filter(|&c| is_tag_char(c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_stripped_and_added_in_one_place() {
        assert_eq!(strip_namespace(Some("ns"), "ns:timeline:public"), "timeline:public");
        assert_eq!(strip_namespace(Some("ns"), "timeline:public"), "timeline:public");
        assert_eq!(strip_namespace(Some("ns"), "nsx:timeline:public"), "nsx:timeline:public");
        assert_eq!(strip_namespace(None, "ns:timeline:public"), "ns:timeline:public");
        assert_eq!(with_namespace(Some("ns"), "timeline:1"), "ns:timeline:1");
        assert_eq!(with_namespace(None, "timeline:1"), "timeline:1");
    }

    #[test]
    fn fold_tables_line_up() {
        assert_eq!(FOLD_FROM.chars().count(), FOLD_TO.len());
    }

    proptest::proptest! {
        #[test]
        fn ascii_tags_take_the_short_way_to_the_same_result(tag in "[ -~]{0,24}") {
            proptest::prop_assert_eq!(normalize_tag(&tag), normalize_any_tag(&tag));
        }
    }

    #[test]
    fn tags_normalize_like_mastodon() {
        assert_eq!(normalize_tag("#Rust!"), "rust");
        assert_eq!(normalize_tag("RUST"), "rust");
        assert_eq!(normalize_tag("ＲＵＳＴ"), "rust");
        assert_eq!(normalize_tag("Café"), "cafe");
        assert_eq!(normalize_tag("Ça_va·bien"), "ca_va·bien");
        assert_eq!(normalize_tag("日本語"), "日本語");
        assert_eq!(normalize_tag("c++"), "c");
        assert_eq!(normalize_tag("!!!"), "");
    }

    #[test]
    fn channel_names_round_trip() {
        for name in [
            "timeline:public",
            "timeline:public:media",
            "timeline:public:local",
            "timeline:public:local:media",
            "timeline:public:remote",
            "timeline:public:remote:media",
            "timeline:hashtag:rust",
            "timeline:hashtag:rust:local",
            "timeline:42",
            "timeline:42:notifications",
            "timeline:list:7",
            "timeline:direct:42",
        ] {
            assert_eq!(ChannelKey::parse(name).unwrap().to_string(), name);
        }
    }

    #[test]
    fn bad_channels_are_named_in_the_error() {
        for name in ["", "public", "timeline:", "timeline:public:bogus", "timeline:hashtag:!!", "timeline:list:"] {
            let err = ChannelKey::parse(name).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidChannel, "{name}");
            assert!(err.message().contains("channel"), "{err}");
        }
    }

    #[test]
    fn streams_round_trip() {
        for name in [
            "public",
            "public:media",
            "public:local",
            "public:local:media",
            "public:remote",
            "public:remote:media",
            "hashtag",
            "hashtag:local",
            "user",
            "user:notification",
            "list",
            "direct",
        ] {
            assert_eq!(Stream::from_name(name).unwrap().name(), name);
        }
        assert_eq!(Stream::from_name("bogus"), None);
    }
}
