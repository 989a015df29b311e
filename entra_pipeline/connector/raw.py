"""The raw layer: every Graph collection the connector reads, landed as `raw.*` in one step.

One multi-asset runs the connector's sync units (units.py, one per collection): it reads them
concurrently (they share one Graph client and its bounded pool), streams them to files, and lands
every raw table in one transaction. It also records what later layers must know about the
extraction: the resolved group filters, and per collection whether it was read (sign-in activity
may be unavailable).

It can be subset: selecting `raw/users` alone extracts and lands users only, and the other raw
tables stay as published. What describes the tables a run lands is written with them even when
it was not selected (their rows of `raw.extraction_status`; `raw.group_filters` with
`raw.group_members`), and reported to Dagster as a materialization of its own.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at definition.
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import duckdb
from dagster import AssetExecutionContext

from entra_pipeline.connector.incremental import (
    SyncPlan,
    plan_sync,
    refresh_references,
    snapshot_upns,
)
from entra_pipeline.connector.mapping import ATTRIBUTE_MAPPING
from entra_pipeline.connector.mapping_check import require_valid_mapping
from entra_pipeline.connector.raw_layer import (
    DESCRIPTIONS,
    EXTRACTED_TABLES,
    EXTRACTION_STATUS,
    GROUP_FILTERS,
    RAW_TABLES,
    load_extraction_status,
    load_group_filters,
    sign_in_imported,
    sign_in_status,
)
from entra_pipeline.connector.sign_in_pool import sign_in_slot
from entra_pipeline.connector.units import UNITS, RawRun, asked_units
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import DEVICES, GROUP_MEMBERS, GROUPS, SIGN_IN_ACTIVITY, USERS
from entra_pipeline.graph.delta import DeltaResyncRequired
from entra_pipeline.graph.extract import CollectionReport
from entra_pipeline.graph.groups import resolve_groups
from entra_pipeline.incremental import (
    DELTA_STATE,
    FULL_SYNC_TAG,
    notify_resyncs,
    start_removed_objects,
    write_state,
)
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.sync.session import recorded_graph_client
from entra_pipeline.sync.units import land_units, next_states, read_units
from entra_pipeline.warehouse.resource import Warehouse

RAW_GROUP = "raw"


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
    _check_before_reading(context, settings)
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
    with warehouse.scratch_folder("extract-") as workdir:
        with recorded_graph_client(connector, warehouse, context.log) as client:
            filters = _resolve_group_filters(client, settings) if GROUP_FILTERS in asked else []
            run = RawRun(
                client=client,
                workdir=workdir,
                warehouse=warehouse,
                tenant_id=settings.tenant_id,
                extracted_at=datetime.now(UTC),
                plan=plan,
                asked=asked,
                group_ids=sorted({group_id for _, _, group_id in filters}),
                import_sign_in=settings.users.import_sign_in_activity,
                sign_in_per_minute=settings.users.sign_in_requests_per_minute,
                sign_in_slot=lambda: sign_in_slot(context, settings.client_id),
                log=context.log,
            )
            context.log.info(f"Extracting from {settings.graph_url} {_describe_run(run)}")
            reports = read_units(client, run, asked_units(run))
        _notify_soft_failures(warehouse, reports)
        notify_resyncs(warehouse, _resyncs(reports), plan.reasons)
        with warehouse.transaction() as con:
            rows = _land(con, run, warehouse, reports, filters, settings.users.stale_threshold_days)
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
    for table in (t for t in RAW_TABLES if t in rows):
        table_metadata = {**metadata[table], **_unit_metadata(run, table, reports.get(table))}
        yield from _materialized(
            context, table, selected, {**table_metadata, "duration_seconds": duration}
        )


def _land(
    con: duckdb.DuckDBPyConnection,
    run: RawRun,
    warehouse: Warehouse,
    reports: dict[str, CollectionReport],
    filters: Sequence[tuple[str, str, str]],
    user_stale_days: int | None,
) -> dict[str, int]:
    """Every table the run writes, in its transaction: the units' tables, what delta does not
    carry refreshed, the delta state, the group filters and the extraction status; rows per
    table, each marked built."""
    start_removed_objects(con)
    snapshot_upns(con)
    rows = land_units(con, run, asked_units(run), reports)
    if run.plan.links is not None:
        refresh_references(
            con,
            users_listed=_listed_in_full(reports, USERS.table),
            devices_listed=_listed_in_full(reports, DEVICES.table),
        )
        state = next_states(run, UNITS, reports)
        if state:
            warehouse.mark_built(
                DELTA_STATE, write_state(con, run.tenant_id, warehouse.run.started_at, state)
            )
    if GROUP_FILTERS in run.asked:
        rows[GROUP_FILTERS] = load_group_filters(con, run.tenant_id, run.extracted_at, filters)
    rows[EXTRACTION_STATUS] = load_extraction_status(
        con, run.tenant_id, run.extracted_at, reports, asked=run.asked
    )
    _warn_when_user_stale_filter_skipped(con, warehouse, user_stale_days)
    for table, count in rows.items():
        warehouse.mark_built(f"raw.{table}", count)
    return rows


def _materialized(
    context: AssetExecutionContext, table: str, selected: set[str], metadata: dict[str, Any]
) -> Iterator[dg.MaterializeResult]:
    if table in selected:
        yield dg.MaterializeResult(asset_key=raw_key(table), metadata=metadata)
    else:
        # Written because it describes the tables landed: Dagster must know it changed.
        context.log_event(
            dg.AssetMaterialization(
                asset_key=raw_key(table),
                description=f"Written with {', '.join(sorted(selected))}, which it describes.",
                metadata=metadata,
            )
        )


def _resyncs(reports: dict[str, CollectionReport]) -> dict[str, DeltaResyncRequired]:
    """Per collection whose delta link Graph refused, why (it was read in full instead)."""
    return {
        table: report.extracted.resync
        for table, report in reports.items()
        if report.extracted is not None and report.extracted.resync is not None
    }


def _check_before_reading(context: AssetExecutionContext, settings: ConnectorSettings) -> None:
    """What the run will need that can be checked offline, checked before Graph is read (the
    config itself, its certificate and templates, were validated when it was read): the mapping
    CSV, when the run maps, its rows against the columns the models build — a missing or broken
    one fails the run with `check`'s message and no Graph request."""
    chosen = context.run.asset_selection  # empty or None: the whole job
    if not chosen or ATTRIBUTE_MAPPING in chosen:
        require_valid_mapping(settings)


def _describe_run(run: RawRun) -> str:
    only = "" if run.asked == set(RAW_TABLES) else f"; only {', '.join(sorted(run.asked))}"
    return (
        f"(sign-in activity: {run.import_sign_in}, member groups: {len(run.group_ids)}, "
        f"{_describe_plan(run.plan)}){only}"
    )


def _unit_metadata(run: RawRun, table: str, report: CollectionReport | None) -> dict[str, Any]:
    """What Dagster is told of a raw table's read: Graph's figures and how it was synced."""
    unit = next((u for u in UNITS if u.collection.table == table), None)
    return {
        **_graph_metadata(report),
        **(unit.sync_metadata(run, report) if unit is not None else {}),
    }


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


def _warn_when_user_stale_filter_skipped(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, days: int | None
) -> None:
    """The user stale threshold (`days`) needs sign-in activity (docs/options-and-mapping.md);
    say why it will not be applied."""
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
