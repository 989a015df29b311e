"""The emulated Entra token service: OpenID discovery, instance discovery, client credentials.

Access tokens are HS256 JWTs signed with a per-run key, so validating one needs no server state.
The app authenticates with its client secret, or with a client assertion (a JWT signed with the
private key of a certificate registered on the app, looked up by the thumbprint in its header) as
Microsoft's certificate-credentials documentation describes.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from entra_pipeline.emulator.errors import (
    StsError,
    sts_assertion_time,
    sts_bad_scope,
    sts_bad_secret,
    sts_bad_signature,
    sts_invalid_jwt,
    sts_key_not_found,
    sts_missing_secret,
    sts_no_thumbprint,
    sts_unknown_client,
    sts_unknown_resource,
    sts_unknown_tenant,
    sts_unsupported_grant,
)
from entra_pipeline.emulator.faults import Faults
from entra_pipeline.emulator.tenant import Tenant

# Graph's resource ids: the emulator's own URL is accepted too (clients scope `{graph_url}/.default`).
_GRAPH_RESOURCES = ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000")
_RESERVED_SCOPES = {"openid", "profile", "offline_access"}
# RFC 7523's client assertion type, which the token endpoint takes with `client_assertion`.
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenCheck:
    """The outcome of validating a bearer token: claims, or the 401 message Graph would send."""

    claims: dict[str, Any] | None
    error: str | None


@dataclass(frozen=True)
class AppRegistration:
    """Another app registration in the tenant (the pipeline's action app): its secret and the
    application permissions admin consent granted it. Its tokens carry them in `roles`, as
    Entra's app-only tokens do (learn.microsoft.com/entra/identity-platform/
    access-token-claims-reference: "roles ... the app permissions granted")."""

    client_id: str
    client_secret: str
    permissions: frozenset[str]
    display_name: str = "entra-pipeline actions"
    certificates: tuple[str, ...] = ()  # PEM certificates registered on it (keyCredentials)


def _thumbprints(pems: Sequence[str]) -> dict[str, x509.Certificate]:
    """Registered certificates by the thumbprints a client assertion names them with: x5t
    (SHA-1) and x5t#S256 (SHA-256), base64url of the certificate's digest."""
    found: dict[str, x509.Certificate] = {}
    for pem in pems:
        certificate = x509.load_pem_x509_certificate(pem.encode())
        for digest in (hashes.SHA1(), hashes.SHA256()):
            found[_b64(certificate.fingerprint(digest))] = certificate
    return found


class TokenService:
    """Issues and validates tokens for one tenant: its main app registration, and `apps`."""

    def __init__(
        self,
        *,
        base_url: str,
        graph_url: str,
        tenant: Tenant,
        client_id: str,
        client_secret: str,
        faults: Faults,
        app_display_name: str = "entra-pipeline",
        certificates: Sequence[str] = (),
        apps: Sequence[AppRegistration] = (),
    ) -> None:
        self.base_url = base_url
        self.graph_url = graph_url
        self.tenant = tenant
        self.client_id = client_id
        self.client_secret = client_secret
        self.faults = faults
        self.app_display_name = app_display_name
        self.apps = {app.client_id.lower(): app for app in apps}
        self._key = secrets.token_bytes(32)
        # How each issued token was earned ("client_secret" or "client_assertion"), for tests.
        self.credentials_used: list[str] = []
        # The app registration's keyCredentials, by the thumbprints a client assertion names
        # them with: x5t (SHA-1) and x5t#S256 (SHA-256), base64url of the certificate's digest.
        self._certificates = _thumbprints(certificates)
        self._app_certificates = {
            app.client_id.lower(): _thumbprints(app.certificates) for app in apps
        }

    # ---- tenants ----------------------------------------------------------------------------

    def knows_tenant(self, name: str) -> bool:
        names = {self.tenant.tenant_id.lower(), self.tenant.domain.lower()}
        names.update(d.lower() for d in getattr(self.tenant, "domains", ()))
        return name.lower() in names

    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        """`/{tenant}/v2.0/.well-known/openid-configuration`, endpoints on the emulator."""
        if not self.knows_tenant(tenant):
            raise sts_unknown_tenant(tenant, discovery=True)
        tid = self.tenant.tenant_id
        base = f"{self.base_url}/{tid}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{self.base_url}/{tid}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{base}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.graph_url}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "cloud_instance_name",
                "cloud_instance_host_name",
                "cloud_graph_host_name",
                "msgraph_host",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email",
            ],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": urllib.parse.urlsplit(self.graph_url).netloc,
            "rbac_url": "https://pas.windows.net",
        }

    def instance_discovery(self, authorization_endpoint: str | None) -> dict[str, Any]:
        """`/common/discovery/instance`: the emulator vouches for its own host only."""
        host = urllib.parse.urlsplit(self.base_url).netloc
        tenant = "common"
        if authorization_endpoint:
            parts = urllib.parse.urlsplit(authorization_endpoint)
            # MSAL sends the bare hostname (no port) of the authority it validates.
            if (parts.hostname or "").lower() != (
                urllib.parse.urlsplit(self.base_url).hostname or ""
            ):
                raise StsError(
                    400,
                    "invalid_instance",
                    50049,
                    "Unknown or invalid instance.",
                )
            segments = [s for s in parts.path.split("/") if s]
            tenant = segments[0] if segments else "common"
        return {
            "tenant_discovery_endpoint": (
                f"{self.base_url}/{tenant}/v2.0/.well-known/openid-configuration"
            ),
            "api-version": "1.1",
            "metadata": [
                {"preferred_network": host, "preferred_cache": host, "aliases": [host]},
            ],
        }

    # ---- client credentials -----------------------------------------------------------------

    def issue(self, tenant: str, form: dict[str, str], basic_auth: tuple[str, str] | None) -> dict:
        """`POST /{tenant}/oauth2/v2.0/token` for grant_type=client_credentials."""
        if not self.knows_tenant(tenant):
            raise sts_unknown_tenant(tenant)
        grant_type = form.get("grant_type", "")
        if grant_type != "client_credentials":
            raise sts_unsupported_grant(grant_type)
        client_id = form.get("client_id") or (basic_auth[0] if basic_auth else "")
        secret = form.get("client_secret") or (basic_auth[1] if basic_auth else None)
        other = self.apps.get(client_id.lower())
        if other is not None:
            return self._issue_for(other, tenant, form, secret)
        if client_id.lower() != self.client_id.lower():
            raise sts_unknown_client(client_id, self.tenant.display_name)
        assertion = form.get("client_assertion")
        if assertion and form.get("client_assertion_type") == JWT_BEARER:
            self._check_assertion(assertion, self.client_id, self._certificates)
        elif secret is None:
            raise sts_missing_secret()
        elif not hmac.compare_digest(secret.encode(), self.client_secret.encode()):
            raise sts_bad_secret(self.client_id)
        self._check_scope(form.get("scope", ""))
        self.credentials_used.append("client_assertion" if assertion else "client_secret")
        return self._token(self.client_id, self.app_display_name)

    def _issue_for(
        self, app: AppRegistration, tenant: str, form: dict[str, str], secret: str | None
    ) -> dict:
        """A token for another app registration (a client secret or a client assertion signed
        by one of its certificates), its permissions in `roles`."""
        assertion = form.get("client_assertion")
        if assertion and form.get("client_assertion_type") == JWT_BEARER:
            certificates = self._app_certificates.get(app.client_id.lower(), {})
            self._check_assertion(assertion, app.client_id, certificates)
        elif secret is None:
            raise sts_missing_secret()
        elif not hmac.compare_digest(secret.encode(), app.client_secret.encode()):
            raise sts_bad_secret(app.client_id)
        self._check_scope(form.get("scope", ""))
        return self._token(app.client_id, app.display_name, sorted(app.permissions))

    def _token(
        self, client_id: str, display_name: str, roles: list[str] | None = None
    ) -> dict[str, Any]:
        """The token endpoint's answer: an app-only access token for `client_id`, with the
        application permissions it was granted in `roles` when given."""
        now = int(time.time())
        subject = str(uuid.uuid5(uuid.NAMESPACE_OID, client_id))
        claims: dict[str, Any] = {
            "aud": self.graph_url,
            "iss": f"https://sts.windows.net/{self.tenant.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + int(self.faults.token_lifetime()),
            "app_displayname": display_name,
            "appid": client_id,
            "appidacr": "1",
            "idtyp": "app",
            "oid": subject,
            "sub": subject,
            **({"roles": roles} if roles is not None else {}),
            "tid": self.tenant.tenant_id,
            "uti": _b64(secrets.token_bytes(16)),
            "ver": "1.0",
        }
        expires_in = self.faults.token_expires_in
        return {
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": self._sign(claims),
        }

    def _check_assertion(
        self, assertion: str, client_id: str, registered: dict[str, x509.Certificate]
    ) -> None:
        """A client assertion of `client_id`: signed by one of its `registered` certificates
        (by thumbprint), and valid now."""
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.DecodeError:
            raise sts_no_thumbprint() from None
        thumbprint = header.get("x5t#S256") or header.get("x5t")
        if not isinstance(thumbprint, str):
            raise sts_no_thumbprint()
        shown = _unb64(thumbprint.rstrip("=")).hex().upper()
        certificate = registered.get(thumbprint.rstrip("="))  # MSAL pads base64url
        if certificate is None:
            raise sts_key_not_found(shown, client_id)
        try:
            claims = jwt.decode(
                assertion,
                key=certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["PS256", "RS256"],
                # The audience is the token endpoint; its check is not modelled (no documented
                # AADSTS answer to cite), nor are iss/sub beyond the client id below.
                # MSAL sends no nbf: Entra then reports "valid from 1970-01-01" (the issues
                # cited at sts_assertion_time).
                options={"verify_aud": False, "require": ["exp"]},
                leeway=0,
            )
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
            claims = jwt.decode(assertion, options={"verify_signature": False})
            now = dt.datetime.now(dt.UTC)
            raise sts_assertion_time(
                now,
                dt.datetime.fromtimestamp(int(claims.get("nbf", 0)), dt.UTC),
                dt.datetime.fromtimestamp(int(claims.get("exp", 0)), dt.UTC),
            ) from None
        except jwt.InvalidSignatureError:
            raise sts_bad_signature(
                shown, certificate.not_valid_before_utc, certificate.not_valid_after_utc
            ) from None
        except jwt.InvalidTokenError as error:
            raise sts_invalid_jwt(str(error)) from None
        if str(claims.get("iss", "")).lower() != client_id.lower():
            raise sts_unknown_client(str(claims.get("iss")), self.tenant.display_name)

    def _check_scope(self, scope: str) -> None:
        scopes = [s for s in scope.split() if s not in _RESERVED_SCOPES]
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise sts_bad_scope(scope)
        resource = scopes[0].removesuffix("/.default").rstrip("/")
        if resource not in (self.graph_url, *_GRAPH_RESOURCES):
            raise sts_unknown_resource(resource, self.tenant.display_name)

    def _sign(self, claims: dict[str, Any]) -> str:
        header = _b64(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(signature)}"

    def check(self, authorization: str | None) -> TokenCheck:
        """Validate an `Authorization: Bearer` header the way Graph does."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return TokenCheck(None, "Access token is empty.")
        token = authorization[7:].strip()
        parts = token.split(".")
        if len(parts) != 3:
            return TokenCheck(
                None,
                "IDX14100: JWT is not well formed, there are no dots (.).\n"
                "The token needs to be in JWS or JWE Compact Serialization Format.",
            )
        expected = hmac.new(self._key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            signature_ok = hmac.compare_digest(_unb64(parts[2]), expected)
            claims = json.loads(_unb64(parts[1]))
        except ValueError:
            return TokenCheck(None, "Access token validation failure.")
        if not signature_ok:
            return TokenCheck(None, "Access token validation failure. Invalid signature.")
        if claims.get("tid") != self.tenant.tenant_id or claims.get("aud") != self.graph_url:
            return TokenCheck(None, "Access token validation failure. Invalid audience.")
        if claims.get("exp", 0) <= time.time():
            return TokenCheck(None, "Lifetime validation failed, the token is expired.")
        return TokenCheck(claims, None)
