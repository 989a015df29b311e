"""Large listings split into disjoint ranges, paged concurrently (docs/performance.md, "Real
Graph: latency, throttling and partitioned listings": latency, not the RU budget, bounds a single
page chain).

One `@odata.nextLink` chain is paced by Graph's latency (0.5-1.5 s a page) whatever the budget:
at 2,000,000 devices and 100 a page (`$expand`) that is 20,000 pages, hours. `userPrincipalName`
and device `displayName` support `ge` and `le` in `$filter` without advanced queries, so a listing
splits by its key into ranges

    key le b1,  key ge b1 and key le b2,  ...,  key ge bn

which cover every value that is set, whatever Graph's collation, as long as it is a total order:
each value is at most b1, at least bn, or between two neighbours. Neighbours share only the
boundary value itself; the loader keeps an id listed twice once. A key that is not set (a device
without a display name) falls in no range: those objects get their own partition, `key eq null`,
an advanced query (ConsistencyLevel: eventual with $count).

The plan is made from samples and counts: a range holding more than `target` objects is split at
quantiles of a sample of its keys (its first page, `$select` of the key alone), and each piece is
counted (`$count=true` with ConsistencyLevel: eventual, one cheap request); a piece still too large
is split again. A 2,000,000-device directory plans in 196 requests (165 partitions of at most
19,755 devices), 1,000,000 users in 86 (78 partitions). The counts prove the coverage too: the
partitions' counts must add up to the collection's. Where Graph refuses the filter or the count
(a 400), the listing falls back to one chain.

A large group's members are planned the same way, one member type at a time (a cast such as
`/transitiveMembers/microsoft.graph.user`, extract.plan_group_members): there every filtered
request is an advanced query (`Collection.advanced_query`), its partitions included.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import Collection
from entra_pipeline.graph.errors import GraphRequestError

logger = logging.getLogger(__name__)

_EVENTUAL = {"ConsistencyLevel": "eventual"}


@dataclass(frozen=True)
class Partition:
    """One range of a listing: its `$filter` (None: the whole collection), and how many objects
    Graph counted in it when the plan was made."""

    filter: str | None
    count: int
    advanced: bool = False  # needs ConsistencyLevel: eventual and $count=true

    @property
    def headers(self) -> dict[str, str]:
        return dict(_EVENTUAL) if self.advanced else {}


@dataclass(frozen=True)
class Plan:
    """The partitions of one collection, the collection's own count, and the requests the plan
    cost."""

    partitions: tuple[Partition, ...]
    total: int
    requests: int

    @property
    def covered(self) -> int:
        return sum(p.count for p in self.partitions)


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def range_filter(key: str, low: str | None, high: str | None) -> str | None:
    """`key ge 'low' and key le 'high'`, either side open (None)."""
    clauses = []
    if low is not None:
        clauses.append(f"{key} ge {_quoted(low)}")
    if high is not None:
        clauses.append(f"{key} le {_quoted(high)}")
    return " and ".join(clauses) or None


def count(
    client: GraphClient,
    collection: Collection,
    filter_text: str | None,
    *,
    label: str | None = None,
) -> int:
    """Objects of `collection` matching `filter_text`, as Graph counts them (eventual)."""
    params: dict[str, str | int] = {"$select": "id", "$top": 1, "$count": "true"}
    if filter_text:
        params["$filter"] = filter_text
    body = client.get_json(collection.path, params, _EVENTUAL, label=label or collection.table)
    value = body.get("@odata.count")
    if not isinstance(value, int):
        raise GraphRequestError(
            f"Graph answered GET {collection.path} with $count=true without an @odata.count"
        )
    return value


def sample(
    client: GraphClient, collection: Collection, key: str, low: str | None, high: str | None
) -> list[str]:
    """Up to 999 values of `key` in the range, casefolded and sorted: the first page of the range
    listed with `$select` of the key alone (Graph lists in its own order, not by the key, so the
    page is a sample of the range)."""
    params: dict[str, str | int] = {"$select": key, "$top": 999}
    text = range_filter(key, low, high)
    if text:
        params["$filter"] = text
    headers: dict[str, str] = {}
    if collection.advanced_query:
        params["$count"] = "true"
        headers = dict(_EVENTUAL)
    body = client.get_json(collection.path, params, headers, label=collection.table)
    values = body.get("value")
    if not isinstance(values, list):
        raise GraphRequestError(f"Graph answered GET {collection.path} without a value list")
    return sorted(
        v.casefold()
        for row in values
        if isinstance(row, dict) and isinstance(v := row.get(key), str)
    )


def cut_points(keys: Sequence[str], pieces: int, low: str | None, high: str | None) -> list[str]:
    """Up to `pieces - 1` values of the sorted sample `keys` that split it evenly, strictly
    between `low` and `high` and increasing."""
    cuts: list[str] = []
    for number in range(1, pieces):
        value = keys[number * len(keys) // pieces] if keys else None
        if (
            value is None
            or (low is not None and value <= low)
            or (high is not None and value >= high)
        ):
            continue
        if not cuts or value > cuts[-1]:
            cuts.append(value)
    return cuts


def plan_partitions(
    client: GraphClient,
    collection: Collection,
    key: str,
    *,
    target: int,
    workers: int = 8,
    nullable: bool = False,
    max_rounds: int = 4,
) -> Plan:
    """Partitions of `collection` by `key`, none holding more than about `target` objects where
    the key allows (one chain when the collection is that small, or when Graph refuses the range
    filters). A range too large is split at quantiles of a sample of its keys, and the pieces are
    counted; a piece still too large is split again, for at most `max_rounds` rounds (a single
    value shared by more than `target` objects cannot be split by its key)."""
    requests = 1
    advanced = collection.advanced_query
    total = count(client, collection, None)
    if total <= target:
        return Plan((Partition(None, total, advanced),), total, requests)
    try:
        pending: list[Range] = [(None, None, total)]
        done: list[Partition] = []
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="graph-plan") as pool:
            for round_number in range(1, max_rounds + 1):
                last = round_number == max_rounds
                pending, split, sent = _split(pool, client, collection, key, pending, target, last)
                done += split
                requests += sent
                if not pending:
                    break
            done += [
                Partition(range_filter(key, low, high), found, advanced)
                for low, high, found in pending
            ]
        if nullable:
            unset = count(client, collection, f"{key} eq null")
            requests += 1
            if unset:
                done.append(Partition(f"{key} eq null", unset, advanced=True))
    except GraphRequestError as refused:
        # Graph does not take this range filter or count here: one chain, as before.
        logger.warning(
            "%s: Graph refused the partition filters (%s); listing it as one chain",
            collection.table,
            refused,
        )
        return Plan((Partition(None, total, advanced),), total, requests)
    plan = Plan(tuple(sorted(done, key=lambda p: -p.count)), total, requests)
    logger.info(
        "%s: %d objects in %d partitions by %s (largest %d; plan cost %d requests)",
        collection.table,
        total,
        len(plan.partitions),
        key,
        plan.partitions[0].count if plan.partitions else 0,
        requests,
    )
    return plan


Range = tuple[str | None, str | None, int]  # low and high key, and the objects counted in it


def _split(
    pool: ThreadPoolExecutor,
    client: GraphClient,
    collection: Collection,
    key: str,
    pending: list[Range],
    target: int,
    last: bool,
) -> tuple[list[Range], list[Partition], int]:
    """One round of splitting the `pending` ranges at quantiles of a sample of their keys:
    (the pieces still too large, to split again unless this is the `last` round; the pieces
    that are partitions; the requests it sent)."""
    samples = list(pool.map(lambda r: sample(client, collection, key, r[0], r[1]), pending))
    pieces: list[tuple[str | None, str | None]] = []
    for (low, high, found), keys in zip(pending, samples, strict=True):
        # Two thirds of the target a piece: the counts are estimates from a sample.
        wanted = max(2, math.ceil(found * 3 / (2 * target)))
        bounds: list[str | None] = [low, *cut_points(keys, wanted, low, high), high]
        pieces += list(itertools.pairwise(bounds))
    filters = [range_filter(key, low, high) for low, high in pieces]
    counts = list(pool.map(lambda f: count(client, collection, f), filters))
    # A piece that is its whole range had no cut point inside: one value, unsplittable.
    parents = {(low, high) for low, high, _ in pending}
    again: list[Range] = []
    done: list[Partition] = []
    for (low, high), text, found in zip(pieces, filters, counts, strict=True):
        if found > target and not last and (low, high) not in parents:
            again.append((low, high, found))
        elif found:
            done.append(Partition(text, found, collection.advanced_query))
    return again, done, len(pending) + len(filters)


def partition_params(collection: Collection, partition: Partition) -> dict[str, str | int]:
    """A partition's first-page query: the collection's, with the range filter."""
    params = collection.first_page
    if partition.filter:
        params["$filter"] = partition.filter
    if partition.advanced:
        params["$count"] = "true"
    return params


def shortfall(plan: Plan) -> int:
    """How many of the collection's objects no partition counted (0: the plan covers it)."""
    return max(0, plan.total - plan.covered)


__all__: Sequence[str] = (
    "Partition",
    "Plan",
    "partition_params",
    "plan_partitions",
    "range_filter",
    "shortfall",
)
