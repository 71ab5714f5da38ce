#!/usr/bin/env bash
# Runs every check and test of the project on a fresh machine: installs DynamoDB Local (cached
# in .cache/), checks formatting and lints, runs all tests (unit, simulator invariants, the real
# DynamoDB Local suite, CLI, doctests), the quickstart example, and the browser build with its
# test in headless Chromium (scripts/wasm.sh: installs Debian's Rust for wasm32, Chromium and
# wasm-bindgen-cli when missing).
#
# Knobs: DDBSTREAM_SEEDS (randomized simulator workloads, default 40),
#        DDBSTREAM_CACHE (where DynamoDB Local is installed, default .cache).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> installing DynamoDB Local (cached)"
scripts/install-dynamodb-local.sh

echo "==> formatting and lints"
cargo fmt --all -- --check
cargo fmt --manifest-path web/Cargo.toml -- --check  # the browser page: its own workspace
cargo clippy --all-targets --all-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features --quiet

echo "==> tests (unit, simulator, DynamoDB Local, CLI, benches in quick mode)"
cargo test --all-features --all-targets

echo "==> doctests (API docs and README examples)"
cargo test --all-features --doc

echo "==> quickstart"
cargo run --quiet --example quickstart

echo "==> the browser build (wasm32) and its test in headless Chromium"
scripts/wasm.sh test
