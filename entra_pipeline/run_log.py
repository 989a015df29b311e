"""The short run log `demo` and `sync` print: each step as it starts, what the assets and the
Graph layer say (pages, rows, rows/s, retries, waits), warnings and failures — not Dagster's DEBUG
events or stack traces (`sync --verbose` prints those; Dagster's event log always keeps them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from rich.console import Console

from entra_pipeline.secrets import redact

# Without a terminal, a status line after this long without output: with the 0.5 s poll, some
# line at least every 5 s (the Graph layer's progress lines come every 5 s, plus jitter).
HEARTBEAT_SECONDS = 4.0


class RunProgress(logging.Handler):
    """What the demo's runs log, on the terminal as they go: each step as it starts, what the
    assets and the Graph layer say (pages, rows, rows/s, retries, waits), failures; and a live
    status line (rich, installed with Dagster) with the job, its current step and the time spent.
    Without a terminal (a pipe, CI) the status line is printed after HEARTBEAT_SECONDS of
    silence instead."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.DEBUG)  # Dagster logs its step events at DEBUG
        self.console = console
        self.job, self.step = "", "starting"
        self.started = self.step_started = time.monotonic()
        self.last_printed = time.monotonic()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def begin(self, job: str) -> None:
        self.job, self.step = job, "starting"
        self.started = self.step_started = time.monotonic()

    def status_line(self) -> str:
        now = time.monotonic()
        return (
            f"{self.job}: {self.step} ({now - self.step_started:.0f}s; "
            f"job {now - self.started:.0f}s)"
        )

    def __rich__(self) -> str:  # the live line, re-rendered by rich several times a second
        return self.status_line()

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        if event is not None:
            if event.event_type_value == "STEP_START":
                self.step, self.step_started = event.step_key or "", time.monotonic()
                self._print(f"step {self.step}", "cyan")
            elif event.event_type_value == "STEP_FAILURE":
                self._print(f"step {event.step_key} failed", "red")
            return
        if record.levelno < logging.INFO:
            return
        text = redact(str(meta.get("orig_message") or record.getMessage()))
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        self._print(text, style)

    def _print(self, text: str, style: str) -> None:
        self.console.print(f"  {text}", style=style, markup=False)
        self.last_printed = time.monotonic()

    def start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(0.5):
                if time.monotonic() - self.last_printed >= HEARTBEAT_SECONDS:
                    self._print(f"… {self.status_line()}", "dim")

        self._heartbeat = threading.Thread(target=beat, daemon=True)
        self._heartbeat.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()


def progress_logger(progress: RunProgress) -> dg.LoggerDefinition:
    """A Dagster logger that hands every run event and log message to `progress`."""

    @dg.logger
    def demo_progress(_context: dg.InitLoggerContext) -> logging.Logger:
        log = logging.Logger("entra_pipeline.demo", logging.DEBUG)
        log.addHandler(progress)
        return log

    return demo_progress


@contextmanager
def short_log(console: Console) -> Iterator[RunProgress]:
    """A `RunProgress` on `console` for the block: a live status line on a terminal, else a
    heartbeat line after each silence."""
    progress = RunProgress(console)
    if console.is_terminal:
        with console.status(progress, spinner="dots"):
            yield progress
        return
    progress.start_heartbeat()
    try:
        yield progress
    finally:
        progress.stop_heartbeat()


def with_short_log(job: dg.JobDefinition, progress: RunProgress) -> tuple[dg.JobDefinition, Any]:
    """`job` logging to `progress` only, and the run config that selects that logger (only the
    loggers a run config names are used, else Dagster's console one)."""
    logged = job.with_logger_defs({"progress": progress_logger(progress)})
    return logged, {"loggers": {"progress": {}}}
