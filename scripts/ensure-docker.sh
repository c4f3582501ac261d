#!/usr/bin/env bash
# A Docker engine that answers, on a Debian machine that may have none (run by `make test`
# and `make docker-engine`; idempotent, safe to run concurrently).
#
#   1. an engine already answers (`docker info`)          -> nothing to do
#   2. otherwise: install Debian's `docker.io` (the engine, containerd, runc) and
#      `docker-compose` (1.29, the only Compose Debian has) when missing, then start dockerd:
#      with systemd through `systemctl start docker`, without systemd (these machines) as a
#      detached `dockerd` whose output goes to $CQRS_TOOLS_DIR/logs/dockerd.log
#   3. wait until `docker info` answers (DOCKER_WAIT_SECONDS, default 60); a daemon that
#      does not come up fails with the tail of its log.
#
# Nothing here pulls an image: no registry is reachable from these machines. The images the
# stack needs are built locally by docker/images/build.sh.
set -euo pipefail

TOOLS_DIR="${CQRS_TOOLS_DIR:-$HOME/.cache/cqrs-toolkit}"
LOG_DIR="$TOOLS_DIR/logs"
DOCKERD_LOG="$LOG_DIR/dockerd.log"
WAIT="${DOCKER_WAIT_SECONDS:-60}"

log() { printf 'ensure-docker: %s\n' "$*" >&2; }
die() { printf 'ensure-docker: ERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if ((EUID == 0)); then "$@"; else sudo -n "$@"; fi
}

# `docker info` through whichever client is on PATH: the CLI negotiates the API version, so
# a newer client (these machines ship one in /usr/local/bin) talks to Debian's 20.10 engine.
engine_answers() {
  command -v docker >/dev/null 2>&1 && timeout 10 docker info >/dev/null 2>&1
}

if engine_answers; then
  log "a Docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
  exit 0
fi

((EUID == 0)) || sudo -n true 2>/dev/null \
  || die "no Docker engine answers and installing/starting one needs root (or passwordless sudo)"

mkdir -p "$LOG_DIR"
# One installer/starter at a time: `make test` and a developer's `make infrastructure-up`
# may both get here.
exec 9>"$LOG_DIR/.ensure-docker.lock"
flock -w 600 9 || die "timed out waiting for another ensure-docker run"
if engine_answers; then
  log "a Docker engine answers (started by a concurrent run)"
  exit 0
fi

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
  need+=(docker-compose)
fi
if ((${#need[@]})); then
  log "installing ${need[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  t0=$SECONDS
  as_root apt-get update -qq >"$LOG_DIR/ensure-docker-apt.log" 2>&1 \
    || { tail -n 20 "$LOG_DIR/ensure-docker-apt.log" >&2; die "apt-get update failed"; }
  # Without an init system, the package's postinst cannot start the service (policy-rc.d
  # refuses): that is expected, we start dockerd below.
  as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$LOG_DIR/ensure-docker-apt.log" 2>&1 \
    || { tail -n 20 "$LOG_DIR/ensure-docker-apt.log" >&2; die "apt-get install ${need[*]} failed"; }
  log "installed in $((SECONDS - t0))s"
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd is missing after installing docker.io"
command -v docker >/dev/null 2>&1 || die "the docker client is missing after installing docker.io"

t0=$SECONDS
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
  log "starting the engine with systemctl start docker"
  as_root systemctl start docker || die "systemctl start docker failed (journalctl -u docker)"
else
  pidfile=/var/run/docker.pid
  if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    # a dockerd is running (started by someone else) but does not answer yet: wait for it
    log "dockerd (pid $(cat "$pidfile")) is running but does not answer yet: waiting"
  else
    log "starting dockerd (no systemd; log: $DOCKERD_LOG)"
    printf '\n===== dockerd start %s =====\n' "$(date -Is)" >>"$DOCKERD_LOG"
    # own session, detached from this shell and from make: it outlives the test run
    as_root setsid dockerd --pidfile "$pidfile" >>"$DOCKERD_LOG" 2>&1 </dev/null &
    disown || true
  fi
fi

until engine_answers; do
  if ((SECONDS - t0 >= WAIT)); then
    log "the engine did not answer within ${WAIT}s; last lines of $DOCKERD_LOG:"
    tail -n 30 "$DOCKERD_LOG" >&2 || true
    die "no Docker engine"
  fi
  sleep 0.5
done
log "Docker engine $(docker version --format '{{.Server.Version}}' 2>/dev/null) answers after $((SECONDS - t0))s"
