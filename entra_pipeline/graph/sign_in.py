"""The sign-in activity pass: users' `signInActivity`, paced under Graph's limit of 10
requests a minute, in full or (incremental) only for users who signed in since a time.
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import UTC, datetime
from pathlib import Path

from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import SIGN_IN_ACTIVITY
from entra_pipeline.graph.listing import Extracted, extract_collection
from entra_pipeline.graph.partitions import count
from entra_pipeline.graph.throttle import PACE_MARGIN

logger = logging.getLogger(__name__)


def extract_sign_in_activity(
    client: GraphClient,
    workdir: Path,
    *,
    per_minute: float = 10,
    cancel: threading.Event | None = None,
    since: datetime | None = None,
) -> Extracted:
    """The sign-in activity pass, paced at `per_minute` requests so that Graph's limit of 10 a
    minute never answers 429; its projected duration is logged before the first page.

    With `since`, only the users who signed in (interactively or not) at or after it: one
    filtered listing per property, into one file (a user in both is de-duplicated at load)."""
    client.gate.pace(SIGN_IN_ACTIVITY.table, per_minute)
    if since is not None:
        return _sign_ins_since(client, workdir, since, cancel)
    # Counted under a label of its own: this request reads no signInActivity and is not paced.
    users = count(client, SIGN_IN_ACTIVITY, None, label=f"{SIGN_IN_ACTIVITY.table} (count)")
    pages = max(1, math.ceil(users / SIGN_IN_ACTIVITY.page_size))
    minutes = (pages - 1) / per_minute * PACE_MARGIN
    logger.info(
        "sign_in_activity: %s users, %d pages of %d, paced at %g requests a minute: about %s",
        f"{users:,}",
        pages,
        SIGN_IN_ACTIVITY.page_size,
        per_minute,
        f"{minutes:,.0f} min" if minutes >= 10 else f"{minutes:.1f} min",
    )
    return extract_collection(client, SIGN_IN_ACTIVITY, workdir, cancel=cancel)


SIGN_IN_PROPERTIES = ("lastSignInDateTime", "lastNonInteractiveSignInDateTime")


def _sign_ins_since(
    client: GraphClient, workdir: Path, since: datetime, cancel: threading.Event | None
) -> Extracted:
    # `$filter=signInActivity/lastSignInDateTime ge ...` is how Microsoft documents reading
    # recent sign-ins (learn.microsoft.com/graph/api/resources/signinactivity); OData datetime
    # literals are unquoted.
    at = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    logger.info("sign_in_activity: only users who signed in since %s (incremental pass)", at)
    queries = [
        {**SIGN_IN_ACTIVITY.first_page, "$filter": f"signInActivity/{prop} ge {at}"}
        for prop in SIGN_IN_PROPERTIES
    ]
    return extract_collection(client, SIGN_IN_ACTIVITY, workdir, cancel=cancel, queries=queries)
