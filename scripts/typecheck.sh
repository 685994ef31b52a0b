#!/usr/bin/env bash
# mypy over the package as it is imported: oncotriage.models is models/, and so on.
# The tree is rebuilt from hard links on every run (mypy does not follow symlinks).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/typecheck/oncotriage
rm -rf build/typecheck && mkdir -p "$tree"
cp -l oncotriage/*.py "$tree/"
for sub in datasets models training serving; do
  mkdir -p "$tree/$sub"
  (cd "$sub" && find . -name '*.py' -not -path '*/__pycache__/*' -exec cp -l --parents {} "../$tree/$sub/" \;)
done
exec .venv/bin/mypy "$@"
