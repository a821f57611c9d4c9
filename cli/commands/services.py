"""`recomengine up|down`: the whole platform on this machine, without Docker."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from cli.commands.database import ROOT
from cli.commands.models import DEMO_STATE, describe_demo
from cli.localservices import (
    PostgresServer,
    RedisServer,
    postgres_data_dir,
    wait_for_http_ok,
    write_env_file,
)
from cli.process_groups import leader_alive, start_group, stop_group

RUN_DIR = ROOT / ".run" / "dev"
PG_PORT = 15432
REDIS_PORT = 16379
API_PORT = 5008
WEB_PORT = 3112
PROCESSES = {
    "api": ["api"],
    # Ingestion pools take the worker's default threads (cli.commands.processes).
    "worker": ["worker", "--queues", "ingest,catalog,projections,maintenance", "--processes", "1"],
    # Bulk ingestion (large batches, replays) has its own pool, so it never holds up live
    # events (store.event_queue).
    "worker-bulk": ["worker", "--queues", "ingest_bulk", "--processes", "1"],
    # Training has its own pool, so a long fit never holds up ingestion.
    "worker-training": ["worker", "--queues", "training", "--processes", "1", "--threads", "1"],
    "scheduler": ["scheduler"],
    # The public pages, the dashboard, the operators' console and the demo shop (built files; no
    # Node at run time).
    "web": ["web", "--port", str(WEB_PORT)],
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `up`, `down` and `status`."""
    up = subparsers.add_parser("up", help="start PostgreSQL, Redis, api, workers and scheduler")
    up.set_defaults(func=run_up)
    down = subparsers.add_parser("down", help="stop everything `up` started")
    down.set_defaults(func=run_down)


def _servers() -> tuple[PostgresServer, RedisServer]:
    return (
        PostgresServer(data_dir=postgres_data_dir(RUN_DIR / "postgres"), port=PG_PORT),
        RedisServer(data_dir=RUN_DIR / "redis", port=REDIS_PORT),
    )


def environment() -> dict[str, str]:
    """The environment the platform's processes run with."""
    postgres, redis = _servers()
    env = dict(os.environ)
    env.update(
        {
            "RECOMENGINE_DATABASE_URL": postgres.url,
            "RECOMENGINE_MIGRATION_DATABASE_URL": postgres.owner_url,
            "RECOMENGINE_REDIS_URL": redis.url(1),
            "RECOMENGINE_BROKER_URL": redis.url(0),
            "RECOMENGINE_API_PORT": str(API_PORT),
            "RECOMENGINE_PUBLIC_URL": f"http://localhost:{API_PORT}",
            "RECOMENGINE_ENVIRONMENT": "development",
        }
    )
    return env


def run_up(args: argparse.Namespace) -> int:
    """Bring the platform up; harmless when it already runs."""
    postgres, redis = _servers()
    postgres.start()
    redis.start()
    env = environment()
    write_env_file(RUN_DIR / "env", env)  # so that every command finds this platform
    command = [sys.executable, "-m", "cli.main"]
    subprocess.run([*command, "migrate"], env=env, check=True, cwd=ROOT)
    logs = RUN_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for name, arguments in PROCESSES.items():
        pid_file = RUN_DIR / f"{name}.pid"
        if leader_alive(pid_file):
            continue
        # Whatever survived a leader that died (a kill -9, the OOM killer) goes first, so an
        # earlier pool never runs beside the new one.
        stop_group(pid_file)
        start_group(
            [*command, *arguments],
            pid_file=pid_file,
            log_path=logs / f"{name}.log",
            env=env,
            cwd=ROOT,
        )
    ready_url = f"http://localhost:{API_PORT}/ready"
    if not wait_for_http_ok(ready_url, timeout=60):
        print(f"the api did not become ready; see {logs}/api.log", file=sys.stderr)
        return 1
    # First start: a demo tenant with real shopping data, so there is something to see; later
    # starts only rewrite its shop (cheap), so a loaded demo keeps up with the shop's pages.
    subprocess.run([*command, "demo"], env=env, cwd=ROOT, check=False)
    print(
        f"""
RecomEngine is up.
  API            http://localhost:{API_PORT}/api/v1   (ready: {ready_url})
  OpenAPI        http://localhost:{API_PORT}/api/v1/openapi.json
  PostgreSQL     {postgres.url}
  Redis          127.0.0.1:{REDIS_PORT} db 0 (broker), db 1 (projections); URLs in .run/dev/env
  Site and docs  http://localhost:{WEB_PORT}/   (docs: /docs)
  Dashboard      http://localhost:{WEB_PORT}/dashboard   (operators: /ops)
  Logs           .run/dev/logs/
Stop everything with: make down
"""
    )
    if DEMO_STATE.exists():
        print(describe_demo(json.loads(DEMO_STATE.read_text()), f"http://localhost:{API_PORT}"))
    return 0


def run_down(args: argparse.Namespace) -> int:
    """Stop the processes, then Redis and PostgreSQL."""
    for name in PROCESSES:
        stop_group(RUN_DIR / f"{name}.pid")
    postgres, redis = _servers()
    redis.stop()
    postgres.stop()
    print("RecomEngine is down.")
    return 0
