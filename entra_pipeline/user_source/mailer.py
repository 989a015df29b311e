"""The invitation e-mails and the SMTP server they go through (`user_source.smtp`): one connection
a run, messages whose headers cannot be forged by a user's attributes, errors said plainly.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
from email.message import EmailMessage

from entra_pipeline.secrets import redact
from entra_pipeline.settings import SmtpSettings

SMTP_TIMEOUT_SECONDS = 30.0
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")


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
