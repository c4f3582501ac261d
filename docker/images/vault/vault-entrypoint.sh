#!/usr/bin/env bash
# `server ...` runs `bao server ...` as the `vault` user; the dev-mode settings of the
# hashicorp/vault image's environment are mapped to OpenBao's: VAULT_DEV_ROOT_TOKEN_ID
# (through the environment, never the command line) and VAULT_DEV_LISTEN_ADDRESS. The dev
# server prints its unseal key and root token: they are redacted before they reach the log.
# Anything else runs as given (`vault`/`bao` CLI commands, a shell).
set -euo pipefail
if [[ ${1:-} == server ]]; then
  shift
  export BAO_DEV_ROOT_TOKEN_ID="${BAO_DEV_ROOT_TOKEN_ID:-${VAULT_DEV_ROOT_TOKEN_ID:-}}"
  [[ -n $BAO_DEV_ROOT_TOKEN_ID ]] || unset BAO_DEV_ROOT_TOKEN_ID
  unset VAULT_DEV_ROOT_TOKEN_ID
  args=(server "$@")
  if [[ " $* " == *" -dev "* ]]; then
    args+=(-dev-listen-address="${VAULT_DEV_LISTEN_ADDRESS:-0.0.0.0:8200}" -dev-no-store-token)
  fi
  # PID 1 stays bao (signals reach it); its output goes through the redacting filter
  exec > >(exec sed -u -E 's/^([[:space:]]*(Unseal Key|Root Token)[^:]*:).*/\1 <redacted>/') 2>&1
  exec gosu vault bao "${args[@]}"
fi
exec "$@"
