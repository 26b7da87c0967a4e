#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian machine for bastion: virtualenv, package, Docker engine, sandbox base image,
# database schema and detector checkpoint. Safe to run again and again.
#   scripts/bootstrap.sh              what the gateway needs (make run)
#   scripts/bootstrap.sh --dev        also the test, lint and docs tools (make test), and Debian's Chromium for the
#                                     console's browser tests
#   --no-setup                        only the virtualenv (no Docker engine, Chromium, image, schema or checkpoint)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0 setup=1
OPA_BINDINGS_VERSION=0.4.4
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --no-setup) setup=0 ;;
    *) echo "usage: scripts/bootstrap.sh [--dev] [--no-setup]" >&2; exit 2 ;;
  esac
done

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
  echo "creating the virtualenv (.venv) with $PYTHON"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.bastion-installed
[ "$dev" = 1 ] && stamp=.venv/.bastion-installed-dev
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ clients/python/pyproject.toml -nt "$stamp" ]; then
  echo "installing bastion$([ "$dev" = 1 ] && echo ' and its development tools') into .venv"
  .venv/bin/pip install --quiet --upgrade pip
  if [ "$dev" = 1 ]; then
    .venv/bin/pip install --quiet -e clients/python -e '.[dev]'
  else
    .venv/bin/pip install --quiet -e clients/python -e .
  fi
  # OPA's own evaluator (OPA v1.20.2's rego package behind ctypes), the default policy engine. Its metadata asks
  # for Python 3.14 but nothing in it needs it, so it is installed here, pinned exactly, not as a dependency that
  # would break `pip install` on 3.11; without it bastion falls back to rego-cpp.
  .venv/bin/pip install --quiet --ignore-requires-python "opa-golib-python-bindings==$OPA_BINDINGS_VERSION"
  touch "$stamp"
fi

if [ "$setup" = 1 ]; then
  scripts/ensure-docker.sh
  [ "$dev" = 0 ] || scripts/ensure-chromium.sh
  .venv/bin/bastion setup
fi
