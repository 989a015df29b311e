"""The `mdm.*` asset keys and group, shared by the user source's modules."""

from __future__ import annotations

import dagster as dg

MDM_GROUP = "mdm"


def mdm_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([MDM_GROUP, table])
