"""Certificate credentials: the app registration authenticates with a private key and its
certificate instead of a client secret, through MSAL against the emulator's token service, which
verifies the client assertion as Entra does (a registered thumbprint, a valid signature, a valid
time range). Bad key files are config errors naming the file; nothing secret is ever printed."""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import jwt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from entra_pipeline.config_file import load_settings, parse_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator import Emulator, EmulatorConfig, running_emulator
from entra_pipeline.graph.auth import TokenProvider
from entra_pipeline.graph.errors import InvalidClientCertificateError
from entra_pipeline.names import CONNECTOR_JOB
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.settings import ConfigError

PASSPHRASE = "correct horse battery staple 7"
TENANT = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
CLIENT = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"


@dataclass(frozen=True)
class Certificate:
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    key_path: Path
    cert_path: Path

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()


def make_certificate(
    folder: Path,
    name: str,
    *,
    passphrase: str | None = None,
    days: tuple[int, int] = (-1, 365),
    key: rsa.RSAPrivateKey | None = None,
) -> Certificate:
    """A self-signed certificate like the one an admin uploads to the app registration."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"entra-pipeline {name}")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
        .sign(key, hashes.SHA256())
    )
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    key_path, cert_path = folder / f"{name}.key", folder / f"{name}.crt"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Certificate(key, certificate, key_path, cert_path)


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("certs"), "uploaded", passphrase=PASSPHRASE)


@pytest.fixture(scope="module")
def emulator(uploaded: Certificate) -> Iterator[Emulator]:
    with running_emulator(
        EmulatorConfig(users=5, devices=5, client_certificates=(uploaded.pem,))
    ) as emu:
        yield emu


def settings_for(emu: Emulator | None, certificate: dict[str, object], env: dict[str, str]):
    document: dict[str, object] = {
        "tenant_id": emu.tenant_id if emu else TENANT,
        "client_id": emu.client_id if emu else CLIENT,
        "client_certificate": certificate,
    }
    if emu is not None:
        document.update(
            authority_host=emu.authority_host, graph_url=emu.graph_url, ca_bundle=emu.ca_bundle
        )
    return parse_settings(document, env=env)


def provider(settings, emu: Emulator) -> TokenProvider:
    return TokenProvider(
        tenant_id=settings.tenant_id,
        client_id=settings.client_id,
        client_credential=settings.client_credential(),
        credential_description=settings.credential_description(),
        authority_host=emu.authority_host,
        graph_url=emu.graph_url,
        ca_bundle=emu.ca_bundle,
        connect_retries=0,
        transient_retries=0,
    )


def test_an_encrypted_pem_key_and_its_certificate_get_a_graph_token(
    emulator: Emulator, uploaded: Certificate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_for(
        emulator,
        {
            "private_key_path": str(uploaded.key_path),
            "certificate_path": str(uploaded.cert_path),
            "passphrase": "${ENTRA_CERTIFICATE_PASSPHRASE}",
        },
        {"ENTRA_CERTIFICATE_PASSPHRASE": PASSPHRASE},
    )
    assert settings.client_secret is None
    before = len(emulator.tokens.credentials_used)
    tokens = provider(settings, emulator)
    try:
        token = tokens.token()
    finally:
        tokens.close()
    assert emulator.tokens.check(f"Bearer {token}").claims is not None
    assert emulator.tokens.credentials_used[before:] == ["client_assertion"]
    thumbprint = uploaded.certificate.fingerprint(hashes.SHA1()).hex().upper()
    assert settings.credential_description() == (
        f"certificate {uploaded.cert_path} with key {uploaded.key_path} (thumbprint {thumbprint})"
    )
    key_pem = settings.client_credential()["private_key"]  # type: ignore[index]
    for secret in (PASSPHRASE, key_pem, key_pem.splitlines()[1]):
        assert secret not in caplog.text
        assert secret not in repr(settings)
        assert secret not in repr(tokens)


def test_a_pfx_file_gets_a_graph_token(
    emulator: Emulator, uploaded: Certificate, tmp_path: Path
) -> None:
    pfx = tmp_path / "uploaded.pfx"
    pfx.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"uploaded",
            uploaded.key,
            uploaded.certificate,
            None,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
    )
    pfx.chmod(0o600)
    settings = settings_for(
        emulator, {"pfx_path": str(pfx), "passphrase": "${P}"}, {"P": PASSPHRASE}
    )
    tokens = provider(settings, emulator)
    try:
        assert emulator.tokens.check(f"Bearer {tokens.token()}").claims is not None
    finally:
        tokens.close()


def test_a_certificate_the_app_registration_does_not_have_is_refused_with_what_to_do(
    emulator: Emulator, tmp_path: Path
) -> None:
    other = make_certificate(tmp_path, "not-uploaded")
    settings = settings_for(
        emulator,
        {"private_key_path": str(other.key_path), "certificate_path": str(other.cert_path)},
        {},
    )
    tokens = provider(settings, emulator)
    with pytest.raises(InvalidClientCertificateError) as caught:
        tokens.token()
    tokens.close()
    message = str(caught.value)
    thumbprint = other.certificate.fingerprint(hashes.SHA256()).hex().upper()
    assert f"The token service rejected the certificate {other.cert_path}" in message
    assert (
        "(AADSTS700027: Client assertion contains an invalid signature. [Reason - The key was not found., "
        in message
    )
    assert f"Thumbprint of key used by client: '{thumbprint}'" in message
    assert "upload the certificate to the app registration (Certificates & secrets)" in message
    assert caught.value.notification_code == "authentication_failed"


def _assertion(
    emu: Emulator, key: rsa.RSAPrivateKey, certificate: x509.Certificate, **claims: object
) -> str:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    body = {
        "aud": f"{emu.authority_host}/{emu.tenant_id}/oauth2/v2.0/token",
        "iss": emu.client_id,
        "sub": emu.client_id,
        "jti": str(uuid.uuid4()),
        "nbf": now,
        "exp": now + 600,
        **claims,
    }
    thumbprint = jwt.utils.base64url_encode(certificate.fingerprint(hashes.SHA256())).decode()
    return jwt.encode(body, key, algorithm="PS256", headers={"x5t#S256": thumbprint})


def _token_answer(emu: Emulator, assertion: str) -> dict:
    answer = httpx.post(
        f"{emu.authority_host}/{emu.tenant_id}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": emu.client_id,
            "scope": f"{emu.graph_url}/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
        verify=ssl.create_default_context(cafile=emu.ca_bundle),
    )
    return {"status": answer.status_code, **answer.json()}


def test_the_emulator_checks_signature_time_range_and_thumbprint_as_entra_does(
    emulator: Emulator, uploaded: Certificate
) -> None:
    good = _token_answer(emulator, _assertion(emulator, uploaded.key, uploaded.certificate))
    assert (good["status"], good["token_type"]) == (200, "Bearer")

    # The uploaded certificate's thumbprint, signed with another key.
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = _token_answer(emulator, _assertion(emulator, impostor, uploaded.certificate))
    assert (forged["status"], forged["error"], forged["error_codes"]) == (
        401,
        "invalid_client",
        [700027],
    )
    assert (
        "[Reason - The provided signature value did not match the expected signature value."
        in forged["error_description"]
    )

    now = int(dt.datetime.now(dt.UTC).timestamp())
    expired = _token_answer(
        emulator,
        _assertion(emulator, uploaded.key, uploaded.certificate, nbf=now - 1200, exp=now - 600),
    )
    assert (expired["status"], expired["error_codes"]) == (401, [700024])
    assert (
        "Client assertion is not within its valid time range. Current time: "
        in expired["error_description"]
    )

    unsigned = jwt.encode({"iss": emulator.client_id}, "k" * 32, algorithm="HS256")
    no_thumbprint = _token_answer(emulator, unsigned)
    assert (no_thumbprint["status"], no_thumbprint["error_codes"]) == (401, [50027])


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "no passphrase",
            r"private_key_path '.*encrypted\.key' is encrypted: set client_certificate\.passphrase",
        ),
        ("wrong passphrase", r"cannot be decrypted with client_certificate\.passphrase"),
        ("another key", r"the private key does not belong to the certificate"),
        ("expired", r"the certificate expired on \d{4}-\d\d-\d\d; create a new one, upload it"),
        ("not yet valid", r"the certificate is not valid before .* \(check this machine's clock\)"),
        ("not RSA", r"the key is not an RSA key; client assertions are signed with PS256/RS256"),
        ("missing key file", r"private_key_path '.*nowhere\.key' does not exist or is not a file"),
        (
            "garbage key",
            r"private_key_path '.*garbage\.key' is not a PEM private key this can read \(corrupt, "
            r"truncated or another format\)",
        ),
        ("certificate is not PEM", r"certificate_path '.*' is not a PEM certificate"),
        (
            "pfx and PEM",
            r"give either pfx_path, or private_key_path with certificate_path, not both",
        ),
        ("only a key", r"give private_key_path and certificate_path \(PEM files\), or pfx_path"),
        (
            "secret and certificate",
            r"client_secret .* or client_certificate .*, exactly one of them",
        ),
        ("no credential", r"give the app registration's credential: client_secret"),
    ],
)
def test_bad_certificate_settings_are_config_errors_naming_the_file(
    tmp_path: Path, case: str, message: str
) -> None:
    encrypted = make_certificate(tmp_path, "encrypted", passphrase=PASSPHRASE)
    plain = make_certificate(tmp_path, "plain")
    certificate: dict[str, object] = {
        "private_key_path": str(encrypted.key_path),
        "certificate_path": str(encrypted.cert_path),
        "passphrase": PASSPHRASE,
    }
    document: dict[str, object] = {"tenant_id": TENANT, "client_id": CLIENT}
    if case == "no passphrase":
        del certificate["passphrase"]
    elif case == "wrong passphrase":
        certificate["passphrase"] = "not it"
    elif case == "another key":
        certificate = {
            "private_key_path": str(plain.key_path),
            "certificate_path": str(encrypted.cert_path),
            "passphrase": None,
        }
        del certificate["passphrase"]
    elif case in ("expired", "not yet valid"):
        days = (-30, -1) if case == "expired" else (2, 30)
        dated = make_certificate(tmp_path, "dated", days=days)
        certificate = {
            "private_key_path": str(dated.key_path),
            "certificate_path": str(dated.cert_path),
        }
    elif case == "not RSA":
        key = ec.generate_private_key(ec.SECP256R1())
        path = tmp_path / "ec.key"
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        certificate = {"private_key_path": str(path), "certificate_path": str(plain.cert_path)}
    elif case == "missing key file":
        certificate["private_key_path"] = str(tmp_path / "nowhere.key")
    elif case == "garbage key":  # a PEM key cut short: its body does not parse
        lines = plain.key_path.read_text().splitlines()
        garbage = tmp_path / "garbage.key"
        garbage.write_text("\n".join([*lines[:5], lines[-1]]) + "\n")
        certificate = {"private_key_path": str(garbage), "certificate_path": str(plain.cert_path)}
    elif case == "certificate is not PEM":
        certificate["certificate_path"] = str(plain.key_path)
        certificate["private_key_path"] = str(plain.key_path)
        del certificate["passphrase"]
    elif case == "pfx and PEM":
        certificate["pfx_path"] = str(plain.cert_path)
    elif case == "only a key":
        del certificate["certificate_path"]
    elif case == "secret and certificate":
        document["client_secret"] = "s3cret-value-xyz"
    if case != "no credential":
        document["client_certificate"] = certificate
    with pytest.raises(ConfigError, match=message) as caught:
        parse_settings(document, env={})
    assert PASSPHRASE not in str(caught.value)
    assert "not it" not in str(caught.value) or case != "wrong passphrase"


def test_a_private_key_other_users_can_read_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = make_certificate(tmp_path, "shared")
    os.chmod(shared.key_path, 0o644)
    settings = parse_settings(
        {
            "tenant_id": TENANT,
            "client_id": CLIENT,
            "client_certificate": {
                "private_key_path": str(shared.key_path),
                "certificate_path": str(shared.cert_path),
            },
        },
        env={},
    )
    assert settings.client_certificate is not None
    assert (
        f"the private key of {shared.cert_path} with key {shared.key_path} is readable by other users"
        in caplog.text
    )


def _sync(emu: Emulator, folder: Path, certificate: Certificate, passphrase: str | None):
    config = folder / "connector.yaml"
    connection = emu.connection_settings("UNUSED")
    del connection["client_secret"]
    document = {
        **connection,
        "client_certificate": {
            "private_key_path": str(certificate.key_path),
            "certificate_path": str(certificate.cert_path),
            **({"passphrase": "${TEST_CERT_PASSPHRASE}"} if passphrase else {}),
        },
        "duckdb_path": str(folder / "entra.duckdb"),
        "mapping_path": str(Path(__file__).resolve().parents[2] / "mappings" / "entra_id.csv"),
    }
    config.write_text(yaml.safe_dump(document))
    os.environ["TEST_CERT_PASSPHRASE"] = PASSPHRASE
    try:
        settings = load_settings(config)
        connector = ConnectorResource(
            config_path=str(config), max_retries=1, backoff_base_seconds=0.01
        )
        job = build_definitions(settings, str(config), connector).resolve_job_def(CONNECTOR_JOB)
        return job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    finally:
        del os.environ["TEST_CERT_PASSPHRASE"]


def test_the_connector_job_syncs_with_a_certificate_and_fails_clearly_without_the_right_one(
    emulator: Emulator, uploaded: Certificate, tmp_path: Path
) -> None:
    good = tmp_path / "good"
    good.mkdir()
    before = len(emulator.tokens.credentials_used)
    result = _sync(emulator, good, uploaded, PASSPHRASE)
    assert result.success
    assert set(emulator.tokens.credentials_used[before:]) == {"client_assertion"}
    with duckdb.connect(str(good / "entra.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.users").fetchone() == (5,)

    bad = tmp_path / "bad"
    bad.mkdir()
    result = _sync(emulator, bad, make_certificate(bad, "stray"), None)
    assert not result.success
    with duckdb.connect(str(bad / "entra.duckdb"), read_only=True) as con:
        assert con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'raw'"
        ).fetchone() == (0,)
        [(code, message)] = con.execute("SELECT code, message FROM ops.notifications").fetchall()
    assert code == "authentication_failed"
    assert "AADSTS700027" in message
    assert "upload the certificate to the app registration" in message
    assert PASSPHRASE not in message
