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
#   docker/compose.sh mode     print `upstream` or `offline` (see below) and why; exit 0
#   docker/compose.sh compose ARGS...   any Compose command on this project, with the files
#                              of its mode and every profile (`compose restart sync-service`)
#   docker/compose.sh upstream-ok   exit 0 when the upstream images can be had (present
#                              here, or a registry answers), 1 otherwise (docker/stack.sh)
#
# Upstream or offline: with the upstream images present or a registry reachable, Compose runs
# docker/docker-compose.yml as users do. Otherwise (these machines: no registry) it adds
# docker/docker-compose.offline.yml and the images docker/images/build.sh builds here; the
# observability services (no local image) are left out. CQRS_COMPOSE_OFFLINE=1 or 0 forces one.
#
# Uses `docker compose` (v2 plugin) and falls back to `docker-compose` (v1).
# Environment: .env (endpoint contract) and an optional untracked .env.local override it;
# COMPOSE_PROJECT_NAME (default cqrs-toolkit) names the project, its network (CQRS_NETWORK)
# and its volumes, so a second stack with another name and other ports (a port variable set
# to 0 takes a free one) does not touch the first; COMPOSE_PROFILES=app also starts the
# sync-service; COMPOSE_WAIT_TIMEOUT (seconds, default 300) bounds `up`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE_PATH="$ROOT/docker/docker-compose.yml"
OFFLINE_FILE_PATH="$ROOT/docker/docker-compose.offline.yml"
PROJECT="${COMPOSE_PROJECT_NAME:-cqrs-toolkit}"
WAIT_TIMEOUT="${COMPOSE_WAIT_TIMEOUT:-300}"
JOB_LABEL="org.cqrs-toolkit.role"
# every profile of the files, for down/clean/status/logs
ALL_PROFILES=(app observability)

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

# url_port URL DEFAULT: the port of host:port or scheme://[user@]host:port/...
url_port() {
  local u=${1#*://}
  u=${u##*@}
  u=${u%%[/?,]*}
  if [[ $u =~ :([0-9]+)$ ]]; then printf '%s' "${BASH_REMATCH[1]}"; else printf '%s' "$2"; fi
}

# Host ports of the services whose endpoint is a URL in .env (the Compose file reads these).
derive_ports() {
  : "${MONGODB_PORT:=$(url_port "${MONGODB_URI:-}" 27017)}"
  : "${SCHEMA_REGISTRY_PORT:=$(url_port "${SCHEMA_REGISTRY_URL:-}" 8081)}"
  : "${KAFKA_CONNECT_PORT:=$(url_port "${KAFKA_CONNECT_URL:-}" 8083)}"
  : "${VAULT_PORT:=$(url_port "${VAULT_ADDR:-}" 8200)}"
  : "${OTEL_GRPC_PORT:=$(url_port "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" 4317)}"
  : "${CQRS_NETWORK:=$PROJECT}"
  export MONGODB_PORT SCHEMA_REGISTRY_PORT KAFKA_CONNECT_PORT VAULT_PORT OTEL_GRPC_PORT CQRS_NETWORK
}

BASE=()
DC=()
OFFLINE=0
detect_compose() {
  if docker compose version >/dev/null 2>&1; then
    BASE=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    BASE=(docker-compose)
    # v1 builds through the docker CLI so that BuildKit features (cache mounts,
    # Dockerfile-specific .dockerignore) work. A CLI of Docker 23+ needs the buildx plugin
    # for that (Debian does not package it); Debian's docker.io client (20.10) has it built in.
    export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
    if ! docker buildx version >/dev/null 2>&1 && [[ -x /usr/bin/docker && $(command -v docker) != /usr/bin/docker ]]; then
      export PATH="/usr/bin:$PATH"
    fi
  else
    die "neither 'docker compose' nor 'docker-compose' is installed (scripts/ensure-docker.sh installs Debian's)"
  fi
  DC=("${BASE[@]}" -p "$PROJECT" --env-file "$ROOT/.env" -f "$COMPOSE_FILE_PATH")
}

dc() { "${DC[@]}" "$@"; }
dc_all_profiles() {
  local p args=()
  for p in "${ALL_PROFILES[@]}"; do args+=(--profile "$p"); done
  "${DC[@]}" "${args[@]}" "$@"
}

require_engine() {
  docker info >/dev/null 2>&1 \
    || die "no Docker engine answers (docker info failed); scripts/ensure-docker.sh starts one, or use the local stack (STACK=local)"
}

# ---------------------------------------------------------------------------------------
# Can the upstream images be had? Every image of the upstream file (profile app included) is
# present here, or a registry answers. The registry probe asks the engine's mirrors and
# Docker Hub for /v2/ (any HTTP answer, 401 included, means reachable).
REASON=""
upstream_images() {
  "${BASE[@]}" -p "$PROJECT" --env-file "$ROOT/.env" -f "$COMPOSE_FILE_PATH" --profile app config 2>/dev/null \
    | awk '$1 == "image:" {print $2}' | sort -u
}
registry_answers() {
  local url mirrors
  mirrors=$(docker info --format '{{range .RegistryConfig.Mirrors}}{{.}} {{end}}' 2>/dev/null || true)
  for url in $mirrors https://registry-1.docker.io; do
    url=${url%/}
    if curl -sS -o /dev/null --max-time 5 "$url/v2/" 2>/dev/null; then
      REASON="registry $url answers"
      return 0
    fi
  done
  return 1
}
upstream_ok() {
  local image missing=()
  while read -r image; do
    [[ -n $image ]] || continue
    docker image inspect "$image" >/dev/null 2>&1 || missing+=("$image")
  done < <(upstream_images)
  if ((${#missing[@]} == 0)); then
    REASON="every upstream image is present"
    return 0
  fi
  registry_answers && return 0
  REASON="no registry answers and ${#missing[@]} upstream images are missing (${missing[0]}, ...)"
  return 1
}

pick_mode() {
  case "${CQRS_COMPOSE_OFFLINE:-auto}" in
    1 | true | yes) OFFLINE=1; REASON="CQRS_COMPOSE_OFFLINE=${CQRS_COMPOSE_OFFLINE}" ;;
    0 | false | no) OFFLINE=0; REASON="CQRS_COMPOSE_OFFLINE=${CQRS_COMPOSE_OFFLINE}" ;;
    auto) if upstream_ok; then OFFLINE=0; else OFFLINE=1; fi ;;
    *) die "CQRS_COMPOSE_OFFLINE must be auto, 1 or 0 (got '${CQRS_COMPOSE_OFFLINE}')" ;;
  esac
  if ((OFFLINE)); then
    DC+=(-f "$OFFLINE_FILE_PATH")
  fi
}

# Builds (or finds, by their input hashes) the local images and exports their tags for the
# override file. The sync-service image needs a binary: only built when profile `app` runs.
local_images() {
  local args=() line
  if [[ ,${COMPOSE_PROFILES:-}, == *,app,* ]]; then
    # the sync-service image takes the workspace's binary: bring it up to date first, unless
    # the caller names one (the Compose test passes the one `cargo test` just built)
    if [[ -z ${CQRS_SYNC_SERVICE_BIN:-} ]]; then
      log "building the sync-service binary for its image (cargo build --bin sync-service)"
      (cd "$ROOT" && "${CARGO:-cargo}" build --bin sync-service) >&2 || die "cargo build --bin sync-service failed"
    fi
  else
    args+=(--without-sync-service)
  fi
  local out
  out=$("$ROOT/docker/images/build.sh" "${args[@]}") || die "docker/images/build.sh failed (see above)"
  while IFS= read -r line; do
    [[ $line =~ ^(CQRS_IMAGE_[A-Z_]+)=(.+)$ ]] && export "${BASH_REMATCH[1]}=${BASH_REMATCH[2]}"
  done <<<"$out"
}

# ---------------------------------------------------------------------------------------
# container ids of the project (all states)
project_containers() {
  docker ps -a -q --filter "label=com.docker.compose.project=$PROJECT"
}

# "<service> <status> <health> <exit code> <role> <id>" for every container of the project.
# Parsed from inspect's JSON: a Go template over .State.Health fails with newer CLIs for
# containers without a health check (the key is missing from the map they decode into).
container_states() {
  local ids
  ids="$(project_containers)"
  [[ -n $ids ]] || return 0
  # shellcheck disable=SC2086 # word splitting of the id list is intended
  docker inspect $ids | python3 -c '
import json, sys
role_label = sys.argv[1]
for c in json.load(sys.stdin):
    labels = c["Config"].get("Labels") or {}
    state = c["State"]
    health = (state.get("Health") or {}).get("Status") or "none"
    print(labels.get("com.docker.compose.service", "?"), state["Status"], health,
          state.get("ExitCode", 0), labels.get(role_label) or "service", c["Id"])
' "$JOB_LABEL" | sort
}

show_failure() {
  local svc="$1" why="$2"
  log "service '$svc' $why; last lines of its log:"
  dc_all_profiles logs --no-color --tail=40 "$svc" >&2 || true
}

wait_healthy() {
  local deadline=$((SECONDS + WAIT_TIMEOUT)) pending svc status health code role id states
  while :; do
    pending=()
    states="$(container_states)"
    [[ -n $states ]] || die "no container of project '$PROJECT' exists after 'up'"
    while read -r svc status health code role id; do
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
    sleep 1
  done
}

# After a failed `up` (Compose stops when a dependency turns unhealthy): every service that
# is unhealthy, stopped or failed, with the tail of its log.
diagnose() {
  local svc status health code role id found=0
  while read -r svc status health code role id; do
    [[ -n $svc ]] || continue
    if [[ $health == unhealthy ]] || { [[ $status == exited || $status == dead ]] && ((code != 0)); }; then
      show_failure "$svc" "is $status/$health (exit code $code)"
      found=1
    fi
  done <<<"$(container_states)"
  ((found)) || log "no container is unhealthy or failed; 'docker/compose.sh logs' for more"
}

# endpoint shown by `status` for a service (host side, no secrets)
endpoint_of() {
  case "$1" in
    postgres) echo "postgres://${POSTGRES_HOST:-127.0.0.1}:${POSTGRES_PORT:-5432}/${POSTGRES_DB:-cqrs}" ;;
    mongodb) echo "${MONGODB_URI:-mongodb://127.0.0.1:27017/?directConnection=true}" ;;
    kafka)
      if ((OFFLINE)); then echo "${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092} (containers: kafka:9092)"
      else echo "${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092} (containers: kafka:29092)"; fi ;;
    schema-registry) echo "${SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081}" ;;
    kafka-connect) echo "${KAFKA_CONNECT_URL:-http://127.0.0.1:8083}" ;;
    vault) echo "${VAULT_ADDR:-http://127.0.0.1:8200}" ;;
    otel-collector) echo "${OTEL_EXPORTER_OTLP_ENDPOINT:-http://127.0.0.1:4317} (OTLP gRPC), http://127.0.0.1:${OTEL_HTTP_PORT:-4318} (OTLP HTTP)" ;;
    prometheus) echo "http://127.0.0.1:${PROMETHEUS_PORT:-9090}" ;;
    grafana) echo "http://127.0.0.1:${GRAFANA_PORT:-3000}" ;;
    tempo) echo "http://127.0.0.1:${TEMPO_PORT:-3200}" ;;
    loki) echo "http://127.0.0.1:${LOKI_PORT:-3100}" ;;
    sync-service) echo "http://127.0.0.1:${SYNC_SERVICE_HTTP_PORT:-9464}/metrics" ;;
    debezium-init) echo "(registers the Debezium connectors)" ;;
    vault-init) echo "(seeds Vault)" ;;
    mongodb-init) echo "(checks the replica set)" ;;
    *) echo "-" ;;
  esac
}

cmd_status() {
  local services svc line status health code role id state where states
  # in the order of the file
  services="$(awk '/^services:/ {in_s = 1; next} in_s && /^[^ #]/ {in_s = 0} in_s && /^  [a-z][a-z0-9-]*:$/ {gsub(/[ :]/, ""); print}' "$COMPOSE_FILE_PATH")"
  states="$(container_states)"
  for svc in $services; do
    line="$(awk -v s="$svc" '$1 == s' <<<"$states" | head -n1)"
    where="$(endpoint_of "$svc")"
    if [[ -z $line ]]; then
      state="not created"
      if ((OFFLINE)); then
        case "$svc" in otel-collector | tempo | loki | grafana) state="left out (offline)" ;; esac
      fi
    else
      read -r _ status health code role id <<<"$line"
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
      # what is really published (a port variable of 0 took a free port)
      local published
      published="$(docker port "$id" 2>/dev/null | awk '{print $3}' | { grep '^127\.0\.0\.1:' || true; } | sort -u | paste -sd, -)"
      if [[ $published == *,* ]]; then
        where="$where [published: $published]"
      elif [[ -n $published ]]; then
        where="$(sed -E "s/127\.0\.0\.1:[0-9]+/$published/" <<<"$where")"
      fi
    fi
    printf '%-16s %-22s %s\n' "$svc" "$state" "$where"
  done
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  load_env
  derive_ports
  detect_compose
  cd "$ROOT"
  case "$cmd" in
    upstream-ok)
      require_engine
      if upstream_ok; then log "upstream images: $REASON"; exit 0; fi
      log "upstream images: $REASON"
      exit 1
      ;;
    mode)
      require_engine
      pick_mode
      if ((OFFLINE)); then echo "offline ($REASON)"; else echo "upstream ($REASON)"; fi
      ;;
    up)
      require_engine
      pick_mode
      local t0=$SECONDS
      if ((OFFLINE)); then
        log "offline: $REASON; using docker/docker-compose.offline.yml with images built here (docker/images/build.sh)"
        local_images
        log "starting (${DC[*]} up -d --no-build); waiting up to ${WAIT_TIMEOUT}s for health"
        dc up -d --no-build --remove-orphans "$@" || { diagnose; die "'up' failed (see above)"; }
      else
        log "upstream images ($REASON)"
        log "starting (${DC[*]} up -d --build); waiting up to ${WAIT_TIMEOUT}s for health"
        dc up -d --build --remove-orphans "$@" || { diagnose; die "'up' failed (see above)"; }
      fi
      wait_healthy || die "the stack did not become healthy (see above); 'docker/compose.sh logs' for more"
      log "healthy in $((SECONDS - t0))s"
      cmd_status
      ;;
    status)
      require_engine
      pick_mode
      cmd_status
      ;;
    down)
      require_engine
      pick_mode
      dc_all_profiles down --remove-orphans "$@"
      ;;
    clean)
      require_engine
      pick_mode
      # The replication slot and publication live in the postgres-data volume, the
      # connector's config/offsets/status in Kafka's volume: removing the volumes removes them.
      dc_all_profiles down --volumes --remove-orphans "$@"
      ;;
    logs)
      require_engine
      pick_mode
      dc_all_profiles logs -f --tail=200 "$@"
      ;;
    compose)
      require_engine
      pick_mode
      dc_all_profiles "$@"
      ;;
    *)
      echo "usage: docker/compose.sh up|down|status|clean|logs|mode|upstream-ok|compose [args]" >&2
      exit 2
      ;;
  esac
}

main "$@"
