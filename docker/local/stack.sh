#!/usr/bin/env bash
# The local stack (no Docker): docker/local/stack.sh up|down|status|clean|logs
# Installs what is missing (skipped when present), starts every component on 127.0.0.1 with
# the endpoints of .env, and waits for health. See docker/local/README.md.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=SCRIPTDIR/postgres.sh
source "$LOCAL_DIR/postgres.sh"
# shellcheck source=SCRIPTDIR/broker.sh
source "$LOCAL_DIR/broker.sh"
# shellcheck source=SCRIPTDIR/registry.sh
source "$LOCAL_DIR/registry.sh"
# shellcheck source=SCRIPTDIR/mongo.sh
source "$LOCAL_DIR/mongo.sh"
# shellcheck source=SCRIPTDIR/vault.sh
source "$LOCAL_DIR/vault.sh"
# shellcheck source=SCRIPTDIR/connect.sh
source "$LOCAL_DIR/connect.sh"

cmd_install() {
  postgres_install
  broker_install
  vault_install
  connect_install
  registry_install
  mongo_install
}

cmd_up() {
  ensure_dirs
  cmd_install
  local t0=$SECONDS t c times=()
  for c in postgres broker registry mongo vault connect; do
    t=$SECONDS
    "${c}_up"
    times+=("$c $((SECONDS - t))s")
  done
  log "local stack up in $((SECONDS - t0))s, installs excluded ($(IFS=,; printf '%s' "${times[*]}" | sed 's/,/, /g'))"
  cmd_status
}

cmd_down() {
  ensure_dirs
  connect_down
  vault_down
  mongo_down
  registry_down
  broker_down
  postgres_down
}

cmd_clean() {
  cmd_down
  postgres_clean
  log "removing $STATE_DIR (data, offsets, logs, AppRole files)"
  rm -rf "${STATE_DIR:?}/run" "$STATE_DIR/data" "$STATE_DIR/connect" "$STATE_DIR/vault" "$STATE_DIR/logs"
  rmdir "$STATE_DIR" 2>/dev/null || true
}

status_line() {
  printf '%-16s %-48s %s\n' "$1" "$2" "$3"
}

cmd_status() {
  local bad=0 state extra
  state=down; postgres_healthy && state=healthy
  [[ $state == healthy ]] || bad=1
  status_line postgres "postgres://$POSTGRES_HOST:$POSTGRES_PORT/$POSTGRES_DB" "$state"
  state=down; broker_healthy && state=healthy
  [[ $state == healthy ]] || bad=1
  status_line kafka "$KAFKA_BOOTSTRAP_SERVERS (tansu)" "$state"
  state=down; registry_healthy && state=healthy
  [[ $state == healthy ]] || bad=1
  status_line schema-registry "$SCHEMA_REGISTRY_URL" "$state"
  state=down; mongo_healthy && state=healthy
  [[ $state == healthy ]] || bad=1
  status_line mongodb "$MONGODB_URI" "$state"
  state=down; vault_healthy && state=healthy
  [[ $state == healthy ]] || bad=1
  status_line vault "$VAULT_ADDR (OpenBao)" "$state"
  state=down; extra=
  if connect_healthy; then
    if connector_running; then
      state=healthy; extra=" (connectors $DBZ_CONNECTOR_NAMES RUNNING)"
    else
      state=down; extra=" (REST up, connectors $DBZ_CONNECTOR_NAMES not all RUNNING)"
    fi
  fi
  [[ $state == healthy ]] || bad=1
  status_line kafka-connect "$KAFKA_CONNECT_URL" "$state$extra"
  return "$bad"
}

cmd_logs() {
  local files=() f
  for f in "$LOG_DIR"/*.log; do [[ -e $f ]] && files+=("$f"); done
  ((${#files[@]})) || { log "no logs under $LOG_DIR"; return 0; }
  if [[ -t 1 && ${CQRS_LOGS_FOLLOW:-1} == 1 ]]; then
    tail -n "${CQRS_LOGS_LINES:-40}" -F "${files[@]}"
  else
    tail -n "${CQRS_LOGS_LINES:-40}" "${files[@]}"
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  clean) cmd_clean ;;
  logs) cmd_logs ;;
  install) ensure_dirs; cmd_install ;;
  *) echo "usage: $0 up|down|status|clean|logs|install" >&2; exit 2 ;;
esac
