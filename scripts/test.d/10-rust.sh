#!/usr/bin/env bash
# Lints, the feature matrix and the Rust test suite (unit, golden corpus,
# proptest model, threads).
set -euo pipefail
cargo fmt --check
# --all-features lints every feature (redis, bench) in the same check build.
cargo clippy --all-targets --all-features -- -D warnings
# Feature matrix: code behind cfg compiles without features and with the
# defaults (redis), and the tests pass without any feature (debug build, no
# Redis node, no baselines; the two long stress tests, which no feature
# changes, run only in the full suite). The full suite runs once, with every
# feature.
cargo check --all-targets --no-default-features
cargo check --all-targets
cargo test --no-default-features -- --skip eight_threads_mixing_every_operation --skip memory_stays_bounded
cargo test --release --all-features
