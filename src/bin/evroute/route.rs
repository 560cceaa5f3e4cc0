//! `evroute route --subscribers SUBS.ndjson [EVENTS.ndjson …]` (SPEC §8).
//!
//! Every event is routed through a real engine; after each event every
//! subscriber's queue is drained in subscriber-file order, so output comes in
//! event order, then subscriber order, then subscription order.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::process::ExitCode;
use std::time::Duration;

use evroute::event::{EventsLine, parse_events_line};
use evroute::internal::{top_level_span, with_document};
use evroute::{Engine, EngineConfig, Frame, Next, Subscriber, SubscriberOptions};
use simd_json::prelude::*;

pub(crate) struct Routed {
    /// The subscriber's `id` as it was written (JSON text).
    pub(crate) id: String,
    pub(crate) subscriber: Subscriber,
}

pub const USAGE: &str = "\
usage: evroute route --subscribers SUBS.ndjson [EVENTS.ndjson ...]

Routes events through an engine and prints one NDJSON line per delivery: the
WebSocket frame with the subscriber's id first,
{\"subscriber\":ID,\"stream\":[...],\"event\":E,\"payload\":\"...\"}.

  --subscribers FILE  one subscriber per line: its options (docs/protocol.md)
                      plus \"id\" and \"subscriptions\"
  EVENTS.ndjson       content-mode events or {\"channel\":C,\"message\":M} records,
                      one per line; stdin when no file is given
  -h, --help          this help

Exit status: 0, 1 when some lines were rejected (each reported on stderr as
FILE:LINE: reason), 2 on a usage or file error.";

pub fn run(args: &[String]) -> ExitCode {
    let mut subscribers_path = None;
    let mut event_paths = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--subscribers" => subscribers_path = it.next().cloned(),
            s if s.starts_with("--subscribers=") => subscribers_path = Some(s["--subscribers=".len()..].to_owned()),
            s if s.starts_with("--") => {
                eprintln!("evroute route: unknown option {s}\n{USAGE}");
                return ExitCode::from(2);
            }
            _ => event_paths.push(arg.clone()),
        }
    }
    let Some(subscribers_path) = subscribers_path else {
        eprintln!("evroute route: --subscribers is required\n{USAGE}");
        return ExitCode::from(2);
    };
    let engine = Engine::new(EngineConfig { queue_capacity: usize::MAX, ..EngineConfig::default() });
    let mut bad_lines = false;
    let subscribers = match load_subscribers(&engine, &subscribers_path, &mut bad_lines) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("evroute route: {subscribers_path}: {e}");
            return ExitCode::from(2);
        }
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if event_paths.is_empty() {
        event_paths.push("-".into());
    }
    for path in &event_paths {
        let (reader, name) = match open_input(path) {
            Ok(opened) => opened,
            Err(e) => {
                eprintln!("evroute route: {path}: {e}");
                return ExitCode::from(2);
            }
        };
        let result = for_each_line(reader, |number, line| {
            if let Err(reason) = publish_line(&engine, line) {
                eprintln!("{name}:{number}: {reason}");
                bad_lines = true;
            }
            drain(&subscribers, &mut out)
        });
        if let Err(e) = result {
            eprintln!("evroute route: {name}: {e}");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = out.flush() {
        eprintln!("evroute route: writing output: {e}");
        return ExitCode::from(2);
    }
    if bad_lines { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Opens an events file, or stdin for `-`; returns it with the name that
/// `FILE:LINE: reason` messages use.
pub(crate) fn open_input(path: &str) -> io::Result<(Box<dyn BufRead>, &str)> {
    if path == "-" {
        return Ok((Box::new(BufReader::new(io::stdin())), "<stdin>"));
    }
    Ok((Box::new(BufReader::new(File::open(path)?)), path))
}

/// Writes one delivery line: the WebSocket frame with the subscriber id first.
pub(crate) fn write_delivery(out: &mut impl Write, id: &str, frame: &Frame) -> io::Result<()> {
    out.write_all(b"{\"subscriber\":")?;
    out.write_all(id.as_bytes())?;
    out.write_all(b",")?;
    out.write_all(&frame.ws()[1..])?;
    out.write_all(b"\n")
}

/// Calls `f` with each non-blank line (1-based numbers), as bytes so that
/// invalid UTF-8 is reported by the engine rather than the reader.
pub(crate) fn for_each_line(
    mut reader: impl BufRead,
    mut f: impl FnMut(usize, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        number += 1;
        let line = buf.trim_ascii();
        if !line.is_empty() {
            f(number, line)?;
        }
    }
}

pub(crate) fn load_subscribers(engine: &Engine, path: &str, bad_lines: &mut bool) -> io::Result<Vec<Routed>> {
    let mut subscribers = Vec::new();
    for_each_line(BufReader::new(File::open(path)?), |number, line| {
        match load_subscriber(engine, line) {
            Ok((routed, errors)) => {
                for e in errors {
                    eprintln!("{path}:{number}: {e}");
                    *bad_lines = true;
                }
                subscribers.push(routed);
            }
            Err(e) => {
                eprintln!("{path}:{number}: {e}");
                *bad_lines = true;
            }
        }
        Ok(())
    })?;
    Ok(subscribers)
}

/// Creates one subscriber; bad subscriptions are returned as errors while the
/// subscriber keeps its good ones.
fn load_subscriber(engine: &Engine, line: &[u8]) -> Result<(Routed, Vec<String>), String> {
    with_document(line, &mut Vec::new(), evroute::ErrorKind::InvalidConfig, |doc| {
        let options = SubscriberOptions::from_value(doc, &["id", "subscriptions"])?;
        Ok((options, doc.get("subscriptions").map(|s| s.encode())))
    })
    .map_err(|e| e.to_string())
    .and_then(|(options, subscriptions)| {
        let id = top_level_span(line, "id")
            .map(|span| String::from_utf8_lossy(&line[span]).into_owned())
            .ok_or("subscriber has no \"id\"")?;
        let subscriber = engine.subscriber(options);
        let mut errors = Vec::new();
        if let Some(text) = subscriptions {
            let mut bytes = text.into_bytes();
            let list = simd_json::to_borrowed_value(&mut bytes).map_err(|e| e.to_string())?;
            let items = list.as_array().ok_or("\"subscriptions\" must be an array")?;
            for (i, item) in items.iter().enumerate() {
                if let Err(e) = subscriber.subscribe(item.encode().as_bytes()) {
                    errors.push(format!("subscription {}: {e}", i + 1));
                }
            }
        }
        Ok((Routed { id, subscriber }, errors))
    })
}

/// Publishes one events-file line: a `{"channel", "message"}` record or a
/// content-mode event.
fn publish_line(engine: &Engine, line: &[u8]) -> Result<(), String> {
    let published = match parse_events_line(line).map_err(|e| e.to_string())? {
        EventsLine::Channel { channel, message } => engine.publish_channel(channel.as_bytes(), &message),
        EventsLine::Content(event) => engine.publish(event),
    };
    published.map(drop).map_err(|e| e.to_string())
}

fn drain(subscribers: &[Routed], out: &mut impl Write) -> io::Result<()> {
    for routed in subscribers {
        let streams = routed.subscriber.streams();
        let mut frames = Vec::new();
        while let Next::Frame(frame) = routed.subscriber.next(Duration::ZERO) {
            frames.push(frame);
        }
        // Frames of one event for one subscriber come out in subscription
        // order; a subscriber's stream arrays are unique per subscription.
        frames.sort_by_key(|f| streams.iter().position(|s| s == f.stream()));
        for frame in frames {
            write_delivery(out, &routed.id, &frame)?;
        }
    }
    Ok(())
}
