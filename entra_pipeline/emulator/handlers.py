"""Graph v1.0 resources: users, devices, groups, members, subscribedSkus, manager and owners.

Each handler checks permissions, parses the OData options and pages through the tenant by scan
position, so any page can be served from its token alone.
"""

from __future__ import annotations

import bisect
import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from entra_pipeline.emulator import errors
from entra_pipeline.emulator.delta import delta_page
from entra_pipeline.emulator.errors import GraphError, bad_request, unsupported_query
from entra_pipeline.emulator.filters import ParsedFilter, parse_filter
from entra_pipeline.emulator.query import (
    EXPAND_PAGE_CAP,
    SIGN_IN_PAGE_CAP,
    Expand,
    GraphContext,
    TokenCodec,
    next_link,
    parse_expand,
    parse_select,
    project,
    type_name,
)
from entra_pipeline.emulator.schema import DEFAULT_SELECT, PROPERTIES
from entra_pipeline.emulator.tenant import KINDS, ODATA_TYPES, Tenant

DEFAULT_PAGE = 100
EXPANDED_MEMBERS_CAP = 20  # Graph returns at most 20 objects of an expanded member collection
COLLECTIONS = {"users": "user", "devices": "device", "groups": "group"}
# Graph accepts a cast with its namespace or with the `graph.` alias the SDKs send.
CASTS = {
    f"{namespace}.{kind}": kind
    for kind in ("user", "device", "group")
    for namespace in ("microsoft.graph", "graph")
}

# Application permissions that grant each kind of read (any one of them is enough).
READ_USERS = (
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
)
READ_DEVICES = (
    "Device.Read.All",
    "Device.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
)
READ_GROUPS = (
    "Group.Read.All",
    "GroupMember.Read.All",
    "Group.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
)
READ_MEMBERS = READ_GROUPS
READ_SKUS = (
    "LicenseAssignment.Read.All",
    "Organization.Read.All",
    "Directory.Read.All",
    "Organization.ReadWrite.All",
)
READ_AUDIT = ("AuditLog.Read.All",)
READ_ROLES = (
    "RoleManagement.Read.Directory",
    "Directory.Read.All",
    "RoleManagement.ReadWrite.Directory",
)
READ_FOR_KIND = {"user": READ_USERS, "device": READ_DEVICES, "group": READ_GROUPS}
# What the main app registration is granted by default: every read permission, no write (the
# sync app reads; writes need an app of their own, writes.py).
ALL_PERMISSIONS = frozenset(
    p for p in {*READ_USERS, *READ_DEVICES, *READ_GROUPS, *READ_SKUS, *READ_AUDIT}
    if "ReadWrite" not in p
)  # fmt: skip


class GraphResources:
    """The Graph v1.0 handlers over one tenant. `permissions` and `premium` may change any time."""

    def __init__(
        self,
        *,
        tenant: Tenant,
        graph_url: str,
        codec: TokenCodec,
        permissions: set[str] | None,
        premium: bool,
        sign_in_throttle: Callable[[], int | None],
    ) -> None:
        self.tenant = tenant
        self.graph_url = graph_url
        self.codec = codec
        self.permissions = permissions
        self.premium = premium
        self._sign_in_throttle = sign_in_throttle
        self._range_cache: dict[tuple[Any, ...], list[int]] = {}
        self._range_lock = threading.Lock()
        self._acting = threading.local()  # another app registration's permissions, per request

    # ---- permissions ------------------------------------------------------------------------

    def granted(self, alternatives: tuple[str, ...]) -> bool:
        granted = getattr(self._acting, "permissions", None)
        if granted is None:
            granted = ALL_PERMISSIONS if self.permissions is None else self.permissions
        return any(p in granted for p in alternatives)

    @contextlib.contextmanager
    def acting_as(self, permissions: frozenset[str] | None) -> Iterator[None]:
        """Check this thread's requests against `permissions` (another app registration's; None:
        the main app's `permissions`)."""
        self._acting.permissions = permissions
        try:
            yield
        finally:
            self._acting.permissions = None

    def require(self, alternatives: tuple[str, ...]) -> None:
        if not self.granted(alternatives):
            raise errors.insufficient_privileges()

    def _check_sign_in_activity(self) -> None:
        if not self.granted(READ_AUDIT):
            raise errors.sign_in_permission_missing()
        if not self.premium:
            raise errors.non_premium_tenant()
        wait = self._sign_in_throttle()
        if wait is not None:
            raise errors.too_many_requests(wait)

    # ---- routing ----------------------------------------------------------------------------
    # Unknown path segments answer Graph's 400 "Resource not found for the segment '<name>'."
    # (microsoftgraph/msgraph-beta-sdk-python#764); a user without a manager answers 404
    # Request_ResourceNotFound naming 'manager' (microsoft-graph-docs-contrib#6431's shape).

    def get(self, segments: list[str], ctx: GraphContext) -> dict[str, Any]:
        """Answer GET /v1.0/<segments>; raises GraphError for every error answer."""
        head, rest = segments[0], segments[1:]
        if head == "subscribedSkus":
            return self._subscribed_skus(rest, ctx)
        if head == "directoryRoles" and not rest:
            return self._directory_roles(ctx)
        kind = COLLECTIONS.get(head)
        if kind is None:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{head}'.")
        self.require(READ_FOR_KIND[kind])
        if not rest:
            return self._list(kind, ctx)
        if rest == ["delta"]:
            return delta_page(self, kind, ctx)
        found = self._find(kind, rest[0])
        if len(rest) == 1:
            return self._single(kind, found, ctx)
        relation, cast = rest[1], rest[2] if len(rest) > 2 else None
        if len(rest) > 3:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{rest[3]}'.")
        if kind == "user" and relation == "manager" and cast is None:
            return self._manager(found, ctx)
        if kind == "device" and relation == "registeredOwners":
            return self._owners(found, cast, ctx)
        if kind == "group" and relation in ("members", "transitiveMembers"):
            return self._members(found, relation, cast, ctx)
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{relation}'.")

    def _directory_roles(self, ctx: GraphContext) -> dict[str, Any]:
        """GET /directoryRoles (the activated roles) with `$expand=members`: RoleManagement.Read.
        Directory, or Directory.Read.All (learn.microsoft.com/graph/api/directoryrole-list). The
        tenant's role holders hold Global Administrator (its roleTemplateId is Entra's)."""
        self.require(READ_ROLES)
        role: dict[str, Any] = {
            "id": "b9e5a3c8-7a0c-4f1e-8d2b-6c1a0e9f7d31",
            "displayName": "Global Administrator",
            "roleTemplateId": "62e90394-69f5-4237-9190-012177145e10",
        }
        if "members" in (ctx.options.get("expand") or ""):
            role["members"] = [
                {"@odata.type": "#microsoft.graph.user", "id": object_id}
                for object_id in sorted(self.tenant.role_holders)
            ]
        return {
            "@odata.context": f"{self.graph_url}/v1.0/$metadata#directoryRoles",
            "value": [role],
        }

    def _find(self, kind: str, key: str) -> int:
        found = self.tenant.locate(key)
        if found is None and kind == "user" and "@" in key:
            found = self.tenant.locate_user_by_upn(key)
        if found is None or found[0] != kind:
            raise errors.not_found(key)
        return found[1]

    # ---- lists ------------------------------------------------------------------------------

    def _list(self, kind: str, ctx: GraphContext) -> dict[str, Any]:
        options = ctx.options
        if options.get("orderby") or options.get("search") or options.get("skip"):
            name = next(n for n in ("orderby", "search", "skip") if options.get(n))
            raise unsupported_query(f"Query option '${name}' is not supported by this emulator.")
        select = parse_select(options.get("select"), kind)
        expand = parse_expand(options.get("expand"), _EXPANDABLE[kind])
        parsed = self._filter(kind, options.get("filter"))
        self._check_advanced(parsed, ctx)
        if "signInActivity" in select or (parsed and "signInActivity" in parsed.properties):
            self._check_sign_in_activity()
        page_size = options.top(ctx.max_page_size or DEFAULT_PAGE)
        if expand is not None:
            page_size = min(page_size, EXPAND_PAGE_CAP)
        if "signInActivity" in select:
            page_size = min(page_size, SIGN_IN_PAGE_CAP)
        predicate = parsed.predicate if parsed else None
        path = f"/{_COLLECTION_OF[kind]}"
        start = self._start(ctx, path)
        needed = frozenset(select) | (parsed.properties if parsed else frozenset())
        candidates = self._range_candidates(kind, options.get("filter"))
        if candidates is not None:
            # A range filter reads the tenant's sorted keys; positions are offsets into the
            # candidates, and the predicate still decides (same answer as a scan).
            objects = (
                (offset, obj)
                for offset in range(start, len(candidates))
                if (obj := self.tenant.object_at(kind, candidates[offset], needed)) is not None
                and (predicate is None or predicate(obj))
            )
        else:
            objects = (
                (pos, obj)
                for pos, obj in self.tenant.scan(kind, start, properties=needed)
                if predicate is None or predicate(obj)
            )
        page, next_position = _take(objects, page_size)
        value = [self._shape(kind, obj, select, expand) for obj in page]
        explicit = select if options.get("select") else None
        body: dict[str, Any] = {"@odata.context": self._context(path, explicit, expand)}
        if start == 0 and self._counting(ctx):
            body["@odata.count"] = (
                len(candidates) if candidates is not None else self._count(kind, predicate)
            )
        if next_position is not None:
            body["@odata.nextLink"] = self._next_link(path, ctx, next_position)
        body["value"] = value
        return body

    def _range_candidates(self, kind: str, text: str | None) -> list[int] | None:
        """The slots a range filter on an ordered key can match (`key ge 'a'`, `key le 'b'`,
        or both joined by `and`), from the tenant's sorted keys, in slot order (Graph does not
        sort a filtered listing by the filtered key); None for any other filter."""
        if text is None:
            return None

        def build() -> list[int] | None:
            found = self._range_slots(kind, text)
            return None if found is None else sorted(found)

        return self._cached((kind, text, self.tenant.version), build)

    def _cached(
        self, key: tuple[Any, ...], build: Callable[[], list[int] | None]
    ) -> list[int] | None:
        """A candidate list kept between a partition's pages (the oldest dropped past
        _RANGE_CACHE_SIZE); `build` makes it on a miss, None when the filter is not a range."""
        with self._range_lock:
            cached = self._range_cache.get(key)
        if cached is not None:
            return cached
        found = build()
        if found is not None:
            with self._range_lock:
                if len(self._range_cache) >= _RANGE_CACHE_SIZE:
                    self._range_cache.pop(next(iter(self._range_cache)))
                self._range_cache[key] = found
        return found

    def prepare_indexes(self) -> None:
        """Build now, not at the first request that needs them, the sorted keys range filters
        read and every group's transitive member slots (before worker processes are forked, so
        that they share one copy instead of each building its own)."""
        for kind, prop in _RANGE_KEYS.items():
            self.tenant.key_order(kind, prop)
        for group in range(self.tenant.total("group")):
            for kind in KINDS:
                self.tenant.member_slots(group, kind, transitive=True)

    def _range_slots(self, kind: str, text: str) -> list[int] | None:
        unset = _UNSET_FILTER.match(text or "")
        if unset is not None and unset["prop"] == _RANGE_KEYS.get(kind):
            return self.tenant.key_order(kind, unset["prop"])[2]
        match = _RANGE_FILTER.match(text or "")
        if match is None or match["prop"] != _RANGE_KEYS.get(kind):
            return None
        if match["prop2"] is not None and match["prop2"] != match["prop"]:
            return None
        bounds = {match["op"]: match["value"]}
        if match["op2"] is not None:
            if match["op2"] in bounds:  # `ge 'a' and ge 'b'`: not a range; the scan decides
                return None
            bounds[match["op2"]] = match["value2"]
        keys, slots, _ = self.tenant.key_order(kind, match["prop"])
        low = bounds.get("ge")
        high = bounds.get("le")
        first = (
            bisect.bisect_left(keys, low.replace("''", "'").casefold()) if low is not None else 0
        )
        last = (
            bisect.bisect_right(keys, high.replace("''", "'").casefold())
            if high is not None
            else len(keys)
        )
        return slots[first:last]

    def _filter(self, kind: str, text: str | None) -> ParsedFilter | None:
        if text is None or not text.strip():
            return None
        return parse_filter(text, frozenset(PROPERTIES[kind]), type_name(kind))

    def _counting(self, ctx: GraphContext) -> bool:
        # `$count=true` without ConsistencyLevel: eventual is silently ignored, as on Graph.
        return ctx.options.count_requested() and ctx.eventual

    def _check_advanced(self, parsed: ParsedFilter | None, ctx: GraphContext) -> None:
        if parsed is None or not parsed.advanced or self._counting(ctx):
            return
        construct = sorted(parsed.advanced)[0]
        operator = {
            "ne": "NotEqualsMatch",
            "not": "Not",
            "endswith": "EndsWith",
            "$count": "Count",
            "eq null": "EqualsMatch with null",
            "ne null": "NotEqualsMatch",
        }[construct]
        raise unsupported_query(f"Unsupported property filter clause operator '{operator}'.")

    def _count(self, kind: str, predicate: Callable[[dict[str, Any]], bool] | None) -> int:
        if predicate is None:
            return self.tenant.count(kind)
        return sum(1 for _, obj in self.tenant.scan(kind) if predicate(obj))

    def _start(self, ctx: GraphContext, path: str) -> int:
        token = ctx.options.get("skiptoken")
        if token is None:
            return 0
        payload = self.codec.decode(token, error=bad_request("Invalid page token."))
        if payload.get("f") != ctx.options.fingerprint(path):
            raise bad_request("The page token does not belong to this query.")
        return int(payload["p"])

    def _next_link(self, path: str, ctx: GraphContext, position: int) -> str:
        token = self.codec.encode(
            {"p": position, "f": ctx.options.fingerprint(path), "t": int(time.time())}
        )
        return next_link(f"{self.graph_url}/v1.0", path, ctx.query, "$skiptoken", token)

    def _context(self, path: str, select: list[str] | None, expand: Expand | None) -> str:
        entity = path.strip("/").split("/")[0]
        if select is None:
            return f"{self.graph_url}/v1.0/$metadata#{entity}"
        fields = list(select)
        if expand is not None:
            inner = f"({','.join(expand.select)})" if expand.select else "()"
            fields.append(f"{expand.name}{inner}")
        return f"{self.graph_url}/v1.0/$metadata#{entity}({','.join(fields)})"

    # ---- shaping one object -----------------------------------------------------------------

    def _shape(
        self, kind: str, obj: dict[str, Any], select: list[str], expand: Expand | None
    ) -> dict[str, Any]:
        out = project(obj, select)
        if expand is None:
            return out
        if expand.name == "manager":
            found = self.tenant.locate(obj["id"])
            manager = self.tenant.manager_index(found[1]) if found else None
            if manager is not None:
                target = self.tenant.object_at("user", manager, _hint("user", expand.select))
                if target is not None:
                    out["manager"] = self._member_view("user", target, expand.select)
        elif expand.name == "registeredOwners":
            found = self.tenant.locate(obj["id"])
            owners = self.tenant.owner_indexes(found[1]) if found else ()
            hint = _hint("user", expand.select)
            out["registeredOwners"] = [
                self._member_view(
                    "user", self.tenant.object_at("user", i, hint) or {}, expand.select
                )
                for i in owners
            ]
        elif expand.name == "members":
            found = self.tenant.locate(obj["id"])
            members = []
            if found is not None:
                for _, member_kind, index in self.tenant.member_scan(found[1], transitive=False):
                    hint = _hint(member_kind, expand.select)
                    member = self.tenant.object_at(member_kind, index, hint) or {}
                    members.append(self._member_view(member_kind, member, expand.select))
                    if len(members) >= EXPANDED_MEMBERS_CAP:
                        break
            out["members"] = members
        return out

    def _member_view(
        self, kind: str, obj: dict[str, Any], select: list[str] | None
    ) -> dict[str, Any]:
        """A directory object inside a mixed collection: `@odata.type` first; only `id` when the
        app may not read that kind of object."""
        view: dict[str, Any] = {"@odata.type": ODATA_TYPES[kind]}
        if not self.granted(READ_FOR_KIND[kind]):
            view["id"] = obj.get("id")
            return view
        known = PROPERTIES[kind]
        props = select or list(DEFAULT_SELECT[kind])
        wanted = [p for p in props if p in known or p.startswith("extension_")]
        if "id" not in wanted:
            wanted.insert(0, "id")
        view.update(project(obj, wanted))
        return view

    # ---- single objects and relationships ---------------------------------------------------

    def _single(self, kind: str, index: int, ctx: GraphContext) -> dict[str, Any]:
        select = parse_select(ctx.options.get("select"), kind)
        expand = parse_expand(ctx.options.get("expand"), _EXPANDABLE[kind])
        if "signInActivity" in select:
            self._check_sign_in_activity()
        obj = self.tenant.object_at(kind, index)
        if obj is None:
            raise errors.not_found(str(index))
        path = f"/{_COLLECTION_OF[kind]}"
        context = self._context(path, select if ctx.options.get("select") else None, expand)
        return {"@odata.context": f"{context}/$entity", **self._shape(kind, obj, select, expand)}

    def _manager(self, user_index: int, ctx: GraphContext) -> dict[str, Any]:
        manager = self.tenant.manager_index(user_index)
        if manager is None:
            raise GraphError(
                404,
                "Request_ResourceNotFound",
                "Resource 'manager' does not exist or one of its queried reference-property "
                "objects are not present.",
            )
        select = _member_select(ctx.options.get("select"))
        obj = self.tenant.object_at("user", manager, _hint("user", select)) or {}
        return {
            "@odata.context": f"{self.graph_url}/v1.0/$metadata#directoryObjects/$entity",
            **self._member_view("user", obj, select),
        }

    def _owners(self, device_index: int, cast: str | None, ctx: GraphContext) -> dict[str, Any]:
        if cast is not None and CASTS.get(cast) != "user":
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{cast}'.")
        select = _member_select(ctx.options.get("select"))
        owners = [
            self._member_view(
                "user", self.tenant.object_at("user", i, _hint("user", select)) or {}, select
            )
            for i in self.tenant.owner_indexes(device_index)
        ]
        entity = "users" if cast else "directoryObjects"
        return {"@odata.context": f"{self.graph_url}/v1.0/$metadata#{entity}", "value": owners}

    def _members(
        self, group_index: int, relation: str, cast: str | None, ctx: GraphContext
    ) -> dict[str, Any]:
        self.require(READ_MEMBERS)
        kinds: tuple[str, ...] = ("user", "group", "device")
        group = self.tenant.object_at("group", group_index) or {}
        if cast is not None:
            if cast not in CASTS:
                raise GraphError(400, "BadRequest", f"Resource not found for the segment '{cast}'.")
            kinds = (CASTS[cast],)
            if kinds == ("group",) and "Unified" in (group.get("groupTypes") or []):
                # "An attempt to filter by an OData cast that represents an unsupported member
                # type returns a 400 Bad Request error with the Request_UnsupportedQuery code",
                # e.g. microsoft.graph.group on a Microsoft 365 group (group-list-transitivemembers).
                raise unsupported_query(
                    "Microsoft 365 groups cannot have groups as members: the cast "
                    f"'{cast}' is not supported on this group."
                )
        options = ctx.options
        select = _member_select(options.get("select"), kinds)
        parsed = None
        transitive = relation == "transitiveMembers"
        candidates: list[int] | None = None
        if options.get("filter"):
            if cast is None:
                raise unsupported_query(
                    "$filter on members needs a type cast, e.g. /microsoft.graph.user."
                )
            parsed = self._filter(kinds[0], options.get("filter"))
            if not self._counting(ctx):
                # "To filter the results on the OData type ... you must use the advanced query
                # parameters": ConsistencyLevel: eventual and $count=true (group-list-members,
                # group-list-transitivemembers).
                raise unsupported_query(
                    "Filtering a group's members is an advanced query: send ConsistencyLevel: "
                    "eventual and $count=true."
                )
            candidates = self._member_candidates(
                group_index, transitive, kinds[0], options.get("filter")
            )
        page_size = options.top(ctx.max_page_size or DEFAULT_PAGE)
        path = f"/groups/{group.get('id')}/{relation}" + (f"/{cast}" if cast else "")
        start = self._start(ctx, path)
        scanned: Iterator[tuple[int, str, int]]
        if candidates is not None:
            # A range on the type's key: offsets into its members with a key in the range.
            scanned = ((at, kinds[0], candidates[at]) for at in range(start, len(candidates)))
        else:
            scanned = self.tenant.member_scan(
                group_index, transitive=transitive, kinds=kinds, start=start
            )
        members = (
            (pos, kind, obj)
            for pos, kind, index in scanned
            if (obj := self.tenant.object_at(kind, index, None if parsed else _hint(kind, select)))
            is not None
            and (parsed is None or parsed.predicate(obj))
        )
        page, next_position = _take(((pos, (kind, obj)) for pos, kind, obj in members), page_size)
        value = [self._member_view(kind, obj, select) for kind, obj in page]
        entity = f"{_COLLECTION_OF[kinds[0]]}" if cast else "directoryObjects"
        body: dict[str, Any] = {"@odata.context": f"{self.graph_url}/v1.0/$metadata#{entity}"}
        if start == 0 and self._counting(ctx):
            body["@odata.count"] = (
                len(candidates)
                if candidates is not None
                else self._count_members(group_index, transitive, kinds, parsed)
            )
        if next_position is not None:
            body["@odata.nextLink"] = self._next_link(path, ctx, next_position)
        body["value"] = value
        return body

    def _member_candidates(
        self, group_index: int, transitive: bool, kind: str, text: str | None
    ) -> list[int] | None:
        """The group's members of `kind` a range filter on the kind's key can match, from the
        tenant's sorted keys, in slot order; None for any other filter (the scan decides)."""
        in_range = self._range_candidates(kind, text)
        if in_range is None:
            return None
        members = self.tenant.member_slots(group_index, kind, transitive=transitive)
        return self._cached(
            ("members", group_index, transitive, kind, text, self.tenant.version),
            lambda: [slot for slot in in_range if _contains(members, slot)],
        )

    def _count_members(
        self,
        group_index: int,
        transitive: bool,
        kinds: tuple[str, ...],
        parsed: ParsedFilter | None,
    ) -> int:
        if parsed is None:
            return sum(
                len(self.tenant.member_slots(group_index, kind, transitive=transitive))
                for kind in kinds
            )
        return sum(
            1
            for _, kind, index in self.tenant.member_scan(
                group_index, transitive=transitive, kinds=kinds
            )
            if parsed.predicate(self.tenant.object_at(kind, index) or {})
        )

    def _subscribed_skus(self, rest: list[str], ctx: GraphContext) -> dict[str, Any]:
        self.require(READ_SKUS)
        skus = self.tenant.subscribed_skus()
        select = parse_select(ctx.options.get("select"), "subscribedSku")
        context = f"{self.graph_url}/v1.0/$metadata#subscribedSkus"
        if rest:
            sku = next((s for s in skus if s.get("id") == rest[0]), None)
            if sku is None or len(rest) > 1:
                raise errors.not_found(rest[0])
            return {"@odata.context": f"{context}/$entity", **project(sku, select)}
        return {"@odata.context": context, "value": [project(s, select) for s in skus]}


_EXPANDABLE = {
    "user": {"manager": "user"},
    "device": {"registeredOwners": "user"},
    "group": {"members": "directoryObject"},
}
_COLLECTION_OF = {"user": "users", "device": "devices", "group": "groups"}


def _member_select(text: str | None, kinds: tuple[str, ...] = ("user",)) -> list[str] | None:
    """A `$select` over one or several directory object types (valid if any type knows it)."""
    if text is None or not text.strip():
        return None
    known: dict[str, str] = {}
    for kind in kinds:
        known.update({p.lower(): p for p in PROPERTIES[kind]})
    selected = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        canonical = known.get(item.lower()) or (item if item.startswith("extension_") else None)
        if canonical is None:
            raise bad_request(
                f"Could not find a property named '{item}' on type 'microsoft.graph.directoryObject'."
            )
        selected.append(canonical)
    return selected


def _hint(kind: str, select: list[str] | None) -> frozenset[str]:
    """The properties a member view of `kind` reads: what a tenant must build, at least."""
    return frozenset(select or DEFAULT_SELECT[kind]) | {"id"}


# Range filters on the keys partitioned listings split by (userPrincipalName and device
# displayName support ge/le in $filter without advanced queries: docs/performance.md).
_RANGE_KEYS = {"user": "userPrincipalName", "device": "displayName"}
# Partitions' candidate lists kept between their pages: a collection's ranges, and each large
# group's ranges of its members with the collection's ranges they come from.
_RANGE_CACHE_SIZE = 512
_UNSET_FILTER = re.compile(r"^\s*(?P<prop>\w+)\s+eq\s+null\s*$")
_RANGE_FILTER = re.compile(
    r"^\s*(?P<prop>\w+)\s+(?P<op>ge|le)\s+'(?P<value>(?:[^']|'')*)'"
    r"(?:\s+and\s+(?P<prop2>\w+)\s+(?P<op2>ge|le)\s+'(?P<value2>(?:[^']|'')*)')?\s*$"
)


def _contains(sorted_slots: Any, slot: int) -> bool:
    at = bisect.bisect_left(sorted_slots, slot)
    return at < len(sorted_slots) and sorted_slots[at] == slot


def _take(items: Iterator[tuple[int, Any]], size: int) -> tuple[list[Any], int | None]:
    """Up to `size` items and the scan position to resume after them (None when exhausted)."""
    page: list[Any] = []
    last = -1
    for position, item in items:
        if len(page) == size:
            return page, last + 1
        page.append(item)
        last = position
    return page, None
