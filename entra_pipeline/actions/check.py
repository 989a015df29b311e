"""What `check` says of the action credential: a token for the action app, and, per allowed
action, whether the permission it needs is among the application permissions the token carries
(its `roles` claim) — least privileged first. Nothing is written to find out. A missing one does
not stop a sync: the sync never uses this credential."""

from __future__ import annotations

from entra_pipeline.actions.apply import action_client, granted_roles
from entra_pipeline.actions.catalog import ACTIONS, READ_PERMISSION
from entra_pipeline.errors import PipelineError
from entra_pipeline.settings import ConnectorSettings

# Permissions that also allow what the least privileged one does (Graph's permission tables).
_BROADER = {
    "Device.ReadWrite.All": ("Directory.ReadWrite.All",),
    "User.EnableDisableAccount.All": ("User.ReadWrite.All", "Directory.ReadWrite.All"),
    "User.RevokeSessions.All": ("User.ReadWrite.All", "Directory.ReadWrite.All"),
    "Device.Read.All": ("Device.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"),
    "User.Read.All": ("User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"),
    "RoleManagement.Read.Directory": ("Directory.Read.All", "RoleManagement.ReadWrite.Directory"),
}
ROLE_READ = "RoleManagement.Read.Directory"


def action_findings(settings: ConnectorSettings) -> list[tuple[str, str, str, str, str]]:
    """(option, status, detail, call, permission) per allowed action; [] without actions."""
    options = settings.actions
    if options is None:
        return []
    try:
        with action_client(settings) as graph:
            roles = granted_roles(graph)
    except PipelineError as error:
        return [("actions", "warning", f"the action credential: {error}", "token", "")]
    found = []
    for name in options.allowed:
        action = ACTIONS[name]
        needed = [action.permission, READ_PERMISSION[action.kind]]
        if action.kind == "user":  # who holds a directory role, never acted on
            needed.append(ROLE_READ)
        missing = [p for p in needed if p not in roles and not set(_BROADER[p]) & roles]
        call = f"{action.method} /{action.kind}s/{{id}}{action.suffix}"
        detail = (
            f"the action app (client id {options.client_id}) lacks {' and '.join(missing)}: grant "
            "it with admin consent, or drop the action from actions.allowed"
            if missing
            else ""
        )
        found.append(
            (f"actions: {name}", "warning" if missing else "ok", detail, call, " + ".join(needed))
        )
    return found
