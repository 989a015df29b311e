"""Graph access tokens for the app registration (client-credentials flow) through MSAL.

`TokenProvider` keeps one token in a private MSAL cache until shortly before it expires, drops it
when Graph rejects it, and turns AADSTS errors into typed errors that say what to fix.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import msal
from msal.authority import WELL_KNOWN_AUTHORITY_HOSTS
from msal.exceptions import MsalServiceError

from entra_pipeline.graph.errors import (
    InvalidClientCertificateError,
    InvalidClientSecretError,
    TokenError,
    TokenRequestError,
    TokenServiceUnreachableError,
    UnknownClientError,
    UnknownTenantError,
)
from entra_pipeline.graph.tls import tls_not_trusted, tls_verify
from entra_pipeline.secrets import redact, register_secret

logger = logging.getLogger(__name__)

# AADSTS codes with a fix the operator can apply; the rest are reported as Microsoft words them.
_BAD_SECRET = {7000215, 7000222}  # invalid secret, expired secret
# A certificate the app registration does not have, or a signature it does not verify (700027);
# an assertion outside its valid time range (700024); no thumbprint in its header (50027).
_BAD_CERTIFICATE = {700027, 700024, 50027}
_UNKNOWN_CLIENT = {700016}
_UNKNOWN_TENANT = {90002}
_TRANSIENT = "temporarily_unavailable"  # the token service's 429 / outage answer


def environment_proxy(url: str) -> str | None:
    """The proxy HTTPS_PROXY / ALL_PROXY names for `url`, unless NO_PROXY exempts its host."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if urllib.request.proxy_bypass_environment(host):  # type: ignore[attr-defined]
        return None
    proxies = urllib.request.getproxies_environment()
    return proxies.get(parts.scheme) or proxies.get("all")


def token_tenant(access_token: str) -> str | None:
    """The `tid` claim of an access token: the tenant's GUID, whatever name it was asked by.

    The token came from the token service over TLS just now, so reading the claim needs no
    signature check; a token that is not a JWT gives None."""
    try:
        payload = access_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    tid = claims.get("tid") if isinstance(claims, dict) else None
    return tid.lower() if isinstance(tid, str) else None


class _MsalHttpClient(httpx.Client):
    """The httpx client MSAL posts through. MSAL is written for `requests`, which encodes a
    bytes form value as its text; httpx would write it as "b'...'". MSAL's client assertion (a
    certificate credential) is bytes."""

    def post(self, url: Any, *, data: Any = None, **kwargs: Any) -> httpx.Response:
        if isinstance(data, dict):
            data = {k: v.decode() if isinstance(v, bytes) else v for k, v in data.items()}
        return super().post(url, data=data, **kwargs)


class TokenProvider:
    """Access tokens for `{graph_url}/.default`, acquired with the app's client secret or a
    certificate (MSAL's `client_credential`: the secret, or {private_key, public_certificate})."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_credential: str | Mapping[str, str],
        credential_description: str = "client secret",
        authority_host: str = "https://login.microsoftonline.com",
        graph_url: str = "https://graph.microsoft.com",
        ca_bundle: str | None = None,
        timeout: float = 30.0,
        connect_retries: int = 2,
        transient_retries: int = 2,
        transient_wait: float = 5.0,
    ) -> None:
        if isinstance(client_credential, str):
            register_secret(client_credential)
        else:
            register_secret(client_credential["private_key"])
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self.scopes = [f"{graph_url.rstrip('/')}/.default"]
        self._credential = (
            client_credential if isinstance(client_credential, str) else dict(client_credential)
        )
        self._credential_description = credential_description
        self._transient_retries = transient_retries
        self._transient_wait = transient_wait
        # MSAL's default requests session ignores `verify` when REQUESTS_CA_BUNDLE is set; an
        # httpx client of our own honours the bundle. Connect failures get a couple of retries
        # from the transport; MSAL itself never retries. An explicit transport makes httpx skip
        # HTTPS_PROXY / NO_PROXY, so the proxy for the authority host is resolved here.
        self._http = _MsalHttpClient(
            transport=httpx.HTTPTransport(
                verify=tls_verify(ca_bundle),
                retries=connect_retries,
                proxy=environment_proxy(authority_host),
            ),
            timeout=timeout,
        )
        # The emulator (or any host MSAL does not know) has no instance discovery endpoint, and
        # MSAL would ask login.microsoftonline.com about it; Microsoft clouds keep the default.
        host = urlsplit(authority_host).hostname or ""
        self._instance_discovery = None if host in WELL_KNOWN_AUTHORITY_HOSTS else False
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenProvider(authority={self.authority!r}, client_id={self.client_id!r})"

    def close(self) -> None:
        self._http.close()

    def token(self) -> str:
        """A valid access token: MSAL's cached one unless it is within 5 minutes of expiry."""
        # One thread at a time, so that threads finding the cache empty ask for one token, not N.
        with self._lock:
            for attempt in range(self._transient_retries + 1):
                try:
                    result = self._application().acquire_token_for_client(scopes=self.scopes)
                except (httpx.TransportError, MsalServiceError) as exc:
                    failure: Exception | dict[str, Any] = exc
                else:
                    if "access_token" in result:
                        if result.get("token_source") == "identity_provider":
                            logger.info("Acquired a Graph access token from %s", self.authority)
                        return result["access_token"]
                    if result.get("error") != _TRANSIENT:
                        raise self._token_error(result)
                    failure = result
                if attempt < self._transient_retries:
                    # MSAL replays a 429/5xx answer for its Retry-After (5 s when there is none)
                    # without asking again: waiting less would only retry the replay.
                    wait = self._transient_wait * 2**attempt
                    logger.warning(
                        "The token service at %s failed (%s); retry %d/%d in %.1fs",
                        self.authority,
                        _describe(failure),
                        attempt + 1,
                        self._transient_retries,
                        wait,
                    )
                    time.sleep(wait)
        raise self._unreachable(failure)

    def invalidate(self, token: str | None = None) -> None:
        """Drop `token` (or every token) from the cache, so the next `token()` asks for a new one.

        Passing the rejected token keeps two threads that both saw a 401 from throwing away
        the fresh token the first one already got.
        """
        with self._lock:
            if self._app is None:
                return
            cache = self._app.token_cache
            for entry in list(cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)):
                if token is None or entry.get("secret") == token:
                    cache.remove_at(entry)

    def _application(self) -> msal.ConfidentialClientApplication:
        # Built on first use: the constructor already talks to the token service (discovery).
        if self._app is None:
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id,
                    client_credential=self._credential,
                    authority=self.authority,
                    http_client=self._http,
                    instance_discovery=self._instance_discovery,
                    token_cache=msal.TokenCache(),
                )
            except (httpx.TransportError, MsalServiceError) as exc:
                raise self._unreachable(exc) from None
            except ValueError:
                # MSAL's text is the whole discovery answer; the fix is what the operator needs.
                raise UnknownTenantError(
                    f"The token service at {self.authority} does not know tenant "
                    f"{self.tenant_id!r}: check tenant_id / ENTRA_TENANT_ID (the directory's GUID "
                    "or a verified domain such as contoso.onmicrosoft.com) and authority_host "
                    "(national clouds have their own)"
                ) from None
        return self._app

    def _unreachable(self, failure: Exception | dict[str, Any]) -> TokenServiceUnreachableError:
        if isinstance(failure, Exception) and tls_not_trusted(failure):
            return TokenServiceUnreachableError(
                f"The token service at {self.authority} presented a TLS certificate this machine "
                "does not trust; set ca_bundle to the PEM of its CA (TLS-inspecting proxy, "
                "emulator)"
            )
        return TokenServiceUnreachableError(
            f"The token service at {self.authority} is unreachable ({_describe(failure)}); "
            "check authority_host, the network or proxy, and ca_bundle"
        )

    def _token_error(self, result: dict[str, Any]) -> TokenError:
        codes = set(result.get("error_codes") or [])
        description = _first_line(result.get("error_description") or result.get("error", ""))
        trace = f"trace id {result.get('trace_id')}, correlation id {result.get('correlation_id')}"
        who = f"client id {self.client_id} in tenant {self.tenant_id}"
        if codes & _BAD_CERTIFICATE:
            code = min(codes & _BAD_CERTIFICATE)
            fix = (
                "check this machine's clock (the assertion is valid for 10 minutes)"
                if code == 700024
                else "upload the certificate to the app registration (Certificates & secrets) "
                "or point client_certificate at the one uploaded there"
            )
            return InvalidClientCertificateError(
                f"The token service rejected the {self._credential_description} of {who} "
                f"({description}): {fix} ({trace})"
            )
        if codes & _BAD_SECRET:
            code = min(codes & _BAD_SECRET)
            return InvalidClientSecretError(
                f"The token service rejected the client secret of {who} (AADSTS{code}): "
                f"check client_secret / ENTRA_CLIENT_SECRET; it may have expired ({trace})"
            )
        if codes & _UNKNOWN_CLIENT:
            return UnknownClientError(
                f"The token service knows no application with {who} (AADSTS700016): check "
                f"client_id / ENTRA_CLIENT_ID and that the app is registered in this tenant "
                f"({trace})"
            )
        if codes & _UNKNOWN_TENANT:
            return UnknownTenantError(
                f"The token service at {self.authority} does not know tenant "
                f"{self.tenant_id!r} (AADSTS90002): check tenant_id / ENTRA_TENANT_ID and "
                f"authority_host ({trace})"
            )
        return TokenRequestError(
            f"The token service refused a token to {who}: {result.get('error')}: "
            f"{description} ({trace})"
        )


def _describe(failure: Exception | dict[str, Any]) -> str:
    if isinstance(failure, dict):
        return f"{failure.get('error')}: {_first_line(failure.get('error_description', ''))}"
    return f"{type(failure).__name__}: {_first_line(failure)}"


def _first_line(value: object) -> str:
    # AADSTS descriptions run on with a trace block; the first line says what happened.
    return redact(str(value)).strip().splitlines()[0] if str(value).strip() else ""
