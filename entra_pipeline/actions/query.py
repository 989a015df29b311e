"""`entra-pipeline query device NAME|ID` and `query user UPN|ID`: one record read live from Graph
(with the sync's read-only credential) beside its published row, each property marked when it
changed since the last sync."""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from entra_pipeline.actions.plans import ActionError
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.errors import GraphError
from entra_pipeline.graph.groups import odata_string
from entra_pipeline.vocabulary import is_guid

PROPERTIES = {
    "device": (
        "id", "displayName", "accountEnabled", "operatingSystem", "operatingSystemVersion",
        "trustType", "approximateLastSignInDateTime", "registrationDateTime",
    ),
    "user": (
        "id", "userPrincipalName", "displayName", "accountEnabled", "userType", "department",
        "jobTitle", "mail", "onPremisesSyncEnabled",
    ),
}  # fmt: skip


def live_record(graph: GraphClient, kind: str, key: str) -> dict[str, Any]:
    """The device (by object id or exact display name) or user (by object id or UPN), live."""
    select = {"$select": ",".join(PROPERTIES[kind])}
    try:
        if kind == "user" or is_guid(key):
            return graph.get_json(f"/{kind}s/{key}", select, label=f"{kind} query")
        found = graph.get_json(
            "/devices", {**select, "$filter": f"displayName eq {odata_string(key)}"},
            label="device query",
        )["value"]  # fmt: skip
    except GraphError as error:
        if error.status == 404:
            raise ActionError(f"no {kind} {key!r} in the tenant") from None
        raise
    if len(found) != 1:
        ids = ", ".join(d["id"] for d in found)
        raise ActionError(
            f"no device named {key!r} in the tenant"
            if not found
            else f"{len(found)} devices are named {key!r} ({ids}): query one by its id"
        )
    return dict(found[0])


def published_record(published: Path, kind: str, object_id: str) -> dict[str, Any] | None:
    if not published.exists():
        return None
    columns = ", ".join(f'"{name}"' for name in PROPERTIES[kind])
    with duckdb.connect(str(published), read_only=True) as con:
        found = con.execute(
            f"SELECT {columns} FROM staging.{kind}s WHERE id = ?", [object_id]
        ).fetchall()
        names = [d[0] for d in con.description or []]
    return dict(zip(names, found[0], strict=True)) if found else None


def side_by_side(live: dict[str, Any], published: dict[str, Any] | None, kind: str) -> list[str]:
    """One line per property: published, live, `*` where they differ."""
    if published is None:
        return ["  not in the published tables (new since the last sync)"] + [
            f"  {name:<30} {_text(live.get(name))}" for name in PROPERTIES[kind]
        ]
    lines = [f"  {'property':<30} {'published':<28} {'live':<28}"]
    for name in PROPERTIES[kind]:
        before, now = published.get(name), live.get(name)
        mark = "" if name not in published or _same(before, now) else "  * changed"
        lines.append(f"  {name:<30} {_text(before):<28} {_text(now):<28}{mark}")
    return lines


def _same(published: Any, live: Any) -> bool:
    if isinstance(published, datetime) and isinstance(live, str):
        with contextlib.suppress(ValueError):
            return published == datetime.fromisoformat(live)
    return bool(published == live)


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
