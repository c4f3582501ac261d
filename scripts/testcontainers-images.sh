#!/usr/bin/env bash
# The images command of cqrs-testcontainers in this workspace (CQRS_IMAGES_COMMAND, set by
# .cargo/config.toml): the crate runs it once per test process, before it resolves the images
# of the services named in CQRS_IMAGES_WANTED (build.sh names, space separated).
#
# The decision is docker/compose.sh's (`mode`): when this engine can have the upstream images
# (present, or a registry answers) it prints only a note, and the crate runs its defaults (the
# images of docker/docker-compose.yml). Otherwise (these machines: no registry) it builds, or
# finds by input hash, the local images with docker/images/build.sh and prints their
# CQRS_IMAGE_<NAME>=<tag> lines. The sync-service image takes the binary of this workspace's
# target directory (fresh after `cargo test --workspace`), the reaper the Ryuk stand-in.
# Progress goes to stderr; the first stdout line is a `# ...` note the crate shows.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

mode=$("$ROOT/docker/compose.sh" mode)
case "$mode" in
  upstream*)
    echo "# docker/compose.sh mode: $mode"
    exit 0
    ;;
esac
wanted="${CQRS_IMAGES_WANTED:-postgres kafka schema-registry kafka-connect mongodb vault ryuk}"
[[ -n ${CQRS_SYNC_SERVICE_BIN:-} || ! -x $TARGET/debug/sync-service ]] || export CQRS_SYNC_SERVICE_BIN="$TARGET/debug/sync-service"
echo "# local builds of docker/images/build.sh (docker/compose.sh mode: $mode)"
"$ROOT/docker/images/build.sh" --only "$wanted"
