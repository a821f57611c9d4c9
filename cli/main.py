"""The `recomengine` command: one subcommand per process or operator task."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines `register(subparsers)`; a subcommand sets `func` taking the parsed args.
COMMAND_MODULES = [
    "cli.commands.processes",
    "cli.commands.database",
    "cli.commands.admins",
    "cli.commands.services",
    "cli.commands.models",
    "cli.commands.imports",
    "cli.commands.dlq",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="recomengine", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand named on the command line."""
    args = build_parser().parse_args(argv)
    result = args.func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
