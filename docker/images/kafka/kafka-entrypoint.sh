#!/usr/bin/env bash
# tansu has ONE listener and advertises ONE address. The address advertised by default is
# this container's own IP: other containers reach it (their bootstrap is kafka:9092), and so
# does the Docker host (its bootstrap is the published port on 127.0.0.1, the metadata then
# points it at the container's IP on the bridge network).
#   KAFKA_LISTEN_PORT [9092]   TANSU_ADVERTISED_LISTENER_URL [tcp://<container ip>:<port>]
#   TANSU_STORAGE_ENGINE [memory://tansu/]   CLUSTER_ID [tansu_cluster]
set -euo pipefail
port="${KAFKA_LISTEN_PORT:-9092}"
ip="$(hostname -i | awk '{print $1}')"
advertised="${TANSU_ADVERTISED_LISTENER_URL:-tcp://$ip:$port}"
echo "kafka-entrypoint: tansu on 0.0.0.0:$port, advertising $advertised"
exec tansu broker \
  --cluster-id "${CLUSTER_ID:-tansu_cluster}" \
  --listener-url "tcp://0.0.0.0:$port" \
  --advertised-listener-url "$advertised" \
  --storage-engine "${TANSU_STORAGE_ENGINE:-memory://tansu/}" \
  "$@"
