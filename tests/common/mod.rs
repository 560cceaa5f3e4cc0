//! Shared by the integration tests: an independent JSON reader and a naive
//! reference router, plus helpers to read frames from the engine.
#![allow(dead_code)]

pub mod corpus;
pub mod json;
pub mod reference;

use std::time::Duration;

use evroute::{Frame, Next, Subscriber};
use reference::Expected;

/// Everything observable about a frame, in the reference's shape.
pub fn observed(frame: &Frame) -> Expected {
    Expected {
        ws: String::from_utf8(frame.ws().to_vec()).expect("ws bytes are UTF-8"),
        sse: String::from_utf8(frame.sse().to_vec()).expect("sse bytes are UTF-8"),
        event: frame.event().to_string(),
        payload: frame.payload().map(str::to_string),
        stream: frame.stream().to_string(),
    }
}

/// Takes every frame that is queued now.
pub fn drain(sub: &Subscriber) -> Vec<Expected> {
    let mut out = Vec::new();
    loop {
        match sub.next(Duration::ZERO) {
            Next::Frame(f) => out.push(observed(&f)),
            Next::Empty | Next::Timeout => return out,
            Next::Closed(why) => panic!("subscriber closed unexpectedly: {why}"),
        }
    }
}
