#!/usr/bin/env bash
# System packages the Rust build needs: cmake and libcurl for rdkafka's bundled librdkafka
# (Debian's librdkafka is too old for the broker, see STACK-NOTES), pkg-config, a C++ compiler.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v g++ >/dev/null || need+=(g++)
dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || need+=(libcurl4-openssl-dev)
dpkg -s libsasl2-dev >/dev/null 2>&1 || need+=(libsasl2-dev)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
if ((${#need[@]})); then
  echo "installing build dependencies: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
