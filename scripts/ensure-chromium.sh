#!/usr/bin/env bash
# Make sure Debian's headless Chromium is at /usr/bin/chromium for the console's end-to-end tests (Playwright drives
# it; no browser is downloaded). On Debian as root, installs the `chromium` package if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "the console's browser tests need Debian's chromium at $CHROMIUM: apt-get install chromium" >&2
  exit 1
fi
mkdir -p var
echo "installing chromium (apt-get; its output goes to var/apt.log)"
if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; } \
    >>var/apt.log 2>&1; then
  echo "apt-get could not install chromium; see var/apt.log" >&2
  exit 1
fi
