#!/bin/sh
# Registers (or updates) the Debezium PostgreSQL connector through the Kafka Connect REST API
# and waits until the connector and its task are RUNNING. POSIX sh + curl + sed only, so it
# runs both from the local stack and in a small Compose init container. Idempotent: a PUT of
# an unchanged config leaves the running connector alone.
#
# Environment (defaults in brackets):
#   KAFKA_CONNECT_URL [http://127.0.0.1:8083]  the Connect REST endpoint this script calls
#   DBZ_CONNECTOR_NAME [cqrs-postgres]
#   DBZ_CONNECTOR_TEMPLATE [cqrs-postgres.json.tmpl beside this script]
#   DBZ_PG_HOST [$POSTGRES_HOST or 127.0.0.1]  DBZ_PG_PORT [$POSTGRES_PORT or 5432]
#     as Connect sees PostgreSQL (Compose: postgres / 5432)
#   POSTGRES_DB [cqrs]  DEBEZIUM_PG_USER [cqrs_debezium]  DEBEZIUM_PG_PASSWORD (required)
#   DBZ_SCHEMA_REGISTRY_URL [$SCHEMA_REGISTRY_URL or http://127.0.0.1:8081]
#     as Connect sees the registry (Compose: http://schema-registry:8081)
#   DBZ_WAIT_SECONDS [120]  how long to wait for Connect and for RUNNING
set -eu

here=$(cd "$(dirname "$0")" && pwd)
CONNECT_URL="${KAFKA_CONNECT_URL:-http://127.0.0.1:8083}"
CONNECT_URL="${CONNECT_URL%/}"
NAME="${DBZ_CONNECTOR_NAME:-cqrs-postgres}"
TEMPLATE="${DBZ_CONNECTOR_TEMPLATE:-$here/cqrs-postgres.json.tmpl}"
WAIT="${DBZ_WAIT_SECONDS:-120}"
DBZ_PG_HOST="${DBZ_PG_HOST:-${POSTGRES_HOST:-127.0.0.1}}"
DBZ_PG_PORT="${DBZ_PG_PORT:-${POSTGRES_PORT:-5432}}"
POSTGRES_DB="${POSTGRES_DB:-cqrs}"
DEBEZIUM_PG_USER="${DEBEZIUM_PG_USER:-cqrs_debezium}"
: "${DEBEZIUM_PG_PASSWORD:?DEBEZIUM_PG_PASSWORD must be set}"
DBZ_SCHEMA_REGISTRY_URL="${DBZ_SCHEMA_REGISTRY_URL:-${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081}}"

say() { echo "debezium-register: $*"; }
fail() { echo "debezium-register: ERROR: $*" >&2; exit 1; }

# Value escaped for a JSON string and then for the replacement part of a sed s|||.
sed_val() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/[|&\\]/\\&/g'; }

render() {
  sed -e "s|\${DBZ_PG_HOST}|$(sed_val "$DBZ_PG_HOST")|g" \
    -e "s|\${DBZ_PG_PORT}|$(sed_val "$DBZ_PG_PORT")|g" \
    -e "s|\${POSTGRES_DB}|$(sed_val "$POSTGRES_DB")|g" \
    -e "s|\${DEBEZIUM_PG_USER}|$(sed_val "$DEBEZIUM_PG_USER")|g" \
    -e "s|\${DEBEZIUM_PG_PASSWORD}|$(sed_val "$DEBEZIUM_PG_PASSWORD")|g" \
    -e "s|\${DBZ_SCHEMA_REGISTRY_URL}|$(sed_val "$DBZ_SCHEMA_REGISTRY_URL")|g" \
    "$TEMPLATE"
}

[ -f "$TEMPLATE" ] || fail "template $TEMPLATE not found"

# 1. Connect's REST API answers
start=$(date +%s)
until curl -fsS -o /dev/null --max-time 3 "$CONNECT_URL/connectors"; do
  [ $(($(date +%s) - start)) -lt "$WAIT" ] || fail "Kafka Connect REST does not answer at $CONNECT_URL"
  sleep 1
done

# 2. PUT the config (body from stdin: the password never reaches a command line or the output)
resp=$(mktemp)
trap 'rm -f "$resp"' EXIT
code=$(render | curl -sS -o "$resp" -w '%{http_code}' --max-time 60 -X PUT \
  -H 'Content-Type: application/json' -H 'Accept: application/json' \
  --data-binary @- "$CONNECT_URL/connectors/$NAME/config") || fail "PUT $CONNECT_URL/connectors/$NAME/config failed"
case "$code" in
  200 | 201) say "connector $NAME configured (HTTP $code)" ;;
  *)
    # Connect's error message names the bad key; it does not echo the config values back
    fail "PUT /connectors/$NAME/config answered HTTP $code: $(head -c 2000 "$resp")"
    ;;
esac

# 3. Wait until the connector and every task are RUNNING
start=$(date +%s)
while :; do
  status=$(curl -fsS --max-time 3 "$CONNECT_URL/connectors/$NAME/status" 2>/dev/null || true)
  connector_state=$(printf '%s' "$status" | sed -n 's/.*"connector":{"state":"\([A-Z_]*\)".*/\1/p')
  tasks=$(printf '%s' "$status" | sed -n 's/.*"tasks":\[\(.*\)\].*/\1/p')
  if [ "$connector_state" = RUNNING ] && [ -n "$tasks" ] \
    && ! printf '%s' "$tasks" | grep -Eq '"state":"(UNASSIGNED|PAUSED|FAILED|RESTARTING|STOPPED)"'; then
    say "connector $NAME and its task are RUNNING"
    exit 0
  fi
  if [ "$connector_state" = FAILED ] || printf '%s' "$tasks" | grep -q '"state":"FAILED"'; then
    fail "connector $NAME FAILED: $(printf '%s' "$status" | head -c 3000)"
  fi
  [ $(($(date +%s) - start)) -lt "$WAIT" ] \
    || fail "connector $NAME not RUNNING after ${WAIT}s (status: $(printf '%s' "$status" | head -c 1000))"
  sleep 0.5
done
