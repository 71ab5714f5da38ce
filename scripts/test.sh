#!/usr/bin/env bash
# Runs every check and test of the project on a fresh machine: installs DynamoDB Local (cached
# in .cache/) and PostgreSQL (Debian's package, when missing), checks formatting and lints, runs
# all tests (unit, simulator invariants, the real DynamoDB Local suite, the replica sinks on a
# real PostgreSQL, CLI, doctests), the quickstart example, and the browser build with its
# test in headless Chromium (scripts/wasm.sh: adds rustup's wasm32 target, installs Chromium and
# wasm-bindgen-cli when missing).
#
# Knobs: DDBSTREAM_SEEDS (randomized simulator workloads, default 40),
#        DDBSTREAM_CACHE (where DynamoDB Local is installed, default .cache).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says how long the one before it took (a cold run's budget is in issue #13's note).
step_started=$SECONDS
step() {
    [ -z "${step_name:-}" ] || echo "    ($step_name: $((SECONDS - step_started)) s)"
    step_name="$1"
    step_started=$SECONDS
    [ -z "$1" ] || echo "==> $1"
}
trap 'status=$?; step ""; echo "==> $([ $status = 0 ] && echo passed || echo FAILED) after $SECONDS s"' EXIT

step "installing DynamoDB Local (cached)"
scripts/install-dynamodb-local.sh

step "network fault tools (iptables, iproute2)"
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

step "PostgreSQL (Debian's postgresql package)"
# The PostgreSQL replica's tests (tests/sinks, tests/stores) start their own server with initdb
# and postgres from /usr/lib/postgresql/*/bin on a free loopback port; they fail, never skip,
# when it is missing. Install it as root with apt-get, without the default cluster (nothing
# listens on 5432, and the install stays short).
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        mkdir -p /etc/postgresql-common
        [ -e /etc/postgresql-common/createcluster.conf ] \
            || echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
        pg_install() {
            apt-get install -y -qq -o Dpkg::Options::=--force-confold postgresql >/dev/null
        }
        pg_install || { apt-get update -qq && pg_install; }
    else
        echo "PostgreSQL is missing and this is not root with apt-get: install Debian's" \
             "postgresql package, or the PostgreSQL tests fail"
    fi
fi

step "formatting, lints, and the declared minimum Rust"
scripts/msrv.sh --check  # rust-version in Cargo.toml = what the locked dependencies need
cargo fmt --all -- --check
cargo fmt --manifest-path web/Cargo.toml -- --check  # the browser page: its own workspace
cargo clippy --all-targets --all-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features --quiet

step "tests (unit, simulator, DynamoDB Local, CLI, benches in quick mode)"
cargo test --all-features --all-targets

step "doctests (API docs and README examples)"
cargo test --all-features --doc

step "quickstart"
cargo run --quiet --example quickstart

step "the browser build (wasm32) and its test in headless Chromium"
scripts/wasm.sh test
