#!/usr/bin/env bash
# Per-run preparation before pytest (servers themselves are started by the test fixtures).
set -euo pipefail
exit 0
