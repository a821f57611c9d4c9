"""A batch of posted events: check each, queue the valid new ones as one message, report per
event. Shared by the merchant's `POST /events/batch` and the storefront's events route."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sanic import Request

from domain.errors import FieldError
from domain.events import Event, check_event


async def ingest_batch(
    request: Request,
    items: list[Any],
    *,
    refuse: Callable[[Event], FieldError | None] = lambda _event: None,
) -> dict[str, Any]:
    """The batch answer `{accepted, duplicates, rejected, results}`; `refuse` turns a valid
    event away (a storefront key's event type it may not send, say)."""
    now = datetime.now(UTC)
    results: list[dict[str, Any]] = [{} for _ in items]
    valid: list[tuple[int, Event]] = []
    for index, item in enumerate(items):
        event, errors = check_event(item, tenant_id=request.ctx.tenant_id, now=now)
        if event is not None and (refused := refuse(event)) is not None:
            event, errors = None, [refused]
        if event is None:
            results[index] = {
                "index": index,
                "status": "rejected",
                "errors": [{"field": e.field, "message": e.message} for e in errors],
            }
        else:
            valid.append((index, event))
    if valid:
        answers = await request.app.ctx.ingest.enqueue_batch(
            request.ctx.tenant_id, [event for _, event in valid]
        )
        # The same event twice in one batch is a duplicate of itself.
        for (index, event), (duplicate, message, *_) in zip(valid, answers, strict=True):
            if duplicate:
                results[index] = {"index": index, "status": "duplicate", "eventId": event.event_id}
            else:
                results[index] = {
                    "index": index,
                    "status": "accepted",
                    "eventId": event.event_id,
                    "warnings": list(message["flags"]),
                }
    counts = {status: 0 for status in ("accepted", "duplicate", "rejected")}
    for result in results:
        counts[result["status"]] += 1
    return {
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "rejected": counts["rejected"],
        "results": results,
    }
