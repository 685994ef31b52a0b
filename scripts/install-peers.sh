#!/usr/bin/env bash
# Install the DICOM peers the listener tests (tests/serving/test_dicom_listener.py) talk to:
#   - Debian's dcmtk (storescu, echoscu): a real modality/PACS side of DIMSE;
#   - the Python `pynetdicom` package in .venv (it comes with the `serve` extra; installed
#     here too so this script works on its own).
# Usage: ./scripts/install-peers.sh   (idempotent; needs root or sudo for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v storescu >/dev/null 2>&1 || ! command -v echoscu >/dev/null 2>&1; then
  echo "== installing Debian's dcmtk"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends dcmtk >/dev/null
fi
storescu --version 2>/dev/null | head -n 1 || true

PY=".venv/bin/python"
if [ ! -x "$PY" ]; then PY="python3"; fi
if ! "$PY" -c "import pynetdicom" >/dev/null 2>&1; then
  echo "== installing the pynetdicom Python package"
  "$PY" -m pip install -q "pynetdicom>=2.1"
fi
