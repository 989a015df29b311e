"""Groups' transitive members: first pages 20 groups a `$batch`, large groups by member type
and key range, all into `group_members/*.ndjson`.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from entra_pipeline.graph.client import MAX_BATCH, GraphClient, Row
from entra_pipeline.graph.collections import (
    GROUP_MEMBERS,
    MEMBER_TYPES,
    Collection,
    group_member_listing,
)
from entra_pipeline.graph.errors import GraphRequestError
from entra_pipeline.graph.listing import (
    PARTITION_TARGET,
    PARTITION_WORKERS,
    Cancelled,
    Extracted,
    Progress,
    partition_pages,
    run_all,
    unless_cancelled,
)
from entra_pipeline.graph.ndjson import NdjsonWriter
from entra_pipeline.graph.partitions import Partition, Plan, count, plan_partitions, shortfall

logger = logging.getLogger(__name__)


_MEMBER_PAGE_SIZE = 999


_MEMBER_PARAMS: dict[str, str | int] = {"$select": "id", "$top": _MEMBER_PAGE_SIZE}
_MEMBER_QUERY = f"$select=id&$top={_MEMBER_PAGE_SIZE}"  # the same, in a $batch item's URL
_ODATA_TYPE_PREFIX = "#microsoft.graph."


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
        plan = _plan_type(client, listing, target=target, workers=workers)
        if plan is None:
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


def _plan_type(
    client: GraphClient, listing: Collection, *, target: int, workers: int
) -> Plan | None:
    """The ranges of a group's members of one type (a cast listing); None when Graph refuses
    the cast (400: a Microsoft 365 group cannot hold groups), which has no members then."""
    try:
        if listing.partition_key is None:
            found = count(client, listing, None)
            return Plan((Partition(None, found, advanced=True),), found, 1)
        return plan_partitions(
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
        return None


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
    folder = workdir / GROUP_MEMBERS.table
    folder.mkdir(parents=True, exist_ok=True)
    listing = _MemberListing(client, folder, cancel or threading.Event())
    batch_workers = max(1, min(max_workers, len(group_ids)))
    writers = [NdjsonWriter(folder / f"part-{n}.ndjson") for n in range(batch_workers)]
    listing.writers.extend(writers)
    queue = iter(dict.fromkeys(group_ids))  # each group once, in the given order
    try:
        run_all(
            [functools.partial(listing.first_pages, writer, queue) for writer in writers],
            batch_workers,
            listing.cancel,
        )
    finally:
        for writer in writers:
            writer.close()
    if listing.large:
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="graph-plan-groups") as pool:
            plans = pool.map(
                lambda g: plan_group_members(client, g, target=target, workers=workers // 2),
                listing.large,
            )
            ranges = sorted(itertools.chain.from_iterable(plans), key=lambda r: -r.partition.count)
        if listing.cancel.is_set():
            raise Cancelled
        run_all(
            [functools.partial(listing.page_range, n, r) for n, r in enumerate(ranges)],
            workers,
            listing.cancel,
        )
    rows = listing.rows()
    logger.info("%s (done, %d groups)", listing.progress.line(rows), len(group_ids))
    return Extracted(GROUP_MEMBERS.table, tuple(w.path for w in listing.writers), rows)


class _MemberListing:
    """What the threads listing groups' members share: the files written, the groups found
    large on their first page, the progress line and the cancellation."""

    def __init__(self, client: GraphClient, folder: Path, cancel: threading.Event) -> None:
        self.client, self.folder, self.cancel = client, folder, cancel
        self.lock = threading.Lock()
        self.writers: list[NdjsonWriter] = []
        self.large: list[str] = []  # groups whose first page had a next link
        self.progress = Progress(client, GROUP_MEMBERS.table)

    def rows(self) -> int:
        return sum(w.rows for w in self.writers)

    def first_pages(self, writer: NdjsonWriter, queue: Iterator[str]) -> None:
        """First pages through $batch, 20 groups a call: a group that fits one page is done
        there; a larger one is listed afterwards (from its first page, so that an expired page
        token restarts it whole), and one whose answer is an error on its own (errors typed)."""
        while True:
            with self.lock:
                batch = list(itertools.islice(queue, MAX_BATCH))
            if not batch:
                return
            paths = [f"{GROUP_MEMBERS.path.format(id=g)}?{_MEMBER_QUERY}" for g in batch]
            answers = self.client.batch_get(paths, label=GROUP_MEMBERS.table)
            for group_id, (status, body) in zip(batch, answers, strict=True):
                rows = body.get("value")
                if status == 200 and isinstance(rows, list) and "@odata.nextLink" not in body:
                    writer.begin_listing()
                    writer.write(member_rows(group_id, rows))
                    self.progress.page(self.rows())
                elif status == 200 and isinstance(rows, list):
                    with self.lock:
                        self.large.append(group_id)
                else:
                    self._list_group(writer, group_id)
            if self.cancel.is_set():
                raise Cancelled

    def _list_group(self, writer: NdjsonWriter, group_id: str) -> None:
        writer.begin_listing()
        pages = self.client.iter_pages(
            GROUP_MEMBERS.path.format(id=group_id),
            _MEMBER_PARAMS,
            label=GROUP_MEMBERS.table,
            on_restart=writer.restart_listing,
        )
        for members in unless_cancelled(pages, self.cancel):
            writer.write(member_rows(group_id, members))
            self.progress.page(self.rows())

    def page_range(self, number: int, member_range: MemberRange) -> None:
        writer = NdjsonWriter(self.folder / f"range-{number:04d}.ndjson")
        with self.lock:
            self.writers.append(writer)
        try:
            pages = partition_pages(
                self.client, member_range.listing, member_range.partition, writer, self.cancel
            )
            for members in pages:
                writer.write(member_rows(member_range.group_id, members, member_range.member_type))
                self.progress.page(self.rows())
        finally:
            writer.close()
