"""Small helpers shared by test folders: facts about the app registration, and a dead port.

Importable as `support` from every test module (tests/ is on sys.path through its conftest).
"""

from __future__ import annotations

import socket

# The application permissions the connector's documentation asks an admin to grant.
CONNECTOR_PERMISSIONS = frozenset(
    {
        "User.Read.All",
        "AuditLog.Read.All",
        "Device.Read.All",
        "GroupMember.Read.All",
        "LicenseAssignment.Read.All",
    }
)


def unused_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
