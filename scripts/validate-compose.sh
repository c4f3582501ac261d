#!/usr/bin/env bash
# Validates docker/docker-compose.yml and its offline override without a Docker engine (run by
# `make test-compose-config`).
#
# 1. `config -q` with the repository's .env and every profile, through `docker compose` (v2)
#    or `docker-compose` (v1); installs Debian's docker-compose when neither can run `config`.
# 2. Policy checks on the resolved configuration (python3 + PyYAML or JSON):
#    - every published port is bound to 127.0.0.1;
#    - every long-running service has a healthcheck and `restart: unless-stopped`;
#    - every init job (label org.cqrs-toolkit.role=init-job) has `restart: "no"` and a
#      dependant waiting for it with `condition: service_completed_successfully`;
#    - every image is pinned (a tag that is not `latest`);
#    - all services share one dedicated network;
#    - each endpoint of the .env contract is published on 127.0.0.1 at its port.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FILE="${VALIDATE_COMPOSE_FILE:-$ROOT/docker/docker-compose.yml}"
ENV_FILE="$ROOT/.env"
cd "$ROOT"

log() { printf 'validate-compose: %s\n' "$*" >&2; }
die() { printf 'validate-compose: FAIL: %s\n' "$*" >&2; exit 1; }

[[ -f $FILE ]] || die "$FILE does not exist"
[[ -f $ENV_FILE ]] || die "$ENV_FILE does not exist"

as_root() {
  if ((EUID == 0)); then "$@"; else sudo -n "$@"; fi
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >/dev/null || die "apt-get update failed"
  as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
}

# A Compose that can run `config` here (no engine needed for it).
DC=()
compose_ok() { "$@" -p cqrs-toolkit --env-file "$ENV_FILE" -f "$FILE" config --services >/dev/null 2>&1; }
pick_compose() {
  if docker compose version >/dev/null 2>&1 && compose_ok docker compose; then
    DC=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1 && compose_ok docker-compose; then
    DC=(docker-compose)
  fi
}
pick_compose
if ((${#DC[@]} == 0)); then
  if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    log "no Compose found: installing Debian's docker-compose"
    apt_install docker-compose
    pick_compose
  fi
fi
if ((${#DC[@]} == 0)); then
  # a Compose is installed but `config` fails: show why
  if docker compose version >/dev/null 2>&1; then DC=(docker compose); else DC=(docker-compose); fi
fi
DC+=(-p cqrs-toolkit --env-file "$ENV_FILE" -f "$FILE" --profile app)
log "using: ${DC[*]}"

# 1. syntax and schema
if ! "${DC[@]}" config -q; then
  die "'${DC[*]} config -q' rejected $FILE"
fi

# 2. policy checks on the resolved configuration
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
format=yaml
if [[ ${DC[0]} == docker && ${DC[1]} == compose ]] && "${DC[@]}" config --format json >"$tmp/config" 2>/dev/null; then
  format=json
else
  "${DC[@]}" config >"$tmp/config" || die "'${DC[*]} config' failed"
fi

PY=()
for candidate in python3 /usr/bin/python3; do
  if command -v "$candidate" >/dev/null 2>&1; then
    if [[ $format == json ]] || "$candidate" -c 'import yaml' >/dev/null 2>&1; then
      PY=("$candidate")
      break
    fi
  fi
done
if ((${#PY[@]} == 0)); then
  log "installing python3-yaml (Debian) for the policy checks"
  apt_install python3 python3-yaml
  PY=(/usr/bin/python3)
fi

"${PY[@]}" - "$tmp/config" "$format" "$ENV_FILE" <<'PYEOF'
import json
import os
import re
import sys

path, fmt, env_file = sys.argv[1:4]
with open(path) as f:
    if fmt == "json":
        cfg = json.load(f)
    else:
        import yaml
        cfg = yaml.safe_load(f)

services = cfg.get("services") or {}
errors = []
checks = 0
failed_checks = set()


def fail(msg):
    errors.append(msg)
    failed_checks.add(checks)


def port_entries(svc):
    """(host_ip, published, target) of every ports: entry, short or long syntax."""
    out = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out.append((str(p.get("host_ip") or ""), str(p.get("published") or ""), str(p.get("target") or "")))
            continue
        s = str(p).split("/")[0]
        parts = s.split(":")
        if len(parts) == 3:
            out.append((parts[0], parts[1], parts[2]))
        elif len(parts) == 2:
            out.append(("", parts[0], parts[1]))
        else:
            out.append(("", "", parts[0]))
    return out


def is_job(svc):
    labels = svc.get("labels") or {}
    if isinstance(labels, list):
        labels = dict(l.split("=", 1) for l in labels if "=" in l)
    return labels.get("org.cqrs-toolkit.role") == "init-job"


def depends(svc):
    d = svc.get("depends_on") or {}
    if isinstance(d, list):
        return {name: {"condition": "service_started"} for name in d}
    return d


# published ports: 127.0.0.1 only
checks += 1
published = {}
for name, svc in services.items():
    for host_ip, pub, target in port_entries(svc):
        if host_ip != "127.0.0.1":
            fail(f"service '{name}': port {pub or '?'}->{target} is bound to "
                 f"'{host_ip or '0.0.0.0 (all interfaces)'}', must be 127.0.0.1")
        published.setdefault(pub, []).append(name)

# healthchecks / restart policy / init jobs
checks += 1
completed_deps = {}
for name, svc in services.items():
    for dep, cond in depends(svc).items():
        if (cond or {}).get("condition") == "service_completed_successfully":
            completed_deps.setdefault(dep, []).append(name)
for name, svc in services.items():
    if is_job(svc):
        if str(svc.get("restart", "no")) != "no":
            fail(f"init job '{name}': restart must be \"no\", is {svc.get('restart')!r}")
        if name not in completed_deps:
            fail(f"init job '{name}': no service waits for it with condition: service_completed_successfully")
        continue
    hc = svc.get("healthcheck")
    if not hc or hc.get("disable") or not hc.get("test") or hc.get("test") in (["NONE"], "NONE"):
        fail(f"service '{name}' has no healthcheck")
    if svc.get("restart") != "unless-stopped":
        fail(f"service '{name}': restart is {svc.get('restart')!r}, expected 'unless-stopped'")

# pinned images
checks += 1
for name, svc in services.items():
    image = svc.get("image")
    if not image:
        if "build" not in svc:
            fail(f"service '{name}' has neither image nor build")
        continue
    ref = image.split("@")[0]
    last = ref.rsplit("/", 1)[-1]
    if "@" in image:
        continue
    if ":" not in last:
        fail(f"service '{name}': image '{image}' has no tag (pin a version)")
    elif last.endswith(":latest"):
        fail(f"service '{name}': image '{image}' uses 'latest' (pin a version)")

# one dedicated network
checks += 1
networks = cfg.get("networks") or {}
if len(networks) != 1 or "default" in networks:
    fail(f"expected exactly one dedicated network, found {sorted(networks) or 'none'}")
else:
    (net,) = networks
    for name, svc in services.items():
        nets = svc.get("networks") or {}
        if net not in nets:
            fail(f"service '{name}' is not on the network '{net}'")

# .env endpoint contract: each endpoint published on 127.0.0.1 at its port
checks += 1
env = {}
with open(env_file) as f:
    for line in f:
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line.rstrip("\n"))
        if m:
            env[m.group(1)] = m.group(2)
env.update({k: v for k, v in os.environ.items() if k in env})


def port_of(value):
    m = re.search(r"(?:^|//|@|,)(?:[^/:@,]+):(\d+)", value)
    return m.group(1) if m else None


contract = {
    "POSTGRES_PORT": env.get("POSTGRES_PORT"),
    "KAFKA_BOOTSTRAP_SERVERS": port_of(env.get("KAFKA_BOOTSTRAP_SERVERS", "")),
    "SCHEMA_REGISTRY_URL": port_of(env.get("SCHEMA_REGISTRY_URL", "")),
    "KAFKA_CONNECT_URL": port_of(env.get("KAFKA_CONNECT_URL", "")),
    "MONGODB_URI": port_of(env.get("MONGODB_URI", "")),
    "VAULT_ADDR": port_of(env.get("VAULT_ADDR", "")),
    "OTEL_EXPORTER_OTLP_ENDPOINT": port_of(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")),
    "SYNC_SERVICE_HTTP_PORT": env.get("SYNC_SERVICE_HTTP_PORT"),
}
for var, port in contract.items():
    if var not in env:
        fail(f".env has no {var}")
    elif not port:
        fail(f".env {var}={env[var]!r}: no port found")
    elif port not in published:
        fail(f".env {var}={env[var]!r}: port {port} is not published by any service")

for e in errors:
    print(f"validate-compose: FAIL: {e}", file=sys.stderr)
print(f"validate-compose: {len(services)} services; policy checks: "
      f"{checks - len(failed_checks)} passed, {len(failed_checks)} failed", file=sys.stderr)
sys.exit(1 if errors else 0)
PYEOF
log "OK: docker/docker-compose.yml is valid"

# 3. The offline override (docker/docker-compose.offline.yml) on top of it: valid, names no
#    service the upstream file does not have, gives every service it starts an image built
#    here (cqrs-local/...), and leaves the others (no local image) to the `observability`
#    profile. The images themselves are built and run by tests/tests/compose_stack.rs.
OVERRIDE="${VALIDATE_COMPOSE_OVERRIDE:-$ROOT/docker/docker-compose.offline.yml}"
if [[ -f $OVERRIDE ]]; then
  DCO=("${DC[@]}" -f "$OVERRIDE" --profile observability)
  "${DCO[@]}" config -q || die "'${DCO[*]} config -q' rejected $OVERRIDE"
  "${DC[@]}" config --services | sort >"$tmp/upstream-services"
  "${DCO[@]}" config --services | sort >"$tmp/offline-services"
  extra=$(comm -13 "$tmp/upstream-services" "$tmp/offline-services")
  [[ -z $extra ]] || die "$OVERRIDE adds services the upstream file does not have: $extra"
  if [[ $format == json ]]; then
    "${DCO[@]}" config --format json >"$tmp/offline-config"
  else
    "${DCO[@]}" config >"$tmp/offline-config"
  fi
  "${PY[@]}" - "$tmp/offline-config" "$format" <<'PYEOF'
import json
import sys

path, fmt = sys.argv[1:3]
with open(path) as f:
    if fmt == "json":
        cfg = json.load(f)
    else:
        import yaml
        cfg = yaml.safe_load(f)
errors = []
left_out = []
for name, svc in sorted((cfg.get("services") or {}).items()):
    if "observability" in (svc.get("profiles") or []):
        left_out.append(name)
        continue
    image = str(svc.get("image") or "")
    if not image.startswith("cqrs-local/"):
        errors.append(f"service '{name}' runs offline with image '{image}', not one built here (cqrs-local/...)")
for e in errors:
    print(f"validate-compose: FAIL: offline override: {e}", file=sys.stderr)
print(f"validate-compose: offline override: {len(cfg.get('services') or {}) - len(left_out)} services on local images, "
      f"left out (profile observability): {', '.join(left_out) or 'none'}", file=sys.stderr)
sys.exit(1 if errors else 0)
PYEOF
  log "OK: docker/docker-compose.offline.yml is valid on top of it"
fi
