"""The connector's sync units: one per raw table it reads from Graph. A unit owns how its
collection is read this run (a listing, partitioned or not, or a delta round), how it lands in
`raw.*`, the delta state it leaves and what Dagster is told about it; the raw asset (raw.py)
runs every unit of `UNITS` on one `RawRun`.

Read (get, graph/) → land (load, incremental.py and warehouse/loading.py): the rows between are
NDJSON files, and what shapes them (`apply_round`, `merge_sign_ins`, ...) is SQL over those files.
Adding a collection: its registry entry in graph/collections.py, a unit here (a plain listing is
`Listing(THE_COLLECTION)`), one line in `UNITS` (docs/development.md, "Adding a collection").
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import duckdb

from entra_pipeline.connector.incremental import SyncPlan, merge_sign_ins
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import (
    DEVICES,
    GROUP_MEMBERS,
    GROUPS,
    SIGN_IN_ACTIVITY,
    SUBSCRIBED_SKUS,
    USERS,
    Collection,
)
from entra_pipeline.graph.delta import TRACKED, DeltaRound
from entra_pipeline.graph.extract import CollectionReport, Read
from entra_pipeline.graph.group_members import extract_group_members
from entra_pipeline.graph.listing import Extracted, extract_partitioned
from entra_pipeline.graph.sign_in import extract_sign_in_activity
from entra_pipeline.graph.tracked import extract_tracked
from entra_pipeline.incremental import MembersPlan, apply_members, apply_round, plan_members
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.sync.units import Reports, State, SyncUnit, read_units
from entra_pipeline.warehouse.loading import load_landed_table
from entra_pipeline.warehouse.resource import Warehouse

P1_NOTE = (
    "Sign-in activity needs both AuditLog.Read.All and a Microsoft Entra ID P1 or P2 licence in "
    "the tenant. Until it has both, the sync runs without it: the sign-in columns stay null, the "
    "user stale threshold is skipped, and a sign_in_activity_unavailable warning is written."
)


@dataclass
class RawRun:
    """What one run of the raw layer gives its units: where to read and land, and what the
    connector's options and the sync plan ask for."""

    client: GraphClient
    workdir: Path
    warehouse: Warehouse | None  # only group members read by delta need it
    tenant_id: str
    extracted_at: datetime
    plan: SyncPlan
    asked: set[str]  # the raw tables this run writes
    group_ids: list[str]  # the configured group filters, resolved
    import_sign_in: bool
    sign_in_per_minute: float
    sign_in_slot: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
    log: Any = None
    members_plan: MembersPlan | None = field(default=None, init=False)  # set by GroupMembers

    @property
    def members_by_delta(self) -> bool:
        """The groups are read by a delta round, which carries their membership changes."""
        return (
            self.plan.links is not None
            and self.plan.links.get(GROUPS.table) is not None
            and GROUP_MEMBERS.table in self.asked
        )


@dataclass(frozen=True)
class CheckedCall:
    """How `entra-pipeline check` reports the unit's Graph call: the option or table that needs
    it, the permission it names, whether a sync can run without it, and what to say when not ok."""

    option: str
    permission: str
    required: bool = True
    note: str = ""


class Unit(SyncUnit[RawRun], Protocol):
    """One raw table the connector reads from Graph and lands (sync/units.py), and what it
    tells `check` and `raw.extraction_status`."""

    def skipped(self) -> str:
        """Why it was not read, when `read` gave None."""
        ...

    def checked_call(self, settings: ConnectorSettings) -> CheckedCall | None:
        """What `check` probes for it with these settings (its first page, one row), or None
        (not read with these settings, or probed otherwise)."""
        ...


def _files(report: CollectionReport | None) -> Sequence[Path]:
    return report.files if report is not None else ()


@dataclass(frozen=True)
class Listing:
    """A collection listed (in key ranges when large), or read by its delta round when the sync
    plan has a link for it (users, devices and groups: graph/delta.py's TRACKED). `option` is
    what `check` calls it."""

    collection: Collection
    option: str
    soft: bool = False

    def waits_for(self, run: RawRun) -> tuple[str, ...]:
        return ()

    def read(self, run: RawRun, reports: Reports) -> Read | None:
        table, links = self.collection.table, run.plan.links
        if links is not None and table in links:
            link = links[table]
            return lambda cancel: extract_tracked(
                run.client, self.collection, run.workdir, link, cancel=cancel
            )
        return lambda cancel: extract_partitioned(
            run.client, self.collection, run.workdir, cancel=cancel
        )

    def land(self, con: duckdb.DuckDBPyConnection, run: RawRun, reports: Reports) -> int:
        report = reports.get(self.collection.table)
        extracted = report.extracted if report is not None else None
        if extracted is not None and extracted.delta is not None:
            rows, _ = apply_round(
                con,
                self.collection,
                extracted.delta.changes,
                run.tenant_id,
                run.extracted_at,
                owners=extracted.owners,
            )
            return rows
        return load_landed_table(
            con, self.collection, _files(report), run.tenant_id, run.extracted_at
        )

    def next_state(self, run: RawRun, report: CollectionReport | None) -> dict[str, State]:
        extracted = report.extracted if report is not None else None
        if self.collection.table not in TRACKED or extracted is None or not extracted.next_link:
            return {}
        return {self.collection.table: (extracted.next_link, extracted.delta is None)}

    def sync_metadata(self, run: RawRun, report: CollectionReport | None) -> dict[str, Any]:
        if run.plan.links is None or report is None:
            return {}
        extracted = report.extracted
        if extracted is not None and extracted.delta is not None:
            return {
                "sync_mode": "delta",
                "delta_changed": extracted.delta.changed,
                "delta_removed": extracted.delta.removed,
            }
        return {"sync_mode": "full"} if self.collection.table in run.plan.links else {}

    def skipped(self) -> str:
        return "not needed by the options"

    def checked_call(self, settings: ConnectorSettings) -> CheckedCall | None:
        return CheckedCall(self.option, self.collection.permission)


@dataclass(frozen=True)
class SignInActivity:
    """Users' sign-in activity: paced under Graph's limit for it, holding the app registration's
    one sign-in slot; in full, or (incremental) only the users who signed in since the last pass,
    merged. Fails soft: without a P1/P2 licence or AuditLog.Read.All it is unavailable."""

    collection: Collection = SIGN_IN_ACTIVITY
    soft: bool = True

    def waits_for(self, run: RawRun) -> tuple[str, ...]:
        return ()

    def read(self, run: RawRun, reports: Reports) -> Read | None:
        if not run.import_sign_in:
            return None

        def sign_in(cancel: threading.Event) -> Extracted:
            with run.sign_in_slot():
                return extract_sign_in_activity(
                    run.client,
                    run.workdir,
                    per_minute=run.sign_in_per_minute,
                    cancel=cancel,
                    since=run.plan.sign_in_since,
                )

        return sign_in

    def land(self, con: duckdb.DuckDBPyConnection, run: RawRun, reports: Reports) -> int:
        report = reports.get(self.collection.table)
        if run.plan.sign_in_since is not None and report is not None and report.status == "ok":
            return merge_sign_ins(con, report.files, run.tenant_id, run.extracted_at)
        return load_landed_table(
            con, self.collection, _files(report), run.tenant_id, run.extracted_at
        )

    def next_state(self, run: RawRun, report: CollectionReport | None) -> dict[str, State]:
        if report is None or report.status != "ok":
            return {}
        return {self.collection.table: (None, run.plan.sign_in_since is None)}

    def sync_metadata(self, run: RawRun, report: CollectionReport | None) -> dict[str, Any]:
        if run.plan.links is None or report is None:
            return {}
        if run.plan.sign_in_since is not None:
            return {"sync_mode": f"since {run.plan.sign_in_since.isoformat()}"}
        return {"sync_mode": "full"}

    def skipped(self) -> str:
        return "users.import_sign_in_activity is false"

    def checked_call(self, settings: ConnectorSettings) -> CheckedCall | None:
        if not settings.users.import_sign_in_activity:
            return None
        return CheckedCall(
            "users.import_sign_in_activity",
            f"{self.collection.permission} + Entra ID P1",
            required=False,
            note=P1_NOTE,
        )


@dataclass(frozen=True)
class GroupMembers:
    """The transitive members of the configured filter groups. Listed with the other collections,
    except when the groups are read by a delta round: then after it, listing again only the
    groups whose members changed (incremental.py's `plan_members`)."""

    collection: Collection = GROUP_MEMBERS
    soft: bool = False

    def waits_for(self, run: RawRun) -> tuple[str, ...]:
        return (GROUPS.table,) if run.members_by_delta else ()

    def read(self, run: RawRun, reports: Reports) -> Read | None:
        if not run.group_ids:
            return None
        if not run.members_by_delta:
            return lambda cancel: extract_group_members(
                run.client, run.group_ids, run.workdir, max_workers=5, cancel=cancel
            )
        round_ = _round(reports.get(GROUPS.table))
        relist: Sequence[str] = run.group_ids
        if round_ is not None:
            assert run.warehouse is not None
            with run.warehouse.reader() as con:
                run.members_plan = plan_members(
                    con, run.group_ids, round_.members, _removed_ids(round_.changes)
                )
            relist = run.members_plan.relist
            if run.log is not None:
                run.log.info(
                    f"group_members: {len(relist)} filter groups listed again, "
                    f"{len(run.members_plan.direct)} updated from members@delta, "
                    f"{len(run.members_plan.kept)} unchanged"
                )
        if not relist:  # nothing to list again: still complete
            return lambda cancel: Extracted(GROUP_MEMBERS.table, (), 0)
        return lambda cancel: extract_group_members(
            run.client, list(relist), run.workdir, cancel=cancel
        )

    def land(self, con: duckdb.DuckDBPyConnection, run: RawRun, reports: Reports) -> int:
        report = reports.get(self.collection.table)
        round_ = _round(reports.get(GROUPS.table))
        if run.members_plan is not None and round_ is not None:
            return apply_members(
                con,
                run.members_plan,
                run.group_ids,
                round_.members,
                _files(report),
                run.tenant_id,
                run.extracted_at,
            )
        return load_landed_table(
            con, self.collection, _files(report), run.tenant_id, run.extracted_at
        )

    def next_state(self, run: RawRun, report: CollectionReport | None) -> dict[str, State]:
        return {}  # the groups' round carries it

    def sync_metadata(self, run: RawRun, report: CollectionReport | None) -> dict[str, Any]:
        return {}

    def skipped(self) -> str:
        return "no group filter is configured"

    def checked_call(self, settings: ConnectorSettings) -> CheckedCall | None:
        return None  # probed per configured group, with the group's resolution (preflight.py)


def _round(report: CollectionReport | None) -> DeltaRound | None:
    return report.extracted.delta if report is not None and report.extracted else None


def _removed_ids(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as lines:
        return [row["id"] for line in lines if (row := json.loads(line)).get("_removed")]


# Every raw table the connector reads, in the order they land (and `check` probes them).
UNITS: tuple[Unit, ...] = (
    Listing(USERS, "users"),
    SignInActivity(),
    Listing(DEVICES, "devices"),
    Listing(GROUPS, "groups (raw.groups)"),
    Listing(SUBSCRIBED_SKUS, "licence names"),
    GroupMembers(),
)


def asked_units(run: RawRun, units: Sequence[Unit] = UNITS) -> list[Unit]:
    """The units whose tables the run writes."""
    return [unit for unit in units if unit.collection.table in run.asked]


def read_in_full(
    client: GraphClient,
    workdir: Path,
    *,
    group_ids: Sequence[str] = (),
    import_sign_in: bool = True,
) -> dict[str, CollectionReport]:
    """Every unit read in full on `client` into `workdir`, outside any run (no warehouse, no
    delta links, no sign-in slot): what the extraction benchmark and its tests measure. A report
    per table read (group members only with `group_ids`)."""
    run = RawRun(
        client=client,
        workdir=workdir,
        warehouse=None,
        tenant_id="",  # what landing writes: nothing lands here
        extracted_at=datetime.now(UTC),
        plan=SyncPlan(links=None),
        asked={unit.collection.table for unit in UNITS},
        group_ids=list(group_ids),
        import_sign_in=import_sign_in,
        sign_in_per_minute=10,
    )
    return read_units(client, run, UNITS)
