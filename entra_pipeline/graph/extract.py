"""Collections read concurrently on one shared client, a report per raw table (requests, pages,
retries, seconds); a collection may fail soft (sign-in activity).
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
    Collection,
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


# A read: given the run's cancellation event, the table's rows written to files.
Read = Callable[[threading.Event], Extracted]
# Errors that make a collection "unavailable" instead of failing the run (sign-in activity).
SOFT_ERRORS: tuple[type[GraphError], ...] = (GraphPremiumRequiredError, GraphPermissionError)


def read_one(
    client: GraphClient, table: str, read: Read, cancel: threading.Event, *, soft: bool = False
) -> CollectionReport:
    """Run one table's `read` on `client` and report it: rows, pages, requests, retries and
    seconds (the client's counters under the table's label). With `soft`, Graph refusing it for
    want of a licence or permission reports it "unavailable" (logged as a warning) instead of
    raising."""
    before = client.stats.get(table, RequestStats())
    started = time.monotonic()
    try:
        extracted: Extracted | None = read(cancel)
        error: GraphError | None = None
    except SOFT_ERRORS as refused:
        if not soft:
            raise
        extracted, error = None, refused
        logger.warning("%s is unavailable: %s", table, refused)
    return collection_report(
        table,
        extracted,
        error,
        client.stats.get(table, RequestStats()),
        before,
        time.monotonic() - started,
    )


def read_concurrently(
    client: GraphClient,
    reads: Mapping[str, Read],
    *,
    soft: AbstractSet[str] = frozenset(),
    max_workers: int = 5,
) -> dict[str, CollectionReport]:
    """Run `reads` (one per raw table) in a pool of `max_workers` threads sharing `client`; a
    report per table, in the order of `reads`. Tables in `soft` may be unavailable
    (`read_one`); any other failure stops the other reads at their next page and is raised."""
    cancel = threading.Event()
    reports: dict[str, CollectionReport] = {}
    lock = threading.Lock()

    def run(table: str, read: Read) -> None:
        report = read_one(client, table, read, cancel, soft=table in soft)
        with lock:
            reports[table] = report

    run_all([functools.partial(run, t, read) for t, read in reads.items()], max_workers, cancel)
    return {table: reports[table] for table in reads}


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
    """The connector's collections read concurrently on `client`, a report per table (what
    `benchmarks/extract_raw.py` and the tests read; the connector's job reads through its sync
    units, connector/units.py, the same way).

    Users, devices, groups, subscribed SKUs, sign-in activity (when asked) and the members of
    `group_ids` (when any). Sign-in activity fails soft: a tenant without P1/P2, or an app
    without AuditLog.Read.All, gives an "unavailable" report. `tables` limits the extraction to
    those raw tables (default: all of them). Sign-in activity is paced at `sign_in_per_minute`
    requests, only since `sign_in_since` when given, holding `sign_in_slot` when given. A table
    in `delta_links` is read by `extract_tracked` (its round, or a full listing when its link is
    None).
    """
    listings = (USERS, DEVICES, GROUPS, SUBSCRIBED_SKUS)
    every = {c.table for c in (*listings, SIGN_IN_ACTIVITY, GROUP_MEMBERS)}
    chosen = every if tables is None else tables
    reads: dict[str, Read] = {}
    for c in (c for c in listings if c.table in chosen):
        tracked = delta_links is not None and c.table in delta_links
        link = delta_links.get(c.table) if delta_links is not None else None
        reads[c.table] = _listing(client, c, workdir, tracked, link)
    if sign_in_activity and SIGN_IN_ACTIVITY.table in chosen:

        def sign_in(cancel: threading.Event) -> Extracted:
            with sign_in_slot() if sign_in_slot is not None else contextlib.nullcontext():
                return extract_sign_in_activity(
                    client,
                    workdir,
                    per_minute=sign_in_per_minute,
                    cancel=cancel,
                    since=sign_in_since,
                )

        reads[SIGN_IN_ACTIVITY.table] = sign_in
    if group_ids and GROUP_MEMBERS.table in chosen:
        reads[GROUP_MEMBERS.table] = lambda cancel: extract_group_members(
            client, group_ids, workdir, max_workers=max_workers, cancel=cancel
        )
    return read_concurrently(client, reads, soft={SIGN_IN_ACTIVITY.table}, max_workers=max_workers)


def _listing(
    client: GraphClient, collection: Collection, workdir: Path, tracked: bool, link: str | None
) -> Read:
    """A listing's read: by delta (its round, or in full taking a link first) or plain."""
    if tracked:
        return lambda cancel: extract_tracked(client, collection, workdir, link, cancel=cancel)
    return lambda cancel: extract_partitioned(client, collection, workdir, cancel=cancel)


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
