"""The names other tools rely on (README.md, "Commands"): the two sync jobs, the source each one
records, the tags its runs carry.

A constant here, not a string in each module, so the warehouse, the sensors and freshness agree.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "APP_TAG",
    "CONNECTORS_PARTITIONS",
    "CONNECTOR_JOB",
    "CONNECTOR_TAG",
    "MAX_RETRIES_TAG",
    "SYNC_JOB_TAGS",
    "TENANT_TAG",
    "USER_SOURCE_JOB",
    "WAREHOUSE_TAG",
    "WILL_RETRY_TAG",
    "Source",
    "source_of",
]

CONNECTOR_JOB = "entra_id_sync"
USER_SOURCE_JOB = "mdm_user_source_sync"
# A folder of connector configs (docs/scaling-out.md): each connector is a key of this dynamic
# partitioning.
CONNECTORS_PARTITIONS = "connectors"
# Tags every sync run carries: which connector, tenant and published file it is for.
CONNECTOR_TAG = "entra_pipeline/connector"
# The app registration (client id) whose Graph budget the run draws on: run queue limits per app.
APP_TAG = "entra_pipeline/app"
TENANT_TAG = "entra_pipeline/tenant"
WAREHOUSE_TAG = "entra_pipeline/warehouse"

# A sync is all or nothing: a run Dagster's run retries launch again (a run whose worker died,
# failed by run monitoring) starts from Graph, never from a dead run's step outputs, whose work
# copy the next run removes. (Dagster re-executes from failure unless this tag says otherwise.)
SYNC_JOB_TAGS = {"dagster/retry_strategy": "ALL_STEPS"}
# Dagster's documented run-retry tags (docs.dagster.io, "Configuring run retries"): how many
# times a failed run is launched again, and whether Dagster will retry a failed run.
MAX_RETRIES_TAG = "dagster/max_retries"
WILL_RETRY_TAG = "dagster/will_retry"

Source = Literal["connector", "user_source"]


def source_of(job: str) -> Source:
    """The `source` a job's rows carry in `ops.sync_runs` and `ops.notifications`."""
    return "user_source" if job == USER_SOURCE_JOB else "connector"


# dagster-celery's run tag naming the Celery queue a run goes to (dagster_celery.tags), and the
# connector_server that means "wherever the instance runs it" (the launcher's default queue).
CELERY_QUEUE_TAG = "dagster-celery/queue"
CLOUD = "cloud"
