"""A hand-built tenant: explicit users, devices, groups and SKUs from a dict or a JSON file.

Relationships (manager, registered owners, members) are given as object ids and checked on load.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from entra_pipeline.emulator.tenant import KINDS, Tenant


class FileTenant(Tenant):
    """A hand-built tenant loaded from a dict or a JSON file.

    Shape: {"tenant_id", "domain", "display_name"?, "now"? (ISO time), "extension_app_id"?,
    "users": [Graph user objects, optionally with "manager": "<user id>"],
    "devices": [Graph device objects, optionally with "registeredOwners": ["<user id>", ...]],
    "groups": [Graph group objects, optionally with "members": ["<user|device|group id>", ...]],
    "subscribedSkus": [Graph subscribedSku objects]}. Objects without an `id` get a stable one.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        now = data.get("now")
        super().__init__(
            tenant_id=str(data.get("tenant_id") or uuid.uuid5(uuid.NAMESPACE_DNS, "file-tenant")),
            domain=str(data.get("domain") or "contoso.onmicrosoft.com"),
            display_name=str(data.get("display_name") or "Contoso"),
            now=(
                dt.datetime.fromisoformat(now.replace("Z", "+00:00"))
                if isinstance(now, str)
                else now or dt.datetime.now(dt.UTC)
            ),
            extension_app_id=str(
                data.get("extension_app_id") or "a1b2c3d4-0000-4000-8000-00000000e0a1"
            ),
        )
        self._objects: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        self._index: dict[str, tuple[str, int]] = {}
        relations: dict[str, list[tuple[int, Any]]] = {"manager": [], "owners": [], "members": []}
        for kind, key in (("user", "users"), ("device", "devices"), ("group", "groups")):
            for position, raw in enumerate(data.get(key) or []):
                obj = copy.deepcopy(dict(raw))
                obj["id"] = str(
                    obj.get("id") or uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{position}")
                ).lower()
                if obj["id"] in self._index:
                    raise ValueError(f"duplicate object id {obj['id']} in tenant file")
                if kind == "user" and "manager" in obj:
                    relations["manager"].append((position, obj.pop("manager")))
                if kind == "device" and "registeredOwners" in obj:
                    relations["owners"].append((position, obj.pop("registeredOwners")))
                if kind == "group" and "members" in obj:
                    relations["members"].append((position, obj.pop("members")))
                self._index[obj["id"]] = (kind, position)
                self._objects[kind].append(obj)
        self._skus = [copy.deepcopy(dict(sku)) for sku in data.get("subscribedSkus") or []]
        self._file_managers: dict[int, int] = {}
        self._file_owners: dict[int, tuple[int, ...]] = {}
        self._file_groups: dict[tuple[str, int], set[int]] = {}
        for position, ref in relations["manager"]:
            if ref:
                self._file_managers[position] = self._resolve(ref, "user", "manager")[1]
        for position, refs in relations["owners"]:
            self._file_owners[position] = tuple(
                self._resolve(ref, "user", "registeredOwners")[1] for ref in refs or []
            )
        for position, refs in relations["members"]:
            for ref in refs or []:
                member = self._resolve(ref, None, "members")
                self._file_groups.setdefault(member, set()).add(position)

    @classmethod
    def from_file(cls, path: str | Path) -> FileTenant:
        """Load a tenant from a JSON file (see the class docstring for its shape); ValueError
        naming the file when it is not JSON or not a JSON object."""
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"tenant file {str(path)!r} is not valid JSON: {error}") from None
        except UnicodeDecodeError as error:
            raise ValueError(f"tenant file {str(path)!r} is not UTF-8 text: {error}") from None
        if not isinstance(document, dict):
            raise ValueError(
                f"tenant file {str(path)!r} holds a JSON {type(document).__name__}; it must be "
                'an object: {"users": [...], "devices": [...], "groups": [...]}'
            )
        return cls(document)

    def _resolve(self, ref: Any, kind: str | None, field: str) -> tuple[str, int]:
        ref_id = str(ref["id"] if isinstance(ref, Mapping) else ref).lower()
        found = self._index.get(ref_id)
        if found is None or (kind is not None and found[0] != kind):
            wanted = kind or "object"
            raise ValueError(f"tenant file: {field} refers to unknown {wanted} id {ref_id}")
        return found

    def _base_count(self, kind: str) -> int:
        return len(self._objects[kind])

    def _base_object(
        self, kind: str, index: int, properties: frozenset[str] | None = None
    ) -> dict[str, Any]:
        return copy.deepcopy(self._objects[kind][index])

    def _base_index(self, kind: str, object_id: str) -> int | None:
        found = self._index.get(object_id)
        return found[1] if found is not None and found[0] == kind else None

    def _base_groups_of(self, kind: str, index: int) -> tuple[int, ...]:
        return tuple(self._file_groups.get((kind, index), ()))

    def _base_manager(self, user_index: int) -> int | None:
        return self._file_managers.get(user_index)

    def _base_owners(self, device_index: int) -> tuple[int, ...]:
        return self._file_owners.get(device_index, ())

    def subscribed_skus(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._skus)
