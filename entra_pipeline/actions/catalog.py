"""What each action sends to Graph, the permission it needs, what it expects of the object
before (an object that no longer is so is not touched) and what undoes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from entra_pipeline.vocabulary import ACTION_NAMES

# What an object is re-read with before it is acted on (Graph's property names).
READ_BACK = {
    "device": "id,displayName,accountEnabled,operatingSystem,trustType,onPremisesSyncEnabled,"
    "approximateLastSignInDateTime",
    "user": "id,userPrincipalName,accountEnabled,onPremisesSyncEnabled,lastPasswordChangeDateTime",
}
COLLECTION = {"device": "devices", "user": "users"}


@dataclass(frozen=True)
class Action:
    name: str
    kind: str  # device or user
    method: str
    suffix: str  # after /{collection}/{id}
    body: dict[str, Any] | None
    permission: str  # the least privileged application permission that allows it
    expects: dict[str, Any]  # what the object must be for the action to make sense
    undo: str | None  # the action that reverses it, when Graph allows one

    def path(self, object_id: str) -> str:
        return f"/{COLLECTION[self.kind]}/{object_id}{self.suffix}"

    def after(self, before: dict[str, Any]) -> dict[str, Any] | None:
        """The object's values once done (None: it is gone)."""
        if self.method == "DELETE":
            return None
        return {**before, **(self.body or {})}


ACTIONS = {
    action.name: action
    for action in (
        Action(
            "device.disable",
            "device",
            "PATCH",
            "",
            {"accountEnabled": False},
            "Device.ReadWrite.All",
            {"accountEnabled": True},
            "device.enable",
        ),
        Action(
            "device.enable",
            "device",
            "PATCH",
            "",
            {"accountEnabled": True},
            "Device.ReadWrite.All",
            {"accountEnabled": False},
            "device.disable",
        ),
        Action("device.delete", "device", "DELETE", "", None, "Device.ReadWrite.All", {}, None),
        Action(
            "user.disable",
            "user",
            "PATCH",
            "",
            {"accountEnabled": False},
            "User.EnableDisableAccount.All",
            {"accountEnabled": True},
            "user.enable",
        ),
        Action(
            "user.enable",
            "user",
            "PATCH",
            "",
            {"accountEnabled": True},
            "User.EnableDisableAccount.All",
            {"accountEnabled": False},
            "user.disable",
        ),
        Action(
            "user.revoke_sessions",
            "user",
            "POST",
            "/revokeSignInSessions",
            None,
            "User.RevokeSessions.All",
            {},
            None,
        ),
    )
}
assert tuple(ACTIONS) == ACTION_NAMES
# Reading objects back needs these, beside each action's own permission.
READ_PERMISSION = {"device": "Device.Read.All", "user": "User.Read.All"}
