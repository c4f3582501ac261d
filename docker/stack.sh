#!/usr/bin/env bash
# Entry point of the Makefile's infrastructure-* targets:
#   docker/stack.sh up|down|status|clean|logs
# STACK=compose or STACK=local forces a way of running the stack. STACK=auto (default):
#   - no Docker engine answers                      -> the local stack (docker/local)
#   - an engine answers and the Compose project already has containers, or the upstream
#     images can be had (present here, or a registry answers)  -> Compose
#   - an engine answers but no registry is reachable and the upstream images are missing
#     (these machines)                              -> the local stack: Compose could not pull
#     anything. STACK=compose runs Compose there anyway, with the images built here
#     (docker/docker-compose.offline.yml, see docker/README.md).
# It prints which one it uses and why.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
verb="${1:-}"
case "$verb" in
  up | down | status | clean | logs) ;;
  *) echo "usage: $0 up|down|status|clean|logs   (STACK=auto|local|compose)" >&2; exit 2 ;;
esac

say() { printf 'stack: %s\n' "$*" >&2; }

mode="${STACK:-auto}"
why="STACK=$mode"
if [[ $mode == auto ]]; then
  project="${COMPOSE_PROJECT_NAME:-cqrs-toolkit}"
  if ! command -v docker >/dev/null 2>&1 || ! timeout 10 docker info >/dev/null 2>&1; then
    mode=local
    why="no Docker engine answers"
  elif [[ -n $(docker ps -a -q --filter "label=com.docker.compose.project=$project" 2>/dev/null) ]]; then
    mode=compose
    why="the Compose project '$project' exists on this engine"
  elif bash "$here/compose.sh" upstream-ok 2>/dev/null; then
    mode=compose
    why="a Docker engine answers and the upstream images can be had"
  else
    mode=local
    why="a Docker engine answers, but no registry is reachable and the upstream images are not here; STACK=compose runs Compose with images built here"
  fi
fi

case "$mode" in
  compose) say "using Compose ($why)"; exec bash "$here/compose.sh" "$verb" ;;
  local) say "using the local stack ($why)"; exec "$here/local/stack.sh" "$verb" ;;
  *) echo "stack.sh: STACK must be auto, local or compose (got '$mode')" >&2; exit 2 ;;
esac
