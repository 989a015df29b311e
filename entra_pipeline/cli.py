"""The `entra-pipeline` console script: demo, emulator, sync, check and lake-extensions.

Each subcommand lives beside the code it drives; this module only parses arguments and dispatches.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path
from typing import Any


def count(text: str) -> int:
    """A number of synthetic objects: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; use 0 or more")
    return value


def config_file(text: str) -> str:
    """A connector config (a YAML file, or a folder of them): `--config ''` is no path at all."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty: give the connector YAML (or a folder of them), or leave --config out to "
            "use $ENTRA_CONNECTOR_CONFIG, else ./connector.yaml"
        )
    return text


def duckdb_file(text: str) -> str:
    """A DuckDB file to publish to: new, or a DuckDB database; never a folder or another file."""
    from entra_pipeline.settings import is_duckdb_file

    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory; name a DuckDB file in it")
    if path.is_file() and path.stat().st_size and not is_duckdb_file(path):
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a DuckDB database")
    return text


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entra-pipeline",
        description="Microsoft Entra ID -> DuckDB connector and MDM user source, on Dagster.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"entra-pipeline {importlib.metadata.version('entra-pipeline')}",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    emulator = commands.add_parser(
        "emulator", help="serve the Microsoft Graph emulator over HTTPS until stopped"
    )
    from entra_pipeline.emulator.cli import add_arguments as add_emulator_arguments

    add_emulator_arguments(emulator)

    _add_demo(commands)

    sync = commands.add_parser(
        "sync", help="run entra_id_sync once, in this process (incremental unless --full)"
    )
    sync.add_argument(
        "--config",
        type=config_file,
        default=None,
        help="connector YAML (default: $ENTRA_CONNECTOR_CONFIG, else ./connector.yaml)",
    )
    sync.add_argument(
        "--full",
        action="store_true",
        help="read every collection in full and start delta tracking again (docs/incremental.md)",
    )
    sync.add_argument(
        "--verbose",
        action="store_true",
        help="print Dagster's whole event log, stack traces included (default: steps, progress, "
        "warnings and the result)",
    )

    commands.add_parser(
        "lake-extensions",
        help="install the DuckLake and postgres DuckDB extensions from their PyPI packages into "
        "DuckDB's extension directory, so that duckdb can ATTACH 'ducklake:postgres:...'",
    )

    from entra_pipeline.actions.cli import add_arguments as add_act_arguments
    from entra_pipeline.actions.cli import add_query_arguments

    add_act_arguments(commands, config_file)
    add_query_arguments(commands, config_file)

    _add_check(commands)
    return parser


def _add_check(commands: Any) -> None:
    check = commands.add_parser(
        "check", help="validate the config and mapping and probe every Graph call the sync needs"
    )
    check.add_argument(
        "--config",
        type=config_file,
        default=None,
        help="connector YAML (default: $ENTRA_CONNECTOR_CONFIG, else ./connector.yaml)",
    )


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="start the emulator with a synthetic tenant and run the full sync against it"
    )
    demo.add_argument("--users", type=count, default=500, help="synthetic users (default 500)")
    demo.add_argument("--devices", type=count, default=800, help="synthetic devices (default 800)")
    demo.add_argument(
        "--db",
        type=duckdb_file,
        default="data/demo.duckdb",
        help="DuckDB file to publish to (default data/demo.duckdb)",
    )
    demo.add_argument("--seed", type=int, default=42, help="tenant seed (default 42)")


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "emulator":
        from entra_pipeline.emulator.cli import serve

        return serve(args)
    if args.command == "demo":
        from entra_pipeline.demo import run_demo

        return run_demo(args)
    if args.command == "act":
        from entra_pipeline.actions.cli import run_act

        return run_act(args)
    if args.command == "query":
        from entra_pipeline.actions.cli import run_query

        return run_query(args)
    if args.command == "sync":
        from entra_pipeline.run_once import run_sync

        return run_sync(args)
    if args.command == "lake-extensions":
        from entra_pipeline.warehouse.errors import WarehouseError
        from entra_pipeline.warehouse.lake import install_extensions

        try:
            files = install_extensions()
        except WarehouseError as error:
            print(error)
            return 2
        print("Installed for DuckDB " + ", ".join(f.name for f in files))
        return 0
    if args.command == "check":
        from entra_pipeline.preflight import run_check

        return run_check(args)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
