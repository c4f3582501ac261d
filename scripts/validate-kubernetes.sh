#!/usr/bin/env bash
# Validates deploy/kubernetes without a cluster (run by `make test-deploy-config`, after the
# Rust tests have built target/debug/sync-service).
#
# 1. Every manifest parses (python3 + PyYAML; Debian's python3-yaml is installed when
#    missing) and kustomization.yaml lists every manifest of the folder.
# 2. Policy checks: selectors of the Service and the PodDisruptionBudget match the pod
#    labels; the pod runs as the Dockerfile's non-root user with a read-only root file
#    system, no privilege escalation and no capabilities; memory request and limit are set;
#    the startup/liveness probes call /healthz and the readiness probe /readyz on the named
#    port, whose number is the one SYNC__HTTP__LISTEN binds and Prometheus scrapes; the
#    grace period leaves room for the revocation flush; the config path of the arguments is
#    inside the ConfigMap mount.
# 3. The configuration the pod reads (docker/sync-service/sync.toml) passes
#    `sync-service check-config` with the Deployment's environment.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/deploy/kubernetes"
BIN="${SYNC_SERVICE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/sync-service}"
die() { printf 'validate-kubernetes: FAIL: %s\n' "$*" >&2; exit 1; }

if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "validate-kubernetes: installing python3-yaml" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-yaml >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-yaml >/dev/null; } \
    || die "python3-yaml is missing and could not be installed"
fi

# Prints the Deployment's literal environment as NAME=value lines (secret refs get a
# placeholder of the right shape).
env_lines=$(python3 - "$DIR" "$ROOT/docker/sync-service/Dockerfile" <<'PY'
import pathlib, re, sys, yaml

folder, dockerfile = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def fail(msg):
    sys.exit(f"validate-kubernetes: FAIL: {msg}")

kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
manifests = sorted(p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")
if sorted(kust.get("resources", [])) != manifests:
    fail(f"kustomization.yaml resources {kust.get('resources')} != manifests {manifests}")
docs = {}
for name in manifests:
    for doc in yaml.safe_load_all((folder / name).read_text()):
        if doc:
            docs[doc["kind"]] = doc
for kind in ("Deployment", "Service", "PodDisruptionBudget"):
    if kind not in docs:
        fail(f"no {kind}")
dep, svc, pdb = docs["Deployment"], docs["Service"], docs["PodDisruptionBudget"]
pod = dep["spec"]["template"]
labels = pod["metadata"]["labels"]
def selects(selector, what):
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        fail(f"{what} selector {selector} does not select the pod labels {labels}")
selects(dep["spec"]["selector"]["matchLabels"], "Deployment")
selects(svc["spec"]["selector"], "Service")
selects(pdb["spec"]["selector"]["matchLabels"], "PodDisruptionBudget")

spec = pod["spec"]
(container,) = spec["containers"]
user = re.search(r"^USER (\d+)", dockerfile.read_text(), re.M)
sec = spec.get("securityContext", {})
if not sec.get("runAsNonRoot") or str(sec.get("runAsUser")) != user.group(1):
    fail(f"pod must run as non-root user {user.group(1)} (Dockerfile USER): {sec}")
csec = container.get("securityContext", {})
if csec.get("readOnlyRootFilesystem") is not True or csec.get("allowPrivilegeEscalation") is not False:
    fail(f"container needs readOnlyRootFilesystem and no privilege escalation: {csec}")
if csec.get("capabilities", {}).get("drop") != ["ALL"]:
    fail("container must drop ALL capabilities")
res = container.get("resources", {})
if "memory" not in res.get("requests", {}) or "memory" not in res.get("limits", {}):
    fail(f"memory request and limit required: {res}")

env = {e["name"]: e for e in container.get("env", [])}
listen = env.get("SYNC__HTTP__LISTEN", {}).get("value", "")
if not listen.startswith("0.0.0.0:"):
    fail(f"SYNC__HTTP__LISTEN must bind all interfaces in a pod: {listen!r}")
port = int(listen.rsplit(":", 1)[1])
ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
if ports.get("http") != port:
    fail(f"container port 'http' {ports.get('http')} != listen port {port}")
if str(pod["metadata"].get("annotations", {}).get("prometheus.io/port")) != str(port):
    fail("prometheus.io/port annotation does not match the listen port")
if svc["spec"]["ports"][0].get("targetPort") != "http":
    fail("Service targetPort must be the named port 'http'")
for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
    get = container.get(probe, {}).get("httpGet", {})
    if get.get("path") != path or get.get("port") != "http":
        fail(f"{probe} must GET {path} on port 'http': {get}")
if int(spec.get("terminationGracePeriodSeconds", 30)) < 30:
    fail("terminationGracePeriodSeconds leaves no room for the revocation flush (10 s) and the final commit")
args = container.get("args", [])
config = args[args.index("--config") + 1]
mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
mount = str(pathlib.PurePosixPath(config).parent)
volumes = {v["name"]: v for v in spec.get("volumes", [])}
if mount not in mounts or "configMap" not in volumes.get(mounts[mount], {}):
    fail(f"--config {config} is not inside a ConfigMap mount: {mounts}")

for name, e in env.items():
    if "value" in e:
        print(f"{name}={e['value']}")
    elif name == "MONGODB_URI":
        print("MONGODB_URI=mongodb://mongodb:27017/?directConnection=true")
PY
) || exit 1

[[ -x $BIN ]] || die "$BIN is missing: build it with cargo build --bin sync-service"
mapfile -t envs <<<"$env_lines"
env -i PATH="$PATH" "${envs[@]}" "$BIN" check-config --config "$ROOT/docker/sync-service/sync.toml" \
  || die "docker/sync-service/sync.toml does not pass check-config with the Deployment's environment"
echo "validate-kubernetes: deploy/kubernetes OK"
