//! `evroute route`: placeholder.

use std::process::ExitCode;

pub fn run(_args: &[String]) -> ExitCode {
    ExitCode::FAILURE
}
