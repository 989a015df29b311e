"""`history.changes` (docs/incremental.md): per published run, what changed against the state
published before it, per entity and attribute, kept for `history.retention_days`.

Entities, compared between the published file (before the run) and the run's work copy:

- `user`: every column of `staging.users`, plus `imported` (the user is in `neurons.users`'s
  filtered set) and `stale` (beyond `users.stale_threshold_days`; null when it is off);
- `device`: every column of `staging.devices`, plus `imported` and `stale` likewise;
- `licence`: (user, licence name) pairs from `staging.users.license_names`, added or removed;
- `group_membership`: (member, group) pairs of `raw.group_members`, added or removed.

An object that appears or goes is one `added` / `removed` row naming it (its userPrincipalName or
displayName); `updated` rows are one per attribute that changed, old and new value as text. Only
the rows whose content differs are unpivoted, so a run costs what changed. The first publication
is the baseline: it records nothing.
"""

# No `from __future__ import annotations`: Dagster reads the `context` annotation at definition.
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
from dagster import AssetExecutionContext

from entra_pipeline.connector.raw_layer import sign_in_imported
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.warehouse.docs import TENANT_ID_DOC, document_table
from entra_pipeline.warehouse.metadata import table_key
from entra_pipeline.warehouse.models import define_macro
from entra_pipeline.warehouse.resource import Warehouse
from entra_pipeline.warehouse.sql import literal, table_exists

HISTORY_GROUP = "history"
CHANGES = "history.changes"
DESCRIPTION = (
    "What changed at each published run against the state published before it: users, devices, "
    "licences and group memberships, per attribute (docs/incremental.md)."
)
DOCS = {
    "run_id": "Dagster run id of the run that published the change.",
    "changed_at": "When that run started (UTC): the change happened before it, after the run "
    "before.",
    "tenant_id": TENANT_ID_DOC,
    "entity": "user, device, licence or group_membership.",
    "object_id": "Object id of the user or device (of the member, for group_membership).",
    "change": "added, removed or updated.",
    "attribute": "The staging column that changed (updated); for added/removed users "
    "userPrincipalName, devices displayName, licences the licence name's column license, "
    "memberships group_id.",
    "old_value": "The value before, as text (null when added or unset).",
    "new_value": "The value after, as text (null when removed or unset).",
    "object_name": "Who or what changed: the user's userPrincipalName, the device's displayName "
    "(the member's, for group_membership; the user's, for licence), as after the change or, for "
    "a removed object, as before.",
    "target_attribute": "The mapped target attribute(s) of `attribute` in the run's mapping CSV "
    "(User.Enabled for a user's accountEnabled; User.Licenses for a licence), comma separated; "
    "null when the attribute is not mapped.",
}
_DDL = (
    f"CREATE TABLE IF NOT EXISTS {CHANGES} (run_id VARCHAR, changed_at TIMESTAMPTZ, "
    "tenant_id VARCHAR, entity VARCHAR, object_id VARCHAR, change VARCHAR, attribute VARCHAR, "
    "old_value VARCHAR, new_value VARCHAR, object_name VARCHAR, target_attribute VARCHAR)"
)
# Columns added since the first version, last in the table: files written before get them.
_ADDED = ("object_name", "target_attribute")
MAPPING = "ops.attribute_mapping"
SOURCES = (
    "staging.users",
    "staging.filtered_users",
    "staging.devices",
    "staging.filtered_devices",
    "raw.group_members",
)


@dg.asset(
    key=dg.AssetKey(["history", "changes"]),
    group_name=HISTORY_GROUP,
    description=DESCRIPTION,
    deps=[table_key(table) for table in (*SOURCES, MAPPING)],
    kinds={"duckdb", "sql"},
    metadata={"dagster/table_name": CHANGES},
)
def history_changes(
    context: AssetExecutionContext, warehouse: Warehouse, connector: ConnectorResource
) -> dg.MaterializeResult:
    """Record what this run changed in users, devices, licences and memberships."""
    started = time.perf_counter()
    settings = connector.settings
    run = warehouse.run
    with warehouse.transaction() as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS history")
        con.execute(_DDL)
        for column in _ADDED:
            con.execute(f"ALTER TABLE {CHANGES} ADD COLUMN IF NOT EXISTS {column} VARCHAR")
        baseline = not _attach_published(con, Path(warehouse.path))
        if baseline:
            context.log.info("history.changes: no published state yet; this run is the baseline")
            counts: dict[str, int] = {}
        else:
            # Attached for this transaction's connection only: it closes with it.
            stale_days = {
                # The user threshold applies only when this run imported sign-in activity.
                "user": settings.users.stale_threshold_days if sign_in_imported(con) else None,
                "device": settings.devices.stale_threshold_days,
            }
            counts = record_changes(con, settings.tenant_id, stale_days, run.run_id, run.started_at)
        cutoff = run.started_at - timedelta(days=settings.history.retention_days)
        con.execute(f"DELETE FROM {CHANGES} WHERE changed_at < ?", [cutoff])
        document_table(con, CHANGES, DESCRIPTION, DOCS)
        [(rows,)] = con.execute(f"SELECT count(*) FROM {CHANGES}").fetchall()
        warehouse.mark_built(CHANGES, int(rows))
        metadata = warehouse.table_metadata(con, CHANGES, int(rows))
    summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "none"
    context.log.info(f"history.changes: this run recorded {summary}")
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "changes_this_run": dg.MetadataValue.json(counts),
            "baseline": baseline,
            "retention_days": settings.history.retention_days,
            "duration_seconds": round(time.perf_counter() - started, 3),
        }
    )


def _attach_published(con: duckdb.DuckDBPyConnection, published: Path) -> bool:
    """Attach the published file as `published` when it holds a state to compare with."""
    if not published.exists():
        return False
    con.execute(f"ATTACH {literal(str(published))} AS published (READ_ONLY)")
    return all(table_exists(con, t, "published") for t in ("staging.users", "staging.devices"))


def _objects(catalog: str, entity: str, *, exists: bool) -> str:
    """The compared view of users or devices in `catalog`, every value as text; `stale` by the
    stale rule (the `is_stale` macro, as the filtered models apply it) at $stale_days and $now."""
    table, filtered = (
        ("users", "filtered_users") if entity == "user" else ("devices", "filtered_devices")
    )
    prefix = f"{catalog}." if catalog else ""
    if not exists:  # a catalog without the filtered table (older files): nobody imported
        imported = "NULL::BOOLEAN"
        join = ""
    else:
        imported = "f.id IS NOT NULL"
        join = f"LEFT JOIN {prefix}staging.{filtered} AS f ON f.id = o.id"
    stale = "is_stale(o.last_activity_at, CAST($stale_days AS INTEGER), CAST($now AS TIMESTAMPTZ))"
    return (
        f"SELECT o.id, COLUMNS(c -> c NOT IN ('id', 'tenant_id'))::VARCHAR FROM (SELECT o.*, "
        f"{imported} AS imported, {stale} AS stale FROM {prefix}staging.{table} AS o {join}) AS o"
    )


def record_changes(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    stale_days: Mapping[str, int | None],
    run_id: str,
    now: datetime,
) -> dict[str, int]:
    """Append this run's changes to history.changes; the count per entity and change.
    `stale_days`: the stale threshold the filtered models applied, per entity (user, device)."""
    change = _Change(con, [run_id, now, tenant_id])
    define_macro(con, "is_stale")
    # Each side's `stale` as of its own publication: time alone carries objects across.
    before = _published_at(con, tenant_id) or now
    con.execute("CREATE OR REPLACE TEMP TABLE object_names (id VARCHAR, name VARCHAR)")
    for entity, label in (("user", "userPrincipalName"), ("device", "displayName")):
        filtered = "filtered_users" if entity == "user" else "filtered_devices"
        old_has = table_exists(con, f"staging.{filtered}", "published")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE new_objects AS " + _objects("", entity, exists=True),
            {"stale_days": stale_days[entity], "now": now},
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE old_objects AS "
            + _objects("published", entity, exists=old_has),
            {"stale_days": stale_days[entity], "now": before},
        )
        change.objects(entity, label)
        con.execute(
            f"INSERT INTO object_names SELECT id, {label} FROM new_objects UNION ALL "
            f"SELECT id, {label} FROM old_objects WHERE id NOT IN (SELECT id FROM new_objects)"
        )
    licences = (
        "SELECT id, unnest(string_split(license_names, ',')) AS license FROM {}staging.users "
        "WHERE license_names IS NOT NULL"
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE new_licences AS {licences.format('')}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE old_licences AS {licences.format('published.')}")
    change.pairs("licence", "licences", "id", "license", "license")
    if table_exists(con, "raw.group_members", "published"):
        members = "SELECT group_id, member_id FROM {}raw.group_members"
        con.execute(f"CREATE OR REPLACE TEMP TABLE new_members AS {members.format('')}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE old_members AS {members.format('published.')}")
        change.pairs("group_membership", "members", "member_id", "group_id", "group_id")
    change.name_and_map()
    counts = con.execute(
        "SELECT entity || ' ' || change, count(*) FROM history.changes WHERE run_id = ? "
        "GROUP BY ALL ORDER BY 1",
        [run_id],
    ).fetchall()
    return {key: int(count) for key, count in counts}


def _published_at(con: duckdb.DuckDBPyConnection, tenant_id: str) -> datetime | None:
    """When the run that published the compared state started (its options were evaluated
    then); None when the published file does not say."""
    if not table_exists(con, "ops.sync_runs", "published"):
        return None
    [(started,)] = con.execute(
        "SELECT max(started_at) FROM published.ops.sync_runs WHERE source = 'connector' "
        "AND status = 'success' AND tenant_id = ?",
        [tenant_id],
    ).fetchall()
    return started if isinstance(started, datetime) else None


class _Change:
    """Rows of history.changes from the temporary new_* and old_* tables of one run."""

    _HEAD = (
        "INSERT INTO history.changes (run_id, changed_at, tenant_id, entity, object_id, change, "
        "attribute, old_value, new_value) SELECT ?::VARCHAR, ?::TIMESTAMPTZ, ?::VARCHAR"
    )

    def __init__(self, con: duckdb.DuckDBPyConnection, run: list[object]) -> None:
        self.con, self.run = con, run

    def objects(self, entity: str, label: str) -> None:
        """Users or devices (new_objects, old_objects): added and removed ones under `label`,
        and each attribute that changed. Only rows whose text differs are unpivoted;
        attributes both sides have are compared."""
        head, con, what = self._HEAD, self.con, literal(entity)
        con.execute(
            f"{head}, {what}, n.id, 'added', {literal(label)}, NULL, "
            f"n.{label} FROM new_objects AS n ANTI JOIN old_objects AS o ON o.id = n.id",
            self.run,
        )
        con.execute(
            f"{head}, {what}, o.id, 'removed', {literal(label)}, o.{label}, NULL "
            "FROM old_objects AS o ANTI JOIN new_objects AS n ON n.id = o.id",
            self.run,
        )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE changed_ids AS SELECT n.id FROM new_objects AS n "
            "JOIN old_objects AS o ON o.id = n.id WHERE to_json(n)::VARCHAR <> to_json(o)::VARCHAR"
        )
        for side in ("new", "old"):
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {side}_values AS SELECT * FROM (SELECT * FROM "
                f"{side}_objects WHERE id IN (SELECT id FROM changed_ids)) UNPIVOT INCLUDE NULLS "
                "(value FOR attribute IN (COLUMNS(* EXCLUDE (id))))"
            )
        con.execute(
            f"{head}, {what}, n.id, 'updated', n.attribute, o.value, n.value "
            "FROM new_values AS n JOIN old_values AS o ON o.id = n.id AND "
            "o.attribute = n.attribute WHERE o.value IS DISTINCT FROM n.value",
            self.run,
        )

    def pairs(self, entity: str, tables: str, key: str, value: str, attribute: str) -> None:
        """Pairs (new_<tables>, old_<tables>: `key`, `value`) added and removed: a user's
        licences, a member's groups."""
        head, what = self._HEAD, literal(entity)
        for change, one, other in (("added", "new", "old"), ("removed", "old", "new")):
            old, new = ("NULL", f"a.{value}") if change == "added" else (f"a.{value}", "NULL")
            self.con.execute(
                f"{head}, {what}, a.{key}, '{change}', {literal(attribute)}, {old}, {new} "
                f"FROM {one}_{tables} AS a ANTI JOIN {other}_{tables} AS b "
                f"ON b.{key} = a.{key} AND b.{value} = a.{value}",
                self.run,
            )

    def name_and_map(self) -> None:
        """This run's rows get their object's name (object_names) and the attribute's target
        attribute(s) in the run's mapping (a licence pair: license_names's)."""
        run_id = self.run[0]
        self.con.execute(
            "UPDATE history.changes AS c SET object_name = n.name FROM object_names AS n "
            "WHERE c.run_id = ? AND n.id = c.object_id",
            [run_id],
        )
        if not table_exists(self.con, MAPPING):
            return
        self.con.execute(
            "UPDATE history.changes AS c SET target_attribute = m.targets FROM (SELECT "
            "lower(data_type) AS entity, source_attribute, string_agg(target_attribute, ', ' "
            f'ORDER BY "row") AS targets FROM {MAPPING} GROUP BY ALL) AS m WHERE c.run_id = ? '
            "AND m.entity = if(c.entity = 'licence', 'user', c.entity) AND m.source_attribute = "
            "if(c.entity = 'licence', 'license_names', c.attribute)",
            [run_id],
        )
