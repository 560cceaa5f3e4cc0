//! The `evroute` command line: `route`, `bench`.

mod bench;
mod route;

use std::process::ExitCode;

const USAGE: &str = "\
usage:
  evroute route --subscribers SUBS.ndjson [EVENTS.ndjson ...]
      Routes events (from the files, or stdin) to the subscribers and prints
      one NDJSON line per delivery.
  evroute bench [--help]
      Runs the fan-out benchmark on a built-in workload.
  evroute --version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("route") => route::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
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
