#!/usr/bin/env bash
# Make sure a Redis server answers on 127.0.0.1 for the cluster tests and the cluster mode (Debian, as root), and
# print its URL. It keeps an append-only file under var/redis so a restart loses at most a second of writes.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${BASTION_REDIS_PORT:-6379}
URL="redis://127.0.0.1:$PORT/0"
# Standard output carries only the URL (callers capture it); everything else goes to standard error.
exec 3>&1 1>&2
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "the cluster tests need redis-server (Debian: apt-get install redis-server)" >&2
    exit 1
  fi
  mkdir -p var
  echo "installing redis-server (apt-get; its output goes to var/apt.log)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq redis-server; } \
    >>var/apt.log 2>&1 || { echo "installing redis-server failed; see var/apt.log" >&2; exit 1; }
fi
if ! redis-cli -p "$PORT" ping >/dev/null 2>&1; then
  mkdir -p var/redis
  redis-server --port "$PORT" --bind 127.0.0.1 --daemonize yes --dir "$PWD/var/redis" --appendonly yes \
    --appendfsync everysec --save "" --logfile "$PWD/var/redis/redis.log" --pidfile "$PWD/var/redis/redis.pid" 3>&-
  for _ in $(seq 1 50); do
    redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
fi
redis-cli -p "$PORT" ping >/dev/null
echo "$URL" >&3
