#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian machine for bastion: virtualenv, package, Docker engine,
# sandbox base image, database schema and detector checkpoint. Safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "bastion needs Python 3.11 or newer (apt-get install python3)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.bastion-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ clients/python/pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e clients/python -e '.[dev]'
  touch "$stamp"
fi

scripts/ensure-docker.sh
.venv/bin/bastion setup
