"""Auto-invite end to end: the job against the emulator, a real SMTP server on 127.0.0.1, and the
invitation ledger that keeps a user from ever being invited twice, across re-runs and failures."""

from __future__ import annotations

import json
import logging
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from entra_pipeline.emulator.tls import server_context, write_certificates
from entra_pipeline.settings import SmtpSettings
from entra_pipeline.user_source import invitations
from entra_pipeline.user_source import ledger as ledger_module
from entra_pipeline.user_source.ledger import (
    NOT_CONFIGURED,
    OUTCOME_UNKNOWN,
    RECIPIENT_COLUMNS,
    STATE_VIEW,
    InvitationLedger,
    Letter,
    Recipient,
    TenantKey,
    invite,
    ledger_path,
)
from entra_pipeline.warehouse.sql import literal
from tests.support import unused_port
from tests.user_source.mdm_fixtures import (
    ALICE,
    CAROL,
    DAVE,
    ERIN,
    FRANK,
    GRACE,
    SMTP_PASSWORD_VARIABLE,
    Mailbox,
    SmtpServer,
    user,
)

T1 = TenantKey("t1", "0f1e2d3c-4b5a-4978-8796-a5b4c3d2e1f0")
OTHER_TENANT = TenantKey("other-tenant", "9e8d7c6b-5a49-4837-9261-504f3e2d1c0b")

FIRST_WAVE = {
    ALICE: "alice@contoso.com",
    DAVE: "dave@fabrikam.com",
    ERIN: "erin.b@contoso.com",
}  # Bob has no mailbox and Carol is disabled


def smtp_options(port: int, **extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "from": "mdm@contoso.com", **extra}


def test_first_run_invites_enabled_users_with_mail_and_the_next_run_only_new_ones(
    user_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = Mailbox()
    with SmtpServer(mailbox) as server:
        source = user_source(smtp=smtp_options(server.port))
        assert source.run(monkeypatch).success
        assert sorted(mailbox.recipients) == sorted(FIRST_WAVE.values())
        alice = next(m for m in mailbox.messages if m["To"] == "alice@contoso.com")
        assert alice["From"] == "mdm@contoso.com"
        assert alice["Subject"] == "Contoso: you are invited to register your devices"
        body = alice.get_content().replace("\r\n", "\n")  # SMTP carries CRLF line ends
        assert body.startswith("Hello Alice Smith,\n\nYou are invited to register your devices")
        assert "work account alice@contoso.com" in body
        assert {u: row[:3] for u, row in source.invitations().items()} == {
            u: (mail, "sent", None) for u, mail in FIRST_WAVE.items()
        }

        tenant = source.emulator.tenant
        tenant.add(
            "user",
            user(FRANK, "frank@contoso.com", mail="frank@contoso.com", given="Frank", surname="Ng"),
        )
        tenant.add(
            "user",
            user(
                GRACE,
                "grace@contoso.com",
                mail="grace@contoso.com",
                given="Grace",
                surname="Li",
                enabled=False,
            ),
        )
        tenant.update(CAROL, accountEnabled=True)  # enabled since: invited now, the first time
        seen = len(source.emulator.requests)
        assert source.run(monkeypatch).success
        # The second run reads the directory by delta: only what changed came from Graph.
        paths = {r.path for r in source.emulator.requests[seen:]}
        assert {"/v1.0/users/delta", "/v1.0/groups/delta"} <= paths
        assert "/v1.0/users" not in paths
        sent = len(mailbox.recipients)
        tenant.update(FRANK, department="Sales")  # changed again: seen before, not invited again
        assert source.run(monkeypatch).success
        assert len(mailbox.recipients) == sent

    assert sorted(mailbox.recipients) == sorted(
        [*FIRST_WAVE.values(), "frank@contoso.com", "carol@contoso.com"]
    )
    invitations = source.invitations()
    assert set(invitations) == {*FIRST_WAVE, FRANK, CAROL}
    assert {row[1] for row in invitations.values()} == {"sent"}
    first_run, second_run, _ = (
        row[0] for row in source.query("SELECT run_id FROM ops.sync_runs ORDER BY started_at")
    )
    recorded = dict(source.query("SELECT user_id, recorded_run_id FROM mdm.invitations"))
    assert recorded == {
        **dict.fromkeys(FIRST_WAVE, first_run),
        FRANK: second_run,
        CAROL: second_run,
    }


def test_without_smtp_invitations_are_recorded_pending_and_sent_once_smtp_is_configured(
    user_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = user_source(smtp=None)
    assert source.run(monkeypatch).success
    assert source.invitations() == {
        u: (mail, "pending", None, NOT_CONFIGURED, False) for u, mail in FIRST_WAVE.items()
    }
    assert source.run(monkeypatch).success  # nothing new: still three, nothing doubled
    assert source.query("SELECT connector, count(*) FROM mdm.invitations GROUP BY ALL") == [
        ("MDM test", 3)
    ]

    mailbox = Mailbox()
    with SmtpServer(mailbox) as server:
        source.configure(smtp=smtp_options(server.port))
        assert source.run(monkeypatch).success
        assert source.run(monkeypatch).success
    assert sorted(mailbox.recipients) == sorted(FIRST_WAVE.values())
    assert {row[1] for row in source.invitations().values()} == {"sent"}


def test_auto_invite_off_invites_nobody(user_source: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    mailbox = Mailbox()
    with SmtpServer(mailbox) as server:
        source = user_source(auto_invite=False, smtp=smtp_options(server.port))
        assert source.run(monkeypatch).success
    assert mailbox.envelopes == []
    assert source.invitations() == {}


def test_a_refused_recipient_is_recorded_failed_and_not_sent_again(
    user_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = Mailbox(refuse={"erin.b@contoso.com"})
    with SmtpServer(mailbox) as server:
        source = user_source(smtp=smtp_options(server.port))
        assert source.run(monkeypatch).success
        email, status, error, note, attempted = source.invitations()[ERIN]
        assert (email, status, note, attempted) == ("erin.b@contoso.com", "failed", None, True)
        assert error == "recipient refused: 550 5.1.1 <erin.b@contoso.com>: mailbox unavailable"
        mailbox.refuse.clear()
        assert source.run(monkeypatch).success
    assert sorted(mailbox.recipients) == ["alice@contoso.com", "dave@fabrikam.com"]
    assert source.invitations()[ERIN][1:3] == ("failed", error)


def test_an_unreachable_smtp_server_leaves_invitations_pending_for_the_next_run(
    user_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = unused_port()  # nothing listens there yet
    source = user_source(smtp=smtp_options(port))
    result = source.run(monkeypatch)
    assert result.success  # users are published; the e-mails wait
    for _, status, error, note, attempted in source.invitations().values():
        assert (status, error, attempted) == ("pending", None, False)
        assert note.startswith(f"not sent yet: no SMTP session with 127.0.0.1:{port}: ")
    mailbox = Mailbox()
    with SmtpServer(mailbox) as server:
        source.configure(smtp=smtp_options(server.port))
        assert source.run(monkeypatch).success
    assert sorted(mailbox.recipients) == sorted(FIRST_WAVE.values())


def test_an_invitation_sent_by_a_run_that_fails_afterwards_is_never_sent_again(
    user_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = Mailbox()
    with SmtpServer(mailbox) as server:
        source = user_source(smtp=smtp_options(server.port))

        def disk_full(*args: Any) -> int:
            raise OSError(28, "No space left on device")

        # The e-mails go out, then the step fails: the run publishes nothing at all.
        monkeypatch.setattr(invitations, "load_invitations", disk_full)
        assert not source.run(monkeypatch).success
        failed_run = source.last_run()[0]
        assert sorted(mailbox.recipients) == sorted(FIRST_WAVE.values())
        assert "mdm.invitations" not in source.tables()
        monkeypatch.undo()

        assert source.run(monkeypatch).success
    assert len(mailbox.envelopes) == 3  # the ledger remembered
    rows = source.query("SELECT user_id, status, recorded_run_id FROM mdm.invitations")
    assert sorted(rows) == sorted((u, "sent", failed_run) for u in FIRST_WAVE)


def test_starttls_and_login_with_the_password_from_the_environment(
    user_source: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = write_certificates(tmp_path / "smtp-certs", ("127.0.0.1",))
    # The SMTP client trusts the system store; a private CA is added the OpenSSL way.
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_bundle))
    password = "s3cret-smtp-pass"
    monkeypatch.setenv(SMTP_PASSWORD_VARIABLE, password)
    mailbox = Mailbox()
    tls: ssl.SSLContext = server_context(certs)
    with SmtpServer(mailbox, tls=tls) as server:
        source = user_source(
            smtp=smtp_options(
                server.port,
                starttls=True,
                username="mdm-relay",
                password=f"${{{SMTP_PASSWORD_VARIABLE}}}",
            )
        )
        result = source.run(monkeypatch)
    assert result.success
    assert mailbox.logins == [("mdm-relay", password)]
    assert sorted(mailbox.recipients) == sorted(FIRST_WAVE.values())
    logged = "\n".join(str(event.message) for event in result.all_events)
    assert password not in logged
    assert password not in ledger_path(source.db).read_text()
    assert password not in json.dumps(source.query("SELECT * FROM ops.notifications"), default=str)


# The test server's AUTH is over implicit TLS, which aiosmtpd does not count as TLS.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_smtps_sends_the_invitations(
    user_source: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = write_certificates(tmp_path / "smtp-certs", ("127.0.0.1",))
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_bundle))
    password = "s3cret-smtp-pass"  # the one Mailbox accepts
    monkeypatch.setenv(SMTP_PASSWORD_VARIABLE, password)
    mailbox = Mailbox()
    with SmtpServer(mailbox, implicit_tls=server_context(certs)) as server:
        source = user_source(
            smtp=smtp_options(
                server.port,
                ssl=True,
                username="mdm-relay",
                password=f"${{{SMTP_PASSWORD_VARIABLE}}}",
            )
        )
        assert source.run(monkeypatch).success
    assert mailbox.logins == [("mdm-relay", password)]
    assert sorted(mailbox.recipients) == sorted(FIRST_WAVE.values())
    assert {row[1] for row in source.invitations().values()} == {"sent"}


def test_a_wrong_smtp_password_sends_nothing_and_keeps_invitations_pending(
    user_source: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = write_certificates(tmp_path / "smtp-certs", ("127.0.0.1",))
    monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_bundle))
    monkeypatch.setenv(SMTP_PASSWORD_VARIABLE, "wrong-password")
    mailbox = Mailbox()
    with SmtpServer(mailbox, tls=server_context(certs)) as server:
        source = user_source(
            smtp=smtp_options(
                server.port,
                starttls=True,
                username="mdm-relay",
                password=f"${{{SMTP_PASSWORD_VARIABLE}}}",
            )
        )
        assert source.run(monkeypatch).success
    assert mailbox.envelopes == []
    notes = {row[3] for row in source.invitations().values()}
    [note] = notes
    assert "SMTPAuthenticationError: 535" in note
    assert "wrong-password" not in note


# ---- the ledger on its own ---------------------------------------------------------------


def _query(recipients: list[Recipient]) -> str:
    """The recipients as a query `invite` reads (VALUES, every column a VARCHAR)."""
    rows = ", ".join(
        "("
        + ", ".join(literal(v) if v is not None else "NULL::VARCHAR" for v in vars(r).values())
        + ")"
        for r in recipients
    )
    return f"SELECT * FROM (VALUES {rows}) AS r({', '.join(RECIPIENT_COLUMNS)})"


def _recipients() -> str:
    return _query([Recipient(ALICE, "alice@contoso.com", "alice@contoso.com", "Alice Smith")])


def _letter(recipient: Recipient) -> Letter:
    return Letter("Invitation", f"Hello {recipient.displayName}")


def test_a_send_interrupted_before_its_outcome_was_written_is_failed_and_never_retried(
    tmp_path: Path,
) -> None:
    ledger = InvitationLedger(tmp_path / "entra.duckdb.invitations.jsonl")
    at = datetime(2025, 6, 1, tzinfo=UTC).isoformat()
    base = {"tenant_id": "t1", "user_id": ALICE, "run_id": "crashed-run", "at": at}
    ledger.append(
        [
            {
                **base,
                "event": "recorded",
                "userPrincipalName": "alice@contoso.com",
                "email": "alice@contoso.com",
            },
            {**base, "event": "sending", "email": "alice@contoso.com"},
        ]
    )
    mailbox = Mailbox()
    with SmtpServer(mailbox) as server:
        smtp = SmtpSettings.model_validate(smtp_options(server.port))
        report = invite(
            ledger,
            duckdb.connect(),
            tenant=T1,
            run_id="next-run",
            recipients=_recipients(),
            smtp=smtp,
            compose=_letter,
        )
    assert mailbox.envelopes == []
    assert (report.recorded, report.sent) == (0, 0)
    alice = ledger.invitations(T1)[ALICE]
    assert (alice.status, alice.error, alice.recorded_run_id) == (
        "failed",
        OUTCOME_UNKNOWN,
        "crashed-run",
    )


def test_a_line_torn_by_a_crash_is_skipped_and_the_next_event_stays_readable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = InvitationLedger(tmp_path / "entra.duckdb.invitations.jsonl")
    ledger.append([])  # nothing to write: no file either
    assert not ledger.path.exists()
    # A blank line and a line that is JSON but no event count as lines too: events keep the
    # numbers of their lines.
    ledger.path.write_text('\n[]\n{"event":"recorded","tenant_id":"t1","user_id":"x","run_')
    con = duckdb.connect()
    with caplog.at_level(logging.WARNING):
        report = invite(
            ledger,
            con,
            tenant=T1,
            run_id="r2",
            recipients=_recipients(),
            smtp=None,
            compose=_letter,
        )
    assert report.recorded == 1
    assert con.execute(f"SELECT user_id, status, recorded_seq FROM {STATE_VIEW}").fetchall() == [
        (ALICE, "pending", 4)
    ]
    assert [r.getMessage() for r in caplog.records] == [
        f"{ledger.path} line 2 is incomplete and was skipped",
        f"{ledger.path} line 3 is incomplete and was skipped",
    ]
    assert InvitationLedger(ledger.path).invitations(T1)[ALICE].status == "pending"
    assert InvitationLedger(ledger.path).invitations(OTHER_TENANT) == {}


def test_the_ledger_lives_beside_the_published_database() -> None:
    assert ledger_path("data/entra.duckdb") == Path("data/entra.duckdb.invitations.jsonl")


def test_a_line_break_in_a_templated_subject_never_starts_a_header(
    user_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = Mailbox()
    with SmtpServer(mailbox) as server:
        source = user_source(
            smtp=smtp_options(server.port),
            templates={"invitation_subject": "Welcome ${userDisplayName}"},
        )
        source.emulator.tenant.update(ALICE, displayName="Alice\r\nBcc: attacker@evil.example")
        assert source.run(monkeypatch).success
    alice = next(m for m in mailbox.messages if m["To"] == "alice@contoso.com")
    assert alice["Subject"] == "Welcome Alice Bcc: attacker@evil.example"
    assert alice["Bcc"] is None
    assert "attacker@evil.example" not in mailbox.recipients
    assert sorted(mailbox.recipients) == sorted(FIRST_WAVE.values())


def test_a_recipient_whose_mail_cannot_be_built_fails_alone_and_the_others_are_sent(
    tmp_path: Path,
) -> None:
    # mdm.users' blocking check keeps such an address from Graph out of a run; the ledger holds
    # the line on its own too.
    broken = "erin.b@contoso.com\r\nBcc: attacker@evil.example"
    recipients = [
        Recipient(ALICE, "alice@contoso.com", "alice@contoso.com", "Alice"),
        Recipient(ERIN, "erin.b@contoso.com", broken, "Erin"),
    ]
    mailbox = Mailbox()
    with SmtpServer(mailbox) as server:
        ledger = InvitationLedger(tmp_path / "entra.duckdb.invitations.jsonl")
        report = invite(
            ledger,
            duckdb.connect(),
            tenant=T1,
            run_id="run-1",
            recipients=_query(recipients),
            smtp=SmtpSettings(host="127.0.0.1", port=server.port, from_address="mdm@contoso.com"),
            compose=lambda r: Letter("Welcome", f"Hello {r.displayName}"),
        )
    assert mailbox.recipients == ["alice@contoso.com"]
    assert (report.sent, report.failed) == (1, 1)
    state = ledger.invitations(T1)
    assert state[ALICE].status == "sent"
    erin = state[ERIN]
    assert (erin.status, erin.attempted_at) == ("failed", None)
    assert erin.error == (
        "the e-mail could not be built: Header values may not contain linefeed or carriage "
        "return characters"
    )


def test_the_ledger_and_its_lock_are_owner_only(
    user_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = user_source(smtp=None)
    assert source.run(monkeypatch).success
    ledger = ledger_path(source.db)
    assert ledger.stat().st_mode & 0o777 == 0o600
    assert ledger.with_name(ledger.name + ".lock").stat().st_mode & 0o777 == 0o600
    assert source.db.stat().st_mode & 0o777 == 0o600


def test_naming_the_tenant_by_domain_or_upper_case_guid_invites_nobody_twice(
    user_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = Mailbox()
    with SmtpServer(mailbox) as server:
        source = user_source(smtp=smtp_options(server.port))
        guid = source.emulator.tenant_id
        for tenant_id in ("contoso.com", guid.upper(), guid, "CONTOSO.COM"):
            source.top_level["tenant_id"] = tenant_id
            assert source.run(monkeypatch).success, tenant_id
    assert sorted(mailbox.recipients) == sorted(FIRST_WAVE.values())
    assert {row[1] for row in source.invitations().values()} == {"sent"}
    events = [json.loads(line) for line in ledger_path(source.db).read_text().splitlines()]
    assert {event["tenant_guid"] for event in events} == {guid.lower()}


def test_a_ledger_written_before_tenant_guids_keeps_its_invitations(
    user_source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = user_source(smtp=None)
    legacy = {"tenant_id": "contoso.com", "user_id": ALICE, "run_id": "old-run"}
    InvitationLedger(ledger_path(source.db)).append(
        [
            {
                **legacy,
                "event": "recorded",
                "at": "2026-01-05T02:00:00+00:00",
                "userPrincipalName": "alice@contoso.com",
                "email": "alice@contoso.com",
            },
            {
                **legacy,
                "event": "sending",
                "at": "2026-01-05T02:00:01+00:00",
                "email": "alice@contoso.com",
            },
            {**legacy, "event": "sent", "at": "2026-01-05T02:00:02+00:00"},
        ]
    )
    assert source.run(monkeypatch).success  # configured by GUID now
    invitations = source.invitations()
    assert invitations[ALICE][1] == "sent"
    assert {u: row[1] for u, row in invitations.items() if u != ALICE} == {
        DAVE: "pending",
        ERIN: "pending",
    }
    recorded = source.query("SELECT user_id, recorded_run_id FROM mdm.invitations")
    assert dict(recorded)[ALICE] == "old-run"


def test_batches_of_the_ledger_fold_defer_and_send_every_invitation_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two events a batch: five users cross every batch boundary of loading, recording,
    # deferring and sending.
    monkeypatch.setattr(ledger_module, "BATCH_SIZE", 2)
    ledger = InvitationLedger(tmp_path / "entra.duckdb.invitations.jsonl")
    users = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(5)]
    recipients = _query(
        [Recipient(u, f"user{i}@contoso.com", f"user{i}@contoso.com") for i, u in enumerate(users)]
    )

    def run(smtp: SmtpSettings) -> Any:
        return invite(
            ledger,
            duckdb.connect(),
            tenant=T1,
            run_id="run",
            recipients=recipients,
            smtp=smtp,
            compose=_letter,
        )

    unreachable = SmtpSettings(host="127.0.0.1", port=unused_port(), from_address="mdm@contoso.com")
    report = run(unreachable)
    assert (report.recorded, report.sent, report.deferred) == (5, 0, 5)
    state = ledger.invitations(T1)
    assert list(state) == users  # recorded by userPrincipalName
    assert {
        (i.status, (i.note or "").startswith("not sent yet: no SMTP session"))
        for i in state.values()
    } == {("pending", True)}

    mailbox = Mailbox(refuse={"user3@contoso.com"})
    with SmtpServer(mailbox) as server:
        smtp = SmtpSettings(host="127.0.0.1", port=server.port, from_address="mdm@contoso.com")
        report = run(smtp)
        assert (report.recorded, report.sent, report.failed, report.deferred) == (0, 4, 1, 0)
        assert run(smtp).sent == 0
    assert mailbox.recipients == [f"user{i}@contoso.com" for i in (0, 1, 2, 4)]
    state = ledger.invitations(T1)
    assert [(i.status, i.note, i.attempted_at is not None) for i in state.values()] == [
        ("sent", None, True),
        ("sent", None, True),
        ("sent", None, True),
        ("failed", None, True),
        ("sent", None, True),
    ]
    assert state[users[3]].error == (
        "recipient refused: 550 5.1.1 <user3@contoso.com>: mailbox unavailable"
    )
    events = [json.loads(line)["event"] for line in ledger.path.read_text().splitlines()]
    assert sorted(events) == sorted(
        ["recorded", "deferred", "sending"] * 5 + ["sent"] * 4 + ["failed"]
    )
