"""What the catalog and events imports share: file format, checks, the rejected-lines report."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

from domain.errors import FieldError

EXIT_OK, EXIT_SOME_REJECTED, EXIT_FAILED = 0, 1, 2


class Report(Protocol):
    """An import's outcome: the rejected lines with their errors."""

    rejected: list[tuple[int, list[FieldError]]]


ReportT = TypeVar("ReportT", bound=Report)


def file_format(path: Path, chosen: str | None) -> str:
    """The chosen format, else guessed from the file name (CSV or JSON lines)."""
    if chosen:
        return chosen
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def run_import(
    args: argparse.Namespace,
    importer: Callable[[str], Coroutine[Any, Any, ReportT]],
    summary: Callable[[ReportT], str],
) -> int:
    """Check the arguments, run `importer(format)`, print rejected lines and the summary.

    Exit code 0 when everything landed, 1 when some lines were rejected (the good ones still
    landed), 2 when nothing could be imported (no file, unknown tenant, not UTF-8).
    """
    if not args.file.is_file():
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return EXIT_FAILED
    if args.chunk_size < 1:
        print("error: --chunk-size must be at least 1", file=sys.stderr)
        return EXIT_FAILED
    try:
        report = asyncio.run(importer(file_format(args.file, args.format)))
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except UnicodeDecodeError:
        print("error: the file is not UTF-8 text", file=sys.stderr)
        return EXIT_FAILED
    for line, errors in report.rejected:
        reasons = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
        print(f"line {line}: rejected: {reasons}", file=sys.stderr)
    print(summary(report))
    return EXIT_SOME_REJECTED if report.rejected else EXIT_OK
