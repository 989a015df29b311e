"""One Graph collection listed page by page into NDJSON files, never whole in memory: one
chain, or ranges of its partition key paged concurrently (partitions.py).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from entra_pipeline.graph.client import GraphClient, RequestStats, Row
from entra_pipeline.graph.collections import Collection
from entra_pipeline.graph.delta import DeltaResyncRequired, DeltaRound
from entra_pipeline.graph.ndjson import NdjsonWriter
from entra_pipeline.graph.partitions import (
    Partition,
    partition_params,
    plan_partitions,
    shortfall,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Extracted:
    """One raw table's rows, written to NDJSON files in the work folder."""

    table: str
    files: tuple[Path, ...]
    rows: int  # rows written (a listing restarted after an expired page token counts once)
    # Incremental sync (delta.py): the round read instead of a listing, and the link of the
    # next round; `resync` says why a delta link was given up for a full round.
    delta: DeltaRound | None = None
    next_link: str | None = None
    owners: Path | None = None  # devices read by delta: their registered owners, re-read
    resync: DeltaResyncRequired | None = None


PROGRESS_SECONDS = 5.0  # how often a long listing says how far it is


class Progress:
    """Logs how far one listing is, at most every PROGRESS_SECONDS: pages, rows, rows/s, and the
    client's retries and throttled answers for it (the `entra_pipeline.graph` logger, which the
    run forwards to Dagster's run log)."""

    def __init__(self, client: GraphClient, label: str) -> None:
        self.client, self.label, self.every = client, label, PROGRESS_SECONDS
        self.started = self.last = time.monotonic()

    def page(self, rows: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            logger.info("%s", self.line(rows, now))

    def line(self, rows: int, now: float | None = None) -> str:
        stats = self.client.stats.get(self.label, RequestStats())
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        return (
            f"{self.label}: {stats.pages} pages, {rows:,} rows in {elapsed:.0f}s "
            f"({rows / elapsed:,.0f} rows/s), {stats.retries} retries, {stats.throttled} throttled"
        )


class Cancelled(Exception):
    """Another collection failed; this one stops at its next page."""


def timestamp_check(collection: Collection) -> Callable[[Row], str | None]:
    """A row check for `collection`'s Graph timestamps (top-level `...DateTime` strings, and
    those inside a JSON object such as signInActivity): each is null, "" or ISO 8601.

    Staging casts them; a value that cannot be cast is caught here, where the page and its
    request-id are known, rather than as a bare conversion error later."""
    flat = [
        c for c, kind in collection.columns.items() if kind == "VARCHAR" and c.endswith("DateTime")
    ]
    nested = [c for c, kind in collection.columns.items() if kind == "JSON"]

    def problem(row: Row) -> str | None:
        for name in flat:
            if not _is_graph_timestamp(row.get(name)):
                return f"{name} {row.get(name)!r} is not a timestamp"
        for name in nested:
            value = row.get(name)
            if isinstance(value, dict):
                for key, item in value.items():
                    if key.endswith("DateTime") and not _is_graph_timestamp(item):
                        return f"{name}.{key} {item!r} is not a timestamp"
        return None

    return problem


def _is_graph_timestamp(value: object) -> bool:
    if value is None or value == "":
        return True
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def extract_collection(
    client: GraphClient,
    collection: Collection,
    workdir: Path,
    *,
    cancel: threading.Event | None = None,
    queries: Sequence[Mapping[str, str | int]] | None = None,
) -> Extracted:
    """Stream every page of `collection` into `<workdir>/<table>.ndjson`: its listing, or each of
    `queries` (first-page parameters) one after another into the same file."""
    workdir.mkdir(parents=True, exist_ok=True)
    writer = NdjsonWriter(workdir / f"{collection.table}.ndjson")
    progress = Progress(client, collection.table)
    try:
        for params in queries or [collection.first_page]:
            writer.begin_listing()
            pages = client.iter_pages(
                collection.path,
                params,
                label=collection.table,
                on_restart=writer.restart_listing,
                check_row=timestamp_check(collection),
            )
            for rows in unless_cancelled(pages, cancel):
                writer.write(rows)
                progress.page(writer.rows)
        logger.info("%s (done)", progress.line(writer.rows))
    finally:
        writer.close()
    return Extracted(collection.table, (writer.path,), writer.rows)


# A partition counted above this is split again: 20,000 objects at the 100 a page `$expand`
# allows is a chain of 200 pages, 1.5-5 minutes of Graph latency.
PARTITION_TARGET = 20_000


PARTITION_WORKERS = 16  # chains one partitioned collection pages at once


def extract_partitioned(
    client: GraphClient,
    collection: Collection,
    workdir: Path,
    *,
    cancel: threading.Event | None = None,
    target: int = PARTITION_TARGET,
    workers: int = PARTITION_WORKERS,
) -> Extracted:
    """`extract_collection`, split into ranges of the collection's partition key that are paged
    concurrently, each into a file of its own (partitions.py); one chain when it is small."""
    if collection.partition_key is None:
        return extract_collection(client, collection, workdir, cancel=cancel)
    plan = plan_partitions(
        client,
        collection,
        collection.partition_key,
        target=target,
        workers=workers,
        nullable=collection.partition_nullable,
    )
    if len(plan.partitions) == 1 and plan.partitions[0].filter is None:
        return extract_collection(client, collection, workdir, cancel=cancel)
    if shortfall(plan):
        logger.warning(
            "%s: the partitions count %d of the %d objects Graph counts (eventual counts may lag "
            "changes; the listing goes on)",
            collection.table,
            plan.covered,
            plan.total,
        )
    files, rows = _page_partitions(
        client, collection, plan.partitions, workdir, cancel or threading.Event(), workers
    )
    return Extracted(collection.table, files, rows)


def _page_partitions(
    client: GraphClient,
    collection: Collection,
    partitions: Sequence[Partition],
    workdir: Path,
    cancel: threading.Event,
    workers: int,
) -> tuple[tuple[Path, ...], int]:
    """Page `partitions` of `collection`, `workers` at a time, each into a file of its own:
    (the files, the rows written)."""
    workdir.mkdir(parents=True, exist_ok=True)
    progress = Progress(client, collection.table)
    written = [0]
    lock = threading.Lock()
    files = [
        workdir / f"{collection.table}.part{number:03d}.ndjson" for number in range(len(partitions))
    ]

    def page_partition(number: int) -> None:
        writer = NdjsonWriter(files[number])
        try:
            pages = partition_pages(
                client, collection, partitions[number], writer, cancel, timestamp_check(collection)
            )
            before = 0
            for rows in pages:
                writer.write(rows)
                with lock:
                    written[0] += writer.rows - before
                    before = writer.rows
                    progress.page(written[0])
            with lock:
                written[0] += writer.rows - before
        finally:
            writer.close()

    run_all([functools.partial(page_partition, n) for n in range(len(partitions))], workers, cancel)
    logger.info("%s (done, %d partitions)", progress.line(written[0]), len(partitions))
    return tuple(files), written[0]


def partition_pages(
    client: GraphClient,
    listing: Collection,
    partition: Partition,
    writer: NdjsonWriter,
    cancel: threading.Event,
    check_row: Callable[[Row], str | None] | None = None,
) -> Iterator[list[Row]]:
    """The pages of one partition of `listing`, begun as a listing of `writer` (cut back to its
    start when Graph expires the page token), until `cancel` is set."""
    writer.begin_listing()
    pages = client.iter_pages(
        listing.path,
        partition_params(listing, partition),
        partition.headers,
        label=listing.table,
        on_restart=writer.restart_listing,
        check_row=check_row,
    )
    return unless_cancelled(pages, cancel)


def run_all(jobs: Sequence[Callable[[], None]], max_workers: int, cancel: threading.Event) -> None:
    """Run `jobs` in a bounded pool; on the first failure, stop the others and raise it."""
    with ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="graph") as pool:
        futures = [pool.submit(job) for job in jobs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() for f in done):
            cancel.set()
            for future in futures:
                future.cancel()
    errors = [e for f in futures if not f.cancelled() and (e := f.exception()) is not None]
    # The failure that set off the cancellation matters, not the jobs it stopped.
    first = next((e for e in errors if not isinstance(e, Cancelled)), None)
    if first is not None or errors:
        raise first or errors[0]


def unless_cancelled(
    pages: Iterator[list[Row]], cancel: threading.Event | None
) -> Iterator[list[Row]]:
    for rows in pages:
        if cancel is not None and cancel.is_set():
            raise Cancelled
        yield rows
