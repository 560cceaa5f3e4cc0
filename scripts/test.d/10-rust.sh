#!/usr/bin/env bash
# Lints and the Rust test suite (unit, golden corpus, proptest model, threads).
set -euo pipefail
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --release
