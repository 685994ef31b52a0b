#!/usr/bin/env bash
# Set up a serving-only environment (no torch) and run the service with embedded defaults:
# SQLite and the image store under ./var, ONNX Runtime in-process, in-process workers, a local
# MLflow registry that gets the bundled demo model on first run, demo accounts and an example
# study (it prints how to push it and where to sign in).
# Usage: ./scripts/run.sh [--host 127.0.0.1] [--port 8000]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh
setup_env "serve"
exec .venv/bin/oncotriage serve --demo "$@"
