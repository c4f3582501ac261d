# shellcheck shell=bash
# MongoDB server: SecantusDB (MongoDB wire protocol, single-node replica set `secantus`),
# installed from crates.io as a tool binary (GPL-2.0: never a dependency of our crates).

SECANTUS_VERSION="${CQRS_SECANTUS_VERSION:-0.5.3-beta.196}"
SECANTUS_ROOT="$TOOLS_DIR/secantus"
SECANTUS_BIN="$SECANTUS_ROOT/bin/secantusd-rs"
_mongo_hp="${MONGODB_URI#*://}"; _mongo_hp="${_mongo_hp##*@}"; _mongo_hp="${_mongo_hp%%[/?,]*}"
MONGO_HOST="${CQRS_MONGO_HOST:-${_mongo_hp%:*}}"
MONGO_PORT="${CQRS_MONGO_PORT:-${_mongo_hp##*:}}"

mongo_install_now() {
  [[ -x $SECANTUS_BIN ]] && return 0
  # Another install of the same crate into the same root may already be running (for example
  # one started by hand): wait for its binary instead of compiling WiredTiger twice.
  if pgrep -f "cargo install secantus-mdb.*--root $SECANTUS_ROOT" >/dev/null 2>&1; then
    log "mongodb: a cargo install of secantus-mdb is already running; waiting for $SECANTUS_BIN"
    local start=$SECONDS
    while pgrep -f "cargo install secantus-mdb.*--root $SECANTUS_ROOT" >/dev/null 2>&1; do
      ((SECONDS - start < 3600)) || die "mongodb: the running secantus-mdb install did not finish within 1h"
      sleep 5
    done
    [[ -x $SECANTUS_BIN ]] && return 0
    warn "mongodb: the other install ended without $SECANTUS_BIN; installing now"
  fi
  mkdir -p "$TOOLS_DIR/logs"
  local ilog="$TOOLS_DIR/logs/secantus-install.log"
  log "installing SecantusDB $SECANTUS_VERSION with cargo (~10-20 min; log: $ilog)"
  command -v cmake >/dev/null || "$REPO_DIR/scripts/ensure-build-deps.sh"
  "${CARGO:-cargo}" install secantus-mdb --version "$SECANTUS_VERSION" --ignore-rust-version \
    --root "$SECANTUS_ROOT" >>"$ilog" 2>&1 \
    || { tail -n 30 "$ilog" >&2; die "mongodb: cargo install secantus-mdb failed (log: $ilog)"; }
  [[ -x $SECANTUS_BIN ]] || die "mongodb: $SECANTUS_BIN is missing after the install"
}
mongo_install() { with_lock secantus mongo_install_now; }

# A real MongoDB `ping` (OP_MSG) rather than a bare TCP connect.
mongo_healthy() {
  python3 - "$MONGO_HOST" "$MONGO_PORT" 2>/dev/null <<'PY'
import socket, struct, sys
def bson(items):
    body = b""
    for k, v in items:
        if isinstance(v, int):
            body += b"\x10" + k.encode() + b"\x00" + struct.pack("<i", v)
        else:
            s = v.encode() + b"\x00"
            body += b"\x02" + k.encode() + b"\x00" + struct.pack("<i", len(s)) + s
    return struct.pack("<i", len(body) + 5) + body + b"\x00"
msg = struct.pack("<I", 0) + b"\x00" + bson([("ping", 1), ("$db", "admin")])
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
    s.settimeout(2)
    s.sendall(struct.pack("<iiii", 16 + len(msg), 1, 0, 2013) + msg)
    data = s.recv(65536)
i = data.find(b"\x01ok\x00")
sys.exit(0 if i >= 0 and struct.unpack("<d", data[i + 4:i + 12])[0] == 1.0 else 1)
PY
}

mongo_up() {
  if pid_of mongo >/dev/null; then
    wait_healthy mongo mongo_healthy
    return 0
  fi
  rm -f "$(pid_file mongo)"
  if mongo_healthy; then
    adopt_foreign mongo "$MONGO_HOST:$MONGO_PORT"
    return 0
  fi
  tcp_open "$MONGO_HOST" "$MONGO_PORT" && die "mongo: $MONGO_HOST:$MONGO_PORT is taken by something that does not answer a MongoDB ping"
  mkdir -p "$DATA_DIR/mongo"
  log "starting SecantusDB on $MONGO_HOST:$MONGO_PORT"
  start_daemon mongo "$SECANTUS_BIN" --host "$MONGO_HOST" --port "$MONGO_PORT" \
    --storage-path "$DATA_DIR/mongo" --cache-size "${CQRS_MONGO_CACHE_SIZE:-256M}"
  wait_healthy mongo mongo_healthy
}

mongo_down() { stop_daemon mongo 30; }
