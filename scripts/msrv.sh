#!/usr/bin/env bash
# The oldest Rust that can build a crate with its locked dependencies: the highest
# `rust-version` among the packages its build reaches (normal and build dependencies, for one
# target platform, with the features given; dev-dependencies are not part of the minimum).
#
#   scripts/msrv.sh                  print it for the root crate (host platform, all features)
#   scripts/msrv.sh --check          fail unless Cargo.toml's rust-version states exactly that
#   scripts/msrv.sh --manifest web/Cargo.toml --target wasm32-unknown-unknown [--features aws]
#                                    the same for another manifest and platform
#
# Used by scripts/test.sh (so rust-version cannot drift from the lockfile again) and by
# scripts/wasm.sh (to say plainly when a fallback compiler is too old, instead of failing
# inside cargo).
set -euo pipefail
cd "$(dirname "$0")/.."

manifest=Cargo.toml
target=""
check=0
while [ $# -gt 0 ]; do
    case "$1" in
        --check) check=1 ;;
        --manifest) manifest="$2"; shift ;;
        --target) target="$2"; shift ;;
        *) echo "msrv.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done

platform="${target:-$(rustc -vV | sed -n 's/^host: //p')}"
metadata="$(cargo metadata --format-version 1 --locked --all-features \
    --manifest-path "$manifest" --filter-platform "$platform")"

# Walk the resolve graph from the root over normal and build edges only.
result="$(python3 -c '
import json, sys
meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = meta["resolve"]["root"]
seen, todo = {root}, [root]
while todo:
    for dep in nodes[todo.pop()]["deps"]:
        kinds = {k["kind"] for k in dep["dep_kinds"]}
        if kinds <= {"dev"} or dep["pkg"] in seen:
            continue
        seen.add(dep["pkg"])
        todo.append(dep["pkg"])
def key(version):
    return tuple(int(part) for part in version.split("."))
best = None
for pid in seen - {root}:
    rv = packages[pid].get("rust_version")
    if rv and (best is None or key(rv) > key(best[0])):
        best = (rv, packages[pid]["name"] + "@" + packages[pid]["version"])
declared = packages[root].get("rust_version") or ""
print(best[0] if best else "", best[1] if best else "", declared)
' <<<"$metadata")"
read -r needed needed_by declared <<<"$result"

if [ "$check" = 0 ]; then
    echo "$needed"
    exit 0
fi

# Compare as numbers: 1.94.1 and 1.94 differ, and the declared one must be the real minimum.
norm() { awk -F. '{ printf "%d.%d.%d\n", $1, $2, $3 }' <<<"$1"; }
if [ -z "$declared" ]; then
    echo "msrv.sh: $manifest declares no rust-version; the locked dependencies need $needed ($needed_by)" >&2
    exit 1
fi
if [ "$(norm "$declared")" != "$(norm "$needed")" ]; then
    echo "msrv.sh: $manifest says rust-version = \"$declared\" but the locked dependencies need $needed ($needed_by): set rust-version = \"$needed\"" >&2
    exit 1
fi
echo "rust-version $declared matches the locked dependencies ($needed_by needs $needed)"
