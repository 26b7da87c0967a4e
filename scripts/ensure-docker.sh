#!/usr/bin/env bash
# Make sure a Docker engine answers, with gVisor's `runsc` registered as a runtime tier when it can be.
# On Debian as root, installs docker.io, mmdebstrap and runsc and starts dockerd if needed.
#
#   scripts/ensure-docker.sh                    the machine's engine (/var/run/docker.sock)
#   scripts/ensure-docker.sh --engine-dir DIR   a private engine with its socket, data and pid file under DIR
set -euo pipefail
cd "$(dirname "$0")/.."

DAEMON_CONFIG=/etc/docker/daemon.json
RUNSC=/usr/bin/runsc
# Sandboxes never get a network: no bridge, no iptables rules, no masquerading.
DOCKERD_FLAGS=(--bridge=none --iptables=false --ip-masq=false)

ENGINE_DIR=""
if [ "${1:-}" = "--engine-dir" ]; then
  ENGINE_DIR="$(mkdir -p "$2" && cd "$2" && pwd)"
  export DOCKER_HOST="unix://$ENGINE_DIR/docker.sock"
  DOCKERD_FLAGS+=(--host "$DOCKER_HOST" --data-root "$ENGINE_DIR/data" --exec-root "$ENGINE_DIR/exec"
                  --pidfile "$ENGINE_DIR/dockerd.pid")
  DOCKERD_LOG="$ENGINE_DIR/dockerd.log"
  DOCKERD_PIDFILE="$ENGINE_DIR/dockerd.pid"
else
  mkdir -p var
  DOCKERD_LOG=var/dockerd.log
  DOCKERD_PIDFILE=/var/run/docker.pid
fi

is_root_on_debian() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null
}

install_missing() {
  local missing=()
  command -v dockerd >/dev/null && command -v docker >/dev/null || missing+=(docker.io)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  [ -x "$RUNSC" ] || missing+=(runsc)
  if [ "${#missing[@]}" -gt 0 ]; then
    mkdir -p var
    echo "installing ${missing[*]} (apt-get; its output goes to var/apt.log)"
    apt-get update -qq >>var/apt.log 2>&1 || echo "ensure-docker: apt-get update failed; see var/apt.log" >&2
    for package in "${missing[@]}"; do
      DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq "$package" >>var/apt.log 2>&1 \
        || echo "ensure-docker: could not install $package; see var/apt.log" >&2
    done
  fi
}

# Registers runsc in dockerd's config file (merged, idempotent): no network of its own, and leave to open
# host Unix sockets, which is how the executor and the egress proxy reach the gateway.
register_runsc() {
  python3 - "$DAEMON_CONFIG" "$RUNSC" <<'PYTHON'
import json
import pathlib
import sys

path, runsc = pathlib.Path(sys.argv[1]), sys.argv[2]
text = path.read_text() if path.exists() else ""
config = json.loads(text) if text.strip() else {}
wanted = {"path": runsc, "runtimeArgs": ["--network=none", "--host-uds=open"]}
if config.get("runtimes", {}).get("runsc") != wanted:
    config.setdefault("runtimes", {})["runsc"] = wanted
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
PYTHON
}

has_runsc() {
  docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '"runsc"'
}

if is_root_on_debian; then
  install_missing
  if [ -x "$RUNSC" ]; then
    register_runsc
  fi
fi

if docker info >/dev/null 2>&1; then
  if [ -x "$RUNSC" ] && ! has_runsc; then
    echo "ensure-docker: dockerd is running without the runsc (gVisor) runtime." >&2
    if [ "$(id -u)" = 0 ] && [ -f "$DOCKERD_PIDFILE" ] && kill -HUP "$(cat "$DOCKERD_PIDFILE")" 2>/dev/null; then
      sleep 1
    fi
    if has_runsc; then
      echo "ensure-docker: reloaded dockerd's configuration ($DAEMON_CONFIG): runsc is registered now." >&2
    else
      echo "ensure-docker: runsc is still not registered: restart dockerd with $DAEMON_CONFIG;" \
           "until then sessions asking for runtime 'runsc' fail." >&2
    fi
  fi
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  echo "bastion needs a running Docker engine: install Docker (Debian: apt-get install docker.io)," >&2
  echo "start it, and make sure this user can reach the Docker socket." >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "the Docker engine is not running and only root can start it here: start dockerd as root." >&2
  exit 1
fi
config_flags=()
if [ -f "$DAEMON_CONFIG" ]; then
  config_flags=(--config-file "$DAEMON_CONFIG")
fi
# A dockerd that was killed leaves its pid file; if that pid now belongs to another process, dockerd refuses to
# start ("pid file found, ensure docker is not running"). Drop a pid file whose process is not a dockerd.
if [ -f "$DOCKERD_PIDFILE" ] && [ "$(cat "/proc/$(cat "$DOCKERD_PIDFILE")/comm" 2>/dev/null)" != dockerd ]; then
  rm -f "$DOCKERD_PIDFILE"
fi
nohup dockerd "${DOCKERD_FLAGS[@]}" "${config_flags[@]}" >>"$DOCKERD_LOG" 2>&1 &
dockerd_pid=$!
# dockerd restores every container it knew before answering; after a crash with hundreds of sandboxes left
# behind that takes minutes here, so wait up to DOCKERD_START_TIMEOUT seconds, saying why.
deadline=$((SECONDS + ${DOCKERD_START_TIMEOUT:-600}))
next_word=$((SECONDS + 15))
until timeout 10 docker info >/dev/null 2>&1; do
  if ! kill -0 "$dockerd_pid" 2>/dev/null; then
    echo "dockerd exited while starting; the end of $DOCKERD_LOG:" >&2
    tail -n 30 "$DOCKERD_LOG" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "dockerd did not become ready in ${DOCKERD_START_TIMEOUT:-600} s; the end of $DOCKERD_LOG:" >&2
    tail -n 30 "$DOCKERD_LOG" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$next_word" ]; then
    echo "ensure-docker: dockerd is still starting (restoring the containers it had); waiting" >&2
    next_word=$((SECONDS + 15))
  fi
  sleep 0.5
done
if [ -x "$RUNSC" ] && ! has_runsc; then
  echo "ensure-docker: dockerd started without the runsc runtime; see $DAEMON_CONFIG and $DOCKERD_LOG" >&2
fi
# Sandboxes of a gateway that died with the engine are stopped now and serve nobody: remove them, so the next
# engine start has nothing of ours to restore.
for label in bastion.owner bastion.pool; do
  docker container prune --force --filter "label=$label" >/dev/null 2>&1 || true
done
exit 0
