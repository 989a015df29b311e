"""Incremental sync shared by the two sources (docs/incremental.md): `ops.delta_state`, whether a
run follows a stored delta link or reads a collection in full, and a delta round's changes applied
to a landed table (`raw.*` for the connector, `mdm_extract.*` for the user source).

`plan_links` decides, per collection, between its stored delta link and a full round (no link
yet, `sync.mode: full`, the `full_resync_days` backstop, a full sync asked for, or a link for
another Graph or other properties). The `apply_*` functions run inside the caller's transaction:
a round's changes upsert by id (the last entry of an id wins, so a replayed change is harmless)
and `@removed` deletes. Group memberships are kept by `plan_members`: a group whose members (at
any depth) did not change keeps its rows, a flat one applies `members@delta` directly, and one
with nested groups that changed is listed again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb

from entra_pipeline.graph.collections import DEVICES, GROUPS, USERS, Collection
from entra_pipeline.graph.delta import TRACKED, DeltaResyncRequired, Tracked, remember_link
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.warehouse.docs import TENANT_ID_DOC, document_table
from entra_pipeline.warehouse.loading import PROVENANCE_COLUMNS
from entra_pipeline.warehouse.resource import Warehouse
from entra_pipeline.warehouse.sql import literal, quoted, table_exists

logger = logging.getLogger(__name__)

# Why a collection's first round is full: expected, so not notified.
FIRST_ROUND = "no delta state yet (first incremental run)"

DELTA_STATE = "ops.delta_state"
# A run tagged with this (value "true") lists every collection in full: `entra-pipeline sync
# --full`, or the tag added in the Dagster launchpad.
FULL_SYNC_TAG = "entra_pipeline/full_sync"
DELTA_STATE_DESCRIPTION = (
    "Per tenant and collection: the delta link of its next round and when it was last read in "
    "full (docs/incremental.md). The link is credential-free but grants a round of the tenant's "
    "changes."
)
DELTA_STATE_DOCS = {
    "tenant_id": TENANT_ID_DOC,
    "collection": "users, devices, groups (delta rounds) or sign_in_activity (filtered passes); "
    "the user source's mdm_extract.directory_users, mdm_extract.groups, mdm_extract.device_ids.",
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


def read_state(con: duckdb.DuckDBPyConnection, tenant_id: str) -> dict[str, State]:
    """The stored delta state of `tenant_id` (empty before the first incremental run)."""
    if not table_exists(con, DELTA_STATE):
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


def plan_links(
    con: duckdb.DuckDBPyConnection,
    settings: ConnectorSettings,
    state: Mapping[str, State],
    now: datetime,
    *,
    full_requested: bool,
    tracked: Mapping[str, tuple[Tracked, str | None]],
) -> tuple[dict[str, str | None], dict[str, str]]:
    """Per state key of `tracked` (its delta query, and the table its link keeps current, which
    must exist): the stored link to follow, or None and why a full round."""
    backstop = timedelta(days=settings.sync.full_resync_days)
    links: dict[str, str | None] = {}
    reasons: dict[str, str] = {}
    for key, (query, table) in tracked.items():
        row = state.get(key)
        reason = full_reason(con, table, row, now, backstop, full_requested) or _link_problem(
            row, settings.graph_url, query.select
        )
        links[key] = None if reason else row.delta_link if row else None
        if reason:
            reasons[key] = reason
    return links, reasons


def full_reason(
    con: duckdb.DuckDBPyConnection,
    table: str | None,
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
        return FIRST_ROUND
    if table is not None and not table_exists(con, table):
        return f"{table} is missing"
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
    *,
    selected: Mapping[str, str] | None = None,
) -> int:
    """Store, per collection, (the next delta link, whether this run read it in full), and the
    `$select` each link tracks (by default the connector's, TRACKED)."""
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
        select = (selected or {}).get(collection) or (tracked.select if tracked else None)
        con.execute(
            f"INSERT INTO {DELTA_STATE} VALUES (?, ?, ?, ?, ?, ?)",
            [tenant_id, collection, link, started_at, last_full, select],
        )
    document_table(con, DELTA_STATE, DELTA_STATE_DESCRIPTION, DELTA_STATE_DOCS)
    [(count,)] = con.execute(f"SELECT count(*) FROM {DELTA_STATE}").fetchall()
    return int(count)


USER_TYPE = "#microsoft.graph.user"


def apply_round(
    con: duckdb.DuckDBPyConnection,
    collection: Collection,
    changes: Path,
    tenant_id: str,
    extracted_at: datetime,
    *,
    owners: Path | None = None,
    schema: str = "raw",
) -> tuple[int, int]:
    """Upsert and delete what a delta file says in `<schema>.<table>`; (rows, removed ids)."""
    table = f"{quoted(schema)}.{quoted(collection.table)}"
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
    extra, joins = _references(collection, table, owners)
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
    if collection.path == GROUPS.path:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE removed_groups AS SELECT id FROM delta_changes "
            "WHERE coalesce(_removed, false)"
        )
    if collection.path in (USERS.path, DEVICES.path):
        con.execute(
            f"INSERT INTO removed_objects SELECT id, {literal(collection.table)} FROM "
            "delta_changes WHERE coalesce(_removed, false)"
        )
    [(rows,)] = con.execute(f"SELECT count(*) FROM {table}").fetchall()
    return int(rows), int(removed)


def _references(collection: Collection, table: str, owners: Path | None) -> tuple[str, str]:
    """(The columns, the joins) that carry what a delta row does not: a user's manager as the
    round says it (kept when unchanged), a device's owners as read again (`owners`, bound as the
    last parameter)."""
    if collection is USERS:
        extra = (
            ", CASE WHEN d._manager IS NULL THEN old.manager WHEN d._manager = '' THEN NULL "
            f"ELSE json_object('@odata.type', {literal(USER_TYPE)}, 'id', d._manager) END "
            "AS manager"
        )
        return extra, f"LEFT JOIN {table} AS old ON old.id = d.id"
    if collection is DEVICES:
        assert owners is not None
        return ", o.registeredOwners::JSON AS registeredOwners", (
            "LEFT JOIN read_json(?, format = 'newline_delimited', columns = "
            "{'device_id': 'VARCHAR', 'registeredOwners': 'JSON'}) AS o ON o.device_id = d.id"
        )
    return "", ""


def start_removed_objects(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE OR REPLACE TEMP TABLE removed_objects (id VARCHAR, kind VARCHAR)")
    con.execute("CREATE OR REPLACE TEMP TABLE removed_groups (id VARCHAR)")


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
    *,
    schema: str = "raw",
    listed: Iterable[str] | None = None,
) -> MembersPlan:
    """Which of `group_ids` must be listed again after a groups delta round (see the module
    docstring). `con` reads the tables as published (before this run's changes); `listed` are the
    groups whose members `<schema>.group_members` holds (by default raw.group_filters' groups)."""
    known: set[str] = set()
    nested: dict[str, set[str]] = {}
    if table_exists(con, f"{schema}.group_members"):
        if listed is not None:
            known = set(listed)
        elif table_exists(con, f"{schema}.group_filters"):
            known = {
                row[0]
                for row in con.execute(
                    f"SELECT DISTINCT group_id FROM {quoted(schema)}.group_filters"
                ).fetchall()
            }
        for group_id, member_id in con.execute(
            f"SELECT group_id, member_id FROM {quoted(schema)}.group_members "
            "WHERE member_type = 'group'"
        ).fetchall():
            nested.setdefault(group_id, set()).add(member_id)
    changes = _member_changes(member_changes)
    changed_groups = {g for g, _, _, _ in changes} | set(removed_groups)
    group_typed = {g for g, _, kind, _ in changes if kind == "group"}
    relist, direct, kept = [], [], []
    for group_id in dict.fromkeys(group_ids):
        below = {group_id} | nested.get(group_id, set())
        if group_id not in known:
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
    *,
    schema: str = "raw",
) -> int:
    """<schema>.group_members after a groups delta round: rows of groups no longer listed and of
    objects removed go, `direct` groups take members@delta, `relist` groups their new listing."""
    table = f"{quoted(schema)}.group_members"
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


def notify_resyncs(
    warehouse: Warehouse, refused: Mapping[str, DeltaResyncRequired], reasons: Mapping[str, str]
) -> None:
    """A full round that replaces a delta round is an info notification `delta_resync`:
    per collection whose link Graph `refused`, and per collection read in full for a reason
    (`plan_links`; the first round is expected and not notified)."""
    for collection, error in refused.items():
        warehouse.notify(
            "delta_resync",
            "info",
            f"{collection}: Graph refused the stored delta link ({error.status} {error.code}); "
            "the collection was read in full and tracking starts again.",
            {"collection": collection, "graph_status": error.status, "graph_code": error.code},
        )
    for collection, reason in reasons.items():
        if reason != FIRST_ROUND:
            warehouse.notify(
                "delta_resync",
                "info",
                f"{collection}: read in full because {reason}.",
                {"collection": collection, "reason": reason},
            )
