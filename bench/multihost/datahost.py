"""Starts the data host's PostgreSQL and Redis; run inside the data host's namespace
(`ip netns exec <namespace> python -m bench.multihost.datahost ...`), where both servers stay,
daemonised, after it exits.

    python -m bench.multihost.datahost WORKDIR HOST NETWORK
"""

from __future__ import annotations

import sys
from pathlib import Path

from cli.localservices import PostgresServer, RedisServer

POSTGRES_PORT = 5432
REDIS_PORT = 6379


def servers(workdir: Path, host: str, network: str) -> tuple[PostgresServer, RedisServer]:
    """The data host's servers, listening on `host`, PostgreSQL open to `network`'s clients."""
    postgres = PostgresServer(
        data_dir=workdir / "postgres", port=POSTGRES_PORT, host=host, trusted_network=network
    )
    return postgres, RedisServer(data_dir=workdir / "redis", port=REDIS_PORT, host=host)


def main() -> None:
    """Start both servers."""
    workdir, host, network = sys.argv[1:4]
    for server in servers(Path(workdir), host, network):
        server.start()


if __name__ == "__main__":
    main()
