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

echo "==> network fault tools (iptables, iproute2)"
# tests/chaos/net_faults.rs breaks the network with iptables in a private network namespace.
# Where namespaces are permitted (root) a missing iptables fails that test, so install it here;
# elsewhere the test skips itself and nothing is needed.
missing=()
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "${missing[@]}" >/dev/null \
            || { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
    else
        echo "not installing ${missing[*]} (needs root and apt-get): the network fault test will skip"
    fi
fi

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
