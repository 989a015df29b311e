"""Keeping secrets out of logs, exceptions, metadata and tables.

Every secret the pipeline loads is registered here; `redact` scrubs any text that might leave the
process, and `RedactingFilter` does the same for every log record.
"""

from __future__ import annotations

import logging
import re
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
MASK = "***"


def register_secret(value: str | None) -> None:
    """Remember a secret so that `redact` removes it wherever it shows up."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


# The password of a URI's user info (scheme://user:password@host): masked wherever it shows up,
# registered or not.
URI_PASSWORD = re.compile(r"(://[^/@\s:]*:)[^/@\s]+@")


def redact(text: str) -> str:
    """Return `text` with every registered secret, and every URI's password, replaced by a mask."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "://" in text:
        text = URI_PASSWORD.sub(rf"\g<1>{MASK}@", text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that masks registered secrets in the formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
