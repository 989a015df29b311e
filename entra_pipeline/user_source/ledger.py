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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import duckdb

from entra_pipeline.secrets import redact
from entra_pipeline.settings import SmtpSettings
from entra_pipeline.user_source.mailer import (
    InvitationMailer,
    SmtpUnavailableError,
    describe_smtp_error,
    header_text,
)
from entra_pipeline.warehouse.files import PRIVATE_FILE, exclusive_lock, make_private
from entra_pipeline.warehouse.models import define_macro
from entra_pipeline.warehouse.statements import statement

log = logging.getLogger(__name__)

LEDGER_SUFFIX = ".invitations.jsonl"
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")

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
        """Every invitation of `tenant`, by user id, in the order they were recorded (folded by
        the same SQL as a run's, in a DuckDB of its own: for inspection and tests)."""
        with contextlib.closing(duckdb.connect()) as con:
            Journal(self, con, tenant)
            rows = con.execute(
                f"SELECT {', '.join(INVITATION_COLUMNS)} FROM {STATE_VIEW} ORDER BY recorded_seq"
            ).fetchall()
        return {row[1]: Invitation(*row) for row in rows}

    def append(self, events: Sequence[dict[str, Any]]) -> None:
        """Append `events` and flush them to disk before returning."""
        self.write("".join(encode_events(events)))

    def write(self, lines: str) -> None:
        """Append JSON lines (each ending in a newline) and flush them to disk before returning."""
        if not lines:
            return
        created = not self.path.exists()
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
        make_private(self.path)  # a ledger written before permissions were tightened, too
        with os.fdopen(descriptor, "ab") as handle:
            handle.write(lines.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            _fsync_directory(self.path.parent)

    def lines(self) -> Iterator[str]:
        """Each line of the ledger as written (with its newline), in order."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as handle:
            yield from handle

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


def encode_events(events: Sequence[dict[str, Any]]) -> list[str]:
    """The ledger line of each of `events` (with its newline)."""
    return [json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n" for e in events]


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# The ledger's events of one tenant in a run's DuckDB connection (temporary: never published),
# the fold of them (one row per invitation) and the run's working sets.
# Named by dbt_like_sql/statements/invitation_events.sql and invitation_state.sql.
EVENTS_TABLE = "invitation_events"
STATE_VIEW = "invitation_state"
RECIPIENTS_VIEW = "invitation_recipients"
NEW_TABLE = "invitation_new"
QUEUE_TABLE = "invitation_queue"
# Events read, recorded or inserted at a time: memory stays flat whatever the ledger's length.
BATCH_SIZE = 20_000


class Journal:
    """The ledger of one tenant loaded into temporary DuckDB tables of `con`, kept in step with
    what the run appends: `record` puts events on disk first, then in the table (in batches).

    A user's state is the fold of their events after the first `recorded` one (`STATE_VIEW`):
    each field takes the value of the last event that sets it. Folded in SQL, not in Python
    objects, so a ledger of millions of users costs DuckDB's buffer, not one object each.

    Lines reach the table as text, BATCH_SIZE at a time in one string, and DuckDB parses them
    (dbt_like_sql/statements/invitation_insert.sql): a frame built per batch from Python objects (polars, pyarrow) left some
    megabytes behind each time, hundreds of MiB over a ledger of millions of events.
    """

    def __init__(
        self, ledger: InvitationLedger, con: duckdb.DuckDBPyConnection, tenant: TenantKey
    ) -> None:
        self.ledger, self.con, self.tenant = ledger, con, tenant
        self._buffer: list[str] = []
        self._first = self._next = 1
        for macro in ("invitation_lines", "is_json_object"):
            define_macro(con, macro)
        con.execute(statement("invitation_events"))
        con.execute(statement("invitation_state", outcome_unknown=OUTCOME_UNKNOWN))
        for line in ledger.lines():
            self._append(line)
        self.flush()

    def record(self, events: Sequence[dict[str, Any]]) -> None:
        """Append `events` to the ledger (on disk when this returns); the table follows."""
        lines = encode_events(events)
        self.ledger.write("".join(lines))
        for line in lines:
            self._append(line)

    def _append(self, line: str) -> None:
        self._buffer.append(line)
        self._next += 1
        if len(self._buffer) >= BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        """Insert the buffered lines into the table: before anything reads the state."""
        if not self._buffer:
            return
        text, first = "".join(self._buffer), self._first
        self._buffer, self._first = [], self._next
        params = {"text": text, "first": first}
        for (number,) in self.con.execute(statement("invitation_torn_lines"), params).fetchall():
            # Only a crash mid-write leaves a broken line, and it was never followed by an
            # e-mail: every `sending` line is on disk before its e-mail goes out.
            log.warning("%s line %d is incomplete and was skipped", self.ledger.path, number)
        self.con.execute(statement("invitation_insert"), {**params, "guid": self.tenant.guid})

    def batches(
        self, table: str, columns: str, key: Sequence[str], *, after: tuple[Any, ...] | None = None
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of a working table in the order of `key` (columns that are never null and
        together unique), after the row whose key is `after`, BATCH_SIZE at a time.

        Paged by key, not numbered: each page is a top-N of the table (a heap of one batch),
        where numbering the rows would sort all of them at once, at millions of rows the
        largest allocation of the step."""
        names = ", ".join(key)
        while True:
            where, params = "", {}
            if after is not None:
                marks = ", ".join(f"$k{i}" for i in range(len(key)))
                where = f"WHERE ({names}) > ({marks})"
                params = {f"k{i}": value for i, value in enumerate(after)}
            rows = self.con.execute(
                f"SELECT {columns}, {names} FROM {table} {where} "
                f"ORDER BY {names} LIMIT {BATCH_SIZE}",
                params,
            ).fetchall()
            if not rows:
                return
            after = rows[-1][-len(key) :]
            yield [row[: -len(key)] for row in rows]

    def count(self, table: str) -> int:
        row = self.con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0


@dataclass(frozen=True)
class Recipient:
    """A user who may be invited now: enabled, with an e-mail address (and, when templates
    render them, the invitation's subject and body)."""

    user_id: str
    userPrincipalName: str | None
    email: str
    displayName: str | None = None
    subject: str | None = None
    body: str | None = None


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


# The columns a recipients query has: Recipient's fields, in order.


RECIPIENT_COLUMNS = tuple(f.name for f in fields(Recipient))


def invite(
    ledger: InvitationLedger,
    con: duckdb.DuckDBPyConnection,
    *,
    tenant: TenantKey,
    run_id: str,
    recipients: str | None,
    smtp: SmtpSettings | None,
    compose: Callable[[Recipient], Letter],
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> InvitationReport:
    """Record an invitation for each recipient never invited before and, with SMTP, send every
    pending one; returns what happened. Afterwards `STATE_VIEW` in `con` holds the ledger's
    invitations of the tenant (INVITATION_COLUMNS, and `recorded_seq`: their order).

    `recipients` is a query over `con` with RECIPIENT_COLUMNS (None: nobody); new ones are
    recorded by userPrincipalName, then id, and pending ones sent in the order recorded.

    Each invitation gets at most one delivery attempt. Its `sending` event is on disk before the
    e-mail is handed over, so a crash between the two reads back as `failed` (outcome unknown)
    and is not retried. When no SMTP session can be opened nothing was handed over: the
    invitations stay `pending` and the next run tries again.
    """
    report = InvitationReport()
    with ledger.locked():
        journal = Journal(ledger, con, tenant)
        query = (
            recipients or f"SELECT {', '.join(f'NULL AS {c}' for c in RECIPIENT_COLUMNS)} LIMIT 0"
        )
        # A view: the recipients are read from where they are (mdm.users), not copied.
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {RECIPIENTS_VIEW} AS "
            f"SELECT {', '.join(RECIPIENT_COLUMNS)} FROM ({query})"
        )
        report.recorded = _record_new(journal, run_id, None if smtp else NOT_CONFIGURED, now)
        if smtp is not None:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {QUEUE_TABLE} AS "
                "SELECT r.*, s.recorded_seq "
                f"FROM {RECIPIENTS_VIEW} AS r INNER JOIN {STATE_VIEW} AS s USING (user_id) "
                "WHERE s.status = 'pending'"
            )
            _Delivery(journal, smtp, compose, run_id, now, report).send_queue()
            journal.flush()
        return report


def _record_new(
    journal: Journal, run_id: str, note: str | None, now: Callable[[], datetime]
) -> int:
    """A `recorded` event for each recipient never recorded before, by userPrincipalName then
    id; how many."""
    journal.con.execute(
        f"CREATE OR REPLACE TEMP TABLE {NEW_TABLE} AS "
        "SELECT r.user_id, r.userPrincipalName, r.email, "
        "coalesce(r.userPrincipalName, '') AS upn_key "
        f"FROM {RECIPIENTS_VIEW} AS r ANTI JOIN "
        f"(SELECT user_id FROM {EVENTS_TABLE} WHERE event = 'recorded') AS e USING (user_id)"
    )
    recorded = 0
    for batch in journal.batches(
        NEW_TABLE, "user_id, userPrincipalName, email", ("upn_key", "user_id")
    ):
        journal.record(
            [
                _event(
                    "recorded",
                    journal.tenant,
                    user_id,
                    run_id,
                    now(),
                    userPrincipalName=upn,
                    email=email,
                    note=note,
                )
                for user_id, upn, email in batch
            ]
        )
        recorded += len(batch)
    journal.flush()
    return recorded


@dataclass
class _Delivery:
    """Sending a run's queued invitations (QUEUE_TABLE) and journaling what became of each."""

    journal: Journal
    smtp: SmtpSettings
    compose: Callable[[Recipient], Letter]
    run_id: str
    now: Callable[[], datetime]
    report: InvitationReport

    def send_queue(self) -> None:
        pending = self.journal.count(QUEUE_TABLE)
        position, last = 0, None
        columns = ", ".join((*RECIPIENT_COLUMNS, "recorded_seq"))
        with InvitationMailer(self.smtp) as mailer:
            for batch in self.journal.batches(QUEUE_TABLE, columns, ("recorded_seq",)):
                for *row, seq in batch:
                    try:
                        mailer.open()
                    except SmtpUnavailableError as error:
                        self.defer(last, f"not sent yet: {error}; the next run tries again")
                        self.report.smtp_unavailable = str(error)
                        self.report.deferred = pending - position
                        return
                    position, last = position + 1, (seq,)
                    self.send(mailer, Recipient(*row))

    def send(self, mailer: InvitationMailer, recipient: Recipient) -> None:
        tenant = self.journal.tenant
        try:
            message = invitation_message(self.smtp, recipient, self.compose(recipient), tenant)
        except ValueError as error:
            # Nothing was handed over: this user's invitation fails, the others go on.
            self.failed(recipient, redact(f"the e-mail could not be built: {error}"))
            return
        self.record("sending", recipient.user_id, email=recipient.email)
        try:
            mailer.send(message)
        except (smtplib.SMTPException, OSError) as error:
            self.failed(recipient, describe_smtp_error(error))
        else:
            self.record("sent", recipient.user_id)
            self.report.sent += 1

    def failed(self, recipient: Recipient, text: str) -> None:
        self.record("failed", recipient.user_id, error=text)
        self.report.failed += 1
        self.report.failures.append((recipient.email, text))

    def defer(self, done: tuple[int] | None, reason: str) -> None:
        """A `deferred` event for each queued invitation after the one recorded `done` (its
        recorded_seq; None: all of them)."""
        for batch in self.journal.batches(QUEUE_TABLE, "user_id", ("recorded_seq",), after=done):
            self.journal.record([self.event("deferred", u, note=reason) for (u,) in batch])

    def record(self, kind: Event, user_id: str, **values: Any) -> None:
        self.journal.record([self.event(kind, user_id, **values)])

    def event(self, kind: Event, user_id: str, **values: Any) -> dict[str, Any]:
        return _event(kind, self.journal.tenant, user_id, self.run_id, self.now(), **values)


def _event(
    kind: Event, tenant: TenantKey, user_id: str, run_id: str, at: datetime, **values: Any
) -> dict[str, Any]:
    return {
        "event": kind,
        "tenant_id": tenant.configured,
        "tenant_guid": tenant.guid,
        "user_id": user_id,
        "run_id": run_id,
        "at": at.isoformat(),
        **{k: v for k, v in values.items() if v is not None},
    }
