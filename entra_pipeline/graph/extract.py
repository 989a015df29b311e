"""One collection's read on a shared client, reported per raw table (requests, pages, retries,
seconds); a collection may fail soft (sign-in activity). sync/units.py runs them concurrently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from entra_pipeline.graph.client import GraphClient, RequestStats
from entra_pipeline.graph.errors import GraphError, GraphPermissionError, GraphPremiumRequiredError
from entra_pipeline.graph.listing import Extracted

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
