"""The user source's directory: every user and group of the tenant with their transitive members
and custom attributes, read from Graph and built as `mdm.*` in one transaction.

Graph's answers land in the run's work copy under `mdm_extract`, and the SQL models in
`dbt_like_sql/mdm/` build the four tables from them. Under incremental sync (the default) the
extract is kept and brought up to date from delta rounds (user_source/incremental.py); with
`sync.mode: full` every run lists everything and the extract is dropped.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at definition.
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import dagster as dg
import duckdb
from dagster import AssetExecutionContext

from entra_pipeline.graph.collections import Collection
from entra_pipeline.graph.delta import DeltaResyncRequired
from entra_pipeline.incremental import (
    DELTA_STATE,
    FULL_SYNC_TAG,
    notify_resyncs,
    start_removed_objects,
    write_state,
)
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.settings import ConnectorSettings, UserSourceOptions
from entra_pipeline.sync.session import recorded_graph_client
from entra_pipeline.sync.units import Reports, SyncUnit, land_units, next_states, read_units
from entra_pipeline.user_source.attributes import (
    CustomAttribute,
    attribute_coverage,
    attribute_parameters,
    custom_attribute,
    directory_users,
    notify_attribute_coverage,
)
from entra_pipeline.user_source.incremental import (
    EXTRACT_SCHEMA,
    DirectoryPlan,
    plan_directory,
    queries,
    state_key,
)
from entra_pipeline.user_source.tables import MDM_GROUP, USER_SOURCE_MEMORY_LIMIT, mdm_key
from entra_pipeline.user_source.units import DirectoryRun, directory_units
from entra_pipeline.warehouse.models import Model, build_models, discover_models
from entra_pipeline.warehouse.resource import Warehouse
from entra_pipeline.warehouse.validation import IdentityColumns, check_identity_table

MDM_USERS_CHECK = "mdm_users_valid"
MODELS_SCHEMA = "mdm"
DIRECTORY_MODELS = discover_models(MODELS_SCHEMA)
DIRECTORY_TABLES = tuple(model.table.split(".")[1] for model in DIRECTORY_MODELS)


def user_source_parameters(
    settings: ConnectorSettings, attributes: Sequence[CustomAttribute], synced_at: datetime
) -> dict[str, Any]:
    """Every value a `dbt_like_sql/mdm/` model may use as `$name`."""
    options = settings.user_source
    return {
        "connector": settings.connector_name,
        "synced_at": synced_at,
        "managed_apple_id": options.managed_apple_id,
        "appleid_subdomain": options.appleid_subdomain,
        "custom_attributes": attribute_parameters(attributes),
    }


def _directory_spec(model: Model) -> dg.AssetSpec:
    return dg.AssetSpec(
        model.key,
        description=model.description,
        group_name=MDM_GROUP,
        kinds={"duckdb", "sql"},
        metadata={"dagster/table_name": model.table, "sql_file": model.path.name},
        # A disabled user source materializes nothing, and everything downstream is skipped.
        skippable=True,
    )


@dg.multi_asset(specs=[_directory_spec(model) for model in DIRECTORY_MODELS], can_subset=False)
def mdm_directory(
    context: AssetExecutionContext, warehouse: Warehouse, connector: ConnectorResource
) -> Iterator[dg.MaterializeResult]:
    """Sync every user and group of the tenant with their members and custom attributes."""
    settings = connector.settings
    options = settings.user_source
    if not options.enabled:
        context.log.warning(
            f"The user source {options.name!r} is disabled (user_source.enabled is false): "
            "nothing was read from Graph and the published mdm.* tables were left as they are."
        )
        return
    started = time.monotonic()
    attributes = [custom_attribute(name) for name in options.custom_attributes]
    users = directory_users(attributes)
    units = directory_units(users)
    with warehouse.reader() as con:
        plan = plan_directory(
            con,
            settings,
            users,
            warehouse.run.started_at,
            full_requested=context.run.tags.get(FULL_SYNC_TAG, "").lower() == "true",
        )
    with warehouse.scratch_folder("mdm-extract-") as workdir:
        with recorded_graph_client(connector, warehouse, context.log) as client:
            run = DirectoryRun(
                client, workdir, warehouse, settings.tenant_id, warehouse.run.started_at, plan
            )
            if plan.links is not None:
                context.log.info(f"User source {options.name!r}: {_describe_plan(plan)}")
            reports = read_units(client, run, units)
            total = client.total_stats()
        if plan.links is not None:
            notify_resyncs(warehouse, _resyncs(reports), plan.reasons)
        with warehouse.transaction(USER_SOURCE_MEMORY_LIMIT) as con:
            _land(con, run, units, reports, users)
            rows, metadata = _build(con, warehouse, settings, attributes, run.synced_at)
        if plan.links is None:
            # sync.mode full: nothing is kept between runs. Not in the transaction above: DuckDB
            # refuses to drop tables a statement of the same transaction read.
            with warehouse.transaction(USER_SOURCE_MEMORY_LIMIT) as con:
                con.execute(f"DROP SCHEMA IF EXISTS {EXTRACT_SCHEMA} CASCADE")
    # One step builds the four directory tables from one extraction: its figures are each one's.
    step = {
        **_sync_metadata(run, units, reports),
        "graph_requests": total.requests,
        "graph_retries": total.retries,
        "duration_seconds": round(time.monotonic() - started, 3),
    }
    context.log.info(
        f"User source {options.name!r} synchronized in {step['duration_seconds']:.1f}s: "
        + ", ".join(f"{table}={count}" for table, count in rows.items())
    )
    for model in DIRECTORY_MODELS:
        yield dg.MaterializeResult(asset_key=model.key, metadata={**metadata[model.table], **step})


def _land(
    con: duckdb.DuckDBPyConnection,
    run: DirectoryRun,
    units: Sequence[SyncUnit[DirectoryRun]],
    reports: Reports,
    users: Collection,
) -> None:
    """`mdm_extract.*` after this run's listings or rounds, and (on deltas) the next links in
    `ops.delta_state`, each with the `$select` its delta query sends (`users`: with this run's
    custom attributes)."""
    if run.plan.links is not None:
        start_removed_objects(con)
    land_units(con, run, units, reports)
    state = next_states(run, units, reports)
    if run.plan.links is not None and state:
        selected = {key: query.select for key, (query, _) in queries(users).items()}
        write_state(con, run.tenant_id, run.synced_at, state, selected=selected)
    if run.plan.links is not None:
        [(count,)] = con.execute(f"SELECT count(*) FROM {DELTA_STATE}").fetchall()
        run.warehouse.mark_built(DELTA_STATE, count)


def _build(
    con: duckdb.DuckDBPyConnection,
    warehouse: Warehouse,
    settings: ConnectorSettings,
    attributes: Sequence[CustomAttribute],
    synced_at: datetime,
) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    """The `mdm.*` models built from the extract, the attribute coverage notified; rows and
    Dagster metadata per table."""
    options = settings.user_source
    rows = build_models(
        con,
        DIRECTORY_MODELS,
        user_source_parameters(settings, attributes, synced_at),
        warehouse.replace_table,
    )
    coverage = attribute_coverage(con, options.custom_attributes)
    notify_attribute_coverage(warehouse, coverage)
    metadata = {table: warehouse.table_metadata(con, table, count) for table, count in rows.items()}
    metadata["mdm.users"].update(_users_metadata(con, options))
    metadata["mdm.user_attributes"]["missing_values"] = dg.MetadataValue.json(
        {c.attribute: c.missing for c in coverage}
    )
    return rows, metadata


def _resyncs(reports: Reports) -> dict[str, DeltaResyncRequired]:
    """Per state key whose delta link Graph refused, why (it was read in full instead)."""
    return {
        state_key(table): report.extracted.resync
        for table, report in reports.items()
        if report.extracted is not None and report.extracted.resync is not None
    }


def _describe_plan(plan: DirectoryPlan) -> str:
    assert plan.links is not None
    return "incremental: " + ", ".join(
        f"{key.split('.')[-1]} {'by delta' if link else 'in full'}"
        for key, link in plan.links.items()
    )


def _sync_metadata(
    run: DirectoryRun, units: Sequence[SyncUnit[DirectoryRun]], reports: Reports
) -> dict[str, Any]:
    if run.plan.links is None:
        return {"sync_mode": "full"}
    figures: dict[str, Any] = {}
    for unit in units:
        figures.update(unit.sync_metadata(run, reports.get(unit.collection.table)))
    return figures


def _users_metadata(con: duckdb.DuckDBPyConnection, options: UserSourceOptions) -> dict[str, Any]:
    [(enabled, disabled, guests, apple_ids, without_apple_id)] = con.execute(
        "SELECT count(*) FILTER (WHERE accountEnabled), "
        "count(*) FILTER (WHERE NOT coalesce(accountEnabled, false)), "
        "count(*) FILTER (WHERE is_guest), count(managed_apple_id), "
        "count(*) FILTER (WHERE managed_apple_id IS NULL) FROM mdm.users"
    ).fetchall()
    return {
        "enabled_users": enabled,
        "disabled_users": disabled,
        "guest_users": guests,
        "managed_apple_id_mode": options.managed_apple_id
        + (" (appleid. subdomain)" if options.appleid_subdomain else ""),
        "managed_apple_ids": apple_ids,
        # Users the configured source (mail or UPN) has no value for; `none` counts nobody.
        "managed_apple_id_missing": 0 if options.managed_apple_id == "none" else without_apple_id,
    }


MDM_USERS_COLUMNS = IdentityColumns(
    object_ids=("id",),
    upns=("userPrincipalName",),
    # A guest's UPN-based Apple ID keeps its #EXT# local part: UPN-shaped, not e-mail-shaped.
    optional_upns=("managed_apple_id",),
    emails=("mail",),
)


@dg.asset_check(
    asset=mdm_key("users"),
    name=MDM_USERS_CHECK,
    blocking=True,
    description="mdm.users: unique non-null object ids, UPN and e-mail shape, Managed Apple ID "
    "shape, no timestamp in the future (pandera).",
)
def mdm_users_valid(warehouse: Warehouse) -> dg.AssetCheckResult:
    return check_identity_table(warehouse, "mdm.users", MDM_USERS_COLUMNS)
