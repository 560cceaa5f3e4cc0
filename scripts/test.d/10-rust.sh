#!/usr/bin/env bash
# Lints and the Rust test suite (unit, golden corpus, proptest model, threads).
set -euo pipefail
cargo fmt --check
# --all-features lints the redis feature too, in the same check build.
cargo clippy --all-targets --all-features -- -D warnings
cargo test --release --all-features
