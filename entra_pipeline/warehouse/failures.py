"""A failed run, recorded: the root cause behind Dagster's wrappers, the `ops.sync_runs` row of a
run whose warehouse never wrote it, and what Dagster is told analysts really read.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path

import dagster as dg

from entra_pipeline.secrets import redact
from entra_pipeline.warehouse.files import private_directories
from entra_pipeline.warehouse.metadata import table_key
from entra_pipeline.warehouse.outcome import RunOutcome, ops_rows
from entra_pipeline.warehouse.publish import connect, publish_file
from entra_pipeline.warehouse.sql import table_exists


def root_cause(error: object) -> str:
    """What stopped a run, from Dagster's error chain (its wrappers around the user's exception,
    and that exception's causes): the outermost of the pipeline's own errors — they say what
    happened and what to do, in their own words, without their class name — else the innermost
    error, with its class (`IsADirectoryError: [Errno 21] ...`)."""
    chain = [error]
    while getattr(chain[-1], "cause", None) is not None:
        chain.append(chain[-1].cause)  # type: ignore[attr-defined]
    for link in chain:
        head, sep, rest = _message(link).partition(": ")
        if sep and head.startswith("entra_pipeline.") and " " not in head:
            return rest
    return _message(chain[-1])


def _message(error: object) -> str:
    return str(getattr(error, "message", error)).strip()


def failure_causes(result: dg.ExecuteInProcessResult) -> list[str]:
    """What stopped the run, in its own words: the innermost error behind each failed step (or
    behind the run's failure, when no step failed), not Dagster's wrapper around it."""
    causes: list[str] = []
    for event in result.all_events:
        if event.is_step_failure or event.event_type == dg.DagsterEventType.RUN_FAILURE:
            error = getattr(event.event_specific_data, "error", None)
            if error is not None:
                causes.append(redact(root_cause(error)))
    return list(dict.fromkeys(causes)) or ["the run failed; Dagster's run log says why"]


def first_step_failure(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """`step <key> failed: <root cause>` for the run's first failed step (a failed blocking
    check counts), or None."""
    for entry in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_FAILURE}):
        event = entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        step = event.step_key if event else "?"
        return f"step {step} failed: {root_cause(error) if error else 'step failed'}"
    return None


def record_unpublished_run(
    path: str | Path,
    tenant_id: str,
    outcome: RunOutcome,
    finished_at: datetime,
    status: str,
    error: str,
) -> bool:
    """Record a run whose warehouse teardown never wrote it (killed, or failed before its
    resources were up): one `ops.sync_runs` row and its notifications, published atomically.

    Idempotent by run id: returns False, and writes nothing, when the run is already recorded.
    """
    published = Path(path)
    private_directories(published.parent)
    return publish_file(
        published,
        None,
        [],
        ops_rows(tenant_id, outcome, finished_at, status, error),
        unless_recorded=outcome.run_id,
    )


def report_published_state(
    instance: dg.DagsterInstance, published: Path, tables: list[str], failed_run: str
) -> None:
    """After a failed run, tell Dagster what analysts really read: for each table the run built
    but did not publish, a materialization carrying the published table's row count (0 when it
    was never published), so the asset page does not call the unpublished data current."""
    counts: dict[str, int] = {}
    if published.exists():
        with contextlib.closing(connect(published, read_only=True)) as con:
            for table in tables:
                if table_exists(con, table):
                    ((counts[table],),) = con.execute(f"SELECT count(*) FROM {table}").fetchall()
    for table in tables:
        rows = counts.get(table)
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=table_key(table),
                description=(
                    f"Run {failed_run} failed, so what it built was not published: this is the "
                    f"published {table}"
                    + ("" if rows is not None else ", which has never been published")
                ),
                metadata={
                    "dagster/row_count": rows or 0,
                    "published": rows is not None,
                    "unpublished_run": failed_run,
                },
            )
        )
