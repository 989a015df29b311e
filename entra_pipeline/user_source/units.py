"""The user source's sync units: its directory users (with the custom attributes), groups, the
transitive members of every group and, on deltas, the ids of removed devices; each read, landed
in `mdm_extract.*` and tracked on the run skeleton both sources share (sync/units.py).

With `sync.mode: full` every unit lists its collection; on deltas (incremental.py) users and
groups follow their links, and the members are brought up to date from the groups round and the
removals of users and devices.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import GROUP_MEMBERS, GROUPS, Collection
from entra_pipeline.graph.delta import TRACKED, Tracked
from entra_pipeline.graph.extract import CollectionReport, Read
from entra_pipeline.graph.group_members import extract_group_members
from entra_pipeline.graph.listing import Extracted, extract_partitioned
from entra_pipeline.graph.tracked import extract_tracked
from entra_pipeline.incremental import MembersPlan, apply_members, apply_round
from entra_pipeline.sync.units import Reports, State, SyncUnit
from entra_pipeline.user_source.incremental import (
    DEVICE_IDS,
    DEVICES_KEY,
    EXTRACT_SCHEMA,
    DirectoryPlan,
    device_removals,
    object_ids,
    plan_directory_members,
    state_key,
)
from entra_pipeline.warehouse.loading import load_landed_table
from entra_pipeline.warehouse.resource import Warehouse
from entra_pipeline.warehouse.sql import quoted

logger = logging.getLogger(__name__)


@dataclass
class DirectoryRun:
    """What one run of the user source gives its units."""

    client: GraphClient
    workdir: Path
    warehouse: Warehouse
    tenant_id: str
    synced_at: datetime
    plan: DirectoryPlan
    # Set by the units as they read: the devices removed since the last round (None: unknown),
    # the devices' next link, and which groups' members were listed again.
    removed_devices: tuple[str, ...] | None = field(default=None, init=False)
    device_link: str | None = field(default=None, init=False)
    members_plan: MembersPlan | None = field(default=None, init=False)

    def link(self, table: str) -> str | None:
        return self.plan.links.get(state_key(table)) if self.plan.links is not None else None


def _extracted(reports: Reports, table: str) -> Extracted | None:
    report = reports.get(table)
    return report.extracted if report is not None else None


@dataclass(frozen=True)
class DirectoryListing:
    """Users (with the custom attributes in their `$select`) or groups: listed, or followed by
    their delta round (`tracked` is the delta query), into `mdm_extract.<table>`."""

    collection: Collection
    tracked: Tracked
    label: str  # how Dagster's metadata names it: users_sync_mode, groups_delta_changed
    soft: bool = False

    def waits_for(self, run: DirectoryRun) -> tuple[str, ...]:
        return ()

    def read(self, run: DirectoryRun, reports: Reports) -> Read | None:
        workdir = run.workdir
        if run.plan.links is None:
            return lambda cancel: extract_partitioned(
                run.client, self.collection, workdir, cancel=cancel
            )
        link = run.link(self.collection.table)
        return lambda cancel: extract_tracked(
            run.client, self.collection, workdir, link, cancel=cancel, tracked=self.tracked
        )

    def land(self, con: duckdb.DuckDBPyConnection, run: DirectoryRun, reports: Reports) -> int:
        extracted = _extracted(reports, self.collection.table)
        assert extracted is not None
        if extracted.delta is not None:
            rows, _ = apply_round(
                con,
                self.collection,
                extracted.delta.changes,
                run.tenant_id,
                run.synced_at,
                schema=EXTRACT_SCHEMA,
            )
            return rows
        return load_landed_table(
            con,
            self.collection,
            extracted.files,
            run.tenant_id,
            run.synced_at,
            schema=EXTRACT_SCHEMA,
        )

    def next_state(self, run: DirectoryRun, report: CollectionReport | None) -> dict[str, State]:
        extracted = report.extracted if report is not None else None
        if extracted is None or not extracted.next_link:
            return {}
        return {state_key(self.collection.table): (extracted.next_link, extracted.delta is None)}

    def sync_metadata(self, run: DirectoryRun, report: CollectionReport | None) -> dict[str, Any]:
        extracted = report.extracted if report is not None else None
        if run.plan.links is None or extracted is None:
            return {}
        if extracted.delta is None:
            return {f"{self.label}_sync_mode": "full"}
        return {
            f"{self.label}_sync_mode": "delta",
            f"{self.label}_delta_changed": extracted.delta.changed,
            f"{self.label}_delta_removed": extracted.delta.removed,
        }


@dataclass(frozen=True)
class RemovedDevices:
    """On deltas only: the devices removed since the last round (a deleted device leaves every
    group; the groups round does not say so). Without a usable device link, unknown: every group
    with device members is listed again."""

    collection: Collection = DEVICE_IDS
    soft: bool = False

    def waits_for(self, run: DirectoryRun) -> tuple[str, ...]:
        return ()

    def read(self, run: DirectoryRun, reports: Reports) -> Read | None:
        if run.plan.links is None:
            return None

        def read(cancel: threading.Event) -> Extracted:
            removed, run.device_link = device_removals(
                run.client, run.plan.links.get(DEVICES_KEY) if run.plan.links else None, run.workdir
            )
            run.removed_devices = removed
            return Extracted(DEVICE_IDS.table, (), len(removed or ()))

        return read

    def land(self, con: duckdb.DuckDBPyConnection, run: DirectoryRun, reports: Reports) -> int:
        removed = run.removed_devices or ()
        if removed:
            con.executemany(
                "INSERT INTO removed_objects VALUES (?, 'devices')", [(d,) for d in removed]
            )
        return len(removed)

    def next_state(self, run: DirectoryRun, report: CollectionReport | None) -> dict[str, State]:
        if not run.device_link or run.plan.links is None:
            return {}
        return {DEVICES_KEY: (run.device_link, run.plan.links.get(DEVICES_KEY) is None)}

    def sync_metadata(self, run: DirectoryRun, report: CollectionReport | None) -> dict[str, Any]:
        if run.plan.links is None:
            return {}
        return {"devices_removed": len(run.removed_devices or ())}


@dataclass(frozen=True)
class DirectoryMembers:
    """The transitive members of every group, once the groups are in: all of them listed, or
    (after a groups round) only the groups whose members changed (incremental.py)."""

    users: Collection  # the directory users, whose removals end their memberships
    collection: Collection = GROUP_MEMBERS
    soft: bool = False

    def waits_for(self, run: DirectoryRun) -> tuple[str, ...]:
        return (GROUPS.table, DEVICE_IDS.table)

    def read(self, run: DirectoryRun, reports: Reports) -> Read | None:
        groups = _extracted(reports, GROUPS.table)
        assert groups is not None
        if groups.delta is None:  # listed in full: so are all their members
            ids = list(object_ids(groups.files))
            return lambda cancel: extract_group_members(run.client, ids, run.workdir)
        with run.warehouse.reader() as published:
            plan = plan_directory_members(published, groups, run.removed_devices is None)
        run.members_plan = plan
        logger.info(
            "%s: %d groups listed again, %d updated from members@delta, %d unchanged",
            GROUP_MEMBERS.table,
            len(plan.relist),
            len(plan.direct),
            len(plan.kept),
        )
        if not plan.relist:
            return lambda cancel: Extracted(GROUP_MEMBERS.table, (), 0)
        return lambda cancel: extract_group_members(run.client, list(plan.relist), run.workdir)

    def land(self, con: duckdb.DuckDBPyConnection, run: DirectoryRun, reports: Reports) -> int:
        members = _extracted(reports, GROUP_MEMBERS.table)
        groups = _extracted(reports, GROUPS.table)
        files = members.files if members is not None else ()
        if run.members_plan is None or groups is None or groups.delta is None:
            return load_landed_table(
                con, GROUP_MEMBERS, files, run.tenant_id, run.synced_at, schema=EXTRACT_SCHEMA
            )
        schema = quoted(EXTRACT_SCHEMA)
        group_ids = [row[0] for row in con.execute(f"SELECT id FROM {schema}.groups").fetchall()]
        apply_members(
            con,
            run.members_plan,
            group_ids,
            groups.delta.members,
            files,
            run.tenant_id,
            run.synced_at,
            schema=EXTRACT_SCHEMA,
        )
        # Users listed in full say nothing of who was deleted; every user is in directory_users.
        con.execute(
            f"DELETE FROM {schema}.group_members WHERE member_type = 'user' AND member_id NOT IN "
            f"(SELECT id FROM {schema}.{quoted(self.users.table)})"
        )
        [(count,)] = con.execute(f"SELECT count(*) FROM {schema}.group_members").fetchall()
        return int(count)

    def next_state(self, run: DirectoryRun, report: CollectionReport | None) -> dict[str, State]:
        return {}  # the groups' round carries it

    def sync_metadata(self, run: DirectoryRun, report: CollectionReport | None) -> dict[str, Any]:
        if run.members_plan is None:
            return {}
        return {"groups_members_listed_again": len(run.members_plan.relist)}


def directory_units(users: Collection) -> tuple[SyncUnit[DirectoryRun], ...]:
    """The user source's units for the directory users `users` (with this run's custom
    attributes), in the order they land."""
    return (
        DirectoryListing(users, Tracked(users), "users"),
        DirectoryListing(GROUPS, TRACKED[GROUPS.table], "groups"),
        RemovedDevices(),
        DirectoryMembers(users),
    )
