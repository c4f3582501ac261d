#!/usr/bin/env bash
# Entry point of the Makefile's infrastructure-* targets:
#   docker/stack.sh up|down|status|clean|logs
# STACK=compose or STACK=local forces a way of running the stack; STACK=auto (default) uses
# Compose when a Docker engine answers (`docker info` succeeds) and the local stack otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
verb="${1:-}"
case "$verb" in
  up | down | status | clean | logs) ;;
  *) echo "usage: $0 up|down|status|clean|logs   (STACK=auto|local|compose)" >&2; exit 2 ;;
esac

mode="${STACK:-auto}"
if [[ $mode == auto ]]; then
  if command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1; then
    mode=compose
  else
    mode=local
  fi
fi

case "$mode" in
  compose) exec bash "$here/compose.sh" "$verb" ;;
  local) exec "$here/local/stack.sh" "$verb" ;;
  *) echo "stack.sh: STACK must be auto, local or compose (got '$mode')" >&2; exit 2 ;;
esac
