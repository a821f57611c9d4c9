"""`recomengine import catalog FILE --tenant ID`: bulk loads from CSV or JSON-lines files.

`import` has one sub-subcommand per kind of data; each one registers itself in
`register_import_commands` below (the events import is added there beside `catalog`).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from cli.commands.events_import import register_events_import
from cli.commands.importing import run_import
from domain import catalog as rules
from domain.errors import FieldError
from store import catalog as catalog_store
from store.db import create_pool
from store.redis import create_redis
from store.settings import get_settings

CHUNK_SIZE = 5000
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `import` and its sub-subcommands."""
    parser = subparsers.add_parser("import", help="bulk-import data from a file")
    kinds = parser.add_subparsers(dest="kind", required=True)
    register_import_commands(kinds)


def register_import_commands(kinds: argparse._SubParsersAction) -> None:
    """One sub-subcommand per importable kind of data."""
    catalog = kinds.add_parser(
        "catalog",
        help="upsert products from CSV or JSON lines",
        description=(
            "CSV columns: productId,name,category,price,currency,imageUrl,url,description,"
            "available,attributes (attributes as a JSON object). JSON lines: one item per line "
            "in API field names. Rejected rows are printed with their line numbers."
        ),
    )
    catalog.add_argument("file", type=Path)
    catalog.add_argument("--tenant", required=True, help="tenant id")
    catalog.add_argument(
        "--format", choices=["csv", "jsonl"], default=None, help="default: from the extension"
    )
    catalog.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    catalog.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    catalog.set_defaults(func=run_catalog_import)
    register_events_import(kinds)


@dataclass
class ImportReport:
    """What an import did."""

    imported: int = 0
    rejected: list[tuple[int, list[FieldError]]] = field(default_factory=list)
    seconds: float = 0.0


def _csv_row_to_item(row: dict[str | Any, Any]) -> dict[str, Any]:
    """A CSV row in the API's types: blanks are absent, numbers, booleans and JSON parsed.
    Anything unparseable is passed on as it is, so that the shared rules report it."""
    item: dict[str, Any] = {}
    for name, value in row.items():
        if name is None:  # more cells than headers
            item["(extra cells)"] = value
            continue
        if value is None or value == "":
            continue
        item[name] = value
    if "price" in item:
        try:
            item["price"] = Decimal(item["price"].strip())
        except InvalidOperation:
            pass
    if "available" in item:
        flag = item["available"].strip().lower()
        item["available"] = True if flag in _TRUE else False if flag in _FALSE else flag
    if "attributes" in item:
        try:
            item["attributes"] = json.loads(item["attributes"])
        except ValueError:
            pass
    return item


def _read_csv(handle: TextIO) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(handle)
    # A quoted cell may span lines: report a record by the line it starts on.
    previous_end = 1
    for row in reader:
        start = previous_end + 1
        previous_end = reader.line_num
        yield start, _csv_row_to_item(row)


def _read_jsonl(handle: TextIO) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except ValueError:
            yield number, ValueError("the line is not valid JSON")


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


async def import_catalog(
    *,
    tenant_id: str,
    path: Path,
    file_format: str,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
) -> ImportReport:
    """Validate and upsert every product of the file in chunks, with projections."""
    settings = get_settings()
    pool = await create_pool(settings, min_size=1, max_size=1)
    redis = create_redis(settings)
    report = ImportReport()
    started = time.perf_counter()
    try:
        config = await catalog_store.tenant_config(pool, tenant_id=tenant_id)
        if config is None:
            raise LookupError(f"no tenant {tenant_id}")
        currency = rules.tenant_currency(config)
        total = _count_lines(path) if progress else None
        with (
            path.open(encoding="utf-8", newline="") as handle,
            tqdm(total=total, unit="line", disable=not progress, file=sys.stderr) as bar,
            # The pool's one connection is kept for the whole import: its staging table lives there.
        ):
            async with pool.acquire() as conn:
                rows = _read_csv(handle) if file_format == "csv" else _read_jsonl(handle)
                # Later lines win over earlier ones with the same productId, as across chunks.
                chunk: dict[str, rules.CatalogItem] = {}
                last_line = 0
                for line, data in rows:
                    if isinstance(data, ValueError):
                        report.rejected.append((line, [FieldError(field="", message=str(data))]))
                    else:
                        item, errors = rules.item_errors(data, default_currency=currency)
                        if item is None:
                            report.rejected.append((line, errors))
                        else:
                            chunk.pop(item.product_id, None)
                            chunk[item.product_id] = item
                    bar.update(line - last_line)
                    last_line = line
                    if len(chunk) >= chunk_size:
                        report.imported += await catalog_store.import_chunk(
                            conn, redis, tenant_id=tenant_id, items=list(chunk.values())
                        )
                        chunk = {}
                report.imported += await catalog_store.import_chunk(
                    conn, redis, tenant_id=tenant_id, items=list(chunk.values())
                )
        if report.imported:
            _queue_refresh_quietly(await _claim(redis, tenant_id), tenant_id)
    finally:
        await redis.aclose()
        await pool.close()
    report.seconds = time.perf_counter() - started
    return report


async def _claim(redis: Any, tenant_id: str) -> bool:
    return await catalog_store.claim_content_refresh(redis, tenant_id=tenant_id)


def _queue_refresh_quietly(claimed: bool, tenant_id: str) -> None:
    # The import already landed; a broker that is down only delays the content model.
    if not claimed:
        return
    try:
        from workers.actors.catalog import refresh_content_model, request_content_refresh_delay_ms

        refresh_content_model.send_with_options(
            args=(tenant_id,), delay=request_content_refresh_delay_ms()
        )
    except Exception as error:  # any broker failure: report it, keep the import's result
        print(f"warning: content-model refresh not queued: {error}", file=sys.stderr)


def run_catalog_import(args: argparse.Namespace) -> int:
    """Run the catalog import and print rejected lines and a summary."""
    return run_import(
        args,
        lambda chosen: import_catalog(
            tenant_id=args.tenant,
            path=args.file,
            file_format=chosen,
            chunk_size=args.chunk_size,
            progress=not args.no_progress,
        ),
        lambda report: (
            f"imported {report.imported} products, rejected "
            f"{len(report.rejected)} lines in {report.seconds:.1f} s"
        ),
    )
