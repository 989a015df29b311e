"""The user source on deltas (docs/incremental.md): its users, groups and the transitive members of
every group kept in `mdm_extract.*` between runs and brought up to date from delta rounds, with
their links in the same `ops.delta_state` the connector keeps (rows of their own, named after the
table each link keeps current: `mdm_extract.directory_users`, `mdm_extract.groups`, and
`mdm_extract.device_ids`, which is a link only).

- Users and groups are applied as the connector applies its own (entra_pipeline/incremental.py),
  in `mdm_extract`; the users' `$select` carries the custom attributes, so that configuring
  another one gives its link up for a full round.
- Members: a group whose members at any depth did not change keeps its rows, a flat one applies
  `members@delta`, the others are listed again (`plan_members`), and a removed user, device or
  group loses every membership. Graph's groups delta does not report the memberships a deleted
  member loses (microsoft-graph-docs issues 7115, 14708 and 18628: "the groups delta query
  doesn't return the membership changes"): the users round's `@removed` and a devices round's do.
  The devices round selects `id` only, for its `@removed`; when there is none (the app may not
  hold Device.Read.All, or Graph refused the link) every group with device members is listed
  again, which is exact at the cost of its listings.

`sync.mode: full` keeps the user source as it was: every run lists everything, and the extract is
dropped once `mdm.*` is built.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import DEVICES, GROUP_MEMBERS, GROUPS, Collection
from entra_pipeline.graph.delta import (
    TRACKED,
    DeltaResyncRequired,
    Tracked,
    latest_link,
    read_round,
)
from entra_pipeline.graph.errors import GraphPermissionError
from entra_pipeline.graph.listing import Extracted
from entra_pipeline.incremental import (
    MembersPlan,
    plan_links,
    plan_members,
    read_state,
)
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.warehouse.sql import quoted, table_exists

logger = logging.getLogger(__name__)

EXTRACT_SCHEMA = "mdm_extract"
# Devices are read for their removals only: a deleted device leaves every group.
DEVICE_IDS = Collection(
    table="device_ids",
    path=DEVICES.path,
    columns={"id": "VARCHAR"},
    description="Device ids: the user source follows device delta for removed devices only.",
    docs={"id": "Object id of the device."},
    permission=DEVICES.permission,
)


def state_key(table: str) -> str:
    """The `ops.delta_state.collection` of the link that keeps `mdm_extract.<table>` current."""
    return f"{EXTRACT_SCHEMA}.{table}"


GROUPS_KEY = state_key(GROUPS.table)
DEVICES_KEY = state_key(DEVICE_IDS.table)


@dataclass(frozen=True)
class DirectoryPlan:
    """Per state key, the delta link a run follows (None: a full round), and why full."""

    links: dict[str, str | None] | None  # None: sync.mode full
    reasons: dict[str, str] = field(default_factory=dict)


def queries(users: Collection) -> dict[str, tuple[Tracked, str | None]]:
    """Per state key: the delta query, and the table its link keeps current (which must exist)."""
    return {
        state_key(users.table): (Tracked(users), f"{EXTRACT_SCHEMA}.{users.table}"),
        GROUPS_KEY: (TRACKED[GROUPS.table], f"{EXTRACT_SCHEMA}.{GROUP_MEMBERS.table}"),
        DEVICES_KEY: (Tracked(DEVICE_IDS), None),
    }


def plan_directory(
    con: duckdb.DuckDBPyConnection,
    settings: ConnectorSettings,
    users: Collection,
    now: datetime,
    *,
    full_requested: bool,
) -> DirectoryPlan:
    if settings.sync.mode == "full":
        return DirectoryPlan(links=None)
    state = read_state(con, settings.tenant_id)
    tracked = queries(users)
    links, reasons = plan_links(
        con, settings, state, now, full_requested=full_requested, tracked=tracked
    )
    # The groups' link keeps groups and members current: both tables must be there.
    if links[GROUPS_KEY] is not None and not table_exists(con, f"{EXTRACT_SCHEMA}.{GROUPS.table}"):
        links[GROUPS_KEY] = None
        reasons[GROUPS_KEY] = f"{EXTRACT_SCHEMA}.{GROUPS.table} is missing"
    return DirectoryPlan(links=links, reasons=reasons)


def device_removals(
    client: GraphClient, link: str | None, workdir: Path
) -> tuple[tuple[str, ...] | None, str | None]:
    """(The devices removed since `link`, None when not known; the link to store next, None
    when device delta cannot be read)."""
    tracked = Tracked(DEVICE_IDS)
    try:
        if link is not None:
            try:
                round_ = read_round(client, tracked, link, workdir)
            except DeltaResyncRequired as refused:
                logger.info("%s; the groups with device members are listed again", refused)
            else:
                removed = tuple(d for d, gone in _last_entries(round_.changes).items() if gone)
                return removed, round_.link
        return None, latest_link(client, tracked)
    except GraphPermissionError as error:
        # Without Device.Read.All the groups with device members are listed again, every run.
        logger.info(
            "Device delta is not readable (%s %s): the groups with device members are listed again",
            error.status,
            error.code,
        )
        return None, None


def plan_directory_members(
    published: duckdb.DuckDBPyConnection, groups: Extracted, devices_unknown: bool
) -> MembersPlan:
    """Which groups' members are listed again after the groups round (see the module docstring);
    `published` reads the extract as the previous run left it."""
    assert groups.delta is not None
    schema = quoted(EXTRACT_SCHEMA)
    last = _last_entries(groups.delta.changes)
    removed = [g for g, gone in last.items() if gone]
    before = [row[0] for row in published.execute(f"SELECT id FROM {schema}.groups").fetchall()]
    after = [g for g in dict.fromkeys([*before, *last]) if not last.get(g, False)]
    plan = plan_members(
        published,
        after,
        groups.delta.members,
        removed,
        schema=EXTRACT_SCHEMA,
        listed=before,
    )
    if not devices_unknown:
        return plan
    with_devices = {
        row[0]
        for row in published.execute(
            f"SELECT DISTINCT group_id FROM {schema}.group_members WHERE member_type = 'device'"
        ).fetchall()
    }
    relist = set(plan.relist) | (with_devices & set(after))
    return MembersPlan(
        relist=tuple(g for g in after if g in relist),
        direct=tuple(g for g in plan.direct if g not in relist),
        kept=tuple(g for g in plan.kept if g not in relist),
    )


def _last_entries(path: Path) -> dict[str, bool]:
    """Per id in a delta file, whether its last entry removes it (the last entry wins)."""
    last: dict[str, bool] = {}
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            last.pop(row["id"], None)
            last[row["id"]] = bool(row.get("_removed"))
    return last


def object_ids(files: Sequence[Path]) -> Iterator[str]:
    """The `id` of every row of NDJSON listings, in order."""
    for file in files:
        with file.open(encoding="utf-8") as lines:
            for line in lines:
                yield json.loads(line)["id"]
