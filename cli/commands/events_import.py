"""`recomengine import events FILE --tenant ID`: historical backfill from CSV or JSON lines,
through the same validation, dedupe and projections as live ingestion, resumable."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from cli.commands.importing import run_import
from domain.errors import FieldError
from domain.event_message import MessageEvent
from domain.events import check_event
from store.db import create_pool
from store.events import ingest_and_project
from store.redis import create_redis
from store.settings import get_settings

CHUNK_SIZE = 1000
CSV_COLUMNS = ("eventType", "userId", "productId", "timestamp", "sessionId", "eventId", "metadata")


def register_events_import(kinds: argparse._SubParsersAction) -> None:
    """Add `import events`."""
    events = kinds.add_parser(
        "events",
        help="backfill historical events from CSV or JSON lines (resumable)",
        description=(
            f"CSV columns: {','.join(CSV_COLUMNS)} (metadata as a JSON object). JSON lines: one "
            "event per line in API field names. Progress is saved beside the file in "
            "FILE.progress after every chunk; a rerun resumes after the last saved line "
            "(--restart ignores it). Events already stored are skipped by the dedupe key."
        ),
    )
    events.add_argument("file", type=Path)
    events.add_argument("--tenant", required=True, help="tenant id")
    events.add_argument("--format", choices=["csv", "jsonl"], default=None)
    events.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    events.add_argument("--restart", action="store_true", help="ignore saved progress")
    events.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    events.set_defaults(func=run_events_import)


@dataclass
class EventImportReport:
    """What an events import did."""

    stored: int = 0
    duplicates: int = 0
    skipped_lines: int = 0
    rejected: list[tuple[int, list[FieldError]]] = field(default_factory=list)
    seconds: float = 0.0


def _rows(handle: TextIO, file_format: str) -> Iterator[tuple[int, Any]]:
    if file_format == "jsonl":
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except ValueError:
                    yield number, ValueError("the line is not valid JSON")
        return
    reader = csv.DictReader(handle)
    for row in reader:
        item: dict[str, Any] = {
            name: value for name, value in row.items() if name is not None and value
        }
        if "metadata" in item:
            try:
                item["metadata"] = json.loads(item["metadata"])
            except ValueError:
                yield reader.line_num, ValueError("metadata is not valid JSON")
                continue
        yield reader.line_num, item


def progress_path(path: Path) -> Path:
    """Where the import of `path` saves its progress."""
    return path.with_name(path.name + ".progress")


def _saved_line(path: Path, tenant_id: str) -> int:
    marker = progress_path(path)
    if not marker.exists():
        return 0
    saved = json.loads(marker.read_text())
    return int(saved["line"]) if saved.get("tenant") == tenant_id else 0


async def import_events(
    *,
    tenant_id: str,
    path: Path,
    file_format: str,
    chunk_size: int = CHUNK_SIZE,
    restart: bool = False,
    progress: bool = True,
) -> EventImportReport:
    """Validate, store and project every event of the file in chunks, saving progress."""
    settings = get_settings()
    pool = await create_pool(settings, min_size=1, max_size=2)
    redis = create_redis(settings)
    report = EventImportReport()
    started = time.perf_counter()
    resume_after = 0 if restart else _saved_line(path, tenant_id)
    marker = progress_path(path)
    try:
        if not await pool.fetchval("SELECT true FROM tenants WHERE id::text = $1", tenant_id):
            raise LookupError(f"no tenant {tenant_id}")
        now = datetime.now(UTC)
        chunk: list[MessageEvent] = []

        async def flush(line: int) -> None:
            if chunk:
                stored = await ingest_and_project(pool, redis, tenant_id=tenant_id, events=chunk)
                report.stored += stored
                report.duplicates += len(chunk) - stored
                chunk.clear()
            marker.write_text(json.dumps({"tenant": tenant_id, "line": line}))

        with (
            path.open(encoding="utf-8", newline="") as handle,
            tqdm(unit="event", disable=not progress, file=sys.stderr) as bar,
        ):
            last = 0
            for line, data in _rows(handle, file_format):
                last = line
                if line <= resume_after:
                    report.skipped_lines += 1
                    continue
                if isinstance(data, ValueError):
                    report.rejected.append((line, [FieldError("", str(data))]))
                    continue
                event, errors = check_event(data, tenant_id=tenant_id, now=now)
                if event is None:
                    report.rejected.append((line, errors))
                    continue
                chunk.append(event.to_message())
                bar.update(1)
                if len(chunk) >= chunk_size:
                    await flush(line)
            await flush(max(last, resume_after))
    finally:
        await redis.aclose()
        await pool.close()
    report.seconds = time.perf_counter() - started
    return report


def run_events_import(args: argparse.Namespace) -> int:
    """Run the events import; print rejected lines and a summary."""
    return run_import(
        args,
        lambda chosen: import_events(
            tenant_id=args.tenant,
            path=args.file,
            file_format=chosen,
            chunk_size=args.chunk_size,
            restart=args.restart,
            progress=not args.no_progress,
        ),
        lambda report: (
            f"stored {report.stored} events, {report.duplicates} already stored, "
            f"rejected {len(report.rejected)}, resumed after {report.skipped_lines} lines, "
            f"in {report.seconds:.1f} s"
        ),
    )
