"""A Graph session recorded in the warehouse: what both sources wrap their extraction in.

Its failures become `ops.notifications` (docs/tables.md codes) and its request and retry counts
reach `ops.sync_runs`, however the extraction ends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from entra_pipeline.graph.auth import token_tenant
from entra_pipeline.graph.client import GraphClient
from entra_pipeline.graph.errors import (
    EntraError,
    GraphPermissionError,
    GroupNotFoundError,
    TokenRequestError,
)
from entra_pipeline.resources import ConnectorResource
from entra_pipeline.secrets import redact
from entra_pipeline.vocabulary import is_guid
from entra_pipeline.warehouse.resource import Warehouse


class RunLogHandler(logging.Handler):
    """Forwards the Graph layer's log records (progress, retries, waits and their reasons) to
    Dagster's run log while an extraction runs; the records are redacted like every log."""

    def __init__(self, log: Any) -> None:
        super().__init__(logging.INFO)
        self.run_log = log

    def emit(self, record: logging.LogRecord) -> None:
        message = redact(record.getMessage())
        if record.levelno >= logging.WARNING:
            self.run_log.warning(message)
        else:
            self.run_log.info(message)


@contextlib.contextmanager
def recorded_graph_client(
    connector: ConnectorResource, warehouse: Warehouse, log: Any = None
) -> Iterator[GraphClient]:
    """A Graph client whose failures and request counts are recorded in the run's outcome, and
    whose progress and retries show in the run log: under `log`, the reading step's own (so
    that filtering the run log by the step shows them), else the warehouse's."""
    graph_log = logging.getLogger("entra_pipeline.graph")
    run_log = log if log is not None else warehouse.run_log
    handler = RunLogHandler(run_log) if run_log is not None else None
    level = graph_log.level
    if handler is not None:
        graph_log.addHandler(handler)
        graph_log.setLevel(min(level or logging.INFO, logging.INFO))
    try:
        with _recorded(connector, warehouse) as client:
            yield client
    finally:
        if handler is not None:
            graph_log.removeHandler(handler)
            graph_log.setLevel(level)


@contextlib.contextmanager
def _recorded(connector: ConnectorResource, warehouse: Warehouse) -> Iterator[GraphClient]:
    with connector.graph_client() as client:
        try:
            yield client
        except EntraError as error:
            notify_extraction_failure(warehouse, error)
            raise
        finally:
            total = client.total_stats()
            warehouse.add_graph_stats(total.requests, total.retries)


def tenant_guid(configured: str, client: GraphClient) -> str:
    """The tenant's canonical id (a lower-case GUID): the configured one when it is a GUID, else
    the `tid` of the client's access token (the config may name the tenant by a domain)."""
    if is_guid(configured):
        return configured.lower()
    tid = token_tenant(client.access_token())
    if tid is None or not is_guid(tid):
        raise TokenRequestError(
            f"the access token issued for tenant {configured} names no tenant id (tid claim)"
        )
    return tid


def notify_extraction_failure(warehouse: Warehouse, error: EntraError) -> None:
    """The notification a failed extraction leaves in `ops.notifications` (docs/tables.md codes)."""
    details: dict[str, object] = {"error": type(error).__name__}
    if isinstance(error, GraphPermissionError):
        details["permission"] = error.permission
    for attribute in ("url", "status", "code", "request_id", "client_request_id"):
        value = getattr(error, attribute, None)
        if value:
            details[attribute] = value
    if isinstance(error, GroupNotFoundError):
        details["groups"] = error.missing
    warehouse.notify(error.notification_code, "error", str(error), details)
