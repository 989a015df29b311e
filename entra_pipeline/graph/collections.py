"""The Graph collections the sync reads, and the raw DuckDB tables they land in.

This is the one list of Graph properties the pipeline selects: the staging models and the mapping
read only these raw columns, and the `$select` of every call is built from here. Timestamps stay
strings in raw (Graph sends `""` and `0001-01-01T00:00:00Z` for "never"); staging parses them.
Nested objects (licences, manager, owners, extension attributes) are kept as JSON. Each table and
column is described here, once (from Microsoft Graph's resource reference); the descriptions become
the raw tables' DuckDB comments and their Dagster column descriptions.
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
    description: str  # what the table holds
    docs: dict[str, str]  # Graph property -> what it means (every column, no other)
    expand: str | None = None  # $expand value, if any
    permission: str = ""  # application permission the call needs
    page_size: int = 999  # $top; Graph caps pages at 100 with $expand
    extra_select: tuple[str, ...] = field(default=())  # selected but not a column of its own
    key: tuple[str, ...] = ("id",)  # what identifies a row: a key listed twice keeps its first
    # A property `$filter` takes ge/le on: a large listing is split into ranges of it (partitions.py).
    partition_key: str | None = None
    partition_nullable: bool = False  # objects without it need a partition of their own
    # Graph takes `$filter` here only as an advanced query (ConsistencyLevel: eventual and
    # `$count=true` on every request): a group's members by type (group-list-transitivemembers).
    advanced_query: bool = False

    def __post_init__(self) -> None:
        if list(self.docs) != list(self.columns):
            missing = [c for c in self.columns if c not in self.docs]
            extra = [c for c in self.docs if c not in self.columns]
            raise ValueError(
                f"{self.table}: document every column, in order "
                f"(undocumented: {missing}, not columns: {extra})"
            )

    @property
    def select(self) -> str:
        props = [c for c in self.columns if c not in _EXPANDED]
        return ",".join([*props, *self.extra_select])

    @property
    def first_page(self) -> dict[str, str | int]:
        """The query of the collection's first page: `$select`, `$top`, and `$expand` if any."""
        params: dict[str, str | int] = {"$select": self.select, "$top": self.page_size}
        if self.expand:
            params["$expand"] = self.expand
        return params

    def with_properties(self, properties: Iterable[str]) -> Collection:
        """This collection also selecting `properties` (e.g. directory extension attributes), each
        kept as a JSON column: such a property may hold a string, a number, a list or an object."""
        extra = {name: "JSON" for name in properties if name not in self.columns}
        docs = {
            name: f"The {name} property (a directory extension or other custom attribute) as "
            "Graph returns it, as JSON: a string, number, list or object; null when unset."
            for name in extra
        }
        return replace(self, columns={**self.columns, **extra}, docs={**self.docs, **docs})


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
    description="Every user of the tenant as Graph returns it (GET /users), with licences and "
    "manager.",
    docs={
        "id": "Unique identifier of the user: its Microsoft Entra object id (a GUID).",
        "userPrincipalName": "User principal name (UPN): the Internet-style sign-in name, "
        "alias@domain.",
        "displayName": "Name shown in the address book, usually first and last name.",
        "givenName": "Given (first) name.",
        "surname": "Surname (family or last name).",
        "mail": "Primary SMTP address; null for users without a mailbox.",
        "jobTitle": "Job title.",
        "department": "Department the user works in.",
        "officeLocation": "Office location in the user's place of business.",
        "mobilePhone": "Primary cellular phone number.",
        "businessPhones": "Business phone numbers (Graph allows one to be set).",
        "employeeId": "Employee identifier assigned by the organization.",
        "employeeType": "Enterprise worker type, e.g. Employee, Contractor, Consultant, Vendor.",
        "accountEnabled": "True when the account can sign in, false when it is blocked.",
        "userType": "Member or Guest.",
        "createdDateTime": "When the user was created, as Graph sent it (ISO 8601 UTC text; "
        "staging parses it).",
        "onPremisesSyncEnabled": "True when synchronized from on-premises Active Directory; "
        "null when never synchronized.",
        "onPremisesLastSyncDateTime": "Last synchronization from on-premises Active Directory, "
        "as Graph sent it (text).",
        "onPremisesExtensionAttributes": "extensionAttribute1..15 (Exchange custom attributes) "
        "as one JSON object.",
        "city": "City where the user is located.",
        "state": "State or province of the user's address.",
        "country": "Country or region where the user is located.",
        "usageLocation": "Two-letter country code (ISO 3166) where services are used; needed "
        "to assign licences.",
        "companyName": "Company name the user is associated with.",
        "assignedLicenses": "Licences assigned to the user, as JSON: a list of {skuId, "
        "disabledPlans}.",
        "manager": "The user's manager from $expand=manager, as JSON {id, userPrincipalName}; "
        "null when none.",
    },
    expand="manager($select=id,userPrincipalName)",
    permission="User.Read.All",
    page_size=999,
    partition_key="userPrincipalName",  # always set
)

SIGN_IN_ACTIVITY = Collection(
    table="sign_in_activity",
    path="/users",
    columns={
        "id": "VARCHAR",
        "signInActivity": "JSON",
    },
    description="Each user's sign-in activity (GET /users?$select=signInActivity; needs "
    "AuditLog.Read.All and Microsoft Entra ID P1).",
    docs={
        "id": "Unique identifier of the user (raw.users.id).",
        "signInActivity": "Last interactive, non-interactive and successful sign-in "
        "(lastSignInDateTime, lastNonInteractiveSignInDateTime, lastSuccessfulSignInDateTime "
        "and their request ids) as JSON.",
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
    description="Every device of the tenant as Graph returns it (GET /devices), with registered "
    "owners.",
    docs={
        "id": "Unique identifier of the device object: its Microsoft Entra object id.",
        "deviceId": "Identifier set by Azure Device Registration Service at registration (the "
        "id Intune and the device itself know); not the object id.",
        "displayName": "Display name of the device.",
        "operatingSystem": "Operating system type, e.g. Windows, iOS, AndroidForWork, MacMDM.",
        "operatingSystemVersion": "Operating system version.",
        "trustType": "How the device joined: Workplace (registered), AzureAd (joined) or "
        "ServerAd (hybrid joined).",
        "accountEnabled": "True when the device account is enabled.",
        "isCompliant": "True when the device complies with the MDM compliance policies.",
        "isManaged": "True when an MDM app (Intune or another) manages the device.",
        "manufacturer": "Manufacturer of the device.",
        "model": "Model of the device.",
        "approximateLastSignInDateTime": "Approximate last sign-in, as Graph sent it (text); "
        "refreshed only when about 14 days old (Microsoft's stale-device guidance).",
        "registrationDateTime": "When the device was registered, as Graph sent it (text).",
        "onPremisesLastSyncDateTime": "Last synchronization from on-premises Active Directory, "
        "as Graph sent it (text).",
        "registeredOwners": "Registered owners from $expand=registeredOwners, as JSON: a list "
        "of {id, userPrincipalName}.",
    },
    expand="registeredOwners($select=id,userPrincipalName)",
    permission="Device.Read.All",
    page_size=999,
    partition_key="displayName",
    partition_nullable=True,
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
    description="Every group of the tenant (GET /groups).",
    docs={
        "id": "Unique identifier of the group: its Microsoft Entra object id.",
        "displayName": "Display name of the group.",
        "description": "Optional description of the group.",
        "mail": "SMTP address of the group; null for groups without a mailbox.",
        "mailEnabled": "True for mail-enabled groups (Microsoft 365 and distribution groups).",
        "securityEnabled": "True for security groups (they can grant access).",
        "groupTypes": "Group types: Unified for a Microsoft 365 group, DynamicMembership for "
        "dynamic membership; empty for a security or distribution group.",
        "createdDateTime": "When the group was created, as Graph sent it (text).",
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
    description="The tenant's licence SKUs (GET /subscribedSkus): skuId to skuPartNumber.",
    docs={
        "skuId": "Unique identifier of the SKU (the skuId of assignedLicenses).",
        "skuPartNumber": "The SKU's part number, e.g. ENTERPRISEPACK for Office 365 E3.",
        "capabilityStatus": "Enabled, Warning, Suspended, Deleted or LockedOut.",
        "consumedUnits": "Number of licences of this SKU assigned.",
    },
    permission="LicenseAssignment.Read.All",
    key=("skuId",),
)

# The MDM user source (docs/user-source.md) reads every user without the manager expand, which would
# cap its pages at 100; the configured custom attributes are added with `with_properties`. Not part
# of ALL: the connector does not extract it.
_DIRECTORY_PROPERTIES = (
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
DIRECTORY_USERS = Collection(
    table="directory_users",
    path="/users",
    columns={name: USERS.columns[name] for name in _DIRECTORY_PROPERTIES},
    description="Every user of the tenant, as the MDM user source reads it (no manager).",
    docs={name: USERS.docs[name] for name in _DIRECTORY_PROPERTIES},
    permission=USERS.permission,
    partition_key=USERS.partition_key,
)

# group_members is built from /groups/{id}/transitiveMembers of each group (`$select=id`), one row
# per (group, member); member_type is 'user', 'device' or 'group' (from @odata.type).
GROUP_MEMBERS = Collection(
    table="group_members",
    path="/groups/{id}/transitiveMembers",
    columns={"group_id": "VARCHAR", "member_id": "VARCHAR", "member_type": "VARCHAR"},
    description="Transitive members (direct and nested) of groups: of the connector's filter "
    "groups in raw, of every group for the MDM user source (GET /groups/{id}/transitiveMembers).",
    docs={
        "group_id": "Object id of the group.",
        "member_id": "Object id of the member: a user, device or group, direct or nested.",
        "member_type": "user, device or group (from the member's @odata.type).",
    },
    permission="GroupMember.Read.All",
    key=("group_id", "member_id"),
)

# A large group's transitive members are listed one member type at a time (an OData cast), each
# type split by the key its own collection is partitioned by; groups nested in it are few.
MEMBER_TYPES: dict[str, Collection | None] = {"user": USERS, "device": DEVICES, "group": None}


def group_member_listing(group_id: str, member_type: str | None = None) -> Collection:
    """The transitive members of one group, of `member_type` only (the cast
    `/transitiveMembers/microsoft.graph.<type>`) or of every type: what partitions.py plans and
    counts (`$select=id`; landed as `raw.group_members` rows)."""
    path = GROUP_MEMBERS.path.format(id=group_id)
    keyed = MEMBER_TYPES.get(member_type) if member_type else None
    return Collection(
        table=GROUP_MEMBERS.table,
        path=f"{path}/microsoft.graph.{member_type}" if member_type else path,
        columns={"id": "VARCHAR"},
        description=f"Transitive members of group {group_id}",
        docs={"id": "Object id of the member."},
        permission=GROUP_MEMBERS.permission,
        partition_key=keyed.partition_key if keyed else None,
        partition_nullable=keyed.partition_nullable if keyed else False,
        advanced_query=True,
    )


ALL = (USERS, SIGN_IN_ACTIVITY, DEVICES, GROUPS, SUBSCRIBED_SKUS)
