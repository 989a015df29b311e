#!/usr/bin/env bash
# Create or reuse .venv/ in the repo root and install entra-pipeline into it with the given extras,
# at the versions CI tested (constraints.txt). Installs again only when pyproject.toml,
# constraints.txt or the extras asked for changed (no extras: any install of these files will do).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=".venv/.entra-pipeline-installed"
files="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
wanted="$files ${extras:-none}"
if [ -z "$extras" ] && grep -q "^$files " "$stamp" 2>/dev/null; then
  :  # installed with extras: the base install is part of it
elif ! grep -qxF "$wanted" "$stamp" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".${extras:+[$extras]}"
  echo "$wanted" >> "$stamp"
fi
