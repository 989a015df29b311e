"""The user source's directory: every user and group of the tenant with their transitive members
and custom attributes, read from Graph and built as `mdm.*` in one transaction.

Graph's answers land in the run's work copy under `mdm_extract`, the SQL models in
`dbt_like_sql/mdm/` build the four tables from them, and the extract is dropped (a successful
run's work copy may become the published file as it is).
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at definition.
import json
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster import AssetExecutionContext

from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import GROUP_MEMBERS, GROUPS, Collection
from entra_pipeline.graph.extract import Extracted, extract_collection, extract_group_members
from entra_pipeline.graph_session import recorded_graph_client
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.settings import UserSourceOptions
from entra_pipeline.user_source.attributes import (
    CustomAttribute,
    attribute_coverage,
    attribute_parameters,
    custom_attribute,
    directory_users,
    notify_attribute_coverage,
)
from entra_pipeline.user_source.tables import MDM_GROUP, mdm_key
from entra_pipeline.warehouse.loading import load_landed_table
from entra_pipeline.warehouse.models import Model, build_models, discover_models
from entra_pipeline.warehouse.publish import Warehouse
from entra_pipeline.warehouse.validation import IdentityColumns, check_identity_table

MDM_USERS_CHECK = "mdm_users_valid"
MODELS_SCHEMA = "mdm"
# Graph's answers land here in the run's work copy; the models read them as sources.
EXTRACT_SCHEMA = "mdm_extract"
DIRECTORY_MODELS = discover_models(MODELS_SCHEMA)
DIRECTORY_TABLES = tuple(model.table.split(".")[1] for model in DIRECTORY_MODELS)


def user_source_parameters(
    options: UserSourceOptions, attributes: Sequence[CustomAttribute], synced_at: datetime
) -> dict[str, Any]:
    """Every value a `dbt_like_sql/mdm/` model may use as `$name`."""
    return {
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
    synced_at = warehouse.run.started_at
    with warehouse.scratch_folder("mdm-extract-") as workdir:
        with recorded_graph_client(connector, warehouse) as client:
            extracted = extract_directory(client, users, workdir)
            total = client.total_stats()
        with warehouse.transaction() as con:
            for landed in (users, GROUPS, GROUP_MEMBERS):
                load_landed_table(
                    con,
                    landed,
                    extracted[landed.table].files,
                    settings.tenant_id,
                    synced_at,
                    schema=EXTRACT_SCHEMA,
                )
            rows = build_models(
                con,
                DIRECTORY_MODELS,
                user_source_parameters(options, attributes, synced_at),
                warehouse.replace_table,
            )
            coverage = attribute_coverage(con, options.custom_attributes)
            notify_attribute_coverage(warehouse, coverage)
            metadata = {
                table: warehouse.table_metadata(con, table, count) for table, count in rows.items()
            }
            metadata["mdm.users"].update(_users_metadata(con, options))
            metadata["mdm.user_attributes"]["missing_values"] = dg.MetadataValue.json(
                {c.attribute: c.missing for c in coverage}
            )
        # Not in the transaction above: DuckDB refuses to drop tables a statement of the same
        # transaction read.
        with warehouse.transaction() as con:
            con.execute(f"DROP SCHEMA {EXTRACT_SCHEMA} CASCADE")
    # One step builds the four directory tables from one extraction: its figures are each one's.
    step = {
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


def extract_directory(
    client: GraphClient, users: Collection, workdir: Path
) -> dict[str, Extracted]:
    """Every user, and meanwhile every group then the transitive members of each group, as
    NDJSON files (the two run at once: neither needs the other)."""

    def groups_and_members() -> tuple[Extracted, Extracted]:
        groups = extract_collection(client, GROUPS, workdir)
        members = extract_group_members(client, list(_ids(groups.files)), workdir)
        return groups, members

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="graph-directory") as pool:
        listed = pool.submit(groups_and_members)
        extracted_users = extract_collection(client, users, workdir)
        groups, members = listed.result()
    return {users.table: extracted_users, GROUPS.table: groups, GROUP_MEMBERS.table: members}


def _ids(files: Sequence[Path]) -> Iterator[str]:
    for file in files:
        with file.open(encoding="utf-8") as lines:
            for line in lines:
                yield json.loads(line)["id"]


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
