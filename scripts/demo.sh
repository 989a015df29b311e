#!/usr/bin/env bash
# Quick start 1: set up .venv/ and run the demo sync against the bundled Graph emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/entra-pipeline demo "$@"
