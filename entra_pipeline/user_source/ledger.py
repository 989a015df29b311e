"""Invitation e-mails for users the MDM user source imports, each user invited at most once.

An append-only ledger beside the DuckDB file records every invitation before and after its e-mail
goes out, so a run that fails afterwards (and publishes nothing) still remembers what it sent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import smtplib
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from entra_pipeline.secrets import redact
from entra_pipeline.settings import SmtpSettings
from entra_pipeline.warehouse.files import PRIVATE_FILE, exclusive_lock, make_private

log = logging.getLogger(__name__)

LEDGER_SUFFIX = ".invitations.jsonl"
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")
SMTP_TIMEOUT_SECONDS = 30.0

Status = Literal["pending", "sent", "failed"]
Event = Literal["recorded", "deferred", "sending", "sent", "failed"]

NOT_CONFIGURED = "recorded, not sent: user_source.smtp is not configured"
OUTCOME_UNKNOWN = (
    "outcome unknown: the run stopped while this e-mail was being handed to the SMTP server; "
    "it is not sent again, so that nobody is invited twice"
)


def ledger_path(duckdb_path: str | os.PathLike[str]) -> Path:
    """The ledger of a warehouse: `data/entra.duckdb` -> `data/entra.duckdb.invitations.jsonl`."""
    path = Path(duckdb_path)
    return path.with_name(path.name + LEDGER_SUFFIX)


@dataclass(frozen=True)
class TenantKey:
    """Whose invitations: the tenant as configured (what `mdm.*` carry) and its canonical GUID
    (what keys the ledger: the configured text may be a domain, or a GUID in any case)."""

    configured: str
    guid: str


@dataclass
class Invitation:
    """One user's invitation as the ledger knows it: one row of `mdm.invitations`."""

    tenant_id: str
    user_id: str
    userPrincipalName: str | None  # the Graph name, as in mdm.users
    email: str
    status: Status
    recorded_at: datetime
    recorded_run_id: str
    attempted_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None
    note: str | None = None


# mdm.invitations, in column order (the table is rebuilt from the ledger on every run).
INVITATION_COLUMNS: dict[str, str] = {
    "tenant_id": "VARCHAR",
    "user_id": "VARCHAR",
    "userPrincipalName": "VARCHAR",
    "email": "VARCHAR",
    "status": "VARCHAR",
    "recorded_at": "TIMESTAMPTZ",
    "recorded_run_id": "VARCHAR",
    "attempted_at": "TIMESTAMPTZ",
    "completed_at": "TIMESTAMPTZ",
    "error": "VARCHAR",
    "note": "VARCHAR",
}


class InvitationLedger:
    """The JSON-lines journal of invitations: `recorded`, then `sending` (written and flushed to
    disk before the e-mail is handed over), then `sent` or `failed`; `deferred` when SMTP could
    not be reached. A user's state is the fold of their events; lines are never rewritten."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def locked(self) -> Iterator[InvitationLedger]:
        """Exclusive use of the ledger: two runs at once must not both invite the same user."""
        with exclusive_lock(self.path):
            self._end_torn_line()
            yield self

    def invitations(self, tenant: TenantKey) -> dict[str, Invitation]:
        """Every invitation of `tenant`, by user id, in the order they were recorded.

        An event is the tenant's when it carries the tenant's GUID. Events written before the
        ledger carried GUIDs have only the configured text (a domain, or a GUID in any case);
        they count by the user's object id alone, which no other tenant's user has.
        """
        state: dict[str, Invitation] = {}
        for event in self._events():
            if event.get("tenant_guid", tenant.guid) == tenant.guid:
                _apply(state, event)
        return state

    def append(self, events: Sequence[dict[str, Any]]) -> None:
        """Append `events` and flush them to disk before returning."""
        if not events:
            return
        created = not self.path.exists()
        lines = "".join(
            json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in events
        )
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
        make_private(self.path)  # a ledger written before permissions were tightened, too
        with os.fdopen(descriptor, "ab") as handle:
            handle.write(lines.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            _fsync_directory(self.path.parent)

    def record(self, state: dict[str, Invitation], events: Sequence[dict[str, Any]]) -> None:
        """Append `events` (on disk when this returns) and apply them to `state`."""
        self.append(events)
        for event in events:
            _apply(state, event)

    def _events(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    # Only a crash mid-write leaves a broken line, and it was never followed by
                    # an e-mail: every `sending` line is on disk before its e-mail goes out.
                    log.warning("%s line %d is incomplete and was skipped", self.path, number)

    def _end_torn_line(self) -> None:
        """After a crash mid-write the file may end without a newline: close that line, so the
        next event is not glued onto it."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
                handle.flush()
                os.fsync(handle.fileno())


def _apply(state: dict[str, Invitation], event: dict[str, Any]) -> None:
    kind: Event = event["event"]
    at = datetime.fromisoformat(event["at"])
    user_id = event["user_id"]
    if kind == "recorded":
        state.setdefault(
            user_id,
            Invitation(
                tenant_id=event["tenant_id"],
                user_id=user_id,
                userPrincipalName=event.get("userPrincipalName"),
                email=event["email"],
                status="pending",
                recorded_at=at,
                recorded_run_id=event["run_id"],
                note=event.get("note"),
            ),
        )
        return
    invitation = state.get(user_id)
    if invitation is None:
        return
    if kind == "deferred":
        invitation.note = event.get("note")
    elif kind == "sending":
        # Until `sent` or `failed` follows, the e-mail may or may not have gone out.
        invitation.email = event["email"]
        invitation.attempted_at = at
        invitation.status, invitation.error, invitation.note = "failed", OUTCOME_UNKNOWN, None
    elif kind == "sent":
        invitation.status, invitation.completed_at, invitation.error = "sent", at, None
    elif kind == "failed":
        invitation.status, invitation.completed_at = "failed", at
        invitation.error = event.get("error")


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class Recipient:
    """A user who may be invited now: enabled, with an e-mail address."""

    user_id: str
    userPrincipalName: str | None
    email: str
    displayName: str | None = None


@dataclass(frozen=True)
class Letter:
    subject: str
    body: str


@dataclass
class InvitationReport:
    """What one run did: users newly recorded, e-mails sent, failed and deferred."""

    recorded: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    smtp_unavailable: str | None = None  # why no SMTP session could be opened
    failures: list[tuple[str, str]] = field(default_factory=list)  # (email, error)


class SmtpUnavailableError(Exception):
    """No SMTP session could be opened (connection, STARTTLS or login failed): nothing was sent."""


class InvitationMailer:
    """One SMTP session, opened on the first e-mail and reopened after the server drops it."""

    def __init__(self, smtp: SmtpSettings, timeout: float = SMTP_TIMEOUT_SECONDS) -> None:
        self.smtp = smtp
        self.timeout = timeout
        self._session: smtplib.SMTP | None = None

    def __enter__(self) -> InvitationMailer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Connect (STARTTLS and login when configured) unless a session is open already."""
        if self._session is not None:
            return
        smtp = self.smtp
        session: smtplib.SMTP | None = None
        try:
            if smtp.ssl:
                session = smtplib.SMTP_SSL(
                    smtp.host, smtp.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                session = smtplib.SMTP(smtp.host, smtp.port, timeout=self.timeout)
            session.ehlo()
            if smtp.starttls:
                session.starttls(context=ssl.create_default_context())
                session.ehlo()
            if smtp.username:
                password = smtp.password.get_secret_value() if smtp.password else ""
                session.login(smtp.username, password)
        except (smtplib.SMTPException, OSError) as error:
            if session is not None:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    session.close()
            raise SmtpUnavailableError(
                f"no SMTP session with {smtp.host}:{smtp.port}: {describe_smtp_error(error)}"
            ) from None
        self._session = session

    def send(self, message: EmailMessage) -> None:
        """Hand one message to the server; raises smtplib's error when it is refused."""
        self.open()
        assert self._session is not None
        try:
            self._session.send_message(message)
        except (smtplib.SMTPServerDisconnected, OSError):
            self._session = None
            raise

    def close(self) -> None:
        if self._session is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._session.quit()
            self._session = None


def describe_smtp_error(error: BaseException) -> str:
    """An SMTP failure as one line: the server's code and answer when it gave one."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        answers = [f"{code} {_text(reply)}" for code, reply in error.recipients.values()]
        text = "recipient refused: " + "; ".join(answers)
    elif isinstance(error, smtplib.SMTPResponseException):
        text = f"{type(error).__name__}: {error.smtp_code} {_text(error.smtp_error)}"
    else:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return redact(text)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def header_text(value: str) -> str:
    """A header value on one line: a CR, LF or other control character (from a display name in a
    template, say) becomes a space, so no text can start a header of its own."""
    return _CONTROL_CHARACTERS.sub(" ", value).strip()


def invitation_message(
    smtp: SmtpSettings, recipient: Recipient, letter: Letter, tenant: TenantKey
) -> EmailMessage:
    """The e-mail for one recipient; ValueError when the address cannot be a header (CR/LF in it)."""
    message = EmailMessage()
    message["From"] = smtp.from_address
    message["To"] = recipient.email
    message["Subject"] = header_text(letter.subject)
    # One Message-ID per invitation: a receiving system can tell a duplicate it never should see.
    domain = smtp.from_address.rpartition("@")[2] or "entra-pipeline.invalid"
    message["Message-ID"] = f"<invitation.{tenant.guid}.{recipient.user_id}@{domain}>"
    message.set_content(letter.body)
    return message


def invite(
    ledger: InvitationLedger,
    *,
    tenant: TenantKey,
    run_id: str,
    recipients: Iterable[Recipient],
    smtp: SmtpSettings | None,
    compose: Callable[[Recipient], Letter],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> tuple[InvitationReport, dict[str, Invitation]]:
    """Record an invitation for each recipient never invited before and, with SMTP, send every
    pending one; returns what happened and the ledger's invitations of the tenant afterwards.

    Each invitation gets at most one delivery attempt. Its `sending` event is on disk before the
    e-mail is handed over, so a crash between the two reads back as `failed` (outcome unknown)
    and is not retried. When no SMTP session can be opened nothing was handed over: the
    invitations stay `pending` and the next run tries again.
    """
    report = InvitationReport()
    with ledger.locked():
        state = ledger.invitations(tenant)
        current = {r.user_id: r for r in recipients}
        note = None if smtp else NOT_CONFIGURED
        new = [r for user_id, r in current.items() if user_id not in state]
        ledger.record(
            state,
            [
                _event(
                    "recorded",
                    tenant,
                    r.user_id,
                    run_id,
                    now(),
                    userPrincipalName=r.userPrincipalName,
                    email=r.email,
                    note=note,
                )
                for r in new
            ],
        )
        report.recorded = len(new)
        if smtp is not None:
            pending = [
                current[i.user_id]
                for i in state.values()
                if i.status == "pending" and i.user_id in current
            ]
            _send(ledger, state, pending, smtp, compose, tenant, run_id, now, report)
        return report, state


def _send(
    ledger: InvitationLedger,
    state: dict[str, Invitation],
    pending: list[Recipient],
    smtp: SmtpSettings,
    compose: Callable[[Recipient], Letter],
    tenant: TenantKey,
    run_id: str,
    now: Callable[[], datetime],
    report: InvitationReport,
) -> None:
    with InvitationMailer(smtp) as mailer:
        for position, recipient in enumerate(pending):
            try:
                mailer.open()
            except SmtpUnavailableError as error:
                reason = f"not sent yet: {error}; the next run tries again"
                report.smtp_unavailable = str(error)
                report.deferred = len(pending) - position
                ledger.record(
                    state,
                    [
                        _event("deferred", tenant, r.user_id, run_id, now(), note=reason)
                        for r in pending[position:]
                    ],
                )
                return
            try:
                message = invitation_message(smtp, recipient, compose(recipient), tenant)
            except ValueError as error:
                # Nothing was handed over: this user's invitation fails, the others go on.
                text = redact(f"the e-mail could not be built: {error}")
                ledger.record(
                    state,
                    [_event("failed", tenant, recipient.user_id, run_id, now(), error=text)],
                )
                report.failed += 1
                report.failures.append((recipient.email, text))
                continue
            ledger.record(
                state,
                [
                    _event(
                        "sending",
                        tenant,
                        recipient.user_id,
                        run_id,
                        now(),
                        email=recipient.email,
                    )
                ],
            )
            try:
                mailer.send(message)
            except (smtplib.SMTPException, OSError) as error:
                text = describe_smtp_error(error)
                ledger.record(
                    state,
                    [_event("failed", tenant, recipient.user_id, run_id, now(), error=text)],
                )
                report.failed += 1
                report.failures.append((recipient.email, text))
            else:
                ledger.record(state, [_event("sent", tenant, recipient.user_id, run_id, now())])
                report.sent += 1


def _event(
    kind: Event, tenant: TenantKey, user_id: str, run_id: str, at: datetime, **fields: Any
) -> dict[str, Any]:
    return {
        "event": kind,
        "tenant_id": tenant.configured,
        "tenant_guid": tenant.guid,
        "user_id": user_id,
        "run_id": run_id,
        "at": at.isoformat(),
        **{k: v for k, v in fields.items() if v is not None},
    }
