//! `evroute publish --redis URL [--namespace NS] [EVENTS.ndjson …]`: publishes
//! events to Redis as the Mastodon channel messages their content rules
//! derive, for every evroute node (or Mastodon streaming server) to deliver.
//! Lines are those of `evroute route`: content-mode events or channel records.

use std::io;
use std::process::ExitCode;

use evroute::ErrorKind;
use evroute::redis_node::{Published, Publisher};

use crate::route::{for_each_line, open_input};

pub const USAGE: &str = "\
usage: evroute publish --redis URL [--namespace NS] [EVENTS.ndjson ...]

Publishes events to Redis as the Mastodon channel messages their content
rules derive, for every evroute node (or Mastodon streaming server) to deliver.

  --redis URL     redis://host:port/
  --namespace NS  Mastodon's REDIS_NAMESPACE (default: none)
  EVENTS.ndjson   the lines `evroute route` reads (content-mode events or
                  channel records); stdin when no file is given
  -h, --help      this help";

pub fn run(args: &[String]) -> ExitCode {
    let (mut url, mut namespace, mut paths) = (None, None, Vec::new());
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--redis" => url = it.next().cloned(),
            "--namespace" => namespace = it.next().cloned(),
            s if s.starts_with("--") => {
                eprintln!("evroute publish: unknown option {s}\n{USAGE}");
                return ExitCode::from(2);
            }
            path => paths.push(path.to_owned()),
        }
    }
    let Some(url) = url else {
        eprintln!("evroute publish: --redis is required\n{USAGE}");
        return ExitCode::from(2);
    };
    let mut publisher = match Publisher::connect(&url, namespace.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("evroute publish: {e}");
            return ExitCode::from(2);
        }
    };
    if paths.is_empty() {
        paths.push("-".into());
    }
    let (mut events, mut total, mut bad_lines) = (0u64, Published::default(), false);
    for path in &paths {
        let (reader, name) = match open_input(path) {
            Ok(opened) => opened,
            Err(e) => {
                eprintln!("evroute publish: {path}: {e}");
                return ExitCode::from(2);
            }
        };
        let result = for_each_line(reader, |number, line| match publisher.publish_record(line) {
            Ok(p) => {
                events += 1;
                total.channels += p.channels;
                total.receivers += p.receivers;
                Ok(())
            }
            // Redis went away: later lines would fail the same way.
            Err(e) if e.kind() == ErrorKind::Io => Err(io::Error::other(format!("{name}:{number}: {e}"))),
            Err(e) => {
                eprintln!("{name}:{number}: {e}");
                bad_lines = true;
                Ok(())
            }
        });
        if let Err(e) = result {
            eprintln!("evroute publish: {e}");
            return ExitCode::from(2);
        }
    }
    eprintln!("evroute publish: {events} events as {} channel messages, {} receivers", total.channels, total.receivers);
    if bad_lines { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
