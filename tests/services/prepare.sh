#!/usr/bin/env bash
# Per-run preparation before pytest (servers themselves are started by the test fixtures).
# Azurite (the Azure Blob emulator) comes from npm into .venv/azurite, which git ignores and
# `make clean` removes; it is installed once and reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
AZURITE_VERSION=3.37.0
AZURITE_DIR=.venv/azurite
if [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ] \
   || ! grep -q "\"version\": \"$AZURITE_VERSION\"" "$AZURITE_DIR/node_modules/azurite/package.json" 2>/dev/null; then
  command -v npm >/dev/null 2>&1 || { echo "npm is missing: run tests/services/install-system.sh" >&2; exit 1; }
  mkdir -p "$AZURITE_DIR"
  npm install --prefix "$AZURITE_DIR" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
fi
