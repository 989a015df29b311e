"""Selections and plans. A selection is a SQL file in `dbt_like_sql/actions/` run over the
published warehouse; its header names its action and parameters. Running one writes a plan —
`ops.action_plans` and one `ops.action_plan_items` row per object it chose — and changes
nothing in the tenant. Guard rails are applied here: objects synchronized from on-premises (Graph
refuses to change them), devices whose accountEnabled an app may not change (not Windows), and
the blast-radius limit, which refuses the whole plan."""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from entra_pipeline.actions.catalog import ACTIONS, Action
from entra_pipeline.credential_options import ActionOptions
from entra_pipeline.errors import PipelineError
from entra_pipeline.warehouse.publish import publish_file

SELECTIONS = Path(__file__).resolve().parents[2] / "dbt_like_sql" / "actions"
_HEADER = re.compile(r"^-- (action|param) ?(\w*): (.+)$")


class ActionError(PipelineError):
    """A plan cannot be made, shown, applied or undone: the message says why and what to do."""


@dataclass(frozen=True)
class Selection:
    name: str
    action: Action
    parameters: dict[str, int | str]  # the defaults in its header
    sql: str
    about: str  # its leading comment

    @classmethod
    def named(cls, name: str) -> Selection:
        path = SELECTIONS / f"{name}.sql"
        if not re.fullmatch(r"[a-z0-9_]+", name) or not path.is_file():
            known = ", ".join(sorted(p.stem for p in SELECTIONS.glob("*.sql")))
            raise ActionError(f"no selection {name!r}: the selections are {known}")
        text = path.read_text(encoding="utf-8")
        action, parameters, about = None, {}, []
        for line in text.splitlines():
            header = _HEADER.match(line)
            if header and header.group(1) == "action":
                action = header.group(3).strip()
            elif header:
                parameters[header.group(2)] = _value(header.group(3).strip())
            elif line.startswith("-- "):
                about.append(line[3:])
            elif line.strip():
                break
        if action not in ACTIONS:
            raise ActionError(f"{path}: its '-- action:' line names no known action ({action!r})")
        return cls(name, ACTIONS[action], parameters, text, " ".join(about))

    def with_values(self, given: dict[str, str]) -> dict[str, int | str]:
        unknown = sorted(set(given) - set(self.parameters))
        if unknown:
            raise ActionError(
                f"selection {self.name} has no parameter {', '.join(unknown)}; its parameters: "
                f"{', '.join(self.parameters) or 'none'}"
            )
        return {**self.parameters, **{k: _value(v) for k, v in given.items()}}


def _value(text: str) -> int | str:
    return int(text) if re.fullmatch(r"-?\d+", text) else text


@dataclass(frozen=True)
class Plan:
    plan_id: str
    action: Action
    status: str  # ready or refused
    reason: str | None
    planned: int
    skipped: int


def make_plan(
    published: Path,
    tenant_id: str,
    options: ActionOptions,
    selection: Selection,
    values: dict[str, int | str],
    protected: frozenset[str] = frozenset(),
) -> Plan:
    """Run `selection` over the published file and record its plan there (nothing is sent).
    `protected`: users holding a directory role, skipped."""
    action = selection.action
    if action.name not in options.allowed:
        raise ActionError(f"{action.name} is not in actions.allowed ({', '.join(options.allowed)})")
    if not published.exists():
        raise ActionError(f"{published} does not exist: run a sync first")
    chosen, objects = _select(published, selection, values)
    limit = min(options.max_objects, max(1, math.floor(options.max_fraction * objects)))
    items = [(*row, *_guard(action, row[-1], row[0] in protected)) for row in chosen]
    planned = sum(1 for item in items if item[-2] == "planned")
    reason = None
    if planned > limit:
        reason = (
            f"acts on {planned} {action.kind}s, over the limit of {limit} "
            f"({options.max_fraction:.0%} of {objects} {action.kind}s, at most "
            f"{options.max_objects}): narrow the selection or raise actions.max_fraction / "
            "actions.max_objects"
        )
    plan_id = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
    plan_row = (
        tenant_id, plan_id, selection.name, action.name, json.dumps(values), datetime.now(UTC),
        "refused" if reason else "ready", reason, objects, planned, len(items) - planned, limit,
    )  # fmt: skip
    item_rows = [
        (tenant_id, plan_id, object_id, name, action.kind, action.name, status,
         why or selection_reason, json.dumps(matched, default=str))
        for object_id, name, selection_reason, matched, status, why in items
    ]  # fmt: skip
    publish_file(
        published, None, [], {"ops.action_plans": [plan_row], "ops.action_plan_items": item_rows}
    )
    return Plan(plan_id, action, plan_row[6], reason, planned, len(items) - planned)


def _select(
    published: Path, selection: Selection, values: dict[str, int | str]
) -> tuple[list[tuple[str, str, str, dict[str, Any]]], int]:
    """(object id, name, reason, the values matched and the guard-rail facts) per chosen
    object, and the number of objects of the action's kind."""
    table = f"staging.{selection.action.kind}s"
    with duckdb.connect(str(published), read_only=True) as con:
        try:
            found = con.execute(selection.sql, values)
        except duckdb.Error as error:
            raise ActionError(f"selection {selection.name} failed: {error}") from None
        columns = [d[0] for d in found.description or []]
        rows = found.fetchall()
        [(objects,)] = con.execute(f"SELECT count(*) FROM {table}").fetchall()
        facts = dict(con.execute(_FACTS[selection.action.kind]).fetchall())
    missing = {"object_id", "object_name", "reason"} - set(columns)
    if missing:
        raise ActionError(
            f"selection {selection.name} must return object_id, object_name and reason; "
            f"it has no {', '.join(sorted(missing))}"
        )
    chosen = []
    for row in rows:
        record = dict(zip(columns, row, strict=True))
        matched = {
            k: v for k, v in record.items() if k not in ("object_id", "object_name", "reason")
        }
        chosen.append(
            (record["object_id"], record["object_name"], record["reason"],
             {**matched, "_facts": facts.get(record["object_id"], {})})
        )  # fmt: skip
    return chosen, int(objects)


# What the guard rails need to know of each object, from the published tables.
_FACTS = {
    "device": "SELECT id, {'synced': onPremisesLastSyncDateTime IS NOT NULL OR trustType = "
    "'ServerAd', 'os': operatingSystem} FROM staging.devices",
    "user": "SELECT id, {'synced': coalesce(onPremisesSyncEnabled, false), 'os': NULL} "
    "FROM staging.users",
}


def _guard(action: Action, matched: dict[str, Any], role: bool) -> tuple[str, str | None]:
    """(planned | skipped, why skipped) by the guard rails; removes the facts from `matched`."""
    facts = matched.pop("_facts")
    if role:
        return "skipped", (
            "holds a directory role: never acted on (Graph lets only a privileged "
            "administrator change it)"
        )
    if facts.get("synced"):
        return "skipped", (
            "synchronized from on-premises: Graph refuses to change it (change it in Active "
            "Directory)"
        )
    windows = str(facts.get("os") or "").lower().startswith("windows")
    if action.kind == "device" and action.method == "PATCH" and not windows:
        return "skipped", (
            f"not a Windows device ({facts.get('os') or 'no operating system'}): an app may "
            "change only extensionAttributes of non-Windows devices"
        )
    return "planned", None
