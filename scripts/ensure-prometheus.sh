#!/usr/bin/env bash
# A Prometheus server binary for the dashboard test (tests/tests/dashboard.rs), which runs
# its own short-lived Prometheus against a sync-service to evaluate every query of the
# Grafana dashboard. Debian's package is unpacked into the tool cache (no service is
# installed or started); a `prometheus` on PATH or $PROMETHEUS_BIN is used as is.
# Prints the binary's path.
set -euo pipefail

if [[ -n ${PROMETHEUS_BIN:-} && -x $PROMETHEUS_BIN ]]; then
  echo "$PROMETHEUS_BIN"
  exit 0
fi
if command -v prometheus >/dev/null; then
  command -v prometheus
  exit 0
fi
dir="${XDG_CACHE_HOME:-$HOME/.cache}/cqrs-toolkit/prometheus"
bin="$dir/root/usr/bin/prometheus"
if [[ -x $bin ]]; then
  echo "$bin"
  exit 0
fi
echo "ensure-prometheus: unpacking Debian's prometheus package into $dir" >&2
rm -rf "$dir/deb" "$dir/root"
mkdir -p "$dir/deb" "$dir/root"
download() { (cd "$dir/deb" && apt-get -o APT::Sandbox::User=root download prometheus) >"$dir/apt.log" 2>&1; }
if ! download; then
  apt-get update -qq >>"$dir/apt.log" 2>&1 || true
  download || { tail -n 20 "$dir/apt.log" >&2; echo "ensure-prometheus: apt-get download prometheus failed" >&2; exit 1; }
fi
dpkg-deb -x "$dir"/deb/prometheus_*.deb "$dir/root"
rm -rf "$dir/deb"
[[ -x $bin ]] || { echo "ensure-prometheus: the package has no usr/bin/prometheus" >&2; exit 1; }
"$bin" --version >&2
echo "$bin"
