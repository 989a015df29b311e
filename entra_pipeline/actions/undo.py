"""`act undo PLAN_ID`: a plan of its own that reverses what an applied plan did, where Graph
allows it (a disabled device or user enabled again; a deletion or a session revocation cannot be
undone), applied at once: it acts only on objects still as the plan left them."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from entra_pipeline.actions.apply import Applied, apply_plan
from entra_pipeline.actions.catalog import ACTIONS
from entra_pipeline.actions.plans import ActionError
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.warehouse.publish import publish_file


def undo_plan(
    settings: ConnectorSettings, plan_id: str, say: Callable[[str], None] = print
) -> tuple[str, Applied]:
    """Plan and apply the reverse of plan `plan_id`; (the undo plan's id, what it did)."""
    published = Path(settings.duckdb_path)
    if not published.exists():
        raise ActionError(f"{published} does not exist")
    with duckdb.connect(str(published), read_only=True) as con:
        done = con.execute(
            "SELECT object_id, object_name, action FROM ops.actions WHERE plan_id = ? AND "
            "status = 'done' ORDER BY object_name, object_id",
            [plan_id],
        ).fetchall()
    if not done:
        raise ActionError(f"plan {plan_id} changed nothing (ops.actions has no done row for it)")
    action = ACTIONS[done[0][2]]
    if action.undo is None:
        raise ActionError(f"{action.name} cannot be undone: Graph has no way back")
    reverse = ACTIONS[action.undo]
    undo_id = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-undo-{secrets.token_hex(3)}"
    plan_row = (
        settings.tenant_id, undo_id, f"undo {plan_id}", reverse.name,
        json.dumps({"undoes": plan_id}), datetime.now(UTC), "ready", None, len(done),
        len(done), 0, len(done),
    )  # fmt: skip
    items = [
        (settings.tenant_id, undo_id, object_id, name, reverse.kind, reverse.name, "planned",
         f"undo of plan {plan_id}", json.dumps({}))
        for object_id, name, _ in done
    ]  # fmt: skip
    publish_file(
        published, None, [], {"ops.action_plans": [plan_row], "ops.action_plan_items": items}
    )
    say(f"Undo plan {undo_id}: {reverse.name} on {len(done)} {reverse.kind}(s) of plan {plan_id}")
    return undo_id, apply_plan(settings, undo_id, say)
