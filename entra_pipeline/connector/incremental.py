"""Incremental sync (SPEC 6): which collections a run reads by delta, `ops.delta_state`, and a
delta round's changes applied to `raw.*`.

`plan_sync` decides, per collection, between its stored delta link and a full round (no link
yet, `sync.mode: full`, the `full_resync_days` backstop, or a full sync asked for). The
`apply_*` functions run inside the raw layer's transaction: a round's changes upsert by id (the
last entry of an id wins, so a replayed change is harmless) and `@removed` deletes. What delta
does not carry is derived from the tables themselves: a manager's or owner's userPrincipalName,
and a manager or owner that no longer exists. Group memberships are kept by `plan_members`:
a filter group whose members (at any depth) did not change keeps its rows, a flat one applies
`members@delta` directly, and one with nested groups that changed is listed again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb

from entra_pipeline.graph.collections import DEVICES, GROUPS, SIGN_IN_ACTIVITY, USERS, Collection
from entra_pipeline.graph.delta import TRACKED, remember_link
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.warehouse.docs import TENANT_ID_DOC, document_table
from entra_pipeline.warehouse.loading import PROVENANCE_COLUMNS
from entra_pipeline.warehouse.sql import literal, quoted

logger = logging.getLogger(__name__)

DELTA_STATE = "ops.delta_state"
# A run tagged with this (value "true") lists every collection in full: `entra-pipeline sync
# --full`, or the tag added in the Dagster launchpad.
FULL_SYNC_TAG = "entra_pipeline/full_sync"
DELTA_STATE_DESCRIPTION = (
    "Per tenant and collection: the delta link of its next round and when it was last read in "
    "full (SPEC 6). The link is credential-free but grants a round of the tenant's changes."
)
DELTA_STATE_DOCS = {
    "tenant_id": TENANT_ID_DOC,
    "collection": "users, devices, groups (delta rounds) or sign_in_activity (filtered passes).",
    "delta_link": "The @odata.deltaLink of the collection's next round; null for sign-in "
    "activity, which has no delta.",
    "updated_at": "When the run that stored this row started reading the collection (UTC); "
    "the next sign-in pass reads from it, minus sync.sign_in_margin_hours.",
    "last_full_sync_at": "When the collection was last read in full (UTC): a full round follows "
    "sync.full_resync_days after it.",
    "selected": "The $select the link tracks: a link that tracks other properties (after an "
    "upgrade) is given up for a full round.",
}
_STATE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {DELTA_STATE} (tenant_id VARCHAR, collection VARCHAR, "
    "delta_link VARCHAR, updated_at TIMESTAMPTZ, last_full_sync_at TIMESTAMPTZ, selected VARCHAR)"
)


@dataclass(frozen=True)
class State:
    collection: str
    delta_link: str | None
    updated_at: datetime
    last_full_sync_at: datetime
    selected: str | None


@dataclass(frozen=True)
class SyncPlan:
    """What a run reads: per tracked table its delta link (None: a full round) and why."""

    links: dict[str, str | None] | None  # None: sync.mode full, no delta at all
    reasons: dict[str, str] = field(default_factory=dict)  # why each full round
    sign_in_since: datetime | None = None  # None: a full sign-in pass


def read_state(con: duckdb.DuckDBPyConnection, tenant_id: str) -> dict[str, State]:
    """The stored delta state of `tenant_id` (empty before the first incremental run)."""
    if not _exists(con, "ops", "delta_state"):
        return {}
    rows = con.execute(
        f"SELECT collection, delta_link, updated_at, last_full_sync_at, selected FROM {DELTA_STATE} "
        "WHERE tenant_id = ?",
        [tenant_id],
    ).fetchall()
    states = {row[0]: State(*row) for row in rows}
    for state in states.values():
        if state.delta_link:
            remember_link(state.delta_link)
    return states


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
    links: dict[str, str | None] = {}
    reasons: dict[str, str] = {}
    wanted = set(tables)
    for table in TRACKED:
        if table not in wanted:
            continue
        row = state.get(table)
        reason = _full_reason(con, table, row, now, backstop, full_requested) or _link_problem(
            row, settings.graph_url, TRACKED[table].select
        )
        links[table] = None if reason else row.delta_link if row else None
        if reason:
            reasons[table] = reason
    since = None
    sign_in = state.get(SIGN_IN_ACTIVITY.table)
    if SIGN_IN_ACTIVITY.table in wanted and not _full_reason(
        con, SIGN_IN_ACTIVITY.table, sign_in, now, backstop, full_requested, needs_link=False
    ):
        assert sign_in is not None
        since = sign_in.updated_at - timedelta(hours=settings.sync.sign_in_margin_hours)
    return SyncPlan(links=links, reasons=reasons, sign_in_since=since)


def _full_reason(
    con: duckdb.DuckDBPyConnection,
    table: str,
    row: State | None,
    now: datetime,
    backstop: timedelta,
    full_requested: bool,
    *,
    needs_link: bool = True,
) -> str | None:
    if full_requested:
        return "a full sync was requested"
    if row is None or (needs_link and not row.delta_link):
        return "no delta state yet (first incremental run)"
    if not _exists(con, "raw", table):
        return f"raw.{table} is missing"
    if now - row.last_full_sync_at >= backstop:
        days = (now - row.last_full_sync_at).days
        return f"the last full round was {days} days ago (sync.full_resync_days)"
    return None


def _link_problem(row: State | None, graph_url: str, select: str) -> str | None:
    """Why a stored link cannot be followed: it points at another Graph (the connector's
    graph_url changed), or it tracks other properties than this version selects."""
    if row is None or not row.delta_link:
        return None
    stored, configured = urlsplit(row.delta_link), urlsplit(graph_url)
    if (stored.scheme, stored.netloc.lower()) != (configured.scheme, configured.netloc.lower()):
        return "the stored delta link is for another Graph endpoint than graph_url"
    if row.selected != select:
        return "the stored delta link tracks other properties than this version selects"
    return None


def write_state(
    con: duckdb.DuckDBPyConnection,
    tenant_id: str,
    started_at: datetime,
    rows: Mapping[str, tuple[str | None, bool]],
) -> int:
    """Store, per collection, (the next delta link, whether this run read it in full)."""
    con.execute("CREATE SCHEMA IF NOT EXISTS ops")
    con.execute(_STATE_DDL)
    previous = read_state(con, tenant_id)
    for collection, (link, full) in rows.items():
        last_full = started_at if full or collection not in previous else None
        if last_full is None:
            last_full = previous[collection].last_full_sync_at
        con.execute(
            f"DELETE FROM {DELTA_STATE} WHERE tenant_id = ? AND collection = ?",
            [tenant_id, collection],
        )
        tracked = TRACKED.get(collection)
        con.execute(
            f"INSERT INTO {DELTA_STATE} VALUES (?, ?, ?, ?, ?, ?)",
            [tenant_id, collection, link, started_at, last_full, tracked and tracked.select],
        )
    document_table(con, DELTA_STATE, DELTA_STATE_DESCRIPTION, DELTA_STATE_DOCS)
    [(count,)] = con.execute(f"SELECT count(*) FROM {DELTA_STATE}").fetchall()
    return int(count)


# ---- applying a round to raw.* ---------------------------------------------------------------

_USER_TYPE = "#microsoft.graph.user"


def snapshot_upns(con: duckdb.DuckDBPyConnection) -> None:
    """Keep (id, userPrincipalName) of raw.users as it was before this run (temp table)."""
    source = "raw.users" if _exists(con, "raw", "users") else None
    con.execute(
        "CREATE OR REPLACE TEMP TABLE upns_before AS "
        + (
            f"SELECT id, userPrincipalName FROM {source}"
            if source
            else "SELECT NULL::VARCHAR AS id, NULL::VARCHAR AS userPrincipalName WHERE false"
        )
    )


def apply_round(
    con: duckdb.DuckDBPyConnection,
    collection: Collection,
    changes: Path,
    tenant_id: str,
    extracted_at: datetime,
    *,
    owners: Path | None = None,
) -> tuple[int, int]:
    """Upsert and delete what a delta file says in `raw.<table>`; (rows, removed ids)."""
    table = f"raw.{quoted(collection.table)}"
    carried = {
        c: t for c, t in collection.columns.items() if c not in ("manager", "registeredOwners")
    }
    read = {**carried, "_removed": "BOOLEAN", "_seq": "BIGINT"}
    if collection is USERS:
        read["_manager"] = "VARCHAR"
    struct = ", ".join(f"{literal(c)}: {literal(t)}" for c, t in read.items())
    con.execute(
        "CREATE OR REPLACE TEMP TABLE delta_changes AS SELECT * FROM read_json(?, "
        f"format = 'newline_delimited', columns = {{{struct}}}) "
        "QUALIFY row_number() OVER (PARTITION BY id ORDER BY _seq DESC) = 1",
        [str(changes)],
    )
    columns = ", ".join(f"d.{quoted(c)}" for c in carried)
    if collection is USERS:
        extra = (
            ", CASE WHEN d._manager IS NULL THEN old.manager WHEN d._manager = '' THEN NULL "
            f"ELSE json_object('@odata.type', {literal(_USER_TYPE)}, 'id', d._manager) END "
            "AS manager"
        )
        joins = f"LEFT JOIN {table} AS old ON old.id = d.id"
    elif collection is DEVICES:
        assert owners is not None
        extra = ", o.registeredOwners::JSON AS registeredOwners"
        joins = (
            "LEFT JOIN read_json(?, format = 'newline_delimited', columns = "
            "{'device_id': 'VARCHAR', 'registeredOwners': 'JSON'}) AS o ON o.device_id = d.id"
        )
    else:
        extra, joins = "", ""
    params: list[Any] = [tenant_id, extracted_at]
    if collection is DEVICES:
        params.append(str(owners))
    provenance = ", ".join(f"?::{t} AS {quoted(c)}" for c, t in PROVENANCE_COLUMNS.items())
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE delta_rows AS SELECT {provenance}, {columns}{extra} "
        f"FROM delta_changes AS d {joins} WHERE NOT coalesce(d._removed, false)",
        params,
    )
    con.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM delta_changes)")
    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM delta_rows")
    [(removed,)] = con.execute(
        "SELECT count(*) FROM delta_changes WHERE coalesce(_removed, false)"
    ).fetchall()
    if collection is GROUPS:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE removed_groups AS SELECT id FROM delta_changes "
            "WHERE coalesce(_removed, false)"
        )
    if collection in (USERS, DEVICES):
        con.execute(
            f"INSERT INTO removed_objects SELECT id, {literal(collection.table)} FROM "
            "delta_changes WHERE coalesce(_removed, false)"
        )
    [(rows,)] = con.execute(f"SELECT count(*) FROM {table}").fetchall()
    return int(rows), int(removed)


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


def start_removed_objects(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE removed_objects (id VARCHAR, kind VARCHAR)")
    con.execute("CREATE OR REPLACE TEMP TABLE removed_groups (id VARCHAR)")


def refresh_references(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Managers and registered owners as a full listing's `$expand` would show them now: the
    userPrincipalName of the user today, and gone when that user is. Only rows that name a user
    whose UPN changed, or who was added or removed, since the run began are looked at. Returns
    (users, devices) updated."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE touched_users AS "
        "SELECT coalesce(n.id, b.id) AS id FROM raw.users AS n FULL JOIN upns_before AS b "
        "ON n.id = b.id WHERE n.userPrincipalName IS DISTINCT FROM b.userPrincipalName"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE manager_fix AS "
        "SELECT u.id, CASE WHEN m.id IS NULL THEN NULL ELSE json_object('@odata.type', "
        f"{literal(_USER_TYPE)}, 'id', m.id, 'userPrincipalName', m.userPrincipalName) END "
        "AS manager FROM raw.users AS u LEFT JOIN raw.users AS m ON m.id = (u.manager ->> 'id') "
        "WHERE u.manager IS NOT NULL AND ((u.manager ->> 'id') IN (SELECT id FROM touched_users) "
        "OR (u.manager ->> 'userPrincipalName') IS NULL)"
    )
    con.execute(
        "UPDATE raw.users AS u SET manager = f.manager FROM manager_fix AS f "
        "WHERE u.id = f.id AND u.manager IS DISTINCT FROM f.manager"
    )
    [(managers,)] = con.execute("SELECT count(*) FROM manager_fix").fetchall()
    if not _exists(con, "raw", "devices"):
        return int(managers), 0
    affected = con.execute(
        "SELECT d.id, d.registeredOwners FROM raw.devices AS d WHERE list_has_any("
        "CAST(json_extract_string(d.registeredOwners, '$[*].id') AS VARCHAR[]), "
        "(SELECT coalesce(list(id), []) FROM touched_users))"
    ).fetchall()
    if not affected:
        return int(managers), 0
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
    con.execute("CREATE OR REPLACE TEMP TABLE owner_fix (id VARCHAR, owners JSON)")
    con.executemany("INSERT INTO owner_fix VALUES (?, ?)", fixed)
    con.execute(
        "UPDATE raw.devices AS d SET registeredOwners = f.owners FROM owner_fix AS f "
        "WHERE d.id = f.id"
    )
    return int(managers), len(fixed)


# ---- group memberships -----------------------------------------------------------------------


@dataclass(frozen=True)
class MembersPlan:
    """How each filter group's rows of raw.group_members are kept this run."""

    relist: tuple[str, ...]  # listed again in full
    direct: tuple[str, ...]  # members@delta applied as it is (no nested groups involved)
    kept: tuple[str, ...]  # nothing changed under them


def plan_members(
    con: duckdb.DuckDBPyConnection,
    group_ids: Sequence[str],
    member_changes: Path | None,
    removed_groups: Sequence[str],
) -> MembersPlan:
    """Which filter groups must be listed again after a groups delta round (see the module
    docstring). `con` reads the tables as published (before this run's changes)."""
    listed = set()
    nested: dict[str, set[str]] = {}
    if _exists(con, "raw", "group_filters") and _exists(con, "raw", "group_members"):
        listed = {
            row[0]
            for row in con.execute("SELECT DISTINCT group_id FROM raw.group_filters").fetchall()
        }
        for group_id, member_id in con.execute(
            "SELECT group_id, member_id FROM raw.group_members WHERE member_type = 'group'"
        ).fetchall():
            nested.setdefault(group_id, set()).add(member_id)
    changes = _member_changes(member_changes)
    changed_groups = {g for g, _, _, _ in changes} | set(removed_groups)
    group_typed = {g for g, _, kind, _ in changes if kind == "group"}
    relist, direct, kept = [], [], []
    for group_id in dict.fromkeys(group_ids):
        below = {group_id} | nested.get(group_id, set())
        if group_id not in listed:
            relist.append(group_id)
        elif not below & changed_groups:
            kept.append(group_id)
        elif below == {group_id} and group_id not in group_typed:
            direct.append(group_id)
        else:
            relist.append(group_id)
    return MembersPlan(tuple(relist), tuple(direct), tuple(kept))


def _member_changes(path: Path | None) -> list[tuple[str, str, str | None, bool]]:
    if path is None or not path.exists():
        return []
    out = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            out.append((row["group_id"], row["member_id"], row.get("member_type"), row["removed"]))
    return out


def apply_members(
    con: duckdb.DuckDBPyConnection,
    plan: MembersPlan,
    group_ids: Sequence[str],
    member_changes: Path | None,
    relisted: Sequence[Path],
    tenant_id: str,
    extracted_at: datetime,
) -> int:
    """raw.group_members after a groups delta round: rows of groups no longer filtered and of
    objects removed go, `direct` groups take members@delta, `relist` groups their new listing."""
    table = "raw.group_members"
    con.execute(f"DELETE FROM {table} WHERE group_id NOT IN (SELECT unnest(?))", [list(group_ids)])
    con.execute(
        f"DELETE FROM {table} WHERE member_id IN (SELECT id FROM removed_objects UNION ALL "
        "SELECT id FROM removed_groups)"
    )
    if plan.direct and member_changes is not None:
        latest: dict[tuple[str, str], tuple[str | None, bool]] = {}
        for group_id, member_id, kind, removed in _member_changes(member_changes):
            if group_id in plan.direct:
                latest[(group_id, member_id)] = (kind, removed)
        gone = [(g, m) for (g, m), (_, removed) in latest.items() if removed]
        added = [(g, m, k) for (g, m), (k, removed) in latest.items() if not removed]
        if gone:
            con.executemany(f"DELETE FROM {table} WHERE group_id = ? AND member_id = ?", gone)
        if added:
            con.executemany(
                f"DELETE FROM {table} WHERE group_id = ? AND member_id = ?",
                [(g, m) for g, m, _ in added],
            )
            con.execute(
                "CREATE OR REPLACE TEMP TABLE member_adds (group_id VARCHAR, member_id VARCHAR, "
                "member_type VARCHAR)"
            )
            con.executemany("INSERT INTO member_adds VALUES (?, ?, ?)", added)
            con.execute(
                f"INSERT INTO {table} BY NAME SELECT ?::VARCHAR AS tenant_id, "
                "?::TIMESTAMPTZ AS extracted_at, * FROM member_adds",
                [tenant_id, extracted_at],
            )
    if plan.relist:
        con.execute(
            f"DELETE FROM {table} WHERE group_id IN (SELECT unnest(?))", [list(plan.relist)]
        )
        if relisted:
            con.execute(
                f"INSERT INTO {table} BY NAME SELECT ?::VARCHAR AS tenant_id, "
                "?::TIMESTAMPTZ AS extracted_at, * FROM read_json(?, "
                "format = 'newline_delimited', columns = {'group_id': 'VARCHAR', 'member_id': "
                "'VARCHAR', 'member_type': 'VARCHAR'})",
                [tenant_id, extracted_at, [str(p) for p in relisted]],
            )
    [(rows,)] = con.execute(f"SELECT count(*) FROM {table}").fetchall()
    return int(rows)


def _exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return bool(
        con.execute(
            "SELECT 1 FROM duckdb_tables() WHERE database_name = current_database() AND "
            "schema_name = ? AND table_name = ?",
            [schema, table],
        ).fetchall()
    )
