"""A collection under incremental sync: its delta round, or a full listing that takes the
latest delta link first when there is no link or Graph refuses it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import DEVICES, Collection
from entra_pipeline.graph.delta import (
    TRACKED,
    DeltaResyncRequired,
    Tracked,
    latest_link,
    read_owners,
    read_round,
)
from entra_pipeline.graph.listing import Extracted, extract_partitioned, timestamp_check

logger = logging.getLogger(__name__)


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
