"""What a run did, as `ops.sync_runs` and `ops.notifications` record it: one `RunOutcome` per run,
built in one place whether the run published, failed, or died and was found by another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from entra_pipeline.names import source_of
from entra_pipeline.secrets import redact

Severity = Literal["info", "warning", "error"]


@dataclass(frozen=True)
class Notification:
    notified_at: datetime
    severity: Severity
    code: str
    message: str
    details: dict[str, Any]


@dataclass
class RunOutcome:
    """What a run did, as recorded in `ops.sync_runs`."""

    run_id: str
    job: str
    source: str
    started_at: datetime
    rows_per_table: dict[str, int] = field(default_factory=dict)
    connector: str = ""  # the config's connector_name
    server: str = ""  # the config's connector_server ("cloud", or the server's name)
    views: list[str] = field(default_factory=list)  # views over those tables, published with them
    graph_requests: int = 0
    graph_retries: int = 0
    notifications: list[Notification] = field(default_factory=list)

    @classmethod
    def of_run(
        cls,
        run_id: str,
        job: str,
        started_at: datetime,
        connector: str = "",
        notifications: list[Notification] | None = None,
        server: str = "",
    ) -> RunOutcome:
        """The outcome of run `run_id` of `job`, its source read from the job's name."""
        return cls(
            run_id=run_id,
            job=job,
            source=source_of(job),
            started_at=started_at,
            connector=connector,
            server=server,
            notifications=list(notifications or ()),
        )


def ops_rows(
    tenant_id: str, outcome: RunOutcome, finished_at: datetime, status: str, error: str | None
) -> dict[str, list[tuple]]:
    """The `ops.sync_runs` row of a finished run and its `ops.notifications` rows."""
    run_row = (
        tenant_id,
        outcome.run_id,
        outcome.job,
        outcome.source,
        outcome.started_at,
        finished_at,
        status,
        json.dumps(outcome.rows_per_table, sort_keys=True),
        outcome.graph_requests,
        outcome.graph_retries,
        redact(error) if error else None,
        outcome.connector or None,
        outcome.server or None,
    )
    notes = [
        (
            tenant_id,
            n.notified_at,
            outcome.run_id,
            outcome.source,
            n.severity,
            n.code,
            n.message,
            json.dumps(n.details, sort_keys=True, default=str),
            outcome.connector or None,
        )
        for n in outcome.notifications
    ]
    return {"ops.sync_runs": [run_row], "ops.notifications": notes}
