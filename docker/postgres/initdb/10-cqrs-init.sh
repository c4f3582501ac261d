#!/bin/sh
# PostgreSQL initialisation of the CQRS toolkit, shared by both ways of running the stack.
#
# * Compose: mount docker/postgres/initdb at /docker-entrypoint-initdb.d of the official
#   `postgres` image (15 or newer). The entrypoint runs this file as the superuser
#   $POSTGRES_USER over the unix socket, with $POSTGRES_DB already created; pass
#   DEBEZIUM_PG_USER / DEBEZIUM_PG_PASSWORD into the container too.
# * Local stack: docker/local/postgres.sh runs it as the OS user `postgres` with
#   CQRS_PG_SUPERUSER=postgres (peer authentication on the unix socket).
#
# Creates (idempotent, re-running is fine):
#   - the admin role $POSTGRES_USER (LOGIN SUPERUSER for development, password from the env)
#     and the database $POSTGRES_DB owned by it;
#   - the Debezium role $DEBEZIUM_PG_USER: LOGIN REPLICATION, member of pg_read_all_data;
#   - the publication $CDC_PUBLICATION (default cqrs_cdc) FOR ALL TABLES, so tables created
#     later are captured (the connector runs with publication.autocreate.mode=disabled);
#   - per service schema in $CQRS_SERVICE_SCHEMAS (default "orders inventory billing"): the
#     schema, owned by the admin, and a NOLOGIN group role svc_<schema> with USAGE + CREATE on
#     its own schema only (Vault's dynamic users are created IN ROLE svc_<schema>);
#   - REVOKE CREATE ON SCHEMA public FROM PUBLIC;
#   - Debezium's signal table debezium.signal (incremental snapshots: the sync-service's
#     `rebuild` inserts execute-snapshot signals, the connector writes its window marks),
#     writable by the Debezium role and by $SIGNAL_PG_USER (default cqrs_signal), a LOGIN
#     role that can insert signals and nothing else.
# Passwords are read inside psql with \getenv: never on a command line, never printed.
set -eu

: "${POSTGRES_USER:=cqrs_admin}"
: "${POSTGRES_DB:=cqrs}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
: "${DEBEZIUM_PG_USER:=cqrs_debezium}"
: "${DEBEZIUM_PG_PASSWORD:?DEBEZIUM_PG_PASSWORD must be set}"
: "${CDC_PUBLICATION:=cqrs_cdc}"
: "${SIGNAL_PG_USER:=cqrs_signal}"
: "${SIGNAL_PG_PASSWORD:=cqrs_signal_dev}"
: "${CQRS_SERVICE_SCHEMAS:=orders inventory billing}"
SUPERUSER="${CQRS_PG_SUPERUSER:-$POSTGRES_USER}"
export POSTGRES_USER POSTGRES_DB POSTGRES_PASSWORD DEBEZIUM_PG_USER DEBEZIUM_PG_PASSWORD CDC_PUBLICATION \
  SIGNAL_PG_USER SIGNAL_PG_PASSWORD

for s in $CQRS_SERVICE_SCHEMAS; do
  case "$s" in
    *[!a-z0-9_]* | [0-9]* | '') echo "10-cqrs-init: invalid schema name '$s'" >&2; exit 1 ;;
  esac
done

psql_su() {
  PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" \
    psql -X -q -v ON_ERROR_STOP=1 --no-password --username "$SUPERUSER" "$@"
}

# 1. Cluster level: admin role and database (in the official image both exist already).
psql_su --dbname postgres <<'SQL'
\getenv admin_user POSTGRES_USER
\getenv admin_pw POSTGRES_PASSWORD
\getenv db POSTGRES_DB
SELECT format('CREATE ROLE %I', :'admin_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'admin_user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN SUPERUSER CREATEDB CREATEROLE REPLICATION PASSWORD %L',
              :'admin_user', :'admin_pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'admin_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL

# 2. Database level: Debezium role, publication, public schema.
psql_su --dbname "$POSTGRES_DB" <<'SQL'
\getenv dbz_user DEBEZIUM_PG_USER
\getenv dbz_pw DEBEZIUM_PG_PASSWORD
\getenv admin_user POSTGRES_USER
\getenv db POSTGRES_DB
\getenv pub CDC_PUBLICATION
SELECT format('CREATE ROLE %I', :'dbz_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'dbz_user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN REPLICATION PASSWORD %L', :'dbz_user', :'dbz_pw') \gexec
SELECT format('GRANT pg_read_all_data TO %I', :'dbz_user') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'dbz_user') \gexec
SELECT format('CREATE PUBLICATION %I FOR ALL TABLES', :'pub')
 WHERE NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = :'pub') \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL

# 3. One schema and one NOLOGIN group role per service.
for s in $CQRS_SERVICE_SCHEMAS; do
  psql_su --dbname "$POSTGRES_DB" -v schema="$s" -v all_schemas="$CQRS_SERVICE_SCHEMAS" <<'SQL'
\getenv admin_user POSTGRES_USER
\getenv db POSTGRES_DB
\set grp 'svc_' :schema
SELECT format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', :'schema', :'admin_user') \gexec
SELECT format('CREATE ROLE %I NOLOGIN', :'grp')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'grp') \gexec
SELECT format('ALTER ROLE %I NOLOGIN', :'grp') \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', :'db', :'grp') \gexec
SELECT format('GRANT USAGE, CREATE ON SCHEMA %I TO %I', :'schema', :'grp') \gexec
-- nothing on the other service schemas, no CREATE on public
SELECT format('REVOKE ALL ON SCHEMA %I FROM %I', o, :'grp')
  FROM unnest(string_to_array(:'all_schemas', ' ')) AS o
 WHERE o <> :'schema' AND o <> '' AND EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = o) \gexec
SELECT format('REVOKE CREATE ON SCHEMA public FROM %I', :'grp') \gexec
SQL
done

# 4. Debezium's signal table and the role that may only insert signals into it.
psql_su --dbname "$POSTGRES_DB" <<'SQL'
\getenv admin_user POSTGRES_USER
\getenv dbz_user DEBEZIUM_PG_USER
\getenv sig_user SIGNAL_PG_USER
\getenv sig_pw SIGNAL_PG_PASSWORD
\getenv db POSTGRES_DB
SELECT format('CREATE SCHEMA IF NOT EXISTS debezium AUTHORIZATION %I', :'admin_user') \gexec
CREATE TABLE IF NOT EXISTS debezium.signal (
  id   varchar(64) PRIMARY KEY,
  type varchar(32) NOT NULL,
  data varchar(2048)
);
SELECT format('ALTER TABLE debezium.signal OWNER TO %I', :'admin_user') \gexec
SELECT format('CREATE ROLE %I', :'sig_user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'sig_user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'sig_user', :'sig_pw') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'sig_user') \gexec
SELECT format('GRANT USAGE ON SCHEMA debezium TO %I, %I', :'dbz_user', :'sig_user') \gexec
SELECT format('GRANT SELECT, INSERT, DELETE ON debezium.signal TO %I', :'dbz_user') \gexec
SELECT format('GRANT INSERT ON debezium.signal TO %I', :'sig_user') \gexec
SQL

echo "10-cqrs-init: database $POSTGRES_DB ready (schemas: $CQRS_SERVICE_SCHEMAS; publication $CDC_PUBLICATION)"
