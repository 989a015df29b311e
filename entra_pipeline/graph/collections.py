"""The Graph collections the sync reads, and the raw DuckDB tables they land in.

This is the one list of Graph properties the pipeline selects: the staging models and the mapping
read only these raw columns, and the `$select` of every call is built from here. Timestamps stay
strings in raw (Graph sends `""` and `0001-01-01T00:00:00Z` for "never"); staging parses them.
Nested objects (licences, manager, owners, extension attributes) are kept as JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Collection:
    """One Graph collection and the raw table it lands in."""

    table: str  # raw table name, without schema
    path: str  # Graph path under /v1.0
    columns: dict[str, str]  # Graph property -> DuckDB type, in table order
    expand: str | None = None  # $expand value, if any
    permission: str = ""  # application permission the call needs
    page_size: int = 999  # $top; Graph caps pages at 100 with $expand
    extra_select: tuple[str, ...] = field(default=())  # selected but not a column of its own
    key: tuple[str, ...] = ("id",)  # what identifies a row: a key listed twice keeps its first

    @property
    def select(self) -> str:
        props = [c for c in self.columns if c not in _EXPANDED]
        return ",".join([*props, *self.extra_select])

    def with_properties(self, properties: Iterable[str]) -> Collection:
        """This collection also selecting `properties` (e.g. directory extension attributes), each
        kept as a JSON column: such a property may hold a string, a number, a list or an object."""
        extra = {name: "JSON" for name in properties if name not in self.columns}
        return replace(self, columns={**self.columns, **extra})


# Properties that come from $expand rather than $select.
_EXPANDED = {"manager", "registeredOwners"}

USERS = Collection(
    table="users",
    path="/users",
    columns={
        "id": "VARCHAR",
        "userPrincipalName": "VARCHAR",
        "displayName": "VARCHAR",
        "givenName": "VARCHAR",
        "surname": "VARCHAR",
        "mail": "VARCHAR",
        "jobTitle": "VARCHAR",
        "department": "VARCHAR",
        "officeLocation": "VARCHAR",
        "mobilePhone": "VARCHAR",
        "businessPhones": "VARCHAR[]",
        "employeeId": "VARCHAR",
        "employeeType": "VARCHAR",
        "accountEnabled": "BOOLEAN",
        "userType": "VARCHAR",
        "createdDateTime": "VARCHAR",
        "onPremisesSyncEnabled": "BOOLEAN",
        "onPremisesLastSyncDateTime": "VARCHAR",
        "onPremisesExtensionAttributes": "JSON",
        "city": "VARCHAR",
        "state": "VARCHAR",
        "country": "VARCHAR",
        "usageLocation": "VARCHAR",
        "companyName": "VARCHAR",
        "assignedLicenses": "JSON",
        "manager": "JSON",
    },
    expand="manager($select=id,userPrincipalName)",
    permission="User.Read.All",
    page_size=999,
)

SIGN_IN_ACTIVITY = Collection(
    table="sign_in_activity",
    path="/users",
    columns={
        "id": "VARCHAR",
        "signInActivity": "JSON",
    },
    permission="AuditLog.Read.All",
    page_size=500,
)

DEVICES = Collection(
    table="devices",
    path="/devices",
    columns={
        "id": "VARCHAR",
        "deviceId": "VARCHAR",
        "displayName": "VARCHAR",
        "operatingSystem": "VARCHAR",
        "operatingSystemVersion": "VARCHAR",
        "trustType": "VARCHAR",
        "accountEnabled": "BOOLEAN",
        "isCompliant": "BOOLEAN",
        "isManaged": "BOOLEAN",
        "manufacturer": "VARCHAR",
        "model": "VARCHAR",
        "approximateLastSignInDateTime": "VARCHAR",
        "registrationDateTime": "VARCHAR",
        "onPremisesLastSyncDateTime": "VARCHAR",
        "registeredOwners": "JSON",
    },
    expand="registeredOwners($select=id,userPrincipalName)",
    permission="Device.Read.All",
    page_size=999,
)

GROUPS = Collection(
    table="groups",
    path="/groups",
    columns={
        "id": "VARCHAR",
        "displayName": "VARCHAR",
        "description": "VARCHAR",
        "mail": "VARCHAR",
        "mailEnabled": "BOOLEAN",
        "securityEnabled": "BOOLEAN",
        "groupTypes": "VARCHAR[]",
        "createdDateTime": "VARCHAR",
    },
    # Least privilege: GroupMember.Read.All "allows the app to list groups, read basic
    # properties and read membership of all groups" (Microsoft Graph permissions reference);
    # Group.Read.All also works but reads more than the pipeline needs.
    permission="GroupMember.Read.All",
)

SUBSCRIBED_SKUS = Collection(
    table="subscribed_skus",
    path="/subscribedSkus",
    columns={
        "skuId": "VARCHAR",
        "skuPartNumber": "VARCHAR",
        "capabilityStatus": "VARCHAR",
        "consumedUnits": "INTEGER",
    },
    permission="LicenseAssignment.Read.All",
    key=("skuId",),
)

# The MDM user source (SPEC 4) reads every user without the manager expand, which would cap its
# pages at 100; the configured custom attributes are added with `with_properties`. Not part of ALL:
# the connector does not extract it.
DIRECTORY_USERS = Collection(
    table="directory_users",
    path="/users",
    columns={
        name: USERS.columns[name]
        for name in (
            "id",
            "userPrincipalName",
            "displayName",
            "givenName",
            "surname",
            "mail",
            "accountEnabled",
            "userType",
            "createdDateTime",
            "onPremisesSyncEnabled",
            "onPremisesExtensionAttributes",
        )
    },
    permission=USERS.permission,
)

# group_members is built from /groups/{id}/transitiveMembers of each group (`$select=id`), one row
# per (group, member); member_type is 'user', 'device' or 'group' (from @odata.type).
GROUP_MEMBERS = Collection(
    table="group_members",
    path="/groups/{id}/transitiveMembers",
    columns={"group_id": "VARCHAR", "member_id": "VARCHAR", "member_type": "VARCHAR"},
    permission="GroupMember.Read.All",
    key=("group_id", "member_id"),
)

ALL = (USERS, SIGN_IN_ACTIVITY, DEVICES, GROUPS, SUBSCRIBED_SKUS)
