"""Large listings split into disjoint ranges, paged concurrently (SPEC 2, "Latency, not the RU
budget, bounds a single page chain").

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

The plan is made from counts (`$count=true` with ConsistencyLevel: eventual, one cheap request per
range): a range holding more than `target` objects is split again at the next character, until
every partition is small enough for its chain to end in minutes. The counts prove the coverage
too: the partitions' counts must add up to the collection's. Where Graph refuses the filter or the
count (a 400), the listing falls back to one chain.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import Collection
from entra_pipeline.graph.errors import GraphRequestError

logger = logging.getLogger(__name__)

# Characters a split extends a boundary with, in the order Graph's (case-insensitive) comparison
# sorts them; a boundary is only a cut point, so a character missing here costs balance, never
# coverage.
_ALPHABET = (
    "#'-.0123456789_abcdefghijklmnopqrstuvwxyz"
    # Past "z": Latin letters with marks, Cyrillic, kana, CJK, Hangul (names, not UPNs).
    "\u00e0\u0100\u0400\u3040\u4e00\uac00"
)
_EVENTUAL = {"ConsistencyLevel": "eventual"}
MAX_DEPTH = 8  # characters a boundary may grow to; a range still larger stays one partition


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


def _children(low: str | None, high: str | None) -> list[str]:
    """Cut points inside (low, high): `low` extended by each character (or single characters
    for an open start), those that fall strictly between the bounds."""
    stem = low or ""
    cuts = [stem + c for c in _ALPHABET]
    return [c for c in cuts if (low is None or c > low) and (high is None or c < high)]


def plan_partitions(
    client: GraphClient,
    collection: Collection,
    key: str,
    *,
    target: int,
    workers: int = 8,
    nullable: bool = False,
) -> Plan:
    """Partitions of `collection` by `key`, none holding more than about `target` objects (one
    chain when the collection is that small, or when Graph refuses the range filters)."""
    requests = 1
    total = count(client, collection, None)
    if total <= target:
        return Plan((Partition(None, total),), total, requests)
    try:
        pending: list[tuple[str | None, str | None]] = [(None, None)]
        done: list[Partition] = []
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="graph-plan") as pool:
            depth = 0
            while pending:
                depth += 1
                splits: list[tuple[str | None, str | None]] = []
                for low, high in pending:
                    cuts = _children(low, high) if depth <= MAX_DEPTH else []
                    bounds: list[str | None] = [low, *cuts, high]
                    splits += list(itertools.pairwise(bounds))
                filters = [range_filter(key, low, high) for low, high in splits]
                counts = list(pool.map(lambda f: count(client, collection, f), filters))
                requests += len(filters)
                pending = []
                for (low, high), text, found in zip(splits, filters, counts, strict=True):
                    if found > target and depth < MAX_DEPTH and _children(low, high):
                        pending.append((low, high))
                    elif found:
                        done.append(Partition(text, found))
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
        return Plan((Partition(None, total),), total, requests)
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


def partition_params(collection: Collection, partition: Partition) -> dict[str, str | int]:
    """A partition's first-page query: the collection's, with the range filter."""
    params: dict[str, str | int] = {"$select": collection.select, "$top": collection.page_size}
    if collection.expand:
        params["$expand"] = collection.expand
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
