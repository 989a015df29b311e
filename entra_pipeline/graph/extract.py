"""Graph collections streamed page by page to NDJSON files, never a whole collection in memory.

`extract_*` write the files (the warehouse layer loads them, typed by the registry);
`extract_all` runs the connector's collections concurrently; `resolve_groups` finds filter groups.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from entra_pipeline.graph.client import (
    MAX_BATCH,
    PACE_MARGIN,
    GraphClient,
    RequestStats,
    Row,
)
from entra_pipeline.graph.collections import (
    DEVICES,
    GROUP_MEMBERS,
    GROUPS,
    MEMBER_TYPES,
    SIGN_IN_ACTIVITY,
    SUBSCRIBED_SKUS,
    USERS,
    Collection,
    group_member_listing,
)
from entra_pipeline.graph.delta import (
    TRACKED,
    DeltaResyncRequired,
    DeltaRound,
    Tracked,
    latest_link,
    read_owners,
    read_round,
)
from entra_pipeline.graph.errors import (
    GraphError,
    GraphPermissionError,
    GraphPremiumRequiredError,
    GraphRequestError,
    GroupNotFoundError,
)
from entra_pipeline.graph.ndjson import NdjsonWriter
from entra_pipeline.graph.partitions import (
    Partition,
    Plan,
    count,
    partition_params,
    plan_partitions,
    shortfall,
)
from entra_pipeline.vocabulary import is_guid

logger = logging.getLogger(__name__)

_MEMBER_PAGE_SIZE = 999
_ODATA_TYPE_PREFIX = "#microsoft.graph."


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


class _Cancelled(Exception):
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
            for rows in _unless_cancelled(pages, cancel):
                writer.write(rows)
                progress.page(writer.rows)
        logger.info("%s (done)", progress.line(writer.rows))
    finally:
        writer.close()
    return Extracted(collection.table, (writer.path,), writer.rows)


def extract_sign_in_activity(
    client: GraphClient,
    workdir: Path,
    *,
    per_minute: float = 10,
    cancel: threading.Event | None = None,
    since: datetime | None = None,
) -> Extracted:
    """The sign-in activity pass, paced at `per_minute` requests so that Graph's limit of 10 a
    minute never answers 429; its projected duration is logged before the first page.

    With `since`, only the users who signed in (interactively or not) at or after it: one
    filtered listing per property, into one file (a user in both is de-duplicated at load)."""
    client.gate.pace(SIGN_IN_ACTIVITY.table, per_minute)
    if since is not None:
        return _sign_ins_since(client, workdir, since, cancel)
    # Counted under a label of its own: this request reads no signInActivity and is not paced.
    users = count(client, SIGN_IN_ACTIVITY, None, label=f"{SIGN_IN_ACTIVITY.table} (count)")
    pages = max(1, math.ceil(users / SIGN_IN_ACTIVITY.page_size))
    minutes = (pages - 1) / per_minute * PACE_MARGIN
    logger.info(
        "sign_in_activity: %s users, %d pages of %d, paced at %g requests a minute: about %s",
        f"{users:,}",
        pages,
        SIGN_IN_ACTIVITY.page_size,
        per_minute,
        f"{minutes:,.0f} min" if minutes >= 10 else f"{minutes:.1f} min",
    )
    return extract_collection(client, SIGN_IN_ACTIVITY, workdir, cancel=cancel)


SIGN_IN_PROPERTIES = ("lastSignInDateTime", "lastNonInteractiveSignInDateTime")


def _sign_ins_since(
    client: GraphClient, workdir: Path, since: datetime, cancel: threading.Event | None
) -> Extracted:
    # `$filter=signInActivity/lastSignInDateTime ge ...` is how Microsoft documents reading
    # recent sign-ins (learn.microsoft.com/graph/api/resources/signinactivity); OData datetime
    # literals are unquoted.
    at = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    logger.info("sign_in_activity: only users who signed in since %s (incremental pass)", at)
    queries = [
        {**SIGN_IN_ACTIVITY.first_page, "$filter": f"signInActivity/{prop} ge {at}"}
        for prop in SIGN_IN_PROPERTIES
    ]
    return extract_collection(client, SIGN_IN_ACTIVITY, workdir, cancel=cancel, queries=queries)


def extract_tracked(
    client: GraphClient,
    collection: Collection,
    workdir: Path,
    link: str | None,
    *,
    cancel: threading.Event | None = None,
    tracked: Tracked | None = None,
) -> Extracted:
    """A collection under incremental sync: the round of its delta `link`, or (without one, or
    when Graph refuses it) a full listing that takes the latest delta link first. `tracked` is
    its delta query (by default the connector's, TRACKED)."""
    tracked = tracked or TRACKED[collection.table]
    resync: DeltaResyncRequired | None = None
    if link is not None:
        try:
            round_ = read_round(
                client, tracked, link, workdir, check_row=timestamp_check(collection)
            )
        except DeltaResyncRequired as refused:
            logger.info("%s; listing %s in full", refused, collection.table)
            resync = refused
        else:
            owners = None
            if collection.table == DEVICES.table:
                changed = list(_changed_ids(round_.changes))
                owners = read_owners(client, changed, workdir)
            logger.info(
                "%s: delta round with %d changed and %d removed objects",
                collection.table,
                round_.changed,
                round_.removed,
            )
            return Extracted(
                collection.table,
                (round_.changes,),
                round_.changed,
                delta=round_,
                next_link=round_.link,
                owners=owners,
            )
    # Taken before the listing: what changes while it lists comes again in the next round.
    fresh = latest_link(client, tracked)
    listed = extract_partitioned(client, collection, workdir, cancel=cancel)
    return replace(listed, next_link=fresh, resync=resync)


def _changed_ids(path: Path) -> Iterator[str]:
    """The ids a delta file upserts (each once)."""
    seen: set[str] = set()
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if not row.get("_removed") and row["id"] not in seen:
                seen.add(row["id"])
                yield row["id"]


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
    cancel = cancel or threading.Event()
    workdir.mkdir(parents=True, exist_ok=True)
    progress = Progress(client, collection.table)
    written = [0]
    lock = threading.Lock()
    files = [
        workdir / f"{collection.table}.part{number:03d}.ndjson"
        for number in range(len(plan.partitions))
    ]

    def page_partition(number: int) -> None:
        partition = plan.partitions[number]
        writer = NdjsonWriter(files[number])
        try:
            pages = _partition_pages(
                client, collection, partition, writer, cancel, timestamp_check(collection)
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

    _run_all(
        [functools.partial(page_partition, n) for n in range(len(plan.partitions))],
        workers,
        cancel,
    )
    logger.info("%s (done, %d partitions)", progress.line(written[0]), len(plan.partitions))
    return Extracted(collection.table, tuple(files), written[0])


def _partition_pages(
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
    return _unless_cancelled(pages, cancel)


def member_rows(
    group_id: str, members: Iterable[Row], member_type: str | None = None
) -> Iterator[Row]:
    """`raw.group_members` rows for one page of a group's transitive members; `member_type` is
    the type a cast listed (Graph may leave `@odata.type` out of a cast's rows)."""
    for member in members:
        odata_type = member.get("@odata.type", "")
        yield {
            "group_id": group_id,
            "member_id": member["id"],
            "member_type": odata_type.removeprefix(_ODATA_TYPE_PREFIX) or member_type,
        }


@dataclass(frozen=True)
class MemberRange:
    """One listing of a large group's members: of one member type (a cast) in one range of its
    key, or (`member_type` None) the whole group as one chain."""

    group_id: str
    member_type: str | None
    listing: Collection
    partition: Partition


def plan_group_members(
    client: GraphClient, group_id: str, *, target: int, workers: int = 8
) -> list[MemberRange]:
    """The listings of one group's transitive members: one chain when it has at most `target`,
    else each member type (user, device, group) planned like its collection (partitions.py).

    The types' counts must add up to the group's: members of another type (contacts, service
    principals) have no cast here, so such a group is one chain. A cast Graph refuses (400: a
    Microsoft 365 group cannot hold groups) has no members of that type."""
    whole = group_member_listing(group_id)
    total = count(client, whole, None)
    one_chain = [MemberRange(group_id, None, whole, Partition(None, total))]
    if total <= target:
        return one_chain
    ranges: list[MemberRange] = []
    typed = 0
    for member_type in MEMBER_TYPES:
        listing = group_member_listing(group_id, member_type)
        try:
            if listing.partition_key is None:
                found = count(client, listing, None)
                plan = Plan((Partition(None, found, advanced=True),), found, 1)
            else:
                plan = plan_partitions(
                    client,
                    listing,
                    listing.partition_key,
                    target=target,
                    workers=workers,
                    nullable=listing.partition_nullable,
                )
        except GraphRequestError as refused:
            if refused.status != 400:
                raise
            continue
        if shortfall(plan):
            logger.warning(
                "group_members: the ranges of group %s's %s members count %d of %d (eventual "
                "counts may lag changes; the listing goes on)",
                group_id,
                member_type,
                plan.covered,
                plan.total,
            )
        typed += plan.total
        ranges += [
            MemberRange(group_id, member_type, listing, p) for p in plan.partitions if p.count
        ]
    if typed < total:
        logger.warning(
            "group_members: group %s has %d members but its users, devices and groups count %d "
            "(other member types); listing it as one chain",
            group_id,
            total,
            typed,
        )
        return one_chain
    logger.info(
        "group_members: group %s, %d members in %d listings by member type and key",
        group_id,
        total,
        len(ranges),
    )
    return ranges


def extract_group_members(
    client: GraphClient,
    group_ids: Sequence[str],
    workdir: Path,
    *,
    max_workers: int = 4,
    cancel: threading.Event | None = None,
    target: int = PARTITION_TARGET,
    workers: int = PARTITION_WORKERS,
) -> Extracted:
    """Stream the transitive members of each group into `<workdir>/group_members/*.ndjson`.

    Up to `max_workers` workers at a time, each appending to its own file; a worker asks for the
    first page of 20 groups in one `$batch` call. A group with more than one page is listed
    afterwards: by member type and key range when it has more than `target` members
    (`plan_group_members`), the ranges of every large group paged `workers` at a time.
    """
    cancel = cancel or threading.Event()
    folder = workdir / GROUP_MEMBERS.table
    folder.mkdir(parents=True, exist_ok=True)
    queue = iter(dict.fromkeys(group_ids))  # each group once, in the given order
    queue_lock = threading.Lock()
    large: list[str] = []  # groups whose first page had a next link
    params: dict[str, str | int] = {"$select": "id", "$top": _MEMBER_PAGE_SIZE}

    def next_groups(size: int) -> list[str]:
        with queue_lock:
            return list(itertools.islice(queue, size))

    _member_query = f"$select=id&$top={_MEMBER_PAGE_SIZE}"

    def list_group(writer: NdjsonWriter, group_id: str) -> None:
        writer.begin_listing()
        pages = client.iter_pages(
            GROUP_MEMBERS.path.format(id=group_id),
            params,
            label=GROUP_MEMBERS.table,
            on_restart=writer.restart_listing,
        )
        for members in _unless_cancelled(pages, cancel):
            writer.write(member_rows(group_id, members))
            progress.page(sum(w.rows for w in writers))

    def work(writer: NdjsonWriter) -> None:
        # First pages through $batch, 20 groups a call: a group that fits one page is done
        # there; a larger one is listed afterwards (from its first page, so that an expired page
        # token restarts it whole), and one whose answer is an error on its own (errors typed).
        while batch := next_groups(MAX_BATCH):
            paths = [f"{GROUP_MEMBERS.path.format(id=g)}?{_member_query}" for g in batch]
            answers = client.batch_get(paths, label=GROUP_MEMBERS.table)
            for group_id, (status, body) in zip(batch, answers, strict=True):
                rows = body.get("value")
                if status == 200 and isinstance(rows, list) and "@odata.nextLink" not in body:
                    writer.begin_listing()
                    writer.write(member_rows(group_id, rows))
                    progress.page(sum(w.rows for w in writers))
                elif status == 200 and isinstance(rows, list):
                    with queue_lock:
                        large.append(group_id)
                else:
                    list_group(writer, group_id)
            if cancel.is_set():
                raise _Cancelled

    def page_range(number: int, member_range: MemberRange) -> None:
        writer = NdjsonWriter(folder / f"range-{number:04d}.ndjson")
        writers.append(writer)
        try:
            pages = _partition_pages(
                client, member_range.listing, member_range.partition, writer, cancel
            )
            for members in pages:
                writer.write(member_rows(member_range.group_id, members, member_range.member_type))
                progress.page(sum(w.rows for w in writers))
        finally:
            writer.close()

    batch_workers = max(1, min(max_workers, len(group_ids)))
    writers = [NdjsonWriter(folder / f"part-{n}.ndjson") for n in range(batch_workers)]
    progress = Progress(client, GROUP_MEMBERS.table)
    try:
        _run_all([functools.partial(work, writer) for writer in writers], batch_workers, cancel)
    finally:
        for writer in writers:
            writer.close()
    if large:
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="graph-plan-groups") as pool:
            plans = pool.map(
                lambda g: plan_group_members(client, g, target=target, workers=workers // 2),
                large,
            )
            ranges = sorted(itertools.chain.from_iterable(plans), key=lambda r: -r.partition.count)
        if cancel.is_set():
            raise _Cancelled
        _run_all(
            [functools.partial(page_range, n, r) for n, r in enumerate(ranges)], workers, cancel
        )
    rows = sum(w.rows for w in writers)
    logger.info("%s (done, %d groups)", progress.line(rows), len(group_ids))
    return Extracted(GROUP_MEMBERS.table, tuple(w.path for w in writers), rows)


def resolve_groups(client: GraphClient, refs: Iterable[str]) -> dict[str, str]:
    """Map each configured group (object id or exact display name) to its object id.

    Raises `GroupNotFoundError` naming every group that does not exist, or whose name is shared.
    """
    resolved: dict[str, str] = {}
    missing: list[str] = []
    ambiguous: dict[str, list[str]] = {}
    for ref in dict.fromkeys(refs):
        if is_guid(ref):
            try:
                group = client.get_json(
                    f"/groups/{ref}", {"$select": "id,displayName"}, label="group_resolution"
                )
            except GraphRequestError as error:
                if error.status != 404:
                    raise
            else:
                resolved[ref] = group["id"]
                continue
        # Not an id of an existing group: a display name (a group may be named like a GUID).
        params = {"$filter": f"displayName eq {odata_string(ref)}", "$select": "id,displayName"}
        ids = [
            row["id"]
            for page in client.iter_pages("/groups", params, label="group_resolution")
            for row in page
        ]
        if len(ids) == 1:
            resolved[ref] = ids[0]
        elif ids:
            ambiguous[ref] = ids
        else:
            missing.append(ref)
    if missing or ambiguous:
        raise GroupNotFoundError(_group_problem(missing, ambiguous), missing + list(ambiguous))
    return resolved


def odata_string(value: str) -> str:
    """An OData string literal: single-quoted, a quote inside doubled (`O'Brien` -> `'O''Brien'`)."""
    return "'" + value.replace("'", "''") + "'"


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

    _run_all(
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


def _run_all(jobs: Sequence[Callable[[], None]], max_workers: int, cancel: threading.Event) -> None:
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
    first = next((e for e in errors if not isinstance(e, _Cancelled)), None)
    if first is not None or errors:
        raise first or errors[0]


def _unless_cancelled(
    pages: Iterator[list[Row]], cancel: threading.Event | None
) -> Iterator[list[Row]]:
    for rows in pages:
        if cancel is not None and cancel.is_set():
            raise _Cancelled
        yield rows


def _group_problem(missing: list[str], ambiguous: dict[str, list[str]]) -> str:
    problems = []
    if missing:
        names = ", ".join(repr(m) for m in missing)
        problems.append(f"no group has the object id or exact display name {names}")
    for ref, ids in ambiguous.items():
        problems.append(f"{len(ids)} groups are named {ref!r} ({', '.join(ids)})")
    return (
        "Groups in devices.groups / users.groups could not be resolved: "
        + "; ".join(problems)
        + ". Use the group's object id, or its display name exactly as Entra shows it."
    )
