"""The Dagster internals this project relies on where Dagster 1.13 has no public API, in one
place; tests/test_dagster_private.py pins the behaviour each one is used for.

- `AssetJob`: the class `dg.define_asset_job` returns, for annotations (not exported by name).
- `cron_string_iterator`: the ticks of a cron string in a timezone, as the schedule daemon
  computes them (the connectors sensor plans partitioned runs on the same ticks).
- `CheckRunHealthResult`, `WorkerStatus`: what a run launcher's health check answers (the
  Celery launcher's lost-worker check).
- `ReconstructableRepository`, `AUTO_RETRY_RUN_ID_TAG`: a code location a Celery worker process
  can load, and the tag naming a failed run's retry (tests, benchmarks).
"""

from __future__ import annotations

from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition as AssetJob,
)
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG
from dagster._utils.schedules import cron_string_iterator

__all__ = [
    "AUTO_RETRY_RUN_ID_TAG",
    "AssetJob",
    "CheckRunHealthResult",
    "ReconstructableRepository",
    "WorkerStatus",
    "cron_string_iterator",
]
