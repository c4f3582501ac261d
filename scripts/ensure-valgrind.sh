#!/usr/bin/env bash
# valgrind for the instruction-count benchmark (sync-service/benches/decode_cost.rs, run by
# `make bench`): callgrind counts are repeatable on a shared, noisy machine where times are
# not. Installed from Debian's archive when missing (root, as on these machines).
set -euo pipefail

if command -v valgrind >/dev/null; then
  exit 0
fi
echo "ensure-valgrind: installing Debian's valgrind" >&2
log="$(mktemp)"
if ! apt-get install -y --no-install-recommends valgrind >"$log" 2>&1; then
  apt-get update -qq >>"$log" 2>&1 || true
  apt-get install -y --no-install-recommends valgrind >>"$log" 2>&1 \
    || { tail -n 20 "$log" >&2; rm -f "$log"; echo "ensure-valgrind: apt-get install valgrind failed" >&2; exit 1; }
fi
rm -f "$log"
valgrind --version >&2
