"""The raw layer: every Graph collection the connector reads, landed as `raw.*` in one step.

One multi-asset extracts the collections concurrently (they share one Graph client and its
bounded pool), streams them to files, and loads every raw table in one transaction. It also
records what later layers must know about the extraction: the resolved group filters, and per
collection whether it was read (sign-in activity may be unavailable).

It can be subset: selecting `raw/users` alone extracts and lands users only, and the other raw
tables stay as published. What describes the tables a run lands is written with them even when
it was not selected (their rows of `raw.extraction_status`; `raw.group_filters` with
`raw.group_members`), and reported to Dagster as a materialization of its own.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at definition.
import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import sqlalchemy.exc
from dagster import AssetExecutionContext

from entra_pipeline.connector.incremental import (
    SyncPlan,
    merge_sign_ins,
    plan_sync,
    refresh_references,
    snapshot_upns,
)
from entra_pipeline.graph.client import GraphClient, RequestStats
from entra_pipeline.graph.collections import ALL as COLLECTIONS
from entra_pipeline.graph.collections import (
    DEVICES,
    GROUP_MEMBERS,
    GROUPS,
    SIGN_IN_ACTIVITY,
    USERS,
)
from entra_pipeline.graph.delta import TRACKED, DeltaRound
from entra_pipeline.graph.extract import CollectionReport, collection_report, extract_all
from entra_pipeline.graph.group_members import extract_group_members
from entra_pipeline.graph.groups import resolve_groups
from entra_pipeline.graph.listing import Extracted
from entra_pipeline.incremental import (
    DELTA_STATE,
    FULL_SYNC_TAG,
    MembersPlan,
    apply_members,
    apply_round,
    notify_resyncs,
    plan_members,
    start_removed_objects,
    write_state,
)
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.sync.session import recorded_graph_client
from entra_pipeline.warehouse.docs import document_table
from entra_pipeline.warehouse.files import exclusive_lock
from entra_pipeline.warehouse.loading import PROVENANCE_DOCS, load_landed_table
from entra_pipeline.warehouse.resource import Warehouse
from entra_pipeline.warehouse.sql import table_exists

RAW_GROUP = "raw"
LANDED = (*COLLECTIONS, GROUP_MEMBERS)
EXTRACTED_TABLES = tuple(landed.table for landed in LANDED)
# Written here from the extraction itself: what later layers need to know about it.
GROUP_FILTERS = "group_filters"
EXTRACTION_STATUS = "extraction_status"
RAW_TABLES = (*EXTRACTED_TABLES, GROUP_FILTERS, EXTRACTION_STATUS)

DESCRIPTIONS = {
    # The registry's, as the tables' comments say.
    **{landed.table: landed.description for landed in LANDED},
    GROUP_FILTERS: "The configured device and user group filters, resolved to object ids.",
    EXTRACTION_STATUS: "Per collection: complete, unavailable (and why) or skipped, this run.",
}
GROUP_FILTERS_DOCS = {
    **PROVENANCE_DOCS,
    "applies_to": "devices or users: the option list (devices.groups, users.groups) it is in.",
    "group_ref": "The group as the config names it: an object id or a display name.",
    "group_id": "The object id Graph resolved it to.",
}
EXTRACTION_STATUS_DOCS = {
    **PROVENANCE_DOCS,
    "collection": "The raw table the collection lands in.",
    "status": "complete (read in full this run), unavailable (Graph refused it; see reason) or "
    "skipped (not needed by the options).",
    "reason": "Why the collection was unavailable or skipped; null when complete.",
}


def raw_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([RAW_GROUP, table])


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            raw_key(table),
            description=DESCRIPTIONS[table],
            group_name=RAW_GROUP,
            kinds={"duckdb", "azure"},  # Entra ID lives in Azure: Dagster shows its icon
            metadata={"dagster/table_name": f"raw.{table}"},
        )
        for table in RAW_TABLES
    ],
    can_subset=True,
)
def raw_entra(
    context: AssetExecutionContext, warehouse: Warehouse, connector: ConnectorResource
) -> Iterator[dg.MaterializeResult]:
    """Extract users, devices, groups, members, licences and sign-in activity from Graph."""
    settings = connector.settings
    started = time.monotonic()
    extracted_at = datetime.now(UTC)
    selected = {key.path[-1] for key in context.selected_asset_keys}
    asked = written_tables(selected)
    with warehouse.reader() as con:
        plan = plan_sync(
            con,
            settings,
            warehouse.run.started_at,
            full_requested=context.run.tags.get(FULL_SYNC_TAG, "").lower() == "true",
            tables=asked,
        )
    if plan.links is not None and GROUPS.table in asked:
        # A groups round carries the membership changes: they are applied in the same run.
        asked |= {GROUP_MEMBERS.table, GROUP_FILTERS, EXTRACTION_STATUS}
    members_by_delta = (
        plan.links is not None
        and plan.links.get(GROUPS.table) is not None
        and GROUP_MEMBERS.table in asked
    )
    members_plan: MembersPlan | None = None
    with warehouse.scratch_folder("extract-") as workdir:
        with recorded_graph_client(connector, warehouse) as client:
            filters = _resolve_group_filters(client, settings) if GROUP_FILTERS in asked else []
            group_ids = sorted({group_id for _, _, group_id in filters})
            context.log.info(
                f"Extracting from {settings.graph_url} (sign-in activity: "
                f"{settings.users.import_sign_in_activity}, member groups: {len(group_ids)}, "
                f"{_describe_plan(plan)})"
                + ("" if asked == set(RAW_TABLES) else f"; only {', '.join(sorted(asked))}")
            )
            reports = extract_all(
                client,
                workdir,
                sign_in_activity=settings.users.import_sign_in_activity,
                group_ids=group_ids
                if GROUP_MEMBERS.table in asked and not members_by_delta
                else (),
                tables=asked & set(EXTRACTED_TABLES),
                sign_in_per_minute=settings.users.sign_in_requests_per_minute,
                delta_links=plan.links,
                sign_in_since=plan.sign_in_since,
                sign_in_slot=lambda: sign_in_slot(context, settings.client_id),
            )
            if members_by_delta and group_ids:
                reports[GROUP_MEMBERS.table], members_plan = _members_after_round(
                    context.log, client, warehouse, workdir, group_ids, reports[GROUPS.table]
                )
        _notify_soft_failures(warehouse, reports)
        notify_resyncs(
            warehouse,
            {
                table: report.extracted.resync
                for table, report in reports.items()
                if report.extracted is not None and report.extracted.resync is not None
            },
            plan.reasons,
        )
        with warehouse.transaction() as con:
            start_removed_objects(con)
            snapshot_upns(con)
            rows: dict[str, int] = {}
            for landed in LANDED:
                if landed.table not in asked:
                    continue
                report = reports.get(landed.table)
                extracted = report.extracted if report else None
                if extracted is not None and extracted.delta is not None:
                    rows[landed.table], _ = apply_round(
                        con,
                        landed,
                        extracted.delta.changes,
                        settings.tenant_id,
                        extracted_at,
                        owners=extracted.owners,
                    )
                elif landed is GROUP_MEMBERS and members_plan is not None:
                    rows[landed.table] = apply_members(
                        con,
                        members_plan,
                        group_ids,
                        _round_of(reports, GROUPS.table).members,
                        extracted.files if extracted is not None else (),
                        settings.tenant_id,
                        extracted_at,
                    )
                elif (
                    landed is SIGN_IN_ACTIVITY
                    and plan.sign_in_since is not None
                    and report is not None
                    and report.status == "ok"
                ):
                    rows[landed.table] = merge_sign_ins(
                        con, report.files, settings.tenant_id, extracted_at
                    )
                else:
                    rows[landed.table] = load_landed_table(
                        con,
                        landed,
                        report.files if report is not None else (),
                        settings.tenant_id,
                        extracted_at,
                    )
            if plan.links is not None:
                refresh_references(
                    con,
                    users_listed=_listed_in_full(reports, USERS.table),
                    devices_listed=_listed_in_full(reports, DEVICES.table),
                )
                state = _next_state(plan, reports)
                if state:
                    warehouse.mark_built(
                        DELTA_STATE,
                        write_state(con, settings.tenant_id, warehouse.run.started_at, state),
                    )
            if GROUP_FILTERS in asked:
                rows[GROUP_FILTERS] = load_group_filters(
                    con, settings.tenant_id, extracted_at, filters
                )
            rows[EXTRACTION_STATUS] = load_extraction_status(
                con, settings, extracted_at, reports, asked=asked
            )
            _warn_when_user_stale_filter_skipped(con, warehouse, settings)
            for table, count in rows.items():
                warehouse.mark_built(f"raw.{table}", count)
            metadata = {
                table: warehouse.table_metadata(con, f"raw.{table}", count)
                for table, count in rows.items()
            }
    # One step builds every raw table: each one's duration is the step's.
    duration = round(time.monotonic() - started, 3)
    context.log.info(
        f"Raw layer extracted in {duration:.1f}s: "
        + ", ".join(f"{table}={count}" for table, count in rows.items())
    )
    for table in RAW_TABLES:
        if table not in rows:
            continue
        table_metadata = {
            **metadata[table],
            **_graph_metadata(reports.get(table)),
            **_sync_metadata(plan, reports.get(table), table),
            "duration_seconds": duration,
        }
        if table in selected:
            yield dg.MaterializeResult(asset_key=raw_key(table), metadata=table_metadata)
        else:
            # Written because it describes the tables landed: Dagster must know it changed.
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=raw_key(table),
                    description=f"Written with {', '.join(sorted(selected))}, which it describes.",
                    metadata=table_metadata,
                )
            )


SIGN_IN_POOL_PREFIX = "entra_sign_in/"
SLOT_POLL_SECONDS = 1.0


def sign_in_pool(client_id: str) -> str:
    """The Dagster concurrency pool of an app registration's sign-in pass."""
    return f"{SIGN_IN_POOL_PREFIX}{client_id}"


@contextlib.contextmanager
def sign_in_slot(context: AssetExecutionContext, client_id: str) -> Iterator[None]:
    """Hold the app registration's one sign-in slot (a Dagster concurrency pool, created with one
    slot unless the operator set it) for the pass: Graph's limit for signInActivity, 10
    requests a minute, holds per app across tenants, so two connectors of one app take turns
    instead of throttling each other. An instance whose storage keeps no pools (the in-memory one
    of `execute_in_process` by default) runs the pass without."""
    storage = context.instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        yield
        return
    pool = sign_in_pool(client_id)
    run_id, step = context.run.run_id, "raw_entra:sign_in_activity"
    # Dagster claims a slot by selecting a free one and then writing the step into it, with
    # `SELECT ... FOR UPDATE SKIP LOCKED` between the two: SQLite ignores FOR UPDATE, so two
    # processes claiming at the same moment on the SQLite storage of a DAGSTER_HOME both wrote
    # themselves into the one slot and read sign-in activity at once (seen in CI, about 1 start
    # in 30 in a two-process loop). Every claim of ours on this machine is therefore made under
    # one file lock in the instance's folder; on PostgreSQL storage (several machines) the row
    # lock is what keeps the slot, and this lock only orders this machine's claims.
    guard = Path(context.instance.root_directory) / "entra_sign_in_pools"

    with exclusive_lock(guard):
        if storage.get_concurrency_info(pool).slot_count == 0:
            try:
                storage.set_concurrency_slots(pool, 1)
            except sqlalchemy.exc.IntegrityError:
                # Another machine's run of this app created the pool between the two calls
                # (PostgreSQL storage; on this machine the lock orders them): use its slot.
                if storage.get_concurrency_info(pool).slot_count == 0:
                    raise

    def claim() -> bool:
        with exclusive_lock(guard):
            return storage.claim_concurrency_slot(pool, run_id, step).is_claimed

    waited = 0.0
    while not claim():
        if waited == 0.0:
            context.log.info(
                f"Sign-in activity waits for pool {pool}: another connector of this app "
                "registration is reading sign-in activity (one at a time per app)"
            )
        time.sleep(SLOT_POLL_SECONDS)
        waited += SLOT_POLL_SECONDS
    if waited:
        context.log.info(f"Sign-in activity got pool {pool} after {waited:.0f}s")
    try:
        yield
    finally:
        storage.free_concurrency_slot_for_step(run_id, step)


def _describe_plan(plan: SyncPlan) -> str:
    if plan.links is None:
        return "sync.mode full"
    parts = [f"{table} {'by delta' if link else 'in full'}" for table, link in plan.links.items()]
    if plan.sign_in_since is not None:
        parts.append(f"sign-ins since {plan.sign_in_since:%Y-%m-%d %H:%M} UTC")
    return "incremental: " + ", ".join(parts) if parts else "incremental"


def _listed_in_full(reports: dict[str, CollectionReport], table: str) -> bool:
    """This run replaced the table by a full listing (a full round, not a delta round)."""
    report = reports.get(table)
    return (
        report is not None
        and report.status == "ok"
        and report.extracted is not None
        and report.extracted.delta is None
    )


def _round_of(reports: dict[str, CollectionReport], table: str) -> DeltaRound:
    report = reports[table]
    assert report.extracted is not None
    assert report.extracted.delta is not None
    return report.extracted.delta


def _members_after_round(
    log: Any,
    client: GraphClient,
    warehouse: Warehouse,
    workdir: Path,
    group_ids: Sequence[str],
    groups: CollectionReport,
) -> tuple[CollectionReport, MembersPlan | None]:
    """raw.group_members after the groups delta round: the filter groups whose members changed
    are listed again (all of them when the round was refused and groups were listed in full)."""
    before = client.stats.get(GROUP_MEMBERS.table, RequestStats())
    started = time.monotonic()
    round_ = groups.extracted.delta if groups.extracted is not None else None
    plan: MembersPlan | None = None
    if round_ is None:
        relist: Sequence[str] = group_ids
    else:
        with warehouse.reader() as con:
            plan = plan_members(con, group_ids, round_.members, _removed_ids(round_.changes))
        relist = plan.relist
        log.info(
            f"group_members: {len(plan.relist)} filter groups listed again, {len(plan.direct)} "
            f"updated from members@delta, {len(plan.kept)} unchanged"
        )
    extracted = (
        extract_group_members(client, list(relist), workdir)
        if relist
        else Extracted(GROUP_MEMBERS.table, (), 0)  # nothing to list again: still complete
    )
    report = collection_report(
        GROUP_MEMBERS.table,
        extracted,
        None,
        client.stats.get(GROUP_MEMBERS.table, RequestStats()),
        before,
        time.monotonic() - started,
    )
    if round_ is None:
        return report, None
    return report, plan


def _removed_ids(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as lines:
        return [row["id"] for line in lines if (row := json.loads(line)).get("_removed")]


def _next_state(
    plan: SyncPlan, reports: dict[str, CollectionReport]
) -> dict[str, tuple[str | None, bool]]:
    """What ops.delta_state records after this run: per collection read, its next link and
    whether it was read in full."""
    state: dict[str, tuple[str | None, bool]] = {}
    for table in TRACKED:
        report = reports.get(table)
        if report is not None and report.extracted is not None and report.extracted.next_link:
            state[table] = (report.extracted.next_link, report.extracted.delta is None)
    sign_in = reports.get(SIGN_IN_ACTIVITY.table)
    if sign_in is not None and sign_in.status == "ok":
        state[SIGN_IN_ACTIVITY.table] = (None, plan.sign_in_since is None)
    return state


def _sync_metadata(plan: SyncPlan, report: CollectionReport | None, table: str) -> dict[str, Any]:
    if plan.links is None or report is None:
        return {}
    extracted = report.extracted
    if extracted is not None and extracted.delta is not None:
        return {
            "sync_mode": "delta",
            "delta_changed": extracted.delta.changed,
            "delta_removed": extracted.delta.removed,
        }
    if table in plan.links or table == SIGN_IN_ACTIVITY.table:
        if table == SIGN_IN_ACTIVITY.table and plan.sign_in_since is not None:
            return {"sync_mode": f"since {plan.sign_in_since.isoformat()}"}
        return {"sync_mode": "full"}
    return {}


def written_tables(selected: set[str]) -> set[str]:
    """The raw tables a run that selected `selected` writes: those, the group filters the member
    lists depend on, and the extraction status of whatever is extracted."""
    written = set(selected)
    if GROUP_MEMBERS.table in written:
        written.add(GROUP_FILTERS)
    if written & set(EXTRACTED_TABLES):
        written.add(EXTRACTION_STATUS)
    return written


def _resolve_group_filters(
    client: GraphClient, settings: ConnectorSettings
) -> list[tuple[str, str, str]]:
    """(applies_to, configured reference, object id) for every configured group filter."""
    wanted = {"devices": settings.devices.groups, "users": settings.users.groups}
    resolved = resolve_groups(client, [ref for refs in wanted.values() for ref in refs])
    return [(kind, ref, resolved[ref]) for kind, refs in wanted.items() for ref in refs]


def load_group_filters(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    extracted_at: datetime,
    filters: Sequence[tuple[str, str, str]],
) -> int:
    """The configured group filters with the object ids they resolved to."""
    con.execute(
        f"CREATE OR REPLACE TABLE raw.{GROUP_FILTERS} (tenant_id VARCHAR, extracted_at TIMESTAMPTZ, "
        "applies_to VARCHAR, group_ref VARCHAR, group_id VARCHAR)"
    )
    if filters:
        con.executemany(
            f"INSERT INTO raw.{GROUP_FILTERS} VALUES (?, ?, ?, ?, ?)",
            [(tenant_id, extracted_at, *row) for row in filters],
        )
    document_table(con, f"raw.{GROUP_FILTERS}", DESCRIPTIONS[GROUP_FILTERS], GROUP_FILTERS_DOCS)
    return len(filters)


def load_extraction_status(
    con: duckdb.DuckDBPyConnection,
    settings: ConnectorSettings,
    extracted_at: datetime,
    reports: dict[str, CollectionReport],
    *,
    asked: set[str] | None = None,
) -> int:
    """Per extracted table: complete, unavailable (and why) or skipped (and why). A table this
    run was not `asked` for (a subset run) keeps its row, and its `extracted_at`, from before."""
    kept: list[tuple] = []
    if asked is not None and table_exists(con, f"raw.{EXTRACTION_STATUS}"):
        kept = [
            row
            for row in con.execute(f"SELECT * FROM raw.{EXTRACTION_STATUS}").fetchall()
            if row[2] not in asked
        ]
    con.execute(
        f"CREATE OR REPLACE TABLE raw.{EXTRACTION_STATUS} (tenant_id VARCHAR, "
        "extracted_at TIMESTAMPTZ, collection VARCHAR, status VARCHAR, reason VARCHAR)"
    )
    rows: list[tuple[str, str, str | None]] = []
    for table in EXTRACTED_TABLES:
        report = reports.get(table)
        if asked is not None and table not in asked:
            if not any(row[2] == table for row in kept):
                rows.append((table, "skipped", "not selected in any run yet"))
        elif report is None:
            reason = (
                "users.import_sign_in_activity is false"
                if table == SIGN_IN_ACTIVITY.table
                else "no group filter is configured"
            )
            rows.append((table, "skipped", reason))
        elif report.status == "unavailable":
            rows.append((table, "unavailable", report.reason))
        else:
            rows.append((table, "complete", None))
    con.executemany(
        f"INSERT INTO raw.{EXTRACTION_STATUS} VALUES (?, ?, ?, ?, ?)",
        [*kept, *((settings.tenant_id, extracted_at, *row) for row in rows)],
    )
    document_table(
        con, f"raw.{EXTRACTION_STATUS}", DESCRIPTIONS[EXTRACTION_STATUS], EXTRACTION_STATUS_DOCS
    )
    return len(kept) + len(rows)


def create_empty_raw_layer(con: duckdb.DuckDBPyConnection, settings: ConnectorSettings) -> None:
    """Every raw table, typed as an extraction lands it, with no rows (and sign-in activity
    "skipped"): what the models can be built on without a network call."""
    now = datetime.now(UTC)
    for landed in LANDED:
        load_landed_table(con, landed, (), settings.tenant_id, now)
    load_group_filters(con, settings.tenant_id, now, [])
    load_extraction_status(con, settings, now, {})


def sign_in_status(con: duckdb.DuckDBPyConnection) -> tuple[str, str | None]:
    """(status, reason) of this run's sign-in activity pass, from raw.extraction_status."""
    found = con.execute(
        f"SELECT status, reason FROM raw.{EXTRACTION_STATUS} WHERE collection = ?",
        [SIGN_IN_ACTIVITY.table],
    ).fetchall()
    return found[0] if found else ("missing", None)


def sign_in_imported(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether this run imported sign-in activity, which the user stale threshold needs
    (docs/options-and-mapping.md)."""
    return sign_in_status(con)[0] == "complete"


def _warn_when_user_stale_filter_skipped(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, settings: ConnectorSettings
) -> None:
    """The user stale threshold needs sign-in activity (docs/options-and-mapping.md); say why it
    will not be applied."""
    days = settings.users.stale_threshold_days
    if days is None or sign_in_imported(con):
        return
    status, reason = sign_in_status(con)
    reason = reason or "sign-in activity was not imported in this run"
    warehouse.notify(
        "stale_filter_skipped",
        "warning",
        f"The user stale threshold of {days} days was not applied because sign-in activity was "
        f"not imported ({reason}); every licensed user was kept.",
        {"stale_threshold_days": days, "sign_in_activity_status": status, "reason": reason},
    )


def _notify_soft_failures(warehouse: Warehouse, reports: dict[str, CollectionReport]) -> None:
    sign_in = reports.get(SIGN_IN_ACTIVITY.table)
    if sign_in is not None and sign_in.status == "unavailable":
        error = sign_in.error
        warehouse.notify(
            "sign_in_activity_unavailable",
            "warning",
            f"Sign-in activity was not imported; its columns stay null this run: {sign_in.reason}",
            {
                "graph_code": getattr(error, "code", None),
                "request_id": getattr(error, "request_id", None),
            },
        )


def _graph_metadata(report: CollectionReport | None) -> dict[str, Any]:
    if report is None:
        return {}
    return {
        "graph_pages": report.pages,
        "graph_requests": report.requests,
        "graph_retries": report.retries,
        "graph_throttled": report.throttled,
        "graph_restarts": report.restarts,
        "extract_seconds": report.seconds,
        "extraction_status": report.status,
    }
