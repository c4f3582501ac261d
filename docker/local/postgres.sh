# shellcheck shell=bash
# PostgreSQL 15 from Debian, cluster 15/main, managed with pg_ctlcluster.
# `down` stops the cluster only when this stack started it (marker file in the run dir).

PG_VERSION="${CQRS_PG_VERSION:-15}"
PG_CLUSTER="${CQRS_PG_CLUSTER:-main}"
PG_CONF_DIR="/etc/postgresql/$PG_VERSION/$PG_CLUSTER"
PG_STARTED_MARKER="$RUN_DIR/postgres.started-by-stack"
CDC_SLOT="${CDC_SLOT:-cqrs_cdc}"
# the outbox connector's slot (docker/debezium/cqrs-outbox.json.tmpl)
CDC_OUTBOX_SLOT="${CDC_OUTBOX_SLOT:-cqrs_outbox}"
CDC_PUBLICATION="${CDC_PUBLICATION:-cqrs_cdc}"

as_root() {
  if ((EUID == 0)); then "$@"; else sudo -n "$@"; fi
}

# psql as the cluster superuser over the unix socket (peer authentication).
pg_su() {
  (cd / && as_root runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$(pg_cluster_port)" "$@")
}

pg_cluster_port() {
  local port
  port=$(pg_lsclusters -h "$PG_VERSION" "$PG_CLUSTER" 2>/dev/null | awk '{print $3}')
  printf '%s' "${port:-$POSTGRES_PORT}"
}

pg_cluster_status() {
  pg_lsclusters -h "$PG_VERSION" "$PG_CLUSTER" 2>/dev/null | awk '{print $4}'
}

postgres_install() {
  if [[ ! -x /usr/lib/postgresql/$PG_VERSION/bin/postgres ]] || ! command -v pg_ctlcluster >/dev/null; then
    log "installing PostgreSQL $PG_VERSION from Debian"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >/dev/null
    as_root apt-get install -y -qq --no-install-recommends "postgresql-$PG_VERSION" postgresql-client-common >/dev/null \
      || die "postgres: apt-get install postgresql-$PG_VERSION failed"
  fi
  if [[ ! -d $PG_CONF_DIR ]]; then
    log "creating the PostgreSQL cluster $PG_VERSION/$PG_CLUSTER on port $POSTGRES_PORT"
    as_root pg_createcluster --port "$POSTGRES_PORT" "$PG_VERSION" "$PG_CLUSTER" >/dev/null
  fi
  local src="$DOCKER_DIR/postgres/conf.d/cqrs-logical.conf" dst="$PG_CONF_DIR/conf.d/cqrs-logical.conf"
  if ! cmp -s "$src" "$dst"; then
    as_root install -D -m 644 "$src" "$dst"
  fi
}

postgres_healthy() {
  pg_isready -q -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -t 1 2>/dev/null
}

postgres_up() {
  local port
  port=$(pg_cluster_port)
  [[ $port == "$POSTGRES_PORT" ]] \
    || die "postgres: cluster $PG_VERSION/$PG_CLUSTER listens on port $port but POSTGRES_PORT=$POSTGRES_PORT"
  ln -sf "/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log" "$(log_file postgres)"
  if [[ $(pg_cluster_status) != online ]]; then
    log "starting PostgreSQL $PG_VERSION/$PG_CLUSTER"
    as_root pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" start \
      || fail_component postgres "pg_ctlcluster start failed"
    touch "$PG_STARTED_MARKER"
  fi
  wait_healthy postgres postgres_healthy
  local wal
  wal=$(pg_su -At -c 'SHOW wal_level')
  if [[ $wal != logical ]]; then
    log "PostgreSQL runs with wal_level=$wal: restarting it for wal_level=logical"
    as_root pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" restart \
      || fail_component postgres "pg_ctlcluster restart failed"
    wait_healthy postgres postgres_healthy
    wal=$(pg_su -At -c 'SHOW wal_level')
    [[ $wal == logical ]] || fail_component postgres "wal_level is still $wal after a restart"
  fi
  # roles, database, publication, service schemas (idempotent)
  (cd / && as_root runuser -u postgres -- env CQRS_PG_SUPERUSER=postgres PGPORT="$POSTGRES_PORT" \
    CDC_PUBLICATION="$CDC_PUBLICATION" sh "$DOCKER_DIR/postgres/initdb/10-cqrs-init.sh") \
    >>"$LOG_DIR/postgres-init.log" 2>&1 \
    || { tail -n 20 "$LOG_DIR/postgres-init.log" >&2; die "postgres: the init script failed (log: $LOG_DIR/postgres-init.log)"; }
  # the admin logs in with a password over TCP
  PGPASSWORD="$POSTGRES_PASSWORD" psql -X -q -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -U "$POSTGRES_USER" \
    -d "$POSTGRES_DB" -At -c 'SELECT 1' >/dev/null 2>&1 \
    || fail_component postgres "the admin $POSTGRES_USER cannot log in over TCP"
}

postgres_down() {
  if [[ -f $PG_STARTED_MARKER ]]; then
    if [[ $(pg_cluster_status) == online ]]; then
      log "stopping PostgreSQL $PG_VERSION/$PG_CLUSTER"
      as_root pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" stop -m fast || warn "postgres: stop failed"
    fi
    rm -f "$PG_STARTED_MARKER"
  elif [[ $(pg_cluster_status) == online ]]; then
    log "PostgreSQL was not started by this stack: left running"
  fi
}

# drop_cdc_slot: drops the connectors' replication slots (CDC and outbox) once no walsender
# holds them.
drop_cdc_slot() {
  local i active slot
  for slot in "$CDC_SLOT" "$CDC_OUTBOX_SLOT"; do
    for ((i = 0; i < 50; i++)); do
      active=$(pg_su -d "$POSTGRES_DB" -At -v slot="$slot" 2>/dev/null \
        <<<"SELECT active FROM pg_replication_slots WHERE slot_name = :'slot'" || true)
      [[ $active == t ]] || break
      sleep 0.2
    done
    pg_su -d "$POSTGRES_DB" -At -v slot="$slot" >/dev/null <<'SQL' || return 1
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
 WHERE slot_name = :'slot' AND NOT active;
SQL
  done
}

# postgres_clean: drops what the stack created for CDC (slot, publication) and the users
# Vault leased and did not revoke (dev Vault is in memory: its leases die with it).
postgres_clean() {
  local started=0
  [[ -d $PG_CONF_DIR ]] || return 0
  if [[ $(pg_cluster_status) != online ]]; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" start || return 0
    started=1
    wait_healthy postgres postgres_healthy
  fi
  if [[ $(pg_su -At -v db="$POSTGRES_DB" <<<"SELECT 1 FROM pg_database WHERE datname = :'db'") == 1 ]]; then
    log "dropping the replication slots $CDC_SLOT $CDC_OUTBOX_SLOT and the publication $CDC_PUBLICATION"
    drop_cdc_slot
    pg_su -d "$POSTGRES_DB" -v pub="$CDC_PUBLICATION" >/dev/null <<'SQL'
SELECT format('DROP PUBLICATION IF EXISTS %I', :'pub') \gexec
-- users leased by the dev Vault (members of a svc_* group role, named v-...)
SELECT format('REASSIGN OWNED BY %I TO %I', r.rolname, g.rolname)
  FROM pg_roles r JOIN pg_auth_members m ON m.member = r.oid JOIN pg_roles g ON g.oid = m.roleid
 WHERE r.rolname LIKE 'v-%' AND g.rolname LIKE 'svc\_%' \gexec
SELECT format('DROP OWNED BY %I', r.rolname) FROM pg_roles r
 WHERE r.rolname LIKE 'v-%' AND EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
   WHERE m.member = r.oid AND g.rolname LIKE 'svc\_%') \gexec
SELECT format('DROP ROLE %I', r.rolname) FROM pg_roles r
 WHERE r.rolname LIKE 'v-%' AND EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
   WHERE m.member = r.oid AND g.rolname LIKE 'svc\_%') \gexec
SQL
    if [[ ${CQRS_CLEAN_DROP_DB:-0} == 1 ]]; then
      log "dropping the database $POSTGRES_DB (CQRS_CLEAN_DROP_DB=1)"
      pg_su -v db="$POSTGRES_DB" >/dev/null <<'SQL'
SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', :'db') \gexec
SQL
    fi
  fi
  if ((started)); then
    as_root pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" "$PG_CLUSTER" stop -m fast || true
  fi
}
