"""The HTTPS server and the `Emulator` handle: start on loopback, expose URLs and knobs, stop.

A threaded stdlib server (HTTP/1.1 keep-alive, TLS handshakes in worker threads) is enough here
and lets a fault drop a connection on demand.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import secrets
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from entra_pipeline.emulator.app import EmulatorApp, Request, RequestRecord, parse_target
from entra_pipeline.emulator.costs import CostModel
from entra_pipeline.emulator.faults import Faults
from entra_pipeline.emulator.handlers import GraphResources
from entra_pipeline.emulator.query import TokenCodec
from entra_pipeline.emulator.synthetic import SyntheticTenant
from entra_pipeline.emulator.tenant import Tenant
from entra_pipeline.emulator.tls import server_context, write_certificates
from entra_pipeline.emulator.tokens import AppRegistration, TokenService


@dataclass
class EmulatorConfig:
    """How to start an emulator. `tenant=None` builds a `SyntheticTenant(users, devices, seed, now)`.

    `permissions=None` grants every read permission; otherwise only the names given (e.g.
    {"User.Read.All", "Device.Read.All"}). `premium=False` makes signInActivity answer 403.
    `client_secret=None` draws a fresh secret per start; `port=0` picks a free port.
    """

    users: int = 50
    devices: int = 50
    seed: int = 42
    tenant: Tenant | None = None
    premium: bool = True
    permissions: set[str] | None = None
    faults: Faults = field(default_factory=Faults)
    host: str = "127.0.0.1"
    port: int = 0
    client_id: str | None = None
    client_secret: str | None = None
    # PEM certificates registered on the app (keyCredentials): client assertions they sign work.
    client_certificates: tuple[str, ...] = ()
    # Real Graph's latency and resource-unit throttling (costs.py); None answers at once.
    costs: CostModel | None = None
    now: dt.datetime | None = None
    # The key page and delta tokens are sealed with; None draws one per start. A fixed key keeps
    # valid the tokens an earlier start issued over the same tenant (the demo's restart).
    token_key: bytes | None = None
    # Other app registrations in the tenant (the pipeline's action app), with their permissions.
    apps: tuple[AppRegistration, ...] = ()
    cert_dir: Path | None = None  # where the CA bundle is written (default: a temp dir)
    request_log_limit: int = 20_000  # `requests` keeps the newest this many (bounded memory)
    # Processes answering requests. With more than one, worker processes forked at start serve
    # the tenant as it was then (no changes at run time; `requests` stays empty here), on one
    # resource-unit bucket and one sign-in limit: a benchmark paging dozens of chains at once
    # is then not bounded by one emulator process's core.
    workers: int = 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "entra-pipeline-emulator"
    sys_version = ""
    timeout = 120  # idle keep-alive connections end after this long (the server's idle_timeout)

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)

    server: _Server

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, query = parse_target(self.path)
        request = Request(
            method=self.command,
            path=path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        response = self.server.app.handle(request)
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: the request log (`emu.requests`) is the record, not stderr.
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    idle_timeout = 120.0  # seconds a keep-alive connection may wait for its next request
    handshake_timeout = 30.0

    def __init__(
        self, address: tuple[str, int], context: ssl.SSLContext, *, reuse_port: bool = False
    ) -> None:
        # With reuse_port the socket is bound but not listening: it holds the port for the
        # worker processes, which listen on sockets of their own (`listen_again`).
        self.allow_reuse_port = reuse_port
        super().__init__(address, _Handler, bind_and_activate=not reuse_port)
        if reuse_port:
            try:
                self.server_bind()
            except BaseException:
                self.server_close()
                raise
        self.context = context
        self.app: EmulatorApp
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus delayed ACKs
        # stall every keep-alive answer by ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The TLS handshake runs in the worker thread (finish_request), never in the accept loop.
        wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            request.settimeout(self.handshake_timeout)
            request.do_handshake()
            request.settimeout(None)
            super().finish_request(request, client_address)
        except (OSError, ssl.SSLError):
            pass
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def listen_again(self) -> None:
        """Listen on a new socket bound to the same port (SO_REUSEPORT): the kernel spreads
        the connections over every process listening so."""
        fresh = socket.socket(self.address_family, self.socket_type)
        fresh.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        fresh.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        fresh.bind(self.server_address)
        fresh.listen(self.request_queue_size)
        self.socket.close()
        self.socket = fresh

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # client hang-ups are normal (dropped-connection faults, killed benchmarks)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class Emulator:
    """A running emulator. URLs and credentials to configure the pipeline with, the tenant it
    serves, and knobs tests flip at run time (`faults`, `permissions`, `premium`)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.tenant: Tenant = config.tenant or SyntheticTenant(
            users=config.users, devices=config.devices, seed=config.seed, now=config.now
        )
        self.faults = config.faults
        self.costs = config.costs
        if self.costs is not None:
            self.costs.configure(self.tenant.count("user"))
            self.faults.time_scale = self.costs.time_scale
            if self.faults.sign_in_per_minute is None:
                # GET users?$select=signInActivity: 10 requests a minute per app and tenant
                # (identity and access service limits; docs/performance.md).
                self.faults.sign_in_per_minute = 10
        self.client_id = config.client_id or str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"entra-pipeline-emulator/client/{config.seed}")
        )
        self.client_secret = config.client_secret or _new_secret()
        self._own_cert_dir = config.cert_dir is None
        cert_dir = config.cert_dir or Path(tempfile.mkdtemp(prefix="entra-emulator-"))
        url_host = "127.0.0.1" if config.host in ("0.0.0.0", "") else config.host
        certs = write_certificates(
            cert_dir, tuple(dict.fromkeys((url_host, "127.0.0.1", "localhost")))
        )
        self.ca_bundle = str(certs.ca_bundle)
        self._cert_dir = cert_dir
        try:
            self._server = _Server(
                (config.host, config.port), server_context(certs), reuse_port=config.workers > 1
            )
        except OSError as error:
            if self._own_cert_dir:  # the server's key is in there: nothing of it stays behind
                shutil.rmtree(cert_dir, ignore_errors=True)
            raise OSError(
                error.errno, f"cannot listen on {config.host}:{config.port}: {error.strerror}"
            ) from error
        if self.costs is not None:
            # A benchmark's clients page dozens of chains at once from one emulator process on
            # the same cores: waiting for CPU is not a reason to hang up on them.
            self._server.idle_timeout = self._server.handshake_timeout = 1800.0
        self.host = url_host
        self.port = self._server.server_address[1]
        self.authority_host = f"https://{url_host}:{self.port}"
        self.graph_url = self.authority_host
        self.tenant_id = self.tenant.tenant_id
        self.tokens = TokenService(
            base_url=self.authority_host,
            graph_url=self.graph_url,
            tenant=self.tenant,
            client_id=self.client_id,
            client_secret=self.client_secret,
            faults=self.faults,
            certificates=config.client_certificates,
            apps=config.apps,
        )
        self.resources = GraphResources(
            tenant=self.tenant,
            graph_url=self.graph_url,
            codec=TokenCodec(config.token_key or secrets.token_bytes(32)),
            permissions=set(config.permissions) if config.permissions is not None else None,
            premium=config.premium,
            sign_in_throttle=self.faults.sign_in_throttle,
        )
        self.app = EmulatorApp(
            tokens=self.tokens,
            resources=self.resources,
            faults=self.faults,
            log_limit=config.request_log_limit,
            costs=self.costs,
        )
        self._server.app = self.app
        self._stopped = False
        self._workers: list[int] = []
        self._thread: threading.Thread | None = None
        if config.workers > 1:
            self._fork_workers(config.workers)
        else:
            self._thread = self._serving()

    def _fork_workers(self, count: int) -> None:
        """Fork `count` processes, each listening on the port with SO_REUSEPORT (the kernel hands
        each connection to one of them); this process only starts and stops them, and returns
        when they all listen."""
        if self.costs is not None:
            self.costs.share()
        self.faults.share()
        self.resources.prepare_indexes()
        ready, told = os.pipe()
        for number in range(count):
            pid = os.fork()
            if pid == 0:  # a worker: serve until the parent's SIGTERM, then leave at once
                code = 1
                try:
                    os.close(ready)
                    self.app.role_instance = f"Loopback_IN_{number}"
                    self._server.listen_again()
                    os.write(told, b".")
                    os.close(told)
                    self._serve_as_worker()
                    code = 0
                finally:
                    os._exit(code)
            self._workers.append(pid)
        os.close(told)
        with os.fdopen(ready, "rb") as pipe:
            listening = pipe.read()  # until every worker wrote its byte and closed its end
        if len(listening) != count:
            self.stop()
            raise RuntimeError(
                f"{count - len(listening)} of {count} emulator worker processes did not start"
            )

    def _serve_as_worker(self) -> None:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
        if hasattr(signal, "SIGUSR1"):
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        self._serving()
        while not stop.wait(0.5):
            pass
        self._server.shutdown()
        self._server.close_connections()

    def _serving(self) -> threading.Thread:
        """Serve requests on a daemon thread of this process."""
        thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        thread.start()
        return thread

    def dead_workers(self) -> list[tuple[int, int]]:
        """(pid, wait status) of the worker processes that ended (they should not, until stop)."""
        dead = [(pid, status) for pid in self._workers if (status := _reap(pid)) is not None]
        for pid, _ in dead:
            self._workers.remove(pid)
        return dead

    @property
    def authority(self) -> str:
        """`{authority_host}/{tenant_id}`, what MSAL's `authority=` takes."""
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def permissions(self) -> set[str] | None:
        return self.resources.permissions

    @permissions.setter
    def permissions(self, value: set[str] | None) -> None:
        self.resources.permissions = set(value) if value is not None else None

    @property
    def premium(self) -> bool:
        return self.resources.premium

    @premium.setter
    def premium(self, value: bool) -> None:
        self.resources.premium = value

    @property
    def requests(self) -> list[RequestRecord]:
        """Every handled request so far (oldest first), `$batch` items included."""
        return self.app.requests

    def clear_requests(self) -> None:
        self.app.clear_requests()

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting the emulator's CA (httpx's `verify=`)."""
        return ssl.create_default_context(cafile=self.ca_bundle)

    def env(self) -> dict[str, str]:
        """The ENTRA_* variables a connector config reads to talk to this emulator."""
        return {
            "ENTRA_AUTHORITY_HOST": self.authority_host,
            "ENTRA_GRAPH_URL": self.graph_url,
            "ENTRA_TENANT_ID": self.tenant_id,
            "ENTRA_CLIENT_ID": self.client_id,
            "ENTRA_CLIENT_SECRET": self.client_secret,
            "ENTRA_CA_BUNDLE": self.ca_bundle,
        }

    def connection_settings(self, secret_variable: str) -> dict[str, str]:
        """The keys of a connector config that point it at this emulator; the secret stays in
        the environment variable `secret_variable`, as a real config keeps it."""
        return {
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "client_secret": f"${{{secret_variable}}}",
            "authority_host": self.authority_host,
            "graph_url": self.graph_url,
            "ca_bundle": str(self.ca_bundle),
        }

    def stop(self) -> None:
        """Stop serving, end open connections and remove the generated certificates."""
        if self._stopped:
            return
        self._stopped = True
        if self._workers:
            _stop_workers(self._workers)
            self._server.server_close()
        else:
            self._server.shutdown()
            self._server.server_close()
            self._server.close_connections()
            if self._thread is not None:
                self._thread.join(timeout=5)
        if self._own_cert_dir:
            shutil.rmtree(self._cert_dir, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_emulator(config: EmulatorConfig | None = None) -> Iterator[Emulator]:
    """Start an emulator for the `with` block and stop it afterwards."""
    emulator = Emulator(config or EmulatorConfig())
    try:
        yield emulator
    finally:
        emulator.stop()


def _reap(pid: int) -> int | None:
    """The wait status of child `pid` if it has ended (reaping it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped already
        return 0
    return status if done else None


def _stop_workers(pids: list[int], grace_seconds: float = 5.0) -> None:
    """SIGTERM each worker and reap it; one still running after the grace period is killed."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    waiting = set(pids)
    while waiting:
        waiting = {pid for pid in waiting if _reap(pid) is None}
        if waiting and time.monotonic() > deadline:
            for pid in waiting:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = math.inf  # killed: reap them below
        elif waiting:
            time.sleep(0.05)


def _new_secret() -> str:
    # Shaped like an Entra client secret value (3 chars, "8Q~", 34 chars), shell-safe.
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    head = "".join(secrets.choice(alphabet) for _ in range(3))
    tail = "".join(secrets.choice(alphabet) for _ in range(34))
    return f"{head}8Q~{tail}"
