//! Per-viewer filters (SPEC §5, §11). They live in memory on the subscriber and
//! are replaced wholesale; matching never calls back into the host.

use std::borrow::Cow;

use ahash::AHashSet;
use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;
use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::json::id_text;
use crate::keyword::FilterList;

/// What a status contributes to viewer filtering, extracted once per event:
/// text borrowed from the event's bytes where it can be.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusKeys<'a> {
    pub language: Option<Cow<'a, str>>,
    pub author: Cow<'a, str>,
    pub mentions: SmallVec<[Cow<'a, str>; 4]>,
    pub reblog_author: Option<Cow<'a, str>>,
    /// Lowercased domain of a remote author; `None` for a local one.
    pub domain: Option<Cow<'a, str>>,
}

impl StatusKeys<'_> {
    /// The same keys, owning their text.
    pub fn into_owned(self) -> StatusKeys<'static> {
        let owned = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        StatusKeys {
            language: self.language.map(owned),
            author: owned(self.author),
            mentions: self.mentions.into_iter().map(owned).collect(),
            reblog_author: self.reblog_author.map(owned),
            domain: self.domain.map(owned),
        }
    }
}

/// A set of account ids or domains, compact because every connected viewer
/// holds a few of them (tens to thousands of blocks and mutes each): ids
/// that are canonical decimal numbers, as Mastodon's are, sit in one sorted
/// array of `u64` (8 bytes an id, against about 60 in a hash set of boxed
/// strings), any other string in a sorted array of its own. Lookups scan a
/// short array and binary-search a long one, after a one-word filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdSet {
    /// One bit per number's hash ([`bit`]): most ids looked up are not in
    /// the set, and most of those are turned away by this word alone.
    mask: u64,
    numbers: Box<[u64]>,
    others: Box<[Box<str>]>,
}

fn bit(n: u64) -> u64 {
    1 << (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
}

/// An id as an [`IdSet`] looks it up; make it once to look in several sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdKey<'a> {
    Number(u64),
    Text(&'a str),
}

impl<'a> IdKey<'a> {
    /// A canonical decimal number (no sign, no leading zero, fits in a
    /// `u64`) is a `Number`, so that "7" and "007" stay different ids.
    #[inline]
    pub fn of(id: &'a str) -> IdKey<'a> {
        let b = id.as_bytes();
        if b.is_empty() || b.len() > 20 || (b[0] == b'0' && b.len() > 1) {
            return IdKey::Text(id);
        }
        // 19 digits cannot overflow; only a 20th can.
        let (head, last) = b.split_at(b.len().min(19));
        let mut n = 0u64;
        for &d in head {
            if !d.is_ascii_digit() {
                return IdKey::Text(id);
            }
            n = n * 10 + u64::from(d - b'0');
        }
        match last {
            [] => IdKey::Number(n),
            [d] if d.is_ascii_digit() => n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d - b'0')))
                .map_or(IdKey::Text(id), IdKey::Number),
            _ => IdKey::Text(id),
        }
    }
}

impl IdSet {
    #[inline]
    pub fn contains(&self, id: &str) -> bool {
        self.contains_key(IdKey::of(id))
    }

    #[inline]
    pub fn contains_key(&self, key: IdKey<'_>) -> bool {
        match key {
            // A short array is faster scanned (vectorized, no branch to
            // mispredict) than searched.
            IdKey::Number(n) if self.mask & bit(n) == 0 => false,
            IdKey::Number(n) if self.numbers.len() <= 32 => self.numbers.contains(&n),
            IdKey::Number(n) => self.numbers.binary_search(&n).is_ok(),
            IdKey::Text(s) => self.others.binary_search_by(|o| o.as_ref().cmp(s)).is_ok(),
        }
    }

    pub fn len(&self) -> usize {
        self.numbers.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<S: AsRef<str>> FromIterator<S> for IdSet {
    fn from_iter<I: IntoIterator<Item = S>>(items: I) -> IdSet {
        let (mut numbers, mut others) = (Vec::new(), Vec::new());
        for item in items {
            match IdKey::of(item.as_ref()) {
                IdKey::Number(n) => numbers.push(n),
                IdKey::Text(s) => others.push(Box::<str>::from(s)),
            }
        }
        numbers.sort_unstable();
        numbers.dedup();
        others.sort_unstable();
        others.dedup();
        let mask = numbers.iter().fold(0, |m, &n| m | bit(n));
        IdSet { mask, numbers: numbers.into(), others: others.into() }
    }
}

/// A viewer's filter sets. An absent or empty `languages` means "any language".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ViewerFilters {
    pub languages: Option<AHashSet<Box<str>>>,
    pub blocked_accounts: IdSet,
    pub muted_accounts: IdSet,
    /// Lowercased.
    pub blocked_domains: IdSet,
    /// Accounts that block the viewer: their statuses are hidden (author only).
    pub blocked_by_accounts: IdSet,
    /// Present (even empty) for a filter-annotated viewer (§11).
    pub keyword_filters: Option<FilterList>,
}

impl ViewerFilters {
    pub fn is_empty(&self) -> bool {
        self.languages.is_none()
            && self.blocked_accounts.is_empty()
            && self.muted_accounts.is_empty()
            && self.blocked_domains.is_empty()
            && self.blocked_by_accounts.is_empty()
            && self.keyword_filters.is_none()
    }

    /// True when `status` may be shown to this viewer.
    pub fn allows(&self, status: &StatusKeys<'_>) -> bool {
        if let Some(languages) = &self.languages {
            match &status.language {
                Some(lang) if languages.contains(lang.as_ref()) => {}
                _ => return false,
            }
        }
        let hidden = |id: IdKey<'_>| self.blocked_accounts.contains_key(id) || self.muted_accounts.contains_key(id);
        let author = IdKey::of(&status.author);
        if hidden(author)
            || self.blocked_by_accounts.contains_key(author)
            || status.mentions.iter().any(|m| hidden(IdKey::of(m)))
            || status.reblog_author.as_deref().is_some_and(|r| hidden(IdKey::of(r)))
        {
            return false;
        }
        !status.domain.as_ref().is_some_and(|d| self.blocked_domains.contains(d.as_ref()))
    }

    /// Reads the filter keys of a subscriber object. Keys that are absent
    /// keep their default (empty); other keys are the caller's business.
    pub fn from_object(doc: &Value<'_>) -> Result<ViewerFilters> {
        let mut filters = ViewerFilters::default();
        if let Some(v) = doc.get("languages").filter(|v| !v.is_null()) {
            let set: AHashSet<Box<str>> = string_set(v, "languages", |s| s.to_owned())?;
            if !set.is_empty() {
                filters.languages = Some(set);
            }
        }
        filters.blocked_accounts = id_set(doc.get("blocked_accounts"), "blocked_accounts")?;
        filters.muted_accounts = id_set(doc.get("muted_accounts"), "muted_accounts")?;
        filters.blocked_by_accounts = id_set(doc.get("blocked_by_accounts"), "blocked_by_accounts")?;
        if let Some(v) = doc.get("keyword_filters").filter(|v| !v.is_null()) {
            filters.keyword_filters = Some(FilterList::from_value(v)?);
        }
        if let Some(v) = doc.get("blocked_domains").filter(|v| !v.is_null()) {
            filters.blocked_domains = string_set(v, "blocked_domains", str::to_lowercase)?;
        }
        Ok(filters)
    }
}

fn string_set<C: FromIterator<Box<str>>>(value: &Value<'_>, what: &str, map: impl Fn(&str) -> String) -> Result<C> {
    let items = value.as_array().ok_or_else(|| Error::config(format!("{what} must be an array of strings")))?;
    items
        .iter()
        .map(|item| {
            item.as_str()
                .map(|s| map(s).into_boxed_str())
                .ok_or_else(|| Error::config(format!("{what} must contain only strings")))
        })
        .collect()
}

fn id_set(value: Option<&Value<'_>>, what: &str) -> Result<IdSet> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(IdSet::default());
    };
    let items = value.as_array().ok_or_else(|| Error::config(format!("{what} must be an array of account ids")))?;
    items.iter().map(|item| id_text(item).map_err(|e| Error::config(format!("{what}: {e}")))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> StatusKeys<'static> {
        StatusKeys {
            language: Some("en".into()),
            author: "1".into(),
            mentions: SmallVec::from_vec(vec!["2".into()]),
            reblog_author: Some("3".into()),
            domain: Some("example.com".into()),
        }
    }

    fn filters(json: &str) -> ViewerFilters {
        let mut bytes = json.as_bytes().to_vec();
        let doc = simd_json::to_borrowed_value(&mut bytes).unwrap();
        ViewerFilters::from_object(&doc).unwrap()
    }

    #[test]
    fn each_rule_hides_the_status() {
        assert!(filters("{}").allows(&status()));
        assert!(filters(r#"{"languages":["en","de"]}"#).allows(&status()));
        assert!(!filters(r#"{"languages":["de"]}"#).allows(&status()));
        assert!(!filters(r#"{"blocked_accounts":[1]}"#).allows(&status()));
        assert!(!filters(r#"{"muted_accounts":["2"]}"#).allows(&status()));
        assert!(!filters(r#"{"blocked_accounts":["3"]}"#).allows(&status()));
        assert!(!filters(r#"{"blocked_domains":["Example.COM"]}"#).allows(&status()));
        assert!(!filters(r#"{"blocked_by_accounts":[1]}"#).allows(&status()));
        // Blocked-by hides only the author's statuses, not mentions or reblogs.
        assert!(filters(r#"{"blocked_by_accounts":["2","3"]}"#).allows(&status()));
        assert!(filters(r#"{"keyword_filters":[]}"#).allows(&status()));
        assert!(!filters(r#"{"keyword_filters":[]}"#).is_empty());
        let local = StatusKeys { domain: None, ..status() };
        assert!(filters(r#"{"blocked_domains":["example.com"]}"#).allows(&local));
    }

    #[test]
    fn id_keys_keep_distinct_strings_distinct() {
        assert_eq!(IdKey::of("7"), IdKey::Number(7));
        assert_eq!(IdKey::of("0"), IdKey::Number(0));
        assert_eq!(IdKey::of("18446744073709551615"), IdKey::Number(u64::MAX));
        for text in ["007", "00", "", "-7", "+7", "7a", "18446744073709551616", "99999999999999999999", "١"] {
            assert_eq!(IdKey::of(text), IdKey::Text(text));
        }
        let set: IdSet = ["7", "007", "alice", "7", "18446744073709551616"].into_iter().collect();
        assert_eq!(set.len(), 4);
        assert!(set.contains("7") && set.contains("007") && set.contains("alice"));
        assert!(set.contains("18446744073709551616"));
        assert!(!set.contains("07") && !set.contains("8") && !set.contains("Alice"));
    }

    proptest::proptest! {
        /// IdSet against a hash set of the same strings.
        #[test]
        fn id_set_is_a_set_of_strings(
            members in proptest::collection::vec(id(), 0..40),
            probes in proptest::collection::vec(id(), 0..40),
        ) {
            let set: IdSet = members.iter().collect();
            let model: std::collections::HashSet<&String> = members.iter().collect();
            proptest::prop_assert_eq!(set.len(), model.len());
            for probe in members.iter().chain(&probes) {
                proptest::prop_assert_eq!(set.contains(probe), model.contains(probe), "{:?}", probe);
            }
        }
    }

    /// Ids near the edges: small numbers (so probes hit), leading zeros,
    /// around u64::MAX, and other text.
    fn id() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            (0u64..50).prop_map(|n| n.to_string()),
            (0u64..50).prop_map(|n| format!("0{n}")),
            any::<u64>().prop_map(|n| n.to_string()),
            (0u64..20).prop_map(|n| (u128::from(u64::MAX) + u128::from(n) - 10).to_string()),
            "[a-c0-9]{0,3}",
        ]
    }

    #[test]
    fn a_language_filter_hides_statuses_without_language() {
        let unknown = StatusKeys { language: None, ..status() };
        assert!(!filters(r#"{"languages":["en"]}"#).allows(&unknown));
        assert!(filters(r#"{"languages":[]}"#).allows(&unknown));
    }
}
