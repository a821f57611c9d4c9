"""Many reads in flight at once wait for a Redis connection instead of failing."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
from conftest import TenantContext

IN_FLIGHT = 400


async def test_four_hundred_reads_in_flight_at_once_are_all_answered(
    api_url: str, tenant: TenantContext
) -> None:
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=api_url, timeout=60, limits=limits) as http:

        async def read(number: int) -> int:
            answer = await http.get(
                "/api/v1/recommendations",
                params={"userId": f"crowd-{number}", "limit": 5},
                headers=tenant.read_headers,
            )
            return answer.status_code

        statuses = Counter(await asyncio.gather(*(read(n) for n in range(IN_FLIGHT))))
    assert statuses == {200: IN_FLIGHT}, statuses
