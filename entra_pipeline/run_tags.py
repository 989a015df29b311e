"""The tags every sync run carries about its configuration: which connector, tenant, app
registration and published file it is for, and its options (never a secret).
"""

from __future__ import annotations

import json
from pathlib import Path

from entra_pipeline.config_file import config_path
from entra_pipeline.names import (
    APP_TAG,
    CELERY_QUEUE_TAG,
    CLOUD,
    CONNECTOR_TAG,
    TENANT_TAG,
    WAREHOUSE_TAG,
)
from entra_pipeline.settings import ConnectorSettings


def run_tags(settings: ConnectorSettings | None, path: str | None) -> dict[str, str]:
    """What every sync run records about its configuration (no secret: the SMTP settings, which
    may hold a password, are left out)."""
    if settings is None:
        return {}
    options = {
        "devices": settings.devices.model_dump(mode="json"),
        "users": settings.users.model_dump(mode="json"),
        "user_source": settings.user_source.model_dump(mode="json", exclude={"smtp", "templates"}),
    }
    return {
        CONNECTOR_TAG: settings.connector_name,
        TENANT_TAG: settings.tenant_id,
        APP_TAG: settings.client_id,
        "entra_pipeline/config": str(config_path(path).resolve()),
        # One published file, one writer: deploy/dagster.yaml queues runs per warehouse on it.
        WAREHOUSE_TAG: str(Path(settings.duckdb_path).resolve()),
        "entra_pipeline/options": json.dumps(options, sort_keys=True),
        # A connector server's runs go to its own Celery queue, consumed only by its workers.
        **(
            {CELERY_QUEUE_TAG: settings.connector_server}
            if settings.connector_server != CLOUD
            else {}
        ),
    }
