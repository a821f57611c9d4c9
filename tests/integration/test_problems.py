"""Unexpected errors become a 500 problem with a request id, logged, never leaking a trace."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sanic import Request, Sanic

from api.app import create_app
from store.settings import Settings


@asynccontextmanager
async def lifespan(app: Sanic) -> AsyncIterator[None]:
    """Drive the app's ASGI lifespan, so its start-up hooks build the pools."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


async def test_an_unexpected_error_is_a_500_problem_without_a_trace(
    migrated: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(migrated, name="problem-check")

    @app.get("/boom")
    async def boom(request: Request) -> None:
        raise RuntimeError("database password is hunter2")

    transport = httpx.ASGITransport(app=app)
    async with lifespan(app), httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.get("/boom", headers={"X-Request-ID": "req-12345678"})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 500 and body["requestId"] == "req-12345678"
    assert "hunter2" not in response.text and "Traceback" not in response.text
    # The JSON log line carries the request id and the trace, for operators only.
    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    logged = [line for line in lines if line.get("request_id") == "req-12345678"]
    assert any("hunter2" in line.get("exception", "") for line in logged)
