#!/usr/bin/env bash
# The browser build of the consumer (docs/browser.md): wasm32-unknown-unknown, the page in
# web/, and its test in headless Chromium.
#
#   scripts/wasm.sh setup   install what is missing (see below); idempotent
#   scripts/wasm.sh check   the library (consumer core + AWS source) builds for wasm32
#   scripts/wasm.sh build   the page: web/ compiled, wasm-bindgen --target web, into web/dist/
#   scripts/wasm.sh test    setup, build (which builds the library for wasm32 too), then
#                           web/test/browser.test.mjs (node --test):
#                           DynamoDB Local with CORS, the page on loopback, Chromium headless;
#                           screenshot in target/browser/page.png
#   scripts/wasm.sh serve   build, then serve web/dist on http://127.0.0.1:${PORT:-8080}/
#
# The toolchain: the rustup toolchain (the one that builds everything else) with its
# wasm32-unknown-unknown standard library, added with `rustup target add` when missing; it links
# with the rust-lld that ships with it. Only when rustup cannot add the target does the script
# fall back to Debian's Rust (rustc-web / cargo-web, the standard library's sources in
# rust-web-src, built with -Zbuild-std and linked by lld's wasm-ld) — and then it first checks
# that compiler against the Rust the lockfile needs (scripts/msrv.sh) and stops with a plain
# message if it is too old, instead of failing inside cargo.
# wasm-bindgen-cli is installed with the native cargo at exactly the wasm-bindgen version of
# web/Cargo.lock; Chromium is Debian's; playwright-core and the AWS SDK for JavaScript come from
# web/test/package-lock.json (playwright downloads no browser: it is given Debian's).
#
# Knobs: WASM_TOOLCHAIN (rustup | debian; default: rustup when it can add the target),
#        WASM_TARGET_DIR (default target/wasm), CHROMIUM (default /usr/bin/chromium),
#        DDBSTREAM_CACHE (DynamoDB Local, as in test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

WASM_TARGET_DIR="${WASM_TARGET_DIR:-$repo/target/wasm}"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export CHROMIUM
TARGET=wasm32-unknown-unknown
DEBIAN_CARGO="${WASM_DEBIAN_CARGO:-/usr/bin/cargo}"

die() {
    echo "wasm.sh: $*" >&2
    exit 1
}

apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> apt-get install $*"
        # Another installer may hold the lock: wait for it rather than fail. A fresh machine's
        # package lists may be missing or stale: refresh them once if the install fails.
        local apt=(apt-get -o DPkg::Lock::Timeout=600)
        export DEBIAN_FRONTEND=noninteractive
        "${apt[@]}" install -y -qq --no-install-recommends "$@" >/dev/null \
            || { "${apt[@]}" update -qq && "${apt[@]}" install -y -qq --no-install-recommends "$@" >/dev/null; }
    else
        die "missing: $* (Debian packages; install them as root: apt-get install $*)"
    fi
}

ensure_rustup_target() {
    command -v rustup >/dev/null 2>&1 || return 1
    rustup target list --installed 2>/dev/null | grep -qx "$TARGET" && return 0
    echo "==> rustup target add $TARGET"
    rustup target add "$TARGET"
}

# The fallback compiler must be new enough for the locked dependencies: say so plainly.
check_debian_rustc() {
    local have need
    have="$("$(dirname "$DEBIAN_CARGO")/rustc" --version | awk '{print $2}')"
    need="$(scripts/msrv.sh --manifest web/Cargo.toml --target "$TARGET")"
    if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
        die "rustup could not add the $TARGET target, and Debian's rustc-web is $have, but the locked dependencies of web/ need Rust $need or newer: install the target with 'rustup target add $TARGET' (rustup's toolchain must be $need or newer)"
    fi
}

wasm_cargo() {
    [ "${WASM_TOOLCHAIN_READY:-}" = 1 ] || toolchain_ready
    if [ "$WASM_TOOLCHAIN" = rustup ]; then
        CARGO_TARGET_DIR="$WASM_TARGET_DIR" cargo "$@" --target "$TARGET"
    else
        # Debian's rustc must be the one cargo runs, whatever rustup puts first on PATH.
        RUSTC="$(dirname "$DEBIAN_CARGO")/rustc" RUSTC_BOOTSTRAP=1 \
            CARGO_TARGET_DIR="$WASM_TARGET_DIR" \
            CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld \
            "$DEBIAN_CARGO" "$@" -Zbuild-std=std,panic_abort --target "$TARGET"
    fi
}

wasm_bindgen_version() {
    sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"$/\1/p;}' web/Cargo.lock | head -n1
}

# Which toolchain builds wasm32: rustup's, with its wasm32 standard library added when missing;
# Debian's only when rustup cannot add it (or WASM_TOOLCHAIN=debian asks for it). Sets
# WASM_TOOLCHAIN and, for Debian's, the packages it needs in the array `missing`.
pick_toolchain() {
    if [ "${WASM_TOOLCHAIN:-}" != debian ] && ensure_rustup_target; then
        WASM_TOOLCHAIN=rustup
    else
        [ "${WASM_TOOLCHAIN:-}" = debian ] \
            || echo "wasm.sh: rustup cannot add $TARGET; falling back to Debian's rustc-web" >&2
        WASM_TOOLCHAIN=debian
        [ -x "$DEBIAN_CARGO" ] || missing+=(cargo-web rustc-web)
        [ -d /usr/lib/rustlib/src/rust/library ] || missing+=(rust-web-src)
        command -v wasm-ld >/dev/null 2>&1 || missing+=(lld)
    fi
    export WASM_TOOLCHAIN
}

toolchain_ready() {
    local missing=()
    export WASM_TOOLCHAIN_READY=1
    pick_toolchain
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    if [ "$WASM_TOOLCHAIN" = rustup ]; then
        echo "==> wasm32 toolchain: rustup, $(rustc --version)"
    else
        check_debian_rustc
        echo "==> wasm32 toolchain: Debian, $("$(dirname "$DEBIAN_CARGO")/rustc" --version)"
    fi
}

setup() {
    toolchain_ready
    local missing=()
    [ -x "$CHROMIUM" ] || missing+=(chromium)
    command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
    command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi

    local want have
    want="$(wasm_bindgen_version)"
    [ -n "$want" ] || die "no wasm-bindgen in web/Cargo.lock"
    have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
    if [ "$have" != "$want" ]; then
        echo "==> cargo install wasm-bindgen-cli $want (found '${have:-none}'; a few minutes, once)"
        # Not --locked: the CLI's own lockfile pins a webpki-roots release the registry may lack.
        cargo install wasm-bindgen-cli --version "=$want" --quiet
    fi

    echo "==> npm ci (web/test: playwright-core, AWS SDK for JavaScript)"
    npm ci --prefix web/test --no-audit --no-fund --loglevel=error

    scripts/install-dynamodb-local.sh >/dev/null
}

check() {
    echo "==> wasm32: the library (consumer core, AWS source, browser clients)"
    wasm_cargo check --lib --no-default-features --features aws --quiet
}

build() {
    echo "==> wasm32: the page (web/, release)"
    (cd web && wasm_cargo build --release --lib --quiet)
    rm -rf web/dist
    mkdir -p web/dist
    wasm-bindgen --target web --no-typescript --out-dir web/dist/pkg \
        "$WASM_TARGET_DIR/$TARGET/release/dynamodb_stream_web.wasm"
    cp web/www/* web/dist/
    echo "    web/dist: $(du -sh web/dist | cut -f1) ($(du -h web/dist/pkg/dynamodb_stream_web_bg.wasm | cut -f1) of WebAssembly)"
}

browser_test() {
    echo "==> browser: DynamoDB Local + Chromium headless (web/test/browser.test.mjs)"
    node --test --test-reporter=spec web/test/
}

serve() {
    local port="${PORT:-8080}"
    echo "==> http://127.0.0.1:$port/ (Ctrl-C stops)"
    exec node -e '
const http = require("http"), fs = require("fs"), path = require("path");
const root = path.resolve(process.argv[1]);
const types = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".wasm": "application/wasm" };
http.createServer((req, res) => {
  const rel = new URL(req.url, "http://x").pathname.slice(1) || "index.html";
  const file = path.resolve(root, decodeURIComponent(rel));
  if (!file.startsWith(root + path.sep) || !fs.existsSync(file)) { res.writeHead(404).end(); return; }
  res.writeHead(200, { "content-type": types[path.extname(file)] || "application/octet-stream" });
  fs.createReadStream(file).pipe(res);
}).listen(Number(process.argv[2]), "127.0.0.1");' web/dist "$port"
}

case "${1:-test}" in
    setup) setup ;;
    check) check ;;
    build) build ;;
    test) setup; build; browser_test ;;
    serve) build; serve ;;
    *) die "usage: scripts/wasm.sh [setup|check|build|test|serve]" ;;
esac
