"""A night of directory changes on an emulator tenant: what the demo and the incremental benchmark
apply between two syncs.

`churn(tenant, fraction)` changes about `fraction` of the users and of the devices, the way a
working day does: hires (licensed, with a manager), leavers (deleted), accounts disabled, licences
swapped, managers changed, devices re-joined, gone stale or deleted, and members added to and
removed from groups. Deterministic for a given tenant and seed; it reads only the objects it
changes (by slot), so it costs the same on a tenant of a million users.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from dataclasses import dataclass, field

from entra_pipeline.emulator.tenant import Tenant


@dataclass
class Churn:
    """What `churn` did, by kind of change."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _new_id(rng: random.Random) -> str:
    """An added object's id, from the night's random stream: the same night replayed on the same
    tenant adds the same objects."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _at(tenant: Tenant, days_ago: int) -> str:
    return (tenant.now - dt.timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def churn(tenant: Tenant, fraction: float = 0.01, *, seed: int = 1) -> Churn:
    """Change about `fraction` of the users and devices of `tenant` (see the module docstring)."""
    rng = random.Random(seed)
    done = Churn()
    skus = [s["skuId"] for s in tenant.subscribed_skus()]
    users = _sample(rng, tenant, "user", fraction)
    devices = _sample(rng, tenant, "device", fraction)
    groups = [index for index in range(tenant.total("group")) if tenant.exists("group", index)]
    for n, index in enumerate(users):
        user = tenant.object_at("user", index)
        if user is None:
            continue
        kind = n % 5
        if kind == 0:
            tenant.update(user["id"], accountEnabled=not user.get("accountEnabled", True))
            done.add("users disabled or enabled")
        elif kind == 1 and skus:
            tenant.update(
                user["id"], assignedLicenses=[{"skuId": rng.choice(skus), "disabledPlans": []}]
            )
            done.add("licences changed")
        elif kind == 2:
            manager = tenant.object_at("user", rng.choice(users))
            if manager is not None and manager["id"] != user["id"]:
                tenant.set_manager(user["id"], manager["id"])
                done.add("managers changed")
        elif kind == 3:
            tenant.remove(user["id"])
            done.add("users deleted")
        else:
            hire = tenant.add(
                "user",
                {
                    "id": _new_id(rng),
                    "userPrincipalName": f"hire{seed}.{n}@{tenant.domain}",
                    "displayName": f"New Hire {seed}.{n}",
                    "givenName": "New",
                    "surname": f"Hire {n}",
                    "mail": f"hire{seed}.{n}@{tenant.domain}",
                    "accountEnabled": True,
                    "userType": "Member",
                    "assignedLicenses": [{"skuId": skus[0], "disabledPlans": []}] if skus else [],
                    "businessPhones": [],
                    "createdDateTime": _at(tenant, 0),
                },
            )
            tenant.set_manager(hire["id"], user["id"])
            if groups:
                tenant.add_member(tenant.id_at("group", rng.choice(groups)), hire["id"])
                done.add("members added")
            done.add("users added")
    for n, index in enumerate(devices):
        device = tenant.object_at("device", index)
        if device is None:
            continue
        kind = n % 3
        if kind == 0:
            tenant.update(
                device["id"],
                approximateLastSignInDateTime=_at(tenant, 200),
                registrationDateTime=_at(tenant, 400),
            )
            done.add("devices gone stale")
        elif kind == 1:
            tenant.remove(device["id"])
            tenant.add(
                "device",
                {
                    **{k: v for k, v in device.items() if k != "id"},
                    "id": _new_id(rng),
                    "trustType": "AzureAd",
                    "registrationDateTime": _at(tenant, 0),
                    "approximateLastSignInDateTime": _at(tenant, 0),
                },
            )
            done.add("devices re-joined")
        else:
            tenant.remove(device["id"], permanent=True)
            done.add("devices deleted")
    return done


def _sample(rng: random.Random, tenant: Tenant, kind: str, fraction: float) -> list[int]:
    total = tenant.total(kind)
    wanted = max(1, round(total * fraction)) if total else 0
    return sorted(rng.sample(range(total), min(wanted, total)))
