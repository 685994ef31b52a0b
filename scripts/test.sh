#!/usr/bin/env bash
# Set up a virtual environment with every extra and run lint, type checks and the tests.
# Usage: ./scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh
setup_env "serve,train,dev"
./scripts/install-browser.sh
./scripts/install-peers.sh  # dcmtk (storescu, dsrdump), Orthanc + its DICOMweb plugin, pynetdicom
./scripts/install-ohif.sh

echo "== ruff"; .venv/bin/ruff check .
echo "== ruff format"; .venv/bin/ruff format --check .
echo "== mypy"; ./scripts/typecheck.sh
echo "== pytest"; .venv/bin/pytest "$@"
