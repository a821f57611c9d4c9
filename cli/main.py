"""The `recomengine` command: one subcommand per process or operator task."""

from __future__ import annotations

import argparse
import importlib
import os
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
    "cli.commands.rebuild",
    "cli.commands.openapi",
    "cli.commands.web",
]
PLATFORM_HINT = (
    "is the platform running? Start it with `make up` (commands run in the project folder "
    "then find it), or set RECOMENGINE_DATABASE_URL, RECOMENGINE_REDIS_URL and "
    "RECOMENGINE_BROKER_URL"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="recomengine", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def describe_error(error: BaseException) -> str:
    """One line saying what went wrong and what to do about it."""
    from pydantic import ValidationError
    from redis.exceptions import ConnectionError as RedisConnectionError

    if isinstance(error, ValidationError):
        reasons = "; ".join(
            str(e.get("msg", "")).removeprefix("Value error, ") for e in error.errors()
        )
        return f"the settings are not usable: {reasons}"
    if isinstance(error, RedisConnectionError | ConnectionRefusedError):
        return f"cannot reach a server ({error}); {PLATFORM_HINT}"
    if isinstance(error, OSError) and error.errno is not None and "connect" in str(error).lower():
        return f"cannot reach a server ({error}); {PLATFORM_HINT}"
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{text} (set RECOMENGINE_DEBUG=1 to see the traceback)"


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand named on the command line; any failure is one line on stderr."""
    command = "command"
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise
    except Exception as error:
        if os.environ.get("RECOMENGINE_DEBUG"):
            raise
        print(f"recomengine {command}: error: {describe_error(error)}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
