#!/usr/bin/env bash
# Retake the console's screenshots (docs/images/console/*.png): runs its end-to-end browser tests against a real
# gateway with BASTION_CONSOLE_SCREENSHOTS pointing there. Needs what `scripts/bootstrap.sh --dev` installs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-docker.sh
scripts/ensure-chromium.sh
export BASTION_TEST_POSTGRES_URL="${BASTION_TEST_POSTGRES_URL:-$(scripts/ensure-postgres.sh)}"
BASTION_CONSOLE_SCREENSHOTS="$PWD/docs/images/console" .venv/bin/python -m pytest -q \
  tests/gateway/console/test_console_in_a_browser.py "$@"
