"""The errors talking to Microsoft can raise, each with a message an operator can act on.

Every error names what failed and what to do, carries the ids Microsoft support asks for, and its
`notification_code` is the `ops.notifications` code the run writes for it; none holds a secret.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from entra_pipeline.errors import PipelineError
from entra_pipeline.graph.collections import ALL as COLLECTIONS
from entra_pipeline.graph.collections import GROUP_MEMBERS, SIGN_IN_ACTIVITY
from entra_pipeline.secrets import redact


class EntraError(PipelineError):
    """Base of everything this package raises about Entra ID or Graph."""

    notification_code = "graph_request_failed"

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self)


# --- the token service (MSAL) ---


class TokenError(EntraError):
    """The token service would not issue a Graph access token."""

    notification_code = "authentication_failed"


class InvalidClientSecretError(TokenError):
    """AADSTS7000215 / 7000222: the client secret is wrong or expired."""


class InvalidClientCertificateError(TokenError):
    """The token service refused the app's certificate (not uploaded, wrong key, clock skew)."""


class UnknownClientError(TokenError):
    """AADSTS700016: no app registration with this client id in the tenant."""


class UnknownTenantError(TokenError):
    """AADSTS90002, or OpenID discovery failing for the authority: no such tenant."""


class TokenServiceUnreachableError(TokenError):
    """The token service could not be reached, or answered with a server error."""

    notification_code = "service_unreachable"


class TokenRequestError(TokenError):
    """Any other AADSTS error."""


# --- Microsoft Graph ---


class GraphError(EntraError):
    """A Graph call failed; carries Graph's ids so the failure can be traced on both sides."""

    def __init__(
        self,
        message: str,
        *,
        method: str = "GET",
        url: str = "",
        status: int | None = None,
        code: str | None = None,
        graph_message: str | None = None,
        request_id: str | None = None,
        client_request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.status = status
        self.code = code
        self.graph_message = graph_message
        self.request_id = request_id
        self.client_request_id = client_request_id


class GraphPermissionError(GraphError):
    """403 Authorization_RequestDenied or Authentication_MSGraphPermissionMissing: the app lacks an
    application permission."""

    notification_code = "permission_missing"

    @property
    def permission(self) -> str:
        return required_permission(self.url)


class GraphPremiumRequiredError(GraphError):
    """403 Authentication_RequestFromNonPremiumTenantOrB2CTenant: sign-in activity needs P1/P2."""

    notification_code = "sign_in_activity_unavailable"


class GraphUnreachableError(GraphError):
    """Graph could not be reached, or kept failing, after every retry."""

    notification_code = "service_unreachable"


class GraphRequestError(GraphError):
    """Any other error answer from Graph (4xx, an expired page token that kept expiring, ...)."""


class ExpiredPageTokenError(GraphRequestError):
    """Graph forgot the listing's page token; the listing restarts from its first page."""


class GroupNotFoundError(EntraError):
    """A group named in the connector options does not exist in the tenant."""

    notification_code = "group_not_found"

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


# The permission each call needs, from the one registry of collections; the member listings read a
# relationship rather than a collection, and sign-in activity shares its path with the users.
_PERMISSION_BY_PATH = {c.path: c.permission for c in COLLECTIONS if c is not SIGN_IN_ACTIVITY}


def required_permission(url: str) -> str:
    """The application permission a Graph GET of `url` needs, e.g. `Device.Read.All`."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if segments and segments[0] in ("v1.0", "beta"):
        segments = segments[1:]
    if not segments:
        return "Directory.Read.All"
    if segments[0] == "groups" and len(segments) >= 3:
        return GROUP_MEMBERS.permission
    selected = ",".join(parse_qs(parts.query).get("$select", [])).split(",")
    if segments[0] == "users" and "signInActivity" in selected:
        return SIGN_IN_ACTIVITY.permission
    return _PERMISSION_BY_PATH.get("/" + segments[0], "Directory.Read.All")


def display_path(url: str) -> str:
    """`url` without scheme, host and query, as it appears in messages: `/v1.0/devices`."""
    return urlsplit(url).path or "/"


# --- Graph's error answers, typed ---

_EXPIRED_PAGE_TOKEN = "Directory_ExpiredPageToken"
# Graph names a missing application permission with more than one code: directory reads answer
# Authorization_RequestDenied, `$select=signInActivity` answers Authentication_MSGraphPermissionMissing
# (microsoftgraph/microsoft-graph-explorer-v4#2731).
_PERMISSION_DENIED = frozenset(
    {"Authorization_RequestDenied", "Authentication_MSGraphPermissionMissing"}
)
_NON_PREMIUM = "Authentication_RequestFromNonPremiumTenantOrB2CTenant"


def error_from_response(
    response: httpx.Response, method: str, described: str, client_request_id: str
) -> GraphError:
    """The typed error for Graph's error answer to `method described`, with Graph's code,
    message and ids."""
    try:
        document = response.json()
    except ValueError:
        document = {}
    body = document.get("error", {}) if isinstance(document, dict) else {}
    if not isinstance(body, dict):
        body = {}
    inner = body.get("innerError") or body.get("innererror") or {}
    code = body.get("code")
    graph_message = body.get("message")
    found: dict[str, Any] = {
        "method": method,
        "url": described,
        "status": response.status_code,
        "code": code,
        "graph_message": graph_message,
        "request_id": response.headers.get("request-id") or inner.get("request-id"),
        "client_request_id": response.headers.get("client-request-id") or client_request_id,
    }
    request = f"{method} {display_path(described)}"
    these = ids_of(found["request_id"], found["client_request_id"])
    if code in _PERMISSION_DENIED:
        return GraphPermissionError(
            f"Graph denied {request}: the app registration lacks the application permission "
            f"{required_permission(described)}; grant it with admin consent ({these})",
            **found,
        )
    if code == _NON_PREMIUM:
        return GraphPremiumRequiredError(
            f"Graph denied {request} with signInActivity: sign-in activity needs a "
            "Microsoft Entra ID P1 or P2 licence in the tenant; license the tenant or set "
            f"users.import_sign_in_activity to false ({these})",
            **found,
        )
    if code == _EXPIRED_PAGE_TOKEN:
        return ExpiredPageTokenError(
            f"Graph expired the page token of {request} ({these})", **found
        )
    if response.status_code == 401:
        return GraphRequestError(
            f"Graph rejected a freshly issued access token for {request} ({code}: "
            f"{graph_message}); check that graph_url and authority_host belong to the same "
            f"cloud ({these})",
            **found,
        )
    return GraphRequestError(
        f"Graph answered {response.status_code} {code or response.reason_phrase} to {request}: "
        f"{graph_message or response.text[:200]} ({these})",
        **found,
    )


def malformed_answer(
    response: httpx.Response, described: str, problem: str, method: str = "GET"
) -> GraphRequestError:
    """The error for a successful answer the pipeline cannot take as Graph's, with its ids."""
    request_id = response.headers.get("request-id")
    client_request_id = response.headers.get("client-request-id")
    return GraphRequestError(
        f"Graph answered {method} {display_path(described)} with {problem}; nothing from this "
        f"run is published ({ids_of(request_id, client_request_id)})",
        method=method,
        url=described,
        status=response.status_code,
        request_id=request_id,
        client_request_id=client_request_id,
    )


def ids_of(request_id: str | None, client_request_id: str | None) -> str:
    """The ids Microsoft support asks for, as messages name them."""
    return f"request-id {request_id or 'none'}, client-request-id {client_request_id or 'none'}"


def ids(error: GraphError) -> str:
    return ids_of(error.request_id, error.client_request_id)


def fields(error: GraphError) -> dict[str, Any]:
    """What `error` carries, to raise another GraphError about the same request."""
    return {
        "method": error.method,
        "url": error.url,
        "status": error.status,
        "code": error.code,
        "graph_message": error.graph_message,
        "request_id": error.request_id,
        "client_request_id": error.client_request_id,
    }
