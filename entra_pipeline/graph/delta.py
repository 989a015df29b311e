"""Delta rounds: what changed in users, devices and groups since the last round, as NDJSON files.

A collection is tracked by a delta link (`@odata.deltaLink`): the URL of its next round. A full
round does not page `/delta` from the start (one chain, no `$filter`, pages of about 100): it
takes "the latest" link first (`$deltaToken=latest`, "sync from now") and then lists the
collection the fast way (partitions.py); changes made while it lists come again in the next
round, which applies them idempotently. A later round follows the stored link and writes:

- `<table>.delta.ndjson`: each changed object as Graph sent it (the collection's columns), or
  `{"id", "_removed": true}`, with `_seq` (the order Graph sent them: the last entry of an id
  wins, since "a single entity [may] be contained multiple times in the response"), and for users
  `_manager`: the manager's id from `manager@delta`, "" when it was taken away, absent when
  unchanged;
- `group_member_changes.ndjson` (groups): one row per `members@delta` entry.

The links are credential-free but grant a round of the tenant's changes: they are registered as
secrets, so that no log line, exception or metadata shows them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from entra_pipeline.graph.client import MAX_BATCH, GraphClient, Row
from entra_pipeline.graph.collections import DEVICES, GROUPS, USERS, Collection
from entra_pipeline.graph.errors import GraphRequestError
from entra_pipeline.graph.ndjson import NdjsonWriter
from entra_pipeline.secrets import register_secret

logger = logging.getLogger(__name__)

# 410 Gone means "restart with a full synchronization" (delta-query-overview, "Synchronization
# reset"); an expired token answers "a 40X-series error with error codes such as
# syncStateNotFound"; resyncRequired is in learn.microsoft.com/graph/errors.
RESYNC_CODES = frozenset({"syncstatenotfound", "resyncrequired"})
_ODATA_TYPE_PREFIX = "#microsoft.graph."
OWNERS_SELECT = "id,userPrincipalName"
# `$batch` calls for owners in flight at once: as many as the group member lists use
# (group_members.py).
OWNER_WORKERS = 4


@dataclass(frozen=True)
class Tracked:
    """A collection whose changes a delta round reads."""

    collection: Collection
    relationship: str | None = None  # manager (users) / members (groups): tracked as @delta

    @property
    def table(self) -> str:
        return self.collection.table

    @property
    def path(self) -> str:
        return f"{self.collection.path}/delta"

    @property
    def select(self) -> str:
        # The $expand-ed relationships are not delta properties: users' manager comes back as
        # manager@delta, devices' registered owners are not tracked (re-read for changed devices).
        select = self.collection.select
        return f"{select},{self.relationship}" if self.relationship else select


TRACKED = {
    USERS.table: Tracked(USERS, "manager"),
    DEVICES.table: Tracked(DEVICES),
    GROUPS.table: Tracked(GROUPS, "members"),
}


class DeltaResyncRequired(Exception):
    """Graph refused a delta link: the collection needs a full round."""

    def __init__(self, table: str, status: int | None, code: str | None) -> None:
        super().__init__(
            f"Graph answered {status} {code or ''} to the delta link of {table}: a full resync "
            "of it follows".replace("  ", " ")
        )
        self.table, self.status, self.code = table, status, code


@dataclass(frozen=True)
class DeltaRound:
    """One followed round: its files, counts and the link of the next round."""

    table: str
    changes: Path
    members: Path | None  # groups only
    link: str
    changed: int  # objects upserted (a replayed one counts each time)
    removed: int
    member_changes: int


def remember_link(link: str) -> str:
    """Register the state tokens of a delta link as secrets (see the module docstring)."""
    for name, value in parse_qsl(urlsplit(link).query):
        if name.lower() in ("$deltatoken", "$skiptoken"):
            register_secret(value)
    return link


def latest_link(client: GraphClient, tracked: Tracked) -> str:
    """A delta link that starts tracking now, without reading the collection."""
    params = {"$select": tracked.select, "$deltatoken": "latest"}
    body = client.get_json(tracked.path, params, label=tracked.table)
    return remember_link(client.own_link(body.get("@odata.deltaLink"), tracked.path))


def read_round(
    client: GraphClient,
    tracked: Tracked,
    link: str,
    workdir: Path,
    *,
    check_row: Any = None,
) -> DeltaRound:
    """Follow `link` to the end of its round. Raises DeltaResyncRequired when Graph wants a full
    round instead (410, syncStateNotFound, resyncRequired)."""
    remember_link(link)
    workdir.mkdir(parents=True, exist_ok=True)
    round_ = _RoundFiles(tracked, workdir)
    final: dict[str, Any] = {}

    def on_page(body: dict[str, Any]) -> None:
        final.clear()
        if "@odata.deltaLink" in body:
            final["link"] = body["@odata.deltaLink"]
        elif "@odata.nextLink" in body:
            remember_link(str(body["@odata.nextLink"]))

    try:
        pages = client.iter_pages(
            link,
            None,
            label=tracked.table,
            on_restart=round_.restart,  # an expired page token restarts the round from its link
            check_row=check_row,
            on_page=on_page,
        )
        for rows in pages:
            round_.write(rows)
    except GraphRequestError as error:
        if error.status == 410 or (error.code or "").lower() in RESYNC_CODES:
            raise DeltaResyncRequired(tracked.table, error.status, error.code) from error
        raise
    finally:
        round_.close()
    new_link = remember_link(client.own_link(final.get("link"), tracked.path))
    members = round_.members
    return DeltaRound(
        table=tracked.table,
        changes=round_.changes.path,
        members=members.path if members is not None else None,
        link=new_link,
        changed=round_.changes.rows - round_.removed,
        removed=round_.removed,
        member_changes=members.rows if members is not None else 0,
    )


class _RoundFiles:
    """The files one delta round is written to: its changes, numbered in the order Graph gave
    them, and (groups) its membership changes."""

    def __init__(self, tracked: Tracked, workdir: Path) -> None:
        self.tracked = tracked
        self.changes = NdjsonWriter(workdir / f"{tracked.table}.delta.ndjson")
        self.members = (
            NdjsonWriter(workdir / "group_member_changes.ndjson")
            if tracked.relationship == "members"
            else None
        )
        self.removed = self.seq = 0

    def restart(self) -> None:
        self.changes.restart_listing()
        if self.members is not None:
            self.members.restart_listing()
        self.removed = self.seq = 0

    def write(self, rows: list[Row]) -> None:
        out: list[Row] = []
        member_rows: list[Row] = []
        for row in rows:
            self.seq += 1
            entry = _change(self.tracked, row, self.seq)
            if entry.get("_removed"):
                self.removed += 1
            out.append(entry)
            if self.members is not None:
                member_rows.extend(_member_changes(row, self.seq))
        self.changes.write(out)
        if self.members is not None:
            self.members.write(member_rows)

    def close(self) -> None:
        self.changes.close()
        if self.members is not None:
            self.members.close()


def _change(tracked: Tracked, row: Row, seq: int) -> Row:
    if "@removed" in row:
        return {"id": row.get("id"), "_removed": True, "_seq": seq}
    entry = {k: v for k, v in row.items() if not k.endswith("@delta") and not k.startswith("@")}
    entry["_seq"] = seq
    if tracked.relationship == "manager" and "manager@delta" in row:
        alive = [m for m in row["manager@delta"] or [] if "@removed" not in m and m.get("id")]
        entry["_manager"] = alive[-1]["id"] if alive else ""
    return entry


def _member_changes(row: Row, seq: int) -> Iterator[Row]:
    for member in row.get("members@delta") or []:
        yield {
            "group_id": row.get("id"),
            "member_id": member.get("id"),
            "member_type": str(member.get("@odata.type", "")).removeprefix(_ODATA_TYPE_PREFIX)
            or None,
            "removed": "@removed" in member,
            "_seq": seq,
        }


def read_owners(
    client: GraphClient,
    device_ids: Sequence[str],
    workdir: Path,
    *,
    max_workers: int = OWNER_WORKERS,
) -> Path:
    """The registered owners of `device_ids` ({device_id, registeredOwners}), 20 devices a
    `$batch` call, `max_workers` calls at a time: device delta does not track them. A device gone
    meanwhile has none (its removal comes in the next round)."""
    batches = [
        list(device_ids[start : start + MAX_BATCH])
        for start in range(0, len(device_ids), MAX_BATCH)
    ]
    lines = NdjsonWriter(workdir / "device_owners.ndjson")
    try:
        with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="graph-owners") as pool:
            for rows in pool.map(lambda batch: _owners_of(client, batch), batches):
                lines.write(rows)
    finally:
        lines.close()
    return lines.path


def _owners_of(client: GraphClient, batch: Sequence[str]) -> list[Row]:
    paths = [f"/devices/{d}/registeredOwners?$select={OWNERS_SELECT}" for d in batch]
    answers = client.batch_get(paths, label=DEVICES.table)
    rows: list[Row] = []
    for device_id, (status, body) in zip(batch, answers, strict=True):
        if status == 404:
            owners: list[Row] = []
        elif status == 200 and isinstance(body.get("value"), list):
            owners = list(body["value"])
            if "@odata.nextLink" in body:
                owners = [
                    o
                    for page in client.iter_pages(
                        f"/devices/{device_id}/registeredOwners",
                        {"$select": OWNERS_SELECT},
                        label=DEVICES.table,
                    )
                    for o in page
                ]
        else:
            found = body.get("error")
            error: dict[str, Any] = found if isinstance(found, dict) else {}
            raise GraphRequestError(
                f"Graph answered {status} {error.get('code', '')} to GET "
                f"/devices/{{id}}/registeredOwners in a $batch call",
                status=status,
                code=error.get("code"),
            )
        rows.append({"device_id": device_id, "registeredOwners": owners})
    return rows
