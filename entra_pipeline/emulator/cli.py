"""`entra-pipeline emulator`: serve the Graph emulator until Ctrl-C / SIGTERM.

Prints `export ENTRA_...=...` lines on stdout (for `eval` or a config) and a human line on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from entra_pipeline.emulator.churn import churn
from entra_pipeline.emulator.costs import CostModel
from entra_pipeline.emulator.faults import Faults
from entra_pipeline.emulator.file_tenant import FileTenant
from entra_pipeline.emulator.handlers import ALL_PERMISSIONS
from entra_pipeline.emulator.server import Emulator, EmulatorConfig

# The repo's connector config for the emulator (absent from an installed wheel).
EMULATOR_CONNECTOR_CONFIG = Path(__file__).resolve().parents[2] / "connector.emulator.yaml"

# --fault NAME=VALUE: Faults keyword, value parser, help text.
_FAULTS: dict[str, tuple[str, type, str]] = {
    "throttle": ("throttle", float, "share of Graph requests answered 429 + Retry-After (0..1)"),
    "unavailable": ("unavailable", float, "share answered 503 + Retry-After (0..1)"),
    "gateway-timeout": ("gateway_timeout", float, "share answered 504 (0..1)"),
    "drop": ("drop", float, "share whose connection is closed without an answer (0..1)"),
    "slow": ("slow", float, "share delayed by slow-seconds before answering (0..1)"),
    "slow-seconds": ("slow_seconds", float, "delay of a slow answer, seconds (default 2)"),
    "retry-after": ("retry_after", int, "Retry-After of random 429/503 answers, seconds (default 1; 0: no header)"),
    "expire-page-token": ("expire_page_token_after", int, "the Nth $skiptoken follow answers Directory_ExpiredPageToken (once)"),
    "token-ttl": ("token_ttl", float, "access tokens die server-side after N seconds while claiming expires_in"),
    "token-expires-in": ("token_expires_in", int, "expires_in the token response claims, honestly (default 3599)"),
    "signin-throttle": ("sign_in_per_minute", int, "signInActivity reads allowed per minute before 429"),
    "seed": ("seed", int, "seed of the fault RNG (default: the tenant seed)"),
}  # fmt: skip
_RATES = {"throttle", "unavailable", "gateway-timeout", "drop", "slow"}


def fault_spec(text: str) -> tuple[str, Any]:
    """Parse one `--fault NAME=VALUE` into (Faults keyword, value); argparse shows the error."""
    name, sep, raw = text.partition("=")
    name = name.strip().lower()
    allowed = ", ".join(_FAULTS)
    if not sep or name not in _FAULTS:
        raise argparse.ArgumentTypeError(
            f"unknown fault {text!r}: expected NAME=VALUE with NAME one of {allowed}"
        )
    keyword, parse, _ = _FAULTS[name]
    try:
        value = parse(raw.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"fault {name} needs a {parse.__name__} value, got {raw!r}"
        ) from None
    if name in _RATES and not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"fault {name} is a rate between 0 and 1, got {raw!r}")
    if name not in _RATES and value < 0:
        raise argparse.ArgumentTypeError(f"fault {name} must be >= 0, got {raw!r}")
    return keyword, value


def _ranged(kind: type, low: float, high: float | None, what: str) -> Any:
    """An argparse type: a `kind` number from `low` to `high` (inclusive; None: no bound)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: {what} {bounds}")
        return value

    return parse


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _fraction(text: str) -> float:
    value = _positive(text)
    if value > 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is a share of the tenant, more than 0 and at most 1 (0.01: 1 %)"
        )
    return value


def _client_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a GUID: an app (client) id looks like "
            "11111111-2222-3333-4444-555555555555"
        ) from None


def _client_secret(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("is empty: leave it out for a random secret")
    return text


def _permissions(text: str) -> set[str]:
    granted = {p.strip() for p in text.split(",") if p.strip()}
    unknown = sorted(granted - ALL_PERMISSIONS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown permission {', '.join(unknown)}; the emulator knows "
            + ", ".join(sorted(ALL_PERMISSIONS))
        )
    return granted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `emulator` subcommand's options."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "faults (--fault NAME=VALUE, repeatable):\n" + "\n".join(
        f"  {name:<18} {help_text}" for name, (_, _, help_text) in _FAULTS.items()
    )
    parser.epilog += (
        "\n\nexample (emulator.env holds the secret: created owner-only):\n"
        "  (umask 077; entra-pipeline emulator --users 5000 --fault throttle=0.05 "
        "--fault drop=0.01 > emulator.env &)\n  . ./emulator.env"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=_ranged(int, 0, 65535, "a port"),
        default=0,
        help="port (default 0: a free port)",
    )
    parser.add_argument(
        "--users",
        type=_ranged(int, 0, None, "a number of users"),
        default=500,
        help="synthetic users (default 500)",
    )
    parser.add_argument(
        "--devices",
        type=_ranged(int, 0, None, "a number of devices"),
        default=800,
        help="synthetic devices (default 800)",
    )
    parser.add_argument("--seed", type=int, default=42, help="synthetic tenant seed (default 42)")
    parser.add_argument(
        "--now",
        default=None,
        help="tenant clock, ISO 8601 (default: now); generated dates are relative to it",
    )
    parser.add_argument(
        "--tenant-file", default=None, help="serve a hand-built tenant from this JSON file"
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        type=fault_spec,
        metavar="NAME=VALUE",
        help="inject faults (see below)",
    )
    parser.add_argument(
        "--no-premium",
        action="store_true",
        help="a tenant without Entra ID P1: signInActivity answers 403",
    )
    parser.add_argument(
        "--permissions",
        type=_permissions,
        default=None,
        help="comma-separated application permissions granted (default: all reads)",
    )
    parser.add_argument(
        "--client-id", type=_client_id, default=None, help="app (client) id to accept"
    )
    parser.add_argument(
        "--client-secret",
        type=_client_secret,
        default=None,
        help="client secret to accept (default: a random one)",
    )
    parser.add_argument(
        "--cost-model",
        type=_positive,
        default=None,
        metavar="TIME_SCALE",
        help="answer with real Graph's latency and resource-unit throttling, Graph time running "
        "at TIME_SCALE real seconds a second (1: real time, 0.01: 100 times faster)",
    )
    parser.add_argument(
        "--churn",
        type=_fraction,
        default=None,
        metavar="FRACTION",
        help="on SIGUSR1, change FRACTION (e.g. 0.01) of the users and devices as a working day "
        "does (hires, leavers, licences, managers, stale and re-joined devices) and print a "
        "line saying what changed: a night of changes between two syncs",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes answering requests (default 1); more keep a client paging dozens of "
        "chains at once from waiting for one emulator core. They share one resource-unit bucket "
        "and sign-in limit; not with --churn or the expire-page-token fault",
    )
    parser.add_argument(
        "--client-certificate",
        action="append",
        default=[],
        metavar="PEM",
        help="a certificate file registered on the app: client assertions it signs are accepted "
        "(repeatable)",
    )


def build_config(args: argparse.Namespace) -> EmulatorConfig:
    """An EmulatorConfig from parsed arguments."""
    fault_options = {"seed": args.seed, **dict(args.fault)}
    now = dt.datetime.fromisoformat(args.now.replace("Z", "+00:00")) if args.now else None
    if now is not None and now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    permissions = args.permissions
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.workers > 1:
        # Each worker serves its own copy of the tenant and counts scripted faults on its own.
        refused = [
            name
            for name, given in (
                ("--churn", args.churn is not None),
                ("--fault expire-page-token", "expire_page_token_after" in fault_options),
            )
            if given
        ]
        if refused:
            raise ValueError(
                f"--workers {args.workers} cannot be combined with {' or '.join(refused)}: "
                "each worker process would change or count its own copy; use --workers 1"
            )
    return EmulatorConfig(
        workers=args.workers,
        users=args.users,
        devices=args.devices,
        seed=args.seed,
        tenant=FileTenant.from_file(Path(args.tenant_file)) if args.tenant_file else None,
        premium=not args.no_premium,
        permissions=permissions,
        faults=Faults(**fault_options),
        host=args.host,
        port=args.port,
        client_id=args.client_id,
        client_secret=args.client_secret,
        client_certificates=tuple(
            Path(path).read_text(encoding="ascii") for path in args.client_certificate
        ),
        now=now,
        costs=CostModel(time_scale=args.cost_model) if args.cost_model else None,
    )


def serve(args: argparse.Namespace) -> int:
    """Run the emulator until SIGINT/SIGTERM; 0 on a clean stop, 2 on a bad tenant file."""
    try:
        config = build_config(args)
    except (OSError, ValueError) as error:
        print(f"entra-pipeline emulator: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        emulator = Emulator(config)
    except OSError as error:
        print(f"entra-pipeline emulator: {error.strerror or error}", file=sys.stderr)
        return 2
    nights = [0]

    def night(*_: object) -> None:  # a signal handler: runs on the main thread, between waits
        nights[0] += 1
        done = churn(emulator.tenant, args.churn, seed=nights[0])
        print(
            f"churned {done.total}: "
            + ", ".join(f"{n} {kind}" for kind, n in sorted(done.counts.items())),
            flush=True,
        )

    if args.churn is not None:
        signal.signal(signal.SIGUSR1, night)
    try:
        exports = emulator.env()
        if EMULATOR_CONNECTOR_CONFIG.is_file():
            # In a checkout, the shipped config reads the variables above: `. ./emulator.env`
            # then makes `entra-pipeline check`, `dg dev` and `dg launch` talk to this emulator.
            exports["ENTRA_CONNECTOR_CONFIG"] = str(EMULATOR_CONNECTOR_CONFIG)
        for name, value in exports.items():
            print(f"export {name}={shlex.quote(value)}")
        sys.stdout.flush()
        tenant = emulator.tenant
        print(
            f"Graph emulator at {emulator.authority_host} serving tenant {tenant.tenant_id} "
            f"({tenant.domain}: {tenant.user_count} users, {tenant.device_count} devices, "
            f"{tenant.group_count} groups)"
            + (f" in {args.workers} worker processes" if args.workers > 1 else "")
            + "; Ctrl-C to stop.",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(0.5):
            if dead := emulator.dead_workers():
                print(
                    "entra-pipeline emulator: worker process "
                    + ", ".join(f"{pid} (wait status {status})" for pid, status in dead)
                    + " ended; stopping",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
    finally:
        emulator.stop()
    return 0
