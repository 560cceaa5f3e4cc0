//! `evroute bench`: placeholder until the benchmark issue lands.

use std::process::ExitCode;

pub fn run(_args: &[String]) -> ExitCode {
    eprintln!("evroute bench: not built yet");
    ExitCode::FAILURE
}
