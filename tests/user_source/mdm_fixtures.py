"""Helpers for the MDM user source tests: a hand-built tenant, a configured sync against the
emulator, and a real SMTP server on 127.0.0.1 that keeps what it receives."""

from __future__ import annotations

import email
import email.policy
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from entra_pipeline.config_file import load_settings
from entra_pipeline.definitions import build_definitions
from entra_pipeline.emulator import Emulator
from entra_pipeline.names import USER_SOURCE_JOB as MDM_JOB
from entra_pipeline.resources import ConnectorResource
from tests.support import unused_port

SECRET_VARIABLE = "TEST_MDM_ENTRA_SECRET"
SMTP_PASSWORD_VARIABLE = "TEST_MDM_SMTP_PASSWORD"
EXTENSION_APP_ID = "a1b2c3d4-0000-4000-8000-00000000e0a1"
COST_CENTER = f"extension_{EXTENSION_APP_ID.replace('-', '')}_costCenter"
MDM_TABLES = (
    "mdm.users",
    "mdm.groups",
    "mdm.group_members",
    "mdm.user_attributes",
    "mdm.rendered_templates",
    "mdm.invitations",
)


def extension_attributes(**values: str) -> dict[str, str | None]:
    attributes: dict[str, str | None] = {f"extensionAttribute{n}": None for n in range(1, 16)}
    attributes.update(values)
    return attributes


def user(
    user_id: str,
    upn: str,
    *,
    mail: str | None,
    given: str | None,
    surname: str | None,
    enabled: bool = True,
    guest: bool = False,
    **props: Any,
) -> dict[str, Any]:
    """A Graph user object as the emulator serves it."""
    display = " ".join(part for part in (given, surname) if part) or upn
    return {
        "id": user_id,
        "userPrincipalName": upn,
        "displayName": display,
        "givenName": given,
        "surname": surname,
        "mail": mail,
        "accountEnabled": enabled,
        "userType": "Guest" if guest else "Member",
        "createdDateTime": "2024-01-15T08:30:00Z",
        "onPremisesExtensionAttributes": extension_attributes(),
        **props,
    }


ALICE = "00000000-0000-4000-8000-00000000a11c"
BOB = "00000000-0000-4000-8000-000000000b0b"
CAROL = "00000000-0000-4000-8000-00000000ca01"
DAVE = "00000000-0000-4000-8000-00000000da7e"
ERIN = "00000000-0000-4000-8000-00000000e214"
FRANK = "00000000-0000-4000-8000-00000000f4a2"
GRACE = "00000000-0000-4000-8000-000000009ace"
ALL_STAFF = "10000000-0000-4000-8000-000000000001"
SALES = "10000000-0000-4000-8000-000000000002"
KIOSKS = "10000000-0000-4000-8000-000000000003"
KIOSK_DEVICE = "20000000-0000-4000-8000-000000000001"


def contoso() -> dict[str, Any]:
    """Five users covering the cases (no mail, disabled, guest, attributes present or not) and
    three groups: All Staff > Sales (nested), and a device group."""
    return {
        "tenant_id": "3c1f9a2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b",
        "domain": "contoso.com",
        "extension_app_id": EXTENSION_APP_ID,
        "users": [
            user(
                ALICE,
                "alice@contoso.com",
                mail="alice@contoso.com",
                given="Alice",
                surname="Smith",
                employeeId="E1",
                onPremisesExtensionAttributes=extension_attributes(extensionAttribute3="Sales"),
                **{COST_CENTER: "CC-1"},
            ),
            user(
                BOB,
                "bob@contoso.com",
                mail=None,
                given="Bob",
                surname="Jones",
                employeeId="E2",
                **{COST_CENTER: "CC-2"},
            ),
            user(
                CAROL,
                "carol@contoso.com",
                mail="carol@contoso.com",
                given="Carol",
                surname="White",
                enabled=False,
                onPremisesExtensionAttributes=extension_attributes(extensionAttribute3="Ops"),
            ),
            user(
                DAVE,
                "dave_fabrikam.com#EXT#@contoso.onmicrosoft.com",
                mail="dave@fabrikam.com",
                given=None,
                surname=None,
                guest=True,
            ),
            user(
                ERIN,
                "erin@contoso.com",
                mail="erin.b@contoso.com",
                given="Erin",
                surname="Brown",
                employeeId="E5",
                onPremisesExtensionAttributes=extension_attributes(extensionAttribute3="Sales"),
                **{COST_CENTER: "CC-5"},
            ),
        ],
        "devices": [{"id": KIOSK_DEVICE, "displayName": "KIOSK-01", "deviceId": KIOSK_DEVICE}],
        "groups": [
            {"id": ALL_STAFF, "displayName": "All Staff", "members": [SALES, CAROL]},
            {"id": SALES, "displayName": "Sales", "members": [ALICE, BOB]},
            {"id": KIOSKS, "displayName": "Kiosks", "members": [KIOSK_DEVICE]},
        ],
    }


@dataclass
class UserSource:
    """One configured MDM user source against one emulator, runnable several times."""

    emulator: Emulator
    tmp_path: Path
    options: dict[str, Any] = field(default_factory=dict)
    top_level: dict[str, Any] = field(default_factory=dict)  # connector keys, e.g. tenant_id

    @property
    def db(self) -> Path:
        return self.tmp_path / "entra.duckdb"

    @property
    def config_path(self) -> Path:
        return self.tmp_path / "connector.yaml"

    def configure(self, **options: Any) -> None:
        """Set user_source options (kept across runs until changed)."""
        self.options.update(options)

    def write_config(self, **top_level: Any) -> None:
        emu = self.emulator
        document: dict[str, Any] = {
            "connector_name": "MDM test",
            **emu.connection_settings(SECRET_VARIABLE),
            "duckdb_path": str(self.db),
            "user_source": {"name": "Contoso", "auto_invite": True, **self.options},
            **self.top_level,
            **top_level,
        }
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    def run(self, monkeypatch: Any) -> dg.ExecuteInProcessResult:
        monkeypatch.setenv(SECRET_VARIABLE, self.emulator.client_secret)
        self.write_config()
        settings = load_settings(self.config_path)
        # One retry with a short backoff: an unreachable service fails in well under a second.
        connector = ConnectorResource(
            config_path=str(self.config_path), max_retries=1, backoff_base_seconds=0.01
        )
        definitions = build_definitions(settings, str(self.config_path), connector)
        return definitions.resolve_job_def(MDM_JOB).execute_in_process(
            instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
        )

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.db), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every published mdm.* table (all columns but synced_at), for before/after compares."""
        published = {
            f"mdm.{name}"
            for (name,) in self.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'mdm'"
            )
        }
        return {
            table: self.query(f"SELECT * FROM {table} ORDER BY ALL")
            for table in MDM_TABLES
            if table in published
        }

    def last_run(self) -> tuple[Any, ...]:
        return self.query(
            "SELECT run_id, status, error, graph_requests FROM ops.sync_runs "
            "ORDER BY started_at DESC LIMIT 1"
        )[0]

    def notifications(self) -> dict[str, tuple[str, str, str, str]]:
        """The last run's notifications by code: (severity, source, message, details JSON)."""
        rows = self.query(
            "SELECT code, severity, source, message, details FROM ops.notifications WHERE run_id = "
            "(SELECT run_id FROM ops.sync_runs ORDER BY started_at DESC LIMIT 1)"
        )
        return {
            code: (severity, source, message, details)
            for code, severity, source, message, details in rows
        }

    def invitations(self) -> dict[str, tuple[Any, ...]]:
        """mdm.invitations by user id: (email, status, error, note, attempted)."""
        rows = self.query(
            "SELECT user_id, email, status, error, note, attempted_at IS NOT NULL "
            "FROM mdm.invitations"
        )
        return {row[0]: row[1:] for row in rows}


class Mailbox:
    """The handler of the test SMTP server: keeps each accepted message, refuses listed
    recipients with 550 the way a real server refuses an unknown mailbox."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.refuse = refuse or set()
        self.envelopes: list[Envelope] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 queued"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login.decode(), data.password.decode()))
        # handled=False: aiosmtpd itself answers 535 to a wrong password.
        return AuthResult(success=data.password == b"s3cret-smtp-pass", handled=False)

    @property
    def messages(self) -> list[EmailMessage]:
        return [
            email.message_from_bytes(e.original_content or b"", policy=email.policy.default)  # type: ignore[misc]
            for e in self.envelopes
        ]

    @property
    def recipients(self) -> list[str]:
        return [address for e in self.envelopes for address in e.rcpt_tos]


class SmtpServer:
    """aiosmtpd on 127.0.0.1 on a free port; optionally STARTTLS and AUTH (login required)."""

    def __init__(
        self,
        mailbox: Mailbox,
        tls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.port = unused_port()
        options: dict[str, Any] = {}
        if implicit_tls is not None:  # SMTPS: TLS from the first byte, AUTH required
            options = {
                "ssl_context": implicit_tls,
                "authenticator": mailbox.authenticate,
                "auth_required": True,
                # aiosmtpd counts only STARTTLS as TLS; this connection is TLS from its first byte.
                "auth_require_tls": False,
            }
        elif tls is not None:
            options = {
                "tls_context": tls,
                "require_starttls": True,
                "authenticator": mailbox.authenticate,
                "auth_required": True,
            }
        self.controller = Controller(mailbox, hostname="127.0.0.1", port=self.port, **options)

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.controller.stop()
