//! The `evroute` command line: `route`, with the `redis` feature (on by
//! default) `node` and `publish`, and with the `bench` feature `bench`.

#[cfg(feature = "bench")]
mod bench;
#[cfg(feature = "bench")]
mod bench_churn;
#[cfg(feature = "bench")]
mod bench_filters;
#[cfg(feature = "redis")]
mod node;
#[cfg(feature = "redis")]
mod publish;
mod route;

use std::process::ExitCode;

const USAGE: &str = "\
usage:
  evroute route --subscribers SUBS.ndjson [EVENTS.ndjson ...]
      Routes events (from the files, or stdin) to the subscribers and prints
      one NDJSON line per delivery.
  evroute bench [--help]
      Runs the fan-out benchmark on a built-in workload (feature `bench`).
  evroute node --redis URL --subscribers SUBS.ndjson [--namespace NS]
      Runs one node of a Redis deployment: delivers what arrives on Redis
      to the subscribers and prints it like `route`, until SIGINT/SIGTERM.
  evroute publish --redis URL [--namespace NS] [EVENTS.ndjson ...]
      Publishes events to Redis as Mastodon channel messages.
      (node and publish need the default feature `redis`.)
  evroute --version
Every command takes --help.";

/// The help of a command that prints it from here (bench prints its own).
fn command_usage(command: &str) -> Option<&'static str> {
    match command {
        "route" => Some(route::USAGE),
        #[cfg(feature = "redis")]
        "node" => Some(node::USAGE),
        #[cfg(feature = "redis")]
        "publish" => Some(publish::USAGE),
        _ => None,
    }
}

/// Writes the library's log records (Redis outages, skipped messages) to
/// stderr: the library itself never writes there.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("evroute: {}: {}", record.level().as_str().to_ascii_lowercase(), record.args());
        }
    }

    fn flush(&self) {}
}

static STDERR_LOGGER: StderrLogger = StderrLogger;

/// `evroute COMMAND --help` (or `-h`) anywhere among the command's arguments.
fn wants_help(args: &[String]) -> bool {
    args.iter().skip(1).any(|a| a == "--help" || a == "-h")
}

fn main() -> ExitCode {
    if log::set_logger(&STDERR_LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(command) if wants_help(&args) && command_usage(command).is_some() => {
            println!("{}", command_usage(command).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Some("route") => route::run(&args[1..]),
        #[cfg(feature = "bench")]
        Some("bench") => bench::run(&args[1..]),
        #[cfg(not(feature = "bench"))]
        Some("bench") => {
            eprintln!(
                "evroute bench: this evroute was built without the benchmark; \
                 run it with `cargo run --release --features bench -- bench`"
            );
            ExitCode::from(2)
        }
        #[cfg(feature = "redis")]
        Some("node") => node::run(&args[1..]),
        #[cfg(feature = "redis")]
        Some("publish") => publish::run(&args[1..]),
        #[cfg(not(feature = "redis"))]
        Some(command @ ("node" | "publish")) => {
            eprintln!(
                "evroute {command}: this evroute was built without Redis support; \
                 rebuild it with the default features (`cargo build --release`)"
            );
            ExitCode::from(2)
        }
        Some("--version" | "-V") => {
            println!("evroute {}", evroute::VERSION);
            ExitCode::SUCCESS
        }
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
