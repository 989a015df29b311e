#!/usr/bin/env bash
# Run the Dagster UI and daemon (`dg dev`) for the config named by ENTRA_CONNECTOR_CONFIG, with
# run history and schedule state kept in $DAGSTER_HOME (default .dagster_home/, created owner-only
# with deploy/dagster.yaml the first time; an existing dagster.yaml is never overwritten).
# Extra arguments go to `dg dev`: bash scripts/dev.sh --port 3001
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
if [ ! -e "$DAGSTER_HOME/dagster.yaml" ]; then
  (umask 077 && mkdir -p "$DAGSTER_HOME" && cp deploy/dagster.yaml "$DAGSTER_HOME/dagster.yaml")
  echo "Created $DAGSTER_HOME/dagster.yaml from deploy/dagster.yaml" >&2
fi
exec .venv/bin/dg dev "$@"
