//! Frames (SPEC §4): encoded once per (event, stream array) and shared by
//! every subscriber that receives them.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::json::escape_into;

/// The part of a frame that does not depend on the stream: event name,
/// payload string and the SSE encoding.
#[derive(Debug)]
pub struct FrameBody {
    event: Box<str>,
    payload: Option<Box<str>>,
    sse: Box<[u8]>,
}

impl FrameBody {
    pub fn new(event: &str, payload: Option<&str>) -> Arc<FrameBody> {
        Self::with_payload(event, payload.map(Box::from))
    }

    /// Like `new`, taking an owned payload so the hot path does not copy it again.
    pub fn with_payload(event: &str, payload: Option<Box<str>>) -> Arc<FrameBody> {
        let payload_ref = payload.as_deref();
        let mut sse = Vec::with_capacity(event.len() + payload_ref.map_or(9, str::len) + 16);
        sse.extend_from_slice(b"event: ");
        sse.extend_from_slice(event.as_bytes());
        sse.push(b'\n');
        match payload_ref {
            None => sse.extend_from_slice(b"data: undefined\n"),
            Some(text) => {
                // One data line per line of the payload, so a pretty-printed
                // payload cannot end the frame early.
                for line in split_lines(text) {
                    sse.extend_from_slice(b"data: ");
                    sse.extend_from_slice(line.as_bytes());
                    sse.push(b'\n');
                }
            }
        }
        sse.push(b'\n');
        Arc::new(FrameBody { event: event.into(), payload, sse: sse.into_boxed_slice() })
    }

    pub fn event(&self) -> &str {
        &self.event
    }

    pub fn payload(&self) -> Option<&str> {
        self.payload.as_deref()
    }
}

/// Splits on CRLF, LF and CR, as the SSE standard reads line ends.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
        }
    })
}

/// One delivery: immutable, shared through `Arc`.
#[derive(Debug)]
pub struct Frame {
    body: Arc<FrameBody>,
    stream: Arc<str>,
    ws: Box<[u8]>,
}

impl Frame {
    pub fn new(body: &Arc<FrameBody>, stream: &Arc<str>) -> Frame {
        let payload_len = body.payload.as_ref().map_or(0, |p| p.len() + p.len() / 8 + 16);
        let mut ws = Vec::with_capacity(stream.len() + body.event.len() + payload_len + 32);
        ws.extend_from_slice(b"{\"stream\":");
        ws.extend_from_slice(stream.as_bytes());
        ws.extend_from_slice(b",\"event\":\"");
        escape_into(&mut ws, &body.event);
        ws.push(b'"');
        if let Some(payload) = &body.payload {
            ws.extend_from_slice(b",\"payload\":\"");
            escape_into(&mut ws, payload);
            ws.push(b'"');
        }
        ws.push(b'}');
        Frame { body: Arc::clone(body), stream: Arc::clone(stream), ws: ws.into_boxed_slice() }
    }

    pub fn event(&self) -> &str {
        &self.body.event
    }

    /// The payload string; `None` when the event had no payload.
    pub fn payload(&self) -> Option<&str> {
        self.body.payload.as_deref()
    }

    /// The stream array as JSON text, e.g. `["public"]`.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn sse(&self) -> &[u8] {
        &self.body.sse
    }

    pub fn ws(&self) -> &[u8] {
        &self.ws
    }
}

/// Frames of one publish, one per distinct stream array. Streams are
/// interned by the engine, so pointer equality almost always decides.
pub struct FrameCache {
    body: Arc<FrameBody>,
    frames: SmallVec<[(Arc<str>, Arc<Frame>); 4]>,
}

impl FrameCache {
    pub fn new(body: Arc<FrameBody>) -> FrameCache {
        FrameCache { body, frames: SmallVec::new() }
    }

    /// What every frame of this cache shares.
    pub fn body(&self) -> &Arc<FrameBody> {
        &self.body
    }

    pub fn get(&mut self, stream: &Arc<str>) -> &Arc<Frame> {
        let pos = self
            .frames
            .iter()
            .position(|(s, _)| Arc::ptr_eq(s, stream))
            .or_else(|| self.frames.iter().position(|(s, _)| **s == **stream));
        let pos = match pos {
            Some(p) => p,
            None => {
                let frame = Arc::new(Frame::new(&self.body, stream));
                self.frames.push((Arc::clone(stream), frame));
                self.frames.len() - 1
            }
        };
        &self.frames[pos].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(event: &str, payload: Option<&str>, stream: &str) -> Frame {
        Frame::new(&FrameBody::new(event, payload), &Arc::from(stream))
    }

    #[test]
    fn mastodon_documented_examples_are_byte_exact() {
        let f = frame("delete", Some("108914398911648589"), r#"["public"]"#);
        assert_eq!(f.sse(), b"event: delete\ndata: 108914398911648589\n\n");
        let f = frame("delete", Some("106692867363994015"), r#"["public"]"#);
        assert_eq!(f.ws(), br#"{"stream":["public"],"event":"delete","payload":"106692867363994015"}"#);
        let f = frame("filters_changed", None, r#"["user"]"#);
        assert_eq!(f.sse(), b"event: filters_changed\ndata: undefined\n\n");
        assert_eq!(f.ws(), br#"{"stream":["user"],"event":"filters_changed"}"#);
        assert_eq!(f.payload(), None);
    }

    #[test]
    fn object_payloads_are_escaped_into_a_string() {
        let f = frame("update", Some(r#"{"id":"1","content":"a\nb"}"#), r#"["hashtag","Rust"]"#);
        assert_eq!(
            f.ws(),
            br#"{"stream":["hashtag","Rust"],"event":"update","payload":"{\"id\":\"1\",\"content\":\"a\\nb\"}"}"#
        );
    }

    #[test]
    fn multi_line_payloads_become_several_data_lines() {
        let f = frame("update", Some("{\n  \"id\": \"1\"\r\n}"), r#"["public"]"#);
        assert_eq!(f.sse(), b"event: update\ndata: {\ndata:   \"id\": \"1\"\ndata: }\n\n");
    }

    #[test]
    fn cache_shares_one_frame_per_stream() {
        let mut cache = FrameCache::new(FrameBody::new("update", Some("{}")));
        let a: Arc<str> = Arc::from(r#"["public"]"#);
        let b: Arc<str> = Arc::from(r#"["public"]"#);
        let first = Arc::clone(cache.get(&a));
        assert!(Arc::ptr_eq(&first, cache.get(&b)));
        let other = Arc::clone(cache.get(&Arc::from(r#"["public:local"]"#)));
        assert!(!Arc::ptr_eq(&first, &other));
        assert!(std::ptr::eq(first.sse(), other.sse()));
    }
}
