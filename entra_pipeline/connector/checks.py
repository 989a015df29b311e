"""The blocking checks of `neurons.users` and `neurons.devices`: pandera rules found through the
mapping CSV, so a renamed target keeps its rule."""

from __future__ import annotations

import dagster as dg
import duckdb

from entra_pipeline.connector.mapping import MAPPED_TABLES, MAPPING_TABLE, MappedTable
from entra_pipeline.warehouse.resource import Warehouse
from entra_pipeline.warehouse.validation import IdentityColumns, check_identity_table

NEURONS_USERS_CHECK = "neurons_users_valid"
NEURONS_DEVICES_CHECK = "neurons_devices_valid"
CHECK_NAMES = {"User": NEURONS_USERS_CHECK, "Device": NEURONS_DEVICES_CHECK}

# For the mapped tables a rule follows the source attribute, whatever target name the CSV gives it.
RULES_BY_SOURCE = {
    "id": "object_ids",
    "userPrincipalName": "upns",
    "manager_upn": "optional_upns",
    "owner_upn": "optional_upns",
    "mail": "emails",
    "join_type_label": "join_types",
}


def mapped_identity_columns(con: duckdb.DuckDBPyConnection, data_type: str) -> IdentityColumns:
    """The rules of a mapped table, found through the source attribute of each target."""
    rows = con.execute(
        f"SELECT source_attribute, target_attribute FROM {MAPPING_TABLE} WHERE data_type = ?",
        [data_type],
    ).fetchall()
    grouped: dict[str, list[str]] = {}
    for source, target in rows:
        if source in RULES_BY_SOURCE:
            grouped.setdefault(RULES_BY_SOURCE[source], []).append(target)
    rules = {rule: tuple(names) for rule, names in grouped.items()}
    return IdentityColumns(**{"object_ids": (), **rules})


def mapped_table_check(table: MappedTable) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=table.key,
        name=CHECK_NAMES[table.data_type],
        blocking=True,
        description=f"{table.target}: unique non-null object ids, UPN and e-mail shape, no "
        "timestamp in the future, join type in its enumeration (pandera).",
    )
    def _check(warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.reader() as con:
            columns = mapped_identity_columns(con, table.data_type)
        return check_identity_table(warehouse, table.target, columns)

    return _check


def transform_checks() -> list[dg.AssetChecksDefinition]:
    """The blocking checks of `neurons.users` and `neurons.devices`."""
    return [mapped_table_check(table) for table in MAPPED_TABLES]
