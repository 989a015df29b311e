"""The tenant interface the emulator serves, and the change overlay every tenant shares.

Tests of later issues compute expected values from this API, so it stays small and stable.
"""

from __future__ import annotations

import bisect
import copy
import datetime as dt
import threading
import uuid
from array import array
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

KINDS = ("user", "device", "group")
ODATA_TYPES = {kind: f"#microsoft.graph.{kind}" for kind in KINDS}

# Member scan positions are (kind ordinal << 40) + index so that objects added while a client pages
# through a group never shift the positions a skip token already points at.
_KIND_SHIFT = 40
_MEMBER_KIND_ORDER = ("user", "group", "device")
_ID_ONLY = frozenset({"id"})


class Tenant:
    """A directory the emulator serves: users, devices, groups, memberships and licences.

    Read API (for handlers and for tests computing expected values):

    - `tenant_id`, `domain` (verified domain, accepted by the token service in place of the GUID),
      `display_name`, `now` (the tenant clock all generated dates are relative to),
      `extension_app_id` and `extension_property(name)` for directory extension attributes.
    - `user_count`, `device_count`, `group_count`; `users()`, `devices()`, `groups()` iterate full
      Graph objects (every property the object has, `signInActivity` included) in serving order.
    - `get(object_id)` / `get_user` / `get_device` / `get_group`: one object or None.
    - `manager_of(user_id)`, `registered_owners(device_id)`, `direct_members(group_id)`,
      `transitive_members(group_id)` (nested groups resolved, no duplicates, the group itself
      excluded); member objects carry `@odata.type`.
    - `subscribed_skus()`: the tenant's subscribedSkus objects.

    Change API (between delta rounds): `update(id, **props)`, `add(kind, obj)`,
    `remove(id, permanent=False)`, `add_member(group_id, member_id)`,
    `remove_member(group_id, member_id)`, `set_manager(user_id, manager_id | None)`.

    Subclasses supply the base objects through the `_base_*` methods; this class layers the
    changes on top and keeps a change log for delta queries.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        domain: str,
        display_name: str,
        now: dt.datetime,
        extension_app_id: str,
    ) -> None:
        self.tenant_id = tenant_id
        # Users holding a directory role: Graph refuses an app's changes to them (writes.py).
        self.role_holders: set[str] = set()
        self.domain = domain
        self.display_name = display_name
        self.now = now.astimezone(dt.UTC).replace(microsecond=0)
        self.extension_app_id = extension_app_id
        self._lock = threading.RLock()
        self._version = 0
        self._key_orders: dict[tuple[str, str, int], tuple[list[str], list[int], list[int]]] = {}
        self._key_order_locks: dict[tuple[str, str], threading.Lock] = {}
        self._overrides: dict[tuple[str, int], dict[str, Any] | None] = {}
        self._removal_reasons: dict[tuple[str, int], str] = {}
        self._added: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        self._added_ids: dict[str, tuple[str, int]] = {}
        self._membership: dict[tuple[str, int], tuple[set[int], set[int]]] = {}
        self._managers: dict[int, int | None] = {}
        self._owners: dict[int, tuple[int, ...]] = {}
        # (version, kind, index) per object change; (version, group, kind, index, added) per
        # membership change. They grow with changes only, never with the tenant's size.
        self._change_log: list[tuple[int, str, int]] = []
        self._member_log: list[tuple[int, int, str, int, bool]] = []
        # (version, user index, the manager index before the change) per manager change.
        self._manager_log: list[tuple[int, int, int | None]] = []
        self._descendants_cache: dict[int, frozenset[int]] = {}
        # Sorted member slots per (group, transitive, kind), and the direct members of every
        # group by kind, for one version of the tenant (member_scan; rebuilt after a change).
        self._member_slots: dict[tuple[int, bool, str], array[int]] = {}
        self._direct_slots: dict[tuple[int, str], list[int]] | None = None
        self._member_slots_version = -1
        self._member_slots_lock = threading.Lock()

    # ---- what subclasses provide ------------------------------------------------------------

    def _base_count(self, kind: str) -> int:
        raise NotImplementedError

    def _base_object(
        self, kind: str, index: int, properties: frozenset[str] | None = None
    ) -> dict[str, Any]:
        """A fresh dict with the Graph object at `index` (callers may mutate it). `properties`
        is a hint: a generator may leave out costly properties that are not in it."""
        raise NotImplementedError

    def _base_index(self, kind: str, object_id: str) -> int | None:
        raise NotImplementedError

    def _base_groups_of(self, kind: str, index: int) -> tuple[int, ...]:
        """Indexes of the groups the object is a direct member of."""
        raise NotImplementedError

    def _base_manager(self, user_index: int) -> int | None:
        raise NotImplementedError

    def _base_owners(self, device_index: int) -> tuple[int, ...]:
        raise NotImplementedError

    def subscribed_skus(self) -> list[dict[str, Any]]:
        """The tenant's `subscribedSkus` objects, as Graph returns them."""
        raise NotImplementedError

    # ---- reading ----------------------------------------------------------------------------

    def extension_property(self, name: str) -> str:
        """The Graph name of a directory extension attribute, e.g. `extension_<appId>_costCenter`."""
        return f"extension_{self.extension_app_id.replace('-', '')}_{name}"

    @property
    def version(self) -> int:
        """The change counter; delta tokens remember it."""
        return self._version

    def total(self, kind: str) -> int:
        """Number of index slots for `kind` (removed objects keep their slot)."""
        return self._base_count(kind) + len(self._added[kind])

    def count(self, kind: str) -> int:
        """Number of objects of `kind` that exist now."""
        with self._lock:
            removed = sum(1 for (k, _), obj in self._overrides.items() if k == kind and obj is None)
            return self.total(kind) - removed

    @property
    def user_count(self) -> int:
        return self.count("user")

    @property
    def device_count(self) -> int:
        return self.count("device")

    @property
    def group_count(self) -> int:
        return self.count("group")

    def object_at(
        self, kind: str, index: int, properties: frozenset[str] | None = None
    ) -> dict[str, Any] | None:
        """The object in slot `index` of `kind`, None when removed or out of range.

        `properties` (optional) names what the caller will read; other properties may be missing.
        """
        key = (kind, index)
        if key in self._overrides:
            obj = self._overrides[key]
            return copy.deepcopy(obj) if obj is not None else None
        base = self._base_count(kind)
        if 0 <= index < base:
            return self._base_object(kind, index, properties)
        if base <= index < self.total(kind):
            return copy.deepcopy(self._added[kind][index - base])
        return None

    def user(self, index: int) -> dict[str, Any] | None:
        return self.object_at("user", index)

    def device(self, index: int) -> dict[str, Any] | None:
        return self.object_at("device", index)

    def group(self, index: int) -> dict[str, Any] | None:
        return self.object_at("group", index)

    def scan(
        self, kind: str, start: int = 0, *, properties: frozenset[str] | None = None
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """(index, object) for every existing object of `kind` from slot `start` on, in order.

        `properties` (optional) names the properties the caller will read; the rest may be
        missing from the objects yielded."""
        total = self.total(kind)
        overrides = self._overrides
        base = self._base_count(kind)
        for index in range(start, total):
            if overrides and (kind, index) in overrides:
                obj = overrides[(kind, index)]
                if obj is None:
                    continue
                yield index, copy.deepcopy(obj)
            elif index < base:
                yield index, self._base_object(kind, index, properties)
            else:
                yield index, copy.deepcopy(self._added[kind][index - base])

    def key_order(self, kind: str, prop: str) -> tuple[list[str], list[int], list[int]]:
        """The slots of `kind` whose string `prop` is set, sorted by it as `$filter` compares
        strings (casefolded), and the slots where it is not set: (keys, slots, unset), cached
        until the tenant changes. What a range filter (`prop ge 'a' and prop le 'b'`) or
        `prop eq null` reads instead of scanning every object."""
        cache_key = (kind, prop, self._version)
        with self._lock:
            cached = self._key_orders.get(cache_key)
            building = self._key_order_locks.setdefault((kind, prop), threading.Lock())
        if cached is not None:
            return cached
        with building:  # concurrent range requests wait for one build, not build it each
            with self._lock:
                cached = self._key_orders.get(cache_key)
            if cached is not None:
                return cached
            return self._build_key_order(kind, prop, cache_key)

    def _build_key_order(
        self, kind: str, prop: str, cache_key: tuple[str, str, int]
    ) -> tuple[list[str], list[int], list[int]]:
        pairs: list[tuple[str, int]] = []
        unset: list[int] = []
        for index, obj in self.scan(kind, properties=frozenset({prop})):
            value = obj.get(prop)
            if isinstance(value, str):
                pairs.append((value.casefold(), index))
            else:
                unset.append(index)
        pairs.sort()
        order = ([key for key, _ in pairs], [index for _, index in pairs], unset)
        with self._lock:
            self._key_orders = {
                cache_key: order,
                **{k: v for k, v in self._key_orders.items() if k[2] == self._version},
            }
        return order

    def users(self) -> Iterator[dict[str, Any]]:
        return (obj for _, obj in self.scan("user"))

    def devices(self) -> Iterator[dict[str, Any]]:
        return (obj for _, obj in self.scan("device"))

    def groups(self) -> Iterator[dict[str, Any]]:
        return (obj for _, obj in self.scan("group"))

    def locate(self, object_id: str) -> tuple[str, int] | None:
        """(kind, index) of an existing object, None when unknown or removed."""
        object_id = object_id.lower()
        found = self._added_ids.get(object_id)
        if found is None:
            for kind in KINDS:
                index = self._base_index(kind, object_id)
                if index is not None:
                    found = (kind, index)
                    break
        if found is None or self._overrides.get(found, True) is None:
            return None
        return found

    def id_at(self, kind: str, index: int) -> str:
        """The id of slot `index`, even when that object has been removed since."""
        base = self._base_count(kind)
        if index < base:
            return self._base_object(kind, index, _ID_ONLY)["id"]
        return self._added[kind][index - base]["id"]

    def locate_user_by_upn(self, upn: str) -> tuple[str, int] | None:
        """(kind, index) of the user with this userPrincipalName (case-insensitive), or None."""
        wanted = upn.lower()
        for index, user in self.scan("user"):
            if str(user.get("userPrincipalName", "")).lower() == wanted:
                return ("user", index)
        return None

    def get(self, object_id: str, kind: str | None = None) -> dict[str, Any] | None:
        """The object with this id (of `kind`, when given), or None."""
        found = self.locate(object_id)
        if found is None or (kind is not None and found[0] != kind):
            return None
        return self.object_at(*found)

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        return self.get(user_id, "user")

    def get_device(self, device_id: str) -> dict[str, Any] | None:
        return self.get(device_id, "device")

    def get_group(self, group_id: str) -> dict[str, Any] | None:
        return self.get(group_id, "group")

    def manager_index(self, user_index: int) -> int | None:
        manager = self._managers.get(user_index, -1)
        if manager == -1:
            manager = (
                self._base_manager(user_index) if user_index < self._base_count("user") else None
            )
        if manager is None or not self.exists("user", manager):
            return None
        return manager

    def manager_of(self, user_id: str) -> dict[str, Any] | None:
        """The user's manager (a full user object), or None."""
        found = self.locate(user_id)
        if found is None or found[0] != "user":
            return None
        manager = self.manager_index(found[1])
        return None if manager is None else self.object_at("user", manager)

    def owner_indexes(self, device_index: int) -> tuple[int, ...]:
        owners = self._owners.get(device_index)
        if owners is None:
            owners = (
                self._base_owners(device_index) if device_index < self._base_count("device") else ()
            )
        return tuple(i for i in owners if self.exists("user", i))

    def registered_owners(self, device_id: str) -> list[dict[str, Any]]:
        """The device's registered owners as user objects with `@odata.type`."""
        found = self.locate(device_id)
        if found is None or found[0] != "device":
            return []
        return [
            _typed("user", self.object_at("user", i) or {}) for i in self.owner_indexes(found[1])
        ]

    def groups_of(self, kind: str, index: int) -> set[int]:
        """Indexes of the groups the object is a direct member of, changes applied."""
        base = set(self._base_groups_of(kind, index)) if index < self._base_count(kind) else set()
        change = self._membership.get((kind, index))
        if change is not None:
            added, removed = change
            base = (base | added) - removed
        return base

    def descendant_groups(self, group_index: int) -> frozenset[int]:
        """The group and every group nested under it, at any depth."""
        with self._lock:
            cached = self._descendants_cache.get(group_index)
            if cached is not None:
                return cached
            children: dict[int, set[int]] = {}
            for index, _ in self.scan("group"):
                for parent in self.groups_of("group", index):
                    children.setdefault(parent, set()).add(index)
            seen = {group_index}
            frontier = [group_index]
            while frontier:
                for child in children.get(frontier.pop(), ()):
                    if child not in seen:
                        seen.add(child)
                        frontier.append(child)
            result = frozenset(seen)
            self._descendants_cache[group_index] = result
            return result

    def member_scan(
        self,
        group_index: int,
        *,
        transitive: bool,
        kinds: Iterable[str] = _MEMBER_KIND_ORDER,
        start: int = 0,
    ) -> Iterator[tuple[int, str, int]]:
        """(position, kind, index) of the group's members from scan position `start` on."""
        wanted = set(kinds)
        for ordinal, kind in enumerate(_MEMBER_KIND_ORDER):
            if kind not in wanted:
                continue
            offset = ordinal << _KIND_SHIFT
            if start >= offset + (1 << _KIND_SHIFT):
                continue
            slots = self.member_slots(group_index, kind, transitive=transitive)
            for at in range(bisect.bisect_left(slots, max(0, start - offset)), len(slots)):
                index = slots[at]
                yield offset + index, kind, index

    def member_slots(self, group_index: int, kind: str, *, transitive: bool) -> array[int]:
        """The sorted slots of the existing objects of `kind` that are members of the group
        (with `transitive`, of it or of any group nested under it), the group itself left out.

        One pass over every object finds the direct members of all groups at once; each
        group's list is kept until the tenant changes. Without it a page of a small group's
        members scanned the whole tenant (3M objects at 1M users / 2M devices)."""
        key = (group_index, transitive, kind)
        with self._member_slots_lock:
            if self._member_slots_version != self._version:
                self._member_slots, self._direct_slots = {}, None
                self._member_slots_version = self._version
            cached = self._member_slots.get(key)
            if cached is not None:
                return cached
            if self._direct_slots is None:
                self._direct_slots = self._find_direct_members()
            direct = self._direct_slots
        targets = self.descendant_groups(group_index) if transitive else (group_index,)
        found: set[int] = set()
        for target in targets:
            found.update(direct.get((target, kind), ()))
        if kind == "group":
            found.discard(group_index)
        slots = array("q", sorted(found))
        with self._member_slots_lock:
            if self._member_slots_version == self._version:
                self._member_slots[key] = slots
        return slots

    def _find_direct_members(self) -> dict[tuple[int, str], list[int]]:
        direct: dict[tuple[int, str], list[int]] = {}
        for kind in _MEMBER_KIND_ORDER:
            for index in range(self.total(kind)):
                if not self.exists(kind, index):
                    continue
                for group in self.groups_of(kind, index):
                    direct.setdefault((group, kind), []).append(index)
        return direct

    def exists(self, kind: str, index: int) -> bool:
        """Whether slot `index` of `kind` holds an object that has not been removed."""
        return (
            0 <= index < self.total(kind) and self._overrides.get((kind, index), True) is not None
        )

    def _members(self, group_id: str, transitive: bool) -> list[dict[str, Any]]:
        found = self.locate(group_id)
        if found is None or found[0] != "group":
            return []
        return [
            _typed(kind, self.object_at(kind, index) or {})
            for _, kind, index in self.member_scan(found[1], transitive=transitive)
        ]

    def direct_members(self, group_id: str) -> list[dict[str, Any]]:
        """The group's direct members (users, groups, devices), full objects with `@odata.type`."""
        return self._members(group_id, transitive=False)

    def transitive_members(self, group_id: str) -> list[dict[str, Any]]:
        """Every member at any nesting depth, each once, full objects with `@odata.type`."""
        return self._members(group_id, transitive=True)

    # ---- changing (for delta tests) ---------------------------------------------------------

    def _bump(self, kind: str, index: int) -> None:
        self._version += 1
        self._change_log.append((self._version, kind, index))

    def update(self, object_id: str, **props: Any) -> dict[str, Any]:
        """Set properties on an object (None clears one); returns the new object."""
        with self._lock:
            found = self._require(object_id)
            obj = self.object_at(*found)
            assert obj is not None
            obj.update(props)
            self._overrides[found] = obj
            self._bump(*found)
            return copy.deepcopy(obj)

    def add(self, kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Add an object of `kind` (an `id` is generated when missing); returns it."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        with self._lock:
            new = dict(obj)
            new.setdefault("id", str(uuid.uuid4()))
            new["id"] = new["id"].lower()
            if self.locate(new["id"]) is not None:
                raise ValueError(f"an object with id {new['id']} already exists")
            index = self.total(kind)
            self._added[kind].append(new)
            self._added_ids[new["id"]] = (kind, index)
            self._bump(kind, index)
            self._descendants_cache.clear()
            return copy.deepcopy(new)

    def remove(self, object_id: str, *, permanent: bool = False) -> None:
        """Delete an object. Delta reports it as `@removed` "changed" (soft delete to the recycle
        bin, as Entra does) or "deleted" when `permanent`."""
        with self._lock:
            found = self._require(object_id)
            self._overrides[found] = None
            self._removal_reasons[found] = "deleted" if permanent else "changed"
            self._bump(*found)
            self._descendants_cache.clear()

    def add_member(self, group_id: str, member_id: str) -> None:
        self._change_membership(group_id, member_id, add=True)

    def remove_member(self, group_id: str, member_id: str) -> None:
        self._change_membership(group_id, member_id, add=False)

    def set_manager(self, user_id: str, manager_id: str | None) -> None:
        with self._lock:
            kind, index = self._require(user_id)
            if kind != "user":
                raise ValueError(f"{user_id} is a {kind}, not a user")
            manager = None if manager_id is None else self._require(manager_id)[1]
            previous = self.manager_index(index)
            self._managers[index] = manager
            self._bump(kind, index)
            self._manager_log.append((self._version, index, previous))

    def _change_membership(self, group_id: str, member_id: str, *, add: bool) -> None:
        with self._lock:
            group_kind, group_index = self._require(group_id)
            if group_kind != "group":
                raise ValueError(f"{group_id} is a {group_kind}, not a group")
            member = self._require(member_id)
            added, removed = self._membership.setdefault(member, (set(), set()))
            (added if add else removed).add(group_index)
            (removed if add else added).discard(group_index)
            self._version += 1
            self._member_log.append((self._version, group_index, *member, add))
            self._change_log.append((self._version, "group", group_index))
            self._descendants_cache.clear()

    def _require(self, object_id: str) -> tuple[str, int]:
        found = self.locate(object_id)
        if found is None:
            raise KeyError(f"no object with id {object_id} in tenant {self.tenant_id}")
        return found

    def changes_since(
        self, kind: str, after: int, upto: int | None = None
    ) -> list[tuple[int, str | None]]:
        """(index, removal reason or None) of objects of `kind` changed in (after, upto], by index."""
        with self._lock:
            changed = {
                index
                for version, k, index in self._change_log
                if k == kind and version > after and (upto is None or version <= upto)
            }
            return [
                (
                    index,
                    None
                    if self.exists(kind, index)
                    else self._removal_reasons.get((kind, index), "deleted"),
                )
                for index in sorted(changed)
            ]

    def manager_before(self, user_index: int, version: int) -> int | None:
        """The user's manager as it was at `version`, when it has changed since (else None)."""
        with self._lock:
            for changed, index, previous in self._manager_log:
                if changed > version and index == user_index:
                    return previous
            return None

    def membership_changes_since(
        self, group_index: int, version: int
    ) -> list[tuple[str, int, bool]]:
        """(member kind, member index, added?) for the group's membership changes after `version`."""
        with self._lock:
            latest: dict[tuple[str, int], bool] = {}
            for changed, group, kind, index, added in self._member_log:
                if changed > version and group == group_index:
                    latest[(kind, index)] = added
            return [(kind, index, added) for (kind, index), added in latest.items()]


def _typed(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.type": ODATA_TYPES[kind], **obj}
