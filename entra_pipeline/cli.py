"""The `entra-pipeline` console script: demo, emulator and check subcommands.

Each subcommand lives beside the code it drives; this module only parses arguments and dispatches.
"""

from __future__ import annotations

import argparse
import sys


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="entra-pipeline",
        description="Microsoft Entra ID -> DuckDB connector and MDM user source, on Dagster.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    emulator = commands.add_parser(
        "emulator", help="serve the Microsoft Graph emulator over HTTPS until stopped"
    )
    from entra_pipeline.emulator.cli import add_arguments as add_emulator_arguments

    add_emulator_arguments(emulator)

    demo = commands.add_parser(
        "demo", help="start the emulator with a synthetic tenant and run the full sync against it"
    )
    demo.add_argument("--users", type=int, default=500, help="synthetic users (default 500)")
    demo.add_argument("--devices", type=int, default=800, help="synthetic devices (default 800)")
    demo.add_argument(
        "--db",
        default="data/demo.duckdb",
        help="DuckDB file to publish to (default data/demo.duckdb)",
    )
    demo.add_argument("--seed", type=int, default=42, help="tenant seed (default 42)")

    check = commands.add_parser(
        "check", help="validate the config and mapping and probe every Graph call the sync needs"
    )
    check.add_argument(
        "--config",
        default=None,
        help="connector YAML (default: $ENTRA_CONNECTOR_CONFIG, else ./connector.yaml)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.command == "emulator":
        from entra_pipeline.emulator.cli import serve

        return serve(args)
    if args.command == "demo":
        from entra_pipeline.demo import run_demo

        return run_demo(args)
    if args.command == "check":
        from entra_pipeline.preflight import run_check

        return run_check(args)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
