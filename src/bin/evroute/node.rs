//! `evroute node --redis URL --subscribers SUBS.ndjson`: one evroute node of
//! a Redis deployment (SPEC §9). It subscribes the file's subscribers,
//! attaches to Redis, keeps Mastodon's presence keys and prints every
//! delivery as `evroute route` does, until SIGINT or SIGTERM.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use evroute::redis_node::{RedisNode, RedisNodeOptions};
use evroute::{Engine, EngineConfig, Next};

use crate::route::{Routed, load_subscribers, write_delivery};

pub const USAGE: &str = "\
usage: evroute node --redis URL --subscribers SUBS.ndjson [--namespace NS]
                    [--presence-ttl SECS] [--presence-refresh SECS]

Runs one node of a Redis deployment: subscribes the file's subscribers,
PSUBSCRIBEs [NS:]timeline:*, keeps Mastodon's presence keys and prints every
delivery as `evroute route` does, until SIGINT or SIGTERM.

  --redis URL              redis://host:port/ (or rediss://, unix://)
  --subscribers FILE       the subscribers file of `evroute route`
  --namespace NS           Mastodon's REDIS_NAMESPACE (default: none)
  --presence-ttl SECS      expiry of the subscribed:* keys (default 1080)
  --presence-refresh SECS  how often they are set again (default 360)
  -h, --help               this help";

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct Args {
    url: String,
    subscribers: String,
    namespace: Option<String>,
    options: RedisNodeOptions,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let (mut url, mut subscribers, mut namespace) = (None, None, None);
    let mut options = RedisNodeOptions::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        let seconds = |v: String| {
            v.parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .map(Duration::from_secs)
                .ok_or(format!("{arg}: not a positive number of seconds"))
        };
        match arg.as_str() {
            "--redis" => url = Some(value()?),
            "--subscribers" => subscribers = Some(value()?),
            "--namespace" => namespace = Some(value()?).filter(|ns| !ns.is_empty()),
            "--presence-ttl" => options.presence_ttl = seconds(value()?)?,
            "--presence-refresh" => options.presence_refresh = seconds(value()?)?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    match (url, subscribers) {
        (Some(url), Some(subscribers)) => Ok(Args { url, subscribers, namespace, options }),
        _ => Err("--redis and --subscribers are required".into()),
    }
}

pub fn run(args: &[String]) -> ExitCode {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("evroute node: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = EngineConfig { queue_capacity: 1 << 16, redis_namespace: args.namespace, ..EngineConfig::default() };
    let engine = Engine::new(config);
    let mut bad_lines = false;
    let subscribers = match load_subscribers(&engine, &args.subscribers, &mut bad_lines) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("evroute node: {}: {e}", args.subscribers);
            return ExitCode::from(2);
        }
    };
    let node = match RedisNode::attach_with(&engine, &args.url, args.options) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("evroute node: {e}");
            return ExitCode::from(2);
        }
    };
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
    while !node.wait_subscribed(Duration::from_millis(200)) {
        if STOP.load(Ordering::SeqCst) {
            return ExitCode::SUCCESS;
        }
    }
    eprintln!(
        "evroute node: subscribed to {} with {} subscribers on {} channels",
        node.pattern(),
        subscribers.len(),
        engine.active_channels().len()
    );
    if let Err(e) = deliver_until_stopped(&subscribers) {
        eprintln!("evroute node: writing output: {e}");
    }
    node.stop();
    let s = node.stats();
    eprintln!(
        "evroute node: stopped; received {}, rejected {}, ignored {}, reconnects {}",
        s.received, s.rejected, s.ignored, s.reconnects
    );
    if bad_lines { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Waits on every subscriber's readiness fd and prints what arrives.
fn deliver_until_stopped(subscribers: &[Routed]) -> io::Result<()> {
    let mut fds = Vec::with_capacity(subscribers.len());
    for routed in subscribers {
        let fd = routed.subscriber.ready_fd().map_err(|e| io::Error::other(e.to_string()))?;
        fds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
    }
    let mut out = BufWriter::new(io::stdout().lock());
    while !STOP.load(Ordering::SeqCst) {
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 200) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if ready > 0 {
            drain(subscribers, &mut out)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Prints what each subscriber has, in queue order (frames of several
/// events may wait, so `route`'s per-event sort does not apply).
fn drain(subscribers: &[Routed], out: &mut impl Write) -> io::Result<()> {
    for routed in subscribers {
        while let Next::Frame(frame) = routed.subscriber.next(Duration::ZERO) {
            write_delivery(out, &routed.id, &frame)?;
        }
    }
    Ok(())
}
