#!/bin/sh
# Vault / OpenBao bootstrap of the CQRS toolkit, shared by both ways of running the stack.
# POSIX sh + the Vault-compatible CLI only (runs in the hashicorp/vault image, which has no
# bash and no jq). Idempotent: safe to run again against a configured server.
#
# Configures:
#   - database secrets engine at database/, connection `cqrs` to PostgreSQL as the admin;
#     one role per service (orders, inventory, billing) creating users IN ROLE svc_<service>
#     whose sessions run as the group role (objects stay owned by svc_<service>); revocation
#     reassigns what the user owns to svc_<service> before dropping it.
#   - KV v2 at secret/ with the MongoDB credentials of each service at
#     secret/cqrs/<service>/mongodb (username, password, uri, database); written only when missing.
#   - a policy cqrs-<service> per service: its own database creds and KV secret only.
#   - AppRole auth with a role per service; role_id and secret_id written to
#     $VAULT_APPROLE_DIR/<service>/role_id and .../secret_id (mode 600), never printed.
#
# Environment (defaults in brackets):
#   VAULT_CLI [bao]   VAULT_ADDR, VAULT_TOKEN (or BAO_ADDR/BAO_TOKEN)   root/admin token
#   VAULT_PG_HOST [$POSTGRES_HOST or 127.0.0.1]  VAULT_PG_PORT [$POSTGRES_PORT or 5432]
#     (Compose: VAULT_PG_HOST=postgres)
#   POSTGRES_DB [cqrs]  POSTGRES_USER [cqrs_admin]  POSTGRES_PASSWORD (required)
#   CQRS_SERVICES [orders inventory billing]  (schema = service name, group role svc_<service>)
#   VAULT_DB_DEFAULT_TTL [1h]  VAULT_DB_MAX_TTL [24h]
#   VAULT_TOKEN_TTL [1h]  VAULT_TOKEN_MAX_TTL [24h]  (AppRole tokens)
#   VAULT_MONGODB_URI [$MONGODB_URI or mongodb://127.0.0.1:27017/?directConnection=true]
#     (the MongoDB server of the stack runs without authentication: the URI carries no
#     credentials; username/password are stored for clients that enable auth)
#   VAULT_APPROLE_DIR [./approle]
set -eu

CLI="${VAULT_CLI:-bao}"
: "${VAULT_ADDR:=${BAO_ADDR:-http://127.0.0.1:8200}}"
: "${VAULT_TOKEN:=${BAO_TOKEN:-}}"
[ -n "$VAULT_TOKEN" ] || { echo "vault-bootstrap: VAULT_TOKEN is not set" >&2; exit 1; }
BAO_ADDR="$VAULT_ADDR"
BAO_TOKEN="$VAULT_TOKEN"
export VAULT_ADDR VAULT_TOKEN BAO_ADDR BAO_TOKEN

PG_HOST="${VAULT_PG_HOST:-${POSTGRES_HOST:-127.0.0.1}}"
PG_PORT="${VAULT_PG_PORT:-${POSTGRES_PORT:-5432}}"
PG_DB="${POSTGRES_DB:-cqrs}"
PG_ADMIN="${POSTGRES_USER:-cqrs_admin}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
SERVICES="${CQRS_SERVICES:-orders inventory billing}"
DB_DEFAULT_TTL="${VAULT_DB_DEFAULT_TTL:-1h}"
DB_MAX_TTL="${VAULT_DB_MAX_TTL:-24h}"
TOKEN_TTL="${VAULT_TOKEN_TTL:-1h}"
TOKEN_MAX_TTL="${VAULT_TOKEN_MAX_TTL:-24h}"
MONGO_URI="${VAULT_MONGODB_URI:-${MONGODB_URI:-mongodb://127.0.0.1:27017/?directConnection=true}}"
APPROLE_DIR="${VAULT_APPROLE_DIR:-./approle}"

say() { echo "vault-bootstrap: $*"; }
fail() { echo "vault-bootstrap: ERROR: $*" >&2; exit 1; }

# JSON string escaping for values we put into request bodies (backslash, double quote).
json_str() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }

for s in $SERVICES; do
  case "$s" in *[!a-z0-9_]* | [0-9]* | '') fail "invalid service name '$s'" ;; esac
done

# Wait for the server (up to 60 s).
i=0
until "$CLI" status >/dev/null 2>&1; do
  i=$((i + 1))
  [ "$i" -le 120 ] || fail "no unsealed server answers at $VAULT_ADDR"
  sleep 0.5
done

# ---- engines and auth methods -------------------------------------------------------------
mounts=$("$CLI" secrets list -format=json)
case "$mounts" in
  *'"database/"'*) ;;
  *) "$CLI" secrets enable -path=database database >/dev/null ;;
esac
case "$mounts" in
  *'"secret/"'*) ;;
  *) "$CLI" secrets enable -path=secret -version=2 kv >/dev/null ;;
esac
case "$("$CLI" auth list -format=json)" in
  *'"approle/"'*) ;;
  *) "$CLI" auth enable approle >/dev/null ;;
esac

# ---- PostgreSQL connection (body on stdin: the password never reaches a command line) ----
allowed=$(printf '%s' "$SERVICES" | tr -s ' ' ',')
printf '{"plugin_name":"postgresql-database-plugin","connection_url":"postgresql://{{username}}:{{password}}@%s:%s/%s?sslmode=disable","username":"%s","password":"%s","allowed_roles":"%s","verify_connection":true,"password_authentication":"scram-sha-256"}' \
  "$(json_str "$PG_HOST")" "$(json_str "$PG_PORT")" "$(json_str "$PG_DB")" \
  "$(json_str "$PG_ADMIN")" "$(json_str "$POSTGRES_PASSWORD")" "$allowed" \
  | "$CLI" write database/config/cqrs - >/dev/null \
  || fail "could not configure the PostgreSQL connection (is PostgreSQL up at $PG_HOST:$PG_PORT?)"
say "database/config/cqrs -> $PG_HOST:$PG_PORT/$PG_DB"

umask 077
mkdir -p "$APPROLE_DIR"

for svc in $SERVICES; do
  grp="svc_$svc"

  # ---- dynamic PostgreSQL role -------------------------------------------------------------
  creation="CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' INHERIT IN ROLE \"$grp\"; ALTER ROLE \"{{name}}\" SET role = '$grp'; ALTER ROLE \"{{name}}\" SET search_path = \"$svc\", public;"
  revocation="REASSIGN OWNED BY \"{{name}}\" TO \"$grp\"; DROP OWNED BY \"{{name}}\"; DROP ROLE IF EXISTS \"{{name}}\";"
  renew="ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}';"
  printf '{"db_name":"cqrs","creation_statements":["%s"],"revocation_statements":["%s"],"renew_statements":["%s"],"default_ttl":"%s","max_ttl":"%s"}' \
    "$(json_str "$creation")" "$(json_str "$revocation")" "$(json_str "$renew")" "$DB_DEFAULT_TTL" "$DB_MAX_TTL" \
    | "$CLI" write "database/roles/$svc" - >/dev/null
  say "database/roles/$svc (IN ROLE $grp, ttl $DB_DEFAULT_TTL, max $DB_MAX_TTL)"

  # ---- MongoDB credentials in KV v2 (kept when present: a new version is a rotation) -------
  if ! "$CLI" kv get -mount=secret "cqrs/$svc/mongodb" >/dev/null 2>&1; then
    mpw=$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32)
    printf '{"username":"svc_%s","password":"%s","uri":"%s","database":"%s"}' \
      "$svc" "$mpw" "$(json_str "$MONGO_URI")" "$svc" \
      | "$CLI" kv put -mount=secret "cqrs/$svc/mongodb" - >/dev/null
    mpw=
  fi
  say "secret/cqrs/$svc/mongodb"

  # ---- policy --------------------------------------------------------------------------------
  "$CLI" policy write "cqrs-$svc" - >/dev/null <<EOF
# $svc: its own leased PostgreSQL credentials and its own MongoDB secret, nothing else.
path "database/creds/$svc" {
  capabilities = ["read"]
}
path "secret/data/cqrs/$svc/*" {
  capabilities = ["read"]
}
path "secret/metadata/cqrs/$svc/*" {
  capabilities = ["read", "list"]
}
# renew / revoke its own leases (lease ids are only known to their holder)
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/renew/database/creds/$svc/*" {
  capabilities = ["update"]
}
path "sys/leases/revoke" {
  capabilities = ["update"]
}
path "sys/leases/revoke/database/creds/$svc/*" {
  capabilities = ["update"]
}
path "sys/leases/lookup" {
  capabilities = ["update"]
}
EOF
  say "policy cqrs-$svc"

  # ---- AppRole -----------------------------------------------------------------------------
  "$CLI" write "auth/approle/role/$svc" token_policies="cqrs-$svc" token_ttl="$TOKEN_TTL" \
    token_max_ttl="$TOKEN_MAX_TTL" secret_id_ttl=0 secret_id_num_uses=0 >/dev/null
  dir="$APPROLE_DIR/$svc"
  mkdir -p "$dir"
  chmod 700 "$dir"
  "$CLI" read -field=role_id "auth/approle/role/$svc/role-id" >"$dir/role_id.tmp"
  mv "$dir/role_id.tmp" "$dir/role_id"
  # keep a secret_id that is still valid (the server may have been bootstrapped before),
  # otherwise issue a new one
  keep=no
  if [ -s "$dir/secret_id" ]; then
    if printf '{"secret_id":"%s"}' "$(cat "$dir/secret_id")" \
      | "$CLI" write -format=json "auth/approle/role/$svc/secret-id/lookup" - 2>/dev/null \
      | grep -q '"secret_id_accessor"'; then
      keep=yes
    fi
  fi
  if [ "$keep" = no ]; then
    "$CLI" write -f -field=secret_id "auth/approle/role/$svc/secret-id" >"$dir/secret_id.tmp"
    mv "$dir/secret_id.tmp" "$dir/secret_id"
  fi
  chmod 600 "$dir/role_id" "$dir/secret_id"
  say "auth/approle/role/$svc -> $dir/{role_id,secret_id}"
done

say "done"
