"""Graph's writes on device and people records, the ones the pipeline's actions send: disable,
enable or delete a device, disable or enable a user, revoke a user's sign-in sessions. Each
checks the calling app's application permissions and Graph's own refusals, and changes the
tenant, so a later sync (full or delta) sees the change.

- `PATCH /devices/{id}`: Device.ReadWrite.All (or Directory.ReadWrite.All); "in
  application-only scenarios and for non-Windows devices, that is, where the operatingSystem
  property is not Windows, the app can update only the extensionAttributes property"
  (learn.microsoft.com/graph/api/device-update): anything else is refused 403 as an
  insufficient privilege. 204 No Content.
- `DELETE /devices/{id}`: Device.ReadWrite.All; 204 (learn.microsoft.com/graph/api/device-delete).
- `PATCH /users/{id}` `accountEnabled`: User.EnableDisableAccount.All (least privileged, with
  User.Read.All), User.ReadWrite.All or Directory.ReadWrite.All; 204
  (learn.microsoft.com/graph/api/user-update). A user holding a directory role is refused 403
  Authorization_RequestDenied to an app without a privileged role (user-update: "only ... a
  Privileged Authentication Administrator can update" privileged users).
- `POST /users/{id}/revokeSignInSessions`: User.RevokeSessions.All (or User.ReadWrite.All,
  Directory.ReadWrite.All); 200 `{"value": true}` and the user's
  signInSessionsValidFromDateTime moves to now (learn.microsoft.com/graph/api/
  user-revokesigninsessions).
- An object synchronized from on-premises (`onPremisesSyncEnabled` true) cannot be changed in
  the cloud: 400 Request_BadRequest "Unable to update the specified properties for on-premises
  mastered Directory Sync objects or objects currently undergoing migration."
  (microsoft-graph-docs#7301, #18038).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from entra_pipeline.emulator import errors
from entra_pipeline.emulator.errors import GraphError
from entra_pipeline.emulator.handlers import GraphResources

DEVICE_WRITE = ("Device.ReadWrite.All", "Directory.ReadWrite.All")
USER_ENABLE = ("User.EnableDisableAccount.All", "User.ReadWrite.All", "Directory.ReadWrite.All")
USER_REVOKE = ("User.RevokeSessions.All", "User.ReadWrite.All", "Directory.ReadWrite.All")
WRITE_PERMISSIONS = frozenset({*DEVICE_WRITE, *USER_ENABLE, *USER_REVOKE})
ON_PREMISES_MASTERED = (
    "Unable to update the specified properties for on-premises mastered Directory Sync objects "
    "or objects currently undergoing migration."
)


def write(
    resources: GraphResources, method: str, segments: list[str], body: bytes
) -> tuple[int, dict[str, Any] | None]:
    """Serve one write: (status, JSON body or None for 204)."""
    route = (method, segments[0] if segments else "", len(segments))
    if route == ("PATCH", "devices", 2):
        return _patch_device(resources, segments[1], _json(body))
    if route == ("DELETE", "devices", 2):
        return _delete_device(resources, segments[1])
    if route == ("PATCH", "users", 2):
        return _patch_user(resources, segments[1], _json(body))
    if route == ("POST", "users", 3) and segments[2].lower() == "revokesigninsessions":
        return _revoke_sessions(resources, segments[1])
    # Not Graph's answer: the emulator serves only the writes above.
    raise GraphError(
        405, "Request_BadRequest", f"The emulator does not serve {method} /{'/'.join(segments)}."
    )


def _json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        # 400 BadRequest for a body that is not a JSON object; message the emulator's.
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.")
    return parsed


def _object(resources: GraphResources, kind: str, object_id: str) -> dict[str, Any]:
    found = resources.tenant.locate(object_id.lower())
    if found is None or found[0] != kind:
        raise errors.not_found(object_id)
    obj = resources.tenant.object_at(*found)
    if obj is None:
        raise errors.not_found(object_id)
    return obj


def _refuse_synced(obj: dict[str, Any]) -> None:
    if obj.get("onPremisesSyncEnabled"):
        raise errors.bad_request(ON_PREMISES_MASTERED)


def _patch_device(
    resources: GraphResources, object_id: str, changes: dict[str, Any]
) -> tuple[int, None]:
    resources.require(DEVICE_WRITE)
    device = _object(resources, "device", object_id)
    if not str(device.get("operatingSystem") or "").lower().startswith("windows") and (
        set(changes) - {"extensionAttributes"}
    ):
        raise errors.insufficient_privileges()
    _refuse_synced(device)
    resources.tenant.update(device["id"], **changes)
    return 204, None


def _delete_device(resources: GraphResources, object_id: str) -> tuple[int, None]:
    resources.require(DEVICE_WRITE)
    device = _object(resources, "device", object_id)
    _refuse_synced(device)
    resources.tenant.remove(device["id"])
    return 204, None


def _user_to_change(resources: GraphResources, object_id: str) -> dict[str, Any]:
    user = _object(resources, "user", object_id)
    if user["id"] in resources.tenant.role_holders:
        raise errors.insufficient_privileges()
    _refuse_synced(user)
    return user


def _patch_user(
    resources: GraphResources, object_id: str, changes: dict[str, Any]
) -> tuple[int, None]:
    # accountEnabled alone needs User.EnableDisableAccount.All; other properties more.
    resources.require(USER_ENABLE if set(changes) <= {"accountEnabled"} else USER_ENABLE[1:])
    user = _user_to_change(resources, object_id)
    resources.tenant.update(user["id"], **changes)
    return 204, None


def _revoke_sessions(resources: GraphResources, object_id: str) -> tuple[int, dict[str, Any]]:
    resources.require(USER_REVOKE)
    user = _user_to_change(resources, object_id)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    resources.tenant.update(user["id"], signInSessionsValidFromDateTime=now)
    return 200, {
        "@odata.context": f"{resources.graph_url}/v1.0/$metadata#Edm.Boolean",
        "value": True,
    }
