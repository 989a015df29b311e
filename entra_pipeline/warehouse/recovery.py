"""Runs that died (kill -9, out of memory, a lost machine) found by the next run of the same
warehouse: their leftovers removed, FAILURE reported to Dagster, a failure row recorded.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg

from entra_pipeline.names import MAX_RETRIES_TAG
from entra_pipeline.warehouse.failures import record_unpublished_run
from entra_pipeline.warehouse.files import owner_is_gone, remove_spill_directory
from entra_pipeline.warehouse.outcome import Notification, RunOutcome

# Work copies left by runs that were killed; older than this they are certainly not in use.
_ABANDONED_AFTER_SECONDS = 24 * 3600


def record_dead_run(
    instance: dg.DagsterInstance | None,
    run_id: str,
    found_by: str,
    published: Path,
    tenant_id: str,
    connector: str,
    log: Any = None,
) -> None:
    """A run whose process died: FAILURE in Dagster (never retried: the run that found it redoes
    the work), its pool slots freed, a failure row in ops.sync_runs (once: the run-failure sensor
    may record it too)."""
    message = (
        "the run's process ended without finishing (killed, or its machine lost); nothing "
        f"of it was published, and run {found_by} removed its work copy and scratch files"
    )
    run = instance.get_run_by_id(run_id) if instance is not None else None
    record = instance.get_run_record_by_id(run_id) if instance is not None else None
    if instance is not None and run is not None and not run.is_finished:
        instance.add_run_tags(run_id, {MAX_RETRIES_TAG: "0"})
        instance.report_run_failed(run, message=f"The run's process died: {message}")
    if instance is not None and instance.event_log_storage.supports_global_concurrency_limits:
        # A pool slot it held (its app's sign-in pass) is free for the others again.
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    now = datetime.now(UTC)
    started = (
        datetime.fromtimestamp(record.start_time, UTC) if record and record.start_time else now
    )
    died = Notification(
        now, "error", "run_died", f"Run {run_id} died: {message}", {"run_id": run_id}
    )
    outcome = RunOutcome.of_run(
        run_id, run.job_name if run is not None else "unknown", started, connector, [died]
    )
    record_unpublished_run(published, tenant_id, outcome, now, "failure", message)
    if log is not None:
        log.warning(f"Run {run_id} died before it finished: {message}")


def owner_path(published: Path, run_id: str) -> Path:
    return published.with_name(f"{published.name}.owner-{run_id}")


def remove_dead_runs_leftovers(published: Path) -> list[str]:
    """The runs whose owner lock is free (their process died): their work copy, its WAL, their
    scratch folders and the owner file removed; their run ids."""
    dead = []
    for owner in sorted(published.parent.glob(f"{published.name}.owner-*")):
        if not owner_is_gone(owner):
            continue
        run_id = owner.name.rsplit(".owner-", 1)[1]
        work = published.with_name(f"{published.name}.run-{run_id}")
        for leftover in (work, work.with_name(work.name + ".wal")):
            leftover.unlink(missing_ok=True)
        remove_spill_directory(work)
        for folder in published.parent.glob(f"*-{run_id}-*"):
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
        owner.unlink(missing_ok=True)
        dead.append(run_id)
    return dead


def remove_abandoned_work_copies(published: Path) -> None:
    cutoff = time.time() - _ABANDONED_AFTER_SECONDS
    for stale in published.parent.glob(f"{published.name}.run-*"):
        with contextlib.suppress(FileNotFoundError):
            if stale.stat().st_mtime < cutoff:
                if stale.is_dir():  # a work copy's spill folder
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink()
