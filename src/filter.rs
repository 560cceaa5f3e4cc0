//! Per-viewer filters (SPEC §5, §11). They live in memory on the subscriber and
//! are replaced wholesale; matching never calls back into the host.

use ahash::AHashSet;
use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;
use smallvec::SmallVec;

use crate::error::{Error, Result};
use crate::json::id_text;
use crate::keyword::FilterList;

/// What a status contributes to viewer filtering, extracted once per event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusKeys {
    pub language: Option<Box<str>>,
    pub author: Box<str>,
    pub mentions: SmallVec<[Box<str>; 4]>,
    pub reblog_author: Option<Box<str>>,
    /// Lowercased domain of a remote author; `None` for a local one.
    pub domain: Option<Box<str>>,
}

/// A viewer's filter sets. An absent or empty `languages` means "any language".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ViewerFilters {
    pub languages: Option<AHashSet<Box<str>>>,
    pub blocked_accounts: AHashSet<Box<str>>,
    pub muted_accounts: AHashSet<Box<str>>,
    pub blocked_domains: AHashSet<Box<str>>,
    /// Accounts that block the viewer: their statuses are hidden (author only).
    pub blocked_by_accounts: AHashSet<Box<str>>,
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
    pub fn allows(&self, status: &StatusKeys) -> bool {
        if let Some(languages) = &self.languages {
            match &status.language {
                Some(lang) if languages.contains(lang) => {}
                _ => return false,
            }
        }
        let hidden = |id: &str| self.blocked_accounts.contains(id) || self.muted_accounts.contains(id);
        if hidden(&status.author)
            || self.blocked_by_accounts.contains(&status.author)
            || status.mentions.iter().any(|m| hidden(m))
            || status.reblog_author.as_deref().is_some_and(hidden)
        {
            return false;
        }
        !status.domain.as_ref().is_some_and(|d| self.blocked_domains.contains(d))
    }

    /// Reads the filter keys of a subscriber object. Keys that are absent
    /// keep their default (empty); other keys are the caller's business.
    pub fn from_object(doc: &Value<'_>) -> Result<ViewerFilters> {
        let mut filters = ViewerFilters::default();
        if let Some(v) = doc.get("languages").filter(|v| !v.is_null()) {
            let set = string_set(v, "languages", |s| s.to_owned())?;
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

fn string_set(value: &Value<'_>, what: &str, map: impl Fn(&str) -> String) -> Result<AHashSet<Box<str>>> {
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

fn id_set(value: Option<&Value<'_>>, what: &str) -> Result<AHashSet<Box<str>>> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(AHashSet::new());
    };
    let items = value.as_array().ok_or_else(|| Error::config(format!("{what} must be an array of account ids")))?;
    items.iter().map(|item| id_text(item).map_err(|e| Error::config(format!("{what}: {e}")))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> StatusKeys {
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
    fn a_language_filter_hides_statuses_without_language() {
        let unknown = StatusKeys { language: None, ..status() };
        assert!(!filters(r#"{"languages":["en"]}"#).allows(&unknown));
        assert!(filters(r#"{"languages":[]}"#).allows(&unknown));
    }
}
