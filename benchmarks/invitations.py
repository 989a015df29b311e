"""Record an invitation for each of N synthetic users and report the invitation step's peak RSS
by statement: the step alone, without Dagster, Graph or SMTP (`invite` and the table
`load_invitations` publishes), in a DuckDB file with the pipeline's memory limit.

    .venv/bin/python benchmarks/invitations.py 1000000 [--memory-limit 512MB] [--runs 2]

The first run records every user (a ledger of N lines); later runs read that ledger back and
find nobody new. Prints the peak RSS of each statement kind and the run's wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

from entra_pipeline.user_source.invitations import RECIPIENTS_SQL, _composer
from entra_pipeline.user_source.ledger import STATE_VIEW, InvitationLedger, TenantKey, invite
from entra_pipeline.warehouse.publish import connect


def rss_mib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return 0


class Sampled:
    """A connection whose statements are labelled, so a sampler can charge RSS to each."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con, self.label = con, "set-up"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peaks[self.label] = max(self.peaks.get(self.label, 0), rss_mib())

    def execute(self, sql: str, *args: Any) -> duckdb.DuckDBPyConnection:
        self.label = " ".join(sql.split())[:60]
        return self.con.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)

    def stop(self) -> None:
        self._stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("users", type=int)
    parser.add_argument("--memory-limit", default="512MB")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="invitations-bench-") as folder:
        db = Path(folder) / "entra.duckdb"
        with connect(db, memory_limit=args.memory_limit) as con:
            con.execute("CREATE SCHEMA mdm")
            con.execute(
                "CREATE TABLE mdm.users AS SELECT 'contoso.com' AS tenant_id, "
                "uuid()::VARCHAR AS id, 'user' || i || '@contoso.com' AS userPrincipalName, "
                "'user' || i || '@contoso.com' AS mail, 'User ' || i AS displayName, "
                "true AS accountEnabled FROM range($n) t(i)",
                {"n": args.users},
            )
            con.execute(
                "CREATE TABLE mdm.rendered_templates "
                "(user_id VARCHAR, template VARCHAR, rendered VARCHAR)"
            )
        ledger = InvitationLedger(db.with_name("entra.duckdb.invitations.jsonl"))
        for run in range(1, args.runs + 1):
            with connect(db, memory_limit=args.memory_limit) as con:
                sampled = Sampled(con)
                started = time.monotonic()
                con.execute("BEGIN")
                report = invite(
                    ledger,
                    sampled,  # type: ignore[arg-type]
                    tenant=TenantKey("contoso.com", "3acc629f-8788-42a8-bc0b-3e52ed9bc8e5"),
                    run_id=f"run-{run}",
                    recipients=RECIPIENTS_SQL,
                    smtp=None,
                    compose=_composer("Contoso"),
                )
                sampled.execute(
                    f"CREATE OR REPLACE TABLE mdm.invitations AS SELECT * FROM {STATE_VIEW} "
                    "ORDER BY recorded_at, userPrincipalName, user_id"
                )
                con.execute("COMMIT")
                elapsed = time.monotonic() - started
                time.sleep(0.1)
                sampled.stop()
            print(
                f"run {run}: {args.users:,} users, {report.recorded:,} recorded, "
                f"{elapsed:.1f} s, DuckDB memory limit {args.memory_limit}"
            )
            for label, peak in sampled.peaks.items():
                print(f"  {peak:6,d} MiB  {label}")


if __name__ == "__main__":
    main()
