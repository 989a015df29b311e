"""Fixed vocabularies the synthetic tenant draws from: names, departments, SKUs, device models.

Real Microsoft SKU ids and part numbers, so licence mappings behave as they would on a real tenant.
"""

from __future__ import annotations

from typing import Any

# (givenName, surname) pools mix ASCII with accents, ø, ü, ß and CJK on purpose.
GIVEN_NAMES = (
    "Adele", "Alex", "Ana", "Åsa", "Bjørn", "Chloé", "Daniel", "Diego", "Emily", "François",
    "Grace", "Hannah", "Hiroshi", "Isabel", "Jürgen", "José", "Kai", "Laura", "Łukasz", "Mei",
    "Megan", "Miriam", "Nestor", "Noël", "Olivia", "Pradeep", "Renée", "Søren", "Sofía", "Thomas",
    "Wei", "Yuki", "Zoë", "Ömer", "Amelia", "Lee", "Patti", "Lidia", "Joni", "Isaiah",
)  # fmt: skip

SURNAMES = (
    "Allen", "Bauer", "Brown", "Clarke", "Dubois", "Ericsson", "Fernández", "García", "Gröning",
    "Hansen", "Jensen", "Kowalski", "Lambert", "Li", "Müller", "Nakamura", "Nguyen", "O'Brien",
    "Østergaard", "Patel", "Quiñones", "Rossi", "Schmidt", "Strauß", "Suzuki", "Taylor",
    "Vance", "Wagner", "Yılmaz", "Zhang",  # noqa: RUF001 (Turkish dotless i, on purpose)
)  # fmt: skip

# Whole CJK names (surname first, no givenName/surname split in the display name).
CJK_NAMES = (("太郎", "佐藤"), ("花子", "鈴木"), ("伟", "王"), ("娜", "李"), ("민준", "김"))

ASCII_FOLD = {
    "ß": "ss",
    "ø": "o",
    "Ø": "O",
    "æ": "ae",
    "Æ": "AE",
    "ł": "l",
    "Ł": "L",
    "ı": "i",  # noqa: RUF001
    "'": "",
}

DEPARTMENTS = (
    "Sales", "Marketing", "Engineering", "Finance", "Human Resources", "Legal", "Operations",
    "Customer Support", "IT", "Research",
)  # fmt: skip

# Regions group departments: the nested "All Employees > Region > Department" tree.
REGIONS = {
    "EMEA": ("Sales", "Marketing", "Legal", "Human Resources", "Research"),
    "Americas": ("Engineering", "Finance", "Operations", "Customer Support", "IT"),
}

JOB_TITLES = {
    "Sales": ("Account Executive", "Sales Manager", "Sales Development Representative"),
    "Marketing": ("Marketing Specialist", "Content Strategist", "Marketing Manager"),
    "Engineering": ("Software Engineer", "Senior Software Engineer", "Engineering Manager"),
    "Finance": ("Accountant", "Financial Analyst", "Controller"),
    "Human Resources": ("HR Generalist", "Recruiter", "HR Business Partner"),
    "Legal": ("Counsel", "Paralegal", "Compliance Officer"),
    "Operations": ("Operations Analyst", "Logistics Coordinator", "Operations Manager"),
    "Customer Support": ("Support Engineer", "Support Lead", "Customer Success Manager"),
    "IT": ("Systems Administrator", "Service Desk Analyst", "IT Manager"),
    "Research": ("Research Scientist", "Data Scientist", "Research Director"),
}

# (city, state, country, usageLocation, office, phone prefix)
LOCATIONS = (
    ("Redmond", "WA", "United States", "US", "Building 18/2101", "+1 425 555 "),
    ("New York", "NY", "United States", "US", "Fifth Avenue 12", "+1 212 555 "),
    ("Toronto", "ON", "Canada", "CA", "Bay Street 3", "+1 416 555 "),
    ("München", "Bayern", "Germany", "DE", "Walter-Gropius-Straße 5", "+49 89 3176 "),
    ("Paris", "Île-de-France", "France", "FR", "Issy 39", "+33 1 5555 "),
    ("København", None, "Denmark", "DK", "Kanalvej 7", "+45 4489 "),
    ("Tokyo", None, "Japan", "JP", "Shinagawa 2-16", "+81 3 5555 "),
    ("São Paulo", "SP", "Brazil", "BR", "Av. Paulista 1000", "+55 11 5555 "),
)

GUEST_DOMAINS = ("fabrikam.com", "tailspintoys.com", "gmail.com", "outlook.com", "northwind.de")


def _plan(plan_id: str, name: str) -> dict[str, Any]:
    return {
        "servicePlanId": plan_id,
        "servicePlanName": name,
        "provisioningStatus": "Success",
        "appliesTo": "User",
    }


_EXCHANGE = _plan("efb87545-963c-4e0d-99df-69c6916d9eb0", "EXCHANGE_S_ENTERPRISE")
_SHAREPOINT = _plan("5dbe027f-2339-4123-9542-606e4d348a72", "SHAREPOINTENTERPRISE")
_TEAMS = _plan("57ff2da0-773e-42df-b2af-ffb7a2317929", "TEAMS1")
_AAD_P1 = _plan("41781fb2-bc02-4b7c-bd55-b576c07bb09d", "AAD_PREMIUM")
_INTUNE = _plan("c1ec4a95-1f05-45b3-a911-aa3fa01094f5", "INTUNE_A")
_BI = _plan("70d33638-9c74-4d01-bfd3-562de28bd4ba", "BI_AZURE_P2")
_FLOW = _plan("50e68c76-46c6-4674-81f9-75456511b170", "FLOW_P2_VIRAL")

# (skuId, skuPartNumber, prepaid enabled units, service plans)
SKUS = (
    ("05e9a617-0261-4cee-bb44-138d3ef5d965", "SPE_E3", 5000, (_EXCHANGE, _SHAREPOINT, _TEAMS, _AAD_P1, _INTUNE)),
    ("6fd2c87f-b296-42f0-b197-1e91e994b900", "ENTERPRISEPACK", 2500, (_EXCHANGE, _SHAREPOINT, _TEAMS)),
    ("06ebc4ee-1bb5-47dd-8120-11324bc54e06", "SPE_E5", 500, (_EXCHANGE, _SHAREPOINT, _TEAMS, _AAD_P1, _INTUNE, _BI)),
    ("efccb6f7-5641-4e0e-bd10-b4976e1bf68e", "EMS", 2500, (_AAD_P1, _INTUNE)),
    ("f8a1db68-be16-40ed-86d5-cb42ce701560", "POWER_BI_PRO", 1000, (_BI,)),
    ("f30db892-07e9-47e9-837c-80727f46fd3d", "FLOW_FREE", 10000, (_FLOW,)),
)  # fmt: skip

SKU_IDS = {part: sku_id for sku_id, part, _, _ in SKUS}

# (operatingSystem, versions, manufacturer/model pairs, name prefix) per trustType.
WINDOWS_VERSIONS = ("10.0.19045.4291", "10.0.22631.3447", "10.0.22621.3296", "10.0.26100.2033")
WINDOWS_MODELS = (
    ("Dell Inc.", "Latitude 7440"),
    ("LENOVO", "20XW0055GE"),
    ("HP", "HP EliteBook 840 G9"),
    ("Microsoft Corporation", "Surface Laptop 5"),
    (None, None),
)
SERVER_MODELS = (("VMware, Inc.", "VMware7,1"), ("Microsoft Corporation", "Virtual Machine"))
PERSONAL_DEVICES = (
    ("iOS", ("17.4.1", "16.7.7", "17.5"), ("Apple", "iPhone 15 Pro"), "iPhone"),
    ("iOS", ("17.4.1", "17.5"), ("Apple", "iPad Air"), "iPad"),
    ("Android", ("14.0", "13.0", "12.0"), ("samsung", "SM-S911B"), "Galaxy"),
    ("MacMDM", ("14.4.1", "13.6.6"), ("Apple", "MacBookPro18,3"), "MacBook"),
    ("Windows", WINDOWS_VERSIONS, ("Microsoft Corporation", "Surface Pro 9"), "DESKTOP"),
)
