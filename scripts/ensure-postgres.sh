#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on localhost for the test suite (Debian, as root), and print
# the SQLAlchemy URL of a database the tests may use.
set -euo pipefail

URL="postgresql+psycopg://bastion:bastion@127.0.0.1:5432/bastion_test"
# Standard output carries only the URL (callers capture it); everything else goes to standard error.
exec 3>&1 1>&2
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "PostgreSQL tests need root on Debian (or set BASTION_TEST_POSTGRES_URL)" >&2
  exit 1
fi
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  mkdir -p var
  echo "installing postgresql (apt-get; its output goes to var/apt.log)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq postgresql; } \
    >>var/apt.log 2>&1 || { echo "installing postgresql failed; see var/apt.log" >&2; exit 1; }
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^$version main$"; then
  pg_createcluster "$version" main >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$version" main start 3>&-  # the server must not hold the caller's pipe open
fi
for _ in $(seq 1 60); do
  if su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1; then break; fi
  sleep 0.5
done
su postgres -c "psql -qtAc \"select 1 from pg_roles where rolname='bastion'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"create role bastion login password 'bastion' createdb\"" >/dev/null
su postgres -c "psql -qtAc \"select 1 from pg_database where datname='bastion_test'\"" | grep -q 1 \
  || su postgres -c "createdb -O bastion bastion_test"
echo "$URL" >&3
