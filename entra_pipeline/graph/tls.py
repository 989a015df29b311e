"""TLS towards Microsoft: the trust store httpx uses (a PEM bundle for a TLS proxy or the
emulator), and telling an untrusted certificate from other connection failures.
"""

from __future__ import annotations

import ssl


def tls_verify(ca_bundle: str | None) -> ssl.SSLContext | bool:
    """httpx's `verify=` for a PEM bundle (emulator, TLS proxy), or the default trust store."""
    return ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True


def tls_not_trusted(exc: BaseException) -> bool:
    """Whether a connection failed because the server's certificate is not trusted."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)
