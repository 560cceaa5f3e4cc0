//! The searchable text of a status (SPEC §11), as Mastodon's streaming
//! server builds it: spoiler text, content, poll option titles and media
//! descriptions joined with blank lines, `<br>` and `</p><p>` turned into
//! line breaks, then the text content of that HTML fragment.
//!
//! Mastodon takes the text content with JSDOM. Here html5ever's tokenizer
//! (a WHATWG-conformant one: entities, comments, raw-text elements, CR
//! normalization) feeds a sink that keeps the character data the tree
//! builder would put in text nodes. Known divergence: text that a browser
//! foster-parents out of a `<table>` keeps its source position, and CDATA
//! inside `<svg>`/`<math>` is dropped. Mastodon's sanitizer removes tables,
//! SVG and MathML from every status, so real statuses never contain them.

use std::cell::{Cell, RefCell};

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts};
use simd_json::prelude::*;
use simd_json::tape::Value;

use crate::json::with_tape;

/// The searchable text of a status payload (its JSON text). `None` when the
/// payload is not a JSON object.
pub fn status_text(payload: &str) -> Option<String> {
    with_tape(payload.as_bytes(), |doc| Ok(doc.as_object().is_some().then(|| searchable_html(doc)))).ok().flatten().map(
        |html| {
            let html = html.replace_br().replace("</p><p>", "\n\n");
            fragment_text(&html)
        },
    )
}

fn str_or_empty<'a>(value: Option<Value<'_, 'a>>) -> &'a str {
    value.and_then(|v| v.into_string()).unwrap_or("")
}

/// The fields of §11 joined with `"\n\n"`, still HTML.
fn searchable_html(status: Value<'_, '_>) -> Html {
    let mut parts: Vec<&str> = vec![str_or_empty(status.get("spoiler_text")), str_or_empty(status.get("content"))];
    if let Some(options) = status.get("poll").and_then(|p| p.get("options")).and_then(|o| o.as_array()) {
        parts.extend(options.iter().map(|o| str_or_empty(o.get("title"))));
    }
    if let Some(media) = status.get("media_attachments").and_then(|m| m.as_array()) {
        parts.extend(media.iter().map(|m| str_or_empty(m.get("description"))));
    }
    Html(parts.join("\n\n"))
}

struct Html(String);

impl Html {
    /// Mastodon's `replace(/<br\s*\/?>/g, '\n')`: `\s` is JavaScript's
    /// white space (`Zs`, the ASCII spaces, line terminators and U+FEFF;
    /// not U+0085), the match is case-sensitive.
    fn replace_br(self) -> String {
        let s = self.0;
        if !s.contains("<br") {
            return s;
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s.as_str();
        while let Some(i) = rest.find("<br") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 3..];
            let tail = after.trim_start_matches(is_js_space);
            let tail = tail.strip_prefix('/').unwrap_or(tail);
            match tail.strip_prefix('>') {
                Some(next) => {
                    out.push('\n');
                    rest = next;
                }
                None => {
                    out.push_str("<br");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

fn is_js_space(c: char) -> bool {
    (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}'
}

/// Collects the character data of an HTML fragment.
#[derive(Default)]
struct TextSink {
    out: RefCell<String>,
    /// Inside `<template>`: its contents are not children, so not text content.
    template_depth: Cell<u32>,
    /// After `<pre>`, `<listing>` or `<textarea>` a leading newline is dropped.
    skip_newline: Cell<bool>,
}

impl TokenSink for TextSink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let skip_newline = self.skip_newline.replace(false);
        match token {
            Token::CharacterTokens(text) if self.template_depth.get() == 0 => {
                let text: &str = &text;
                let text = if skip_newline { text.strip_prefix('\n').unwrap_or(text) } else { text };
                self.out.borrow_mut().push_str(text);
            }
            Token::TagToken(tag) => {
                let name: &str = &tag.name;
                match tag.kind {
                    TagKind::StartTag => {
                        if name == "template" {
                            self.template_depth.set(self.template_depth.get() + 1);
                        }
                        if matches!(name, "pre" | "listing" | "textarea") {
                            self.skip_newline.set(true);
                        }
                        // The tree builder switches the tokenizer for these
                        // (scripting disabled, as in JSDOM by default).
                        return match name {
                            "title" | "textarea" => TokenSinkResult::RawData(RawKind::Rcdata),
                            "style" | "xmp" | "iframe" | "noembed" | "noframes" => {
                                TokenSinkResult::RawData(RawKind::Rawtext)
                            }
                            "script" => TokenSinkResult::RawData(RawKind::ScriptData),
                            "plaintext" => TokenSinkResult::Plaintext,
                            _ => TokenSinkResult::Continue,
                        };
                    }
                    TagKind::EndTag => {
                        if name == "template" {
                            self.template_depth.set(self.template_depth.get().saturating_sub(1));
                        }
                    }
                }
            }
            // A NUL in data is a parse error the tree builder ignores.
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

/// The text content of an HTML fragment: tags and comments dropped,
/// entities (named and numeric) decoded.
pub fn fragment_text(html: &str) -> String {
    if !html.contains(['<', '&', '\r', '\0']) {
        return html.to_owned();
    }
    let tokenizer = Tokenizer::new(TextSink::default(), TokenizerOpts { discard_bom: false, ..Default::default() });
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.out.take()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_dropped_entities_decoded() {
        assert_eq!(fragment_text("<p>Hello <a href=\"x&amp;y\">wor<b>ld</b></a></p>"), "Hello world");
        assert_eq!(
            fragment_text("a &amp; b &lt;c&gt; &quot;d&quot; &#39;e&#x27; &eacute;&nbsp;f"),
            "a & b <c> \"d\" 'e' é\u{a0}f"
        );
        // Legacy entities without a semicolon, and numeric references that
        // the HTML standard remaps or replaces.
        assert_eq!(fragment_text("&ampx &copy2 &#128; &#0; &#xD800; &#x110000;"), "&x ©2 € \u{fffd} \u{fffd} \u{fffd}");
        assert_eq!(fragment_text("&unknown; &"), "&unknown; &");
    }

    #[test]
    fn comments_scripts_templates_and_newlines() {
        assert_eq!(fragment_text("a<!-- hidden <b>x</b> -->b"), "ab");
        assert_eq!(fragment_text("<script>if (a < b) x()</script>"), "if (a < b) x()");
        assert_eq!(fragment_text("<textarea><b>&amp;</b></textarea>"), "<b>&</b>");
        assert_eq!(fragment_text("<style>&amp;</style>"), "&amp;");
        assert_eq!(fragment_text("a<template>b</template>c"), "ac");
        assert_eq!(fragment_text("<pre>\nx\n</pre>"), "x\n");
        assert_eq!(fragment_text("a\r\nb\rc\0d"), "a\nb\ncd");
        assert_eq!(fragment_text("Ärger <span class=\"h\">ДЮНА</span> 日本"), "Ärger ДЮНА 日本");
    }

    #[test]
    fn status_text_joins_fields_and_breaks_lines() {
        let status = r#"{"spoiler_text":"CW &amp; more","content":"<p>one<br>two<br />three<br/>four<br  >five</p><p>six</p>",
            "poll":{"options":[{"title":"yes"},{"title":"no"}]},
            "media_attachments":[{"description":"a cat"},{"description":null}]}"#;
        assert_eq!(
            status_text(status).unwrap(),
            "CW & more\n\none\ntwo\nthree\nfour\nfive\n\nsix\n\nyes\n\nno\n\na cat\n\n"
        );
        assert_eq!(status_text(r#"{"content":"<p>x</p>"}"#).unwrap(), "\n\nx");
        // Mastodon's replacements are case-sensitive; `<BR>` is still a tag.
        assert_eq!(status_text(r#"{"content":"a<BR>b</P><P>c<br x>d"}"#).unwrap(), "\n\nabcd");
        assert_eq!(status_text("\"not a status\""), None);
    }
}
