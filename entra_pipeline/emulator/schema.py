"""The Graph v1.0 properties the emulator knows per object type, and Graph's default `$select` sets.

A `$select` of a known property the object lacks answers null (or [] for collections), as Graph does.
"""

from __future__ import annotations

from typing import Any

USER_PROPERTIES = (
    "id", "accountEnabled", "ageGroup", "assignedLicenses", "assignedPlans", "businessPhones",
    "city", "companyName", "consentProvidedForMinor", "country", "createdDateTime",
    "creationType", "deletedDateTime", "department", "displayName", "employeeHireDate",
    "employeeId", "employeeLeaveDateTime", "employeeOrgData", "employeeType",
    "externalUserState", "externalUserStateChangeDateTime", "faxNumber", "givenName",
    "identities", "imAddresses", "isResourceAccount", "jobTitle", "lastPasswordChangeDateTime",
    "legalAgeGroupClassification", "licenseAssignmentStates", "mail", "mailNickname",
    "mobilePhone", "officeLocation", "onPremisesDistinguishedName", "onPremisesDomainName",
    "onPremisesExtensionAttributes", "onPremisesImmutableId", "onPremisesLastSyncDateTime",
    "onPremisesProvisioningErrors", "onPremisesSamAccountName", "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled", "onPremisesUserPrincipalName", "otherMails", "passwordPolicies",
    "postalCode", "preferredDataLocation", "preferredLanguage", "proxyAddresses",
    "securityIdentifier", "showInAddressList", "signInActivity", "signInSessionsValidFromDateTime",
    "state", "streetAddress", "surname", "usageLocation", "userPrincipalName", "userType",
)  # fmt: skip

# Graph's answer to GET /users without $select (learn.microsoft.com, "user resource type").
USER_DEFAULT_SELECT = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
)  # fmt: skip

DEVICE_PROPERTIES = (
    "id", "deletedDateTime", "accountEnabled", "approximateLastSignInDateTime",
    "complianceExpirationDateTime", "createdDateTime", "deviceCategory", "deviceId",
    "deviceMetadata", "deviceOwnership", "deviceVersion", "displayName", "enrollmentProfileName",
    "enrollmentType", "isCompliant", "isManaged", "isRooted", "managementType", "manufacturer",
    "mdmAppId", "model", "onPremisesLastSyncDateTime", "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled", "operatingSystem", "operatingSystemVersion", "physicalIds",
    "profileType", "registrationDateTime", "systemLabels", "trustType", "extensionAttributes",
    "alternativeSecurityIds",
)  # fmt: skip

GROUP_PROPERTIES = (
    "id", "deletedDateTime", "classification", "createdDateTime", "creationOptions",
    "description", "displayName", "expirationDateTime", "groupTypes", "isAssignableToRole",
    "mail", "mailEnabled", "mailNickname", "membershipRule", "membershipRuleProcessingState",
    "onPremisesDomainName", "onPremisesLastSyncDateTime", "onPremisesNetBiosName",
    "onPremisesSamAccountName", "onPremisesSecurityIdentifier", "onPremisesSyncEnabled",
    "preferredDataLocation", "preferredLanguage", "proxyAddresses", "renewedDateTime",
    "resourceBehaviorOptions", "resourceProvisioningOptions", "securityEnabled",
    "securityIdentifier", "theme", "visibility", "onPremisesProvisioningErrors",
    "serviceProvisioningErrors",
)  # fmt: skip

SKU_PROPERTIES = (
    "accountName", "accountId", "appliesTo", "capabilityStatus", "consumedUnits", "id",
    "prepaidUnits", "servicePlans", "skuId", "skuPartNumber", "subscriptionIds",
)  # fmt: skip

PROPERTIES = {
    "user": USER_PROPERTIES,
    "device": DEVICE_PROPERTIES,
    "group": GROUP_PROPERTIES,
    "subscribedSku": SKU_PROPERTIES,
}

# Without $select Graph answers a short default set for users and (nearly) everything otherwise;
# signInActivity is never in a default set.
DEFAULT_SELECT = {
    "user": USER_DEFAULT_SELECT,
    "device": DEVICE_PROPERTIES,
    "group": GROUP_PROPERTIES,
    "subscribedSku": SKU_PROPERTIES,
}

COLLECTION_PROPERTIES = frozenset(
    {
        "assignedLicenses", "assignedPlans", "businessPhones", "identities", "imAddresses",
        "licenseAssignmentStates", "otherMails", "proxyAddresses", "onPremisesProvisioningErrors",
        "groupTypes", "resourceBehaviorOptions", "resourceProvisioningOptions",
        "serviceProvisioningErrors", "creationOptions", "physicalIds", "systemLabels",
        "alternativeSecurityIds", "servicePlans", "subscriptionIds",
    }
)  # fmt: skip

EXTENSION_ATTRIBUTE_NAMES = tuple(f"extensionAttribute{n}" for n in range(1, 16))


def empty_extension_attributes() -> dict[str, Any]:
    """`onPremisesExtensionAttributes` / device `extensionAttributes` with nothing set."""
    return dict.fromkeys(EXTENSION_ATTRIBUTE_NAMES)


def absent_value(prop: str) -> Any:
    """What Graph answers for a selected property the object has no value for."""
    if prop in COLLECTION_PROPERTIES:
        return []
    if prop in ("onPremisesExtensionAttributes", "extensionAttributes"):
        return empty_extension_attributes()
    return None
