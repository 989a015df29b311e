"""Error answers shaped exactly like Microsoft Graph's and Entra's token service's.

Handlers raise `GraphError` / `StsError`; the app turns them into the JSON bodies clients parse.
Each answer cites where its status, code and message come from. Where a message is the
emulator's own wording, it says so: Microsoft asks clients to act on the status and code, never
the text (learn.microsoft.com/graph/errors, learn.microsoft.com/entra/identity-platform/
reference-error-codes: "Apps that take a dependency on text or error code numbers will be
broken over time").
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any


class GraphError(Exception):
    """A Graph error answer: HTTP status, Graph error code and message, optional extra headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def graph_error_body(
    code: str, message: str, request_id: str, client_request_id: str
) -> dict[str, Any]:
    """Graph's error body: {"error": {"code", "message", "innerError": {...}}} with the date,
    request-id and client-request-id, as in every 4xx quoted by
    microsoftgraph/microsoft-graph-explorer-v4#2731 and microsoft-graph-docs-contrib#9043."""
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": client_request_id,
            },
        }
    }


def unsupported_query(message: str = "Unsupported Query.") -> GraphError:
    # 400 Request_UnsupportedQuery for a $filter / operator the property does not support
    # (microsoft-graph-docs-contrib#9043: "Filter operator 'NotEqualsMatch' is not supported.";
    # microsoft-graph-docs#14485); callers pass Graph's wording where there is one.
    return GraphError(400, "Request_UnsupportedQuery", message)


def bad_request(message: str) -> GraphError:
    # 400 Request_BadRequest: Graph's code for a malformed directory query or token; the
    # messages passed in are the emulator's (clients act on the status).
    return GraphError(400, "Request_BadRequest", message)


def not_found(object_id: str) -> GraphError:
    # 404 Request_ResourceNotFound, message verbatim (microsoft-graph-docs-contrib#6431, #7618).
    return GraphError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{object_id}' does not exist or one of its queried reference-property objects "
        "are not present.",
    )


def insufficient_privileges() -> GraphError:
    # 403 Authorization_RequestDenied, message verbatim: a directory read the app has no
    # permission for (Azure-Samples/ms-identity-python-daemon#8, fixed by granting User.Read.All;
    # microsoftgraph/python-sample-auth#12).
    return GraphError(
        403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
    )


def sign_in_permission_missing() -> GraphError:
    # `GET /v1.0/users?$select=displayName,signInActivity` without AuditLog.Read.All answers this
    # 403, not Authorization_RequestDenied (body as reported in
    # microsoftgraph/microsoft-graph-explorer-v4#2731 and #3165).
    return GraphError(
        403,
        "Authentication_MSGraphPermissionMissing",
        "Calling principal does not have required MSGraph permissions AuditLog.Read.All",
    )


def non_premium_tenant() -> GraphError:
    # 403 with this code and message when signInActivity is selected in a tenant without Entra
    # ID P1/P2 (microsoft-graph-docs#12772, microsoft-graph-docs-contrib#3033).
    return GraphError(
        403,
        "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
        "Neither tenant is B2C or tenant doesn't have premium license",
    )


def expired_page_token() -> GraphError:
    # Directory_ExpiredPageToken on a stale $skiptoken of /v1.0/users (Microsoft Q&A 2337800,
    # "How to handle _Directory_ExpiredPageToken error in /v1.0/users"). 400 and the message are
    # the emulator's: the thread quotes only the code.
    return GraphError(
        400,
        "Directory_ExpiredPageToken",
        "The specified page token value has expired and can no longer be included in your request.",
    )


def too_many_requests(retry_after: int) -> GraphError:
    # 429 TooManyRequests with an integer Retry-After (learn.microsoft.com/graph/throttling; the
    # code as quoted in Microsoft Q&A 1138873). The message is the emulator's: Graph's varies.
    # `retry_after=0`: no Retry-After at all, which Graph also answers ("the Retry-After is not
    # always included in a response. If no Retry-After header is provided by the response, we
    # recommend implementing an exponential backoff retry policy", Microsoft Q&A 922050).
    return GraphError(
        429,
        "TooManyRequests",
        "Too many requests. Please retry after the time specified in the Retry-After header.",
        {"Retry-After": str(retry_after)} if retry_after > 0 else {},
    )


class StsError(Exception):
    """An Entra token-service (AADSTS) error answer."""

    def __init__(self, status: int, error: str, code: int, description: str) -> None:
        super().__init__(f"AADSTS{code}: {description}")
        self.status = status
        self.error = error
        self.code = code
        self.description = description

    def body(self) -> dict[str, Any]:
        """The JSON body Entra sends: error, error_description with trace lines, error_codes..."""
        now = dt.datetime.now(dt.UTC)
        trace_id = str(uuid.uuid4())
        correlation_id = str(uuid.uuid4())
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        description = (
            f"AADSTS{self.code}: {self.description}\r\nTrace ID: {trace_id}\r\n"
            f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}"
        )
        return {
            "error": self.error,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }


# The AADSTS answers below: codes and descriptions from Microsoft's error-code reference
# (learn.microsoft.com/entra/identity-platform/reference-error-codes, and
# login.microsoftonline.com/error?code=N), in the token endpoint's JSON shape (error,
# error_description with Trace ID / Correlation ID / Timestamp lines, error_codes, ...).


def sts_unknown_tenant(tenant: str, *, discovery: bool = False) -> StsError:
    # The OpenID discovery document answers `invalid_tenant`, the token endpoint `invalid_request`.
    return StsError(
        400,
        "invalid_tenant" if discovery else "invalid_request",
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud. Check with your subscription administrator, this may "
        "happen if there are no active subscriptions for the tenant.",
    )


def sts_bad_secret(client_id: str) -> StsError:
    return StsError(
        401,
        "invalid_client",
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        "client secret value, not the client secret ID, for a secret added to app "
        f"'{client_id}'.",
    )


def sts_missing_secret() -> StsError:
    return StsError(
        401,
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
    )


def sts_no_thumbprint() -> StsError:
    # AzureAD/microsoft-authentication-library-for-dotnet#124: "AADSTS50027: Invalid JWT token.
    # No certificate thumbprint specified in token header."
    return StsError(
        401,
        "invalid_client",
        50027,
        "Invalid JWT token. No certificate thumbprint specified in token header.",
    )


def sts_invalid_jwt(reason: str) -> StsError:
    # AADSTS50027 is "Invalid JWT token." (the issue cited at sts_no_thumbprint), with the reason.
    return StsError(401, "invalid_client", 50027, f"Invalid JWT token. {reason}.")


def sts_key_not_found(thumbprint: str, client_id: str) -> StsError:
    # Azure/azure-sdk-for-net#29007, pnp/cli-microsoft365#1621: a certificate the app
    # registration does not have.
    return StsError(
        401,
        "invalid_client",
        700027,
        "Client assertion contains an invalid signature. [Reason - The key was not found., "
        f"Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, Graph "
        f"Explorer or directly use MS Graph to see configured keys for app Id '{client_id}'.]",
    )


def sts_bad_signature(thumbprint: str, start: dt.datetime, end: dt.datetime) -> StsError:
    # The wording of Azure/azure-sdk-for-java#25109 (a key found, a signature it does not
    # verify), under the client-assertion code MSAL's docs give for it (AADSTS700027,
    # msal.ClientApplication's client_credential documentation).
    return StsError(
        401,
        "invalid_client",
        700027,
        "Client assertion contains an invalid signature. [Reason - The provided signature value "
        f"did not match the expected signature value., Thumbprint of key used by client: "
        f"'{thumbprint}', Found key 'Start={start:%m/%d/%Y %H:%M:%S}, "
        f"End={end:%m/%d/%Y %H:%M:%S}']",
    )


def sts_assertion_time(now: dt.datetime, valid_from: dt.datetime, expires: dt.datetime) -> StsError:
    # AzureAD/microsoft-authentication-library-for-dotnet#4951, Azure/login#372.
    def stamp(moment: dt.datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")

    return StsError(
        401,
        "invalid_client",
        700024,
        f"Client assertion is not within its valid time range. Current time: {stamp(now)}, "
        f"assertion valid from {stamp(valid_from)}, expiry time of assertion {stamp(expires)}. "
        "Review the documentation at "
        "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
    )


def sts_unknown_client(client_id: str, tenant_name: str) -> StsError:
    return StsError(
        400,
        "unauthorized_client",
        700016,
        f"Application with identifier '{client_id}' was not found in the directory "
        f"'{tenant_name}'. This can happen if the application has not been installed by the "
        "administrator of the tenant or consented to by any user in the tenant. You may have sent "
        "your authentication request to the wrong tenant.",
    )


def sts_bad_scope(scope: str) -> StsError:
    return StsError(
        400,
        "invalid_scope",
        1002012,
        f"The provided value for scope {scope} is not valid. Client credential flows must have a "
        "scope value with /.default suffixed to the resource identifier (application ID URI).",
    )


def sts_unknown_resource(resource: str, tenant_name: str) -> StsError:
    return StsError(
        400,
        "invalid_resource",
        500011,
        f"The resource principal named {resource} was not found in the tenant named "
        f"{tenant_name}. This can happen if the application has not been installed by the "
        "administrator of the tenant or consented to by any user in the tenant. You might have "
        "sent your authentication request to the wrong tenant.",
    )


def sts_unsupported_grant(grant_type: str) -> StsError:
    return StsError(
        400,
        "unsupported_grant_type",
        70003,
        f"The app requested an unsupported grant type '{grant_type}'.",
    )
