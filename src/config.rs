//! Engine and subscriber configuration (SPEC §7), from JSON or built in Rust.
//! Unknown keys are refused: a misspelt limit should not silently fall back
//! to a default.

use std::time::Duration;

use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use crate::error::{Error, ErrorKind, Result};
use crate::filter::ViewerFilters;
use crate::json::{id_text, with_document};
use crate::queue::Overflow;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Default per-subscriber queue capacity, in frames.
    pub queue_capacity: usize,
    pub overflow: Overflow,
    /// Events above this size are rejected with `TooLarge`.
    pub max_event_bytes: usize,
    /// How many recent statuses `delete` remembers (0 disables it).
    pub delete_memory: usize,
    /// Redis namespace: channels are then `<namespace>:timeline:…`.
    pub redis_namespace: Option<String>,
    /// Per-channel history for resume (SPEC §12); `None` = off.
    pub history: Option<HistoryConfig>,
}

/// Limits of each channel's history ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Frames kept per channel.
    pub max_events: usize,
    /// Frames older than this are forgotten.
    pub max_age: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { max_events: 1000, max_age: Duration::from_secs(300) }
    }
}

impl HistoryConfig {
    /// `{"max_events": N, "max_age_s": S}`, each key optional; `null` = off.
    fn from_value(value: &Value<'_>) -> Result<Option<HistoryConfig>> {
        if value.is_null() {
            return Ok(None);
        }
        let mut config = HistoryConfig::default();
        for (key, value) in object(value, "history")?.iter() {
            match key.as_ref() {
                "max_events" => config.max_events = positive(value, "history.max_events", false)?,
                "max_age_s" => {
                    config.max_age = Duration::from_secs(positive(value, "history.max_age_s", false)? as u64)
                }
                other => return Err(Error::config(format!("unknown history key {other:?}"))),
            }
        }
        Ok(Some(config))
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            queue_capacity: 1024,
            overflow: Overflow::DropOldest,
            max_event_bytes: 1 << 20,
            delete_memory: 65_536,
            redis_namespace: None,
            history: None,
        }
    }
}

fn positive(value: &Value<'_>, key: &str, allow_zero: bool) -> Result<usize> {
    match value.as_u64() {
        Some(n) if n > 0 || allow_zero => Ok(n as usize),
        _ => Err(Error::config(format!(
            "{key} must be a {} integer",
            if allow_zero { "non-negative" } else { "positive" }
        ))),
    }
}

fn overflow(value: &Value<'_>) -> Result<Overflow> {
    value
        .as_str()
        .and_then(Overflow::from_name)
        .ok_or_else(|| Error::config("overflow must be \"drop_oldest\", \"drop_newest\" or \"disconnect\""))
}

fn object<'v>(doc: &'v Value<'v>, what: &str) -> Result<&'v simd_json::borrowed::Object<'v>> {
    doc.as_object().ok_or_else(|| Error::config(format!("{what} must be a JSON object")))
}

impl EngineConfig {
    /// Parses the engine config JSON; empty input means all defaults.
    pub fn from_json(bytes: &[u8]) -> Result<EngineConfig> {
        let mut config = EngineConfig::default();
        if bytes.trim_ascii().is_empty() {
            return Ok(config);
        }
        with_document(bytes, &mut Vec::new(), ErrorKind::InvalidConfig, |doc| {
            for (key, value) in object(doc, "engine config")?.iter() {
                match key.as_ref() {
                    "queue_capacity" => config.queue_capacity = positive(value, key, false)?,
                    "overflow" => config.overflow = overflow(value)?,
                    "max_event_bytes" => config.max_event_bytes = positive(value, key, false)?,
                    "delete_memory" => config.delete_memory = positive(value, key, true)?,
                    "history" => config.history = HistoryConfig::from_value(value)?,
                    "redis_namespace" => {
                        config.redis_namespace = match value.as_str() {
                            _ if value.is_null() => None,
                            Some("") => None,
                            Some(ns) => Some(ns.to_owned()),
                            None => {
                                return Err(Error::config("redis_namespace must be a string or null"));
                            }
                        }
                    }
                    other => {
                        return Err(Error::config(format!("unknown engine config key {other:?}")));
                    }
                }
            }
            Ok(config)
        })
    }
}

/// How to create one subscriber.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscriberOptions {
    /// The viewer's account id, needed for `user`, `user:notification` and `direct`.
    pub account: Option<String>,
    pub filters: ViewerFilters,
    /// Overrides the engine's queue capacity.
    pub queue_capacity: Option<usize>,
    /// Overrides the engine's overflow policy.
    pub overflow: Option<Overflow>,
    /// Frames carry their id in the SSE and WebSocket bytes (SPEC §12).
    pub event_ids: bool,
}

pub(crate) const FILTER_KEYS: [&str; 6] =
    ["languages", "blocked_accounts", "muted_accounts", "blocked_domains", "blocked_by_accounts", "keyword_filters"];

impl SubscriberOptions {
    /// Parses the subscriber JSON of §7; empty input means all defaults.
    pub fn from_json(bytes: &[u8]) -> Result<SubscriberOptions> {
        if bytes.trim_ascii().is_empty() {
            return Ok(SubscriberOptions::default());
        }
        with_document(bytes, &mut Vec::new(), ErrorKind::InvalidConfig, |doc| Self::from_value(doc, &[]))
    }

    /// Parses a subscriber object, ignoring the keys in `extra` (the CLI's
    /// `id` and `subscriptions`).
    pub fn from_value(doc: &Value<'_>, extra: &[&str]) -> Result<SubscriberOptions> {
        let mut opts = SubscriberOptions::default();
        for (key, value) in object(doc, "subscriber")?.iter() {
            match key.as_ref() {
                "account" if value.is_null() => {}
                "account" => {
                    opts.account = Some(id_text(value).map_err(|e| Error::config(format!("account: {e}")))?.into())
                }
                "queue_capacity" => opts.queue_capacity = Some(positive(value, key, false)?),
                "overflow" => opts.overflow = Some(overflow(value)?),
                "event_ids" => {
                    opts.event_ids = value.as_bool().ok_or_else(|| Error::config("event_ids must be true or false"))?
                }
                k if FILTER_KEYS.contains(&k) || extra.contains(&k) => {}
                other => return Err(Error::config(format!("unknown subscriber key {other:?}"))),
            }
        }
        opts.filters = ViewerFilters::from_object(doc)?;
        Ok(opts)
    }
}

/// Parses the JSON of a filter update: only the viewer filter keys are allowed.
pub fn filters_from_json(bytes: &[u8]) -> Result<ViewerFilters> {
    if bytes.trim_ascii().is_empty() {
        return Ok(ViewerFilters::default());
    }
    with_document(bytes, &mut Vec::new(), ErrorKind::InvalidConfig, |doc| {
        for key in object(doc, "filter update")?.keys() {
            if !FILTER_KEYS.contains(&key.as_ref()) {
                return Err(Error::config(format!(
                    "{key:?} cannot be updated: an update replaces only {}",
                    FILTER_KEYS.join(", ")
                )));
            }
        }
        ViewerFilters::from_object(doc)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn engine_config_defaults_and_overrides() {
        assert_eq!(EngineConfig::from_json(b"").unwrap(), EngineConfig::default());
        let c = EngineConfig::from_json(
            br#"{"queue_capacity":8,"overflow":"disconnect","max_event_bytes":100,"delete_memory":0,"redis_namespace":"ns"}"#,
        )
        .unwrap();
        assert_eq!(c.queue_capacity, 8);
        assert_eq!(c.overflow, Overflow::Disconnect);
        assert_eq!(c.delete_memory, 0);
        assert_eq!(c.redis_namespace.as_deref(), Some("ns"));
        assert_eq!(c.history, None);
        let c = EngineConfig::from_json(br#"{"history":{"max_events":5,"max_age_s":60}}"#).unwrap();
        assert_eq!(c.history, Some(HistoryConfig { max_events: 5, max_age: Duration::from_secs(60) }));
        let c = EngineConfig::from_json(br#"{"history":{}}"#).unwrap();
        assert_eq!(c.history, Some(HistoryConfig::default()));
        assert_eq!(EngineConfig::from_json(br#"{"history":null}"#).unwrap().history, None);
    }

    #[test]
    fn bad_config_is_named() {
        for (json, needle) in [
            (r#"{"queue_capacty":8}"#, "queue_capacty"),
            (r#"{"queue_capacity":0}"#, "queue_capacity"),
            (r#"{"overflow":"block"}"#, "overflow"),
            (r#"[]"#, "object"),
            (r#"{"history":{"max_events":0}}"#, "history.max_events"),
            (r#"{"history":{"max_age_s":-1}}"#, "history.max_age_s"),
            (r#"{"history":{"max_age":1}}"#, "max_age"),
            (r#"{"history":true}"#, "history"),
        ] {
            let err = EngineConfig::from_json(json.as_bytes()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig);
            assert!(err.message().contains(needle), "{err}");
        }
    }

    #[test]
    fn subscriber_options() {
        let o = SubscriberOptions::from_json(
            br#"{"account":42,"languages":["en"],"blocked_accounts":[1],"queue_capacity":16,"overflow":"drop_newest"}"#,
        )
        .unwrap();
        assert_eq!(o.account.as_deref(), Some("42"));
        assert!(o.filters.languages.as_ref().unwrap().contains("en"));
        assert_eq!(o.queue_capacity, Some(16));
        assert!(SubscriberOptions::from_json(br#"{"acount":1}"#).is_err());
        assert!(SubscriberOptions::from_json(br#"{"event_ids":true}"#).unwrap().event_ids);
        assert!(SubscriberOptions::from_json(br#"{"event_ids":1}"#).unwrap_err().message().contains("event_ids"));
        assert!(filters_from_json(br#"{"account":"1"}"#).unwrap_err().message().contains("account"));
    }
}
