"""`entra-pipeline check`, the pre-flight: the connector's "test connection" for the config, mapping,
token and Graph.

Exit codes: 0 a sync can run (warnings allowed), 1 Microsoft refuses something a sync needs,
2 the config or the mapping CSV is invalid. Nothing it prints holds the client secret.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import duckdb

from entra_pipeline.actions.check import action_findings
from entra_pipeline.config_file import config_path
from entra_pipeline.connector.mapping import MAPPED_TABLES, validated_mapping
from entra_pipeline.connector.mapping_check import filtered_columns
from entra_pipeline.connector.mapping_csv import MappingInvalid
from entra_pipeline.connector.units import UNITS
from entra_pipeline.connector_folder import is_fleet, load_fleet
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.collections import (
    GROUP_MEMBERS,
    GROUPS,
    Collection,
)
from entra_pipeline.graph.errors import (
    GraphError,
    GraphPermissionError,
    GraphPremiumRequiredError,
    GraphUnreachableError,
    GroupNotFoundError,
    TokenError,
    required_permission,
)
from entra_pipeline.graph.groups import odata_string, resolve_groups
from entra_pipeline.names import CLOUD
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.secrets import redact
from entra_pipeline.settings import ConfigError, ConnectorSettings
from entra_pipeline.user_source.attributes import custom_attribute, directory_users
from entra_pipeline.vocabulary import is_guid
from entra_pipeline.warehouse.errors import ModelError
from entra_pipeline.warehouse.files import folder_problem

EXIT_OK = 0
EXIT_CANNOT_SYNC = 1
EXIT_INVALID_CONFIG = 2

# A check should answer in seconds: few, short retries (a sync retries far harder).
CHECK_MAX_RETRIES = 2
CHECK_BACKOFF_SECONDS = 0.5

CUSTOM_ATTRIBUTE_NOTE = (
    "Each user_source.custom_attributes name must be a user property as Graph spells it "
    "(employeeId), extensionAttribute1..15, or a directory extension extension_<appId>_<name>."
)
# A member probe of the MDM user source: any group the tenant has will do.
ANY_GROUP = "*"

Status = Literal["ok", "warning", "missing", "failed", "not probed"]
PROBLEMS: frozenset[Status] = frozenset({"missing", "failed"})


@dataclass(frozen=True)
class Probe:
    """One Graph call a sync makes, asked for a single row, and the option that needs it."""

    option: str
    path: str
    params: dict[str, str | int]
    permission: str
    required: bool = True  # False: a sync runs without it, with a warning
    note: str = ""  # said whenever the call is not ok
    resolves_group: str | None = None  # a configured group reference to resolve
    members_of: str | None = None  # a configured group whose members are listed

    @property
    def call(self) -> str:
        return describe_call(self.path, self.params)


@dataclass(frozen=True)
class Finding:
    """One row of the report: a step (config, mapping, token) or a probed call."""

    option: str
    status: Status
    detail: str = ""
    call: str = ""
    permission: str = ""
    result: str = ""  # what the RESULT column says, when more than the status

    @property
    def label(self) -> str:
        return self.result or _RESULT_LABEL[self.status]


@dataclass
class CheckReport:
    """What `check` found; `exit_code` says whether a sync can run."""

    connector_name: str = ""
    steps: list[Finding] = field(default_factory=list)
    calls: list[Finding] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if any(s.status in PROBLEMS for s in self.steps if s.option in ("config", "mapping")):
            return EXIT_INVALID_CONFIG
        if any(f.status in PROBLEMS for f in (*self.steps, *self.calls)):
            return EXIT_CANNOT_SYNC
        return EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    """The `entra-pipeline check` command: print the report, return the exit code. A folder of
    connectors is checked file by file; the exit code is the worst of them."""
    if not is_fleet(args.config):
        report = check_connector(args.config)
        print(render(report))
        return report.exit_code
    try:
        fleet = load_fleet(args.config)
    except ConfigError as error:
        print(f"config: {error}")
        return EXIT_INVALID_CONFIG
    codes = []
    for file, problem in fleet.invalid.items():
        print(f"== {file.name}: cannot run\nconfig: {problem}\n")
        codes.append(EXIT_INVALID_CONFIG)
    for slug, connector in fleet.connectors.items():
        print(f"== {connector.path.name} (partition {slug})")
        report = check_connector(str(connector.path))
        print(render(report) + "\n")
        codes.append(report.exit_code)
    print(
        f"{len(fleet.connectors)} connectors can run, {len(fleet.invalid)} cannot, in {fleet.folder}"
    )
    return max(codes, default=EXIT_OK)


def check_connector(
    config: str | None,
    *,
    max_retries: int = CHECK_MAX_RETRIES,
    backoff_seconds: float = CHECK_BACKOFF_SECONDS,
) -> CheckReport:
    """Validate the config and mapping, then probe every Graph call the enabled options need."""
    report = CheckReport()
    connector = ConnectorResource(
        config_path=config, max_retries=max_retries, backoff_base_seconds=backoff_seconds
    )
    path = config_path(config)
    try:
        settings = connector.settings
    except ConfigError as error:
        report.steps.append(Finding("config", "failed", str(error)))
        return report
    report.connector_name = settings.connector_name
    report.steps.append(
        Finding(
            "config",
            "ok",
            f"{path}: tenant {settings.tenant_id}, client id {settings.client_id}, "
            f"{_credential(settings)}",
        )
    )
    report.steps.append(check_mapping(settings))
    report.steps.append(check_warehouse(settings))
    report.steps.append(_check_server(settings.connector_server))
    probes = planned_probes(settings)
    runner = _ProbeRunner()
    try:
        with connector.graph_client() as client:
            for probe in probes:
                report.calls.append(runner.run(client, probe))
    except TokenError as error:
        report.steps.append(Finding("token", "failed", str(error)))
    except GraphUnreachableError as error:
        report.steps.append(_token_ok(settings))
        report.steps.append(Finding("graph", "failed", str(error)))
    else:
        report.steps.append(_token_ok(settings))
    done = len(report.calls)
    report.calls.extend(
        Finding(p.option, "not probed", call=p.call, permission=p.permission) for p in probes[done:]
    )
    report.calls.extend(
        Finding(option, status, detail, call=call, permission=permission)  # type: ignore[arg-type]
        for option, status, detail, call, permission in action_findings(settings)
    )
    return report


def _token_ok(settings: ConnectorSettings) -> Finding:
    return Finding(
        "token",
        "ok",
        f"{settings.authority_host}/{settings.tenant_id} issued an app-only token for "
        f"{settings.scope}" + (f" (CA bundle {settings.ca_bundle})" if settings.ca_bundle else ""),
    )


def _check_server(server: str) -> Finding:
    if server == CLOUD:
        return Finding("server", "ok", "cloud: runs wherever the Dagster instance runs them")
    try:
        from entra_pipeline.celery_launcher import server_finding
    except ImportError:
        return Finding(
            "server", "warning", f"{server}: needs the celery extra (docs/scaling-out.md)"
        )
    status, detail = server_finding(server)
    return Finding("server", status, detail)  # type: ignore[arg-type]


def check_warehouse(settings: ConnectorSettings) -> Finding:
    """Whether a run can write duckdb_path (a probe file, removed)."""
    published = Path(settings.duckdb_path)
    problem = folder_problem(published)
    if problem is not None:
        return Finding("warehouse", "failed", f"duckdb_path {published}: {problem}")
    if not published.exists():
        return Finding("warehouse", "ok", f"{published} is created by the first sync")
    try:
        with duckdb.connect(str(published), read_only=True) as con:
            con.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
    except duckdb.Error as error:
        return Finding(
            "warehouse",
            "failed",
            f"duckdb_path {published} is damaged: DuckDB cannot read it ({error}). Restore it "
            "from a backup, or move it aside: the next sync then reads everything again",
        )
    return Finding("warehouse", "ok", f"{published} opens; its folder is writable")


# -- the mapping CSV ----------------------------------------------------------------------------


def check_mapping(settings: ConnectorSettings) -> Finding:
    """The mapping CSV's shape, and each source attribute against the filtered tables' columns."""
    path = Path(settings.mapping_path)
    try:
        columns = filtered_columns(settings)
    except (duckdb.Error, ModelError) as error:
        return Finding(
            "mapping",
            "failed",
            f"the SQL models in dbt_like_sql/ do not build on an empty raw layer, so the "
            f"mapping's source attributes cannot be checked: {error}",
        )
    frame, problems = validated_mapping(path, columns)
    if problems:
        return Finding("mapping", "failed", str(MappingInvalid(path, problems)))
    counts = ", ".join(
        f"{frame.filter(frame['data_type'] == t.data_type).height} {t.data_type}"
        for t in MAPPED_TABLES
    )
    sources = " and ".join(t.source for t in MAPPED_TABLES)
    return Finding(
        "mapping",
        "ok",
        f"{path}: {frame.height} rows ({counts}); every source attribute is a column of {sources}",
    )


# -- the Graph calls ----------------------------------------------------------------------------


def first_row(collection: Collection) -> dict[str, str | int]:
    """The query a sync sends for `collection`'s first page, asking for one row."""
    return {**collection.first_page, "$top": 1}


def planned_probes(settings: ConnectorSettings) -> list[Probe]:
    """Every Graph call the enabled options need, in the order a sync makes them: one per
    connector sync unit (connector/units.py), then the group filters and the user source."""
    probes = [
        Probe(
            call.option,
            unit.collection.path,
            first_row(unit.collection),
            call.permission,
            required=call.required,
            note=call.note,
        )
        for unit in UNITS
        if (call := unit.checked_call(settings)) is not None
    ]
    probes += _group_filter_probes(settings)
    if settings.user_source.enabled:
        probes += _user_source_probes(settings)
    return probes


def _group_filter_probes(settings: ConnectorSettings) -> list[Probe]:
    """Resolving each group a filter names, and listing its members."""
    probes = []
    options_by_group: dict[str, list[str]] = {}
    configured = {"devices.groups": settings.devices.groups, "users.groups": settings.users.groups}
    for option, refs in configured.items():
        for ref in refs:
            options_by_group.setdefault(ref, []).append(option)
    for ref, options in options_by_group.items():
        option = f"{' + '.join(options)} {ref!r}"
        probes.append(_group_resolution(option, ref))
        members = GROUP_MEMBERS.path.format(id=f"{{{ref}}}")
        probes.append(
            Probe(
                option,
                members,
                {"$select": "id", "$top": 1},
                required_permission(members),
                members_of=ref,
            )
        )
    return probes


def _user_source_probes(settings: ConnectorSettings) -> list[Probe]:
    """The MDM user source's calls: every user with its custom attributes, groups, members."""
    names = settings.user_source.custom_attributes
    users = directory_users([custom_attribute(name) for name in names])
    members = GROUP_MEMBERS.path
    return [
        Probe(
            "user_source + custom_attributes" if names else "user_source",
            users.path,
            first_row(users),
            users.permission,
            note=CUSTOM_ATTRIBUTE_NOTE if names else "",
        ),
        Probe("user_source groups", GROUPS.path, first_row(GROUPS), GROUPS.permission),
        Probe(
            "user_source group members",
            members,
            {"$select": "id", "$top": 1},
            required_permission(members),
            members_of=ANY_GROUP,
        ),
    ]


def _group_resolution(option: str, ref: str) -> Probe:
    params: dict[str, str | int]
    path, params = (
        "/groups",
        {"$filter": f"displayName eq {odata_string(ref)}", "$select": "id,displayName"},
    )
    if is_guid(ref):
        path, params = f"/groups/{ref}", {"$select": "id,displayName"}  # by id: no filter
    return Probe(option, path, params, required_permission(path), resolves_group=ref)


class _ProbeRunner:
    """Runs probes in order, remembering the groups it resolved for the member listings."""

    def __init__(self) -> None:
        self.group_ids: dict[str, str] = {}

    def run(self, client: GraphClient, probe: Probe) -> Finding:
        """The finding for one probe; token and unreachable-Graph errors end the check."""
        finding = Finding(probe.option, "ok", call=probe.call, permission=probe.permission)
        if probe.members_of is not None and probe.members_of not in self.group_ids:
            # A filter group that did not resolve has its own row; a tenant without groups has no
            # members to read.
            return replace(finding, status="not probed")
        try:
            finding = replace(finding, detail=self._call(client, probe))
        except GroupNotFoundError as error:
            finding = replace(finding, status="failed", detail=str(error))
        except GraphPermissionError as error:
            status: Status = "missing" if probe.required else "warning"
            result = "MISSING" if probe.required else "MISSING (warning)"
            finding = replace(
                finding, status=status, result=result, detail=_with_note(str(error), probe)
            )
        except GraphPremiumRequiredError as error:
            status = "failed" if probe.required else "warning"
            finding = replace(
                finding,
                status=status,
                result="NO P1 LICENCE" + ("" if probe.required else " (warning)"),
                detail=_with_note(str(error), probe),
            )
        except GraphUnreachableError:
            raise
        except GraphError as error:
            finding = replace(finding, status="failed", detail=_with_note(str(error), probe))
        return finding

    def _call(self, client: GraphClient, probe: Probe) -> str:
        if probe.resolves_group is not None:
            ref = probe.resolves_group
            self.group_ids[ref] = resolve_groups(client, [ref])[ref]
            return f"group {ref!r} is {self.group_ids[ref]}"
        if probe.members_of is not None:
            group_id = self.group_ids[probe.members_of]
            client.get_json(GROUP_MEMBERS.path.format(id=group_id), probe.params, label="check")
            return f"members of group {group_id}"
        body = client.get_json(probe.path, probe.params, label="check")
        if probe.path == GROUPS.path and body.get("value"):
            self.group_ids.setdefault(ANY_GROUP, body["value"][0]["id"])
        return ""


def _with_note(message: str, probe: Probe) -> str:
    return f"{message}\n{probe.note}" if probe.note else message


def describe_call(path: str, params: dict[str, str | int]) -> str:
    """A Graph call as one short line: `GET /users $select=26 properties $expand=manager $top=1`."""
    parts = [f"GET {path}"]
    for name, value in params.items():
        text = str(value)
        if name == "$select" and text.count(",") >= 3:
            text = f"{text.count(',') + 1} properties"
        elif name == "$expand":
            text = text.split("(", 1)[0]
        parts.append(f"{name}={text}")
    return " ".join(parts)


# -- the report ---------------------------------------------------------------------------------

_RESULT_LABEL: dict[Status, str] = {
    "ok": "ok",
    "warning": "WARNING",
    "missing": "MISSING",
    "failed": "FAILED",
    "not probed": "not probed",
}


def render(report: CheckReport) -> str:
    """The report as the terminal shows it: steps, the table of calls, numbered notes, verdict."""
    title = "entra-pipeline check" + (f": {report.connector_name}" if report.connector_name else "")
    lines = [title, ""]
    notes: list[str] = []

    def label(finding: Finding) -> str:
        text = finding.label
        if finding.status != "ok" and finding.detail:
            notes.append(f"{finding.option}: {finding.detail}")
            text += f" [{len(notes)}]"
        return text

    for step in report.steps:
        result = label(step)
        detail = step.detail if step.status == "ok" else f"see [{len(notes)}]"
        lines.append(f"  {step.option:<9} {result:<14} {detail}")
    if report.calls:
        rows = [("OPTION", "CALL", "PERMISSION", "RESULT")] + [
            (f.option, f.call, f.permission, label(f)) for f in report.calls
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines.append("")
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)]
            lines.append("  " + "  ".join([*cells, row[3]]))
    if notes:
        lines.append("")
        for number, note in enumerate(notes, 1):
            first, *rest = note.splitlines()
            lines.append(f"  [{number}] {first}")
            lines.extend(f"      {line}" for line in rest)
    lines += ["", verdict(report)]
    return redact("\n".join(lines))


def verdict(report: CheckReport) -> str:
    """The last line: whether a sync can run, and what it will lack."""
    code = report.exit_code
    if code == EXIT_INVALID_CONFIG:
        return f"Configuration invalid: fix it and run check again (exit {code})."
    if code == EXIT_CANNOT_SYNC:
        count = sum(f.status in PROBLEMS for f in (*report.steps, *report.calls))
        return f"A sync cannot run: {count} problem{'s' * (count != 1)} above (exit {code})."
    warnings = [f.option for f in report.calls if f.status == "warning"]
    if warnings:
        return (
            f"A sync can run, without {', '.join(warnings)} (see the warnings above; exit {code})."
        )
    return f"A sync can run: every call the enabled options need is allowed (exit {code})."


def _credential(settings: ConnectorSettings) -> str:
    """The credential the app uses, with a certificate's expiry (nothing secret)."""
    if settings.client_certificate is None:
        return "client secret"
    credential = settings.client_certificate.credential
    days = (credential.not_after - datetime.now(UTC)).days
    return f"{credential.describe()}, expires {credential.not_after:%Y-%m-%d} (in {days} days)"
