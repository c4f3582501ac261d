#!/usr/bin/env bash
# Entrypoint of the local PostgreSQL image: the parts of the official image's entrypoint the
# stack uses. On an empty data directory: initdb with $POSTGRES_USER as the superuser
# (password from $POSTGRES_PASSWORD, scram-sha-256 over TCP, trust on the socket inside the
# container), $POSTGRES_DB, then every /docker-entrypoint-initdb.d/*.sh (executed when
# executable, sourced otherwise) and *.sql against a temporary server listening on the
# socket only. Then the command runs as the `postgres` user (PID 1 stays postgres).
set -Eeuo pipefail

if [[ ${1:0:1} == - ]]; then set -- postgres "$@"; fi

if [[ $1 == postgres && $(id -u) == 0 ]]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  exec gosu postgres "${BASH_SOURCE[0]}" "$@"
fi

if [[ $1 == postgres && ! -s $PGDATA/PG_VERSION ]]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  export POSTGRES_USER="${POSTGRES_USER:-postgres}"
  export POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
  echo "entrypoint: initialising $PGDATA (superuser $POSTGRES_USER, database $POSTGRES_DB)"
  # the password reaches initdb through a pipe, never a command line
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
  printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
  psql=(psql -X -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password)
  if [[ $POSTGRES_DB != postgres ]]; then
    "${psql[@]}" --dbname postgres -v db="$POSTGRES_DB" <<<"CREATE DATABASE :\"db\";"
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh)
        echo "entrypoint: running $f"
        # shellcheck disable=SC1090 # the init scripts are the user's
        if [[ -x $f ]]; then "$f"; else . "$f"; fi
        ;;
      *.sql) echo "entrypoint: running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
      *) if [[ -e $f ]]; then echo "entrypoint: ignoring $f"; fi ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "entrypoint: initialisation done"
fi

exec "$@"
