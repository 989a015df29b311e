"""The `mdm.*` asset keys and group, and the DuckDB memory the user source works in, shared by
its modules."""

from __future__ import annotations

import dagster as dg

MDM_GROUP = "mdm"
# What the user source asks of DuckDB can all spill to disk (loading its listings, the models'
# sorts, the ledger's fold and the anti-join of new recipients), so it works within a budget that
# does not grow with the tenant. At the warehouse's 512 MB, DuckDB's buffers filled up at 1M users
# and the invitation step peaked at 1,157 MiB against 744 at 200k (benchmarks/graph_time.py); at
# 256 MB, 891 MiB. The connector's staging keeps 512 MB: an ordered string_agg per user cannot
# spill, and at 256 MB it ran out of memory at 200k users.
USER_SOURCE_MEMORY_LIMIT = "192MB"


def mdm_key(table: str) -> dg.AssetKey:
    return dg.AssetKey([MDM_GROUP, table])
