"""A deterministic synthetic tenant: every object is computed on demand from (seed, kind, index).

Nothing is stored per object, so a million users cost no memory; dates hang off the tenant clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from entra_pipeline.emulator import catalog
from entra_pipeline.emulator.schema import empty_extension_attributes
from entra_pipeline.emulator.tenant import Tenant

_UPN_INDEX = re.compile(r"^.*?(\d+)$")
_SIGN_IN_PASS = frozenset({"createdDateTime", "signInActivity"})
_KIND_NIBBLE = {"user": 0xA, "device": 0xB, "group": 0xC}
_NEVER = "0001-01-01T00:00:00Z"  # what Graph sends inside signInActivity for "never"


class _Draw:
    """Successive bounded random draws from a SHAKE-128 byte stream (fast, stable everywhere)."""

    __slots__ = ("_bytes", "_key", "_pos")

    _CHUNK = 256  # bytes per refill: enough for a whole user without a second hash call

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._bytes = hashlib.shake_128(key).digest(self._CHUNK)
        self._pos = 0

    def _refill(self) -> None:
        self._key += b"+"
        self._bytes = hashlib.shake_128(self._key).digest(self._CHUNK)
        self._pos = 0

    def below(self, n: int) -> int:
        # 6 random bytes make the modulo bias negligible for every n used here.
        if self._pos + 6 > self._CHUNK:
            self._refill()
        pos = self._pos
        self._pos = pos + 6
        return int.from_bytes(self._bytes[pos : pos + 6], "little") % n

    def percent(self) -> int:
        if self._pos >= self._CHUNK:
            self._refill()
        pos = self._pos
        self._pos = pos + 1
        return (self._bytes[pos] * 100) >> 8

    def pick(self, options: tuple[Any, ...]) -> Any:
        return options[self.below(len(options))]


@dataclass(frozen=True, slots=True)
class _UserTraits:
    """The part of a user that group membership depends on (cheap to compute on its own)."""

    guest: bool
    pending_guest: bool  # invited, never redeemed: never signed in
    department: str | None
    platform_team: bool
    project_phoenix: bool


@dataclass(frozen=True, slots=True)
class _DeviceTraits:
    trust_type: str | None
    project_phoenix: bool


@dataclass(frozen=True)
class _GroupSpec:
    name: str
    description: str
    unified: bool = False
    synced: bool = False


@lru_cache(maxsize=1024)
def _fold(text: str) -> str:
    """ASCII form of a name for mail nicknames (José -> Jose, Strauß -> Strauss)."""
    text = "".join(catalog.ASCII_FOLD.get(ch, ch) for ch in text)
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded if ch.isalnum())


@lru_cache(maxsize=8192)
def _day_prefix(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).strftime("%Y-%m-%dT")


class SyntheticTenant(Tenant):
    """A seeded tenant of `users` users and `devices` devices with a fixed tree of ~23 groups.

    Variety (fractions are approximate): 5% guests (`#EXT#` UPNs, userType Guest, some pending),
    ~8% disabled members, ~75% of members licensed with 1-3 of six SKUs, 40% of members synced
    from on-premises (onPremisesExtensionAttributes, onPremisesLastSyncDateTime), directory
    extension attributes costCenter/division, managers (a tree rooted at user 0), non-ASCII and
    CJK names, optional fields left null, sign-ins recent / 30-90 days / >90 days / never (null,
    "" or "0001-01-01T00:00:00Z"). Devices: trustType AzureAd, Workplace, ServerAd or null,
    registered owners, check-ins of every age. Groups nest up to four levels
    (All Employees > Region > Department > Team), plus device groups and a mixed group.
    """

    def __init__(
        self,
        users: int = 200,
        devices: int = 300,
        seed: int = 42,
        now: dt.datetime | None = None,
        name: str = "contoso",
    ) -> None:
        if users < 0 or devices < 0:
            raise ValueError("users and devices must be >= 0")
        self._seed = seed.to_bytes(8, "little", signed=True)
        self._users = users
        self._devices = devices
        self._name = name
        super().__init__(
            tenant_id=(self._guid(b"tenant", 0)),
            domain=f"{name}.com",
            display_name=name.capitalize(),
            now=now or dt.datetime.now(dt.UTC),
            extension_app_id=(self._guid(b"extension-app", 0)),
        )
        self.initial_domain = f"{name}.onmicrosoft.com"
        self.domains = (self.domain, self.initial_domain)
        self._mask = int.from_bytes(hashlib.blake2b(self._seed + b"mask", digest_size=6).digest())
        self._mask &= (1 << 44) - 1
        self._group_specs, self._group_parents = self._group_tree()
        self._now_epoch = int(self.now.timestamp())
        self._cost_center = self.extension_property("costCenter")
        self._division = self.extension_property("division")
        # Member scans check traits of every user; caching them keeps repeated scans cheap.
        self._user_traits = lru_cache(maxsize=65536)(self._compute_user_traits)
        self._device_traits = lru_cache(maxsize=65536)(self._compute_device_traits)
        # Managers and owners are looked up again and again: keep recent identities around.
        self._identity = lru_cache(maxsize=8192)(self._compute_identity)
        if users:  # user 0, the top of the manager tree, is the tenant's Global Administrator
            self.role_holders.add(self.object_id("user", 0))

    # ---- ids and randomness -----------------------------------------------------------------

    def _guid(self, tag: bytes, index: int) -> str:
        """A version-4-shaped GUID string from (seed, tag, index); formatted by hand (hot path)."""
        h = hashlib.blake2b(
            self._seed + tag + index.to_bytes(8, "little"), digest_size=16
        ).hexdigest()
        variant = "89ab"[int(h[16], 16) & 3]
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"

    def _draw(self, tag: bytes, index: int) -> _Draw:
        return _Draw(self._seed + tag + index.to_bytes(8, "little"))

    def object_id(self, kind: str, index: int) -> str:
        """The id of base object `index` of `kind`; its last 12 hex digits encode the index."""
        head = hashlib.blake2b(
            self._seed + b"id" + kind.encode() + index.to_bytes(8, "little"), digest_size=10
        ).hexdigest()
        variant = "89ab"[int(head[15], 16) & 3]
        tail = (_KIND_NIBBLE[kind] << 44) | (index ^ self._mask)
        return f"{head[:8]}-{head[8:12]}-4{head[12:15]}-{variant}{head[16:19]}-{tail:012x}"

    def _base_index(self, kind: str, object_id: str) -> int | None:
        try:
            tail = int(object_id[-12:], 16)
        except ValueError:
            return None
        if tail >> 44 != _KIND_NIBBLE[kind]:
            return None
        index = (tail & ((1 << 44) - 1)) ^ self._mask
        if index >= self._base_count(kind) or self.object_id(kind, index) != object_id:
            return None
        return index

    def locate_user_by_upn(self, upn: str) -> tuple[str, int] | None:
        # Generated UPNs end their nickname with the user's index; added users need the scan.
        match = _UPN_INDEX.match(upn.split("@")[0].split("_")[0])
        if match is not None:
            index = int(match.group(1))
            user = self.user(index) if index < self._users else None
            if user is not None and user["userPrincipalName"].lower() == upn.lower():
                return ("user", index)
        return super().locate_user_by_upn(upn) if self._added["user"] or self._overrides else None

    def _base_count(self, kind: str) -> int:
        return {"user": self._users, "device": self._devices, "group": len(self._group_specs)}[kind]

    def _base_object(
        self, kind: str, index: int, properties: frozenset[str] | None = None
    ) -> dict[str, Any]:
        if kind == "user":
            return self._build_user(index, properties)
        if kind == "device":
            return self._build_device(index)
        return self._build_group(index)

    def _ago(self, days: float) -> str:
        # Hot path (several timestamps per object): format from cached day prefixes, not strftime.
        day, second = divmod(self._now_epoch - int(days * 86400), 86400)
        return (
            f"{_day_prefix(day)}{second // 3600:02d}:{second % 3600 // 60:02d}:{second % 60:02d}Z"
        )

    # ---- users ------------------------------------------------------------------------------

    def _compute_user_traits(self, index: int) -> _UserTraits:
        draw = self._draw(b"user-traits", index)
        guest = index != 0 and draw.percent() < 5
        pending_guest = guest and draw.percent() < 25
        department = None if guest or draw.percent() < 10 else draw.pick(catalog.DEPARTMENTS)
        return _UserTraits(
            guest=guest,
            pending_guest=pending_guest,
            department=department,
            platform_team=department == "Engineering" and draw.percent() < 30,
            project_phoenix=draw.percent() < 2,
        )

    def _compute_identity(self, index: int) -> dict[str, Any]:
        """Who the user is: names, UPN, mail, type. Its own stream, so that expansions and member
        lists that read only these build nothing else."""
        traits = self._user_traits(index)
        draw = self._draw(b"user-identity", index)
        if draw.percent() < 4:
            given, surname = draw.pick(catalog.CJK_NAMES)
            display = f"{surname}{given}"
            nick = f"user{index}"
        else:
            given, surname = draw.pick(catalog.GIVEN_NAMES), draw.pick(catalog.SURNAMES)
            display = f"{given} {surname}"
            nick = f"{_fold(given).lower()}.{_fold(surname).lower()}{index}"
        if traits.guest:
            home = draw.pick(catalog.GUEST_DOMAINS)
            upn = f"{nick}_{home}#EXT#@{self.initial_domain}"
            mail: str | None = f"{nick}@{home}"
        else:
            upn = f"{nick}@{self.domain}"
            mail = upn if draw.percent() >= 5 else None
        return {
            "id": self.object_id("user", index),
            "displayName": display,
            "givenName": given,
            "surname": surname,
            "mailNickname": nick,
            "userPrincipalName": upn,
            "mail": mail,
            "userType": "Guest" if traits.guest else "Member",
        }

    def _created_days(self, index: int) -> float:
        draw = self._draw(b"user-created", index)
        return 1 + draw.below(2900) + draw.below(86400) / 86400

    def _build_user(self, index: int, properties: frozenset[str] | None = None) -> dict[str, Any]:
        identity = self._identity(index)
        traits = self._user_traits(index)
        if properties is not None and properties <= identity.keys():
            return dict(identity)
        created_days = self._created_days(index)
        if properties is not None and properties <= _SIGN_IN_PASS | identity.keys():
            # The sign-in-activity pass reads ids and signInActivity of every user: keep it cheap.
            return {
                **identity,
                "createdDateTime": self._ago(created_days),
                "signInActivity": self._sign_in_activity(
                    index, created_days, guest_pending=traits.pending_guest
                ),
            }
        sign_in = properties is None or "signInActivity" in properties
        draw = self._draw(b"user", index)
        location = draw.pick(catalog.LOCATIONS)
        city, state, country, usage, office, phone = location
        user: dict[str, Any] = {
            **identity,
            "createdDateTime": self._ago(created_days),
            "accountEnabled": True,
            "preferredLanguage": None,
            "onPremisesExtensionAttributes": empty_extension_attributes(),
            "assignedLicenses": [],
            "businessPhones": [],
            "otherMails": [],
            "proxyAddresses": [],
        }
        if traits.guest:
            home = identity["mail"].split("@")[1]
            pending = traits.pending_guest
            user.update(
                otherMails=[identity["mail"]],
                creationType="Invitation",
                externalUserState="PendingAcceptance" if pending else "Accepted",
                externalUserStateChangeDateTime=self._ago(created_days * (0.9 if pending else 0.5)),
                jobTitle=None,
                department=None,
                companyName=home.split(".")[0].capitalize() if draw.percent() < 50 else None,
                usageLocation=None,
            )
            if sign_in:
                user["signInActivity"] = self._sign_in_activity(
                    index, created_days, guest_pending=pending
                )
            return user

        upn = identity["userPrincipalName"]
        licensed = draw.percent() < 75
        department = traits.department
        user.update(
            proxyAddresses=[f"SMTP:{upn}"] if identity["mail"] else [],
            creationType=None,
            externalUserState=None,
            accountEnabled=index == 0 or draw.percent() >= 8,
            department=department,
            jobTitle=(
                None
                if department is None or draw.percent() < 10
                else draw.pick(catalog.JOB_TITLES[department])
            ),
            companyName=self.display_name if draw.percent() < 90 else None,
            officeLocation=office if draw.percent() < 80 else None,
            city=city if draw.percent() < 85 else None,
            state=state,
            country=country,
            usageLocation=usage if licensed or draw.percent() < 50 else None,
            mobilePhone=f"{phone}{draw.below(10000):04d}" if draw.percent() < 50 else None,
            businessPhones=[f"{phone}{draw.below(10000):04d}"] if draw.percent() < 70 else [],
            employeeId=f"E{100000 + index}" if draw.percent() < 80 else None,
            employeeType=draw.pick(("Employee", "Contractor", "Intern"))
            if draw.percent() < 60
            else None,
            employeeHireDate=self._ago(created_days + draw.below(30))
            if draw.percent() < 50
            else None,
            preferredLanguage=draw.pick(("en-US", "de-DE", "fr-FR", "ja-JP", None)),
        )
        if sign_in:
            # Left out (not None) when the caller said it will not read it: see Tenant.scan.
            user["signInActivity"] = self._sign_in_activity(
                index, created_days, guest_pending=False
            )
        if licensed:
            user["assignedLicenses"] = self._licenses(draw)
        if draw.percent() < 40:
            self._sync_from_on_premises(user, draw, index)
        if draw.percent() < 60:
            user[self._cost_center] = f"CC-{1000 + draw.below(40)}"
        if draw.percent() < 40:
            user[self._division] = draw.pick(("Commercial", "Public Sector", "Consumer"))
        return user

    def _licenses(self, draw: _Draw) -> list[dict[str, Any]]:
        roll = draw.percent()
        base = "SPE_E3" if roll < 55 else "ENTERPRISEPACK" if roll < 85 else "SPE_E5"
        parts = [base]
        if base == "ENTERPRISEPACK" and draw.percent() < 50:
            parts.append("EMS")
        if draw.percent() < 20:
            parts.append("POWER_BI_PRO")
        if draw.percent() < 10:
            parts.append("FLOW_FREE")
        disabled = ["57ff2da0-773e-42df-b2af-ffb7a2317929"] if draw.percent() < 5 else []
        return [
            {"disabledPlans": disabled if part == base else [], "skuId": catalog.SKU_IDS[part]}
            for part in parts
        ]

    def _sign_in_activity(
        self, index: int, created_days: float, *, guest_pending: bool
    ) -> dict[str, Any] | None:
        # A stream of its own, so that users can be built without it when it is not selected.
        draw = self._draw(b"sign-in", index)
        never = guest_pending or draw.percent() < 12
        if never:
            # Real payloads disagree on "never": the whole object null, nulls, "" or year 1.
            style = draw.below(4)
            if style == 0:
                return None
            empty = (None, "", _NEVER)[style - 1]
            return {
                "lastSignInDateTime": empty,
                "lastSignInRequestId": None,
                "lastNonInteractiveSignInDateTime": empty,
                "lastNonInteractiveSignInRequestId": None,
                "lastSuccessfulSignInDateTime": _NEVER if style == 3 else None,
                "lastSuccessfulSignInRequestId": None,
            }
        roll = draw.percent()
        if roll < 65:
            age = draw.below(30 * 86400) / 86400
        elif roll < 82:
            age = 30 + draw.below(60 * 86400) / 86400
        else:
            age = 91 + draw.below(800 * 86400) / 86400
        age = min(age, created_days)
        request = self._guid(b"sign-in-request", index)
        # Non-interactive sign-ins (token refreshes) usually trail the interactive one closely.
        non_interactive = (
            max(0.0, age - draw.below(5 * 86400) / 86400) if draw.percent() < 80 else None
        )
        latest = age if non_interactive is None else min(age, non_interactive)
        return {
            "lastSignInDateTime": self._ago(age),
            "lastSignInRequestId": request,
            "lastNonInteractiveSignInDateTime": (
                None if non_interactive is None else self._ago(non_interactive)
            ),
            "lastNonInteractiveSignInRequestId": None if non_interactive is None else request,
            "lastSuccessfulSignInDateTime": self._ago(latest),
            "lastSuccessfulSignInRequestId": request,
        }

    def _sync_from_on_premises(self, user: dict[str, Any], draw: _Draw, index: int) -> None:
        sam = user["mailNickname"][:20]
        stale_sync = draw.percent() < 5
        attributes = empty_extension_attributes()
        attributes["extensionAttribute1"] = draw.pick(("Staff", "Faculty", "Contractor"))
        if draw.percent() < 70:
            attributes["extensionAttribute3"] = f"{1000 + draw.below(40)}"
        if draw.percent() < 30:
            attributes["extensionAttribute10"] = draw.pick(("Tier1", "Tier2", "Tier3"))
        if draw.percent() < 10:
            attributes["extensionAttribute15"] = "Ünïcødé ✓"
        user.update(
            onPremisesSyncEnabled=True,
            onPremisesLastSyncDateTime=self._ago(
                120 + draw.below(300) if stale_sync else draw.below(7200) / 86400
            ),
            onPremisesImmutableId=(self._guid(b"immutable", index)).replace("-", "")[:22] + "==",
            onPremisesSamAccountName=sam,
            onPremisesDomainName=f"corp.{self.domain}",
            onPremisesUserPrincipalName=f"{sam}@corp.{self.domain}",
            onPremisesDistinguishedName=f"CN={sam},OU=Users,DC=corp,DC={self._name},DC=com",
            onPremisesSecurityIdentifier=f"S-1-5-21-1004336348-1177238915-682003330-{10000 + index}",
            onPremisesExtensionAttributes=attributes,
        )

    def _base_manager(self, user_index: int) -> int | None:
        if user_index == 0 or user_index >= self._users or self._user_traits(user_index).guest:
            return None
        if self._draw(b"manager", user_index).percent() < 4:
            return None
        manager = (user_index - 1) // 8
        while manager > 0 and self._user_traits(manager).guest:
            manager = (manager - 1) // 8
        return manager

    # ---- devices ----------------------------------------------------------------------------

    def _compute_device_traits(self, index: int) -> _DeviceTraits:
        draw = self._draw(b"device-traits", index)
        roll = draw.percent()
        trust = (
            "AzureAd"
            if roll < 35
            else "Workplace"
            if roll < 60
            else "ServerAd"
            if roll < 90
            else None
        )
        return _DeviceTraits(trust_type=trust, project_phoenix=draw.percent() < 2)

    def _build_device(self, index: int) -> dict[str, Any]:
        trust = self._device_traits(index).trust_type
        draw = self._draw(b"device", index)
        code = f"{draw.below(36**7):07X}"[-7:]
        roll = draw.percent()
        if roll < 60:
            last_seen: float | None = draw.below(30 * 86400) / 86400
        elif roll < 70:
            last_seen = 30 + draw.below(60 * 86400) / 86400
        elif roll < 90:
            last_seen = 91 + draw.below(700 * 86400) / 86400
        else:
            last_seen = None
        registered: float | None = (last_seen or 0) + draw.below(1000 * 86400) / 86400
        device: dict[str, Any] = {
            "id": self.object_id("device", index),
            "deviceId": (self._guid(b"device-id", index)),
            "accountEnabled": draw.percent() >= 5,
            "trustType": trust,
            "approximateLastSignInDateTime": None if last_seen is None else self._ago(last_seen),
            "onPremisesSyncEnabled": None,
            "onPremisesLastSyncDateTime": None,
            "isCompliant": None,
            "isManaged": None,
            "deviceOwnership": None,
            "profileType": "RegisteredDevice",
            "physicalIds": [],
            "systemLabels": [],
            "extensionAttributes": empty_extension_attributes(),
        }
        if trust in ("AzureAd", "ServerAd"):
            server = trust == "ServerAd" and draw.percent() < 25
            make, model = draw.pick(catalog.SERVER_MODELS if server else catalog.WINDOWS_MODELS)
            managed = draw.percent() < 90
            device.update(
                displayName=f"SRV-{code}"
                if server
                else f"{'LAPTOP' if trust == 'AzureAd' else 'CONTOSO-PC'}-{code}",
                operatingSystem="Windows Server" if server else "Windows",
                operatingSystemVersion="10.0.20348.2340"
                if server
                else draw.pick(catalog.WINDOWS_VERSIONS),
                manufacturer=make,
                model=model,
                isManaged=managed,
                isCompliant=(draw.percent() < 85) if managed else None,
                managementType="MDM" if managed else None,
                deviceOwnership="Company",
                enrollmentType="AzureDomainJoined" if trust == "AzureAd" else "OnPremiseCoManaged",
            )
            if trust == "ServerAd":
                device.update(
                    onPremisesSyncEnabled=True,
                    onPremisesLastSyncDateTime=self._ago(
                        draw.below(3 * 86400) / 86400
                        if draw.percent() < 85
                        else 95 + draw.below(400)
                    ),
                    onPremisesSecurityIdentifier=f"S-1-5-21-1004336348-1177238915-682003330-{50000 + index}",
                )
                if draw.percent() < 10:
                    registered = None  # pending hybrid join: synced but never registered
        else:
            os_name, versions, (make, model), prefix = draw.pick(catalog.PERSONAL_DEVICES)
            managed = draw.percent() < 50
            device.update(
                displayName=f"{prefix}-{code}",
                operatingSystem=os_name,
                operatingSystemVersion=draw.pick(versions),
                manufacturer=make if draw.percent() < 90 else None,
                model=model if draw.percent() < 90 else None,
                isManaged=managed if trust else None,
                isCompliant=(draw.percent() < 70) if managed and trust else None,
                managementType="MDM" if managed and trust else None,
                deviceOwnership="Personal" if trust else None,
                profileType="RegisteredDevice" if trust else None,
            )
        device["registrationDateTime"] = None if registered is None else self._ago(registered)
        if device["extensionAttributes"] and draw.percent() < 20:
            device["extensionAttributes"]["extensionAttribute1"] = draw.pick(
                ("Kiosk", "Shared", "VIP")
            )
        return device

    def _base_owners(self, device_index: int) -> tuple[int, ...]:
        if self._users == 0 or device_index >= self._devices:
            return ()
        trust = self._device_traits(device_index).trust_type
        draw = self._draw(b"owners", device_index)
        roll = draw.percent()
        if (trust == "ServerAd" and roll < 70) or roll < 5:
            return ()
        first = draw.below(self._users)
        if draw.percent() < 5:
            second = draw.below(self._users)
            return (first, second) if second != first else (first,)
        return (first,)

    # ---- groups -----------------------------------------------------------------------------

    def _group_tree(self) -> tuple[list[_GroupSpec], dict[int, tuple[int, ...]]]:
        """The fixed group tree and, per group, the groups it is a direct member of."""
        specs = [
            _GroupSpec("All Employees", "Every employee, through the regional groups"),
            _GroupSpec("Region - EMEA", "Departments in Europe, Middle East and Africa"),
            _GroupSpec("Region - Americas", "Departments in the Americas"),
        ]
        parents: dict[int, tuple[int, ...]] = {1: (0,), 2: (0,)}
        for department in catalog.DEPARTMENTS:
            region = 1 if department in catalog.REGIONS["EMEA"] else 2
            parents[len(specs)] = (region,)
            specs.append(
                _GroupSpec(f"Dept - {department}", f"{department} department", synced=True)
            )
        parents[len(specs)] = (self._dept_group("Engineering"),)
        specs.append(_GroupSpec("Team - Platform", "Platform engineering team"))
        specs += [
            _GroupSpec("External Guests", "Invited guest accounts"),
            _GroupSpec("Executives", "Leadership team"),
            _GroupSpec("Contoso Marketing Team", "Marketing collaboration", unified=True),
            _GroupSpec("All Managed Devices", "Corporate devices, through the device groups"),
        ]
        managed_devices = len(specs) - 1
        for name in ("Devices - Autopilot", "Devices - Hybrid Joined"):
            parents[len(specs)] = (managed_devices,)
            specs.append(_GroupSpec(name, f"{name.split(' - ')[1]} devices"))
        byod = len(specs)
        specs.append(_GroupSpec("Devices - BYOD", "Personal devices"))
        phoenix = len(specs)
        specs.append(_GroupSpec("Project Phoenix", "Mixed: people, devices and the BYOD group"))
        parents[byod] = (phoenix,)
        specs.append(_GroupSpec("Empty Group", "Has no members"))
        return specs, parents

    def _group_index(self, name: str) -> int:
        return next(i for i, spec in enumerate(self._group_specs) if spec.name == name)

    def _dept_group(self, department: str) -> int:
        return 3 + catalog.DEPARTMENTS.index(department)

    def _base_groups_of(self, kind: str, index: int) -> tuple[int, ...]:
        if kind == "group":
            return self._group_parents.get(index, ())
        names = self._group_names
        if kind == "user":
            traits = self._user_traits(index)
            groups: list[int] = []
            if traits.guest:
                groups.append(names["External Guests"])
            if traits.department is not None:
                groups.append(self._dept_group(traits.department))
                if traits.department == "Marketing":
                    groups.append(names["Contoso Marketing Team"])
            if traits.platform_team:
                groups.append(names["Team - Platform"])
            if index < 8 and not traits.guest:
                groups.append(names["Executives"])
            if traits.project_phoenix:
                groups.append(names["Project Phoenix"])
            return tuple(groups)
        device = self._device_traits(index)
        groups = []
        by_trust = {
            "AzureAd": "Devices - Autopilot",
            "ServerAd": "Devices - Hybrid Joined",
            "Workplace": "Devices - BYOD",
        }
        if device.trust_type is not None:
            groups.append(names[by_trust[device.trust_type]])
        if device.project_phoenix:
            groups.append(names["Project Phoenix"])
        return tuple(groups)

    @property
    def _group_names(self) -> dict[str, int]:
        return {spec.name: i for i, spec in enumerate(self._group_specs)}

    def _build_group(self, index: int) -> dict[str, Any]:
        spec = self._group_specs[index]
        draw = self._draw(b"group", index)
        nick = _fold(spec.name).lower()
        mail = f"{nick}@{self.domain}" if spec.unified else None
        created = 200 + draw.below(2000)
        return {
            "id": self.object_id("group", index),
            "displayName": spec.name,
            "description": spec.description,
            "mail": mail,
            "mailEnabled": spec.unified,
            "mailNickname": nick,
            "securityEnabled": not spec.unified,
            "groupTypes": ["Unified"] if spec.unified else [],
            "createdDateTime": self._ago(created),
            "renewedDateTime": self._ago(created / 2),
            "visibility": "Private" if spec.unified else None,
            "membershipRule": None,
            "membershipRuleProcessingState": None,
            "classification": None,
            "isAssignableToRole": None,
            "proxyAddresses": [f"SMTP:{mail}"] if mail else [],
            "securityIdentifier": f"S-1-12-1-{1000000 + index}-{draw.below(1 << 31)}",
            "onPremisesSyncEnabled": True if spec.synced else None,
            "onPremisesLastSyncDateTime": self._ago(draw.below(7200) / 86400)
            if spec.synced
            else None,
            "onPremisesSamAccountName": nick[:20] if spec.synced else None,
            "onPremisesDomainName": f"corp.{self.domain}" if spec.synced else None,
            "resourceBehaviorOptions": [],
            "resourceProvisioningOptions": ["Team"] if spec.unified else [],
            "creationOptions": [],
        }

    # ---- licences ---------------------------------------------------------------------------

    def subscribed_skus(self) -> list[dict[str, Any]]:
        # consumedUnits is an estimate from the generator's licence rates, not a count: counting
        # would mean generating every user.
        shares = {
            "SPE_E3": 0.55,
            "ENTERPRISEPACK": 0.30,
            "SPE_E5": 0.15,
            "EMS": 0.15,
            "POWER_BI_PRO": 0.20,
            "FLOW_FREE": 0.10,
        }
        licensed = self._users * 0.95 * 0.75
        return [
            {
                "accountName": self._name.upper(),
                "accountId": self.tenant_id,
                "appliesTo": "User",
                "capabilityStatus": "Enabled",
                "consumedUnits": round(licensed * shares[part]),
                "id": f"{self.tenant_id}_{sku_id}",
                "prepaidUnits": {
                    "enabled": max(units, round(licensed * shares[part] * 1.1)),
                    "suspended": 0,
                    "warning": 0,
                    "lockedOut": 0,
                },
                "servicePlans": [dict(plan) for plan in plans],
                "skuId": sku_id,
                "skuPartNumber": part,
                "subscriptionIds": [(self._guid(b"subscription", n))],
            }
            for n, (sku_id, part, units, plans) in enumerate(catalog.SKUS)
        ]
