"""Applying a plan: with the action app's own credential, each planned object is read again from
Graph and acted on only when it still is what the plan saw; every request is journaled before it
is sent and audited in `ops.actions`.

The journal (`<duckdb_path>.actions-<plan>.jsonl`, owner-only, one fsynced line per event) is
written ahead of each request, so a killed apply leaves a record of every request it sent; the
next `act apply` of that plan folds it into `ops.actions` and carries on. An object already
recorded done or skipped is not acted on again: applying a plan twice acts once.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from entra_pipeline.actions.catalog import ACTIONS, COLLECTION, READ_BACK, Action
from entra_pipeline.actions.plans import ActionError
from entra_pipeline.graph.auth import TokenProvider
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.errors import GraphError
from entra_pipeline.secrets import redact
from entra_pipeline.settings import ConnectorSettings
from entra_pipeline.warehouse.files import PRIVATE_FILE
from entra_pipeline.warehouse.publish import publish_file


@dataclass
class Applied:
    plan_id: str
    counts: dict[str, int] = field(default_factory=dict)


@contextlib.contextmanager
def action_client(settings: ConnectorSettings) -> Iterator[GraphClient]:
    """A Graph client authenticated as the action app (never the sync's credential)."""
    options = settings.actions
    if options is None:
        raise ActionError(
            "no actions: section in the config: actions need an app registration of their own "
            "(docs/actions.md)"
        )
    tokens = TokenProvider(
        tenant_id=settings.tenant_id,
        client_id=options.client_id,
        client_credential=options.client_credential(),
        credential_description=options.credential_description(),
        authority_host=settings.authority_host,
        graph_url=settings.graph_url,
        ca_bundle=settings.ca_bundle,
    )
    try:
        with GraphClient(settings.graph_url, tokens, ca_bundle=settings.ca_bundle) as client:
            yield client
    finally:
        tokens.close()


def role_holders(settings: ConnectorSettings) -> set[str]:
    """The users holding a directory role (GET /directoryRoles with their members, as the action
    app): no plan acts on them."""
    with action_client(settings) as graph:
        try:
            body = graph.get_json(
                "/directoryRoles", {"$expand": "members($select=id)"}, label="directory roles"
            )
        except GraphError as error:
            if error.status != 403:
                raise
            raise ActionError(
                "the action app needs RoleManagement.Read.Directory to know who holds a "
                "directory role (those users are never acted on): grant it with admin consent"
            ) from None
    return {m["id"] for role in body.get("value", []) for m in role.get("members", [])}


def apply_plan(
    settings: ConnectorSettings, plan_id: str, say: Callable[[str], None] = print
) -> Applied:
    """Apply plan `plan_id` of the published file (see the module docstring)."""
    published = Path(settings.duckdb_path)
    action, items, done = _load(published, settings, plan_id)
    journal = Journal(published, plan_id)
    results, unanswered = journal.results()  # a killed apply's, folded in below
    applied = Applied(plan_id)
    with action_client(settings) as graph:
        for object_id, name, matched in items:
            if object_id in done or object_id in results:
                continue
            result = _act(
                graph, journal, action, object_id, name, matched, unanswered.get(object_id)
            )
            results[object_id] = result
            say(f"  {action.name} {name}: {result['status']}"
                + (f" ({result['error']})" if result.get("error") else ""))  # fmt: skip
    rows = [_audit_row(settings.tenant_id, plan_id, r) for r in results.values()]
    for row in rows:
        applied.counts[row[9]] = applied.counts.get(row[9], 0) + 1
    failed = [r for r in results.values() if r["status"] == "failed"]
    notes = [
        (settings.tenant_id, datetime.now(UTC), plan_id, "actions", "error", "action_failed",
         redact(f"plan {plan_id}: {len(failed)} {action.name} request(s) failed, e.g. "
                f"{failed[0]['object_name']}: {failed[0]['error']}"),
         json.dumps({"plan_id": plan_id, "failed": [r["object_id"] for r in failed]}),
         settings.connector_name)
    ] if failed else []  # fmt: skip
    publish_file(published, None, [], {"ops.actions": rows, "ops.notifications": notes})
    journal.remove()
    return applied


def _load(
    published: Path, settings: ConnectorSettings, plan_id: str
) -> tuple[Action, list[tuple[str, str, dict[str, Any]]], set[str]]:
    """The plan's action, its planned items, and the objects already recorded done or
    skipped; an ActionError for a plan that does not exist, was refused or is too old."""
    options = settings.actions
    assert options is not None
    if not published.exists():
        raise ActionError(f"{published} does not exist: run a sync, then plan")
    with duckdb.connect(str(published), read_only=True) as con:
        found = con.execute(
            "SELECT action, status, reason, created_at FROM ops.action_plans WHERE plan_id = ?",
            [plan_id],
        ).fetchall()
        if not found:
            raise ActionError(
                f"no plan {plan_id!r} in {published}: `entra-pipeline act list` shows the plans"
            )
        [(action, status, reason, created_at)] = found
        items = con.execute(
            "SELECT object_id, object_name, matched FROM ops.action_plan_items WHERE plan_id = ? "
            "AND status = 'planned' ORDER BY object_name, object_id",
            [plan_id],
        ).fetchall()
        done = {
            object_id
            for (object_id,) in con.execute(
                "SELECT object_id FROM ops.actions WHERE plan_id = ? AND status IN "
                "('done', 'skipped')",
                [plan_id],
            ).fetchall()
        }
    if status != "ready":
        raise ActionError(f"plan {plan_id} was refused, nothing is sent: {reason}")
    age = datetime.now(UTC) - created_at
    if age > timedelta(hours=options.plan_max_age_hours):
        raise ActionError(
            f"plan {plan_id} is {age.total_seconds() / 3600:.1f} hours old, over "
            f"actions.plan_max_age_hours ({options.plan_max_age_hours:g}): the directory has "
            "moved on since; plan again. Nothing was sent"
        )
    return ACTIONS[action], [(o, n, json.loads(m)) for o, n, m in items], done


def _act(
    graph: GraphClient,
    journal: Journal,
    action: Action,
    object_id: str,
    name: str,
    matched: dict[str, Any],
    unanswered: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read the object again, act when it still matches, and say what happened. `unanswered`:
    the journal's record of a request a stopped apply sent without seeing Graph's answer."""
    result: dict[str, Any] = {"object_id": object_id, "object_name": name, "action": action.name}
    path, select = f"/{COLLECTION[action.kind]}/{object_id}", READ_BACK[action.kind]
    try:
        before = graph.get_json(path, {"$select": select}, label=f"{action.kind} read-back")
    except GraphError as error:
        if error.status != 404:
            return journal.write({**result, "status": "failed", "error": str(error)})
        if unanswered is not None and action.method == "DELETE":
            return journal.write({**unanswered, "status": "done", "after": None})
        return journal.write({**result, "status": "skipped", "error": "gone from the directory"})
    result["before"] = before
    took_effect = bool(action.expects) and not _changed(before, action.body or {})
    if unanswered is not None and took_effect:
        # The stopped apply's request was answered after all: the object shows it done.
        return journal.write({**unanswered, "status": "done", "after": before})
    changed = _changed(before, {**matched, **action.expects})
    if changed:
        return journal.write(
            {**result, "status": "skipped", "error": f"changed since the plan: {changed}"}
        )
    if before.get("onPremisesSyncEnabled"):
        return journal.write(
            {**result, "status": "skipped", "error": "synchronized from on-premises"}
        )
    result["requested_at"] = _now()
    journal.write({**result, "status": "sent"})
    try:
        answer = graph.write(action.method, action.path(object_id), action.body, label=action.name)
    except GraphError as error:
        status, why = _refusal(error, action, granted_roles(graph))
        return journal.write(
            {**result, "status": status, "error": why, "request_id": error.request_id}
        )
    return journal.write(
        {
            **result,
            "status": "done",
            "after": action.after(before),
            "request_id": answer.headers.get("request-id"),
        }
    )


def granted_roles(graph: GraphClient) -> set[str]:
    """The application permissions the action app's token carries (its `roles` claim)."""
    payload = graph.access_token().split(".")[1]
    with contextlib.suppress(ValueError):
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return set(claims.get("roles") or [])
    return set()


def _refusal(error: GraphError, action: Action, roles: set[str]) -> tuple[str, str]:
    """(skipped | failed, why) for a write Graph did not do. Graph's refusals of this object
    (400: synchronized from on-premises; 403 while the app holds the permission: a user holding
    a directory role, or a device an app may not change) are skipped: acting again will not fix
    them. Anything else failed."""
    said = f"{error.code or error.status}; request-id {error.request_id}"
    if error.status == 403 and action.permission not in roles:
        return "failed", (
            f"the action app lacks {action.permission} ({said}): grant it with admin consent"
        )
    if error.status == 403:
        return "skipped", (
            f"Graph refused it ({said}): a user holding a directory role, or a device an app "
            "may not change; only a privileged administrator can"
        )
    if error.status == 400:
        return "skipped", f"Graph refused it ({said}): {error.graph_message or error}"
    return "failed", str(error)


def _changed(now: dict[str, Any], expected: dict[str, Any]) -> str:
    """The expected Graph properties the object no longer has, said in words ("" if none)."""
    differ = [
        f"{key} is now {now.get(key)!r}, was {value!r}"
        for key, value in expected.items()
        if key in now and not _same(now.get(key), value)
    ]
    return "; ".join(differ)


def _same(graph_value: Any, planned: Any) -> bool:
    if isinstance(graph_value, str) and isinstance(planned, str):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(graph_value) == datetime.fromisoformat(planned)
    return bool(graph_value == planned)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _audit_row(tenant_id: str, plan_id: str, result: dict[str, Any]) -> tuple:
    status = result["status"]
    if status == "sent":  # sent by a killed apply whose answer nobody saw
        status, result = (
            "failed",
            {**result, "error": "the apply was stopped before Graph answered"},
        )
    return (
        tenant_id, plan_id, result["object_id"], result["object_name"], result["action"],
        json.dumps(result.get("before")) if "before" in result else None,
        json.dumps(result.get("after")) if "after" in result else None,
        result.get("requested_at"), result.get("finished_at") or _now(), status,
        result.get("request_id"), result.get("error"),
    )  # fmt: skip


class Journal:
    """The plan's write-ahead journal beside the published file (see the module docstring)."""

    def __init__(self, published: Path, plan_id: str) -> None:
        self.path = published.with_name(f"{published.name}.actions-{plan_id}.jsonl")

    def results(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """From a journal a stopped apply left: each object's outcome, and the requests it sent
        whose answer it never saw (decided again, from Graph)."""
        found: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(FileNotFoundError):
            for line in self.path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    found[event["object_id"]] = event
        decided = {k: v for k, v in found.items() if v["status"] != "sent"}
        return decided, {k: v for k, v in found.items() if v["status"] == "sent"}

    def write(self, event: dict[str, Any]) -> dict[str, Any]:
        event = {**event, "finished_at": event.get("finished_at") or _now()}
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
        try:
            os.write(descriptor, (json.dumps(event, default=str) + "\n").encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return event

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
