#!/usr/bin/env bash
# Install the prebuilt OHIF viewer for the OHIF browser test (tests/web/test_ohif.py): the
# `dist/` folder that the npm package @ohif/app ships, unpacked into build/ohif/<version>/
# (build/ is not tracked). Nothing is built and nothing runs from npm: `npm pack` fetches the
# package tarball from the registry once.
# Usage: ./scripts/install-ohif.sh   (idempotent; needs npm the first time)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${ONCOTRIAGE_OHIF_VERSION:-3.13.2}"
TARGET="build/ohif/$VERSION"
if [ -f "$TARGET/dist/index.html" ]; then
  echo "OHIF $VERSION already in $TARGET"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is missing: install it (Debian: apt-get install npm) to fetch @ohif/app" >&2
  exit 1
fi
echo "== fetching @ohif/app@$VERSION (its prebuilt dist/)"
staging="$(mktemp -d build/.ohif-XXXXXX 2>/dev/null || (mkdir -p build && mktemp -d build/.ohif-XXXXXX))"
trap 'rm -rf "$staging"' EXIT
(cd "$staging" && npm pack --silent "@ohif/app@$VERSION" >/dev/null)
tar -xzf "$staging"/ohif-app-"$VERSION".tgz -C "$staging" package/dist package/package.json
mkdir -p "$TARGET"
rm -rf "$TARGET/dist"
mv "$staging/package/dist" "$staging/package/package.json" "$TARGET/"
echo "OHIF $VERSION installed in $TARGET"
