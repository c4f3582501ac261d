#!/usr/bin/env bash
# scripts/cargo-tool.sh NAME [ARGS...]: runs the cargo subcommand NAME that `make lint` uses,
# installing it first from crates.io at its pinned version into the tools directory
# (CQRS_TOOLS_DIR, default ~/.cache/cqrs-toolkit, shared with the local stack's tools), never
# into ~/.cargo/bin. Once installed, nothing here needs the network.
#
#   shear  cargo-shear: unused dependencies, per crate and in [workspace.dependencies] (which
#          cargo-machete does not check). 1.14 needs a newer rustc than ours (1.95).
set -euo pipefail
name=${1:?usage: scripts/cargo-tool.sh NAME [ARGS...]}
shift
case $name in
  shear) crate=cargo-shear version="${CQRS_CARGO_SHEAR_VERSION:-1.13.0}" ;;
  *) echo "cargo-tool: unknown tool $name" >&2; exit 2 ;;
esac
TOOLS_DIR="${CQRS_TOOLS_DIR:-$HOME/.cache/cqrs-toolkit}"
root="$TOOLS_DIR/$crate/$version"
bin="$root/bin/$crate"
if [[ ! -x $bin ]]; then
  mkdir -p "$TOOLS_DIR/logs" "$TOOLS_DIR/locks"
  log="$TOOLS_DIR/logs/$crate-install.log"
  (
    flock 9
    if [[ ! -x $bin ]]; then
      echo "installing $crate $version (about 2 min, once; log: $log)" >&2
      # --locked: the crate's own lock file, so the pinned version builds the same way later.
      "${CARGO:-cargo}" install "$crate" --version "=$version" --locked --root "$root" \
        >>"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
    fi
  ) 9>"$TOOLS_DIR/locks/$crate.lock"
fi
exec "$bin" "$@"
