#!/usr/bin/env bash
# Create a table with a stream, and write or delete items, on DynamoDB Local — for trying
# `ddbstream` on a machine without the aws CLI. Needs only bash and curl.
#
#   scripts/local-table.sh create TABLE [KEY [S|N]]   a table keyed by KEY (default pk, a string)
#                                                     with a NEW_AND_OLD_IMAGES stream
#   scripts/local-table.sh put TABLE ITEM             ITEM in DynamoDB JSON:
#                                                     '{"pk":{"S":"o-1"},"total":{"N":"42"}}'
#   scripts/local-table.sh delete TABLE KEY           KEY in DynamoDB JSON: '{"pk":{"S":"o-1"}}'
#   scripts/local-table.sh list                       the table names
#
# Talks to AWS_ENDPOINT_URL (default http://127.0.0.1:8000) as AWS_ACCESS_KEY_ID (default
# "local") in AWS_REGION (default us-east-1). DynamoDB Local only: it does not sign requests
# (DynamoDB Local does not check signatures), so it refuses any endpoint but this machine's.
# Prints DynamoDB Local's answer; exits 1 with its error message when it refuses.
set -euo pipefail

endpoint="${AWS_ENDPOINT_URL:-http://127.0.0.1:8000}"
access_key="${AWS_ACCESS_KEY_ID:-local}"
region="${AWS_REGION:-us-east-1}"

die() {
    echo "local-table: $*" >&2
    exit 1
}

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

command -v curl >/dev/null 2>&1 || die "curl not found: install it (e.g. Debian: apt-get install curl)"

case "$endpoint" in
    http://127.0.0.1:* | http://localhost:* | http://\[::1\]:*) ;;
    *) die "$endpoint is not DynamoDB Local on this machine (http://127.0.0.1:PORT); for AWS use the aws CLI or the console" ;;
esac

# One DynamoDB API call: the target (e.g. CreateTable) and its JSON body.
call() {
    local target="$1" body="$2" out status
    out="$(mktemp)"
    status="$(curl -sS -o "$out" -w '%{http_code}' -X POST "$endpoint/" \
        -H 'Content-Type: application/x-amz-json-1.0' \
        -H "X-Amz-Target: DynamoDB_20120810.$target" \
        -H "Authorization: AWS4-HMAC-SHA256 Credential=$access_key/20240101/$region/dynamodb/aws4_request, SignedHeaders=host, Signature=0" \
        --data-binary "$body")" || { rm -f "$out"; die "cannot reach $endpoint: is DynamoDB Local running there?"; }
    if [ "$status" != 200 ]; then
        local answer
        answer="$(cat "$out")"
        rm -f "$out"
        die "$target failed (HTTP $status): $answer"
    fi
    cat "$out"
    echo
    rm -f "$out"
}

table_name() {
    [[ "$1" =~ ^[A-Za-z0-9_.-]{3,255}$ ]] || die "\"$1\" is not a table name (3-255 letters, digits, _ . -)"
    printf '%s' "$1"
}

[ $# -ge 1 ] || usage
case "$1" in
    create)
        [ $# -ge 2 ] && [ $# -le 4 ] || usage
        table="$(table_name "$2")"
        key="${3:-pk}"
        type="${4:-S}"
        [[ "$key" =~ ^[A-Za-z0-9_.-]{1,255}$ ]] || die "\"$key\" is not a key attribute name this script takes"
        [[ "$type" == S || "$type" == N ]] || die "key type must be S or N, not \"$type\""
        call CreateTable "{\"TableName\":\"$table\",\"AttributeDefinitions\":[{\"AttributeName\":\"$key\",\"AttributeType\":\"$type\"}],\"KeySchema\":[{\"AttributeName\":\"$key\",\"KeyType\":\"HASH\"}],\"BillingMode\":\"PAY_PER_REQUEST\",\"StreamSpecification\":{\"StreamEnabled\":true,\"StreamViewType\":\"NEW_AND_OLD_IMAGES\"}}"
        ;;
    put)
        [ $# -eq 3 ] || usage
        call PutItem "{\"TableName\":\"$(table_name "$2")\",\"Item\":$3}"
        ;;
    delete)
        [ $# -eq 3 ] || usage
        call DeleteItem "{\"TableName\":\"$(table_name "$2")\",\"Key\":$3}"
        ;;
    list)
        [ $# -eq 1 ] || usage
        call ListTables '{}'
        ;;
    *) usage ;;
esac
