"""The connector's incremental sync (docs/incremental.md): which of its collections a run reads by
delta, its sign-in window, and what delta does not carry, derived from `raw.*` itself: a manager's
or owner's userPrincipalName, and a manager or owner that no longer exists. What both sources share
(`ops.delta_state`, applying a round) is `entra_pipeline/incremental.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from entra_pipeline.graph.collections import SIGN_IN_ACTIVITY
from entra_pipeline.graph.delta import TRACKED
from entra_pipeline.incremental import USER_TYPE, full_reason, plan_links, read_state
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.warehouse.loading import PROVENANCE_COLUMNS
from entra_pipeline.warehouse.sql import literal, quoted, table_exists
from entra_pipeline.warehouse.statements import statement


@dataclass(frozen=True)
class SyncPlan:
    """What a run reads: per tracked table its delta link (None: a full round) and why."""

    links: dict[str, str | None] | None  # None: sync.mode full, no delta at all
    reasons: dict[str, str] = field(default_factory=dict)  # why each full round
    sign_in_since: datetime | None = None  # None: a full sign-in pass


def plan_sync(
    con: duckdb.DuckDBPyConnection,
    settings: ConnectorSettings,
    now: datetime,
    *,
    full_requested: bool,
    tables: Iterable[str],
) -> SyncPlan:
    """Delta link or full round for each tracked table in `tables`, and the sign-in window."""
    if settings.sync.mode == "full":
        return SyncPlan(links=None)
    state = read_state(con, settings.tenant_id)
    backstop = timedelta(days=settings.sync.full_resync_days)
    wanted = set(tables)
    links, reasons = plan_links(
        con,
        settings,
        state,
        now,
        full_requested=full_requested,
        tracked={table: (TRACKED[table], f"raw.{table}") for table in TRACKED if table in wanted},
    )
    since = None
    sign_in = state.get(SIGN_IN_ACTIVITY.table)
    if SIGN_IN_ACTIVITY.table in wanted and not full_reason(
        con,
        f"raw.{SIGN_IN_ACTIVITY.table}",
        sign_in,
        now,
        backstop,
        full_requested,
        needs_link=False,
    ):
        assert sign_in is not None
        since = sign_in.updated_at - timedelta(hours=settings.sync.sign_in_margin_hours)
    return SyncPlan(links=links, reasons=reasons, sign_in_since=since)


def snapshot_upns(con: duckdb.DuckDBPyConnection) -> None:
    """Keep (id, userPrincipalName) of raw.users as it was before this run (temp table)."""
    source = "raw.users" if table_exists(con, "raw.users") else None
    con.execute(
        "CREATE OR REPLACE TEMP TABLE upns_before AS "
        + (
            f"SELECT id, userPrincipalName FROM {source}"
            if source
            else "SELECT NULL::VARCHAR AS id, NULL::VARCHAR AS userPrincipalName WHERE false"
        )
    )


def merge_sign_ins(
    con: duckdb.DuckDBPyConnection,
    files: Sequence[Path],
    tenant_id: str,
    extracted_at: datetime,
) -> int:
    """An incremental sign-in pass merged into raw.sign_in_activity: the users it read replace
    their rows; users no longer in raw.users lose theirs."""
    table = f"raw.{SIGN_IN_ACTIVITY.table}"
    struct = ", ".join(f"{literal(c)}: {literal(t)}" for c, t in SIGN_IN_ACTIVITY.columns.items())
    provenance = ", ".join(f"?::{t} AS {quoted(c)}" for c, t in PROVENANCE_COLUMNS.items())
    if files:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE sign_in_changes AS SELECT {provenance}, * FROM "
            f"read_json(?, format = 'newline_delimited', columns = {{{struct}}}) "
            "QUALIFY row_number() OVER (PARTITION BY id) = 1",
            [tenant_id, extracted_at, [str(f) for f in files]],
        )
        con.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM sign_in_changes)")
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM sign_in_changes")
    con.execute(f"DELETE FROM {table} WHERE id NOT IN (SELECT id FROM raw.users)")
    # A user new since the previous pass who is not in this one has not signed in: a full pass
    # would list them with no signInActivity.
    con.execute(
        f"INSERT INTO {table} BY NAME SELECT ?::VARCHAR AS tenant_id, ?::TIMESTAMPTZ AS "
        f"extracted_at, id, NULL::JSON AS signInActivity FROM raw.users WHERE id NOT IN "
        f"(SELECT id FROM {table})",
        [tenant_id, extracted_at],
    )
    [(rows,)] = con.execute(f"SELECT count(*) FROM {table}").fetchall()
    return int(rows)


def refresh_references(
    con: duckdb.DuckDBPyConnection, *, users_listed: bool = False, devices_listed: bool = False
) -> tuple[int, int]:
    """Managers and registered owners as a full listing's `$expand` would show them now: the
    userPrincipalName of the user today, and gone when that user is. Only rows that name a user
    whose UPN changed, or who was added or removed, since the run began are looked at. A table
    this run listed in full is skipped (its `$expand` is today's; what changed while it was
    listed comes in the next delta round). Returns (users, devices) updated."""
    if users_listed and devices_listed:
        return 0, 0
    con.execute(statement("touched_users"))
    managers = 0 if users_listed else _refresh_managers(con)
    if devices_listed or not table_exists(con, "raw.devices"):
        return managers, 0
    affected = con.execute(statement("devices_with_touched_owners")).fetchall()
    if not affected:
        return managers, 0
    wanted = sorted({o["id"] for _, owners in affected for o in json.loads(owners) or []})
    upns = dict(
        con.execute(
            "SELECT id, userPrincipalName FROM raw.users WHERE id IN (SELECT unnest(?))", [wanted]
        ).fetchall()
    )
    fixed = []
    for device_id, owners in affected:
        kept = [
            {**o, "userPrincipalName": upns[o["id"]]}
            for o in json.loads(owners) or []
            if o.get("id") in upns
        ]
        fixed.append((device_id, json.dumps(kept, ensure_ascii=False, separators=(",", ":"))))
    # One bulk insert from a frame: executemany runs a statement a row, which a first full
    # round (every device "affected") made 15 minutes of CPU at 400k devices.
    owner_rows = pl.DataFrame(fixed, schema={"id": pl.String, "owners": pl.String}, orient="row")
    con.register("owner_rows", owner_rows)
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE owner_fix AS "
            "SELECT id, CAST(owners AS JSON) AS owners FROM owner_rows"
        )
    finally:
        con.unregister("owner_rows")
    con.execute(
        "UPDATE raw.devices AS d SET registeredOwners = f.owners FROM owner_fix AS f "
        "WHERE d.id = f.id"
    )
    return managers, len(fixed)


def _refresh_managers(con: duckdb.DuckDBPyConnection) -> int:
    con.execute(statement("manager_fix", user_type=USER_TYPE))
    con.execute(
        "UPDATE raw.users AS u SET manager = f.manager FROM manager_fix AS f "
        "WHERE u.id = f.id AND u.manager IS DISTINCT FROM f.manager"
    )
    [(managers,)] = con.execute("SELECT count(*) FROM manager_fix").fetchall()
    return int(managers)
