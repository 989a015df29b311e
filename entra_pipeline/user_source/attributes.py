"""Custom attributes of the user source: where each is read on the Graph user, how many users have
it, the seed's two notifications and the warning check that reports coverage."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dagster as dg
import duckdb

from entra_pipeline.graph.collections import DIRECTORY_USERS, Collection
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.user_source.tables import mdm_key
from entra_pipeline.warehouse.resource import Warehouse

ATTRIBUTES_CHECK = "mdm_custom_attributes_synchronized"
EXAMPLES_SHOWN = 5  # UPNs in a notification's details
EXAMPLES_IN_MESSAGE = 2

_ON_PREMISES_ATTRIBUTE = re.compile(r"^extensionAttribute(?:[1-9]|1[0-5])$")
_DIRECTORY_EXTENSION = re.compile(r"^extension_[0-9a-fA-F]{32}_\w+$")

AttributeSource = Literal["property", "onPremisesExtensionAttributes", "directory_extension"]


@dataclass(frozen=True)
class CustomAttribute:
    """A configured custom attribute and where on the Graph user it is read."""

    name: str
    source: AttributeSource

    @property
    def selected(self) -> bool:
        """Whether the name itself goes into `$select` (extensionAttributeN lives in an object)."""
        return self.source != "onPremisesExtensionAttributes"


def custom_attribute(name: str) -> CustomAttribute:
    if _ON_PREMISES_ATTRIBUTE.match(name):
        return CustomAttribute(name, "onPremisesExtensionAttributes")
    if _DIRECTORY_EXTENSION.match(name):
        return CustomAttribute(name, "directory_extension")
    return CustomAttribute(name, "property")


def directory_users(attributes: Sequence[CustomAttribute]) -> Collection:
    """The users collection with every custom attribute that is a property of its own selected."""
    return DIRECTORY_USERS.with_properties(a.name for a in attributes if a.selected)


def attribute_parameters(attributes: Sequence[CustomAttribute]) -> list[dict[str, str]]:
    """`$custom_attributes` of mdm/user_attributes.sql: (name, source) in configured order."""
    return [{"name": a.name, "source": a.source} for a in attributes]


@dataclass(frozen=True)
class AttributeCoverage:
    """How many users have no value for one configured custom attribute, with a few of them."""

    attribute: str
    users: int
    missing: int
    examples: tuple[str, ...]  # UPNs of users without a value, first few in UPN order

    @property
    def missing_for_all(self) -> bool:
        return self.users > 0 and self.missing == self.users

    @property
    def missing_for_some(self) -> bool:
        return 0 < self.missing < self.users

    def details(self) -> dict[str, Any]:
        return {"users": self.users, "missing": self.missing, "examples": list(self.examples)}


def attribute_coverage(
    con: duckdb.DuckDBPyConnection, attributes: Sequence[str]
) -> list[AttributeCoverage]:
    """The coverage of each configured attribute in mdm.user_attributes, in configured order."""
    rows = con.execute(
        "SELECT attribute, count(*), count(*) FILTER (WHERE value IS NULL), "
        "(list(coalesce(userPrincipalName, user_id) ORDER BY userPrincipalName, user_id) "
        "FILTER (WHERE value IS NULL))[1:$shown] "
        "FROM mdm.user_attributes GROUP BY attribute",
        {"shown": EXAMPLES_SHOWN},
    ).fetchall()
    found = {
        attribute: AttributeCoverage(attribute, users, missing, tuple(examples or ()))
        for attribute, users, missing, examples in rows
    }
    return [found.get(a, AttributeCoverage(a, 0, 0, ())) for a in attributes]


def notify_attribute_coverage(warehouse: Warehouse, coverage: Sequence[AttributeCoverage]) -> None:
    """The seed's two notifications: attributes no user has, and attributes some users lack."""
    none_have = [c for c in coverage if c.missing_for_all]
    some_lack = [c for c in coverage if c.missing_for_some]
    if none_have:
        names = ", ".join(c.attribute for c in none_have)
        warehouse.notify(
            "attributes_not_synchronized_all",
            "warning",
            f"Custom attribute(s) {names} have no value for any of the {none_have[0].users} "
            "users: check the names in user_source.custom_attributes (a directory extension is "
            "extension_<appId without dashes>_<name>) and that Entra ID fills them in.",
            {"attributes": {c.attribute: c.details() for c in none_have}},
        )
    if some_lack:
        counts = ", ".join(
            f"{c.attribute} ({c.missing} of {c.users} users, e.g. "
            f"{', '.join(c.examples[:EXAMPLES_IN_MESSAGE])})"
            for c in some_lack
        )
        warehouse.notify(
            "attributes_not_synchronized_some",
            "warning",
            f"Custom attribute(s) have no value for some users: {counts}; features that use "
            "them may not work as expected for those users.",
            {"attributes": {c.attribute: c.details() for c in some_lack}},
        )


@dg.asset_check(
    asset=mdm_key("user_attributes"),
    name=ATTRIBUTES_CHECK,
    blocking=False,
    description="Every configured custom attribute has a value for every user (a warning: the "
    "users are synchronized either way).",
)
def mdm_custom_attributes_synchronized(
    warehouse: Warehouse, connector: ConnectorResource
) -> dg.AssetCheckResult:
    with warehouse.reader() as con:
        coverage = attribute_coverage(con, connector.settings.user_source.custom_attributes)
    lacking = [c for c in coverage if c.missing]
    return dg.AssetCheckResult(
        passed=not lacking,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            "; ".join(
                f"{c.attribute}: missing for {'every' if c.missing_for_all else 'some'} user "
                f"({c.missing} of {c.users})"
                for c in lacking
            )
            or None
        ),
        metadata={
            "attributes": dg.MetadataValue.json({c.attribute: c.details() for c in coverage}),
            "attributes_missing_for_all": [c.attribute for c in coverage if c.missing_for_all],
            "attributes_missing_for_some": [c.attribute for c in coverage if c.missing_for_some],
        },
    )
