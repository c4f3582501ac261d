#!/usr/bin/env bash
# The Compose way of running the development stack (docker/stack.sh calls this when a Docker
# engine answers). Usage, from anywhere:
#
#   docker/compose.sh up       build, start and wait until every service is healthy and every
#                              init job has exited 0 (fails naming the service + its log tail)
#   docker/compose.sh status   one line per service: state/health and endpoint
#   docker/compose.sh down     stop and remove the containers, keep the data volumes
#   docker/compose.sh clean    down + remove the volumes: database (with its replication slot
#                              and publication), Kafka (with the connector config and offsets),
#                              MongoDB, Vault AppRole files, observability data
#   docker/compose.sh logs [service...]   follow the logs
#
# Uses `docker compose` (v2 plugin) and falls back to `docker-compose` (v1).
# Environment: .env (endpoint contract) and an optional untracked .env.local override it;
# COMPOSE_PROFILES=app also starts the sync-service; COMPOSE_WAIT_TIMEOUT (seconds, default
# 300) bounds `up`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE_PATH="$ROOT/docker/docker-compose.yml"
PROJECT="${COMPOSE_PROJECT_NAME:-cqrs-toolkit}"
WAIT_TIMEOUT="${COMPOSE_WAIT_TIMEOUT:-300}"
JOB_LABEL="org.cqrs-toolkit.role"

log() { printf 'compose: %s\n' "$*" >&2; }
die() { printf 'compose: error: %s\n' "$*" >&2; exit 1; }

# The endpoint contract: .env, then .env.local, then the caller's environment wins
# (the Makefile exports both files already; this keeps direct calls consistent).
load_env() {
  local f line key
  for f in "$ROOT/.env" "$ROOT/.env.local"; do
    [[ -f $f ]] || continue
    while IFS= read -r line || [[ -n $line ]]; do
      [[ $line =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
      key="${BASH_REMATCH[1]}"
      [[ -n ${!key+x} ]] && continue
      export "$key=${BASH_REMATCH[2]}"
    done <"$f"
  done
}

DC=()
detect_compose() {
  if docker compose version >/dev/null 2>&1; then
    DC=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    DC=(docker-compose)
    # v1 builds through the docker CLI so that BuildKit features (cache mounts,
    # Dockerfile-specific .dockerignore) work
    export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
  else
    die "neither 'docker compose' nor 'docker-compose' is installed"
  fi
  local env_args=(--env-file "$ROOT/.env")
  # every service, whatever the active profiles, for down/clean/status/logs
  DC+=(-p "$PROJECT" "${env_args[@]}" -f "$COMPOSE_FILE_PATH")
}

dc() { "${DC[@]}" "$@"; }
dc_all_profiles() { "${DC[@]}" --profile app "$@"; }

require_engine() {
  docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed); use the local stack (STACK=local)"
}

# container ids of the project (all states)
project_containers() {
  docker ps -a -q --filter "label=com.docker.compose.project=$PROJECT"
}

# "<service> <status> <health> <exit code> <role>" for every container of the project
container_states() {
  local ids
  ids="$(project_containers)"
  [[ -n $ids ]] || return 0
  # shellcheck disable=SC2086 # word splitting of the id list is intended
  docker inspect --format \
    '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}} {{or (index .Config.Labels "'"$JOB_LABEL"'") "service"}}' \
    $ids | sort
}

show_failure() {
  local svc="$1" why="$2"
  log "service '$svc' $why; last lines of its log:"
  dc_all_profiles logs --no-color --tail=40 "$svc" >&2 || true
}

wait_healthy() {
  local deadline=$((SECONDS + WAIT_TIMEOUT)) pending svc status health code role states
  while :; do
    pending=()
    states="$(container_states)"
    [[ -n $states ]] || die "no container of project '$PROJECT' exists after 'up'"
    while read -r svc status health code role; do
      if [[ $role == init-job ]]; then
        case "$status" in
          exited) ((code == 0)) || { show_failure "$svc" "(init job) exited with code $code"; return 1; } ;;
          *) pending+=("$svc:$status") ;;
        esac
        continue
      fi
      case "$status/$health" in
        running/healthy | running/none) ;;
        running/unhealthy) show_failure "$svc" "is unhealthy"; return 1 ;;
        exited/* | dead/*) show_failure "$svc" "stopped (exit code $code)"; return 1 ;;
        *) pending+=("$svc:$status/$health") ;;
      esac
    done <<<"$states"
    ((${#pending[@]} == 0)) && return 0
    if ((SECONDS >= deadline)); then
      log "timed out after ${WAIT_TIMEOUT}s waiting for: ${pending[*]}"
      local p
      for p in "${pending[@]}"; do show_failure "${p%%:*}" "is not ready (${p#*:})"; done
      return 1
    fi
    sleep 3
  done
}

# endpoint shown by `status` for a service (host side, no secrets)
endpoint_of() {
  case "$1" in
    postgres) echo "postgres://${POSTGRES_HOST:-127.0.0.1}:${POSTGRES_PORT:-5432}/${POSTGRES_DB:-cqrs}" ;;
    mongodb) echo "${MONGODB_URI:-mongodb://127.0.0.1:27017/?directConnection=true}" ;;
    kafka) echo "${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092} (containers: kafka:29092)" ;;
    schema-registry) echo "${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081}" ;;
    kafka-connect) echo "${KAFKA_CONNECT_URL:-http://127.0.0.1:8083}" ;;
    vault) echo "${VAULT_ADDR:-http://127.0.0.1:8200}" ;;
    otel-collector) echo "${OTEL_EXPORTER_OTLP_ENDPOINT:-http://127.0.0.1:4317} (OTLP gRPC), http://127.0.0.1:4318 (OTLP HTTP)" ;;
    prometheus) echo "http://127.0.0.1:${PROMETHEUS_PORT:-9090}" ;;
    grafana) echo "http://127.0.0.1:${GRAFANA_PORT:-3000}" ;;
    tempo) echo "http://127.0.0.1:${TEMPO_PORT:-3200}" ;;
    loki) echo "http://127.0.0.1:${LOKI_PORT:-3100}" ;;
    sync-service) echo "http://127.0.0.1:${SYNC_SERVICE_HTTP_PORT:-9464}/metrics" ;;
    debezium-init) echo "(registers the Debezium connector)" ;;
    vault-init) echo "(seeds Vault)" ;;
    *) echo "-" ;;
  esac
}

cmd_status() {
  local services svc line status health code role state
  services="$(dc_all_profiles config --services)"
  local states
  states="$(container_states)"
  for svc in $services; do
    line="$(awk -v s="$svc" '$1 == s' <<<"$states" | head -n1)"
    if [[ -z $line ]]; then
      state="not created"
    else
      read -r _ status health code role <<<"$line"
      if [[ $role == init-job ]]; then
        case "$status" in
          exited) if ((code == 0)); then state="completed"; else state="failed (exit $code)"; fi ;;
          *) state="$status" ;;
        esac
      elif [[ $health == none ]]; then
        state="$status"
      else
        state="$status ($health)"
      fi
    fi
    printf '%-16s %-22s %s\n' "$svc" "$state" "$(endpoint_of "$svc")"
  done
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  load_env
  detect_compose
  cd "$ROOT"
  case "$cmd" in
    up)
      require_engine
      log "starting (${DC[*]} up -d --build); waiting up to ${WAIT_TIMEOUT}s for health"
      local t0=$SECONDS
      dc up -d --build --remove-orphans "$@"
      wait_healthy || die "the stack did not become healthy (see above); 'docker/compose.sh logs' for more"
      log "healthy in $((SECONDS - t0))s"
      cmd_status
      ;;
    status)
      require_engine
      cmd_status
      ;;
    down)
      require_engine
      dc_all_profiles down --remove-orphans "$@"
      ;;
    clean)
      require_engine
      # The replication slot and publication live in the postgres-data volume, the
      # connector's config/offsets/status in Kafka's volume: removing the volumes removes them.
      dc_all_profiles down --volumes --remove-orphans "$@"
      ;;
    logs)
      require_engine
      dc_all_profiles logs -f --tail=200 "$@"
      ;;
    *)
      echo "usage: docker/compose.sh up|down|status|clean|logs [args]" >&2
      exit 2
      ;;
  esac
}

main "$@"
