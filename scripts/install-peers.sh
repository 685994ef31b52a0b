#!/usr/bin/env bash
# Install the DICOM peers the integration tests talk to (Debian packages):
#   - dcmtk: dsrdump (SR validation), storescu/echoscu (DIMSE clients of the listener tests);
#   - orthanc + orthanc-dicomweb: a real PACS/router with STOW-RS, started by the tests
#     themselves with their own configuration on loopback (the packaged service is not used).
# Usage: ./scripts/install-peers.sh   (idempotent; needs root or sudo for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dsrdump >/dev/null 2>&1 || missing+=(dcmtk)
command -v Orthanc >/dev/null 2>&1 || missing+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  # the packaged Orthanc service is not wanted (tests start their own, on loopback)
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends dcmtk orthanc orthanc-dicomweb >/dev/null
fi
dsrdump --version 2>/dev/null | head -1 || true
Orthanc --version 2>/dev/null | head -1 || true

# pynetdicom comes with the `serve` extra; installed here too so this script works on its own
PY=".venv/bin/python"
if [ ! -x "$PY" ]; then PY="python3"; fi
if ! "$PY" -c "import pynetdicom" >/dev/null 2>&1; then
  echo "== installing the pynetdicom Python package"
  "$PY" -m pip install -q "pynetdicom>=2.1"
fi
