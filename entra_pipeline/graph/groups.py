"""The group filters of the connector's options (object ids or exact display names) resolved
to object ids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.errors import GraphRequestError, GroupNotFoundError
from entra_pipeline.vocabulary import is_guid

logger = logging.getLogger(__name__)


def resolve_groups(client: GraphClient, refs: Iterable[str]) -> dict[str, str]:
    """Map each configured group (object id or exact display name) to its object id.

    Raises `GroupNotFoundError` naming every group that does not exist, or whose name is shared.
    """
    resolved: dict[str, str] = {}
    missing: list[str] = []
    ambiguous: dict[str, list[str]] = {}
    for ref in dict.fromkeys(refs):
        if is_guid(ref):
            try:
                group = client.get_json(
                    f"/groups/{ref}", {"$select": "id,displayName"}, label="group_resolution"
                )
            except GraphRequestError as error:
                if error.status != 404:
                    raise
            else:
                resolved[ref] = group["id"]
                continue
        # Not an id of an existing group: a display name (a group may be named like a GUID).
        params = {"$filter": f"displayName eq {odata_string(ref)}", "$select": "id,displayName"}
        ids = [
            row["id"]
            for page in client.iter_pages("/groups", params, label="group_resolution")
            for row in page
        ]
        if len(ids) == 1:
            resolved[ref] = ids[0]
        elif ids:
            ambiguous[ref] = ids
        else:
            missing.append(ref)
    if missing or ambiguous:
        raise GroupNotFoundError(_group_problem(missing, ambiguous), missing + list(ambiguous))
    return resolved


def odata_string(value: str) -> str:
    """An OData string literal: single-quoted, a quote inside doubled (`O'Brien` -> `'O''Brien'`)."""
    return "'" + value.replace("'", "''") + "'"


def _group_problem(missing: list[str], ambiguous: dict[str, list[str]]) -> str:
    problems = []
    if missing:
        names = ", ".join(repr(m) for m in missing)
        problems.append(f"no group has the object id or exact display name {names}")
    for ref, ids in ambiguous.items():
        problems.append(f"{len(ids)} groups are named {ref!r} ({', '.join(ids)})")
    return (
        "Groups in devices.groups / users.groups could not be resolved: "
        + "; ".join(problems)
        + ". Use the group's object id, or its display name exactly as Entra shows it."
    )
