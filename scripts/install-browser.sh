#!/usr/bin/env bash
# Install what the browser tests (tests/web, marker `browser`) need:
#   - Debian's Chromium at /usr/bin/chromium (Playwright's own browser download is not used:
#     the tests launch /usr/bin/chromium through `executable_path`);
#   - the Python `playwright` package in .venv (it comes with the `dev` extra; installed here
#     too so this script works on its own).
# Usage: ./scripts/install-browser.sh   (idempotent; needs root or sudo for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing Debian's chromium"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null || true

PY=".venv/bin/python"
if [ ! -x "$PY" ]; then PY="python3"; fi
if ! "$PY" -c "import playwright" >/dev/null 2>&1; then
  echo "== installing the playwright Python package"
  "$PY" -m pip install -q "playwright>=1.45"
fi
