"""Delta queries: `/users/delta`, `/devices/delta`, `/groups/delta` with `@odata.deltaLink`.

A delta token remembers the tenant's change counter; the next round lists what changed after it,
removed objects as `{"id", "@removed": {"reason"}}`. Tokens are stateless like page tokens.
"""

from __future__ import annotations

import re
import time
from typing import Any, Protocol

from entra_pipeline.emulator.errors import GraphError, bad_request, unsupported_query
from entra_pipeline.emulator.query import (
    GraphContext,
    TokenCodec,
    next_link,
    parse_select,
    project,
)
from entra_pipeline.emulator.tenant import ODATA_TYPES, Tenant


class GraphResources(Protocol):
    """What a delta page needs of the Graph handlers (handlers.py): the tenant, the token codec
    and the URL its links start with."""

    tenant: Tenant
    codec: TokenCodec
    graph_url: str


DEFAULT_DELTA_PAGE = 100
# "For directory objects, the limit is seven days"; an expired token answers "a 40X-series error
# with error codes such as syncStateNotFound" (learn.microsoft.com/graph/delta-query-overview,
# "Token duration"): here the 410 resyncRequired below.
DELTA_TOKEN_SECONDS = 7 * 24 * 3600
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


# What Graph's delta accepts ("Use delta query to track changes in Microsoft Graph data",
# learn.microsoft.com/graph/delta-query-overview, "Optional query parameters"): on users and groups
# "$expand is not supported. $top is not supported. $orderby is not supported", and "scoping
# filters ... filtering only by object ID"; device delta supports $select and the same id filter
# (learn.microsoft.com/graph/api/device-delta). The user delta allows "a limit of 50 filtered
# objects" (learn.microsoft.com/graph/api/user-delta).
_UNSUPPORTED = {
    "user": ("expand", "top", "orderby", "search"),
    "group": ("expand", "top", "orderby", "search"),
    "device": ("expand", "orderby", "search"),
}
MAX_ID_FILTER = 50
_ID_TERM = re.compile(r"^\s*id\s+eq\s+'([0-9a-fA-F-]{36})'\s*$")


def id_filter(text: str | None) -> set[str] | None:
    """The object ids of a delta scoping filter (`id eq '...' or id eq '...'`), None without one;
    any other filter is refused as Graph refuses it."""
    if not text:
        return None
    ids: set[str] = set()
    for term in re.split(r"\s+or\s+", text.strip()):
        match = _ID_TERM.match(term)
        if match is None:
            raise unsupported_query(
                "Delta only supports filtering by object id: $filter=id eq '{id}' [or ...]."
            )
        ids.add(match.group(1).lower())
    if len(ids) > MAX_ID_FILTER:
        raise bad_request(f"A delta filter may name at most {MAX_ID_FILTER} objects.")
    return ids


def delta_page(resources: GraphResources, kind: str, ctx: GraphContext) -> dict[str, Any]:
    """One page of a delta round (the first round lists everything, later ones the changes)."""
    options = ctx.options
    for name in _UNSUPPORTED[kind]:
        if options.get(name):
            raise unsupported_query(f"Query option '${name}' is not supported with delta.")
    only = id_filter(options.get("filter"))
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
    base = f"{resources.graph_url}/v1.0"
    body: dict[str, Any] = {
        "@odata.context": f"{resources.graph_url}/v1.0/$metadata#{_COLLECTION[kind]}"
        f"({','.join(select)})"
    }

    delta_token = options.get("deltatoken")
    if delta_token and delta_token.lower() == "latest":
        # "Sync from now": "Append $deltaToken=latest to the delta function and the response will
        # contain a @odata.deltaLink and no resource data" - for resources stored in Microsoft
        # Entra ID, such as users and groups (learn.microsoft.com/graph/delta-query-overview).
        token = codec.encode(
            {"k": kind, "f": fingerprint, "v": tenant.version, "t": int(time.time())}
        )
        body["@odata.deltaLink"] = next_link(base, path, ctx.query, "$deltatoken", token)
        body["value"] = []
        return body
    state: dict[str, Any] = {"since": None, "upto": tenant.version, "p": 0}
    if delta_token:
        payload = codec.decode(delta_token, error=resync_required())
        if payload.get("f") != fingerprint or payload.get("k") != kind:
            raise bad_request("The delta token does not belong to this query.")
        if time.time() - payload.get("t", 0) > DELTA_TOKEN_SECONDS:
            raise resync_required()
        # A replay serves every change logged so far again, as well as the new ones.
        state = {"since": 0 if ctx.replay else payload["v"], "upto": tenant.version, "p": 0}
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
            if only is not None and obj["id"] not in only:
                continue
            items.append(_entry(resources, kind, index, obj, select, tracks_relationship, None))
    else:
        changes = tenant.changes_since(kind, since, upto)
        for position in range(start, len(changes)):
            if len(items) == page_size:
                next_position = position
                break
            index, reason = changes[position]
            if only is not None and _id_of(resources, kind, index) not in only:
                continue
            if reason is not None:
                items.append({"id": _id_of(resources, kind, index), "@removed": {"reason": reason}})
                continue
            changed = tenant.object_at(kind, index)
            if changed is not None:
                items.append(
                    _entry(resources, kind, index, changed, select, tracks_relationship, since)
                )

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
        elif since is not None and (previous := tenant.manager_before(index, since)) is not None:
            # A manager taken away comes as the old one with @removed, as a member removed from
            # a group does in members@delta: "Relationships on users and groups are represented
            # as annotations ... propertyName@delta" (learn.microsoft.com/graph/delta-query-
            # overview, "Resource representation in the delta query response").
            entry["manager@delta"] = [
                {
                    "@odata.type": ODATA_TYPES["user"],
                    "id": tenant.id_at("user", previous),
                    "@removed": {"reason": "deleted"},
                }
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
