"""`entra-pipeline act`: plan, show, apply and undo actions on the directory (docs/actions.md).

Exit codes: 0 done, 1 refused or failed (nothing sent, or what was sent is in ops.actions),
2 invalid config or arguments.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from entra_pipeline.actions.apply import apply_plan, role_holders
from entra_pipeline.actions.plans import ActionError, Selection, make_plan
from entra_pipeline.actions.undo import undo_plan
from entra_pipeline.config_file import config_path, load_settings
from entra_pipeline.errors import PipelineError
from entra_pipeline.settings import ConfigError, ConnectorSettings


def add_arguments(commands: Any, config_file: Callable[[str], str]) -> None:
    act = commands.add_parser(
        "act", help="plan, review, apply and undo actions on devices and users (docs/actions.md)"
    )
    verbs = act.add_subparsers(dest="verb", required=True)
    plan = verbs.add_parser("plan", help="run a selection: write a plan, change nothing")
    plan.add_argument("selection", help="a file of dbt_like_sql/actions/, without .sql")
    plan.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a parameter"
    )
    verbs.add_parser("list", help="the plans, newest first")
    for verb, text in (
        ("show", "a plan's objects: planned or skipped, and why"),
        ("apply", "apply a reviewed plan with the action credential"),
        ("undo", "reverse what an applied plan did, where Graph allows it"),
    ):
        verbs.add_parser(verb, help=text).add_argument("plan_id")
    for parser in verbs.choices.values():
        parser.add_argument(
            "--config",
            type=config_file,
            default=None,
            help="connector YAML (default: $ENTRA_CONNECTOR_CONFIG, else ./connector.yaml)",
        )


def add_query_arguments(commands: Any, config_file: Callable[[str], str]) -> None:
    query = commands.add_parser(
        "query", help="read one device or user live from Graph, beside its published row"
    )
    query.add_argument("kind", choices=["device", "user"])
    query.add_argument("key", help="a device's object id or display name; a user's id or UPN")
    query.add_argument(
        "--config",
        type=config_file,
        default=None,
        help="connector YAML (default: $ENTRA_CONNECTOR_CONFIG, else ./connector.yaml)",
    )


def run_query(args: argparse.Namespace) -> int:
    """Exit 0 found, 1 not found or Graph refused, 2 invalid config."""
    from entra_pipeline.actions.query import live_record, published_record, side_by_side
    from entra_pipeline.resources import ConnectorResource

    settings = _settings(args)
    if settings is None:
        return 2
    try:
        connector = ConnectorResource(config_path=args.config).with_settings(settings)
        with connector.graph_client() as graph:
            live = live_record(graph, args.kind, args.key)
    except PipelineError as error:
        print(f"query {args.kind}: {error}")
        return 1
    published = published_record(Path(settings.duckdb_path), args.kind, live["id"])
    name = live.get("userPrincipalName") or live.get("displayName")
    print(f"{args.kind} {name} ({live['id']}), live from Graph beside {settings.duckdb_path}:")
    print("\n".join(side_by_side(live, published, args.kind)))
    return 0


def _settings(args: argparse.Namespace) -> ConnectorSettings | None:
    """The config's settings, or None after saying why it is invalid."""
    try:
        return load_settings(args.config)
    except ConfigError as error:
        print(f"Invalid config {config_path(args.config)}: {error}")
        return None


def run_act(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    if settings.actions is None and args.verb in ("plan", "apply", "undo"):
        print(
            f"{config_path(args.config)} has no actions: section: actions need an app "
            "registration of their own (docs/actions.md)"
        )
        return 2
    try:
        return _VERBS[args.verb](settings, args)
    except PipelineError as error:
        print(f"act {args.verb}: {error}")
        return 1


def _plan(settings: ConnectorSettings, args: argparse.Namespace) -> int:
    given = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ActionError(f"--set {item!r}: write NAME=VALUE")
        given[name] = value
    selection = Selection.named(args.selection)
    values = selection.with_values(given)
    assert settings.actions is not None
    user = selection.action.kind == "user"
    plan = make_plan(
        Path(settings.duckdb_path),
        settings.tenant_id,
        settings.actions,
        selection,
        values,
        frozenset(role_holders(settings)) if user else frozenset(),
    )
    print(
        f"Plan {plan.plan_id}: {plan.action.name} on {plan.planned} {plan.action.kind}(s), "
        f"{plan.skipped} skipped. Review it: entra-pipeline act show {plan.plan_id}"
    )
    if plan.status == "refused":
        print(f"Refused, it cannot be applied: {plan.reason}")
        return 1
    return 0


def _show(settings: ConnectorSettings, args: argparse.Namespace) -> int:
    with duckdb.connect(settings.duckdb_path, read_only=True) as con:
        plans = con.execute(
            "SELECT selection, action, status, reason, created_at, planned, skipped FROM "
            "ops.action_plans WHERE plan_id = ?",
            [args.plan_id],
        ).fetchall()
        if not plans:
            raise ActionError(f"no plan {args.plan_id!r}: `entra-pipeline act list` shows them")
        items = con.execute(
            "SELECT object_name, status, reason FROM ops.action_plan_items WHERE plan_id = ? "
            "ORDER BY status, object_name",
            [args.plan_id],
        ).fetchall()
    selection, action, status, reason, created, planned, skipped = plans[0]
    print(f"Plan {args.plan_id} ({selection}, {created:%Y-%m-%d %H:%M} UTC): {action}, {status}")
    print(f"  {planned} planned, {skipped} skipped" + (f"; refused: {reason}" if reason else ""))
    for name, item_status, why in items:
        print(f"  {item_status:<8} {name}: {why}")
    return 0


def _list(settings: ConnectorSettings, args: argparse.Namespace) -> int:
    with duckdb.connect(settings.duckdb_path, read_only=True) as con:
        plans = con.execute(
            "SELECT plan_id, selection, action, status, planned, skipped FROM ops.action_plans "
            "ORDER BY created_at DESC"
        ).fetchall()
    for plan_id, selection, action, status, planned, skipped in plans:
        print(f"{plan_id}  {status:<8} {action:<22} {planned:>5} planned {skipped:>5} skipped  "
              f"{selection}")  # fmt: skip
    return 0


def _apply(settings: ConnectorSettings, args: argparse.Namespace) -> int:
    applied = apply_plan(settings, args.plan_id)
    said = ", ".join(f"{n} {status}" for status, n in sorted(applied.counts.items()))
    print(f"Plan {args.plan_id} applied: {said or 'nothing left to do'} (ops.actions)")
    return 1 if applied.counts.get("failed") else 0


def _undo(settings: ConnectorSettings, args: argparse.Namespace) -> int:
    undo_id, applied = undo_plan(settings, args.plan_id)
    said = ", ".join(f"{n} {status}" for status, n in sorted(applied.counts.items()))
    print(f"Plan {args.plan_id} undone by plan {undo_id}: {said} (ops.actions)")
    return 1 if applied.counts.get("failed") else 0


_VERBS: dict[str, Callable[[ConnectorSettings, argparse.Namespace], int]] = {
    "plan": _plan,
    "show": _show,
    "list": _list,
    "apply": _apply,
    "undo": _undo,
}
