"""The connector's collections extracted concurrently on one shared client, a report per raw
table; sign-in activity fails soft.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from entra_pipeline.graph.client import GraphClient, RequestStats
from entra_pipeline.graph.collections import (
    DEVICES,
    GROUP_MEMBERS,
    GROUPS,
    SIGN_IN_ACTIVITY,
    SUBSCRIBED_SKUS,
    USERS,
)
from entra_pipeline.graph.errors import GraphError, GraphPermissionError, GraphPremiumRequiredError
from entra_pipeline.graph.group_members import extract_group_members
from entra_pipeline.graph.listing import Extracted, extract_partitioned, run_all
from entra_pipeline.graph.sign_in import extract_sign_in_activity
from entra_pipeline.graph.tracked import extract_tracked

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectionReport:
    """How extracting one raw table went: what `ops.sync_runs` and Dagster metadata show."""

    table: str
    status: Literal["ok", "unavailable"]
    files: tuple[Path, ...]
    rows: int
    pages: int
    requests: int
    retries: int
    throttled: int
    restarts: int
    seconds: float
    reason: str | None = None  # why an "unavailable" table could not be read
    error: GraphError | None = None  # the soft failure behind "unavailable"
    extracted: Extracted | None = None


def extract_all(
    client: GraphClient,
    workdir: Path,
    *,
    sign_in_activity: bool = True,
    group_ids: Sequence[str] = (),
    max_workers: int = 5,
    tables: AbstractSet[str] | None = None,
    sign_in_per_minute: float = 10,
    delta_links: Mapping[str, str | None] | None = None,
    sign_in_since: datetime | None = None,
    sign_in_slot: Callable[[], AbstractContextManager[None]] | None = None,
) -> dict[str, CollectionReport]:
    """Extract the independent collections concurrently, sharing `client`; a report per table.

    Users, devices, groups, subscribed SKUs, sign-in activity (when asked) and the members of
    `group_ids` (when any) run in a pool of `max_workers` threads. Sign-in activity fails soft: a
    tenant without P1/P2, or an app without AuditLog.Read.All, gives an "unavailable" report.
    Any other failure stops the other collections at their next page and is raised. `tables`
    limits the extraction to those raw tables (default: all of them). Sign-in activity is paced
    at `sign_in_per_minute` requests (Graph's limit for it is 10 a minute per app and tenant).

    Incremental sync: a table in `delta_links` is read by `extract_tracked` (its round, or a full
    listing when its link is None); sign-in activity only since `sign_in_since`, when given.
    `sign_in_slot`, when given, is held for the whole sign-in pass (Graph's limit for it holds
    per app across tenants: one pass per app registration at a time).
    """
    cancel = threading.Event()
    tasks: dict[str, Callable[[], Extracted]] = {}
    for c in (USERS, DEVICES, GROUPS, SUBSCRIBED_SKUS):
        if tables is not None and c.table not in tables:
            continue
        if delta_links is not None and c.table in delta_links:
            tasks[c.table] = functools.partial(
                extract_tracked, client, c, workdir, delta_links[c.table], cancel=cancel
            )
        else:
            tasks[c.table] = functools.partial(
                extract_partitioned, client, c, workdir, cancel=cancel
            )
    if sign_in_activity and (tables is None or SIGN_IN_ACTIVITY.table in tables):

        def sign_in() -> Extracted:
            with sign_in_slot() if sign_in_slot is not None else contextlib.nullcontext():
                return extract_sign_in_activity(
                    client,
                    workdir,
                    per_minute=sign_in_per_minute,
                    cancel=cancel,
                    since=sign_in_since,
                )

        tasks[SIGN_IN_ACTIVITY.table] = sign_in
    if group_ids and (tables is None or GROUP_MEMBERS.table in tables):
        tasks[GROUP_MEMBERS.table] = lambda: extract_group_members(
            client, group_ids, workdir, max_workers=max_workers, cancel=cancel
        )
    reports: dict[str, CollectionReport] = {}
    reports_lock = threading.Lock()

    def run(table: str, task: Callable[[], Extracted]) -> None:
        before = client.stats.get(table, RequestStats())
        started = time.monotonic()
        try:
            extracted: Extracted | None = task()
            error: GraphError | None = None
        except (GraphPremiumRequiredError, GraphPermissionError) as soft:
            if table != SIGN_IN_ACTIVITY.table:
                raise
            extracted, error = None, soft
            logger.warning("Sign-in activity is unavailable: %s", soft)
        report = collection_report(
            table,
            extracted,
            error,
            client.stats.get(table, RequestStats()),
            before,
            time.monotonic() - started,
        )
        with reports_lock:
            reports[table] = report

    run_all(
        [functools.partial(run, table, task) for table, task in tasks.items()], max_workers, cancel
    )
    return {table: reports[table] for table in tasks}


def collection_report(
    table: str,
    extracted: Extracted | None,
    error: GraphError | None,
    after: RequestStats,
    before: RequestStats,
    seconds: float,
) -> CollectionReport:
    return CollectionReport(
        table=table,
        status="ok" if extracted else "unavailable",
        files=extracted.files if extracted else (),
        rows=extracted.rows if extracted else 0,
        pages=after.pages - before.pages,
        requests=after.requests - before.requests,
        retries=after.retries - before.retries,
        throttled=after.throttled - before.throttled,
        restarts=after.restarts - before.restarts,
        seconds=round(seconds, 3),
        reason=str(error) if error else None,
        error=error,
        extracted=extracted,
    )
