"""Delta queries: `/users/delta`, `/devices/delta`, `/groups/delta` with `@odata.deltaLink`.

A delta token remembers the tenant's change counter; the next round lists what changed after it,
removed objects as `{"id", "@removed": {"reason"}}`. Tokens are stateless like page tokens.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from entra_pipeline.emulator.errors import GraphError, bad_request, unsupported_query
from entra_pipeline.emulator.query import next_link, parse_select, project
from entra_pipeline.emulator.tenant import ODATA_TYPES

if TYPE_CHECKING:
    from entra_pipeline.emulator.handlers import GraphContext, GraphResources

DEFAULT_DELTA_PAGE = 100
_RELATIONSHIP = {"user": "manager", "group": "members"}
_COLLECTION = {"user": "users", "device": "devices", "group": "groups"}


def resync_required() -> GraphError:
    # 410 Gone with resyncRequired for a delta token the service no longer holds
    # (learn.microsoft.com/graph/errors lists resyncRequired; microsoft-graph-docs#2350 shows
    # the 410 and its twin SyncStateNotFound, which the connector treats alike).
    return GraphError(
        410,
        "resyncRequired",
        "Resync required. Replace any local items with the server's version (including "
        "deletes) if you're sure that the service was up to date with your local changes when "
        "you last sync'd. Upload any local changes that the server doesn't know about.",
    )


def delta_page(resources: GraphResources, kind: str, ctx: GraphContext) -> dict[str, Any]:
    """One page of a delta round (the first round lists everything, later ones the changes)."""
    options = ctx.options
    for name in ("expand", "orderby", "filter", "search"):
        if options.get(name):
            raise unsupported_query(f"Query option '${name}' is not supported with delta.")
    relationship = _RELATIONSHIP.get(kind)
    select_text = options.get("select")
    tracks_relationship = False
    if select_text and relationship:
        names = [s.strip() for s in select_text.split(",")]
        tracks_relationship = any(n.lower() == relationship.lower() for n in names)
        select_text = ",".join(n for n in names if n.lower() != relationship.lower()) or "id"
    select = parse_select(select_text, kind)
    if "signInActivity" in select:
        raise unsupported_query("signInActivity is not supported in delta queries.")
    page_size = options.top(ctx.max_page_size or DEFAULT_DELTA_PAGE)
    path = f"/{_COLLECTION[kind]}/delta"
    fingerprint = options.fingerprint(path)
    tenant = resources.tenant
    codec = resources.codec

    state: dict[str, Any] = {"since": None, "upto": tenant.version, "p": 0}
    if options.get("deltatoken"):
        payload = codec.decode(options.get("deltatoken") or "", error=resync_required())
        if payload.get("f") != fingerprint or payload.get("k") != kind:
            raise bad_request("The delta token does not belong to this query.")
        state = {"since": payload["v"], "upto": tenant.version, "p": 0}
    elif options.get("skiptoken"):
        payload = codec.decode(
            options.get("skiptoken") or "", error=bad_request("Invalid page token.")
        )
        if payload.get("f") != fingerprint or payload.get("k") != kind:
            raise bad_request("The page token does not belong to this query.")
        state = {"since": payload.get("s"), "upto": payload["u"], "p": payload["p"]}

    since, upto, start = state["since"], state["upto"], state["p"]
    items: list[dict[str, Any]] = []
    next_position: int | None = None
    if since is None:
        # First round: every object, by scan position.
        for index, obj in tenant.scan(kind, start):
            if len(items) == page_size:
                next_position = index
                break
            items.append(_entry(resources, kind, index, obj, select, tracks_relationship, None))
    else:
        changes = tenant.changes_since(kind, since, upto)
        for position in range(start, len(changes)):
            if len(items) == page_size:
                next_position = position
                break
            index, reason = changes[position]
            if reason is not None:
                items.append({"id": _id_of(resources, kind, index), "@removed": {"reason": reason}})
                continue
            changed = tenant.object_at(kind, index)
            if changed is not None:
                items.append(
                    _entry(resources, kind, index, changed, select, tracks_relationship, since)
                )

    body: dict[str, Any] = {
        "@odata.context": f"{resources.graph_url}/v1.0/$metadata#{_COLLECTION[kind]}"
        f"({','.join(select)})"
    }
    base = f"{resources.graph_url}/v1.0"
    if next_position is not None:
        token = codec.encode(
            {"k": kind, "f": fingerprint, "s": since, "u": upto, "p": next_position}
        )
        body["@odata.nextLink"] = next_link(base, path, ctx.query, "$skiptoken", token)
    else:
        token = codec.encode({"k": kind, "f": fingerprint, "v": upto, "t": int(time.time())})
        body["@odata.deltaLink"] = next_link(base, path, ctx.query, "$deltatoken", token)
    body["value"] = items
    return body


def _id_of(resources: GraphResources, kind: str, index: int) -> str:
    return resources.tenant.id_at(kind, index)


def _entry(
    resources: GraphResources,
    kind: str,
    index: int,
    obj: dict[str, Any],
    select: list[str],
    tracks_relationship: bool,
    since: int | None,
) -> dict[str, Any]:
    entry = project(obj, select)
    if not tracks_relationship:
        return entry
    tenant = resources.tenant
    if kind == "user":
        manager = tenant.manager_index(index)
        if manager is not None:
            entry["manager@delta"] = [
                {"@odata.type": ODATA_TYPES["user"], "id": tenant.id_at("user", manager)}
            ]
        return entry
    if since is None:
        members = [
            {"@odata.type": ODATA_TYPES[k], "id": tenant.id_at(k, i)}
            for _, k, i in tenant.member_scan(index, transitive=False)
        ]
    else:
        members = []
        for member_kind, member_index, added in tenant.membership_changes_since(index, since):
            member: dict[str, Any] = {
                "@odata.type": ODATA_TYPES[member_kind],
                "id": tenant.id_at(member_kind, member_index),
            }
            if not added:
                member["@removed"] = {"reason": "deleted"}
            members.append(member)
    if members:
        entry["members@delta"] = members
    return entry
