"""The platform's PostgreSQL connections notice a silent database host in seconds."""

from __future__ import annotations

import socket

import asyncpg

from store.db import KEEPALIVE_IDLE_SECONDS, KEEPALIVE_PROBES, UNACKNOWLEDGED_WRITE_MS


async def test_every_pooled_connection_probes_a_silent_database_host(app_db: asyncpg.Pool) -> None:
    async with app_db.acquire() as connection:
        raw = connection._con  # the proxy's own connection, whose socket the pool set up
        sock = raw._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE_SECONDS
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == KEEPALIVE_PROBES
        timeout = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        assert timeout == UNACKNOWLEDGED_WRITE_MS
        assert await connection.fetchval("SELECT 1") == 1
