# shellcheck shell=bash
# Schema Registry stand-in: the workspace crate tools/schema-registry (binary
# schema-registry-standin), built in the debug profile so it shares the test build.
# CQRS_SCHEMA_REGISTRY_BIN runs another binary with the same arguments instead.

REGISTRY_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_DIR/target}"
REGISTRY_BIN="${CQRS_SCHEMA_REGISTRY_BIN:-$REGISTRY_TARGET_DIR/debug/schema-registry-standin}"
REGISTRY_HOSTPORT="$(url_hostport "$SCHEMA_REGISTRY_URL")"
REGISTRY_DATA="$DATA_DIR/schema-registry/schemas.json"

registry_install() {
  [[ -n ${CQRS_SCHEMA_REGISTRY_BIN:-} ]] && return 0
  # cargo build is skipped when the binary is newer than the crate and the lock file, so
  # that `up` does not queue behind other builds for the target directory lock.
  if [[ -x $REGISTRY_BIN ]] && [[ -z $(find "$REPO_DIR/tools/schema-registry" "$REPO_DIR/Cargo.lock" \
    -newer "$REGISTRY_BIN" -type f -print -quit 2>/dev/null) ]]; then
    return 0
  fi
  log "building the Schema Registry stand-in (cargo build -p schema-registry-standin)"
  if ! (cd "$REPO_DIR" && "${CARGO:-cargo}" build -p schema-registry-standin) >"$LOG_DIR/registry-build.log" 2>&1; then
    if [[ -x $REGISTRY_BIN ]]; then
      warn "registry: cargo build -p schema-registry-standin failed (log: $LOG_DIR/registry-build.log); using the existing binary"
      return 0
    fi
    fail_component registry-build "cargo build -p schema-registry-standin failed"
  fi
  [[ -x $REGISTRY_BIN ]] || die "registry: $REGISTRY_BIN is missing after the build"
}

registry_healthy() { http_ok "$SCHEMA_REGISTRY_URL/subjects"; }

registry_bin_stamp() { stat -L -c '%Y %s' "$REGISTRY_BIN" 2>/dev/null || true; }

registry_up() {
  if pid_of registry >/dev/null; then
    if [[ "$(cat "$RUN_DIR/registry.bin-stamp" 2>/dev/null)" == "$(registry_bin_stamp)" ]]; then
      wait_healthy registry registry_healthy
      return 0
    fi
    log "registry: the binary was rebuilt, restarting the stand-in (schemas are kept in its data file)"
    stop_daemon registry 10
  fi
  rm -f "$(pid_file registry)"
  if registry_healthy; then
    adopt_foreign registry "$SCHEMA_REGISTRY_URL"
    return 0
  fi
  mkdir -p "$(dirname "$REGISTRY_DATA")"
  log "starting the Schema Registry stand-in on $REGISTRY_HOSTPORT"
  registry_bin_stamp >"$RUN_DIR/registry.bin-stamp"
  start_daemon registry "$REGISTRY_BIN" --listen "$REGISTRY_HOSTPORT" --data-file "$REGISTRY_DATA"
  wait_healthy registry registry_healthy
}

registry_down() {
  stop_daemon registry 10
  rm -f "$RUN_DIR/registry.bin-stamp"
}
