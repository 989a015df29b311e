"""Microsoft's vocabulary the pipeline relies on, written once: object ids and device join types.

Settings validate against it, the SQL models receive it as a bound parameter, and the checks
validate the published labels with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# An Entra object id, tenant id or client id (no braces, any case).
GUID_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def is_guid(text: str) -> bool:
    return GUID_RE.fullmatch(text) is not None


@dataclass(frozen=True)
class JoinType:
    """One value of Graph's `device.trustType`, the option naming it, and the admin centre label."""

    trust_type: str
    option: str  # what `devices.join_types` lists
    label: str  # what `Device.JoinType` publishes


JOIN_TYPES = (
    JoinType("Workplace", "entra_registered", "Microsoft Entra registered"),
    JoinType("AzureAd", "entra_joined", "Microsoft Entra joined"),
    JoinType("ServerAd", "hybrid_entra_joined", "Hybrid Microsoft Entra joined"),
)
JOIN_TYPE_OPTIONS = tuple(join_type.option for join_type in JOIN_TYPES)
JOIN_TYPE_LABELS = tuple(join_type.label for join_type in JOIN_TYPES)

# The actions on device and people records (docs/actions.md): config `actions.allowed` lists
# some of them; entra_pipeline/actions/catalog.py says what each sends.
ACTION_NAMES = (
    "device.disable",
    "device.enable",
    "device.delete",
    "user.disable",
    "user.enable",
    "user.revoke_sessions",
)
