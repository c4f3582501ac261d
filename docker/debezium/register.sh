#!/bin/sh
# Registers (or updates) the Debezium connectors through the Kafka Connect REST API and waits
# until every connector and its tasks are RUNNING. POSIX sh + curl + sed only, so it runs both
# from the local stack and in a small Compose init container. Idempotent: a PUT of an
# unchanged config leaves the running connector alone.
#
# Every `*.json.tmpl` beside this script is one connector, named after the file:
#   cqrs-postgres.json.tmpl  CDC of the service schemas into Avro topics cqrs.<schema>.<table>
#   cqrs-outbox.json.tmpl    the <schema>.outbox tables through the outbox event router into
#                            outbox.event.<aggregatetype> (own slot cqrs_outbox)
#
# Environment (defaults in brackets):
#   KAFKA_CONNECT_URL [http://127.0.0.1:8083]  the Connect REST endpoint this script calls
#   DBZ_CONNECTOR_TEMPLATE [every *.json.tmpl beside this script]  register only this one,
#     named DBZ_CONNECTOR_NAME [the file name without .json.tmpl]
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
    "$1"
}

# connector_name <template>: the file name without .json.tmpl
connector_name() { basename "$1" .json.tmpl; }

if [ -n "${DBZ_CONNECTOR_TEMPLATE:-}" ]; then
  [ -f "$DBZ_CONNECTOR_TEMPLATE" ] || fail "template $DBZ_CONNECTOR_TEMPLATE not found"
  set -- "$DBZ_CONNECTOR_TEMPLATE"
else
  set -- "$here"/*.json.tmpl
  [ -f "$1" ] || fail "no *.json.tmpl connector template in $here"
fi

# 1. Connect's REST API answers
start=$(date +%s)
until curl -fsS -o /dev/null --max-time 3 "$CONNECT_URL/connectors"; do
  [ $(($(date +%s) - start)) -lt "$WAIT" ] || fail "Kafka Connect REST does not answer at $CONNECT_URL"
  sleep 1
done

# 2. PUT every config (body from stdin: the password never reaches a command line or the output)
resp=$(mktemp)
trap 'rm -f "$resp"' EXIT
names=
for template in "$@"; do
  if [ -n "${DBZ_CONNECTOR_TEMPLATE:-}" ] && [ -n "${DBZ_CONNECTOR_NAME:-}" ]; then
    name=$DBZ_CONNECTOR_NAME
  else
    name=$(connector_name "$template")
  fi
  # Connect answers 409 while its group rebalances and 500 "scheduled for shutdown" for a
  # connector it is still stopping after a restart: both pass, so those are retried.
  start=$(date +%s)
  while :; do
    code=$(render "$template" | curl -sS -o "$resp" -w '%{http_code}' --max-time 60 -X PUT \
      -H 'Content-Type: application/json' -H 'Accept: application/json' \
      --data-binary @- "$CONNECT_URL/connectors/$name/config") || fail "PUT $CONNECT_URL/connectors/$name/config failed"
    case "$code" in
      409 | 500 | 503) [ $(($(date +%s) - start)) -lt "$WAIT" ] || break; sleep 1 ;;
      *) break ;;
    esac
  done
  case "$code" in
    200 | 201) say "connector $name configured (HTTP $code)" ;;
    *)
      # Connect's error message names the bad key; it does not echo the config values back
      fail "PUT /connectors/$name/config answered HTTP $code: $(head -c 2000 "$resp")"
      ;;
  esac
  names="$names $name"
done

# 3. Wait until every connector and all its tasks are RUNNING
start=$(date +%s)
for name in $names; do
  while :; do
    status=$(curl -fsS --max-time 3 "$CONNECT_URL/connectors/$name/status" 2>/dev/null || true)
    connector_state=$(printf '%s' "$status" | sed -n 's/.*"connector":{"state":"\([A-Z_]*\)".*/\1/p')
    tasks=$(printf '%s' "$status" | sed -n 's/.*"tasks":\[\(.*\)\].*/\1/p')
    if [ "$connector_state" = RUNNING ] && [ -n "$tasks" ] \
      && ! printf '%s' "$tasks" | grep -Eq '"state":"(UNASSIGNED|PAUSED|FAILED|RESTARTING|STOPPED)"'; then
      say "connector $name and its task are RUNNING"
      break
    fi
    if [ "$connector_state" = FAILED ] || printf '%s' "$tasks" | grep -q '"state":"FAILED"'; then
      fail "connector $name FAILED: $(printf '%s' "$status" | head -c 3000)"
    fi
    [ $(($(date +%s) - start)) -lt "$WAIT" ] \
      || fail "connector $name not RUNNING after ${WAIT}s (status: $(printf '%s' "$status" | head -c 1000))"
    sleep 0.5
  done
done
