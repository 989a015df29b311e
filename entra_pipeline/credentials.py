"""Certificate credentials of the app registration: a private key and its X.509 certificate.

Many tenants forbid client secrets; an app registration then authenticates with a certificate
whose public part is uploaded to it (Certificates & secrets), signing a client assertion with the
private key. MSAL does the signing; this module loads and checks the files first, so that a wrong
path, a missing passphrase, a key that does not match its certificate or an expired certificate is
a config error naming the file, not an AADSTS answer at run time.

MSAL signs with PS256 (RS256 for ADFS): RSA keys only. Given the certificate, it sends its SHA-256
thumbprint (`x5t#S256`), which is what the token service looks the key up by.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12


@dataclass(frozen=True)
class CertificateCredential:
    """A loaded, checked certificate credential (the key decrypted, in memory only)."""

    source: str  # the file(s) it came from, for messages
    private_key_pem: str
    certificate_pem: str
    sha1_thumbprint: str  # upper-case hex, as the Entra admin centre shows it
    sha256_thumbprint: str
    not_after: datetime
    key_readable_by_others: bool

    def msal_credential(self) -> dict[str, str]:
        """MSAL's `client_credential`: with the certificate, MSAL signs with PS256 and sends its
        SHA-256 thumbprint and chain (x5c)."""
        return {"private_key": self.private_key_pem, "public_certificate": self.certificate_pem}

    def describe(self) -> str:
        return f"certificate {self.source} (thumbprint {self.sha1_thumbprint})"


def load_certificate_credential(
    *,
    private_key_path: str | None = None,
    certificate_path: str | None = None,
    pfx_path: str | None = None,
    passphrase: str | None = None,
    now: datetime | None = None,
) -> CertificateCredential:
    """Load and check a PEM key + PEM certificate, or one PKCS#12 (.pfx) file; a problem is a
    ValueError saying what to fix."""
    if pfx_path is not None:
        if private_key_path is not None or certificate_path is not None:
            raise ValueError(
                "give either pfx_path, or private_key_path with certificate_path, not both"
            )
        key, certificate = _load_pfx(pfx_path, passphrase)
        source, key_path = pfx_path, pfx_path
    elif private_key_path is not None and certificate_path is not None:
        key, certificate = _load_pem(private_key_path, certificate_path, passphrase)
        source, key_path = f"{certificate_path} with key {private_key_path}", private_key_path
    else:
        raise ValueError(
            "give private_key_path and certificate_path (PEM files), or pfx_path (a PKCS#12 file)"
        )
    rsa_key = _check_pair(source, key, certificate, now or datetime.now(UTC))
    mode = stat.S_IMODE(Path(key_path).stat().st_mode)
    return CertificateCredential(
        source=source,
        private_key_pem=rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
        sha1_thumbprint=certificate.fingerprint(hashes.SHA1()).hex().upper(),
        sha256_thumbprint=certificate.fingerprint(hashes.SHA256()).hex().upper(),
        not_after=certificate.not_valid_after_utc,
        key_readable_by_others=bool(mode & (stat.S_IRWXG | stat.S_IRWXO)),
    )


def _load_pfx(pfx_path: str, passphrase: str | None) -> tuple[Any, x509.Certificate]:
    secret = passphrase.encode() if passphrase else None
    try:
        key, certificate, _ = pkcs12.load_key_and_certificates(_read(pfx_path, "pfx_path"), secret)
    except ValueError as error:
        raise ValueError(_decrypt_problem("pfx_path", pfx_path, passphrase, error)) from None
    if key is None or certificate is None:
        raise ValueError(
            f"pfx_path {pfx_path!r} must hold both the private key and the certificate"
        )
    return key, certificate


def _load_pem(
    private_key_path: str, certificate_path: str, passphrase: str | None
) -> tuple[Any, x509.Certificate]:
    key_data = _read(private_key_path, "private_key_path")
    try:
        key = serialization.load_pem_private_key(
            key_data, passphrase.encode() if passphrase else None
        )
    except (TypeError, ValueError) as error:
        # TypeError: encrypted without a passphrase, or a passphrase for a key without one.
        raise ValueError(
            _decrypt_problem("private_key_path", private_key_path, passphrase, error)
        ) from None
    try:
        certificate = x509.load_pem_x509_certificate(_read(certificate_path, "certificate_path"))
    except ValueError:
        raise ValueError(
            f"certificate_path {certificate_path!r} is not a PEM certificate "
            "(-----BEGIN CERTIFICATE-----)"
        ) from None
    return key, certificate


def _check_pair(
    source: str, key: Any, certificate: x509.Certificate, moment: datetime
) -> rsa.RSAPrivateKey:
    """The key, checked: RSA, the certificate's own, the certificate valid at `moment`."""
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(
            f"{source}: the key is not an RSA key; client assertions are signed with PS256/RS256, "
            "which need RSA (create the certificate with an RSA key of 2048 bits or more)"
        )
    public = certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey) or public.public_numbers() != (
        key.public_key().public_numbers()
    ):
        raise ValueError(
            f"{source}: the private key does not belong to the certificate (their public keys "
            "differ); give the key the certificate was created with"
        )
    if certificate.not_valid_after_utc <= moment:
        raise ValueError(
            f"{source}: the certificate expired on {certificate.not_valid_after_utc:%Y-%m-%d}; "
            "create a new one, upload it to the app registration (Certificates & secrets) and "
            "point client_certificate at it"
        )
    if certificate.not_valid_before_utc > moment:
        raise ValueError(
            f"{source}: the certificate is not valid before "
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check this machine's clock)"
        )
    return key


def _read(path: str, key: str) -> bytes:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{key} {path!r} does not exist or is not a file")
    try:
        return file.read_bytes()
    except OSError as error:
        raise ValueError(f"{key} {path!r} cannot be read ({error.strerror})") from None


def _decrypt_problem(key: str, path: str, passphrase: str | None, error: Exception) -> str:
    text = str(error).lower()
    if "invalid password or pkcs12 data" in text:  # PKCS#12 cannot tell the two apart
        if passphrase:
            return (
                f"{key} {path!r} cannot be decrypted with client_certificate.passphrase (or is "
                "not a PKCS#12 file)"
            )
        return (
            f"{key} {path!r} is encrypted (or is not a PKCS#12 file): set "
            "client_certificate.passphrase (e.g. passphrase: ${ENTRA_CERTIFICATE_PASSPHRASE})"
        )
    if "password was not given" in text:
        return (
            f"{key} {path!r} is encrypted: set client_certificate.passphrase (from the "
            "environment, e.g. passphrase: ${ENTRA_CERTIFICATE_PASSPHRASE})"
        )
    if "not encrypted" in text:
        return f"{key} {path!r} is not encrypted: remove client_certificate.passphrase"
    if passphrase and ("password" in text or "decrypt" in text or "invalid" in text):
        return f"{key} {path!r} cannot be decrypted with client_certificate.passphrase"
    kind = "a PKCS#12 (.pfx) file" if key == "pfx_path" else "a PEM private key"
    if "could not deserialize key data" in text:
        # cryptography's words for a body it cannot parse ("may be encrypted with an unsupported
        # algorithm" among the guesses): corrupt or truncated, not a missing passphrase.
        return (
            f"{key} {path!r} is not {kind} this can read (corrupt, truncated or another "
            "format): give the key file the certificate was created with"
        )
    return f"{key} {path!r} is not {kind}"
